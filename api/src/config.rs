//! The api's command line; every flag has an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use fleet_runtime::config::{DbArgs, HttpArgs, NatsArgs};
use fleet_runtime::outbound::OutboundArgs;
use fleet_runtime::telemetry::LogArgs;
use fleet_runtime::webhook::SigningKeyArgs;

#[derive(Debug, clap::Parser)]
#[command(
    name = "api",
    version,
    about = "scorecard-fleet api: scores, badges, history and scan requests over HTTP"
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
    /// Serve the API (the service).
    Run(RunArgs),
    /// Print the OpenAPI document the service serves at /openapi.json.
    Openapi,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// PostgreSQL as the read-only role `scorecard_api` (migration 0005 creates it).
    #[command(flatten)]
    pub db: DbArgs,
    /// NATS, used only to publish scan requests; reads work without it.
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,

    /// Address of the API itself (the probes and /metrics stay on HTTP_ADDR)
    #[arg(long, env = "API_ADDR", default_value = "0.0.0.0:8080")]
    pub api_addr: SocketAddr,

    /// File of scan-request keys, one `NAME:KEY` a line (a mounted Secret); without it
    /// `POST .../scan` answers 401 to everyone
    #[arg(long, env = "API_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,

    /// Scan requests one key may make per minute, per api replica (429 past it)
    #[arg(long, env = "API_SCAN_REQUESTS_PER_MINUTE", default_value_t = 30)]
    pub scan_requests_per_minute: u32,

    /// Seconds a CDN or browser may keep a score or badge (Cache-Control max-age)
    #[arg(long, env = "API_CACHE_SECONDS", default_value_t = 300)]
    pub cache_seconds: u32,

    /// Seconds a requested repository is kept out of the scheduled lane while its manual scan
    /// runs, as `producer enqueue --lease-secs`
    #[arg(long, env = "API_SCAN_LEASE_SECS", default_value_t = 86_400)]
    pub scan_lease_secs: u32,

    /// Days between two scores of a repository, for /status's freshness
    #[arg(long, env = "SCORE_INTERVAL_DAYS", default_value_t = 14)]
    pub interval_days: u32,

    /// The export's local directory (the `export` command's EXPORT_TO), served under /data/
    /// with range requests; without it /data/ answers 404
    #[arg(long, env = "EXPORT_DIR")]
    pub export_dir: Option<PathBuf>,

    /// Days the sink keeps each result's full output (SINK_RAW_HISTORY_DAYS), for the
    /// message of a `?commit=` older than that
    #[arg(long, env = "SINK_RAW_HISTORY_DAYS", default_value_t = 90)]
    pub raw_history_days: u32,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Webhook subscriptions (`/webhooks`): the webhooks service's signing key and outbound
/// policy, which the api must share with it. Without a signing key those routes answer 503.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub signing: SigningKeyArgs,
    #[command(flatten)]
    pub outbound: OutboundArgs,

    /// Webhook subscriptions one API key's owner may have (409 past it)
    #[arg(long, env = "API_WEBHOOKS_PER_OWNER", default_value_t = 100)]
    pub webhooks_per_owner: u32,
}

/// Discovery: a GET of a repository never scored queues one scan of it.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoveryArgs {
    /// Whether a GET of a repository never scored queues its scan (`false`: a plain 404)
    #[arg(long = "discovery", env = "API_DISCOVERY", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Discoveries the whole fleet queues an hour (all api replicas together); past it the
    /// 404 says "not queued" with Retry-After
    #[arg(long, env = "API_DISCOVERY_PER_HOUR", default_value_t = 600)]
    pub discovery_per_hour: u32,

    /// Discoveries one client address may queue an hour, per api replica; past it the 404 says
    /// "not queued" with Retry-After
    #[arg(long, env = "API_DISCOVERY_PER_CLIENT_PER_HOUR", default_value_t = 30)]
    pub discovery_per_client_per_hour: u32,

    /// The header a trusted proxy in front of the api sets to the client's address (e.g.
    /// X-Forwarded-For; its last entry is taken). Unset: the connection's peer address. Set it
    /// only behind a proxy that writes it, or clients choose their own address
    #[arg(long, env = "API_CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<axum::http::HeaderName>,

    /// Seconds a scan usually takes, added to the discovery lane's wait in Retry-After
    #[arg(long, env = "API_EXPECTED_SCAN_SECS", default_value_t = 60)]
    pub expected_scan_secs: u64,
}
