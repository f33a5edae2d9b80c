//! The webhooks service: score changes delivered to subscribers as signed Standard Webhooks,
//! at least once. Replicas share both consumers; each bounds what it sends at once.
//!
//! - [`config`]: the command line, and which settings cannot work together.
//! - [`matching`]: whether an event is one a subscription asked for (pure).
//! - [`fanout`]: change events to one delivery per matching subscription.
//! - [`body`]: the JSON a subscriber receives.
//! - [`client`]: the HTTP client: checked addresses only, no redirects, capped answers.
//! - [`outcome`]: what each ending of an attempt leads to (pure, one table).
//! - [`deliver`]: pull, sign, send, and ack, retry or dead-letter.
//! - [`store`]: subscriptions and the delivery log in PostgreSQL.
//! - [`metrics`]: what `/metrics` exports.
//!
//! The signing secrets are derived (`fleet_runtime::webhook`) and the outbound address policy
//! is shared with the api (`fleet_runtime::outbound`).

pub mod body;
pub mod client;
pub mod config;
pub mod deliver;
pub mod fanout;
pub mod matching;
pub mod metrics;
pub mod outcome;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleet_runtime::outbound::Policy;
use fleet_runtime::topology::{self, Topology, WEBHOOKS_DELIVER, WEBHOOKS_FANOUT};
use fleet_runtime::{db, http, nats};
use tokio_util::sync::CancellationToken;

use crate::config::Cli;
use crate::deliver::{Deliverer, Endpoints};
use crate::fanout::Fanout;
use crate::metrics::Metrics;

/// Keeps the delivery log within `days` until `shutdown`.
async fn prune_log(
    pool: sqlx::PgPool,
    timeouts: db::Timeouts,
    days: u32,
    shutdown: CancellationToken,
) {
    loop {
        match store::prune(&pool, timeouts, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "pruned the webhook delivery log"),
            Err(e) => tracing::warn!(error = %db::describe(&e), "pruning the delivery log failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(store::PRUNE_EVERY) => {}
        }
    }
}

/// Starts the service and runs it until `shutdown`.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<()> {
    cli.validate()?;
    let master = cli
        .signing
        .load()?
        .context("the webhooks service signs with WEBHOOK_SIGNING_KEY_FILE (or WEBHOOK_SIGNING_KEY): set one")?;
    let policy = Policy::new(&cli.outbound)?;
    let client = client::Client::new(
        policy,
        Duration::from_secs(cli.connect_timeout_secs),
        Duration::from_secs(cli.timeout_secs),
    )?;
    let http::OpsServer {
        metrics,
        readiness,
        server,
    } = http::start(cli.http.http_addr, &shutdown, Metrics::register).await?;

    let pool = db::connect(&cli.db, &shutdown).await?;
    db::check_schema(&pool).await?;
    let client_nats = nats::connect(&cli.nats, "scorecard-fleet-webhooks", &shutdown).await?;
    nats::watch_connection(client_nats.clone(), readiness.clone(), shutdown.clone());
    let js = async_nats::jetstream::new(client_nats);
    let topology = Topology::new(cli.nats.topology.clone())?;
    // Creates (or verifies) the webhooks stream and both consumers with everything else.
    topology.ensure_until_ready(&js, &shutdown).await?;
    let fanout_consumer =
        topology::pull_consumer(&js, &topology.events_stream(), WEBHOOKS_FANOUT).await?;
    let deliver_consumer =
        topology::pull_consumer(&js, &topology.webhooks_stream(), WEBHOOKS_DELIVER).await?;
    readiness.set(true);
    tracing::info!(
        max_in_flight = cli.max_in_flight,
        per_endpoint = cli.per_endpoint,
        "webhooks running"
    );

    tokio::spawn(prune_log(
        pool.clone(),
        cli.db.timeouts(),
        cli.log_days,
        shutdown.clone(),
    ));
    let db_health = db::DbHealth::new(metrics.db_errors.clone(), readiness.clone());
    let fanout = Fanout {
        js: js.clone(),
        consumer: fanout_consumer,
        pool: pool.clone(),
        timeouts: cli.db.timeouts(),
        topology: topology.clone(),
        metrics: metrics.clone(),
        db: db_health.clone(),
    };
    let deliverer = Arc::new(Deliverer {
        js,
        consumer: deliver_consumer,
        pool,
        timeouts: cli.db.timeouts(),
        topology,
        metrics,
        db: db_health,
        client,
        master,
        retries: cli.retries(),
        api_public_url: cli.api_public_url.clone(),
        max_in_flight: cli.max_in_flight,
        endpoints: Endpoints::new(cli.per_endpoint),
    });
    let fanned = tokio::spawn(fanout.run(shutdown.clone()));
    let delivered = deliverer.run(shutdown.clone()).await;
    readiness.set(false);
    let fanned = fanned.await.context("the fan-out task")?;
    server.await.ok();
    delivered.and(fanned)
}
