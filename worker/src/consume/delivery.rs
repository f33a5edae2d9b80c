//! The delivery side of the worker's loop: one pulled message taken to its end. Judged
//! (poison, covered by a newer scan, already done, or to scan), scanned, its outcome applied
//! through [`crate::outcome`]'s table (publish, record, ack, clean up), and the message settled.
//! The pull side, which decides what is pulled when, is [`super`].
//!
//! A redelivery that finds its Job already ended in a failure to retry (its delete had failed)
//! removes it and starts a fresh scan in the same delivery (`worker_fresh_attempts_total`),
//! rather than reading the failed run again on every delivery.

use std::time::Instant;

use async_nats::jetstream::{AckKind, Message};
use chrono::Utc;
use fleet_proto::v1::{FailureClass, WorkFailure, WorkItem};
use fleet_runtime::dead;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Delivery, Usage, Worker, confirmed_ack, time_to_chrono};
use crate::budget::Lease;
use crate::logs::{self, Verdict};
use crate::metrics::ClassLabel;
use crate::outcome::{self, Ack, Ending, JobFate, Outcome, hand_back_delay};
use crate::runner::RunResult;
use crate::scans::{AfterDone, Decision};

impl Worker {
    /// Runs one message to its end, taking the credential it needs first: the step tests
    /// drive.
    pub async fn handle(&self, message: Message, abandon: &CancellationToken) -> Ending {
        let delivery = self.delivery(message);
        let Some(lease) = self.lease_for(&delivery, abandon).await else {
            return self.settled(&delivery.message, None, Ending::Abandon).await;
        };
        self.handle_leased(delivery, lease, abandon).await
    }

    /// Runs one delivery to its end with the credential `lease`, given back if no scan starts.
    pub(super) async fn handle_leased(
        &self,
        delivery: Delivery,
        lease: Lease,
        abandon: &CancellationToken,
    ) -> Ending {
        let Delivery {
            message,
            stream,
            sequence,
            delivered,
            item,
            ..
        } = delivery;
        let item = match item {
            Ok(item) => item,
            Err(reason) => {
                self.pool.give_back(&lease).await;
                return self
                    .poison(&message, &stream, sequence, delivered, reason)
                    .await;
            }
        };
        let span = tracing::info_span!("work", work_id = %item.id, repo = %item.repo, delivered);
        self.handle_item(&message, item, delivered, lease, abandon)
            .instrument(span)
            .await
    }

    async fn handle_item(
        &self,
        message: &Message,
        item: WorkItem,
        delivered: u64,
        mut lease: Lease,
        abandon: &CancellationToken,
    ) -> Ending {
        let enqueued = message
            .info()
            .map(|i| time_to_chrono(i.published))
            .unwrap_or_else(|_| Utc::now());
        let decision = self.register.begin(&item, enqueued).await;
        if !matches!(decision, Ok(Decision::Scan)) {
            self.pool.give_back(&lease).await;
        }
        match decision {
            Ok(Decision::Scan) => {}
            Ok(Decision::AlreadyDone(after)) => {
                tracing::info!("outcome already published by an earlier delivery; acking");
                self.metrics.already_done.inc();
                return self
                    .settled(message, Some(&item), Ending::AlreadyDone(after))
                    .await;
            }
            Ok(Decision::Covered { by }) => {
                tracing::info!(covered_by = %by, "a newer scan of this repository answers this item; not scanning it again");
                self.metrics.covered.inc();
                return self
                    .settled(message, Some(&item), Ending::Covered { by })
                    .await;
            }
            Err(e) => return self.hand_back(message, e.to_string()).await,
        }
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let scanned = self
            .scan_afresh_if_stale(message, &item, &mut lease, delivered, abandon)
            .await;
        self.metrics.in_flight.dec();
        if scanned.as_ref().is_some_and(|r| !r.spent_credential()) {
            self.pool.give_back(&lease).await;
        }
        let Some(result) = scanned else {
            tracing::info!("left running for the next delivery");
            self.metrics.abandoned.inc();
            return self.settled(message, Some(&item), Ending::Abandon).await;
        };
        self.metrics
            .job_seconds
            .observe(started.elapsed().as_secs_f64());
        let (outcome, usage) = self.judge(&item, result, delivered);
        if let Some(Usage {
            key,
            signal: Some(signal),
        }) = &usage
        {
            self.pool.learn(key, *signal).await;
        }
        self.apply(message, &item, outcome).await
    }

