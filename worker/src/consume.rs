//! Pull, run, publish, ack: the worker's loop. A permit is taken before a message is pulled,
//! so at most `max_in_flight` items are held at once; the manual lane is always asked first,
//! then the discovery lane, then the scheduled one.
//! While an item waits for a credential or its scan runs, the message gets progress acks, so
//! JetStream's ack wait only has to cover a crashed worker. Publish, then ack, then clean up:
//! a crash anywhere repeats a step, never loses one.
//!
//! On top of `max_in_flight`, `manual_in_flight` slots pull only the manual lane, with a long
//! poll and a credential taken beforehand (given back after 30 s without a request), so a
//! person's request starts at once while every ordinary slot runs scheduled work. A
//! redelivery whose Job exists takes no credential and starts at once; each lane waits for a
//! credential in a line of its own, discovery drawing on the scheduled share, never the
//! reserve kept for people's requests. At shutdown only pulling stops: scans that end within
//! the drain deadline are published and acked; the rest are left running, unacked, for the
//! next delivery to adopt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use chrono::Utc;
use fleet_proto::v1::WorkItem;
use fleet_runtime::http::Readiness;
use fleet_runtime::topology::{
    Topology, WORKER_DISCOVERY, WORKER_EXHAUSTED, WORKER_MANUAL, WORKER_SCHEDULED, WorkLane,
    pull_consumer,
};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod delivery;

use crate::budget::{Lease, Pool};
use crate::intake;
use crate::metrics::Metrics;
use crate::runner::Runner;
use crate::scans::Register;
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
enum Source {
    /// The manual lane first, then discovery, then the scheduled lane: the ordinary slots.
    AllLanes,
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
            (Source::AllLanes, self.settings.max_in_flight.max(1)),
            (Source::ManualOnly, self.settings.manual_in_flight),
        ]
        .into_iter()
        .filter(|&(_, slots)| slots > 0)
        .map(|(source, slots)| {
            tokio::spawn(self.clone().run_lane(
                source,
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
        source: Source,
        slots: usize,
        tracker: TaskTracker,
        abandon: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(slots));
        let mut failures = fleet_runtime::retry::PULL.pauses();
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => return,
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            };
            // The reserved manual slots hold a credential ready before they pull, so a
            // person's request starts the moment it comes, even on a spent pool.
            let ready = match source {
                Source::ManualOnly => match self.pool.take(budget::Lane::Manual, &shutdown).await {
                    Some(lease) => Some(lease),
                    None => return,
                },
                Source::AllLanes => None,
            };
            let pulled = tokio::select! {
                () = shutdown.cancelled() => Ok(None),
                pulled = self.next_before(source, ready.is_some().then(|| Instant::now() + LEASE_IDLE)) => pulled,
            };
            let message = match pulled {
                Ok(Some(message)) => {
                    failures = fleet_runtime::retry::PULL.pauses();
                    message
                }
                quiet_or_failed => {
                    // A credential held through a quiet queue would start late and out of
                    // pace; neither it nor the slot is held while a failed pull is waited out.
                    if let Some(lease) = &ready {
                        self.pool.give_back(lease).await;
                    }
                    drop(permit);
                    match quiet_or_failed {
                        Err(e) => {
                            let pause = failures.next().unwrap_or(fleet_runtime::retry::PULL.cap);
                            tracing::warn!(error = %e, ?source, retry_in = ?pause, "pulling work failed");
                            tokio::select! {
                                () = shutdown.cancelled() => {}
                                () = tokio::time::sleep(pause) => {}
                            }
                        }
                        Ok(_) => failures = fleet_runtime::retry::PULL.pauses(),
                    }
                    if shutdown.is_cancelled() {
                        return;
                    }
                    continue;
                }
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
        self.next_in(Source::AllLanes).await
    }

    /// The next message of `lane`, pulling again (with backoff after errors) until one comes.
    async fn next_in(&self, source: Source) -> Message {
        let mut failures = fleet_runtime::retry::PULL.pauses();
        loop {
            match self.next_before(source, None).await {
                Ok(Some(message)) => return message,
                Ok(None) => {}
                Err(e) => {
                    let pause = failures.next().unwrap_or(fleet_runtime::retry::PULL.cap);
                    tracing::warn!(error = %e, ?source, retry_in = ?pause, "pulling work failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Pulls `lane` until a message comes (`Ok(Some)`), a pull comes back empty after
    /// `deadline` (`Ok(None)`), or a pull fails: the error is the caller's to wait out, after
    /// it has let go of what it holds.
    async fn next_before(
        &self,
        source: Source,
        deadline: Option<Instant>,
    ) -> anyhow::Result<Option<Message>> {
        loop {
            let pulled = match source {
                Source::AllLanes => self.pull().await?,
                Source::ManualOnly => self.pull_manual().await?,
            };
            match pulled {
                Some(message) => return Ok(Some(message)),
                None if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
                None => {}
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
}
