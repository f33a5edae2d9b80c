//! Bloat of `repos` and its indexes under the fleet's constant updates: every repository is
//! claimed (the producer's own `claim`) and then scored (the sink's `repos` statement) once a
//! cycle, both moving `next_due_at`, which is indexed, so no update is HOT. After
//! `BLOAT_CYCLES` (10) cycles of `BLOAT_REPOS` (1,000,000) repositories it prints each
//! relation's size against its size after the import, with PostgreSQL's defaults and with
//! the storage parameters in `CANDIDATE`, side by side (both run at once).
//!
//! Run with `cargo bench -p fleet-tests --bench bloat` once `dev/stack up postgres nats` is
//! up; `dev/bench` runs it. It writes `target/bench-bloat.json`.
//!
//! The cycles are back to back (a real cycle is two weeks), so autovacuum has far less time
//! between them than in production: the defaults' numbers are an upper bound.

use std::time::{Duration, Instant};

use anyhow::ensure;
use chrono::{TimeDelta, Utc};
use fleet_runtime::db::Timeouts;
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::results::{derive_repos, repo_list};
use fleet_tests::scratch::{Scratch, Stack};
use producer::claim::claim;
use producer::import;

/// Storage parameters tried against the defaults.
const CANDIDATE: &str = "autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 10000, \
     autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_limit = 2000";
/// The relations measured.
const RELATIONS: [&str; 5] = [
    "repos",
    "repos_due_idx",
    "repos_priority_due_idx",
    "repos_pkey",
    "repos_repo_key_key",
];
/// The producer's claim size and the sink's batch size.
const CLAIM_BATCH: i64 = 5_000;
const SINK_BATCH: usize = 500;

struct Measured {
    /// Bytes of each relation after the import, then after the last cycle.
    sizes: Vec<(i64, i64)>,
    dead_after: i64,
    autovacuums: i64,
    cycle_secs: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let n: usize = env_or("BLOAT_REPOS", 1_000_000)?;
    let cycles: usize = env_or("BLOAT_CYCLES", 10)?;
    let stack = Stack::connect().await?;
    let repos = derive_repos(&repo_list(), n);
    // Side by side, at once: both see the same machine and the same autovacuum workers.
    let (defaults, tuned) = tokio::try_join!(
        stack.scratch("bloat-defaults", async |s| cycle(s, &repos, cycles, None)
            .await),
        stack.scratch("bloat-tuned", async |s| {
            cycle(s, &repos, cycles, Some(CANDIDATE)).await
        }),
    )?;
    let mut rows = Vec::new();
    for (i, relation) in RELATIONS.iter().enumerate() {
        let (d0, d1) = defaults.sizes[i];
        let (t0, t1) = tuned.sizes[i];
        rows.push(Row {
            what: format!(
                "`{relation}` after {cycles} cycles of {} repositories, × its size after the import",
                number(n as f64)
            ),
            unit: "×",
            value: t1 as f64 / t0 as f64,
            baseline: d1 as f64 / d0 as f64,
            baseline_how: "PostgreSQL's default storage parameters".into(),
            better: Better::Lower,
            target: None,
            notes: format!(
                "{} → {} MB with ({CANDIDATE}); {} → {} MB with the defaults",
                mb(t0),
                mb(t1),
                mb(d0),
                mb(d1)
            ),
        });
    }
    rows.push(Row {
        what: format!(
            "one cycle of {} repositories (claim, then score)",
            number(n as f64)
        ),
        unit: "s",
        value: tuned.cycle_secs,
        baseline: defaults.cycle_secs,
        baseline_how: "PostgreSQL's default storage parameters".into(),
        better: Better::Lower,
        target: None,
        notes: format!(
            "dead tuples left {} vs {}; autovacuums {} vs {}",
            number(tuned.dead_after as f64),
            number(defaults.dead_after as f64),
            tuned.autovacuums,
            defaults.autovacuums
        ),
    });
    let took = started.elapsed();
    println!("\n{}", report::markdown(&rows));
    let machine = vec![("repositories".to_owned(), number(n as f64))];
    let finished = serde_json::json!({ "finished_at": Utc::now().to_rfc3339(), "cycles": cycles });
    let path = report::write_json("bloat", &machine, &rows, finished, took)?;
    println!(
        "written to {} ({:.0} s)",
        path.display(),
        took.as_secs_f64()
    );
    Ok(())
}