    /// Runs the scan; if that only found a run an earlier delivery already judged a failure
    /// to retry (its Job's delete had failed), removes it and runs a fresh one: reading it
    /// again would spend every delivery on one failed run. A delivery that came to re-attach,
    /// without a credential, takes one into `lease` for the fresh run.
    async fn scan_afresh_if_stale(
        &self,
        message: &Message,
        item: &WorkItem,
        lease: &mut Lease,
        delivered: u64,
        abandon: &CancellationToken,
    ) -> Option<RunResult> {
        let scanned = self
            .scan(message, item, lease.key.as_deref(), abandon)
            .await;
        let Some(
            run @ RunResult::Ended {
                ended_before: true, ..
            },
        ) = &scanned
        else {
            return scanned;
        };
        if self.judge(item, run.clone(), delivered).0.is_final() {
            return scanned;
        }
        match self.runner.discard(item).await {
            Ok(()) => {
                tracing::info!(
                    "a previous attempt's failed Job was left behind; starting a fresh one"
                );
                self.metrics.fresh_attempts.inc();
                if lease.key.is_none() {
                    let lane = self.topology.lane_of(&message.subject);
                    *lease = self.wait_for_credential(message, lane, abandon).await?;
                }
                self.scan(message, item, lease.key.as_deref(), abandon)
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not remove the previous attempt's Job");
                scanned
            }
        }
    }

    /// Runs the scan with progress acks until it ends, or `None` if `abandon` came first.
    async fn scan(
        &self,
        message: &Message,
        item: &WorkItem,
        credential: Option<&str>,
        abandon: &CancellationToken,
    ) -> Option<RunResult> {
        self.with_progress_acks(message, self.runner.run(item, credential), abandon)
            .await
    }

    /// The outcome of a run, and the credential it used.
    pub(crate) fn judge(
        &self,
        item: &WorkItem,
        result: RunResult,
        delivered: u64,
    ) -> (Outcome, Option<Usage>) {
        let (verdict, job_name, usage) = match result {
            RunResult::Ended { run, adopted, .. } => {
                tracing::debug!(adopted, exit_code = ?run.exit_code, "scan ended");
                let verdict = logs::interpret(item, &run);
                let usage = run.token_key.clone().map(|key| Usage {
                    key,
                    signal: logs::quota_signal(&run, &verdict),
                });
                (verdict, run.job_name, usage)
            }
            RunResult::Infra {
                message, job_name, ..
            } => (
                Verdict::Failure {
                    class: FailureClass::Infra,
                    message,
                    log_tail: String::new(),
                },
                job_name,
                None,
            ),
        };
        let outcome = outcome::decide(
            item,
            verdict,
            delivered,
            self.settings.max_deliver,
            &job_name,
            self.settings.quota_window,
        );
        (outcome, usage)
    }

    /// Ends the delivery as the outcome's row of the table says, and counts it.
    async fn apply(&self, message: &Message, item: &WorkItem, outcome: Outcome) -> Ending {
        if outcome.is_final()
            && let Ok(Some(after)) = self.register.done(item).await
        {
            // Recorded meanwhile by the recorder of exhausted items (this worker had lost its
            // heartbeats): one outcome per item, and that one is out.
            tracing::warn!("this item's outcome was recorded while it ran; dropping this one");
            self.metrics.already_done.inc();
            return self
                .settled(message, Some(item), Ending::AlreadyDone(after))
                .await;
        }
        let ending = Ending::from(outcome);
        if let Err(reason) = self.end(message, Some(item), &ending).await {
            return self.hand_back(message, reason).await;
        }
        let label = |failure: &WorkFailure| {
            let class = FailureClass::try_from(failure.class).unwrap_or_default();
            let label = ClassLabel {
                class: class.name().to_owned(),
            };
            (class, label)
        };
        match &ending {
            Ending::Scored(result) => {
                self.metrics.succeeded.inc();
                tracing::info!(score = ?result.score, "scored");
            }
            Ending::Retry { after, failure } => {
                let (class, label) = label(failure);
                self.metrics.retried.get_or_create(&label).inc();
                tracing::warn!(class = class.name(), message = %failure.message, retry_in = ?after, "scan failed; retrying later");
            }
            Ending::Dead(failure) => {
                let (class, label) = label(failure);
                self.metrics.failed.get_or_create(&label).inc();
                tracing::warn!(class = class.name(), message = %failure.message, "scan failed; dead-lettered");
            }
            // The other endings are counted where they are made.
            _ => {}
        }
        ending
    }

    /// Ends the delivery as `ending`: publishes what it carries, then [`Self::settle`]s. An
    /// `Err` says why that could not be made durable: then nothing was recorded or acked, and
    /// the caller hands the item back.
    async fn end(
        &self,
        message: &Message,
        item: Option<&WorkItem>,
        ending: &Ending,
    ) -> Result<(), String> {
        match ending {
            Ending::Scored(result) => self
                .publish(
                    self.topology.results_subject(),
                    &result.work_id,
                    result.encode_to_vec(),
                )
                .await
                .map_err(|e| format!("publishing the result: {e}"))?,
            Ending::Dead(failure) => self
                .record_failure(failure)
                .await
                .map_err(|e| format!("recording the failure: {e}"))?,
            Ending::Poison(failure) => dead::publish(&self.js, &self.topology, failure)
                .await
                .map_err(|e| format!("dead-lettering it: {e}"))?,
            Ending::Retry { .. }
            | Ending::AlreadyDone(_)
            | Ending::Covered { .. }
            | Ending::HandBack { .. }
            | Ending::Abandon => {}
        }
        self.settle(message, item, ending).await;
        Ok(())
    }

