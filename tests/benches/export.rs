//! The export at 1,000,000 and 4,000,000 scored repositories (`EXPORT_BENCH_REPOS`, comma
//! separated, to change), each with 20 checks and one scan of history today: the release
//! binary's time and peak RSS against PostgreSQL's own `COPY` of the same rows as CSV, its peak
//! RSS against the same export holding every row at once (one batch and one row group), the
//! bytes per repository of `latest` and of one day of history against the CSV's, and the api's
//! `/stats` with its figures cached and cold against the naive `/stats`: the same distribution
//! queried from the score tables.
//!
//! Run with `dev/bench export`, or `cargo build --release --workspace --bins && cargo bench -p
//! fleet-tests --bench export` once `dev/stack up` is up. Prints a table and writes
//! `target/bench-export.json`.
//!
//! Each size needs [`DISK_PER_REPO`] of free disk where PostgreSQL keeps its data, checked before
//! anything is written: 10,000,000 needs ~77 GB. The api's index of checks by name and score,
//! which the export never reads, is built only after the export and the `COPY` (before `/stats`,
//! whose naive baseline may use it): its 14.5 GB at 10,000,000 and the sort's temporary files
//! would not fit on one disk of the project's machine at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use fleet_tests::api_server::{self, ApiServer};
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::scratch::{Scratch, Stack};
use fleet_tests::stack;
use sqlx::PgPool;

const REPOS_DEFAULT: &str = "1000000,4000000";
/// Free disk a size takes, per repository, as measured at 10,000,000 with nothing to spare: the
/// tables without the api's check index (4.5 KB) and PostgreSQL's temporary files at their
/// peak, while it sorts `latest` (3.2 KB). The other peak, the same tables with that index
/// (1.45 KB) and its build's sort, is lower.
const DISK_PER_REPO: u64 = 7_700;
const STATS_REQUESTS: usize = 200;
/// The largest export also run holding every row at once (the peak RSS row's baseline).
const WHOLE_MAX_REPOS: i64 = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let sizes: Vec<i64> = std::env::var("EXPORT_BENCH_REPOS")
        .unwrap_or_else(|_| REPOS_DEFAULT.to_owned())
        .split(',')
        .map(|n| n.trim().parse().context("EXPORT_BENCH_REPOS"))
        .collect::<anyhow::Result<_>>()?;
    let stack = Stack::connect().await?;
    enough_disk(&stack, sizes.iter().copied().max().unwrap_or(0)).await?;
    let machine = report::host();
    println!("# scorecard-fleet export bench\n");
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!();
    let mut rows = Vec::new();
    for &repos in &sizes {
        let label = format!("export-{repos}");
        rows.extend(
            stack
                .scratch(&label, async |s: &Scratch| measure(s, repos).await)
                .await?,
        );
    }
    let took = started.elapsed();
    println!("{}", report::markdown(&rows));
    for r in &rows {
        println!("- {}: {}", r.what, r.notes);
    }
    let path = report::write_json(
        "export",
        &machine,
        &rows,
        serde_json::json!({ "repos": sizes }),
        took,
    )?;
    println!(
        "\nwhole bench: {:.0} s; written to {}",
        took.as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// Fails at once, not half an hour in, when the largest size's tables and sort would not fit on
/// PostgreSQL's disk (sizes run one after another, each dropped after it).
async fn enough_disk(stack: &Stack, repos: i64) -> anyhow::Result<()> {
    let pool = PgPool::connect_with(stack.server.clone()).await?;
    let dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(&dir)
        .output()
        .context("df")?;
    let free: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("df's free bytes for {dir}"))?;
    let need = DISK_PER_REPO * repos as u64;
    let gb = |b: u64| b as f64 / 1e9;
    ensure!(
        free >= need,
        "{} repositories need ~{:.0} GB free where PostgreSQL keeps its data ({dir}), and {:.0} GB \
         are: set EXPORT_BENCH_REPOS to fewer",
        number(repos as f64),
        gb(need),
        gb(free)
    );
    Ok(())
}

