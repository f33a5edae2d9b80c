//! When a repository is due again: pure decisions, unit-tested here.
//!
//! After a result: scored time + interval + a jitter derived from the work id (so a bulk
//! import does not come due all at once, and a replay reproduces the same schedule).
//! After a final failure the retry depends on the class and on how many failures came in a row:
//! - SCAN_FAILED (repository deleted, renamed, private; GitHub API errors): 1 day, doubling,
//!   capped at 4 intervals: a deleted repository costs one scan every ~8 weeks, not one a day.
//! - RATE_LIMITED: 1 hour (a token's quota refills hourly), doubling, capped at 1 day.
//! - TIMEOUT, NO_OUTPUT, INVALID_OUTPUT, POD_FAILED, INFRA: 6 hours, doubling, capped at 1 interval.
//! - anything else: 1 interval.
//!
//! A SCAN_FAILED whose message is scorecard's "repo unreachable ... 404" ([`says_repo_missing`])
//! means GitHub has no such public repository: that answer is trusted for `missing_for`, and the
//! repository is not due before it runs out.

use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::v1::FailureClass;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub interval: TimeDelta,
    pub jitter: TimeDelta,
    /// How long scorecard's word that GitHub has no such repository is trusted.
    pub missing_for: TimeDelta,
}

