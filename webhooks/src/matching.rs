//! Whether a change event is one a subscription asked for: its repository in scope, and one
//! of its triggers holding. Pure; the database preselects by scope with indexes (see
//! `fanout`), and this decides.

use fleet_proto::RepoName;
use fleet_proto::v1::ScoreChanged;

/// A subscription's filters, as `webhook_subscriptions` holds them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Lower-cased `github.com/owner/name`.
    pub repos: Vec<String>,
    /// Lower-cased `github.com/owner`.
    pub owners: Vec<String>,
    /// Check names as scorecard spells them; restricts `check_drops` when not empty.
    pub checks: Vec<String>,
    /// The aggregate falling below this.
    pub below: Option<f64>,
    pub check_drops: bool,
    pub any_change: bool,
}

/// The identity keys of an event's repository: `github.com/owner/name` and
/// `github.com/owner`, lower-cased; `None` if it names no repository.
pub fn keys(event: &ScoreChanged) -> Option<(String, String)> {
    let repo = RepoName::parse(&event.repo).ok()?;
    let owner = format!("{}/{}", repo.host(), repo.owner()).to_ascii_lowercase();
    Some((repo.key(), owner))
}

impl Filters {
    /// Listed, or its owner listed; a subscription that lists neither takes every repository.
    pub fn in_scope(&self, repo_key: &str, owner_key: &str) -> bool {
        (self.repos.is_empty() && self.owners.is_empty())
            || self.repos.iter().any(|r| r == repo_key)
            || self.owners.iter().any(|o| o == owner_key)
    }

    /// Some trigger holds for `event`.
    pub fn triggered(&self, event: &ScoreChanged) -> bool {
        if self.any_change {
            return true;
        }
        if let (Some(below), Some(now)) = (self.below, event.score) {
            // A crossing, not every change under the line: the previous score was above it
            // or there was none.
            if now < below && event.previous_score.is_none_or(|was| was >= below) {
                return true;
            }
        }
        self.check_drops
            && event.checks.iter().any(|c| {
                let named = self.checks.is_empty() || self.checks.contains(&c.name);
                // A check that was inconclusive (no score) or absent has nothing to drop from.
                named && matches!((c.previous, c.score), (Some(was), Some(now)) if now < was)
            })
    }

    pub fn matches(&self, event: &ScoreChanged) -> bool {
        keys(event).is_some_and(|(repo, owner)| self.in_scope(&repo, &owner))
            && self.triggered(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::CheckChange;

    fn event(
        previous: Option<f64>,
        score: Option<f64>,
        checks: &[(&str, i32, i32)],
    ) -> ScoreChanged {
        ScoreChanged {
            repo: "github.com/Ossf/Scorecard".into(),
            work_id: "w".into(),
            previous_score: previous,
            score,
            checks: checks
                .iter()
                .map(|(n, was, now)| CheckChange {
                    name: (*n).into(),
                    previous: Some(*was),
                    score: Some(*now),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn any() -> Filters {
        Filters {
            any_change: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_repositories_filter_takes_a_listed_repository_in_any_case() {
        let f = Filters {
            repos: vec!["github.com/ossf/scorecard".into()],
            ..any()
        };
        assert!(f.matches(&event(Some(5.0), Some(6.0), &[])));
        let other = ScoreChanged {
            repo: "github.com/ossf/other".into(),
            ..event(Some(5.0), Some(6.0), &[])
        };
        assert!(!f.matches(&other));
    }

    #[test]
    fn the_owners_filter_takes_every_repository_of_an_owner() {
        let f = Filters {
            owners: vec!["github.com/ossf".into()],
            ..any()
        };
        assert!(f.matches(&event(None, Some(6.0), &[])));
        let other = ScoreChanged {
            repo: "github.com/ossfx/scorecard".into(),
            ..event(None, Some(6.0), &[])
        };
        assert!(!f.matches(&other), "a prefix is not the owner");
        let both = Filters {
            repos: vec!["github.com/x/y".into()],
            ..f
        };
        assert!(both.matches(&event(None, Some(6.0), &[])), "either list");
    }

    #[test]
    fn no_scope_is_every_repository_and_an_unparsable_repo_matches_nothing() {
        assert!(any().matches(&event(Some(1.0), Some(2.0), &[])));
        let bad = ScoreChanged {
            repo: "gitlab.com/a/b".into(),
            ..event(Some(1.0), Some(2.0), &[])
        };
        assert!(!any().matches(&bad));
    }

    #[test]
    fn any_change_takes_every_event() {
        assert!(any().triggered(&event(Some(7.0), Some(7.0), &[("A", 3, 4)])));
        assert!(!Filters::default().triggered(&event(Some(7.0), Some(2.0), &[("A", 9, 0)])));
    }

    #[test]
    fn below_fires_on_crossing_the_line_down_only() {
        let f = Filters {
            below: Some(5.0),
            ..Default::default()
        };
        assert!(
            f.triggered(&event(Some(5.0), Some(4.9), &[])),
            "from exactly the line"
        );
        assert!(f.triggered(&event(Some(8.0), Some(3.0), &[])));
        assert!(
            f.triggered(&event(None, Some(3.0), &[])),
            "a first score under it"
        );
        assert!(
            !f.triggered(&event(Some(4.0), Some(3.0), &[])),
            "already under"
        );
        assert!(!f.triggered(&event(Some(4.0), Some(6.0), &[])), "going up");
        assert!(
            !f.triggered(&event(Some(6.0), Some(5.0), &[])),
            "at the line is not below"
        );
        assert!(!f.triggered(&event(Some(6.0), None, &[])), "no score now");
    }

    #[test]
    fn check_drops_fires_when_any_check_falls() {
        let f = Filters {
            check_drops: true,
            ..Default::default()
        };
        assert!(f.triggered(&event(Some(5.0), Some(5.0), &[("A", 8, 7)])));
        assert!(!f.triggered(&event(Some(5.0), Some(5.0), &[("A", 7, 8)])));
        let inconclusive = ScoreChanged {
            checks: vec![CheckChange {
                name: "A".into(),
                previous: None,
                score: Some(0),
            }],
            ..event(None, Some(5.0), &[])
        };
        assert!(!f.triggered(&inconclusive), "nothing to drop from");
    }

    #[test]
    fn the_checks_filter_restricts_check_drops_to_the_named_checks() {
        let f = Filters {
            check_drops: true,
            checks: vec!["Code-Review".into()],
            ..Default::default()
        };
        assert!(f.triggered(&event(None, Some(5.0), &[("Code-Review", 8, 2)])));
        assert!(!f.triggered(&event(None, Some(5.0), &[("Maintained", 8, 2)])));
        assert!(
            !f.triggered(&event(None, Some(5.0), &[("code-review", 8, 2)])),
            "scorecard's spelling"
        );
    }
}
