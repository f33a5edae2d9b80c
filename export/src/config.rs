//! The export's command line; every flag has an environment variable.

use fleet_runtime::config::{DbArgs, NatsArgs};
use fleet_runtime::telemetry::LogArgs;

#[derive(Debug, clap::Parser)]
#[command(
    name = "export",
    version,
    about = "scorecard-fleet export: the dataset as Parquet and NDJSON files anyone can query"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new snapshot of the dataset (latest scores, history by scan date, change events,
    /// figures) and publish it by replacing the destination's manifest.json; one-shot, as a
    /// CronJob runs it.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where the files go: a local directory (a path or file:// URL), or an object store by URL
    /// (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix), its credentials taken
    /// from the environment as each cloud's own tools take them (AWS_*, GOOGLE_*, AZURE_*).
    #[arg(long, env = "EXPORT_TO")]
    pub to: String,

    /// Rows per Parquet row group: a reader over HTTP fetches row groups it needs, and the
    /// export holds one encoded row group of a file in memory at a time.
    #[arg(long, env = "EXPORT_ROW_GROUP_ROWS", default_value_t = 65_536)]
    pub row_group_rows: usize,

    /// Rows read from PostgreSQL and written as one batch.
    #[arg(long, env = "EXPORT_BATCH_ROWS", default_value_t = 8_192)]
    pub batch_rows: usize,

    /// Weeks of history the figures' movement covers.
    #[arg(long, env = "EXPORT_STATS_WEEKS", default_value_t = 12)]
    pub stats_weeks: u32,

    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub nats: NatsArgs,
}