/// The api's index of checks by name and score: dropped before [`populate`], and its
/// definition, to build again with [`build_deferred`] once the export and `COPY` are done.
async fn defer_check_index(pool: &PgPool) -> anyhow::Result<String> {
    let (name, def): (String, String) = sqlx::query_as(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index
         WHERE indrelid = 'score_checks'::regclass AND NOT indisprimary",
    )
    .fetch_one(pool)
    .await
    .context("score_checks' one index besides its key")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
        .execute(pool)
        .await?;
    Ok(def)
}

async fn build_deferred(pool: &PgPool, def: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(def.to_owned()))
        .execute(pool)
        .await?;
    sqlx::query("ANALYZE score_checks").execute(pool).await?;
    eprintln!(
        "the api's check index built in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `repos` scored repositories with 20 checks each and a scan of history today, generated
/// inside PostgreSQL in chunks.
async fn populate(pool: &PgPool, repos: i64) -> anyhow::Result<()> {
    const CHUNK: i64 = 200_000;
    let checks: Vec<&str> = fleet_proto::scorecard::CHECKS.to_vec();
    let mut from = 1;
    while from <= repos {
        let to = (from + CHUNK - 1).min(repos);
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO repos (repo_key, host, owner, name, next_due_at, last_enqueued_at, last_scored_at)
             SELECT 'github.com/bench-o' || (i % 10000) || '/r' || i, 'github.com',
                    'bench-o' || (i % 10000), 'r' || i, now() + interval '7 days', now(), now()
             FROM generate_series($1::int8, $2::int8) AS i",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO scores (repo_id, work_id, score, commit_sha, scorecard_version,
                                 scorecard_commit, scored_at, exit_code, checks, raw_json)
             SELECT r.id, 'bench-' || r.id, (r.id % 101) / 10.0, md5(r.id::text) || '00000000',
                    'v5.3.0', 'c', now(), 0, '[]', ''
             FROM repos r WHERE r.id BETWEEN $1 AND $2",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO score_checks (repo_id, name, score, reason)
             SELECT r.id, c.name, NULLIF((r.id + c.k) % 12, 11) - 0,
                    c.k || ' out of 20 things done, as a check says it'
             FROM repos r, unnest($3::text[]) WITH ORDINALITY AS c(name, k)
             WHERE r.id BETWEEN $1 AND $2",
        )
        .bind(from)
        .bind(to)
        .bind(&checks)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO score_history (work_id, repo_id, score, commit_sha, scorecard_version,
                                        scored_at, exit_code, check_scores)
             SELECT s.work_id, s.repo_id, s.score, s.commit_sha, s.scorecard_version, s.scored_at,
                    0, (SELECT jsonb_object_agg(name, score) FROM score_checks c
                        WHERE c.repo_id = s.repo_id)
             FROM scores s WHERE s.repo_id BETWEEN $1 AND $2",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        from = to + 1;
    }
    sqlx::query("VACUUM ANALYZE repos, scores, score_checks, score_history")
        .execute(pool)
        .await?;
    Ok(())
}

struct Run {
    seconds: f64,
    peak_rss_mb: f64,
}

/// The release export binary into `to`, its wall time and peak RSS (VmHWM, sampled until it
/// exits).
async fn export(s: &Scratch, to: &Path, env: &[(&str, String)]) -> anyhow::Result<Run> {
    let url = stack::database_url_for(s.opts.get_database().expect("a database"));
    let mut cmd = Command::new(release("export"));
    cmd.arg("run")
        .env("DATABASE_URL", url)
        .env("NATS_URL", stack::nats_url())
        .env("NATS_PREFIX", s.topology.args().nats_prefix.clone())
        .env("EXPORT_TO", to)
        .env("LOG", "warn")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let mut child = cmd.spawn().context("starting the export")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0.0f64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ensure!(status.success(), "the export failed: {status}");
    Ok(Run {
        seconds: t.elapsed().as_secs_f64(),
        peak_rss_mb: peak_kb / 1024.0,
    })
}

fn release(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name)
}

