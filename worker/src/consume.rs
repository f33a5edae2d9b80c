//! Pull, run, publish, ack: the worker's loop. A permit is taken before a message is pulled,
//! so at most `max_in_flight` items run at once; the manual lane is always asked first. While a
//! scan runs the message gets progress acks, so JetStream's ack wait only has to cover a
//! crashed worker. Publish, then ack, then clean up: a crash anywhere repeats a step, never
//! loses one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use backon::{BackoffBuilder, ExponentialBuilder};
use fleet_proto::v1::{FailureClass, WorkFailure, WorkItem};
use fleet_runtime::dead;
use fleet_runtime::topology::Topology;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::intake;
use crate::logs::{self, Verdict};
use crate::metrics::{ClassLabel, Metrics};
use crate::outcome::{self, Ack, Outcome};
use crate::runner::{RunResult, Runner};

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_in_flight: usize,
    /// Between progress acks; well inside the consumer's ack wait.
    pub heartbeat: Duration,
    /// How long SIGTERM waits for in-flight scans before leaving them to the next delivery.
    pub drain_deadline: Duration,
    /// Deliveries before an item is dead-lettered (the consumer's max_deliver).
    pub max_deliver: u64,
    /// How long one pull waits for scheduled work before the manual lane is asked again.
    pub poll: Duration,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    Published(Box<fleet_proto::v1::ScoreResult>),
    Retried {
        class: FailureClass,
        after: Duration,
    },
    DeadLettered(Box<WorkFailure>),
    Poison(String),
    /// Shutdown came first: not acked, the scan keeps running for the next delivery to adopt.
    Abandoned,
    /// The outcome could not be made durable (NATS trouble): handed back to be done again.
    HandedBack(String),
}

pub struct Worker {
    pub js: Context,
    pub topology: Topology,
    pub manual: PullConsumer,
    pub scheduled: PullConsumer,
    pub runner: Arc<dyn Runner>,
    pub metrics: Metrics,
    pub settings: Settings,
}

/// A result or failure republished this soon is dropped by the server's dedup.
const REPUBLISH_DELAY: Duration = Duration::from_secs(5);

