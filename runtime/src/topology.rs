//! Every NATS stream, subject and consumer of the fleet, in one place. Each service calls
//! [`Topology::ensure`] at start-up: it creates what is missing and verifies what exists, and a
//! setting that differs is an error naming it. The one change made to what exists is adding a
//! subject a newer release introduced (a new work lane) to its stream, logged: it moves no
//! message and no consumer. Nothing else is ever changed.

use std::fmt::Debug;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

/// Durable consumer the workers pull people's requests from (drained before any other work).
pub const WORKER_MANUAL: &str = "worker-manual";
/// Durable consumer the workers pull discoveries from (a GET of a repository never scored):
/// after people's requests, before scheduled work.
pub const WORKER_DISCOVERY: &str = "worker-discovery";
/// Durable consumer the workers pull scheduled work from.
pub const WORKER_SCHEDULED: &str = "worker-scheduled";
/// Durable consumer the sink pulls results and failures from.
pub const SINK: &str = "sink";
/// Durable consumer the workers pull max-deliveries advisories from, to record work that ran
/// out of deliveries without an outcome.
pub const WORKER_EXHAUSTED: &str = "worker-exhausted";

/// Durable consumer the webhooks service fans change events out from.
pub const WEBHOOKS_FANOUT: &str = "webhooks-fanout";
/// Durable consumer the webhooks service sends deliveries from.
pub const WEBHOOKS_DELIVER: &str = "webhooks-deliver";

/// How long the webhooks stream keeps a delivery nobody acked: longer than any retry window
/// the webhooks service accepts (it refuses a longer one), so none expires unseen.
pub const WEBHOOKS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a webhooks consumer may hold a message: a delivery's request, or an event's
/// fan-out (a query and a few publishes). The webhooks service refuses a request timeout that
/// does not fit well inside it.
pub const WEBHOOKS_ACK_WAIT: Duration = Duration::from_secs(60);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// How long the events stream remembers an event's id: a sink down longer than this between
/// publishing an event and deleting it from the outbox would publish it twice.
pub const EVENTS_DUPLICATE_WINDOW: Duration = DAY;

/// The work lanes, in the order workers drain them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkLane {
    /// A person's request (`producer enqueue`, the api, `nats pub`).
    Manual,
    /// A GET of a repository the fleet had never scored: someone is waiting for it.
    Discovery,
    /// Due by the producer's schedule.
    Scheduled,
}

/// Settings operators tune; names are derived from the prefix.
#[derive(Debug, Clone, clap::Args)]
pub struct TopologyArgs {
    /// Prefix for every stream and subject, so two fleets can share one NATS ("" = none).
    #[arg(long, env = "NATS_PREFIX", default_value = "")]
    pub nats_prefix: String,

    /// Seconds a worker may hold a work item without a progress ack before JetStream hands it
    /// to another worker. Workers heartbeat well inside it, so this only bounds crash recovery.
    #[arg(long, env = "WORK_ACK_WAIT_SECS", default_value_t = 120)]
    pub work_ack_wait_secs: u64,

    /// Deliveries of one work item before it is dead-lettered.
    #[arg(long, env = "WORK_MAX_DELIVER", default_value_t = 5)]
    pub work_max_deliver: i64,

    /// Fleet-wide cap on scheduled items in flight (all workers together).
    #[arg(long, env = "WORK_MAX_ACK_PENDING", default_value_t = 1000)]
    pub work_max_ack_pending: i64,

    /// Fleet-wide cap on manual items in flight, on top of the scheduled cap.
    #[arg(long, env = "MANUAL_MAX_ACK_PENDING", default_value_t = 100)]
    pub manual_max_ack_pending: i64,

    /// Fleet-wide cap on discovery items in flight, on top of the manual and scheduled caps.
    #[arg(long, env = "DISCOVERY_MAX_ACK_PENDING", default_value_t = 100)]
    pub discovery_max_ack_pending: i64,

    /// Days results are kept in the results stream, so a database can be rebuilt by replay.
    #[arg(long, env = "RESULTS_MAX_AGE_DAYS", default_value_t = 30)]
    pub results_max_age_days: u64,

    /// Days dead-lettered work is kept for inspection and replay.
    #[arg(long, env = "DEAD_MAX_AGE_DAYS", default_value_t = 14)]
    pub dead_max_age_days: u64,

