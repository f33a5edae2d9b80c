//! The ecosystem's figures, tallied while the export's rows pass (never by a query over the
//! score tables on a request): the distribution of aggregate scores, each check's distribution
//! and pass rate, and how both moved week by week, from each history partition's own tally.
//! Each history date's tally travels in the manifest, so a week's figures never re-read old
//! files. A check passes at [`PASS_AT`] or more; coverage counts the repositories scored, failing
//! and never scored.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike as _, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::tables::CHECKS;

/// A check passes at this score or above (scorecard itself names no threshold).
pub const PASS_AT: i8 = 7;

/// Counts over a set of results; two tallies add up to the tally of both sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub results: u64,
    /// Aggregate scores by whole point: bin `i` holds [i, i+1), the last one [9, 10].
    pub score_bins: [u64; 10],
    pub score_sum: f64,
    /// Results without an aggregate score (scorecard's -1).
    pub inconclusive: u64,
    pub checks: BTreeMap<String, CheckTally>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckTally {
    /// Results by the check's score, 0..=10.
    pub scores: [u64; 11],
    /// Results where the check ran without a score (-1).
    pub inconclusive: u64,
}

impl Tally {
    pub fn add(&mut self, score: Option<f64>, checks: &BTreeMap<&str, Option<i8>>) {
        self.results += 1;
        match score {
            Some(score) => {
                self.score_bins[(score.floor().clamp(0.0, 9.0)) as usize] += 1;
                self.score_sum += score;
            }
            None => self.inconclusive += 1,
        }
        for (name, score) in checks {
            let tally = self.checks.entry((*name).to_owned()).or_default();
            match score {
                Some(s) if (0..=10).contains(s) => tally.scores[*s as usize] += 1,
                _ => tally.inconclusive += 1,
            }
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.results += other.results;
        for (bin, n) in self.score_bins.iter_mut().zip(other.score_bins) {
            *bin += n;
        }
        self.score_sum += other.score_sum;
        self.inconclusive += other.inconclusive;
        for (name, theirs) in &other.checks {
            let ours = self.checks.entry(name.clone()).or_default();
            for (a, b) in ours.scores.iter_mut().zip(theirs.scores) {
                *a += b;
            }
            ours.inconclusive += theirs.inconclusive;
        }
    }

    pub fn summary(&self) -> Summary {
        let scored = self.results - self.inconclusive;
        Summary {
            results: self.results,
            mean_score: (scored > 0).then(|| round2(self.score_sum / scored as f64)),
            score_histogram: self
                .score_bins
                .iter()
                .enumerate()
                .map(|(i, n)| Bin {
                    from: i as u8,
                    to: i as u8 + 1,
                    results: *n,
                })
                .collect(),
            inconclusive: self.inconclusive,
            checks: self
                .checks
                .iter()
                .map(|(name, t)| (name.clone(), t.summary()))
                .collect(),
        }
    }
}

impl CheckTally {
    fn summary(&self) -> CheckSummary {
        let scored: u64 = self.scores.iter().sum();
        let sum: u64 = self
            .scores
            .iter()
            .enumerate()
            .map(|(s, n)| s as u64 * n)
            .sum();
        let passing: u64 = self.scores[PASS_AT as usize..].iter().sum();
        CheckSummary {
            scored,
            inconclusive: self.inconclusive,
            mean: (scored > 0).then(|| round2(sum as f64 / scored as f64)),
            pass_rate: (scored > 0).then(|| round4(passing as f64 / scored as f64)),
            scores: self.scores,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub results: u64,
    pub mean_score: Option<f64>,
    pub score_histogram: Vec<Bin>,
    pub inconclusive: u64,
    pub checks: BTreeMap<String, CheckSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub from: u8,
    pub to: u8,
    pub results: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Results where the check has a score.
    pub scored: u64,
    pub inconclusive: u64,
    pub mean: Option<f64>,
    /// Share of scored results at [`PASS_AT`] or above.
    pub pass_rate: Option<f64>,
    /// Results by score, 0..=10.
    pub scores: [u64; 11],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Coverage {
    pub repositories: i64,
    /// With a latest score.
    pub scored: i64,
    /// Whose last attempt failed (a score may still be kept from before).
    pub failing: i64,
    pub never_scored: i64,
}

/// `stats.json`: what `/stats` serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// When these figures were computed: the export's database snapshot.
    pub computed_at: DateTime<Utc>,
    pub pass_at: i8,
    pub coverage: Coverage,
    /// Over every repository's latest result.
    pub latest: Summary,
    /// Scans by week (Monday, UTC), oldest first, the current week last.
    pub weeks: Vec<Week>,
    /// The checks scorecard documents, in the export's column order.
    pub known_checks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Week {
    pub week_start: NaiveDate,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The weeks' figures from each scan date's tally, `weeks` weeks back from `now`'s week.
pub fn weeks<'a>(
    days: impl IntoIterator<Item = (NaiveDate, &'a Tally)>,
    now: DateTime<Utc>,
    weeks: u32,
) -> Vec<Week> {
    let monday = |d: NaiveDate| d - TimeDelta::days(d.weekday().num_days_from_monday().into());
    let this_week = monday(now.date_naive());
    let first = this_week - TimeDelta::weeks(i64::from(weeks.saturating_sub(1)));
    let mut by_week: BTreeMap<NaiveDate, Tally> = (0..weeks)
        .map(|i| (first + TimeDelta::weeks(i64::from(i)), Tally::default()))
        .collect();
    for (date, tally) in days {
        if let Some(week) = by_week.get_mut(&monday(date)) {
            week.merge(tally);
        }
    }
    by_week
        .into_iter()
        .map(|(week_start, t)| Week {
            week_start,
            summary: t.summary(),
        })
        .collect()
}

pub fn known_checks() -> Vec<String> {
    CHECKS.iter().map(|c| (*c).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(score: Option<f64>, checks: &[(&'static str, Option<i8>)]) -> Tally {
        let mut t = Tally::default();
        t.add(score, &checks.iter().copied().collect());
        t
    }

    #[test]
    fn two_tallies_merged_equal_one_tally_of_both() {
        let mut both = Tally::default();
        both.add(Some(4.5), &[("Maintained", Some(10))].into_iter().collect());
        both.add(None, &[("Maintained", None)].into_iter().collect());
        let mut merged = result(Some(4.5), &[("Maintained", Some(10))]);
        merged.merge(&result(None, &[("Maintained", None)]));
        assert_eq!(merged, both);
    }

    #[test]
    fn a_ten_is_in_the_last_bin_and_pass_counts_from_seven() {
        let mut t = result(Some(10.0), &[("Code-Review", Some(7))]);
        t.merge(&result(Some(0.0), &[("Code-Review", Some(6))]));
        let s = t.summary();
        assert_eq!(s.score_histogram[9].results, 1);
        assert_eq!(s.score_histogram[0].results, 1);
        assert_eq!(s.mean_score, Some(5.0));
        assert_eq!(s.checks["Code-Review"].pass_rate, Some(0.5));
        assert_eq!(s.checks["Code-Review"].mean, Some(6.5));
    }

    #[test]
    fn weeks_start_on_monday_and_skip_days_outside_the_window() {
        let now = "2026-12-06T12:00:00Z".parse().unwrap(); // a Sunday
        let day = |s: &str| s.parse::<NaiveDate>().unwrap();
        let t = result(Some(3.0), &[]);
        let w = weeks(
            [
                (day("2026-11-30"), &t),
                (day("2026-12-06"), &t),
                (day("2026-11-29"), &t),
                (day("2026-01-01"), &t),
            ],
            now,
            2,
        );
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].week_start, day("2026-11-23"));
        assert_eq!(w[0].summary.results, 1);
        assert_eq!(w[1].week_start, day("2026-11-30"));
        assert_eq!(w[1].summary.results, 2);
    }
}
