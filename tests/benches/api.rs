//! The api under load, with 1,000,000 scored repositories in the database (`API_BENCH_REPOS` to
//! change): `GET /projects/...` and badge throughput and latency on loopback with `wrk` (Debian;
//! `dev/bench` installs it) against a naive server in the same run (one query, the JSON parsed
//! and re-serialised, a default pool); the storage cost of scorecard's full output per result;
//! and `POST .../scan` → score row and a never-scored repository's `GET` (discovery) → score row
//! latency, idle and while 10,000 scheduled items wait (the whole fleet, release binaries, scans
//! simulated).
//!
//! Run with `dev/bench`, or `cargo build --release --workspace --bins && cargo bench -p
//! fleet-tests --bench api` once `dev/stack up` is up. Prints a table and writes
//! `target/bench-api.json`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleet_runtime::topology::TopologyArgs;
use fleet_tests::api_server::{self, ApiServer};
use fleet_tests::fleet::Fleet;
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::results::repo_list;
use fleet_tests::scratch::{Scratch, Stack};
use fleet_tests::stack;
use sqlx::PgPool;

const REPOS_DEFAULT: i64 = 1_000_000;
/// Rows of `score_raw` written to measure its size per result.
const RAW_SAMPLE: i64 = 100_000;
const LOAD_SECONDS: u32 = 15;
const CONNECTIONS: u32 = 32;
/// Scheduled items waiting while the scan requests are made.
const BACKLOG: usize = 10_000;
const SCAN_REQUESTS: usize = 40;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let repos: i64 = std::env::var("API_BENCH_REPOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REPOS_DEFAULT);
    let wrk = stack::tool("wrk");
    let stack = Stack::connect().await?;
    let machine = report::host();
    println!("# scorecard-fleet api bench\n");
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!();

    let mut rows = stack
        .scratch("api", async |s: &Scratch| {
            let t = Instant::now();
            populate(&s.pool, repos).await?;
            eprintln!(
                "{repos} scored repositories written in {:.0} s",
                t.elapsed().as_secs_f64()
            );
            let mut rows = storage(&s.pool).await?;
            rows.extend(load(&wrk, &s.pool, repos).await?);
            Ok(rows)
        })
        .await?;
    // For exploring: API_BENCH_ONLY_GET=1 skips the fleet part.
    if std::env::var_os("API_BENCH_ONLY_GET").is_none() {
        rows.extend(scan_latency(&stack).await?);
    }

    let took = started.elapsed();
    println!("{}", report::markdown(&rows));
    for r in &rows {
        println!("- {}: {}", r.what, r.notes);
    }
    let path = report::write_json(
        "api",
        &machine,
        &rows,
        serde_json::json!({ "repos": repos }),
        took,
    )?;
    println!(
        "\nwhole bench: {:.0} s; written to {}",
        took.as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// The fixtures' outputs with the repository name left as a placeholder.
fn templates() -> Vec<String> {
    fleet_tests::fixtures::scorecard_outputs()
        .into_iter()
        .map(|(_, line)| {
            let mut json: serde_json::Value = serde_json::from_str(&line).expect("fixture JSON");
            json["repo"]["name"] = "@@NAME@@".into();
            json.to_string()
        })
        .collect()
}

fn path_of(i: i64) -> String {
    format!("/projects/github.com/bench-o{}/r{i}", i % 10_000)
}

/// `repos` repositories, each with a latest result (a fixture's output under its own name),
/// generated inside PostgreSQL in chunks.
async fn populate(pool: &PgPool, repos: i64) -> anyhow::Result<()> {
    let t = templates();
    ensure!(t.len() >= 3, "three fixture outputs");
    const CHUNK: i64 = 100_000;
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
                                 scorecard_commit, scored_at, exit_code, raw_json)
             SELECT r.id, 'bench-' || r.id, (r.id % 101) / 10.0, md5(r.id::text) || '00000000',
                    'v5.3.0', 'c', now(), 0,
                    replace((ARRAY[$3, $4, $5])[1 + r.id % 3], '@@NAME@@', r.repo_key)
             FROM repos r WHERE r.id BETWEEN $1 AND $2",
        )
        .bind(from)
        .bind(to)
        .bind(&t[0])
        .bind(&t[1])
        .bind(&t[2])
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        from = to + 1;
    }
    sqlx::query("ANALYZE repos, scores").execute(pool).await?;
    Ok(())
}

