//! Work that ran out of deliveries without an outcome. When a work item's last delivery ends
//! with no ack (a crashed worker, lost heartbeats, a drain past its deadline) or with a
//! hand-back (its outcome could not be published), JetStream stops redelivering it, leaves it
//! in the work stream and publishes a max-deliveries advisory. The topology captures those
//! advisories in a stream; here a worker turns each into exactly one outcome: the result or
//! final failure of the Job the item left behind if that Job has ended (a scan that finished
//! is not thrown away), else an EXHAUSTED failure (the sink's row) and dead letter. Then it
//! removes the item from the work stream and its Job.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use fleet_proto::v1::{FailureClass, ScoreResult, WorkFailure, WorkItem};
use fleet_runtime::dead;
use futures::StreamExt as _;
use prost::Message as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::consume::Worker;
use crate::intake;
use crate::job;
use crate::outcome::Outcome;
use crate::scans::AfterDone;

/// The fields of JetStream's `io.nats.jetstream.advisory.v1.max_deliver` advisory we use.
#[derive(Debug, Deserialize)]
pub struct Advisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

/// What became of one advisory.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The Job it left behind had ended with a result: published.
    Published(Box<ScoreResult>),
    /// The item is dead-lettered (EXHAUSTED, or how its ended Job failed) and gone from the
    /// work stream.
    DeadLettered(Box<WorkFailure>),
    /// The item had an outcome after all (a late ack, or it was recorded already).
    NothingLeft,
    /// Not an advisory about this fleet's work stream.
    Ignored(String),
}

/// How long one pull for advisories waits before checking for shutdown again.
const POLL: Duration = Duration::from_secs(5);
/// Before an advisory that could not be recorded (NATS trouble) is tried again.
const RETRY: Duration = Duration::from_secs(15);

/// The failure record of an exhausted item.
pub fn failure(item: &WorkItem, advisory: &Advisory, max_deliver: u64) -> WorkFailure {
    WorkFailure {
        work_id: item.id.clone(),
        item: Some(item.clone()),
        class: FailureClass::Exhausted as i32,
        message: format!(
            "ran out of deliveries: {} of {max_deliver} ended without an outcome (a worker crashed, \
             lost its heartbeats, was drained past its deadline, or could not publish the outcome)",
            advisory.deliveries
        ),
        attempts: u32::try_from(advisory.deliveries).unwrap_or(u32::MAX),
        failed_at: Some(fleet_proto::timestamp(chrono::Utc::now())),
        job_name: job::job_name(&item.id),
        repo: item.repo.clone(),
        ..Default::default()
    }
}

