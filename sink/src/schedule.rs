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

use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::v1::FailureClass;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub interval: TimeDelta,
    pub jitter: TimeDelta,
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

    pub fn retry_delay(&self, class: FailureClass, consecutive: u32) -> TimeDelta {
        use FailureClass::*;
        let (base, cap) = match class {
            ScanFailed => (TimeDelta::days(1), self.interval * 4),
            RateLimited => (TimeDelta::hours(1), TimeDelta::days(1)),
            Timeout | NoOutput | InvalidOutput | PodFailed | Infra | Exhausted => {
                (TimeDelta::hours(6), self.interval)
            }
            Unspecified | Poison => return self.interval,
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
        }
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