async fn relation_bytes(pool: &PgPool, table: &str) -> anyhow::Result<f64> {
    let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
        .bind(table)
        .fetch_one(pool)
        .await?;
    Ok(bytes as f64)
}

/// What scorecard's full output costs per result: `scores` (the latest, in full) and
/// `score_raw` (every result, for the retention), with their indexes.
async fn storage(pool: &PgPool) -> anyhow::Result<Vec<Row>> {
    let repos: i64 = sqlx::query_scalar("SELECT count(*) FROM scores")
        .fetch_one(pool)
        .await?;
    let scores = relation_bytes(pool, "scores").await? / repos as f64;
    let sample = RAW_SAMPLE.min(repos);
    sqlx::query(
        "INSERT INTO score_raw (work_id, repo_id, commit_sha, scored_at, raw_json)
         SELECT work_id, repo_id, commit_sha, scored_at, raw_json FROM scores
         ORDER BY repo_id LIMIT $1",
    )
    .bind(sample)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE score_raw")
        .execute(pool)
        .await?;
    let raw = relation_bytes(pool, "score_raw").await? / sample as f64;
    let uncompressed: f64 =
        sqlx::query_scalar("SELECT avg(octet_length(raw_json))::float8 FROM score_raw")
            .fetch_one(pool)
            .await?;
    let gb = |per: f64| per * 1e6 / 1e9;
    let notes = format!(
        "{raw:.0} bytes a result in score_raw with its indexes ({:.0} bytes of JSON each, lz4 in the row): \
         {:.2} GB per million results; 90 days at one result per 14 days (~6.4 results) is {:.1} GB per \
         million repositories, a year (26) {:.1} GB; scores itself {scores:.0} bytes a repository \
         ({:.2} GB per million)",
        uncompressed,
        gb(raw),
        gb(raw) * 90.0 / 14.0,
        gb(raw) * 26.0,
        gb(scores),
    );
    eprintln!("storage: {notes}");
    Ok(vec![Row {
        what: "storage of scorecard's full output per result (score_raw, for `?commit=`)".into(),
        unit: "bytes/result",
        value: raw,
        baseline: uncompressed,
        baseline_how:
            "the JSON's own size (what a plain text column without compression would hold)".into(),
        better: Better::Lower,
        target: None,
        notes,
    }])
}

/// What `wrk` measured.
#[derive(Debug)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Load {
    fn text(&self) -> String {
        format!(
            "{} req/s, p50 {:.2} ms, p99 {:.2} ms{}",
            number(self.rps),
            self.p50_ms,
            self.p99_ms,
            if self.errors > 0 {
                format!(", {} non-2xx/3xx or socket errors", self.errors)
            } else {
                String::new()
            }
        )
    }
}

/// `wrk` at `base` for LOAD_SECONDS, each request a random one of `repos` repositories
/// (`suffix` appended to its path).
fn run_wrk(wrk: &std::path::Path, base: &str, repos: i64, suffix: &str) -> anyhow::Result<Load> {
    let script = std::env::temp_dir()
        .join(stack::unique("wrk"))
        .with_extension("lua");
    std::fs::write(
        &script,
        format!(
            "math.randomseed(42)\n\
             request = function()\n  local i = math.random(1, {repos})\n  \
             return wrk.format('GET', '/projects/github.com/bench-o' .. (i % 10000) .. '/r' .. i .. '{suffix}')\nend\n\
             done = function(summary, latency, requests)\n  \
             io.write(string.format('RESULT %f %f %f %d\\n', summary.requests / (summary.duration / 1e6), \
             latency:percentile(50) / 1000, latency:percentile(99) / 1000, \
             summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
        ),
    )?;
    let out = Command::new(wrk)
        .args([
            "-t",
            "2",
            "-c",
            &CONNECTIONS.to_string(),
            "-d",
            &format!("{LOAD_SECONDS}s"),
        ])
        .arg("-s")
        .arg(&script)
        .arg(base)
        .output()
        .context("running wrk")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("no result line in wrk's output: {text}"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() == 4, "wrk's result line: {line}");
    Ok(Load {
        rps: v[0],
        p50_ms: v[1],
        p99_ms: v[2],
        errors: v[3] as u64,
    })
}