impl Worker {
    /// Records exhausted items until `shutdown` (pulling stops with the rest of the worker).
    pub async fn record_exhausted_until(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return,
                batch = self.exhausted.fetch().max_messages(1).expires(POLL).messages() => batch,
            };
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling max-deliveries advisories failed");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            loop {
                let advisory = tokio::select! {
                    () = shutdown.cancelled() => return,
                    advisory = batch.next() => advisory,
                };
                match advisory {
                    Some(Ok(advisory)) => {
                        self.record_one(&advisory).await;
                    }
                    Some(Err(_)) | None => break,
                }
            }
        }
    }

    /// Records one advisory and acks it; on failure it comes back later.
    pub async fn record_one(&self, advisory: &Message) -> Option<Recorded> {
        match self.record(advisory).await {
            Ok(recorded) => {
                if let Err(e) = crate::consume::confirmed_ack(advisory).await {
                    tracing::warn!(error = %e, "acking a max-deliveries advisory failed");
                }
                Some(recorded)
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording an exhausted work item failed; retrying");
                let _ = advisory.ack_with(AckKind::Nak(Some(RETRY))).await;
                None
            }
        }
    }

    async fn record(&self, advisory: &Message) -> Result<Recorded, String> {
        let advisory: Advisory = match serde_json::from_slice(&advisory.payload) {
            Ok(a) => a,
            Err(e) => {
                return Ok(Recorded::Ignored(format!(
                    "not a max-deliveries advisory: {e}"
                )));
            }
        };
        if advisory.stream != self.topology.work_stream() {
            return Ok(Recorded::Ignored(format!(
                "advisory for stream {}",
                advisory.stream
            )));
        }
        let work = self
            .js
            .get_stream_no_info(self.topology.work_stream())
            .await
            .map_err(|e| format!("opening the work stream: {e}"))?;
        let original = match work.get_raw_message(advisory.stream_seq).await {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                return Ok(Recorded::NothingLeft);
            }
            Err(e) if e.to_string().contains("no message found") => {
                return Ok(Recorded::NothingLeft);
            }
            Err(e) => return Err(format!("reading work item {}: {e}", advisory.stream_seq)),
        };
        let failure = match intake::decode(
            Some(&original.headers),
            &original.payload,
            &self.topology.work_stream(),
            advisory.stream_seq,
            self.topology.lane_of(&original.subject),
        ) {
            Ok(item) => {
                if let Ok(Some(_)) = self.register.done(&item).await {
                    // Its outcome is out; only the message was left behind.
                    self.delete_work(advisory.stream_seq).await?;
                    return Ok(Recorded::NothingLeft);
                }
                if let Some(recorded) = self.record_ended_run(&item).await? {
                    self.close(&item, advisory.stream_seq).await?;
                    tracing::warn!(work_id = %item.id, repo = %item.repo, deliveries = advisory.deliveries, "work item ran out of deliveries; recorded what its ended Job left");
                    return Ok(recorded);
                }
                failure(&item, &advisory, self.settings.max_deliver)
            }
            // Poison runs out of deliveries only if dead-lettering it kept failing.
            Err(reason) => dead::poison(
                &self.topology.work_stream(),
                advisory.stream_seq,
                &original.subject,
                &original.payload,
                reason,
                u32::try_from(advisory.deliveries).unwrap_or(u32::MAX),
            ),
        };
        self.record_failure(&failure).await?;
        match &failure.item {
            Some(item) => self.close(item, advisory.stream_seq).await?,
            None => {
                self.delete_work(advisory.stream_seq).await?;
                self.metrics.exhausted.inc();
            }
        }
        tracing::warn!(work_id = %failure.work_id, repo = %failure.repo, consumer = %advisory.consumer, sequence = advisory.stream_seq, deliveries = advisory.deliveries, "work item ran out of deliveries; dead-lettered as EXHAUSTED");
        Ok(Recorded::DeadLettered(Box::new(failure)))
    }

    /// The outcome of the Job the item left behind, published, if that Job has ended.
    async fn record_ended_run(&self, item: &WorkItem) -> Result<Option<Recorded>, String> {
        let Some(run) = self.runner.ended(item).await else {
            return Ok(None);
        };
        // As its last delivery: a failure is final, with the class it really had.
        let (outcome, _) = self.judge(item, run, self.settings.max_deliver);
        Ok(Some(match outcome {
            Outcome::Done(result) => {
                self.publish(
                    self.topology.results_subject(),
                    &result.work_id,
                    result.encode_to_vec(),
                )
                .await?;
                Recorded::Published(result)
            }
            Outcome::Dead(failure) | Outcome::Retry { failure, .. } => {
                self.record_failure(&failure).await?;
                Recorded::DeadLettered(failure)
            }
        }))
    }

    /// The item's outcome is out: mark it done, remove its Job (unless another delivery may
    /// still need it, see [`AfterDone`]) and its message.
    async fn close(&self, item: &WorkItem, sequence: u64) -> Result<(), String> {
        match self.register.finish(item).await {
            // Whatever it left running or ended is no longer anyone's.
            Ok(AfterDone::Remove) => self.runner.cleanup(item).await,
            Ok(AfterDone::Keep) => {
                self.metrics.jobs_kept.inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording the exhausted item in the scan register failed; keeping its Job");
            }
        }
        self.delete_work(sequence).await?;
        self.metrics.exhausted.inc();
        Ok(())
    }

    async fn delete_work(&self, sequence: u64) -> Result<(), String> {
        let work = self
            .js
            .get_stream_no_info(self.topology.work_stream())
            .await
            .map_err(|e| format!("opening the work stream: {e}"))?;
        match work.delete_message(sequence).await {
            Ok(_) => Ok(()),
            // Already gone: a late ack, or another recorder got there first.
            Err(e) if e.to_string().contains("no message found") => Ok(()),
            Err(e) => Err(format!(
                "removing work item {sequence} from the work stream: {e}"
            )),
        }
    }
}