    /// Most items the work stream holds; past it a publish is refused ("maximum messages
    /// exceeded") instead of the queue growing without bound. The producer keeps ~20,000.
    #[arg(long, env = "WORK_MAX_MESSAGES", default_value_t = 1_000_000)]
    pub work_max_messages: i64,

    /// Most bytes the work stream holds (an item is ~150 bytes, so the message limit comes
    /// first); past it a publish is refused. JetStream reserves this much storage up front.
    #[arg(long, env = "WORK_MAX_BYTES", default_value_t = 256 << 20)]
    pub work_max_bytes: i64,

    /// Days change events are kept in the events stream for consumers to catch up.
    #[arg(long, env = "EVENTS_MAX_AGE_DAYS", default_value_t = 7)]
    pub events_max_age_days: u64,

    /// Seconds the fleet remembers which work item last scanned a repository, so an item that
    /// a newer scan already answered is not scanned again (a day: the producer's lease).
    #[arg(long, env = "SCAN_RECORD_MAX_AGE_SECS", default_value_t = 86_400)]
    pub scan_record_max_age_secs: u64,

    /// Copies of every stream and key-value bucket a JetStream cluster keeps (1, 3 or 5): 3 in
    /// production, so losing one server loses no work and stops nothing. Consumers follow
    /// their stream.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

impl Default for TopologyArgs {
    fn default() -> Self {
        Self {
            nats_prefix: String::new(),
            work_ack_wait_secs: 120,
            work_max_deliver: 5,
            work_max_ack_pending: 1000,
            manual_max_ack_pending: 100,
            discovery_max_ack_pending: 100,
            results_max_age_days: 30,
            dead_max_age_days: 14,
            events_max_age_days: 7,
            work_max_messages: 1_000_000,
            work_max_bytes: 256 << 20,
            scan_record_max_age_secs: 86_400,
            stream_replicas: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "NATS prefix {0:?} is invalid: use letters, digits, '-' and '_' (it becomes a subject token)"
    )]
    Prefix(String),
    #[error("invalid topology setting: {0}")]
    Setting(String),
    #[error(
        "{kind} {name} exists with {setting} = {found}, but this fleet is configured for {wanted}; \
         change the {kind} (nats {kind} info {name}) or the configuration, nothing was modified"
    )]
    Mismatch {
        kind: &'static str,
        name: String,
        setting: &'static str,
        found: String,
        wanted: String,
    },
    #[error(
        "stream {0} does not exist: the fleet's services create it when they start \
         (start one first, or check NATS_PREFIX)"
    )]
    Missing(String),
    #[error("NATS JetStream request for {what} failed: {message}")]
    Nats { what: String, message: String },
}

impl TopologyError {
    /// A request that failed may succeed when tried again; the other errors are settings.
    pub fn is_transient(&self) -> bool {
        matches!(self, TopologyError::Nats { .. })
    }
}

/// The fleet's names and settings.
#[derive(Debug, Clone)]
pub struct Topology {
    subject_prefix: String,
    stream_prefix: String,
    args: TopologyArgs,
}