/// Whether a failure's message is scorecard's answer for a repository GitHub does not have:
/// `Skipping github.com/O/N: repo unreachable: GET https://api.github.com/repos/O/N: 404 Not
/// Found []`. Deleted, private and never-existing repositories all look like this. Another
/// status (a 500, a 403 rate limit) or a 404 of something else says nothing about the
/// repository.
pub fn says_repo_missing(message: &str) -> bool {
    let Some((_, after)) = message.split_once("repo unreachable") else {
        return false;
    };
    // The status stands after a `: `, which no repository name holds; a name such as
    // `error-404` does not count.
    after
        .match_indices(": 404")
        .any(|(i, m)| !after[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

impl Schedule {
    pub fn next_due_after_result(&self, scored_at: DateTime<Utc>, work_id: &str) -> DateTime<Utc> {
        scored_at + self.interval + self.jitter_for(work_id)
    }

    pub fn next_due_after_failure(
        &self,
        failed_at: DateTime<Utc>,
        class: FailureClass,
        consecutive: u32,
    ) -> DateTime<Utc> {
        failed_at + self.retry_delay(class, consecutive)
    }

    /// Until when a failure says GitHub does not have the repository, if it says so.
    pub fn missing_until(
        &self,
        failed_at: DateTime<Utc>,
        class: FailureClass,
        message: &str,
    ) -> Option<DateTime<Utc>> {
        (class == FailureClass::ScanFailed && says_repo_missing(message))
            .then(|| failed_at + self.missing_for)
    }

    pub fn retry_delay(&self, class: FailureClass, consecutive: u32) -> TimeDelta {
        use FailureClass::*;
        let (base, cap) = match class {
            ScanFailed => (TimeDelta::days(1), self.interval * 4),
            RateLimited => (TimeDelta::hours(1), TimeDelta::days(1)),
            Timeout | NoOutput | InvalidOutput | PodFailed | Infra | Exhausted => {
                (TimeDelta::hours(6), self.interval)
            }
            Unspecified | Poison | Webhook => return self.interval,
        };
        // 2^(n-1), saturating well before overflow: 2^20 days is far past any cap.
        let doublings = consecutive.saturating_sub(1).min(20);
        (base * (1 << doublings)).min(cap).max(base.min(cap))
    }

    /// A fraction of the jitter window chosen by the work id: stable, and spread evenly.
    fn jitter_for(&self, work_id: &str) -> TimeDelta {
        let window = self.jitter.num_seconds().max(0);
        if window == 0 {
            return TimeDelta::zero();
        }
        // FNV-1a: tiny, stable across builds and platforms (unlike std's RandomState).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in work_id.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let offset = hash % u64::try_from(window).unwrap_or(1);
        TimeDelta::seconds(i64::try_from(offset).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            interval: TimeDelta::days(14),
            jitter: TimeDelta::hours(24),
            missing_for: TimeDelta::days(7),
        }
    }

    /// The line scorecard prints (../shared/fixtures/README.md), as the worker passes it on.
    const MISSING: &str = "Skipping github.com/OWNER/NAME: repo unreachable: GET \
                           https://api.github.com/repos/OWNER/NAME: 404 Not Found []";

    #[test]
    fn only_a_404_of_the_repository_itself_says_it_is_missing() {
        assert!(says_repo_missing(MISSING));
        // The worker's own test shape: the status alone, at the end of the line.
        assert!(says_repo_missing(
            "Skipping github.com/o/n: repo unreachable: GET https://api.github.com/repos/o/n: 404"
        ));
        for other in [
            MISSING.replace("404 Not Found", "500 Internal Server Error"),
            MISSING.replace("404 Not Found", "403 Forbidden"),
            MISSING
                .replace("OWNER/NAME", "o/error-404")
                .replace("404 Not Found", "502 Bad Gateway"),
            MISSING.replace(": 404 ", ": 4040 "),
            // A 404 of something other than the repository.
            "Skipping github.com/o/n: internal error: GET \
             https://api.github.com/repos/o/n/contents/SECURITY.md: 404 Not Found []"
                .into(),
            "NO_OUTPUT for github.com/o/n".into(),
            String::new(),
        ] {
            assert!(!says_repo_missing(&other), "{other}");
        }
    }

    #[test]
    fn a_missing_repository_is_remembered_only_for_a_scan_failure_that_says_so() {
        let s = schedule();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(
            s.missing_until(t, FailureClass::ScanFailed, MISSING),
            Some(t + TimeDelta::days(7))
        );
        assert_eq!(s.missing_until(t, FailureClass::Infra, MISSING), None);
        assert_eq!(
            s.missing_until(
                t,
                FailureClass::ScanFailed,
                "SCAN_FAILED for github.com/o/n"
            ),
            None
        );
    }

    #[test]
    fn results_come_due_after_the_interval_plus_a_stable_jitter() {
        let s = schedule();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = s.next_due_after_result(t, "work-a");
        assert_eq!(a, s.next_due_after_result(t, "work-a"), "stable");
        assert!(a >= t + TimeDelta::days(14) && a < t + TimeDelta::days(15));
        let spread: std::collections::HashSet<_> = (0..100)
            .map(|i| s.next_due_after_result(t, &format!("w{i}")))
            .collect();
        assert!(spread.len() > 90, "jitter spreads a bulk of repos");
        let none = Schedule {
            jitter: TimeDelta::zero(),
            ..s
        };
        assert_eq!(none.next_due_after_result(t, "x"), t + TimeDelta::days(14));
    }

    #[test]
    fn a_deleted_repo_backs_off_to_weeks_not_daily_forever() {
        let s = schedule();
        let delays: Vec<i64> = (1..=9)
            .map(|n| s.retry_delay(FailureClass::ScanFailed, n).num_days())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 56, 56, 56]);
        assert_eq!(
            s.retry_delay(FailureClass::ScanFailed, u32::MAX).num_days(),
            56
        );
    }

    #[test]
    fn transient_classes_retry_sooner() {
        let s = schedule();
        assert_eq!(
            s.retry_delay(FailureClass::RateLimited, 1),
            TimeDelta::hours(1)
        );
        assert_eq!(
            s.retry_delay(FailureClass::RateLimited, 10),
            TimeDelta::days(1)
        );
        assert_eq!(s.retry_delay(FailureClass::Timeout, 1), TimeDelta::hours(6));
        assert_eq!(s.retry_delay(FailureClass::Infra, 3), TimeDelta::hours(24));
        assert_eq!(
            s.retry_delay(FailureClass::PodFailed, 30),
            TimeDelta::days(14)
        );
        assert_eq!(s.retry_delay(FailureClass::Poison, 1), TimeDelta::days(14));
        // Zero is treated as the first failure.
        assert_eq!(s.retry_delay(FailureClass::Timeout, 0), TimeDelta::hours(6));
    }
}
