//! The export binary against the stack's PostgreSQL and NATS, its files read by readers no one
//! here wrote: DuckDB and pyarrow from the directory, polars over HTTP from the api.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_runtime::db::Timeouts;
use fleet_runtime::topology::{Topology, TopologyArgs};
use fleet_tests::api_server::{self, ApiServer};
use fleet_tests::results::{repo_list, result_for};
use fleet_tests::stack;
use serde_json::Value;
use sink::decode::Record;
use sink::schedule::Schedule;
use sqlx::PgPool;

/// Repositories scored; each has one to three scans on different days.
const REPOS: usize = 40;

fn schedule() -> Schedule {
    Schedule {
        interval: TimeDelta::days(14),
        jitter: TimeDelta::hours(24),
        missing_for: TimeDelta::days(7),
    }
}

/// A topology of the test's own, its events stream holding what the sink's outbox held.
async fn topology() -> (Topology, async_nats::jetstream::Context) {
    let client = async_nats::connect(stack::nats_url())
        .await
        .expect("NATS of the stack (dev/stack up)");
    let js = async_nats::jetstream::new(client);
    let topology = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("export"),
        ..Default::default()
    })
    .unwrap();
    topology.ensure(&js).await.expect("the topology");
    (topology, js)
}

/// Results through the sink's own write path, then its outbox's events onto the events stream
/// as the sink's publisher moves them.
async fn record(
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    topology: &Topology,
    results: Vec<Record>,
) {
    sink::upsert::write_batch(pool, Timeouts::default(), &results, &schedule(), true)
        .await
        .expect("writing the results");
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar("DELETE FROM score_events RETURNING payload")
        .fetch_all(pool)
        .await
        .unwrap();
    for payload in payloads {
        js.publish(topology.score_changed_subject(), payload.into())
            .await
            .unwrap()
            .await
            .expect("the event stored");
    }
}

/// `REPOS` repositories, repository `i` scanned `1 + i % 3` times, `days_ago + k` days back.
fn scans(repos: &[RepoName], days_ago: i64, tag: &str) -> Vec<Record> {
    let now = Utc::now();
    let mut records = Vec::new();
    for (i, repo) in repos.iter().enumerate() {
        for k in 0..=(i % 3) as i64 {
            let at: DateTime<Utc> = now - TimeDelta::days(days_ago + 2 - k) - TimeDelta::hours(1);
            records.push(Record::Result(result_for(
                repo,
                &format!("{tag}-{i}-{k}"),
                at,
                i + k as usize,
            )));
        }
    }
    records
}

/// The test's topology and directory, with [`REPOS`] repositories scanned `days_ago` days back
/// and their events published.
async fn seeded(
    pool: &PgPool,
    days_ago: i64,
) -> (
    Topology,
    async_nats::jetstream::Context,
    Vec<RepoName>,
    PathBuf,
) {
    let (topology, js) = topology().await;
    let repos: Vec<RepoName> = repo_list().into_iter().take(REPOS).collect();
    record(pool, &js, &topology, scans(&repos, days_ago, "first")).await;
    (topology, js, repos, scratch_dir())
}

/// The api as deploy/ runs it, serving the export in `dir`.
async fn api_serving(pool: &PgPool, dir: &Path) -> ApiServer {
    api_server::ensure_login(pool).await;
    ApiServer::start(
        &api_server::url_as_login(pool),
        &[("EXPORT_DIR", dir.to_string_lossy().into_owned())],
    )
    .await
}

/// Change events the events stream holds.
async fn events_in(js: &async_nats::jetstream::Context, topology: &Topology) -> u64 {
    let mut stream = js.get_stream(topology.events_stream()).await.unwrap();
    stream.info().await.unwrap().state.messages
}

