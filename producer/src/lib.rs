//! The producer: due repositories from PostgreSQL onto the work stream, and the operator
//! commands (import, enqueue, replay, migrate).
//!
//! - [`config`]: the command line.
//! - [`commands`]: each command, run from `main` (the service is [`run()`]).
//! - [`import`]: parse and validate repository lists; write them in large batches.
//! - [`claim`]: claim due repositories under a lease (`FOR UPDATE SKIP LOCKED`).
//! - [`run`]: the control loop (high-water mark, backoff).
//! - [`retire`]: discovered repositories nobody asks for, disabled with their data kept.
//! - `enqueue` is [`fleet_runtime::manual`], which the api shares.
//! - [`replay`]: dead letters back into the queue.
//! - [`metrics`]: what `/metrics` exports.

pub mod claim;
pub mod commands;
pub mod config;
pub mod import;
pub mod metrics;
pub mod replay;
pub mod retire;
pub mod run;

use fleet_runtime::http;
use fleet_runtime::topology::{Topology, WORKER_SCHEDULED, pull_consumer};
use fleet_runtime::{db, nats};
use tokio_util::sync::CancellationToken;

use crate::config::RunArgs;
use crate::metrics::Metrics;
use crate::run::Producer;

/// Starts the service and runs it until `shutdown`.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let http::OpsServer {
        metrics,
        readiness,
        server,
    } = http::start(args.http.http_addr, &shutdown, Metrics::register).await?;

    let pool = db::connect(&args.db, &shutdown).await?;
    match args.db.database_pooling {
        db::Pooling::Session => db::migrate(&pool, db::Pooling::Session).await?,
        // Behind a transaction pooler migrations are `producer migrate`'s, run against
        // PostgreSQL itself: here the schema must already be this build's.
        db::Pooling::Transaction => db::check_schema(&pool).await?,
    }
    let client = nats::connect(&args.nats, "scorecard-fleet-producer", &shutdown).await?;
    let js = async_nats::jetstream::new(client);
    let topology = Topology::new(args.nats.topology.clone())?;
    topology.ensure_until_ready(&js, &shutdown).await?;
    let consumer = pull_consumer(&js, &topology.work_stream(), WORKER_SCHEDULED).await?;
    nats::watch_connection(js.client(), readiness.clone(), shutdown.clone());
    readiness.set(true);
    let settings = args.settings();
    tracing::info!(?settings, "producer running");
    Producer {
        pool,
        js,
        topology,
        consumer,
        settings,
        db: db::DbHealth::new(metrics.db_errors.clone(), readiness),
        metrics,
    }
    .run(shutdown)
    .await;
    server.await.ok();
    Ok(())
}

/// Connects to NATS for a one-shot command: errors at once instead of waiting for a server,
/// and checks only that the fleet's streams are there.
pub async fn connect_nats_once(
    args: &fleet_runtime::config::NatsArgs,
) -> anyhow::Result<(async_nats::jetstream::Context, Topology)> {
    let never = CancellationToken::new();
    let connecting = nats::connect(args, "scorecard-fleet-producer-cli", &never);
    // A person waits at most this long for a NATS that is down.
    let client = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "NATS at {} did not answer within 10s",
                fleet_runtime::config::redact_url(args.nats_url.expose())
            )
        })??;
    let js = async_nats::jetstream::new(client);
    let topology = Topology::new(args.topology.clone())?;
    topology.check_streams(&js).await?;
    Ok((js, topology))
}
