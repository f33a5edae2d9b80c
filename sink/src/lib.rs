//! The sink: results and failures from NATS JetStream into PostgreSQL.
//!
//! - [`config`]: the command line (`run`, `status`, `plan`, `show`).
//! - [`commands`]: each command, run from `main` (the service is [`run()`]).
//! - [`decode`]: a JetStream message to a record, or the reason it is poison.
//! - [`upsert`]: one batch of records in one transaction, idempotently.
//! - [`copy`]: PostgreSQL's binary `COPY` format, for the per-check rows.
//! - [`events`]: change events, through an outbox written in the batch's transaction.
//! - [`schedule`]: when a repository is due again after a result or a failure.
//! - [`consume`]: pull, write, ack; hold and retry while PostgreSQL is down.
//! - [`prune_raw_once`]: the retention of scorecard's full output in `score_raw`.
//! - [`plan`]: tokens and concurrency needed for the repositories in the database.
//! - [`report`]: `status` and `show`, for operators.
//! - [`metrics`]: what `/metrics` exports.

pub mod commands;
pub mod config;
pub mod consume;
pub mod copy;
pub mod decode;
pub mod events;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod schedule;
pub mod upsert;

use std::time::Duration;

use fleet_runtime::http;
use fleet_runtime::topology::{self, Topology};
use fleet_runtime::{db, nats};
use tokio_util::sync::CancellationToken;

use crate::config::RunArgs;
use crate::consume::Sink;
use crate::metrics::Metrics;

/// How often the freshness gauges are recomputed: freshness moves over hours.
const FRESHNESS_EVERY: Duration = Duration::from_secs(300);

/// Enabled repositories, and how many of them were scored within `interval`: the freshness
/// gauges' numbers.
pub async fn freshness_counts(
    pool: &sqlx::PgPool,
    interval: chrono::TimeDelta,
) -> Result<(i64, i64), sqlx::Error> {
    // In a transaction: one server behind a transaction pooler (see `db`).
    // A sample of a large table, as `status` reads it: the ratio is what the gauge is for.
    let mut tx = pool.begin().await?;
    let read = fleet_runtime::status::reading(&mut tx).await?;
    let (total, fresh): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE r.last_scored_at >= now() - $1::interval)
         FROM {} WHERE r.enabled",
        read.from_repos("r")
    )))
    .persistent(false)
    .bind(fleet_runtime::db::interval_text(interval))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((read.scale(total), read.scale(fresh)))
}

/// Keeps the freshness gauges current until `shutdown`.
async fn freshness(
    pool: sqlx::PgPool,
    interval: chrono::TimeDelta,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        let counted = freshness_counts(&pool, interval).await;
        match counted {
            Ok((total, fresh)) => {
                metrics.repos.set(total);
                metrics.fresh_ratio.set(if total == 0 {
                    1.0
                } else {
                    fresh as f64 / total as f64
                });
            }
            Err(e) => tracing::warn!(error = %e, "computing freshness failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(FRESHNESS_EVERY) => {}
        }
    }
}

/// How often results past the raw history's retention are deleted, and how many at a time
/// (short transactions: the sink's writes go on beside them).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_ROWS: i64 = 10_000;

/// Deletes scorecard's full output of results older than `days` until `shutdown`.
async fn prune_raw_history(
    pool: sqlx::PgPool,
    timeouts: db::Timeouts,
    days: u32,
    shutdown: CancellationToken,
) {
    loop {
        match prune_raw_once(&pool, timeouts, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "pruned the raw result history"),
            Err(e) => {
                tracing::warn!(error = %db::describe(&e), "pruning the raw result history failed")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// One pass of the retention: every raw result older than `days`, in short transactions.
pub async fn prune_raw_once(
    pool: &sqlx::PgPool,
    timeouts: db::Timeouts,
    days: u32,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let mut tx = db::begin(pool, timeouts).await?;
        let n = sqlx::query(
            "DELETE FROM score_raw WHERE (repo_id, commit_sha) IN (
                 SELECT repo_id, commit_sha FROM score_raw
                 WHERE scored_at < now() - make_interval(days => $1) LIMIT $2)",
        )
        .persistent(false)
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .bind(PRUNE_ROWS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        deleted += n;
        if n < PRUNE_ROWS as u64 {
            return Ok(deleted);
        }
    }
}

/// Starts the service and runs it until `shutdown`.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Each writer holds a connection for its whole transaction; the freshness gauge needs one more.
    if u64::from(args.db.database_max_connections) < args.writers as u64 + 1 {
        anyhow::bail!(
            "DATABASE_MAX_CONNECTIONS ({}) must be more than SINK_WRITERS ({}): each writer holds \
             a connection for its transaction and the freshness gauge needs one more",
            args.db.database_max_connections,
            args.writers
        );
    }
    let http::OpsServer {
        metrics,
        readiness,
        server,
    } = http::start(args.http.http_addr, &shutdown, Metrics::register).await?;

    let pool = db::connect(&args.db, &shutdown).await?;
    db::check_schema(&pool).await?;
    let client = nats::connect(&args.nats, "scorecard-fleet-sink", &shutdown).await?;
    nats::watch_connection(client.clone(), readiness.clone(), shutdown.clone());
    let js = async_nats::jetstream::new(client);
    let topology = Topology::new(args.nats.topology.clone())?;
    topology.ensure_until_ready(&js, &shutdown).await?;
    let consumer_config = topology.sink_consumer(&args.consumer);
    // A just-formed cluster may time out on it as on the streams: the same patience.
    let results_stream = topology.results_stream();
    fleet_runtime::retry::while_transient(
        "the sink's consumer",
        &shutdown,
        || topology::ensure_consumer(&js, &results_stream, consumer_config.clone()),
        topology::TopologyError::is_transient,
    )
    .await?;
    let consumer = topology::pull_consumer(&js, &results_stream, &args.consumer).await?;
    readiness.set(true);
    tracing::info!(consumer = %args.consumer, batch_size = args.batch_size, "sink running");

    tokio::spawn(freshness(
        pool.clone(),
        args.schedule.schedule().interval,
        metrics.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(prune_raw_history(
        pool.clone(),
        args.db.timeouts(),
        args.raw_history_days,
        shutdown.clone(),
    ));
    let events = args.events.then(|| {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let publisher = events::Publisher {
            js: js.clone(),
            pool: pool.clone(),
            timeouts: args.db.timeouts(),
            subject: topology.score_changed_subject(),
            metrics: metrics.clone(),
            wake: wake.clone(),
        };
        tokio::spawn(publisher.run(shutdown.clone()));
        wake
    });
    let sink = Sink {
        js,
        consumer,
        pool,
        timeouts: args.db.timeouts(),
        events,
        topology,
        schedule: args.schedule.schedule(),
        db: db::DbHealth::new(metrics.db_errors.clone(), readiness),
        metrics,
        batch_size: args.batch_size.max(1),
        batch_wait: Duration::from_millis(args.batch_wait_ms.max(1)),
        writers: args.writers.max(1),
    };
    sink.run(shutdown).await?;
    server.await.ok();
    Ok(())
}
