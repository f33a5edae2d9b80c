//! The sink's command line; every flag has an environment variable.

use chrono::TimeDelta;
use fleet_runtime::config::{DbArgs, HttpArgs, NatsArgs};
use fleet_runtime::telemetry::LogArgs;

use crate::schedule::Schedule;

#[derive(Debug, clap::Parser)]
#[command(
    name = "sink",
    version,
    about = "scorecard-fleet sink: results and failures into PostgreSQL"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Consume results and failures and write them (the service).
    Run(RunArgs),
    /// The fleet at a glance: repositories, freshness, due, in flight, failures by class.
    Status {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        schedule: ScheduleArgs,
    },
    /// Capacity planning: GitHub tokens, scans in flight and worker replicas needed to score
    /// every enabled repository once per interval, and when the whole database will be
    /// fresh at today's rate. Reads the workers' credential budget from NATS when it can.
    Plan {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        schedule: ScheduleArgs,
        #[command(flatten)]
        nats: NatsArgs,
        /// GitHub API calls one scan costs, when the workers' budget has no measured figure.
        #[arg(long, default_value_t = 70.0)]
        calls_per_scan: f64,
        /// A token's hourly API quota.
        #[arg(long, default_value_t = 5000.0)]
        calls_per_token_hour: f64,
        /// Minutes one scan takes.
        #[arg(long, default_value_t = 3.0)]
        scan_minutes: f64,
        /// Scans each worker runs at once (WORKER_MAX_IN_FLIGHT).
        #[arg(long, default_value_t = 50)]
        in_flight_per_worker: u64,
    },
    /// Everything known about one repository: latest score and checks, history, last failure.
    Show {
        #[command(flatten)]
        db: DbArgs,
        /// github.com/OWNER/NAME
        repo: String,
    },
}

/// Defaults the benchmarks measure as shipped.
pub const DEFAULT_BATCH_SIZE: usize = 500;
pub const DEFAULT_WRITERS: usize = 2;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub schedule: ScheduleArgs,

    /// Most messages written in one transaction.
    #[arg(long, env = "SINK_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,

    /// Longest wait, in milliseconds, for a batch to fill before writing what came.
    #[arg(long, env = "SINK_BATCH_WAIT_MS", default_value_t = 500)]
    pub batch_wait_ms: u64,

    /// Batches written at once, each in its own transaction on its own connection; about
    /// the database's cores is right (DATABASE_MAX_CONNECTIONS must exceed it).
    #[arg(long, env = "SINK_WRITERS", default_value_t = DEFAULT_WRITERS)]
    pub writers: usize,

    /// Publish a change event (scorecard.events.score_changed) for each changed latest score
    #[arg(long, env = "SINK_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub events: bool,

    /// Days scorecard's full output of each result is kept for the api's `?commit=` (the
    /// latest result is always kept in full)
    #[arg(long, env = "SINK_RAW_HISTORY_DAYS", default_value_t = 90)]
    pub raw_history_days: u32,

    /// Durable consumer name. A new name reads the whole results stream from its start:
    /// point it at an empty database to rebuild it.
    #[arg(long, env = "SINK_CONSUMER", default_value = fleet_runtime::topology::SINK)]
    pub consumer: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    /// Days between two scores of a repository.
    #[arg(long, env = "SCORE_INTERVAL_DAYS", default_value_t = 14)]
    pub interval_days: u32,

    /// Hours of random spread added to each next due time, so repositories imported together
    /// do not all come due in the same minute.
    #[arg(long, env = "SCORE_JITTER_HOURS", default_value_t = 24)]
    pub jitter_hours: u32,

    /// Days scorecard's word that GitHub has no such repository (a 404) is trusted: the
    /// repository is not scanned again meanwhile, and a GET of it queues nothing.
    #[arg(long, env = "SINK_MISSING_FOR_DAYS", default_value_t = 7)]
    pub missing_for_days: u32,
}

impl ScheduleArgs {
    pub fn schedule(&self) -> Schedule {
        Schedule {
            interval: TimeDelta::days(i64::from(self.interval_days)),
            jitter: TimeDelta::hours(i64::from(self.jitter_hours)),
            missing_for: TimeDelta::days(i64::from(self.missing_for_days)),
        }
    }
}