fn export(pool: &PgPool, topology: &Topology, to: &Path) -> std::process::Child {
    Command::new(stack::workspace_binary("export"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", stack::database_url_of(pool))
        .env("NATS_URL", stack::nats_url())
        .env("NATS_PREFIX", topology.args().nats_prefix.clone())
        .env("EXPORT_TO", to)
        // Small batches and row groups, so a few dozen rows cross both boundaries.
        .env("EXPORT_BATCH_ROWS", "7")
        .env("EXPORT_ROW_GROUP_ROWS", "16")
        .env("LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the export")
}

fn export_done(pool: &PgPool, topology: &Topology, to: &Path) -> String {
    let out = export(pool, topology, to).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the export failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn read(args: &[&str]) -> Value {
    let out = Command::new(stack::tool("data-python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/read_export.py"
        ))
        .args(args)
        .output()
        .expect("running the readers (dev/web-tools installs them)");
    assert!(
        out.status.success(),
        "the readers failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the readers' JSON")
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(stack::unique("export"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// What PostgreSQL says, for the readers' answers to equal.
async fn truth(pool: &PgPool) -> Value {
    let (rows, avg, inconclusive): (i64, Option<f64>, i64) = sqlx::query_as(
        "SELECT count(*), avg(score)::float8, count(*) FILTER (WHERE score IS NULL) FROM scores",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let maintained: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM score_checks WHERE name = 'Maintained' AND score < 3",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let means: Vec<(String, Option<f64>)> =
        sqlx::query_as("SELECT name, avg(score)::float8 FROM score_checks GROUP BY name")
            .fetch_all(pool)
            .await
            .unwrap();
    let by_date: Vec<(String, i64)> = sqlx::query_as(
        "SELECT ((scored_at AT TIME ZONE 'UTC')::date)::text, count(*) FROM score_history GROUP BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let history_avg: Option<f64> =
        sqlx::query_scalar("SELECT avg(score)::float8 FROM score_history")
            .fetch_one(pool)
            .await
            .unwrap();
    serde_json::json!({
        "rows": rows, "avg_score": avg, "inconclusive": inconclusive,
        "maintained_below_3": maintained,
        "check_means": means.into_iter().collect::<BTreeMap<_, _>>(),
        "by_date": by_date.into_iter().collect::<BTreeMap<_, _>>(),
        "history_avg": history_avg,
    })
}

/// The check columns of `latest`: one per check scorecard documents.
fn check_columns() -> usize {
    fleet_proto::scorecard::CHECKS.len()
}

fn assert_readers_agree(found: &Value, truth: &Value, events: u64) {
    for file in found["files"].as_array().unwrap() {
        for check in ["bytes_ok", "sha256_ok", "rows_ok"] {
            assert_eq!(file[check], true, "{check} of {file}");
        }
    }
    let latest = &found["latest"];
    assert_eq!(latest["rows"], truth["rows"], "{latest}");
    assert_eq!(latest["pyarrow_rows"], truth["rows"]);
    assert!(close(
        latest["avg_score"].as_f64().unwrap(),
        truth["avg_score"].as_f64().unwrap()
    ));
    assert_eq!(latest["maintained_below_3"], truth["maintained_below_3"]);
    assert_eq!(latest["inconclusive"], truth["inconclusive"]);
    for (name, mean) in truth["check_means"].as_object().unwrap() {
        let column = name.to_ascii_lowercase().replace('-', "_");
        for (found, key) in [
            (&latest["check_means"][&column], &column),
            (&latest["long_check_means"][name], name),
        ] {
            match (found.as_f64(), mean.as_f64()) {
                (Some(a), Some(b)) => assert!(close(a, b), "{key}: {a} against {b}"),
                (a, b) => assert_eq!(a, b, "{key}"),
            }
        }
    }
    let pandas = &found["pandas"];
    assert_eq!(pandas["maintained_below_3"], truth["maintained_below_3"]);
    assert_eq!(
        pandas["check_means"].as_object().unwrap().len(),
        check_columns(),
        "pandas' numeric columns are the check columns: {pandas}"
    );
    for (column, mean) in pandas["check_means"].as_object().unwrap() {
        assert_eq!(
            mean.as_f64(),
            latest["check_means"][column].as_f64(),
            "{column}"
        );
    }
    let history_rows: i64 = truth["by_date"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert_eq!(pandas["history_rows"], history_rows);
    let history = &found["history"];
    assert_eq!(history["by_date_duckdb"], truth["by_date"], "{history}");
    assert_eq!(history["by_date_pyarrow"], truth["by_date"]);
    assert!(close(
        history["avg_score"].as_f64().unwrap(),
        truth["history_avg"].as_f64().unwrap()
    ));
    assert_eq!(found["events"]["rows"], events);
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn duckdb_and_pyarrow_read_every_file_with_postgresqls_counts_and_a_second_export_rewrites_only_touched_dates(
    pool: PgPool,
) {
    let (topology, js, repos, dir) = seeded(&pool, 5).await;

    let said = export_done(&pool, &topology, &dir);
    assert!(said.contains("export: published"), "{said}");
    let events = events_in(&js, &topology).await;
    assert!(
        events >= REPOS as u64,
        "one first-score event per repository at least"
    );
    let first = manifest(&dir);
    assert_readers_agree(
        &read(&["local", dir.to_str().unwrap()]),
        &truth(&pool).await,
        events,
    );

    // What the first export read was recorded hours ago (past the export's margin for
    // results still committing), so only dates touched since are written again.
    sqlx::query("UPDATE score_history SET recorded_at = recorded_at - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    // The events stream loses its oldest events to its age limit: the export keeps them.
    let first_half = events_in(&js, &topology).await / 2;
    js.get_stream(topology.events_stream())
        .await
        .unwrap()
        .purge()
        .sequence(first_half + 1)
        .await
        .unwrap();
    // A result recorded today for a scan six days ago (a date the first export wrote), and new
    // scans: those dates are written again, every other date is the same file.
    let late_at = Utc::now() - TimeDelta::days(6) - TimeDelta::hours(1);
    let late = Record::Result(result_for(&repos[0], "late", late_at, 1));
    record(&pool, &js, &topology, vec![late]).await;
    record(&pool, &js, &topology, scans(&repos[..5], -2, "today")).await;
    let published = first_half + events_in(&js, &topology).await;
    let said = export_done(&pool, &topology, &dir);
    let second = manifest(&dir);
    assert_ne!(first["snapshot"], second["snapshot"]);
    let history = |m: &Value| -> BTreeMap<String, String> {
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "history")
            .map(|f| {
                (
                    f["date"].as_str().unwrap().to_owned(),
                    f["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (before, after) = (history(&first), history(&second));
    let rewritten = late_at.date_naive().to_string();
    assert!(
        before.contains_key(&rewritten),
        "{rewritten} was in the first export"
    );
    for (date, sha) in &before {
        if *date == rewritten {
            assert_ne!(
                after.get(date),
                Some(sha),
                "{date} got a late result: written again"
            );
        } else {
            assert_eq!(
                after.get(date),
                Some(sha),
                "{date} is unchanged: the same file"
            );
            // Copied, not written again: a hard link to the first snapshot's file.
            let file = |m: &Value| {
                dir.join(m["snapshot"].as_str().unwrap())
                    .join(format!("history/date={date}/part-0.parquet"))
            };
            use std::os::unix::fs::MetadataExt as _;
            let inode = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
            assert_eq!(inode(file(&first)), inode(file(&second)), "{date} copied");
        }
    }
    assert!(
        said.contains(&format!("and {} copied", before.len() - 1)),
        "{said}"
    );
    assert_readers_agree(
        &read(&["local", dir.to_str().unwrap()]),
        &truth(&pool).await,
        published,
    );
    // The first snapshot stays for readers still in it; nothing older would.
    let kept: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| format!("snapshots/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every plan node that reads `table` in `plan` (EXPLAIN ANALYZE's JSON), with how many times it
/// ran.
fn scans_of<'a>(plan: &'a Value, table: &str, found: &mut Vec<(&'a str, u64)>) {
    if plan["Relation Name"] == table {
        let node = plan["Node Type"].as_str().unwrap_or("?");
        found.push((node, plan["Actual Loops"].as_u64().unwrap_or(0)));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans_of(child, table, found);
    }
}

/// The throughput shape of `latest`: its checks are read from `score_checks` in one pass, never
/// looked up once per repository. At 10,000,000 repositories `score_checks` is larger than memory,
/// and a lookup per repository in repository-name order is a random read each.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn latest_reads_score_checks_in_one_pass_however_many_repositories(pool: PgPool) {
    let (_topology, _js, repos, _dir) = seeded(&pool, 5).await;
    sqlx::query("ANALYZE repos, scores, score_checks")
        .execute(&pool)
        .await
        .unwrap();
    // The export's own statement, a constant.
    let explain: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        export::tables::LATEST
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    let plan = &explain[0]["Plan"];
    assert_eq!(
        plan["Actual Rows"].as_u64(),
        Some(repos.len() as u64),
        "one row per repository: {plan:#}"
    );
    let mut found = Vec::new();
    scans_of(plan, "score_checks", &mut found);
    assert!(!found.is_empty(), "latest reads score_checks: {plan:#}");
    assert!(
        found.iter().all(|&(_, loops)| loops == 1),
        "score_checks read once per repository rather than once ({found:?}): {plan:#}"
    );
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn an_export_killed_halfway_leaves_the_published_files_readable_and_the_next_one_cleans_up(
    pool: PgPool,
) {
    let (topology, js, repos, dir) = seeded(&pool, 5).await;
    export_done(&pool, &topology, &dir);
    let published = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let before = read(&["local", dir.to_str().unwrap()]);
    record(&pool, &js, &topology, scans(&repos, 1, "second")).await;

    // Held at the history, after latest.parquet of the new snapshot is written: a lock no
    // reader of score_history gets past until this transaction ends.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE score_history IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut child = export(&pool, &topology, &dir);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if fleet_tests::pg::waiting_on_locks(&pool).await > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before the lock"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export never reached the history"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let halfway: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("latest.parquet").exists())
        .collect();
    assert_eq!(
        halfway.len(),
        2,
        "the new snapshot's latest.parquet is written: {halfway:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    blocker.rollback().await.unwrap();

    assert_eq!(
        std::fs::read_to_string(dir.join("manifest.json")).unwrap(),
        published,
        "the root manifest still names the published snapshot"
    );
    let after = read(&["local", dir.to_str().unwrap()]);
    assert_eq!(after, before, "the published export reads as it did");

    export_done(&pool, &topology, &dir);
    let kept = std::fs::read_dir(dir.join("snapshots")).unwrap().count();
    assert_eq!(
        kept, 2,
        "the half-written snapshot is removed; the published and the previous stay"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn polars_reads_latest_over_http_from_the_api_with_range_requests_and_the_same_answers(
    pool: PgPool,
) {
    let (topology, js, repos, dir) = seeded(&pool, 3).await;
    export_done(&pool, &topology, &dir);
    let api = api_serving(&pool, &dir).await;

    let both = read(&["http", &api.url(""), dir.to_str().unwrap()]);
    assert_eq!(both["http"], both["local"], "{both}");
    assert_eq!(both["http"]["rows"], REPOS);
    let metrics = fleet_tests::probe::get(api.ops, "/metrics")
        .await
        .unwrap()
        .1;
    let ranges: f64 = metrics
        .lines()
        .find(|l| l.starts_with("api_data_requests_total{answer=\"range\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no range requests counted:\n{metrics}"));
    assert!(ranges >= 2.0, "polars read by ranges: {ranges}");

    // The index lists every file of the manifest; each answers with its hash as ETag.
    let index = api.get("/data/", &[]).await.json();
    let listed = index["files"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        manifest(&dir)["files"].as_array().unwrap().len()
    );
    let latest = listed
        .iter()
        .find(|f| f["path"] == "latest.parquet")
        .unwrap();
    assert_eq!(latest["url"], "/data/latest.parquet");
    let etag = format!("\"{}\"", latest["sha256"].as_str().unwrap());
    let head = api
        .get("/data/latest.parquet", &[("range", "bytes=0-3")])
        .await;
    assert_eq!(head.status, 206, "{head:?}");
    assert_eq!(head.body, "PAR1");
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    let tail = api
        .get("/data/latest.parquet", &[("range", "bytes=-4")])
        .await;
    assert_eq!((tail.status, tail.body.as_str()), (206, "PAR1"));
    let unchanged = api
        .get("/data/latest.parquet", &[("if-none-match", &etag)])
        .await;
    assert_eq!(unchanged.status, 304);
    let missing = api.get("/data/../manifest.json", &[]).await;
    assert_eq!(missing.status, 404);
    let unknown = api.get("/data/history/nothing.parquet", &[]).await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .contains("GET /data/ lists them")
    );

    // A new export is served at the same paths at once.
    record(&pool, &js, &topology, scans(&repos[..3], -1, "more")).await;
    export_done(&pool, &topology, &dir);
    let again = api
        .get(
            "/data/latest.parquet",
            &[("if-none-match", &etag), ("range", "bytes=0-3")],
        )
        .await;
    assert_eq!(
        again.status, 206,
        "the new latest.parquet has another hash: {again:?}"
    );
    assert_ne!(again.header("etag"), Some(etag.as_str()));
    // A reader whose first read came from the old file learns that it changed, and never gets
    // a range of the new one in its place.
    let changed = api
        .get(
            "/data/latest.parquet",
            &[("if-match", &etag), ("range", "bytes=0-3")],
        )
        .await;
    assert_eq!(changed.status, 412, "{changed:?}");
    let stale = fleet_tests::probe::request(
        api.addr,
        "HEAD",
        "/data/latest.parquet",
        &[("if-range", &etag), ("range", "bytes=0-3")],
    )
    .await;
    assert_eq!(
        stale.status, 200,
        "a stale If-Range gets the whole file: {stale:?}"
    );
    let current = again.header("etag").unwrap().to_owned();
    let same = fleet_tests::probe::request(
        api.addr,
        "HEAD",
        "/data/latest.parquet",
        &[("if-range", &current), ("range", "bytes=0-3")],
    )
    .await;
    assert_eq!(same.status, 206, "{same:?}");
    // The first file stays reachable, unchanged, under its snapshot's path.
    let kept = latest["snapshot_url"].as_str().unwrap();
    let old = api.get(kept, &[("range", "bytes=0-3")]).await;
    assert_eq!((old.status, old.body.as_str()), (206, "PAR1"), "{old:?}");
    assert_eq!(old.header("etag"), Some(etag.as_str()));
    assert!(old.header("cache-control").unwrap().contains("immutable"));
    let unlisted = api
        .get(&kept.replace("latest.parquet", "../../manifest.json"), &[])
        .await;
    assert_eq!(unlisted.status, 404);
    std::fs::remove_dir_all(&dir).ok();
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_ecosystem_figures_come_from_the_export_and_render_as_charts_in_a_real_browser(
    pool: PgPool,
) {
    let (topology, _js, _repos, dir) = seeded(&pool, 3).await;
    sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name) VALUES ('github.com/fleet-test/never', 'github.com', 'fleet-test', 'never')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO work_failures (repo_id, work_id, class, message, attempts, failed_at)
         SELECT id, 'failed-once', 'SCAN_FAILED', 'repo unreachable', 1, now() FROM repos
         WHERE repo_key = 'github.com/fleet-test/never'",
    )
    .execute(&pool)
    .await
    .unwrap();
    export_done(&pool, &topology, &dir);
    let api = api_serving(&pool, &dir).await;

    // From the export's figures, not the score tables: with every table the figures come from
    // locked, the answer is there at once.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query(
        "LOCK TABLE repos, scores, score_checks, score_history, work_failures IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut *lock)
    .await
    .unwrap();
    let figures = tokio::time::timeout(Duration::from_secs(10), api.get("/stats", &[]))
        .await
        .expect("/stats answered while the score tables are locked");
    lock.rollback().await.unwrap();
    assert_eq!(figures.status, 200, "{figures:?}");
    assert!(figures.header("last-modified").is_some());
    let f = figures.json();
    let truth = truth(&pool).await;
    assert_eq!(f["coverage"]["repositories"], REPOS + 1);
    let failing: i64 = sqlx::query_scalar("SELECT count(*) FROM work_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((f["coverage"]["failing"].as_i64(), failing), (Some(1), 1));
    assert_eq!(f["coverage"]["scored"], truth["rows"]);
    assert_eq!(f["coverage"]["never_scored"], 1);
    assert_eq!(f["latest"]["results"], truth["rows"]);
    let binned: u64 = f["latest"]["score_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["results"].as_u64().unwrap())
        .sum();
    assert_eq!(
        binned + f["latest"]["inconclusive"].as_u64().unwrap(),
        REPOS as u64
    );
    let mean = f["latest"]["mean_score"].as_f64().unwrap();
    assert!(
        (mean - truth["avg_score"].as_f64().unwrap()).abs() < 0.006,
        "{mean} {truth}"
    );
    let maintained: Vec<u64> = f["latest"]["checks"]["Maintained"]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(
        maintained[..3].iter().sum::<u64>(),
        truth["maintained_below_3"].as_u64().unwrap()
    );
    // This week and the ones before: every scan of history is in one of them.
    let weekly: u64 = f["weeks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["results"].as_u64().unwrap())
        .sum();
    let scans: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(weekly, scans as u64);

    let shot = fleet_tests::report::target_dir().join("export-stats.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let dom = tokio::task::spawn_blocking({
        let url = api.url("/stats");
        move || fleet_tests::browser::browse(&url, &shot)
    })
    .await
    .unwrap();
    for id in ["score-histogram", "weekly-mean", "checks", "coverage"] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "{id} missing:\n{dom}"
        );
    }
    assert!(
        dom.contains("<div class=\"tile\" id=\"never-scored\"><b>1</b>"),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "no script on the page");
    for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(
            !dom.contains(external),
            "no external asset ({external}) on the page"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
