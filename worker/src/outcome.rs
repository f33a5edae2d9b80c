//! What to do with a work item after its run (one decision), and what every ending of a
//! delivery does (one table). A Job is deleted only after a confirmed ack, and only if no other
//! delivery claimed the scan. Retry delays by class are [`retry_delay`]; hand-backs wait
//! [`hand_back_delay`] (5 s, 15 s, 45 s, then 60 s).

use std::time::Duration;

use chrono::Utc;
use fleet_proto::timestamp;
use fleet_proto::v1::{FailureClass, ScoreResult, WorkFailure, WorkItem};
use fleet_runtime::scrub::scrub;

use crate::logs::Verdict;
use crate::scans::AfterDone;

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

impl Outcome {
    /// The item ends here: its outcome is published and recorded in the scan register (the
    /// `record` column of its [`Ending`]'s row).
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Retry { .. })
    }
}

impl From<Outcome> for Ending {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Done(result) => Ending::Scored(result),
            Outcome::Retry { after, failure } => Ending::Retry { after, failure },
            Outcome::Dead(failure) => Ending::Dead(failure),
        }
    }
}

/// Every way a delivery of a work message ends, with what it publishes: what the worker's
/// `handle` returns. [`Ending::steps`] is the whole decision of what each one does; the worker
/// only carries the steps out, in their order: publish, record, remove the Job before the ack,
/// ack, remove the Job after it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// A result, published to the results stream (the sink).
    Scored(Box<ScoreResult>),
    /// A failure worth another try, after the delay. Nothing is published.
    Retry {
        after: Duration,
        failure: Box<WorkFailure>,
    },
    /// A final failure, published to the sink (`scorecard.failures`) and the dead stream.
    Dead(Box<WorkFailure>),
    /// A message that is no work item, published to the dead stream only.
    Poison(Box<WorkFailure>),
    /// Its outcome is out already (a redelivery after a lost ack, or the recorder of exhausted
    /// items was first): not run again. The register says what becomes of the Job.
    AlreadyDone(AfterDone),
    /// A newer scan of the same repository (work item `by`) answers it: not run. A Job an
    /// earlier delivery left (abandoned at a drain) is not needed.
    Covered { by: String },
    /// Its outcome could not be made durable (NATS or register trouble, `reason`): to be done
    /// again after the delay. On the last delivery JetStream then gives up on it and says so in
    /// a max-deliveries advisory, which the recorder of exhausted items turns into a dead letter.
    HandBack { after: Duration, reason: String },
    /// Shutdown came first: not acked; the scan keeps running for the next delivery to adopt.
    Abandon,
}

/// The acknowledgement an ending sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Confirmed: the server's answer is awaited.
    Ack,
    Nak(Duration),
    Term,
}

/// What becomes of the run's Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFate {
    /// Left as it is: none was made, a redelivery reads or adopts it, or its TTL removes it.
    Keep,
    /// A retry gets a fresh Job: the failed one goes before the item is handed back.
    RemoveBeforeAck,
    /// Goes once the ack is through, and only if the scan register says no other delivery may
    /// still need it: after a failed ack the redelivery must find the ended run, not scan again.
    RemoveAfterAck,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// Whether the outcome is recorded in the scan register (which then says if the Job goes).
    pub record: bool,
    /// `None`: not acked at all; the message comes again after the ack wait.
    pub ack: Option<Ack>,
    pub job: JobFate,
}

impl Ending {
    pub fn steps(&self) -> Steps {
        let (record, ack, job) = match *self {
            Ending::Scored(_) => (true, Some(Ack::Ack), JobFate::RemoveAfterAck),
            Ending::Retry { after, .. } => (false, Some(Ack::Nak(after)), JobFate::RemoveBeforeAck),
            Ending::Dead(_) => (true, Some(Ack::Term), JobFate::RemoveAfterAck),
            Ending::Poison(_) => (false, Some(Ack::Term), JobFate::Keep),
            Ending::AlreadyDone(_) | Ending::Covered { .. } => {
                (false, Some(Ack::Ack), JobFate::RemoveAfterAck)
            }
            Ending::HandBack { after, .. } => (false, Some(Ack::Nak(after)), JobFate::Keep),
            Ending::Abandon => (false, None, JobFate::Keep),
        };
        Steps { record, ack, job }
    }
}

/// How long a handed-back item waits before its next delivery: 5 s, then three times longer
/// on each delivery, up to 60 s. A NATS leader election or a partition takes tens of seconds,
/// and 5 s apart every delivery would be spent in it. Within 60 s plus the attempt, a result
/// republished is still inside the server's two-minute dedup window.
pub fn hand_back_delay(delivered: u64) -> Duration {
    let exponent = u32::try_from(delivered.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(8);
    (Duration::from_secs(5) * 3u32.pow(exponent)).min(Duration::from_secs(60))
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
        | FailureClass::Webhook
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
    fn the_table_has_one_row_per_ending() {
        let failure = Box::<WorkFailure>::default;
        let rows = [
            (
                Ending::Scored(Box::default()),
                true,
                Some(Ack::Ack),
                JobFate::RemoveAfterAck,
            ),
            (
                Ending::Retry {
                    after: Duration::from_secs(30),
                    failure: failure(),
                },
                false,
                Some(Ack::Nak(Duration::from_secs(30))),
                JobFate::RemoveBeforeAck,
            ),
            (
                Ending::Dead(failure()),
                true,
                Some(Ack::Term),
                JobFate::RemoveAfterAck,
            ),
            (
                Ending::Poison(failure()),
                false,
                Some(Ack::Term),
                JobFate::Keep,
            ),
            (
                Ending::AlreadyDone(AfterDone::Keep),
                false,
                Some(Ack::Ack),
                JobFate::RemoveAfterAck,
            ),
            (
                Ending::Covered { by: "w2".into() },
                false,
                Some(Ack::Ack),
                JobFate::RemoveAfterAck,
            ),
            (
                Ending::HandBack {
                    after: Duration::from_secs(5),
                    reason: "r".into(),
                },
                false,
                Some(Ack::Nak(Duration::from_secs(5))),
                JobFate::Keep,
            ),
            (Ending::Abandon, false, None, JobFate::Keep),
        ];
        for (ending, record, ack, job) in rows {
            assert_eq!(ending.steps(), Steps { record, ack, job }, "{ending:?}");
        }
    }

    #[test]
    fn each_outcome_ends_as_its_row() {
        let ends = |outcome: Outcome| {
            let is_final = outcome.is_final();
            let ending = Ending::from(outcome);
            assert_eq!(is_final, ending.steps().record, "{ending:?}");
            ending
        };
        let done = decide(&item(), Verdict::Result(Box::default()), 1, 5, "j", HOUR);
        assert!(matches!(ends(done), Ending::Scored(_)));
        let retry = decide(&item(), failure(FailureClass::Infra), 1, 5, "j", HOUR);
        assert!(matches!(
            ends(retry),
            Ending::Retry { after, .. } if after == Duration::from_secs(30)
        ));
        let dead = decide(&item(), failure(FailureClass::ScanFailed), 1, 5, "j", HOUR);
        assert!(matches!(ends(dead), Ending::Dead(_)));
    }

    #[test]
    fn hand_backs_wait_longer_each_delivery_within_the_dedup_window() {
        let delays: Vec<u64> = (1..=6).map(|d| hand_back_delay(d).as_secs()).collect();
        assert_eq!(delays, [5, 15, 45, 60, 60, 60]);
        assert_eq!(hand_back_delay(0).as_secs(), 5);
        assert_eq!(hand_back_delay(u64::MAX).as_secs(), 60);
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