fn env_or(name: &str, default: usize) -> anyhow::Result<usize> {
    Ok(match std::env::var(name) {
        Ok(v) => v.parse()?,
        Err(_) => default,
    })
}

fn mb(bytes: i64) -> String {
    format!("{:.0}", bytes as f64 / 1e6)
}

async fn cycle(
    s: &Scratch,
    repos: &[fleet_proto::RepoName],
    cycles: usize,
    parameters: Option<&str>,
) -> anyhow::Result<Measured> {
    if let Some(p) = parameters {
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE repos SET ({p})")))
            .execute(&s.pool)
            .await?;
    }
    import::write(&s.pool, repos).await?;
    sqlx::query("VACUUM ANALYZE repos").execute(&s.pool).await?;
    let before = sizes(s).await?;
    let (_, vacuums_before) = dead_and_vacuums(s).await?;
    let t = Instant::now();
    for c in 1..=cycles {
        let claimed = claim_all(s).await?;
        ensure!(
            claimed == repos.len(),
            "cycle {c} claimed {claimed} repositories"
        );
        score_all(s).await?;
        let (dead, _) = dead_and_vacuums(s).await?;
        eprintln!(
            "{}: cycle {c}: repos {} MB, repos_due_idx {} MB, {} dead tuples",
            parameters.map_or("defaults", |_| "candidate"),
            mb(size(s, "repos").await?),
            mb(size(s, "repos_due_idx").await?),
            number(dead as f64)
        );
    }
    let cycle_secs = t.elapsed().as_secs_f64() / cycles as f64;
    let after = sizes(s).await?;
    let (dead_after, vacuums_after) = dead_and_vacuums(s).await?;
    Ok(Measured {
        sizes: before.into_iter().zip(after).collect(),
        dead_after,
        autovacuums: vacuums_after - vacuums_before,
        cycle_secs,
    })
}

/// The producer's claim until nothing is due; returns how many it claimed.
async fn claim_all(s: &Scratch) -> anyhow::Result<usize> {
    let mut claimed = 0;
    loop {
        let batch = claim(
            &s.pool,
            Timeouts::default(),
            CLAIM_BATCH,
            TimeDelta::hours(24),
        )
        .await?;
        if batch.is_empty() {
            return Ok(claimed);
        }
        claimed += batch.len();
    }
}

/// The sink's update of `repos` for a result (`sink::upsert::REPOS_SCORED`), for every repository in
/// batches of the sink's size, each due again at once (a cycle stands for two weeks).
async fn score_all(s: &Scratch) -> anyhow::Result<()> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM repos ORDER BY random()")
        .fetch_all(&s.pool)
        .await?;
    for chunk in ids.chunks(SINK_BATCH) {
        let now = Utc::now();
        let scored: Vec<_> = chunk.iter().map(|_| now).collect();
        // Jittered as the sink's schedule is, within the past hour: due for the next cycle.
        let due: Vec<_> = chunk
            .iter()
            .map(|id| now - TimeDelta::seconds(id % 3600) - TimeDelta::seconds(1))
            .collect();
        sqlx::query(sink::upsert::REPOS_SCORED)
            .bind(chunk)
            .bind(&scored)
            .bind(&due)
            .bind(chunk)
            .execute(&s.pool)
            .await?;
    }
    // Let autovacuum see the cycle's dead tuples before the next one (its naptime is 60 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(())
}

async fn size(s: &Scratch, relation: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT pg_relation_size($1::regclass)")
        .bind(relation)
        .fetch_one(&s.pool)
        .await?)
}

async fn sizes(s: &Scratch) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for r in RELATIONS {
        out.push(size(s, r).await?);
    }
    Ok(out)
}

async fn dead_and_vacuums(s: &Scratch) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT n_dead_tup, autovacuum_count FROM pg_stat_user_tables WHERE relname = 'repos'",
    )
    .fetch_one(&s.pool)
    .await?)
}
