//! Pull, run, publish, ack: the worker's loop. A permit is taken before a message is pulled,
//! so at most `max_in_flight` items are held at once; the manual lane is always asked first,
//! then the discovery lane, then the scheduled one.
//! While an item waits for a credential or its scan runs, the message gets progress acks, so
//! JetStream's ack wait only has to cover a crashed worker. Publish, then ack, then clean up:
//! a crash anywhere repeats a step, never loses one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use chrono::Utc;
use fleet_proto::v1::{FailureClass, WorkFailure, WorkItem};
use fleet_runtime::dead;
use fleet_runtime::http::Readiness;
use fleet_runtime::topology::{
    Topology, WORKER_DISCOVERY, WORKER_EXHAUSTED, WORKER_MANUAL, WORKER_SCHEDULED, WorkLane,
    pull_consumer,
};
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::budget::{Lease, Pool};
use crate::intake;
use crate::logs::{self, Verdict};
use crate::metrics::{ClassLabel, Metrics};
use crate::outcome::{self, Ack, Ending, Job, Outcome, hand_back_delay};
use crate::runner::{RunResult, Runner};
use crate::scans::{AfterDone, Decision, Register};
use fleet_runtime::budget::{self, Signal};

/// An ack the server confirms. async-nats' `double_ack` takes any reply for a confirmation,
/// "no responders" (the consumer is gone) included; a request does not.
pub async fn confirmed_ack(message: &Message) -> Result<(), async_nats::Error> {
    let reply = message
        .reply
        .clone()
        .ok_or("not a JetStream message: no reply subject")?;
    message
        .context
        .client()
        .request(reply, bytes::Bytes::from(AckKind::Ack))
        .await?;
    Ok(())
}

/// JetStream's clock (a message's stored time) in the wire format's type.
pub fn time_to_chrono(t: time::OffsetDateTime) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_in_flight: usize,
    /// Slots only the manual lane uses, on top of `max_in_flight`: a person's request starts
    /// at once even while every other slot runs scheduled work (0: none reserved).
    pub manual_in_flight: usize,
    /// Between progress acks; well inside the consumer's ack wait.
    pub heartbeat: Duration,
    /// How long SIGTERM waits for in-flight scans before leaving them to the next delivery.
    pub drain_deadline: Duration,
    /// Deliveries before an item is dead-lettered (the consumer's max_deliver).
    pub max_deliver: u64,
    /// How long one pull waits for scheduled work before the manual and discovery lanes are
    /// asked again.
    pub poll: Duration,
    /// GitHub's quota window (`GITHUB_WINDOW_SECS`): rate-limited retries wait a quarter.
    pub quota_window: Duration,
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
    /// A newer scan of the same repository (work item `by`) answers this one: acked, not run.
    Covered {
        by: String,
    },
    /// Its outcome was already published (a redelivery after a lost ack): acked, not run.
    AlreadyDone,
    /// The outcome could not be made durable (NATS trouble): handed back to be done again.
    HandedBack(String),
}

pub struct Worker {
    pub js: Context,
    pub topology: Topology,
    pub manual: PullConsumer,
    pub discovery: PullConsumer,
    pub scheduled: PullConsumer,
    /// Max-deliveries advisories of the work stream (see [`crate::exhausted`]).
    pub exhausted: PullConsumer,
    pub register: Register,
    pub runner: Arc<dyn Runner>,
    /// Where scans get their GitHub credential.
    pub pool: Arc<Pool>,
    pub metrics: Metrics,
    pub settings: Settings,
    /// The queues for a credential, one per work lane: see [`Worker::wait_for_credential`].
    credit_lines: [tokio::sync::Mutex<()>; 3],
}

/// The credential a finished scan used, and what it said about its quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub key: String,
    pub signal: Option<Signal>,
}

/// A pulled message and what its delivery says about it.
struct Delivery {
    message: Message,
    stream: String,
    sequence: u64,
    /// This message's delivery count (1 for the first).
    delivered: u64,
    lane: WorkLane,
    /// The work item, or why the message is poison.
    item: Result<WorkItem, String>,
}