    /// Carries out the rest of `ending`'s row of [`Ending::steps`], once what it publishes is
    /// out: the record, the ack, and `item`'s Job (none for a message that is no work item).
    async fn settle(&self, message: &Message, item: Option<&WorkItem>, ending: &Ending) {
        let steps = ending.steps();
        let after = match (steps.record, item, ending) {
            (true, Some(item), _) => self.register.finish(item).await.unwrap_or_else(|e| {
                // Unrecorded, the outcome lives in the ended Job alone: a redelivery finds it
                // there and republishes the same ids, which the server and the sink drop.
                tracing::warn!(error = %e, "recording the outcome in the scan register failed; keeping the Job");
                AfterDone::Keep
            }),
            (_, _, Ending::AlreadyDone(after)) => *after,
            (_, _, Ending::Covered { .. }) => AfterDone::Remove,
            _ => AfterDone::Keep,
        };
        if let (JobFate::RemoveBeforeAck, Some(item)) = (steps.job, item) {
            self.runner.cleanup(item).await;
        }
        let Some(ack) = steps.ack else {
            return;
        };
        match (self.send_ack(message, ack).await, steps.job, item) {
            (Err(e), ..) => {
                self.metrics.ack_failures.inc();
                tracing::warn!(error = %e, "ack failed; the message comes again (its Job, if any, is kept for it)");
            }
            (Ok(()), JobFate::RemoveAfterAck, Some(item)) if after == AfterDone::Remove => {
                self.runner.cleanup(item).await;
            }
            (Ok(()), JobFate::RemoveAfterAck, Some(_)) => {
                self.metrics.jobs_kept.inc();
                tracing::info!("the Job stays for its TTL: another delivery may still come for it");
            }
            (Ok(()), ..) => {}
        }
    }

    /// [`Self::settle`]s the delivery as `ending`, which it returns.
    async fn settled(&self, message: &Message, item: Option<&WorkItem>, ending: Ending) -> Ending {
        self.settle(message, item, &ending).await;
        ending
    }

    async fn send_ack(&self, message: &Message, ack: Ack) -> Result<(), async_nats::Error> {
        match ack {
            Ack::Ack => confirmed_ack(message).await,
            Ack::Nak(after) => message.ack_with(AckKind::Nak(Some(after))).await,
            Ack::Term => message.ack_with(AckKind::Term).await,
        }
    }

    /// A final failure to the sink (`scorecard.failures`) and the dead stream, each with an id
    /// derived from the work id, so whoever records it again is dropped by the server.
    pub async fn record_failure(&self, failure: &WorkFailure) -> Result<(), String> {
        self.publish(
            self.topology.failures_subject(),
            &format!("failure-{}", failure.work_id),
            failure.encode_to_vec(),
        )
        .await?;
        dead::publish(&self.js, &self.topology, failure)
            .await
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn publish(
        &self,
        subject: String,
        id: &str,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        fleet_runtime::publish::publish_once(&self.js, subject, id, payload.into())
            .await
            .map_err(|e| e.to_string())
    }

    /// Hands the item back to be done again ([`Ending::HandBack`]).
    async fn hand_back(&self, message: &Message, reason: String) -> Ending {
        tracing::warn!(%reason, "handing the item back; the next delivery re-reads the finished scan");
        self.metrics.handed_back.inc();
        let delivered = message
            .info()
            .map_or(1, |i| u64::try_from(i.delivered).unwrap_or(1));
        let ending = Ending::HandBack {
            after: hand_back_delay(delivered),
            reason,
        };
        self.settled(message, None, ending).await
    }

    async fn poison(
        &self,
        message: &Message,
        stream: &str,
        sequence: u64,
        delivered: u64,
        reason: String,
    ) -> Ending {
        tracing::warn!(subject = %message.subject, sequence, %reason, "dead-lettering a poison work message");
        let ending = Ending::Poison(Box::new(dead::poison(
            stream,
            sequence,
            &message.subject,
            &message.payload,
            reason,
            u32::try_from(delivered).unwrap_or(u32::MAX),
        )));
        if let Err(e) = self.end(message, None, &ending).await {
            return self.hand_back(message, e).await;
        }
        self.metrics.poison.inc();
        ending
    }
}