impl Worker {
    /// Pulls and runs work until `shutdown`, then drains within the deadline.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)));
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            };
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = self.next_message() => message,
            };
            let worker = self.clone();
            let abandon = abandon.clone();
            tracker.spawn(async move {
                let _permit = permit;
                worker.handle(message, &abandon).await;
            });
        }
        tracker.close();
        let in_flight = tracker.len();
        if in_flight > 0 {
            tracing::info!(in_flight, deadline = ?self.settings.drain_deadline, "draining");
        }
        if tokio::time::timeout(self.settings.drain_deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = tracker.len(),
                "drain deadline passed; leaving the rest to the next delivery"
            );
            abandon.cancel();
            tracker.wait().await;
        }
        tracing::info!("worker stopped");
    }

    /// The next work message: a person's request if there is one, else scheduled work.
    pub async fn next_message(&self) -> Message {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            match self.pull().await {
                Ok(Some(message)) => return message,
                Ok(None) => backoff = ExponentialBuilder::default().without_max_times().build(),
                Err(e) => {
                    let pause = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in = ?pause, "pulling work failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn pull(&self) -> anyhow::Result<Option<Message>> {
        let mut manual = self.manual.fetch().max_messages(1).messages().await?;
        if let Some(message) = manual.next().await {
            return Ok(Some(message.map_err(|e| anyhow::anyhow!("{e}"))?));
        }
        let mut scheduled = self
            .scheduled
            .batch()
            .max_messages(1)
            .expires(self.settings.poll)
            .messages()
            .await?;
        match scheduled.next().await {
            Some(message) => Ok(Some(message.map_err(|e| anyhow::anyhow!("{e}"))?)),
            None => Ok(None),
        }
    }

    /// Runs one message to its end: the step tests drive.
    pub async fn handle(&self, message: Message, abandon: &CancellationToken) -> Handled {
        let (stream, sequence, delivered) = match message.info() {
            Ok(i) => (
                i.stream.to_owned(),
                i.stream_sequence,
                u64::try_from(i.delivered).unwrap_or(1),
            ),
            Err(_) => (self.topology.work_stream(), 0, 1),
        };
        let manual_lane = message.subject.as_str() == self.topology.manual_subject();
        let item = match intake::decode(
            message.headers.as_ref(),
            &message.payload,
            &stream,
            sequence,
            manual_lane,
        ) {
            Ok(item) => item,
            Err(reason) => {
                return self
                    .poison(&message, &stream, sequence, delivered, reason)
                    .await;
            }
        };
        let span = tracing::info_span!("work", work_id = %item.id, repo = %item.repo, delivered);
        self.handle_item(&message, item, delivered, abandon)
            .instrument(span)
            .await
    }

    async fn handle_item(
        &self,
        message: &Message,
        item: WorkItem,
        delivered: u64,
        abandon: &CancellationToken,
    ) -> Handled {
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let run = self.runner.run(&item);
        tokio::pin!(run);
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        heartbeat.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut run => break Some(result),
                _ = heartbeat.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %e, "progress ack failed");
                    }
                }
                () = abandon.cancelled() => break None,
            }
        };
        self.metrics.in_flight.dec();
        let Some(result) = result else {
            tracing::info!("left running for the next delivery");
            return Handled::Abandoned;
        };
        let (verdict, job_name) = match result {
            RunResult::Finished { run, adopted } => {
                tracing::debug!(adopted, exit_code = ?run.exit_code, "scan ended");
                (logs::interpret(&item, &run), run.job_name)
            }
            RunResult::Infra { message, job_name } => (
                Verdict::Failure {
                    class: FailureClass::Infra,
                    message,
                    log_tail: String::new(),
                },
                job_name,
            ),
        };
        self.metrics
            .job_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = outcome::decide(
            &item,
            verdict,
            delivered,
            self.settings.max_deliver,
            &job_name,
        );
        self.apply(message, &item, outcome).await
    }

    /// Makes the outcome durable, then acks as the table says, then cleans up.
    async fn apply(&self, message: &Message, item: &WorkItem, outcome: Outcome) -> Handled {
        let handled = match &outcome {
            Outcome::Done(result) => {
                if let Err(e) = self
                    .publish(
                        self.topology.results_subject(),
                        &result.work_id,
                        result.encode_to_vec(),
                    )
                    .await
                {
                    return self
                        .hand_back(message, format!("publishing the result: {e}"))
                        .await;
                }
                self.metrics.succeeded.inc();
                tracing::info!(score = ?result.score, "scored");
                Handled::Published(result.clone())
            }
            Outcome::Retry { after, failure } => {
                let class = FailureClass::try_from(failure.class).unwrap_or_default();
                if class == FailureClass::RateLimited {
                    self.runner.rate_limited(item);
                }
                self.metrics
                    .retried
                    .get_or_create(&ClassLabel {
                        class: class.name().to_owned(),
                    })
                    .inc();
                tracing::warn!(class = class.name(), message = %failure.message, retry_in = ?after, "scan failed; retrying later");
                Handled::Retried {
                    class,
                    after: *after,
                }
            }
            Outcome::Dead(failure) => {
                let class = FailureClass::try_from(failure.class).unwrap_or_default();
                let id = format!("failure-{}", failure.work_id);
                let published = match self
                    .publish(
                        self.topology.failures_subject(),
                        &id,
                        failure.encode_to_vec(),
                    )
                    .await
                {
                    Ok(()) => dead::publish(&self.js, &self.topology, failure)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = published {
                    return self
                        .hand_back(message, format!("recording the failure: {e}"))
                        .await;
                }
                self.metrics
                    .failed
                    .get_or_create(&ClassLabel {
                        class: class.name().to_owned(),
                    })
                    .inc();
                tracing::warn!(class = class.name(), message = %failure.message, "scan failed; dead-lettered");
                Handled::DeadLettered(failure.clone())
            }
        };
        // A retry gets a fresh Job: the failed one is removed before the item goes back.
        if matches!(outcome, Outcome::Retry { .. }) {
            self.runner.cleanup(item).await;
        }
        let acked = match outcome.ack() {
            Ack::Ack => message.double_ack().await,
            Ack::Nak(after) => message.ack_with(AckKind::Nak(Some(after))).await,
            Ack::Term => message.ack_with(AckKind::Term).await,
        };
        if let Err(e) = acked {
            // The outcome is durable; a redelivery adopts the finished Job and republishes the
            // same ids, which the server and the sink drop.
            tracing::warn!(error = %e, "ack failed");
        }
        if !matches!(outcome, Outcome::Retry { .. }) {
            self.runner.cleanup(item).await;
        }
        handled
    }

    async fn publish(&self, subject: String, id: &str, payload: Vec<u8>) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn hand_back(&self, message: &Message, reason: String) -> Handled {
        tracing::warn!(%reason, "handing the item back; the next delivery re-reads the finished scan");
        let _ = message.ack_with(AckKind::Nak(Some(REPUBLISH_DELAY))).await;
        Handled::HandedBack(reason)
    }

    async fn poison(
        &self,
        message: &Message,
        stream: &str,
        sequence: u64,
        delivered: u64,
        reason: String,
    ) -> Handled {
        tracing::warn!(subject = %message.subject, sequence, %reason, "dead-lettering a poison work message");
        let failure = dead::poison(
            stream,
            sequence,
            &message.subject,
            &message.payload,
            reason.clone(),
            u32::try_from(delivered).unwrap_or(u32::MAX),
        );
        if let Err(e) = dead::publish(&self.js, &self.topology, &failure).await {
            return self.hand_back(message, e.to_string()).await;
        }
        self.metrics.poison.inc();
        let _ = message.ack_with(AckKind::Term).await;
        Handled::Poison(reason)
    }
}
