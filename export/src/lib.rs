//! scorecard-fleet's export: the whole dataset as files anyone can query, in the formats their
//! tools already read.
//!
//! One run writes a new snapshot under `snapshots/<id>/` of the destination:
//! - `latest.parquet`: every repository's latest result, a row each ([`tables`]);
//! - `history/date=YYYY-MM-DD/part-0.parquet`: every scan, by scan date (Hive partitioning);
//!   only the dates with results recorded since the last export are written again, the others
//!   are copied (a hard link locally, a server-side copy in a bucket);
//! - `events/date=YYYY-MM-DD/events.ndjson`: the change events of each day ([`events`]);
//! - `stats.json`: the ecosystem's figures ([`stats`]), which the api's `/stats` serves;
//! - `manifest.json`: every file with its rows, bytes and SHA-256 ([`manifest`]).
//!
//! Then it publishes the snapshot by replacing the root `manifest.json`, and deletes every
//! snapshot but the new one and the one it replaced (a reader may still be in it), half-written
//! ones of a killed export included. Rows stream from one consistent read of PostgreSQL
//! (REPEATABLE READ) in batches; memory holds a batch and a row group. A new schema version
//! writes every file again instead of copying files of the old one.

pub mod config;
pub mod dest;
pub mod events;
pub mod manifest;
pub mod stats;
pub mod tables;

use sqlx::ConnectOptions as _;
use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use tokio_util::sync::CancellationToken;

use crate::config::{Command, RunArgs};
use crate::dest::Destination;
use crate::manifest::{FileEntry, Kind, Manifest};
use crate::stats::{Coverage, Figures, Tally};
use crate::tables::Sizes;

/// Results recorded this long before a read may still be committing when it starts; their scan
/// dates are written again by the next export.
const RECORDING_MARGIN: TimeDelta = TimeDelta::hours(1);

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let report = export(&args).await?;
            println!("{report}");
            Ok(())
        }
    }
}