/// The naive service: one query, the JSON parsed and serialised again, a pool as it comes.
async fn naive_project(
    State(pool): State<PgPool>,
    Path((platform, org, repo)): Path<(String, String, String)>,
) -> Response {
    let key = format!("{platform}/{org}/{repo}").to_lowercase();
    let row: Result<Option<String>, _> = sqlx::query_scalar(
        "SELECT s.raw_json FROM scores s JOIN repos r ON r.id = s.repo_id WHERE r.repo_key = $1",
    )
    .bind(&key)
    .fetch_optional(&pool)
    .await;
    match row {
        Ok(Some(raw)) => match serde_json::from_str::<serde_json::Value>(&raw) {
            Ok(v) => axum::Json(v).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The naive server on a default pool, in this process, under wrk.
async fn naive_run(wrk: &std::path::Path, pool: &PgPool, repos: i64) -> anyhow::Result<Load> {
    let naive_pool = PgPool::connect(&stack::database_url_of(pool)).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let naive_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/projects/{platform}/{org}/{repo}",
            axum::routing::get(naive_project),
        )
        .with_state(naive_pool.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (wrk, base) = (wrk.to_owned(), format!("http://{naive_addr}"));
    let naive = tokio::task::spawn_blocking(move || run_wrk(&wrk, &base, repos, "")).await??;
    server.abort();
    naive_pool.close().await;
    Ok(naive)
}

/// The better of two runs (this machine is noisy), and both as text.
fn best(a: Load, b: Load) -> (Load, String) {
    let text = format!("runs: {}; {}", a.text(), b.text());
    (if a.rps >= b.rps { a } else { b }, text)
}

async fn load(wrk: &std::path::Path, pool: &PgPool, repos: i64) -> anyhow::Result<Vec<Row>> {
    api_server::ensure_login(pool).await;
    // API_BENCH_API_ENV="K=V,K=V": settings of the api under test, for exploring.
    let mut env = vec![("LOG", "warn".to_owned())];
    let extra = std::env::var("API_BENCH_API_ENV").unwrap_or_default();
    for pair in extra.split(',').filter(|p| !p.is_empty()) {
        if let Some((k, v)) = pair.split_once('=') {
            env.push((k, v.to_owned()));
        }
    }
    let api = ApiServer::start(&api_server::url_as_login(pool), &env).await;
    let sample = api.get(&path_of(repos / 2), &[]).await;
    ensure!(sample.status == 200, "the api answers: {sample:?}");
    let base = format!("http://{}", api.addr);
    let api_run = |suffix: &'static str| {
        let (wrk, base) = (wrk.to_owned(), base.clone());
        tokio::task::spawn_blocking(move || run_wrk(&wrk, &base, repos, suffix))
    };
    // Two rounds, alternating, so neither side has the quieter minute.
    let naive_1 = naive_run(wrk, pool, repos).await?;
    let get_1 = api_run("").await??;
    let naive_2 = naive_run(wrk, pool, repos).await?;
    let get_2 = api_run("").await??;
    let badge = api_run("/badge").await??;
    let (naive, naive_runs) = best(naive_1, naive_2);
    let (get, get_runs) = best(get_1, get_2);
    eprintln!(
        "naive GET {naive_runs}\napi GET {get_runs}\napi badge: {}",
        badge.text()
    );
    ensure!(
        get.errors == 0 && badge.errors == 0,
        "the api answered errors: {} / {}",
        get.text(),
        badge.text()
    );
    let how = format!(
        "a naive server in the same run: one query, the JSON parsed and re-serialised, a default \
         pool; best of two, {naive_runs}"
    );
    let setup = format!(
        "{} scored repositories, random ones, wrk -t2 -c{CONNECTIONS} for {LOAD_SECONDS} s on loopback, all on the same 2 cores",
        number(repos as f64)
    );
    Ok(vec![
        Row {
            what: format!("api GET /projects/... throughput ({setup})"),
            unit: "req/s",
            value: get.rps,
            baseline: naive.rps,
            baseline_how: how.clone(),
            better: Better::Higher,
            target: Some(10_000.0),
            notes: format!("best of two, {get_runs}"),
        },
        Row {
            what: "api GET /projects/... p99 latency (same load)".into(),
            unit: "ms",
            value: get.p99_ms,
            baseline: naive.p99_ms,
            baseline_how: how,
            better: Better::Lower,
            target: Some(10.0),
            notes: get.text(),
        },
        Row {
            what: "api GET .../badge throughput (same load)".into(),
            unit: "req/s",
            value: badge.rps,
            baseline: naive.rps,
            baseline_how: "the naive server's GET /projects/... (a badge needs less than a result)"
                .into(),
            better: Better::Higher,
            target: None,
            notes: badge.text(),
        },
    ])
}

/// How a bench request asks for a scan.
#[derive(Clone, Copy)]
enum Ask<'a> {
    /// `POST .../scan` with this key: the manual lane.
    Post(&'a str),
    /// `GET` of a repository never scored: the discovery lane.
    Discover,
}

/// `count` requests 250 ms apart for repositories new to the database, and the seconds from
/// each request to its score row (the sink's write time).
async fn ask_and_wait(
    api: &ApiServer,
    pool: &PgPool,
    ask: Ask<'_>,
    label: &str,
    count: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut asked = Vec::new();
    for i in 0..count {
        let at = chrono::Utc::now();
        let path = format!("/projects/github.com/sim-ok-bench/{label}-{i}");
        match ask {
            Ask::Post(key) => {
                let auth = format!("Bearer {key}");
                let answer = api
                    .post(&format!("{path}/scan"), &[("authorization", &auth)])
                    .await;
                ensure!(answer.status == 202, "scan request: {answer:?}");
            }
            Ask::Discover => {
                let answer = api.get(&path, &[]).await;
                ensure!(
                    answer.status == 404 && answer.body.contains("its scan is queued now"),
                    "discovery: {answer:?}"
                );
            }
        }
        asked.push((format!("github.com/sim-ok-bench/{label}-{i}"), at));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let keys: Vec<String> = asked.iter().map(|(k, _)| k.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT r.repo_key, s.updated_at FROM scores s JOIN repos r ON r.id = s.repo_id
             WHERE r.repo_key = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(pool)
        .await?;
        if rows.len() == keys.len() {
            return Ok(rows
                .iter()
                .map(|(k, written)| {
                    let at = asked
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, t)| *t)
                        .unwrap_or(*written);
                    (*written - at).as_seconds_f64()
                })
                .collect());
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {count} requests never got a score",
            keys.len() - rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// p50 and p99 of `seconds`.
fn percentiles(mut seconds: Vec<f64>) -> (f64, f64) {
    seconds.sort_by(f64::total_cmp);
    let pct = |p: f64| seconds[((seconds.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.99))
}

/// A person's request to the score row while BACKLOG scheduled items wait, for `POST .../scan`
/// (the manual lane) and for a `GET` of a repository never scored (the discovery lane): the
/// fleet runs (producer, two workers, sink, the stand-in), the api queues requests for
/// repositories new to the database, and each one's score row is looked for.
async fn scan_latency(stack: &Stack) -> anyhow::Result<Vec<Row>> {
    let args = TopologyArgs {
        work_max_deliver: 1,
        work_ack_wait_secs: 60,
        ..Default::default()
    };
    let backlog: Vec<_> = repo_list().into_iter().take(BACKLOG).collect();
    ensure!(
        backlog.len() == BACKLOG,
        "the fixture list has {} repositories",
        backlog.len()
    );
    stack
        .scratch_with("api-scan", args, async |s: &Scratch| {
            producer::import::write(&s.pool, &backlog).await?;
            let db = s.opts.get_database().unwrap_or_default().to_owned();
            let extra = std::env::var("API_BENCH_FLEET_ENV").unwrap_or_default();
            let mut env = vec![
                ("JOB_DEADLINE_SECS", "30"),
                ("PRODUCER_BACKOFF_CAP_SECS", "1"),
                ("SINK_BATCH_WAIT_MS", "200"),
                ("WORKER_MAX_IN_FLIGHT", "20"),
                ("WORKER_POLL_MS", "200"),
            ];
            // API_BENCH_FLEET_ENV="K=V,K=V": fleet settings, for exploring.
            env.extend(extra.split(',').filter_map(|p| p.split_once('=')));
            let mut fleet = Fleet::prepare(&stack::database_url_for(&db), &stack::nats_url(), s.topology.clone(), &env).await;
            fleet.start("sink", "sink", &["run"]);
            fleet.start("worker-1", "worker", &[]);
            fleet.start("worker-2", "worker", &[]);
            let keys = std::env::temp_dir().join(stack::unique("bench-keys"));
            let key = "bench-key-0123456789abcdef";
            std::fs::write(&keys, format!("bench:{key}\n"))?;
            api_server::ensure_login(&s.pool).await;
            let api = ApiServer::start(
                &api_server::url_as_login(&s.pool),
                &[
                    ("LOG", "warn".into()),
                    ("NATS_PREFIX", s.topology.args().nats_prefix.clone()),
                    ("API_KEYS_FILE", keys.display().to_string()),
                    ("API_SCAN_REQUESTS_PER_MINUTE", "1000".into()),
                    ("API_DISCOVERY_PER_CLIENT_PER_HOUR", "1000".into()),
                ],
            )
            .await;
            // The scan itself: requests to an idle fleet.
            let idle = ask_and_wait(&api, &s.pool, Ask::Post(key), "idle", SCAN_REQUESTS / 4).await?;
            let idle_found =
                ask_and_wait(&api, &s.pool, Ask::Discover, "idle-found", SCAN_REQUESTS / 4).await?;
            fleet.start("producer", "producer", &["run"]);
            // Wait until the scheduled lane is full.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let waiting = s.js.get_stream(s.topology.work_stream()).await?.get_info().await?.state.messages;
                if waiting as usize >= BACKLOG / 2 {
                    break;
                }
                ensure!(Instant::now() < deadline, "the producer filled the queue with only {waiting} items");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let busy = ask_and_wait(&api, &s.pool, Ask::Post(key), "busy", SCAN_REQUESTS).await?;
            let waiting_post = s.js.get_stream(s.topology.work_stream()).await?.get_info().await?.state.messages;
            let busy_found =
                ask_and_wait(&api, &s.pool, Ask::Discover, "busy-found", SCAN_REQUESTS).await?;
            let waiting_get = s.js.get_stream(s.topology.work_stream()).await?.get_info().await?.state.messages;
            drop(api);
            fleet.stop_all().await;
            let _ = std::fs::remove_file(keys);
            let row = |what: String, busy: Vec<f64>, idle: Vec<f64>, waiting: u64| {
                let max = busy.iter().copied().fold(0.0, f64::max);
                let (p50, p99) = percentiles(busy);
                let (idle_p50, idle_p99) = percentiles(idle);
                Row {
                    what,
                    unit: "s",
                    value: p99,
                    baseline: idle_p99,
                    baseline_how: format!(
                        "the scan itself: the same requests to the idle fleet (p50 {idle_p50:.2} s, p99 {idle_p99:.2} s)"
                    ),
                    better: Better::Lower,
                    target: Some(idle_p99 + 2.0),
                    notes: format!(
                        "{SCAN_REQUESTS} requests 250 ms apart, p50 {p50:.2} s, p99 {p99:.2} s, max {max:.2} s, behind {waiting} scheduled items still queued at the end; idle fleet p50 {idle_p50:.2} s, p99 {idle_p99:.2} s; the fleet adds {:.2} s at p50 and {:.2} s at p99 over the idle fleet",
                        p50 - idle_p50,
                        p99 - idle_p99
                    ),
                }
            };
            Ok(vec![
                row(
                    format!(
                        "POST .../scan → score row, p99, with {} scheduled items queued (2 workers x 20 in flight, scans simulated: the stand-in ends a pod as soon as it runs)",
                        number(BACKLOG as f64)
                    ),
                    busy,
                    idle,
                    waiting_post,
                ),
                row(
                    "GET of a repository never scored (discovery) → score row, p99, same backlog and fleet".into(),
                    busy_found,
                    idle_found,
                    waiting_get,
                ),
            ])
        })
        .await
}
