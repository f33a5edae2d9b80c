//! What every scorecard-fleet service runs on; each binary's `main` is a few calls into here.
//!
//! - [`budget`]: a GitHub credential's shared budget: its record and the rules that pace and learn it.
//! - [`config`]: the clap pieces every binary shares (NATS, database, logs, HTTP) and [`config::Secret`].
//! - [`telemetry`]: `tracing` set-up, plain or JSON.
//! - [`exit`]: a binary's exit status: user errors as one message, a stop while waiting as success.
//! - [`shutdown`]: SIGTERM/SIGINT to a `CancellationToken`; a second signal aborts.
//! - [`http`]: `/metrics`, `/healthz` and `/readyz`.
//! - [`topology`]: every NATS stream, subject and consumer, created or verified at start-up.
//! - [`dead`]: dead-lettering failures and poison messages to the dead stream.
//! - [`db`]: the connection pool, migrations and the schema-version check.
//! - [`publish`]: publishing with `Nats-Msg-Id`: one message, or work items pipelined.
//! - [`manual`]: a person's scan request, to the manual lane (`producer enqueue`, the api).
//! - [`status`]: the fleet at a glance (`sink status`, the api's `/status`).
//! - [`nats`]: connecting to NATS with retries and credentials kept secret.
//! - [`webhook`]: the master signing key, each subscription's derived secret, webhook ids, pings.
//! - [`outbound`]: where a webhook may be sent: https, and no address inside (SSRF).
//! - [`retry`]: every retry loop's backoff policy, and waiting for a dependency at start-up.
//! - [`scrub`]: credentials out of text the fleet keeps (log tails, failure messages).
//! - [`tls`]: the TLS crypto provider every binary installs first.

pub mod budget;
pub mod config;
pub mod db;
pub mod dead;
pub mod exit;
pub mod http;
pub mod manual;
pub mod nats;
pub mod outbound;
pub mod publish;
pub mod retry;
pub mod scrub;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod webhook;
