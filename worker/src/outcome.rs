//! What to do with a work item after its run: one decision and one ack table.

use std::time::Duration;

use chrono::Utc;
use fleet_proto::timestamp;
use fleet_proto::v1::{FailureClass, ScoreResult, WorkFailure, WorkItem};
use fleet_runtime::scrub::scrub;

use crate::logs::Verdict;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Publish the result, then ack.
    Done(Box<ScoreResult>),
    /// Hand the item back to be tried again after a delay.
    Retry {
        after: Duration,
        failure: Box<WorkFailure>,
    },
    /// Give up: publish the failure (sink and dead stream), then terminate.
    Dead(Box<WorkFailure>),
}

/// The acknowledgement an outcome ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Ack,
    Nak(Duration),
    Term,
}

/// When the run's Job is removed, relative to the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// A retry gets a fresh Job: the failed one goes before the item is handed back.
    BeforeAck,
    /// The outcome is published: the Job goes once the ack is through, and stays if the ack
    /// fails, so the redelivery finds the ended run instead of scanning again.
    AfterAck,
}

impl Outcome {
    pub fn ack(&self) -> Ack {
        match self {
            Outcome::Done(_) => Ack::Ack,
            Outcome::Retry { after, .. } => Ack::Nak(*after),
            Outcome::Dead(_) => Ack::Term,
        }
    }

    pub fn cleanup(&self) -> Cleanup {
        match self {
            Outcome::Retry { .. } => Cleanup::BeforeAck,
            Outcome::Done(_) | Outcome::Dead(_) => Cleanup::AfterAck,
        }
    }

    /// The item ends here: its outcome is published and recorded in the scan register.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Retry { .. })
    }
}

/// How long to wait before another delivery of a failed item, or `None` when another try in
/// this round cannot help (the sink schedules the next round by class).
/// `quota_window` is GitHub's (an hour): a rate-limited item waits a quarter of it, a timed-out
/// one a twelfth (5 min).
pub fn retry_delay(
    class: FailureClass,
    delivered: u64,
    quota_window: Duration,
) -> Option<Duration> {
    let nth = u32::try_from(delivered.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(6);
    match class {
        // A token's quota refills within the hour; a quarter of it usually finds one that did.
        FailureClass::RateLimited => Some(quota_window / 4),
        // A timeout is slow to repeat and often a rate-limit sleep: give it room, in step
        // with the quota's window.
        FailureClass::Timeout => Some(quota_window / 12),
        // The cluster's or the pod's trouble, usually brief: 30 s doubling, at most 10 min.
        FailureClass::Infra
        | FailureClass::PodFailed
        | FailureClass::NoOutput
        | FailureClass::Exhausted => Some(Duration::from_secs((30u64 << nth).min(600))),
        // scorecard already gave up on the repository, or its output is broken: repeating
        // the same scan now would spend GitHub quota for the same answer.
        FailureClass::ScanFailed
        | FailureClass::InvalidOutput
        | FailureClass::Poison
        | FailureClass::Unspecified => None,
    }
}

/// The outcome of a run of `item`, delivered `delivered` times out of `max_deliver`.
pub fn decide(
    item: &WorkItem,
    verdict: Verdict,
    delivered: u64,
    max_deliver: u64,
    job_name: &str,
    quota_window: Duration,
) -> Outcome {
    let (class, message, log_tail) = match verdict {
        Verdict::Result(result) => return Outcome::Done(result),
        Verdict::Failure {
            class,
            message,
            log_tail,
        } => (class, message, log_tail),
    };
    // What a scan printed may hold a credential; it goes to two streams, a table and logs.
    let failure = Box::new(WorkFailure {
        work_id: item.id.clone(),
        item: Some(item.clone()),
        class: class as i32,
        message: scrub(&message, &[]).into_owned(),
        log_tail: scrub(&log_tail, &[]).into_owned(),
        attempts: u32::try_from(delivered).unwrap_or(u32::MAX),
        failed_at: Some(timestamp(Utc::now())),
        job_name: job_name.to_owned(),
        repo: item.repo.clone(),
        ..Default::default()
    });
    match retry_delay(class, delivered, quota_window) {
        Some(after) if delivered < max_deliver => Outcome::Retry { after, failure },
        _ => Outcome::Dead(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn failure(class: FailureClass) -> Verdict {
        Verdict::Failure {
            class,
            message: "m".into(),
            log_tail: "t".into(),
        }
    }

    fn item() -> WorkItem {
        WorkItem {
            id: "w".into(),
            repo: "github.com/a/b".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_ack_table() {
        let done = decide(&item(), Verdict::Result(Box::default()), 1, 5, "j", HOUR);
        assert_eq!(
            (done.ack(), done.cleanup(), done.is_final()),
            (Ack::Ack, Cleanup::AfterAck, true)
        );
        let retry = decide(&item(), failure(FailureClass::Infra), 1, 5, "j", HOUR);
        assert_eq!(
            (retry.ack(), retry.cleanup(), retry.is_final()),
            (Ack::Nak(Duration::from_secs(30)), Cleanup::BeforeAck, false)
        );
        let dead = decide(&item(), failure(FailureClass::ScanFailed), 1, 5, "j", HOUR);
        assert_eq!(
            (dead.ack(), dead.cleanup(), dead.is_final()),
            (Ack::Term, Cleanup::AfterAck, true)
        );
    }

    #[test]
    fn transient_failures_retry_with_growing_delays_until_the_last_delivery() {
        let delays: Vec<_> = (1..=4)
            .map(
                |n| match decide(&item(), failure(FailureClass::PodFailed), n, 5, "j", HOUR) {
                    Outcome::Retry { after, .. } => after.as_secs(),
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(delays, [30, 60, 120, 240]);
        let last = decide(&item(), failure(FailureClass::PodFailed), 5, 5, "j", HOUR);
        let Outcome::Dead(f) = last else {
            panic!("the last delivery dead-letters")
        };
        assert_eq!((f.attempts, f.class), (5, FailureClass::PodFailed as i32));
        assert_eq!(f.item.as_ref().unwrap().id, "w");
        assert_eq!(
            retry_delay(FailureClass::NoOutput, 40, HOUR),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn permanent_failures_are_not_retried_in_the_same_round() {
        for class in [
            FailureClass::ScanFailed,
            FailureClass::InvalidOutput,
            FailureClass::Poison,
        ] {
            assert!(
                matches!(
                    decide(&item(), failure(class), 1, 5, "j", HOUR),
                    Outcome::Dead(_)
                ),
                "{class:?}"
            );
        }
        assert_eq!(
            retry_delay(FailureClass::RateLimited, 1, HOUR),
            Some(Duration::from_secs(900))
        );
        // An accelerated hour (the quota bench's) keeps the ratio.
        assert_eq!(
            retry_delay(FailureClass::RateLimited, 1, Duration::from_secs(60)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            retry_delay(FailureClass::Timeout, 1, HOUR),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            retry_delay(FailureClass::Timeout, 3, Duration::from_secs(60)),
            Some(Duration::from_secs(5))
        );
    }
}
