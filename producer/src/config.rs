//! The producer's command line; every flag has an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;
use fleet_runtime::config::{DbArgs, HttpArgs, NatsArgs};
use fleet_runtime::telemetry::LogArgs;

use crate::run::Settings;

#[derive(Debug, clap::Parser)]
#[command(
    name = "producer",
    version,
    about = "scorecard-fleet producer: schedules due repositories, and the operator commands"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Keep the queue topped up with due repositories (the service). Applies migrations first.
    Run(RunArgs),
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Load repositories from a file (`-` for stdin): scorecard's `repo,metadata` CSV or one per
    /// line. Invalid lines are reported and skipped; known repositories are left as they are.
    Import {
        #[command(flatten)]
        db: DbArgs,
        /// The file, or `-` for standard input.
        file: PathBuf,
    },
    /// Score repositories now: publish them to the manual lane and print their work ids.
    Enqueue {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        nats: NatsArgs,
        /// How far the request pushes each repository's due time, as a claim does, so the
        /// scheduled lane does not scan it again meanwhile.
        #[arg(long, env = "PRODUCER_LEASE_SECS", default_value_t = 86_400)]
        lease_secs: u32,
        /// github.com/OWNER/NAME (https:// URLs are accepted).
        #[arg(required = true)]
        repos: Vec<String>,
    },
    /// Republish dead-lettered work as REPLAY items (and dead webhook deliveries as they were). Replayed entries leave the dead stream.
    Replay {
        #[command(flatten)]
        nats: NatsArgs,
        /// Only dead letters younger than this (e.g. `24h`, `7d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Only this failure class (repeatable): SCAN_FAILED, TIMEOUT, RATE_LIMITED, NO_OUTPUT,
        /// INVALID_OUTPUT, POD_FAILED, INFRA, POISON, WEBHOOK (a dead webhook delivery, sent again).
        #[arg(long = "class")]
        classes: Vec<String>,
        /// Only this repository.
        #[arg(long)]
        repo: Option<String>,
        /// Print what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,

    /// Most repositories claimed and published per database round trip.
    #[arg(long, env = "PRODUCER_BATCH_SIZE", default_value_t = 5000)]
    pub batch_size: i64,

    /// Scheduled items allowed to wait in the queue; the producer tops up to this and no
    /// further, so newly due repositories and manual requests are never buried.
    #[arg(long, env = "PRODUCER_HIGH_WATER", default_value_t = 20_000)]
    pub high_water: u64,

    /// Seconds a claim holds a repository: if no result or failure arrives in that time, it is
    /// due again. Must exceed the queue wait plus a Job's deadline times the deliveries.
    #[arg(long, env = "PRODUCER_LEASE_SECS", default_value_t = 24 * 3600)]
    pub lease_secs: u32,

    /// Cap, in seconds, of the pause between looks at an idle database or a full queue
    /// (jitter adds up to as much again).
    #[arg(long, env = "PRODUCER_BACKOFF_CAP_SECS", default_value_t = 60)]
    pub backoff_cap_secs: u64,

    /// Days between two scores of a repository (the sink schedules them); the unit of
    /// PRODUCER_RETIRE_AFTER_INTERVALS.
    #[arg(long, env = "SCORE_INTERVAL_DAYS", default_value_t = 14)]
    pub interval_days: u32,

    /// Score intervals a repository discovered by a GET stays scheduled after its last GET
    /// (or, never asked for again, after it was added); then it is retired: disabled, its
    /// data kept, until a GET or an import names it again. 0: never retired.
    #[arg(long, env = "PRODUCER_RETIRE_AFTER_INTERVALS", default_value_t = 3)]
    pub retire_after_intervals: u32,
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            batch_size: self.batch_size.max(1),
            high_water: self.high_water.max(1),
            lease: TimeDelta::seconds(i64::from(self.lease_secs.max(1))),
            backoff_cap: Duration::from_secs(self.backoff_cap_secs.max(1)),
            db_timeouts: self.db.timeouts(),
            retire_after: (self.retire_after_intervals > 0).then(|| {
                TimeDelta::days(
                    i64::from(self.interval_days.max(1)) * i64::from(self.retire_after_intervals),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let base = [
            "producer",
            "run",
            "--database-url",
            "postgres://localhost/fleet",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(args)).unwrap();
        let Command::Run(run) = cli.command else {
            unreachable!("parsed as run")
        };
        run.settings()
    }

    #[test]
    fn retirement_is_counted_in_score_intervals_and_zero_turns_it_off() {
        assert_eq!(settings(&[]).retire_after, Some(TimeDelta::days(42)));
        assert_eq!(
            settings(&["--interval-days", "7", "--retire-after-intervals", "2"]).retire_after,
            Some(TimeDelta::days(14))
        );
        assert_eq!(
            settings(&["--retire-after-intervals", "0"]).retire_after,
            None
        );
    }
}