impl Topology {
    pub fn new(args: TopologyArgs) -> Result<Self, TopologyError> {
        let prefix = args.nats_prefix.trim().to_owned();
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TopologyError::Prefix(prefix));
        }
        if args.work_max_deliver < 1 || args.work_ack_wait_secs == 0 {
            return Err(TopologyError::Setting(
                "work_max_deliver and work_ack_wait_secs must be at least 1".into(),
            ));
        }
        if args.work_max_messages < 1 || args.work_max_bytes < 1 {
            return Err(TopologyError::Setting(
                "work_max_messages and work_max_bytes must be at least 1".into(),
            ));
        }
        if args.scan_record_max_age_secs == 0 {
            return Err(TopologyError::Setting(
                "scan_record_max_age_secs must be at least 1".into(),
            ));
        }
        if args.work_max_ack_pending < 1
            || args.manual_max_ack_pending < 1
            || args.discovery_max_ack_pending < 1
        {
            return Err(TopologyError::Setting(
                "max ack pending caps must be at least 1".into(),
            ));
        }
        if ![1, 3, 5].contains(&args.stream_replicas) {
            return Err(TopologyError::Setting(format!(
                "stream_replicas is {}: use 1, 3 or 5 (a replicated stream needs a majority of \
                 its replicas up, so an even count buys nothing)",
                args.stream_replicas
            )));
        }
        let (subject_prefix, stream_prefix) = if prefix.is_empty() {
            (String::new(), String::new())
        } else {
            (
                format!("{prefix}."),
                format!("{}_", prefix.to_ascii_uppercase().replace('-', "_")),
            )
        };
        Ok(Self {
            subject_prefix,
            stream_prefix,
            args,
        })
    }

    pub fn args(&self) -> &TopologyArgs {
        &self.args
    }

    fn subject(&self, tail: &str) -> String {
        format!("{}scorecard.{tail}", self.subject_prefix)
    }

    pub fn work_stream(&self) -> String {
        format!("{}SCORECARD_WORK", self.stream_prefix)
    }
    pub fn results_stream(&self) -> String {
        format!("{}SCORECARD_RESULTS", self.stream_prefix)
    }
    pub fn dead_stream(&self) -> String {
        format!("{}SCORECARD_DEAD", self.stream_prefix)
    }
    /// Holds JetStream's max-deliveries advisories for the work stream until a worker has
    /// recorded each exhausted item: advisories are plain NATS messages, lost if nobody listens.
    pub fn exhausted_stream(&self) -> String {
        format!("{}SCORECARD_EXHAUSTED", self.stream_prefix)
    }
    /// The advisory JetStream publishes when a work item has used up its deliveries.
    pub fn exhausted_subjects(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            self.work_stream()
        )
    }
    /// Change events: a repository's latest score changed.
    pub fn events_stream(&self) -> String {
        format!("{}SCORECARD_EVENTS", self.stream_prefix)
    }
    pub fn score_changed_subject(&self) -> String {
        self.subject("events.score_changed")
    }
    /// The key-value bucket of scan records: per repository, the work item that last started
    /// a scan of it and whether its outcome is published.
    pub fn scans_bucket(&self) -> String {
        format!("{}SCORECARD_SCANS", self.stream_prefix)
    }
    /// The key-value bucket of GitHub credential budgets: per credential, what the fleet may
    /// still start on it (see the worker's `budget`).
    pub fn budget_bucket(&self) -> String {
        format!("{}SCORECARD_BUDGET", self.stream_prefix)
    }
    /// Webhook deliveries waiting to be sent (and retried).
    pub fn webhooks_stream(&self) -> String {
        format!("{}SCORECARD_WEBHOOKS", self.stream_prefix)
    }
    pub fn webhook_deliver_subject(&self) -> String {
        self.subject("webhooks.deliver")
    }
    pub fn scheduled_subject(&self) -> String {
        self.subject("work.scheduled")
    }
    pub fn manual_subject(&self) -> String {
        self.subject("work.manual")
    }
    pub fn discovery_subject(&self) -> String {
        self.subject("work.discovery")
    }
    /// The lane a work message belongs to, by the subject it was published to. Anything not
    /// on the manual or discovery subject is scheduled work.
    pub fn lane_of(&self, subject: &str) -> WorkLane {
        if subject == self.manual_subject() {
            WorkLane::Manual
        } else if subject == self.discovery_subject() {
            WorkLane::Discovery
        } else {
            WorkLane::Scheduled
        }
    }
    pub fn results_subject(&self) -> String {
        self.subject("results")
    }
    pub fn failures_subject(&self) -> String {
        self.subject("failures")
    }
    /// Dead letters go to `scorecard.dead.<class>` (e.g. `scorecard.dead.timeout`), so
    /// `nats stream view` and replay can filter by class with a subject.
    pub fn dead_subject(&self, class: &str) -> String {
        self.subject(&format!("dead.{}", class.to_ascii_lowercase()))
    }
    pub fn dead_subjects(&self) -> String {
        self.subject("dead.>")
    }

    /// The streams, as they must be.
    pub fn streams(&self) -> Vec<stream::Config> {
        let streams = vec![
            stream::Config {
                name: self.work_stream(),
                description: Some("scorecard-fleet: repositories to score".into()),
                subjects: vec![
                    self.scheduled_subject(),
                    self.manual_subject(),
                    self.discovery_subject(),
                ],
                // An item leaves the stream once a worker acks it: the queue's size is the
                // backlog, whatever the number of repositories.
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                // Refuse new work rather than drop queued work when a limit is hit.
                discard: DiscardPolicy::New,
                max_messages: self.args.work_max_messages,
                max_bytes: self.args.work_max_bytes,
                // Nats-Msg-Id dedup: a producer retries a publish within seconds, never minutes.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
            stream::Config {
                name: self.results_stream(),
                description: Some("scorecard-fleet: scan results and final failures".into()),
                subjects: vec![self.results_subject(), self.failures_subject()],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                // Kept after the sink acks, so a fresh database can be rebuilt by replay.
                max_age: DAY * u32::try_from(self.args.results_max_age_days).unwrap_or(u32::MAX),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
            stream::Config {
                name: self.dead_stream(),
                description: Some("scorecard-fleet: work that will not be retried".into()),
                subjects: vec![self.dead_subjects()],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                max_age: DAY * u32::try_from(self.args.dead_max_age_days).unwrap_or(u32::MAX),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
            stream::Config {
                name: self.events_stream(),
                description: Some("scorecard-fleet: a repository's latest score changed".into()),
                subjects: vec![self.subject("events.>")],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                max_age: DAY * u32::try_from(self.args.events_max_age_days).unwrap_or(u32::MAX),
                // The sink publishes each event with its work id as Nats-Msg-Id: one republished
                // after a crash (between JetStream's ack and the outbox delete) within a day is
                // dropped, so each change is one event.
                duplicate_window: EVENTS_DUPLICATE_WINDOW,
                ..Default::default()
            },
            stream::Config {
                name: self.webhooks_stream(),
                description: Some("scorecard-fleet: webhook deliveries to send".into()),
                subjects: vec![self.webhook_deliver_subject()],
                // A delivery leaves once it is delivered or dead-lettered.
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                max_age: WEBHOOKS_MAX_AGE,
                // A delivery's id derives from its event's: an event fanned out again after a
                // crash (unacked, so redelivered; perhaps after a long outage) must find its
                // deliveries' ids remembered, as the events stream remembers its own.
                duplicate_window: EVENTS_DUPLICATE_WINDOW,
                ..Default::default()
            },
            stream::Config {
                name: self.exhausted_stream(),
                description: Some(
                    "scorecard-fleet: work items that ran out of deliveries, to be recorded".into(),
                ),
                subjects: vec![self.exhausted_subjects()],
                // An advisory leaves once a worker has dead-lettered its item.
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                max_age: DAY * u32::try_from(self.args.dead_max_age_days).unwrap_or(u32::MAX),
                // The server's default; advisories carry no Nats-Msg-Id.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
        ];
        streams
            .into_iter()
            .map(|s| stream::Config {
                num_replicas: self.args.stream_replicas,
                ..s
            })
            .collect()
    }

    /// The scan records' bucket, as it must be.
    pub fn scans_bucket_config(&self) -> kv::Config {
        kv::Config {
            bucket: self.scans_bucket(),
            description: "scorecard-fleet: the work item that last scanned each repository".into(),
            // Only the latest record per repository matters.
            history: 1,
            max_age: Duration::from_secs(self.args.scan_record_max_age_secs),
            storage: StorageType::File,
            num_replicas: self.args.stream_replicas,
            ..Default::default()
        }
    }

    pub fn budget_bucket_config(&self) -> kv::Config {
        kv::Config {
            bucket: self.budget_bucket(),
            description: "scorecard-fleet: what each GitHub credential may still start".into(),
            // Compare-and-set needs the latest value only.
            history: 1,
            storage: StorageType::File,
            num_replicas: self.args.stream_replicas,
            ..Default::default()
        }
    }

    /// The durable consumers, as they must be, with the stream each belongs to.
    pub fn consumers(&self) -> Vec<(String, pull::Config)> {
        let ack_wait = Duration::from_secs(self.args.work_ack_wait_secs);
        let worker = |name: &str, subject: String, max_ack_pending: i64| pull::Config {
            durable_name: Some(name.into()),
            description: Some("scorecard-fleet workers".into()),
            filter_subject: subject,
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_deliver: self.args.work_max_deliver,
            max_ack_pending,
            ..Default::default()
        };
        vec![
            (
                self.work_stream(),
                worker(
                    WORKER_MANUAL,
                    self.manual_subject(),
                    self.args.manual_max_ack_pending,
                ),
            ),
            (
                self.work_stream(),
                worker(
                    WORKER_DISCOVERY,
                    self.discovery_subject(),
                    self.args.discovery_max_ack_pending,
                ),
            ),
            (
                self.work_stream(),
                worker(
                    WORKER_SCHEDULED,
                    self.scheduled_subject(),
                    self.args.work_max_ack_pending,
                ),
            ),
            (self.results_stream(), self.sink_consumer(SINK)),
            (
                self.events_stream(),
                pull::Config {
                    durable_name: Some(WEBHOOKS_FANOUT.into()),
                    description: Some("scorecard-fleet webhooks: change events to fan out".into()),
                    filter_subject: self.score_changed_subject(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: WEBHOOKS_ACK_WAIT,
                    // Never give up on an event: a database outage must not lose a delivery.
                    max_deliver: -1,
                    // Fan-outs are short; a few hundred at once keep replicas busy.
                    max_ack_pending: 1000,
                    ..Default::default()
                },
            ),
            (
                self.webhooks_stream(),
                pull::Config {
                    durable_name: Some(WEBHOOKS_DELIVER.into()),
                    description: Some("scorecard-fleet webhooks: deliveries to send".into()),
                    filter_subject: self.webhook_deliver_subject(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: WEBHOOKS_ACK_WAIT,
                    // Retries end with the retry window (a time), not a count of deliveries.
                    max_deliver: -1,
                    // Deliveries waiting out a retry delay are pending too: room for many dead
                    // endpoints' retries without starving the healthy ones (the service bounds
                    // what is actually in flight).
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            ),
            (
                self.exhausted_stream(),
                pull::Config {
                    durable_name: Some(WORKER_EXHAUSTED.into()),
                    description: Some("scorecard-fleet workers: exhausted work items".into()),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    // Recording one item is a few publishes.
                    ack_wait: Duration::from_secs(60),
                    // Never give up: an exhausted item must end as a dead letter.
                    max_deliver: -1,
                    // A handful at once: exhaustion is rare, and each is a few requests.
                    max_ack_pending: 64,
                    ..Default::default()
                },
            ),
        ]
    }

    /// The sink's consumer. Another name gives a second, independent reader of the whole
    /// results stream: that is how a fresh database is rebuilt by replay.
    pub fn sink_consumer(&self, name: &str) -> pull::Config {
        pull::Config {
            durable_name: Some(name.into()),
            description: Some("scorecard-fleet sink".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            // A batch is written in one transaction well within this; a held batch (database
            // down) is kept alive with progress acks.
            ack_wait: Duration::from_secs(60),
            // The sink never gives up on a result: a database outage must not lose one.
            max_deliver: -1,
            // Room for a few full batches in flight.
            max_ack_pending: 20_000,
            ..Default::default()
        }
    }

    /// Creates what is missing and verifies what exists. Safe to call from every replica at
    /// once: a lost creation race is followed by verification.
    pub async fn ensure(&self, js: &async_nats::jetstream::Context) -> Result<(), TopologyError> {
        for want in self.streams() {
            self.ensure_stream(js, want).await?;
        }
        for (stream_name, want) in self.consumers() {
            ensure_consumer(js, &stream_name, want).await?;
        }
        self.ensure_scans_bucket(js).await?;
        Ok(())
    }

    /// For a command that only publishes and reads (`producer enqueue`, `producer replay`):
    /// every stream is there. Settings are the services' to own and verify, and a command
    /// run with other defaults than theirs must not refuse a healthy fleet.
    pub async fn check_streams(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<(), TopologyError> {
        for want in self.streams() {
            match js.get_stream(&want.name).await {
                Ok(_) => {}
                Err(e) if stream_missing(&e) => return Err(TopologyError::Missing(want.name)),
                Err(e) => {
                    return Err(TopologyError::Nats {
                        what: format!("stream {}", want.name),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// [`Topology::ensure`] for a service starting up: a request that fails or times out is
    /// tried again (a cluster electing a metadata leader answers nothing for seconds, and a
    /// busy one can take longer to place a stream than a request waits); a setting that
    /// differs is returned at once.
    pub async fn ensure_until_ready(
        &self,
        js: &async_nats::jetstream::Context,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        crate::retry::while_transient(
            "NATS JetStream",
            shutdown,
            || self.ensure(js),
            TopologyError::is_transient,
        )
        .await
    }

    /// Creates or verifies the scan records' bucket and opens it.
    pub async fn ensure_scans_bucket(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<kv::Store, TopologyError> {
        ensure_bucket(js, self.scans_bucket_config()).await
    }

    /// Creates or verifies the credential budgets' bucket and opens it.
    pub async fn ensure_budget_bucket(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<kv::Store, TopologyError> {
        ensure_bucket(js, self.budget_bucket_config()).await
    }

    async fn ensure_stream(
        &self,
        js: &async_nats::jetstream::Context,
        want: stream::Config,
    ) -> Result<(), TopologyError> {
        let name = want.name.clone();
        let nats_err = |e: &dyn std::fmt::Display| TopologyError::Nats {
            what: format!("stream {name}"),
            message: e.to_string(),
        };
        let mut found = match js.get_stream(&name).await {
            Ok(mut s) => s.info().await.map_err(|e| nats_err(&e))?.config.clone(),
            Err(e) if stream_missing(&e) => match js.create_stream(want.clone()).await {
                Ok(_) => {
                    tracing::info!(stream = %name, "created stream");
                    return Ok(());
                }
                // Another replica created it between our look and our create: verify theirs.
                Err(create) if matches!(create.kind(), CreateStreamErrorKind::JetStream(_)) => {
                    let mut s = js.get_stream(&name).await.map_err(|e| nats_err(&e))?;
                    s.info().await.map_err(|e| nats_err(&e))?.config.clone()
                }
                Err(create) => return Err(nats_err(&create)),
            },
            Err(e) => return Err(nats_err(&e)),
        };
        found.subjects.sort();
        let mut want_subjects = want.subjects.clone();
        want_subjects.sort();
        let mismatch = |setting, found: String, wanted: String| TopologyError::Mismatch {
            kind: "stream",
            name: name.clone(),
            setting,
            found,
            wanted,
        };
        if !only_adds(&found.subjects, &want_subjects) {
            check("subjects", &found.subjects, &want_subjects, mismatch)?;
        }
        check("retention", &found.retention, &want.retention, mismatch)?;
        check("storage", &found.storage, &want.storage, mismatch)?;
        check("discard", &found.discard, &want.discard, mismatch)?;
        // The server stores "no limit" as -1 whichever way it was asked for.
        let limit = |v: i64| if v <= 0 { -1 } else { v };
        check(
            "max_messages",
            &limit(found.max_messages),
            &limit(want.max_messages),
            mismatch,
        )?;
        check(
            "max_bytes",
            &limit(found.max_bytes),
            &limit(want.max_bytes),
            mismatch,
        )?;
        check("max_age", &found.max_age, &want.max_age, mismatch)?;
        check(
            "replicas",
            &replicas(found.num_replicas),
            &want.num_replicas,
            mismatch,
        )?;
        check(
            "duplicate_window",
            &found.duplicate_window,
            &want.duplicate_window,
            mismatch,
        )?;
        if !only_adds(&want_subjects, &found.subjects) {
            // Every other setting agrees and the stream lacks only subjects: it predates them.
            // (Compared as sets: the server may list them in another order.)
            let before = std::mem::replace(&mut found.subjects, want_subjects);
            js.update_stream(&found).await.map_err(|e| nats_err(&e))?;
            tracing::info!(stream = %name, ?before, after = ?found.subjects, "added subjects to stream");
        }
        tracing::debug!(stream = %name, "stream verified");
        Ok(())
    }
}

/// `want` holds every subject of `found`, and perhaps more: adding them is safe.
fn only_adds(found: &[String], want: &[String]) -> bool {
    found.iter().all(|s| want.contains(s))
}

/// The server reports an unreplicated stream as 0 or 1 replicas, depending on how it was made.
fn replicas(n: usize) -> usize {
    n.max(1)
}

/// Creates the durable consumer `want` on `stream_name`, or verifies the one that exists.
pub async fn ensure_consumer(
    js: &async_nats::jetstream::Context,
    stream_name: &str,
    want: pull::Config,
) -> Result<(), TopologyError> {
    let name = want.durable_name.clone().unwrap_or_default();
    let nats_err = |e: &dyn std::fmt::Display| TopologyError::Nats {
        what: format!("consumer {name} on stream {stream_name}"),
        message: e.to_string(),
    };
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| nats_err(&e))?;
    let found = match stream.consumer_info(&name).await {
        Ok(info) => info.config,
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
            match stream.create_consumer(want.clone()).await {
                Ok(_) => {
                    tracing::info!(consumer = %name, stream = %stream_name, "created consumer");
                    return Ok(());
                }
                // Lost a creation race (or the server refused a change): verify what is there.
                Err(_) => {
                    stream
                        .consumer_info(&name)
                        .await
                        .map_err(|e| nats_err(&e))?
                        .config
                }
            }
        }
        Err(e) => return Err(nats_err(&e)),
    };
    let mismatch = |setting, found: String, wanted: String| TopologyError::Mismatch {
        kind: "consumer",
        name: format!("{stream_name} {name}"),
        setting,
        found,
        wanted,
    };
    check(
        "filter_subject",
        &found.filter_subject,
        &want.filter_subject,
        mismatch,
    )?;
    check("ack_policy", &found.ack_policy, &want.ack_policy, mismatch)?;
    check(
        "deliver_policy",
        &found.deliver_policy,
        &want.deliver_policy,
        mismatch,
    )?;
    check("ack_wait", &found.ack_wait, &want.ack_wait, mismatch)?;
    check(
        "max_deliver",
        &found.max_deliver,
        &want.max_deliver,
        mismatch,
    )?;
    check(
        "max_ack_pending",
        &found.max_ack_pending,
        &want.max_ack_pending,
        mismatch,
    )?;
    tracing::debug!(consumer = %name, stream = %stream_name, "consumer verified");
    Ok(())
}

fn check<T: PartialEq + Debug>(
    setting: &'static str,
    found: &T,
    wanted: &T,
    mismatch: impl Fn(&'static str, String, String) -> TopologyError,
) -> Result<(), TopologyError> {
    if found == wanted {
        Ok(())
    } else {
        Err(mismatch(
            setting,
            format!("{found:?}"),
            format!("{wanted:?}"),
        ))
    }
}

/// Opens durable pull consumer `name` of `stream`, which [`Topology::ensure`] made.
pub async fn pull_consumer(
    js: &async_nats::jetstream::Context,
    stream: &str,
    name: &str,
) -> anyhow::Result<async_nats::jetstream::consumer::PullConsumer> {
    js.get_stream(stream)
        .await
        .map_err(|e| anyhow::anyhow!("opening stream {stream}: {e}"))?
        .get_consumer(name)
        .await
        .map_err(|e| anyhow::anyhow!("opening consumer {name} of stream {stream}: {e}"))
}

fn stream_missing(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(j)
        if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Creates the key-value bucket `want` describes, or verifies the one there, and opens it.
async fn ensure_bucket(
    js: &async_nats::jetstream::Context,
    want: kv::Config,
) -> Result<kv::Store, TopologyError> {
    let name = want.bucket.clone();
    let nats_err = |e: &dyn std::fmt::Display| TopologyError::Nats {
        what: format!("key-value bucket {name}"),
        message: e.to_string(),
    };
    let store = match js.get_key_value(&name).await {
        Ok(store) => store,
        Err(_) => match js.create_key_value(want.clone()).await {
            Ok(store) => {
                tracing::info!(bucket = %name, "created key-value bucket");
                return Ok(store);
            }
            Err(_) => js.get_key_value(&name).await.map_err(|e| nats_err(&e))?,
        },
    };
    let found = store.status().await.map_err(|e| nats_err(&e))?;
    let mismatch = |setting, found: String, wanted: String| TopologyError::Mismatch {
        kind: "key-value bucket",
        name: name.clone(),
        setting,
        found,
        wanted,
    };
    check("history", &found.history(), &want.history, mismatch)?;
    check("max_age", &found.max_age(), &want.max_age, mismatch)?;
    check(
        "replicas",
        &replicas(found.info.config.num_replicas),
        &want.num_replicas,
        mismatch,
    )?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_and_with_prefix() {
        let plain = Topology::new(TopologyArgs::default()).unwrap();
        assert_eq!(plain.work_stream(), "SCORECARD_WORK");
        assert_eq!(plain.manual_subject(), "scorecard.work.manual");
        assert_eq!(plain.discovery_subject(), "scorecard.work.discovery");
        assert_eq!(plain.dead_subject("TIMEOUT"), "scorecard.dead.timeout");

        let staging = Topology::new(TopologyArgs {
            nats_prefix: "staging-eu".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(staging.work_stream(), "STAGING_EU_SCORECARD_WORK");
        assert_eq!(staging.results_subject(), "staging-eu.scorecard.results");
        assert_eq!(staging.dead_subjects(), "staging-eu.scorecard.dead.>");
    }

    #[test]
    fn rejects_prefixes_that_would_break_subjects() {
        for bad in ["a.b", "a b", "a>", "*"] {
            let args = TopologyArgs {
                nats_prefix: bad.into(),
                ..Default::default()
            };
            assert!(
                matches!(Topology::new(args), Err(TopologyError::Prefix(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn replicas_are_odd_and_reach_every_stream_and_the_bucket() {
        for bad in [0, 2, 4, 6] {
            let args = TopologyArgs {
                stream_replicas: bad,
                ..Default::default()
            };
            assert!(
                matches!(Topology::new(args), Err(TopologyError::Setting(_))),
                "{bad}"
            );
        }
        let t = Topology::new(TopologyArgs {
            stream_replicas: 3,
            ..Default::default()
        })
        .unwrap();
        assert!(t.streams().iter().all(|s| s.num_replicas == 3));
        assert_eq!(t.scans_bucket_config().num_replicas, 3);
    }

    /// Whether stream subject `wanted` (perhaps ending in `>`) takes `subject`.
    fn covers(wanted: &str, subject: &str) -> bool {
        match wanted.strip_suffix('>') {
            Some(prefix) => subject.starts_with(prefix),
            None => wanted == subject,
        }
    }

    #[test]
    fn every_subject_belongs_to_exactly_one_stream() {
        let t = Topology::new(TopologyArgs::default()).unwrap();
        let streams = t.streams();
        for (stream, consumer) in t.consumers() {
            let owner = streams.iter().find(|s| s.name == stream).unwrap();
            let filter = &consumer.filter_subject;
            assert!(
                filter.is_empty() || owner.subjects.iter().any(|s| covers(s, filter)),
                "{filter} not in {stream}"
            );
        }
        for subject in [
            t.scheduled_subject(),
            t.manual_subject(),
            t.discovery_subject(),
            t.results_subject(),
            t.failures_subject(),
            t.score_changed_subject(),
            t.webhook_deliver_subject(),
        ] {
            let owners = streams
                .iter()
                .filter(|s| s.subjects.iter().any(|w| covers(w, &subject)))
                .count();
            assert_eq!(owners, 1, "{subject}");
        }
    }

    #[test]
    fn each_work_lane_has_its_subject_and_its_own_capped_consumer() {
        let t = Topology::new(TopologyArgs {
            nats_prefix: "p".into(),
            manual_max_ack_pending: 7,
            discovery_max_ack_pending: 11,
            work_max_ack_pending: 13,
            ..Default::default()
        })
        .unwrap();
        let consumers = t.consumers();
        for (name, subject, lane, cap) in [
            (WORKER_MANUAL, t.manual_subject(), WorkLane::Manual, 7),
            (
                WORKER_DISCOVERY,
                t.discovery_subject(),
                WorkLane::Discovery,
                11,
            ),
            (
                WORKER_SCHEDULED,
                t.scheduled_subject(),
                WorkLane::Scheduled,
                13,
            ),
        ] {
            assert_eq!(t.lane_of(&subject), lane);
            let (stream, c) = consumers
                .iter()
                .find(|(_, c)| c.durable_name.as_deref() == Some(name))
                .unwrap();
            assert_eq!(
                (
                    stream.as_str(),
                    c.filter_subject.as_str(),
                    c.max_ack_pending
                ),
                (t.work_stream().as_str(), subject.as_str(), cap),
                "{name}"
            );
        }
        // Another fleet's manual subject is not this one's manual lane.
        assert_eq!(t.lane_of("scorecard.work.manual"), WorkLane::Scheduled);
        let zero = TopologyArgs {
            discovery_max_ack_pending: 0,
            ..Default::default()
        };
        assert!(matches!(
            Topology::new(zero),
            Err(TopologyError::Setting(_))
        ));
    }

    #[test]
    fn a_stream_may_gain_subjects_but_never_lose_one() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(only_adds(&s(&["a", "b"]), &s(&["a", "b", "c"])));
        assert!(only_adds(&s(&["a", "b"]), &s(&["a", "b"])));
        assert!(!only_adds(&s(&["a", "b", "c"]), &s(&["a", "b"])));
        assert!(!only_adds(&s(&["a", "x"]), &s(&["a", "b", "c"])));
    }
}
