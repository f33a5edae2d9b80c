//! The api: the fleet's scores over HTTP, for the ecosystem (badges, the public Scorecard API's
//! clients) and for people (a status page, a repository's view). Read-only on PostgreSQL as
//! role `scorecard_api` (migrations 0005 and 0008: it may read the score tables and execute
//! `request_scans`, `discover` and `asked_for`); NATS only to queue scans, and reads go on
//! while NATS is away.
//!
//! - [`config`]: the command line.
//! - [`store`]: every query, one index lookup or keyset page each.
//! - [`lookup`]: concurrent GETs' lookups gathered into one query.
//! - [`routes`]: the HTTP routes, errors and caching headers.
//! - [`model`]: the answers' types, which the OpenAPI document describes.
//! - [`openapi`]: the OpenAPI 3 document, generated from the code.
//! - [`badge`]: the SVG badge.
//! - [`html`]: the pages.
//! - [`keys`]: scan-request keys and their rate limit.
//! - [`metrics`]: what `/metrics` exports.
//! - [`data`]: the export's files under `/data/`.
//! - [`discovery`]: a GET of a repository never scored queues its scan.
//! - [`webhooks`]: webhook subscriptions, managed by API-key holders.

pub mod badge;
pub mod config;
pub mod data;
pub mod discovery;
pub mod html;
pub mod keys;
pub mod lookup;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod routes;
pub mod store;
pub mod webhooks;

use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use chrono::TimeDelta;
use fleet_runtime::topology::Topology;
use fleet_runtime::{db, http, nats};
use tokio_util::sync::CancellationToken;

use crate::config::RunArgs;
use crate::keys::{Keys, RateLimit};
use crate::metrics::Metrics;
use crate::routes::App;

/// Starts the service and serves until `shutdown`, then finishes the requests in progress.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let http::OpsServer {
        metrics,
        readiness,
        server,
    } = http::start(args.http.http_addr, &shutdown, Metrics::register).await?;
    let keys = match &args.keys_file {
        Some(path) => Keys::load(path)?,
        None => Keys::default(),
    };
    if keys.is_empty() {
        tracing::warn!("no API keys (API_KEYS_FILE): every scan request is refused");
    }
    let db = db::Db::connect_reads(&args.db, &shutdown).await?;
    db::check_schema(&db.pool).await?;
    let topology = Topology::new(args.nats.topology.clone())?;
    let webhooks = webhooks::Webhooks::new(&args.webhooks)?;

    // Reads never wait for NATS: it is connected in the background, for scan requests only.
    let js = Arc::new(OnceLock::new());
    {
        let (js, nats_args, shutdown) = (js.clone(), args.nats.clone(), shutdown.clone());
        tokio::spawn(async move {
            match nats::connect(&nats_args, "scorecard-fleet-api", &shutdown).await {
                Ok(client) => {
                    let _ = js.set(async_nats::jetstream::new(client));
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "NATS never connected"),
            }
        });
    }
    // Half the pool: the other reads (pages, history, status) keep connections of their own.
    let lookups = lookup::Lookups::start(
        db.clone(),
        args.db.database_max_connections as usize / 2,
        args.db.timeouts().statement,
        metrics.lookups.clone(),
        metrics.lookup_queries.clone(),
    );
    let app = Arc::new(App {
        db,
        lookups,
        keys,
        limit: RateLimit::new(args.scan_requests_per_minute),
        nats: js,
        topology,
        cache_seconds: args.cache_seconds,
        lease: TimeDelta::seconds(i64::from(args.scan_lease_secs.max(1))),
        interval: TimeDelta::days(i64::from(args.interval_days)),
        raw_history_days: args.raw_history_days,
        data: args.export_dir.clone().map(data::DataDir::new),
        db_health: fleet_runtime::db::DbHealth::new(metrics.db_errors.clone(), readiness.clone()),
        metrics,
        status: Mutex::new(None),
        discovery: discovery::Discovery::new(discovery::Settings {
            enabled: args.discovery.enabled,
            per_hour: args.discovery.discovery_per_hour,
            per_client_per_hour: args.discovery.discovery_per_client_per_hour,
            client_header: args.discovery.client_address_header.clone(),
            expected_scan: std::time::Duration::from_secs(args.discovery.expected_scan_secs),
        }),
        webhooks,
    });
    if !args.discovery.enabled {
        tracing::info!(
            "discovery is off (API_DISCOVERY=false): unknown repositories are a plain 404"
        );
    }
    let asked = tokio::spawn(record_asked(app.clone(), shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("binding the API to {}", args.api_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "api serving");
    readiness.set(true);
    let drain = shutdown.clone();
    let ready = readiness.clone();
    axum::serve(
        listener,
        routes::router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        drain.cancelled().await;
        ready.set(false);
    })
    .await
    .context("serving the API")?;
    asked.await.ok();
    record_asked_once(&app).await;
    server.await.ok();
    Ok(())
}

/// Writes which discovered repositories were asked for, every few seconds: what keeps them
/// from retirement. A failed write is not retried: those asks are noted again after an hour
/// at the latest, far inside the intervals retirement waits.
async fn record_asked(app: Arc<App>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => record_asked_once(&app).await,
        }
    }
}

async fn record_asked_once(app: &App) {
    let ids = app.discovery.take_asked();
    if ids.is_empty() {
        return;
    }
    let written = async {
        let mut tx = app.db.begin().await?;
        sqlx::query("SELECT asked_for($1)")
            .persistent(false)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = written {
        tracing::warn!(error = %db::describe(&e), repos = ids.len(), "recording asks for discovered repositories failed");
    }
}