/// PostgreSQL's own CSV of `query` through psql: the seconds and bytes (counted as they
/// stream: at 10,000,000 repositories the CSV is larger than the machine's memory).
fn copy_csv(s: &Scratch, query: &str) -> anyhow::Result<(f64, u64)> {
    let url = stack::database_url_for(s.opts.get_database().expect("a database"));
    let t = Instant::now();
    let mut psql = Command::new("psql")
        .arg(url)
        .arg("-qAtc")
        .arg(format!("COPY ({query}) TO STDOUT WITH (FORMAT csv)"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("psql")?;
    let bytes = std::io::copy(
        psql.stdout.as_mut().expect("psql's stdout"),
        &mut std::io::sink(),
    )?;
    let out = psql.wait_with_output().context("psql")?;
    ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((t.elapsed().as_secs_f64(), bytes))
}

fn manifest_file(dir: &Path, kind: &str) -> anyhow::Result<(u64, u64)> {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    let f = m["files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["kind"] == kind))
        .with_context(|| format!("no {kind} file"))?;
    Ok((
        f["bytes"].as_u64().unwrap_or(0),
        f["rows"].as_u64().unwrap_or(0),
    ))
}

async fn measure(s: &Scratch, repos: i64) -> anyhow::Result<Vec<Row>> {
    let t = Instant::now();
    let check_index = defer_check_index(&s.pool).await?;
    populate(&s.pool, repos).await?;
    eprintln!(
        "{repos} scored repositories written in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let n = number(repos as f64);
    let dir = std::env::temp_dir().join(stack::unique("export-bench"));
    let run = export(s, &dir, &[]).await?;
    let (latest_bytes, latest_rows) = manifest_file(&dir, "latest")?;
    let (history_bytes, history_rows) = manifest_file(&dir, "history")?;
    ensure!(
        latest_rows == repos as u64 && history_rows == repos as u64,
        "every row exported"
    );
    let latest_query = "SELECT r.host || '/' || r.owner || '/' || r.name, s.commit_sha, s.scored_at, \
        s.scorecard_version, s.scorecard_commit, s.score, s.work_id, \
        c.checks FROM scores s JOIN repos r ON r.id = s.repo_id \
        LEFT JOIN (SELECT repo_id, \
                   string_agg(name || ':' || coalesce(score::text, '') || ':' || reason, '|' ORDER BY name) AS checks \
                   FROM score_checks GROUP BY repo_id) c ON c.repo_id = s.repo_id \
        ORDER BY r.repo_key";
    let (copy_seconds, csv_bytes) = copy_csv(s, latest_query)?;
    let (_, history_csv) = copy_csv(
        s,
        "SELECT r.host || '/' || r.owner || '/' || r.name, h.commit_sha, h.scored_at, \
         h.scorecard_version, h.score, h.work_id, h.check_scores FROM score_history h \
         JOIN repos r ON r.id = h.repo_id ORDER BY h.scored_at, h.work_id",
    )?;
    // The same export holding every row at once, where that fits in the machine's memory.
    let naive = if repos <= WHOLE_MAX_REPOS {
        let whole = std::env::temp_dir().join(stack::unique("export-bench-whole"));
        let all = repos.to_string();
        let naive = export(
            s,
            &whole,
            &[
                ("EXPORT_BATCH_ROWS", all.clone()),
                ("EXPORT_ROW_GROUP_ROWS", all),
            ],
        )
        .await?;
        std::fs::remove_dir_all(&whole).ok();
        Some(naive)
    } else {
        None
    };
    build_deferred(&s.pool, &check_index).await?;
    let stats = stats_answers(s, &dir).await?;
    std::fs::remove_dir_all(&dir).ok();

    let mut rows = vec![
        Row {
            what: format!(
                "export of {n} repositories (20 checks each, one scan of history each today): wall time"
            ),
            unit: "s",
            value: run.seconds,
            baseline: copy_seconds,
            baseline_how: "PostgreSQL's COPY of latest's rows as CSV through psql, in the same run"
                .into(),
            better: Better::Lower,
            target: None,
            notes: format!(
                "{:.0} repositories/s; latest {} B, one day of history {} B",
                repos as f64 / run.seconds,
                latest_bytes,
                history_bytes
            ),
        },
        Row {
            what: format!("export of {n} repositories: peak RSS"),
            unit: "MB",
            value: run.peak_rss_mb,
            baseline: naive.as_ref().map_or(f64::NAN, |n| n.peak_rss_mb),
            baseline_how: match &naive {
                Some(_) => "the same export with every row in one batch and one row group".into(),
                None => format!(
                    "not run above {}: every row at once takes ~2.2 GB per million, more than \
                     the machine's memory here",
                    number(WHOLE_MAX_REPOS as f64)
                ),
            },
            better: Better::Lower,
            target: None,
            notes: naive
                .as_ref()
                .map(|n| format!("the whole-table export took {:.1} s", n.seconds))
                .unwrap_or_default(),
        },
        Row {
            what: format!("latest.parquet at {n} repositories: bytes per repository"),
            unit: "B",
            value: latest_bytes as f64 / repos as f64,
            baseline: csv_bytes as f64 / repos as f64,
            baseline_how: "the same rows as CSV (COPY), checks as name:score:reason".into(),
            better: Better::Lower,
            target: None,
            notes: format!("{latest_bytes} B in all"),
        },
        Row {
            what: format!(
                "one day of history at {n} repositories (one scan each): bytes per repository"
            ),
            unit: "B",
            value: history_bytes as f64 / repos as f64,
            baseline: history_csv as f64 / repos as f64,
            baseline_how: "the same rows as CSV (COPY), check scores as JSON".into(),
            better: Better::Lower,
            target: None,
            notes: format!("{history_bytes} B in all"),
        },
    ];
    rows.extend(stats.into_iter().map(|mut r| {
        r.what = format!("{} at {n} repositories", r.what);
        r
    }));
    Ok(rows)
}

/// `/stats` answered from the export (cold: the first request after a publish reads and parses
/// `stats.json`; warm: the cached figures) against the naive `/stats`, which queries the score
/// tables on every request.
async fn stats_answers(s: &Scratch, dir: &Path) -> anyhow::Result<Vec<Row>> {
    api_server::ensure_login(&s.pool).await;
    let url = api_server::url_as_login(&s.pool);
    let api = ApiServer::start(
        &url,
        &[
            ("EXPORT_DIR", dir.to_string_lossy().into_owned()),
            ("LOG", "warn".to_owned()),
        ],
    )
    .await;
    let t = Instant::now();
    let first = api.get("/stats", &[]).await;
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
    ensure!(first.status == 200, "{first:?}");
    let mut warm = Vec::with_capacity(STATS_REQUESTS);
    for _ in 0..STATS_REQUESTS {
        let t = Instant::now();
        let answer = api.get("/stats", &[]).await;
        warm.push(t.elapsed().as_secs_f64() * 1000.0);
        ensure!(answer.status == 200);
    }
    warm.sort_by(f64::total_cmp);
    let warm_p50 = warm[warm.len() / 2];
    let t = Instant::now();
    sqlx::query(
        "SELECT name, score, count(*) FROM score_checks GROUP BY name, score
         UNION ALL SELECT 'aggregate', floor(score)::int2, count(*) FROM scores GROUP BY 2",
    )
    .fetch_all(&s.pool)
    .await?;
    let naive_ms = t.elapsed().as_secs_f64() * 1000.0;
    let how = "the naive /stats: the same distributions queried from score_checks and scores";
    Ok(vec![
        Row {
            what: "/stats answer time, figures cached (p50)".into(),
            unit: "ms",
            value: warm_p50,
            baseline: naive_ms,
            baseline_how: how.into(),
            better: Better::Lower,
            target: None,
            notes: format!("{STATS_REQUESTS} requests one at a time on loopback"),
        },
        Row {
            what: "/stats answer time, cold (first request after a publish)".into(),
            unit: "ms",
            value: cold_ms,
            baseline: naive_ms,
            baseline_how: how.into(),
            better: Better::Lower,
            target: None,
            notes: "reads and parses stats.json once".into(),
        },
    ])
}