/// Where a pull loop takes its work from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// The manual lane first, then discovery, then the scheduled lane: the ordinary slots.
    Any,
    /// The manual lane only: the slots reserved for people's requests.
    ManualOnly,
}

/// How long one pull of the reserved manual slots waits for a request before asking again.
const MANUAL_LONG_POLL: Duration = Duration::from_secs(5);

/// How long a reserved manual slot holds a credential while no request comes before giving
/// it back.
const LEASE_IDLE: Duration = Duration::from_secs(30);

/// How long the answer to a no-wait pull may take: the server answers at once, so only a
/// request lost with a restarting server takes longer, and then the pull is given up.
const NO_WAIT_ANSWER: Duration = Duration::from_secs(5);

/// The message waiting on `consumer` (of work lane `lane`), if any, without waiting for one.
/// It is asked without an expiry: with one, the server holds a no-wait request until it
/// expires whenever the lane is empty, and every item of the lanes after it would wait that
/// long. The client bounds the answer instead, so a request lost with a restarting server
/// still ends.
async fn pull_waiting(lane: &str, consumer: &PullConsumer) -> anyhow::Result<Option<Message>> {
    tokio::time::timeout(NO_WAIT_ANSWER, async {
        let mut batch = consumer.fetch().max_messages(1).messages().await?;
        anyhow::Ok(
            batch
                .next()
                .await
                .transpose()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!("the {lane} lane's pull had no answer within {NO_WAIT_ANSWER:?}")
    })?
}

impl Worker {
    /// A worker on the topology's consumers and scan register (which must exist: every
    /// service ensures the topology at start-up).
    pub async fn open(
        js: Context,
        topology: Topology,
        runner: Arc<dyn Runner>,
        pool: Arc<Pool>,
        metrics: Metrics,
        settings: Settings,
        job_deadline: Duration,
    ) -> anyhow::Result<Self> {
        let scans = topology.ensure_scans_bucket(&js).await?;
        Ok(Self {
            manual: pull_consumer(&js, &topology.work_stream(), WORKER_MANUAL).await?,
            discovery: pull_consumer(&js, &topology.work_stream(), WORKER_DISCOVERY).await?,
            scheduled: pull_consumer(&js, &topology.work_stream(), WORKER_SCHEDULED).await?,
            exhausted: pull_consumer(&js, &topology.exhausted_stream(), WORKER_EXHAUSTED).await?,
            register: Register::new(scans, job_deadline),
            js,
            topology,
            runner,
            pool,
            metrics,
            settings,
            credit_lines: Default::default(),
        })
    }

    /// Pulls and runs work until `shutdown`, then drains within the deadline. Readiness turns
    /// false when the drain begins: this worker takes no more work.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, readiness: Readiness) {
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        let recorder = tokio::spawn(self.clone().record_exhausted_until(shutdown.clone()));
        let lanes: Vec<_> = [
            (Lane::Any, self.settings.max_in_flight.max(1)),
            (Lane::ManualOnly, self.settings.manual_in_flight),
        ]
        .into_iter()
        .filter(|&(_, slots)| slots > 0)
        .map(|(lane, slots)| {
            tokio::spawn(self.clone().run_lane(
                lane,
                slots,
                tracker.clone(),
                abandon.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
        for lane in lanes {
            let _ = lane.await;
        }
        readiness.set(false);
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
        let _ = recorder.await;
        tracing::info!("worker stopped");
    }

    /// Runs `lane`'s work `slots` at a time until `shutdown`: a permit is taken before a
    /// message is pulled, so no more than `slots` are held at once. The credential is taken
    /// after the pull, by the message's own task, so the loop goes on pulling while one waits:
    /// a redelivery that re-attaches to its running or finished Job needs none and starts at
    /// once, however long fresh work waits for quota. The reserved manual slots take theirs
    /// before they pull instead, so a person's request finds one ready.
    async fn run_lane(
        self: Arc<Self>,
        lane: Lane,
        slots: usize,
        tracker: TaskTracker,
        abandon: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(slots));
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => return,
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            };
            // The reserved manual slots hold a credential ready before they pull, so a
            // person's request starts the moment it comes, even on a spent pool.
            let ready = match lane {
                Lane::ManualOnly => match self.pool.take(budget::Lane::Manual, &shutdown).await {
                    Some(lease) => Some(lease),
                    None => return,
                },
                Lane::Any => None,
            };
            let message = tokio::select! {
                () = shutdown.cancelled() => None,
                message = self.next_before(lane, ready.is_some().then(|| Instant::now() + LEASE_IDLE)) => message,
            };
            let Some(message) = message else {
                // A credential held through a quiet queue would start late and out of pace.
                if let Some(lease) = &ready {
                    self.pool.give_back(lease).await;
                }
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            };
            let delivery = self.delivery(message);
            let worker = self.clone();
            let abandon = abandon.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let _permit = permit;
                let lease = match ready {
                    Some(lease) => Some(lease),
                    None => worker.lease_for(&delivery, &shutdown).await,
                };
                let Some(lease) = lease else {
                    // Shutdown while waiting for a credential: another replica takes it now.
                    if let Err(e) = delivery.message.ack_with(AckKind::Nak(None)).await {
                        tracing::warn!(error = %e, "handing back an unstarted item failed; it comes again after its ack wait");
                    }
                    return;
                };
                worker.handle_leased(delivery, lease, &abandon).await;
            });
        }
    }

    /// The credential `delivery` needs: none for a message that is no work item or for a
    /// redelivery whose Job exists (re-attaching spends no quota), else one with room for a
    /// scan of its lane ([`Self::wait_for_credential`]). `None` once `shutdown` comes first.
    async fn lease_for(&self, delivery: &Delivery, shutdown: &CancellationToken) -> Option<Lease> {
        let Ok(item) = &delivery.item else {
            return Some(Lease::none());
        };
        if delivery.delivered > 1 && self.runner.has_run(item).await {
            return Some(Lease::none());
        }
        self.wait_for_credential(&delivery.message, delivery.lane, shutdown)
            .await
    }

    /// A credential with room for a scan of `lane`. Deliveries of a lane queue for it one
    /// behind the other, so the fleet-wide budget sees one waiter per lane, not one per slot;
    /// while it waits, `message` gets progress acks. `None` once `shutdown` comes first.
    async fn wait_for_credential(
        &self,
        message: &Message,
        lane: WorkLane,
        shutdown: &CancellationToken,
    ) -> Option<Lease> {
        // A discovery is crawler-driven as often as not: it draws on the scheduled share, never
        // on the reserve kept for people's requests, in a line of its own beside scheduled
        // work's, so it does not wait behind a scheduled backlog for its turn either.
        let (credit, line) = match lane {
            WorkLane::Manual => (budget::Lane::Manual, &self.credit_lines[0]),
            WorkLane::Discovery => (budget::Lane::Scheduled, &self.credit_lines[1]),
            WorkLane::Scheduled => (budget::Lane::Scheduled, &self.credit_lines[2]),
        };
        let take = async {
            let _turn = line.lock().await;
            self.pool.take(credit, shutdown).await
        };
        self.with_progress_acks(message, take, shutdown)
            .await
            .flatten()
    }

    /// Awaits `work` while `message` gets a progress ack every heartbeat, so its ack wait does
    /// not run out meanwhile; `None` once `stop` comes first.
    async fn with_progress_acks<T>(
        &self,
        message: &Message,
        work: impl std::future::Future<Output = T>,
        stop: &CancellationToken,
    ) -> Option<T> {
        tokio::pin!(work);
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                _ = heartbeat.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %e, "progress ack failed");
                    }
                }
                () = stop.cancelled() => return None,
            }
        }
    }

    /// The next work message: a person's request if there is one, else a discovery, else
    /// scheduled work.
    pub async fn next_message(&self) -> Message {
        self.next_in(Lane::Any).await
    }

    /// The next message of `lane`, pulling again (with backoff after errors) until one comes.
    async fn next_in(&self, lane: Lane) -> Message {
        self.next_before(lane, None).await.expect("no deadline")
    }

    /// [`Self::next_in`], or `None` once a pull comes back empty after `deadline`.
    async fn next_before(&self, lane: Lane, deadline: Option<Instant>) -> Option<Message> {
        let policy = || fleet_runtime::retry::PULL.pauses();
        let mut backoff = policy();
        loop {
            let pulled = match lane {
                Lane::Any => self.pull().await,
                Lane::ManualOnly => self.pull_manual().await,
            };
            match pulled {
                Ok(Some(message)) => return Some(message),
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => return None,
                Ok(None) => backoff = policy(),
                Err(e) => {
                    let pause = backoff.next().unwrap_or(fleet_runtime::retry::PULL.cap);
                    tracing::warn!(error = %e, ?lane, retry_in = ?pause, "pulling work failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// The reserved slots' pull: manual work only, with a long poll so a request starts the
    /// moment it is published, whatever the scheduled lane is doing.
    async fn pull_manual(&self) -> anyhow::Result<Option<Message>> {
        let mut manual = self
            .manual
            .batch()
            .max_messages(1)
            .expires(MANUAL_LONG_POLL)
            .messages()
            .await?;
        match manual.next().await {
            Some(message) => Ok(Some(message.map_err(|e| anyhow::anyhow!("{e}"))?)),
            None => Ok(None),
        }
    }

    /// A person's request if one is waiting, else a discovery, else scheduled work, waiting
    /// up to the poll.
    async fn pull(&self) -> anyhow::Result<Option<Message>> {
        for (lane, consumer) in [("manual", &self.manual), ("discovery", &self.discovery)] {
            if let Some(message) = pull_waiting(lane, consumer).await? {
                return Ok(Some(message));
            }
        }
        // A long poll, answered the moment scheduled work arrives; its expiry also bounds the
        // wait on the client (the expiry plus 5 s).
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

    /// A pulled message with what its delivery says about it, decoded once.
    fn delivery(&self, message: Message) -> Delivery {
        let (stream, sequence, delivered) = match message.info() {
            Ok(i) => (
                i.stream.to_owned(),
                i.stream_sequence,
                u64::try_from(i.delivered).unwrap_or(1),
            ),
            Err(_) => (self.topology.work_stream(), 0, 1),
        };
        let lane = self.topology.lane_of(&message.subject);
        let item = intake::decode(
            message.headers.as_ref(),
            &message.payload,
            &stream,
            sequence,
            lane,
        );
        Delivery {
            message,
            stream,
            sequence,
            delivered,
            lane,
            item,
        }
    }

    /// Runs one message to its end, taking the credential it needs first: the step tests
    /// drive.
    pub async fn handle(&self, message: Message, abandon: &CancellationToken) -> Handled {
        let delivery = self.delivery(message);
        let Some(lease) = self.lease_for(&delivery, abandon).await else {
            self.settle(&delivery.message, None, Ending::Abandon).await;
            return Handled::Abandoned;
        };
        self.handle_leased(delivery, lease, abandon).await
    }

    /// Runs one delivery to its end with the credential `lease`, given back if no scan starts.
    async fn handle_leased(
        &self,
        delivery: Delivery,
        lease: Lease,
        abandon: &CancellationToken,
    ) -> Handled {
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
    ) -> Handled {
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
                self.settle(message, Some(&item), Ending::Answered(after))
                    .await;
                return Handled::AlreadyDone;
            }
            Ok(Decision::Covered { by }) => {
                tracing::info!(covered_by = %by, "a newer scan of this repository answers this item; not scanning it again");
                self.metrics.covered.inc();
                // An earlier delivery may have left a Job (abandoned at a drain): not needed.
                self.settle(message, Some(&item), Ending::Answered(AfterDone::Remove))
                    .await;
                return Handled::Covered { by };
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
            self.settle(message, Some(&item), Ending::Abandon).await;
            return Handled::Abandoned;
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
    async fn apply(&self, message: &Message, item: &WorkItem, outcome: Outcome) -> Handled {
        if outcome.is_final()
            && let Ok(Some(after)) = self.register.done(item).await
        {
            // Recorded meanwhile by the recorder of exhausted items (this worker had lost its
            // heartbeats): one outcome per item, and that one is out.
            tracing::warn!("this item's outcome was recorded while it ran; dropping this one");
            self.metrics.already_done.inc();
            self.settle(message, Some(item), Ending::Answered(after))
                .await;
            return Handled::AlreadyDone;
        }
        if let Err(reason) = self.end(message, Some(item), outcome.ending()).await {
            return self.hand_back(message, reason).await;
        }
        let label = |failure: &WorkFailure| {
            let class = FailureClass::try_from(failure.class).unwrap_or_default();
            let label = ClassLabel {
                class: class.name().to_owned(),
            };
            (class, label)
        };
        match outcome {
            Outcome::Done(result) => {
                self.metrics.succeeded.inc();
                tracing::info!(score = ?result.score, "scored");
                Handled::Published(result)
            }
            Outcome::Retry { after, failure } => {
                let (class, label) = label(&failure);
                self.metrics.retried.get_or_create(&label).inc();
                tracing::warn!(class = class.name(), message = %failure.message, retry_in = ?after, "scan failed; retrying later");
                Handled::Retried { class, after }
            }
            Outcome::Dead(failure) => {
                let (class, label) = label(&failure);
                self.metrics.failed.get_or_create(&label).inc();
                tracing::warn!(class = class.name(), message = %failure.message, "scan failed; dead-lettered");
                Handled::DeadLettered(failure)
            }
        }
    }

    /// Ends the delivery as `ending`: publishes what it carries, then [`Self::settle`]s. An
    /// `Err` says why that could not be made durable: then nothing was recorded or acked, and
    /// the caller hands the item back.
    async fn end(
        &self,
        message: &Message,
        item: Option<&WorkItem>,
        ending: Ending<'_>,
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
            Ending::Retry(_) | Ending::Answered(_) | Ending::HandBack(_) | Ending::Abandon => {}
        }
        self.settle(message, item, ending).await;
        Ok(())
    }

    /// Carries out the rest of `ending`'s row of [`Ending::steps`], once what it publishes is
    /// out: the record, the ack, and `item`'s Job (none for a message that is no work item).
    async fn settle(&self, message: &Message, item: Option<&WorkItem>, ending: Ending<'_>) {
        let steps = ending.steps();
        let after = match (steps.record, item, ending) {
            (true, Some(item), _) => self.register.finish(item).await.unwrap_or_else(|e| {
                // Unrecorded, the outcome lives in the ended Job alone: a redelivery finds it
                // there and republishes the same ids, which the server and the sink drop.
                tracing::warn!(error = %e, "recording the outcome in the scan register failed; keeping the Job");
                AfterDone::Keep
            }),
            (_, _, Ending::Answered(after)) => after,
            _ => AfterDone::Keep,
        };
        if let (Job::RemoveBeforeAck, Some(item)) = (steps.job, item) {
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
            (Ok(()), Job::RemoveAfterAck, Some(item)) if after == AfterDone::Remove => {
                self.runner.cleanup(item).await;
            }
            (Ok(()), Job::RemoveAfterAck, Some(_)) => {
                self.metrics.jobs_kept.inc();
                tracing::info!("the Job stays for its TTL: another delivery may still come for it");
            }
            (Ok(()), ..) => {}
        }
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
    async fn hand_back(&self, message: &Message, reason: String) -> Handled {
        tracing::warn!(%reason, "handing the item back; the next delivery re-reads the finished scan");
        self.metrics.handed_back.inc();
        let delivered = message
            .info()
            .map_or(1, |i| u64::try_from(i.delivered).unwrap_or(1));
        self.settle(message, None, Ending::HandBack(hand_back_delay(delivered)))
            .await;
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
        if let Err(e) = self.end(message, None, Ending::Poison(&failure)).await {
            return self.hand_back(message, e).await;
        }
        self.metrics.poison.inc();
        Handled::Poison(reason)
    }
}