/// Writes and publishes one snapshot; returns what it wrote, for a person.
pub async fn export(args: &RunArgs) -> anyhow::Result<String> {
    let started = Instant::now();
    let dest = Destination::parse(&args.to)?;
    // Files of another schema are never carried into this one: everything is written again.
    let previous = manifest::published(&dest)
        .await?
        .filter(|m| m.schema_version == manifest::SCHEMA_VERSION);
    let exported_at = Utc::now();
    let id = format!(
        "{}-{}",
        exported_at.format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let snapshot = format!("snapshots/{id}");
    let sizes = Sizes {
        batch_rows: args.batch_rows.max(1),
        row_group_rows: args.row_group_rows.max(1),
    };

    // Its reads run for minutes by design: sqlx's slow-statement warning would fire on each.
    let options = sqlx::postgres::PgConnectOptions::from_str(args.db.database_url.expose())
        .context("reading DATABASE_URL")?
        .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(3600));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {}",
                fleet_runtime::config::redact_url(args.db.database_url.expose())
            )
        })?;
    fleet_runtime::db::check_schema(&pool).await?;
    let mut tx = pool.begin().await?;
    // One snapshot of the database for every table; a read as long as the data, not a
    // service's statement.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL statement_timeout = 0")
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    let data_as_of: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;

    let mut files = Vec::new();
    let mut latest_tally = Tally::default();
    let latest = tables::write_latest(
        &mut tx,
        &dest,
        &format!("{snapshot}/latest.parquet"),
        &sizes,
        &mut latest_tally,
    )
    .await
    .context("writing latest.parquet")?;
    files.push(FileEntry {
        path: "latest.parquet".into(),
        kind: Kind::Latest,
        date: None,
        rows: latest.rows,
        bytes: latest.written.bytes,
        sha256: latest.written.sha256,
        tally: None,
    });
    let coverage: Coverage = sqlx::query_as(
        "SELECT count(*) AS repositories,
                (SELECT count(*) FROM scores) AS scored,
                (SELECT count(*) FROM work_failures) AS failing,
                count(*) FILTER (WHERE last_scored_at IS NULL) AS never_scored
         FROM repos",
    )
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;

    let since = previous.as_ref().map(|m| m.history_recorded_before);
    let touched = tables::touched_dates(&mut tx, since).await?;
    for date in &touched {
        let path = format!("history/date={date}/part-0.parquet");
        let mut tally = Tally::default();
        let file = tables::write_history_day(
            &mut tx,
            &dest,
            &format!("{snapshot}/{path}"),
            *date,
            &sizes,
            &mut tally,
        )
        .await
        .with_context(|| format!("writing {path}"))?;
        files.push(FileEntry {
            path,
            kind: Kind::History,
            date: Some(*date),
            rows: file.rows,
            bytes: file.written.bytes,
            sha256: file.written.sha256,
            tally: Some(tally),
        });
    }
    tx.commit().await?;
    if let Some(previous) = &previous {
        for entry in previous.files.iter().filter(|f| f.kind == Kind::History) {
            if entry.date.is_some_and(|d| !touched.contains(&d)) {
                carry(&dest, previous, &snapshot, entry).await?;
                files.push(entry.clone());
            }
        }
    }

    let shutdown = CancellationToken::new();
    let client =
        fleet_runtime::nats::connect(&args.nats, "scorecard-fleet-export", &shutdown).await?;
    let js = async_nats::jetstream::new(client);
    let topology = fleet_runtime::topology::Topology::new(args.nats.topology.clone())?;
    let days = events::write_days(&js, &topology, &dest, &snapshot, previous.as_ref())
        .await
        .context("writing the change events")?;
    let written_days: Vec<_> = days.iter().map(|d| d.date).collect();
    files.extend(days.into_iter().map(|day| FileEntry {
        path: day.path,
        kind: Kind::Events,
        date: Some(day.date),
        rows: day.lines,
        bytes: day.written.bytes,
        sha256: day.written.sha256,
        tally: None,
    }));
    if let Some(previous) = &previous {
        for entry in previous.files.iter().filter(|f| f.kind == Kind::Events) {
            if entry.date.is_some_and(|d| !written_days.contains(&d)) {
                carry(&dest, previous, &snapshot, entry).await?;
                files.push(entry.clone());
            }
        }
    }
    files.sort_by(|a, b| (kind_order(a.kind), &a.path).cmp(&(kind_order(b.kind), &b.path)));

    let history: BTreeMap<_, _> = files
        .iter()
        .filter_map(|f| Some((f.date?, f.tally.as_ref()?)))
        .collect();
    let figures = Figures {
        computed_at: data_as_of,
        pass_at: stats::PASS_AT,
        coverage,
        latest: latest_tally.summary(),
        weeks: stats::weeks(history, data_as_of, args.stats_weeks),
        known_checks: stats::known_checks(),
    };
    let (bytes, sha256) =
        manifest::put_json(&dest, &format!("{snapshot}/stats.json"), &figures).await?;
    files.push(FileEntry {
        path: "stats.json".into(),
        kind: Kind::Stats,
        date: None,
        rows: 1,
        bytes,
        sha256,
        tally: None,
    });

    let manifest = Manifest {
        schema_version: manifest::SCHEMA_VERSION,
        snapshot: snapshot.clone(),
        exported_at,
        data_as_of,
        history_recorded_before: data_as_of - RECORDING_MARGIN,
        files,
    };
    manifest::put_json(
        &dest,
        &format!("{snapshot}/{}", manifest::MANIFEST),
        &manifest,
    )
    .await?;
    // The publish: one put replaces the root manifest.
    manifest::put_json(&dest, manifest::MANIFEST, &manifest).await?;
    let removed = remove_old_snapshots(&dest, &snapshot, previous.as_ref()).await?;

    let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    Ok(format!(
        "export: published {snapshot} to {} in {:.1}s: latest {} rows, history {} dates written \
         ({} rows) and {} copied, events {} days, {} files, {} bytes; {removed} old snapshots removed",
        dest.shown,
        started.elapsed().as_secs_f64(),
        latest.rows,
        touched.len(),
        manifest
            .files
            .iter()
            .filter(|f| f.kind == Kind::History && f.date.is_some_and(|d| touched.contains(&d)))
            .map(|f| f.rows)
            .sum::<u64>(),
        manifest
            .files
            .iter()
            .filter(|f| f.kind == Kind::History)
            .count()
            - touched.len(),
        manifest
            .files
            .iter()
            .filter(|f| f.kind == Kind::Events)
            .count(),
        manifest.files.len(),
        total,
    ))
}

fn kind_order(kind: Kind) -> u8 {
    match kind {
        Kind::Latest => 0,
        Kind::History => 1,
        Kind::Events => 2,
        Kind::Stats => 3,
    }
}

/// The previous snapshot's file, unchanged, into the new snapshot.
async fn carry(
    dest: &Destination,
    previous: &Manifest,
    snapshot: &str,
    entry: &FileEntry,
) -> anyhow::Result<()> {
    let from = dest.path(&format!("{}/{}", previous.snapshot, entry.path));
    let to = dest.path(&format!("{snapshot}/{}", entry.path));
    dest.store
        .copy(&from, &to)
        .await
        .with_context(|| format!("copying {} from {}", entry.path, previous.snapshot))
}

/// Every snapshot but the published one and the one it replaced: earlier ones, and any an
/// interrupted export left half-written.
async fn remove_old_snapshots(
    dest: &Destination,
    published: &str,
    previous: Option<&Manifest>,
) -> anyhow::Result<usize> {
    let keep = [Some(published), previous.map(|p| p.snapshot.as_str())];
    let listed = dest
        .store
        .list_with_delimiter(Some(&dest.path("snapshots")))
        .await?;
    let mut removed = 0;
    for dir in listed.common_prefixes {
        let relative = format!("snapshots/{}", dir.filename().unwrap_or_default());
        if keep.contains(&Some(relative.as_str())) {
            continue;
        }
        // On a disk, the whole directory: a killed export's staged parts are files the store
        // does not list.
        if let Some(local) = &dest.local {
            let path = local.join(&relative);
            tokio::fs::remove_dir_all(&path)
                .await
                .with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
            continue;
        }
        let paths: Vec<Path> = dest
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for path in paths {
            dest.store.delete(&path).await?;
        }
        removed += 1;
    }
    Ok(removed)
}
