//! The api binary against the stack's PostgreSQL (a fresh database per test, written by the
//! sink's own write path), connected as a login of the read-only role `scorecard_api`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_proto::v1::{WorkItem, WorkReason};
use fleet_runtime::db::Timeouts;
use fleet_runtime::topology::{Topology, TopologyArgs};
use fleet_tests::api_server::{self, ApiServer};
use fleet_tests::browser::browse;
use fleet_tests::results::{repo_list, result_at_commit};
use fleet_tests::stack;
use prost::Message as _;
use sink::decode::Record;
use sink::schedule::Schedule;
use sqlx::PgPool;

const ALPHA: &str = "github.com/Fleet-Test/Alpha";
const NEVER: &str = "github.com/fleet-test/never-scored";
/// Alpha's three scans, oldest first: (commit, days ago, fixture variant).
const ALPHA_SCANS: [(&str, i64, usize); 3] = [
    ("1111111111111111111111111111111111111111", 30, 0),
    ("2222222222222222222222222222222222222222", 15, 1),
    ("3333333333333333333333333333333333333333", 0, 2),
];
/// Repositories with one scan each, so rankings need several pages.
const OTHERS: usize = 60;

fn schedule() -> Schedule {
    Schedule {
        interval: TimeDelta::days(14),
        jitter: TimeDelta::hours(24),
        missing_for: TimeDelta::days(7),
    }
}

/// Alpha with three scans, [`OTHERS`] repositories with one, one repository never scored; all
/// through the sink's write path. Returns the other repositories.
async fn seed(pool: &PgPool) -> Vec<RepoName> {
    let alpha = RepoName::parse(ALPHA).unwrap();
    let now = Utc::now();
    let mut records = Vec::new();
    for (i, (commit, days, variant)) in ALPHA_SCANS.iter().enumerate() {
        let at = now - TimeDelta::days(*days) - TimeDelta::minutes(5);
        records.push(Record::Result(result_at_commit(
            &alpha,
            &format!("alpha-{i}"),
            at,
            *variant,
            Some(commit),
        )));
    }
    let others: Vec<RepoName> = repo_list().into_iter().take(OTHERS).collect();
    for (i, repo) in others.iter().enumerate() {
        let at = now - TimeDelta::hours(i as i64 + 1);
        records.push(Record::Result(result_at_commit(
            repo,
            &format!("other-{i}"),
            at,
            i,
            None,
        )));
    }
    sink::upsert::write_batch(pool, Timeouts::default(), &records, &schedule(), false)
        .await
        .expect("writing the results");
    sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name) VALUES ($1, 'github.com', 'fleet-test', 'never-scored')",
    )
    .bind(NEVER.to_ascii_lowercase())
    .execute(pool)
    .await
    .unwrap();
    others
}

async fn api_on(pool: &PgPool, env: &[(&str, String)]) -> ApiServer {
    api_server::ensure_login(pool).await;
    ApiServer::start(&api_server::url_as_login(pool), env).await
}

async fn raw_of(pool: &PgPool, work_id: &str) -> String {
    sqlx::query_scalar("SELECT raw_json FROM score_raw WHERE work_id = $1")
        .bind(work_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// 400 or 404 with `{"code", "message"}` saying `says`.
fn assert_error(answer: &fleet_tests::probe::Answer, status: u16, says: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["code"], status, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_public_api_answers_in_scorecards_shape_with_caching_and_clear_errors(pool: PgPool) {
    seed(&pool).await;
    // Discovery (a GET of an unknown repository queues its scan) has tests of its own.
    let api = api_on(&pool, &[("API_DISCOVERY", "false".into())]).await;

    // Any case finds the repository; the body is the stored output, byte for byte.
    let latest = api.get("/projects/github.com/FLEET-TEST/alpha", &[]).await;
    assert_eq!(latest.status, 200, "{latest:?}");
    assert_eq!(latest.body, raw_of(&pool, "alpha-2").await);
    let json = latest.json();
    for field in ["date", "repo", "scorecard", "score", "checks", "metadata"] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
    assert_eq!(json["repo"]["commit"], ALPHA_SCANS[2].0);
    assert!(json["checks"][0]["documentation"]["url"].is_string());
    assert_eq!(latest.header("content-type"), Some("application/json"));
    assert_eq!(latest.header("cache-control"), Some("public, max-age=300"));
    let etag = latest.header("etag").expect("an ETag").to_owned();
    assert_eq!(etag, "\"alpha-2\"");

    let again = api
        .get(
            "/projects/github.com/fleet-test/Alpha",
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, 304, "{again:?}");
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // Last-Modified is the scan's date; If-Modified-Since answers as If-None-Match does, and
    // If-None-Match wins when both are sent.
    let scanned: chrono::DateTime<Utc> = sqlx::query_scalar(
        "SELECT s.scored_at FROM scores s JOIN repos r ON r.id = s.repo_id WHERE r.repo_key = $1",
    )
    .bind(ALPHA.to_ascii_lowercase())
    .fetch_one(&pool)
    .await
    .unwrap();
    let modified = scanned.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    assert_eq!(latest.header("last-modified"), Some(modified.as_str()));
    let since = |t: chrono::DateTime<Utc>| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    for (when, status) in [
        (since(scanned), 304),
        (since(scanned + TimeDelta::days(1)), 304),
        (since(scanned - TimeDelta::seconds(1)), 200),
        ("not a date".to_owned(), 200),
    ] {
        let answer = api
            .get(
                "/projects/github.com/fleet-test/alpha",
                &[("if-modified-since", &when)],
            )
            .await;
        assert_eq!(answer.status, status, "If-Modified-Since {when}");
    }
    let both = api
        .get(
            "/projects/github.com/fleet-test/alpha",
            &[
                ("if-modified-since", &since(scanned)),
                ("if-none-match", "\"alpha-1\""),
            ],
        )
        .await;
    assert_eq!(both.status, 200, "a stale ETag outweighs the date");
    let other = api
        .get(
            "/projects/github.com/fleet-test/alpha",
            &[("if-none-match", "\"alpha-1\"")],
        )
        .await;
    assert_eq!(other.status, 200);

    // An older commit's full result; its commit in upper case too.
    let older = api
        .get(
            &format!(
                "/projects/github.com/fleet-test/alpha?commit={}",
                ALPHA_SCANS[0].0.to_uppercase()
            ),
            &[],
        )
        .await;
    assert_eq!(older.status, 200, "{older:?}");
    assert_eq!(older.body, raw_of(&pool, "alpha-0").await);
    assert_eq!(older.header("etag"), Some("\"alpha-0\""));
    let current = api
        .get(
            &format!(
                "/projects/github.com/fleet-test/alpha?commit={}",
                ALPHA_SCANS[2].0
            ),
            &[],
        )
        .await;
    assert_eq!(current.body, latest.body);

    let missing = "4".repeat(40);
    assert_error(
        &api.get(
            &format!("/projects/github.com/fleet-test/alpha?commit={missing}"),
            &[],
        )
        .await,
        404,
        "has no result for commit 4444",
    );
    assert_error(
        &api.get("/projects/github.com/fleet-test/alpha?commit=HEAD", &[])
            .await,
        400,
        "expected 40 hexadecimal digits",
    );
    // A name the public API would not find is a 404 there, with the helpful message kept.
    assert_error(
        &api.get("/projects/gitlab.com/fleet-test/alpha", &[]).await,
        404,
        "only github.com repositories are supported",
    );
    for not_a_path in [
        "/projects/github.com/fleet-test/alpha.git",
        "/projects/github.com/fleet-test/alpha%2F",
        "/projects/GitHub.com/fleet-test/alpha",
    ] {
        assert_error(
            &api.get(not_a_path, &[]).await,
            404,
            "is not a repository path",
        );
    }
    // A segment that does not decode (not UTF-8) is as unknown to the public API.
    for undecodable in [
        "/projects/github.com/fleet-test/%FF",
        "/projects/github.com/%FF/alpha/history",
    ] {
        assert_error(
            &api.get(undecodable, &[]).await,
            404,
            "is not a repository path",
        );
    }
    assert_error(
        &api.get("/projects/github.com/-bad-/alpha", &[]).await,
        404,
        "owner \"-bad-\" is invalid",
    );
    assert_error(
        &api.get("/projects/github.com/-bad-/alpha/history", &[])
            .await,
        404,
        "owner \"-bad-\" is invalid",
    );
    assert_error(
        &api.get("/projects/github.com/fleet-test/nobody-knows", &[])
            .await,
        404,
        "is not known to this service",
    );
    assert_error(
        &api.get("/projects/github.com/fleet-test/never-scored", &[])
            .await,
        404,
        "has not been scored yet",
    );
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn badges_show_the_score_band_in_every_style_and_grey_for_unknown(pool: PgPool) {
    seed(&pool).await;
    let api = api_on(&pool, &[("API_DISCOVERY", "false".into())]).await;
    let score: f64 = sqlx::query_scalar(
        "SELECT s.score::float8 FROM scores s JOIN repos r ON r.id = s.repo_id WHERE r.repo_key = $1",
    )
    .bind(ALPHA.to_ascii_lowercase())
    .fetch_one(&pool)
    .await
    .unwrap();
    let shown = format!("{score:.1}");
    let colour = api::badge::colour(Some(score));

    let flat = api
        .get("/projects/github.com/fleet-test/alpha/badge", &[])
        .await;
    assert_eq!(flat.status, 200);
    assert_eq!(flat.header("content-type"), Some("image/svg+xml"));
    assert!(flat.body.starts_with("<svg"), "{}", flat.body);
    assert!(flat.body.contains(&format!(">{shown}<")), "{}", flat.body);
    assert!(flat.body.contains("openssf scorecard"));
    assert!(flat.body.contains(colour), "{colour} in {}", flat.body);
    assert_eq!(flat.header("cache-control"), Some("public, max-age=300"));
    let etag = flat.header("etag").unwrap().to_owned();
    let cached = api
        .get(
            "/projects/github.com/fleet-test/alpha/badge",
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(cached.status, 304);

    let mut etags = HashSet::new();
    for style in ["flat", "flat-square", "plastic", "for-the-badge", "social"] {
        let b = api
            .get(
                &format!("/projects/github.com/fleet-test/alpha/badge?style={style}"),
                &[],
            )
            .await;
        assert_eq!(b.status, 200, "{style}: {b:?}");
        assert!(
            b.body.to_lowercase().contains(&format!(": {shown}")),
            "{style}: {}",
            b.body
        );
        etags.insert(b.header("etag").unwrap().to_owned());
    }
    assert_eq!(
        etags.len(),
        5,
        "each style is its own representation: {etags:?}"
    );

    let unknown = api
        .get("/projects/github.com/fleet-test/nobody-knows/badge", &[])
        .await;
    assert_eq!(unknown.status, 200);
    assert!(
        unknown.body.contains(">unknown<") && unknown.body.contains("#9f9f9f"),
        "{}",
        unknown.body
    );
    // Every answer is a badge, errors included: an <img> shows it, not a broken image.
    for (path, status, says) in [
        (
            "/projects/github.com/fleet-test/alpha/badge?style=neon",
            400,
            ">invalid style neon<",
        ),
        (
            "/projects/github.com/-bad-/alpha/badge",
            404,
            ">invalid repo path<",
        ),
        (
            "/projects/gitlab.com/fleet-test/alpha/badge",
            404,
            ">invalid repo path<",
        ),
        (
            "/projects/github.com/fleet-test/alpha.git/badge",
            404,
            ">invalid repo path<",
        ),
        (
            "/projects/github.com/%FF/alpha/badge",
            404,
            ">invalid repo path<",
        ),
        (
            "/projects/github.com/fleet-test/never-scored/badge",
            200,
            ">not scored yet<",
        ),
    ] {
        let b = api.get(path, &[]).await;
        assert_eq!(b.status, status, "{path}: {b:?}");
        assert_eq!(b.header("content-type"), Some("image/svg+xml"), "{path}");
        assert!(
            b.body.starts_with("<svg") && b.body.contains(says),
            "{path}: {}",
            b.body
        );
    }
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn history_and_rankings_page_by_keyset_without_loss_or_repeats(pool: PgPool) {
    seed(&pool).await;
    let api = api_on(&pool, &[]).await;

    let first = api
        .get("/projects/github.com/fleet-test/alpha/history?limit=2", &[])
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    let first = first.json();
    assert_eq!(first["repo"], ALPHA);
    let commits: Vec<&str> = first["scans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["commit"].as_str().unwrap())
        .collect();
    assert_eq!(
        commits,
        [ALPHA_SCANS[2].0, ALPHA_SCANS[1].0],
        "newest first"
    );
    assert!(first["scans"][0]["checks"].as_object().unwrap().len() > 5);
    let next = first["next"].as_str().expect("a next page").to_owned();
    let second = api
        .get(
            &format!("/projects/github.com/fleet-test/alpha/history?limit=2&before={next}"),
            &[],
        )
        .await
        .json();
    assert_eq!(second["scans"].as_array().unwrap().len(), 1);
    assert_eq!(second["scans"][0]["commit"], ALPHA_SCANS[0].0);
    assert!(second["next"].is_null(), "{second}");
    assert_error(
        &api.get(
            "/projects/github.com/fleet-test/alpha/history?before=yesterday",
            &[],
        )
        .await,
        400,
        "is not a cursor",
    );
    assert_error(
        &api.get("/projects/github.com/fleet-test/alpha/history?limit=0", &[])
            .await,
        400,
        "limit 0 is out of range",
    );

    // Every repository with a Code-Review score of at most 5, walked in pages of 7, equals the
    // database's own answer, in order.
    let expected: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.host || '/' || r.owner || '/' || r.name, c.score::int8 FROM score_checks c
         JOIN repos r ON r.id = c.repo_id
         WHERE c.name = 'Code-Review' AND c.score <= 5 ORDER BY c.score, c.repo_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        expected.len() > 14,
        "the seed gives several pages: {}",
        expected.len()
    );
    let mut walked = Vec::new();
    let mut after = None::<String>;
    loop {
        let path = match &after {
            Some(a) => format!("/checks/code-review?max_score=5&limit=7&after={a}"),
            None => "/checks/code-review?max_score=5&limit=7".to_owned(),
        };
        let page = api.get(&path, &[]).await;
        assert_eq!(page.status, 200, "{page:?}");
        let page = page.json();
        assert_eq!(page["check"], "Code-Review");
        for r in page["repos"].as_array().unwrap() {
            walked.push((
                r["repo"].as_str().unwrap().to_owned(),
                r["score"].as_i64().unwrap(),
            ));
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, expected);
    assert_error(
        &api.get("/checks/Code-Review?min_score=11", &[]).await,
        400,
        "min_score 11 is out of range",
    );
    assert_error(
        &api.get("/checks/No-Such-Check", &[]).await,
        404,
        "no repository has a result with check",
    );
    assert_error(
        &api.get("/checks/bad%20name", &[]).await,
        400,
        "is not a check name",
    );
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn status_says_what_sink_status_says(pool: PgPool) {
    seed(&pool).await;
    sqlx::query(
        "INSERT INTO work_failures (repo_id, work_id, class, message, attempts, failed_at)
         SELECT id, 'f-1', 'TIMEOUT', 'deadline', 1, now() FROM repos WHERE repo_key = $1",
    )
    .bind(NEVER.to_ascii_lowercase())
    .execute(&pool)
    .await
    .unwrap();
    let api = api_on(&pool, &[]).await;
    let status = api.get("/status", &[]).await;
    assert_eq!(status.status, 200, "{status:?}");
    let got = status.json();
    let want = fleet_runtime::status::status(
        &fleet_runtime::db::Db::new(pool.clone(), Default::default()),
        TimeDelta::days(14),
    )
    .await
    .unwrap();
    assert_eq!(got["repos"], want.repos);
    assert_eq!(got["repos"], (OTHERS + 2) as i64);
    assert_eq!(got["fresh"], want.fresh);
    assert_eq!(got["due_now"], want.due_now);
    assert_eq!(got["in_flight"], want.in_flight);
    assert_eq!(got["never_scored"], 1);
    assert_eq!(got["failures_by_class"]["TIMEOUT"], 1);
    assert_eq!(got["interval_days"], 14);
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_api_role_reads_and_asks_for_scans_and_can_change_nothing(pool: PgPool) {
    seed(&pool).await;
    api_server::ensure_login(&pool).await;
    let api = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&api_server::url_as_login(&pool))
        .await
        .expect("the api's login connects");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM scores")
        .fetch_one(&api)
        .await
        .unwrap();
    assert_eq!(n, (OTHERS + 1) as i64);
    for write in [
        "INSERT INTO repos (repo_key, host, owner, name) VALUES ('github.com/a/b', 'github.com', 'a', 'b')",
        "UPDATE repos SET next_due_at = now()",
        "DELETE FROM scores",
        "UPDATE scores SET score = 10",
        "DELETE FROM score_raw",
        "INSERT INTO score_history SELECT * FROM score_history LIMIT 1",
        "TRUNCATE work_failures",
        "DELETE FROM _sqlx_migrations",
        "CREATE TABLE mine (x int)",
        "SELECT * FROM score_events",
        "DELETE FROM discoveries",
        "UPDATE repos SET discovered = false, retired_at = NULL",
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(write))
            .execute(&api)
            .await
            .unwrap_err();
        let code = refused
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{write}: {refused}");
    }
    // Its one write: a scan request, which creates the repository and defers its schedule.
    sqlx::query(
        "SELECT request_scans(ARRAY['github.com/new/one'], ARRAY['new'], ARRAY['one'], '1 hour')",
    )
    .execute(&api)
    .await
    .expect("the api may ask for scans");
    let due: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT next_due_at FROM repos WHERE repo_key = 'github.com/new/one'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(due > Utc::now() + TimeDelta::minutes(55), "{due}");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn scan_requests_need_a_key_are_rate_limited_and_go_to_the_manual_lane(pool: PgPool) {
    seed(&pool).await;
    let client = async_nats::connect(stack::nats_url())
        .await
        .expect("the stack's NATS");
    let js = async_nats::jetstream::new(client);
    let prefix = stack::unique("api");
    let topology = Topology::new(TopologyArgs {
        nats_prefix: prefix.clone(),
        ..Default::default()
    })
    .unwrap();
    topology.ensure(&js).await.unwrap();
    let keys = std::env::temp_dir().join(stack::unique("api-keys"));
    let (ci_key, ops_key) = (
        "ci-key-5f0c1d2e3a4b5c6d7e8f",
        "ops-key-0a1b2c3d4e5f6a7b8c9d",
    );
    std::fs::write(
        &keys,
        format!("# who may ask\nci:{ci_key}\nops:{ops_key}\n"),
    )
    .unwrap();
    let api = api_on(
        &pool,
        &[
            ("NATS_PREFIX", prefix.clone()),
            ("API_KEYS_FILE", keys.display().to_string()),
            ("API_SCAN_REQUESTS_PER_MINUTE", "3".into()),
        ],
    )
    .await;
    let path = "/projects/github.com/Fleet-Test/Brand-New/scan";

    let anonymous = api.post(path, &[]).await;
    assert_error(&anonymous, 401, "a valid API key is needed");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert_error(
        &api.post(
            path,
            &[("authorization", "Bearer ci-key-5f0c1d2e3a4b5c6d7e8e")],
        )
        .await,
        401,
        "valid API key",
    );
    assert_error(
        &api.post(path, &[("authorization", ci_key)]).await,
        401,
        "valid API key",
    );
    let ci = format!("Bearer {ci_key}");
    assert_error(
        &api.post(
            "/projects/github.com/a..b/c/scan",
            &[("authorization", &ci)],
        )
        .await,
        400,
        "invalid",
    );

    let before = Utc::now();
    let accepted = api.post(path, &[("authorization", &ci)]).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let accepted = accepted.json();
    let work_id = accepted["work_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["repo"], "github.com/Fleet-Test/Brand-New");

    // On the manual lane, under its work id, and the repository exists with its schedule
    // pushed past the lease.
    let stream = js.get_stream(topology.work_stream()).await.unwrap();
    let message = stream
        .get_last_raw_message_by_subject(&topology.manual_subject())
        .await
        .expect("the request on the manual subject");
    let item = WorkItem::decode(message.payload.as_ref()).unwrap();
    assert_eq!(item.id, work_id);
    assert_eq!(item.repo, "github.com/Fleet-Test/Brand-New");
    assert_eq!(item.reason, WorkReason::Manual as i32);
    let due: chrono::DateTime<Utc> = sqlx::query_scalar(
        "SELECT next_due_at FROM repos WHERE repo_key = 'github.com/fleet-test/brand-new'",
    )
    .fetch_one(&pool)
    .await
    .expect("the repository was created");
    assert!(due >= before + TimeDelta::hours(23), "{due}");

    // Three a minute per key: the fourth is refused with when to come back; the other key
    // has its own budget.
    for _ in 0..2 {
        assert_eq!(
            api.post(
                "/projects/github.com/fleet-test/alpha/scan",
                &[("authorization", &ci)]
            )
            .await
            .status,
            202
        );
    }
    let limited = api
        .post(
            "/projects/github.com/fleet-test/alpha/scan",
            &[("authorization", &ci)],
        )
        .await;
    assert_error(&limited, 429, "key ci has used its scan requests");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=21).contains(&retry), "{retry}");
    let ops = format!("Bearer {ops_key}");
    assert_eq!(
        api.post(
            "/projects/github.com/fleet-test/alpha/scan",
            &[("authorization", &ops)]
        )
        .await
        .status,
        202
    );
    assert_eq!(stream.get_info().await.unwrap().state.messages, 4);

    let metrics = fleet_tests::probe::get(api.ops, "/metrics")
        .await
        .unwrap()
        .1;
    assert!(
        metrics.contains("api_scan_requests_total{result=\"accepted\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("api_scan_requests_total{result=\"rate_limited\"} 1"),
        "{metrics}"
    );
    let log = api.log_text();
    for key in [ci_key, ops_key] {
        assert!(
            !log.contains(key) && !metrics.contains(key),
            "a key leaked:\n{log}"
        );
    }
    assert!(log.contains("scan requested"), "{log}");
    drop(api);
    let _ = std::fs::remove_file(keys);
    for s in topology.streams() {
        let _ = js.delete_stream(&s.name).await;
    }
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_raw_history_is_kept_for_its_retention_and_no_longer(pool: PgPool) {
    seed(&pool).await;
    // A commit scanned again keeps one full output, its newest result's; an older result of
    // it, delivered late, changes nothing.
    let alpha = RepoName::parse(ALPHA).unwrap();
    let again = |work: &str, days: i64| {
        Record::Result(result_at_commit(
            &alpha,
            work,
            Utc::now() - TimeDelta::days(days),
            0,
            Some(ALPHA_SCANS[1].0),
        ))
    };
    let records = [again("alpha-1-newer", 10), again("alpha-1-older", 20)];
    sink::upsert::write_batch(&pool, Timeouts::default(), &records, &schedule(), false)
        .await
        .unwrap();
    let kept: Vec<(String, String)> = sqlx::query_as(
        "SELECT commit_sha, work_id FROM score_raw k JOIN repos r ON r.id = k.repo_id
         WHERE r.repo_key = $1 ORDER BY scored_at",
    )
    .bind(ALPHA.to_ascii_lowercase())
    .fetch_all(&pool)
    .await
    .unwrap();
    let one_per_commit: Vec<(String, String)> = [
        (ALPHA_SCANS[0].0, "alpha-0"),
        (ALPHA_SCANS[1].0, "alpha-1-newer"),
        (ALPHA_SCANS[2].0, "alpha-2"),
    ]
    .iter()
    .map(|(c, w)| ((*c).to_owned(), (*w).to_owned()))
    .collect();
    assert_eq!(kept, one_per_commit);
    // Alpha's commits were last scanned 30, 10 and 0 days ago: 20 days keeps two.
    let deleted = sink::prune_raw_once(&pool, Timeouts::default(), 20)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT work_id FROM score_raw WHERE work_id LIKE 'alpha-%' ORDER BY work_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kept, ["alpha-1-newer", "alpha-2"]);
    let api = api_on(&pool, &[("SINK_RAW_HISTORY_DAYS", "20".into())]).await;
    assert_error(
        &api.get(
            &format!(
                "/projects/github.com/fleet-test/alpha?commit={}",
                ALPHA_SCANS[0].0
            ),
            &[],
        )
        .await,
        404,
        "results are kept 20 days",
    );
    // History keeps every scan; only the full output goes.
    let history = api
        .get("/projects/github.com/fleet-test/alpha/history", &[])
        .await
        .json();
    assert_eq!(history["scans"].as_array().unwrap().len(), 5);
    let second = api
        .get(
            &format!(
                "/projects/github.com/fleet-test/alpha?commit={}",
                ALPHA_SCANS[1].0
            ),
            &[],
        )
        .await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.header("etag"), Some("\"alpha-1-newer\""));
    assert_eq!(
        sink::prune_raw_once(&pool, Timeouts::default(), 20)
            .await
            .unwrap(),
        0
    );
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_pages_render_in_a_real_browser(pool: PgPool) {
    seed(&pool).await;
    // One of the others, scored long ago: its page flags the result as stale.
    sqlx::query(
        "UPDATE scores SET scored_at = now() - interval '40 days'
         WHERE repo_id = (SELECT s.repo_id FROM scores s JOIN repos r ON r.id = s.repo_id
                          WHERE r.repo_key <> $1 ORDER BY s.repo_id DESC LIMIT 1)",
    )
    .bind(ALPHA.to_ascii_lowercase())
    .execute(&pool)
    .await
    .unwrap();
    // Another, older than one interval (14 days) but not two: not yet stale.
    sqlx::query(
        "UPDATE scores SET scored_at = now() - interval '20 days'
         WHERE repo_id = (SELECT s.repo_id FROM scores s JOIN repos r ON r.id = s.repo_id
                          WHERE r.repo_key <> $1 ORDER BY s.repo_id DESC OFFSET 1 LIMIT 1)",
    )
    .bind(ALPHA.to_ascii_lowercase())
    .execute(&pool)
    .await
    .unwrap();
    let api = api_on(&pool, &[("API_DISCOVERY", "false".into())]).await;
    let shots = fleet_tests::report::target_dir();
    std::fs::create_dir_all(&shots).unwrap();

    let dom = tokio::task::spawn_blocking({
        let url = api.url("/");
        let shot = shots.join("api-status.png");
        move || browse(&url, &shot)
    })
    .await
    .unwrap();
    assert!(
        dom.contains("<title>scorecard-fleet status</title>"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "<div class=\"tile\" id=\"repos\"><b>{}</b>repositories</div>",
            OTHERS + 2
        )),
        "{dom}"
    );
    assert!(
        dom.contains("<div class=\"tile\" id=\"never-scored\"><b>1</b>"),
        "{dom}"
    );
    assert!(dom.contains("action=\"/search\""), "{dom}");

    let page = tokio::task::spawn_blocking({
        let url = api.url("/projects/github.com/fleet-test/alpha");
        let shot = shots.join("api-repository.png");
        move || browse(&url, &shot)
    })
    .await
    .unwrap();
    assert!(
        page.contains(&format!("<h1 id=\"repo\">{ALPHA}</h1>")),
        "{page}"
    );
    let checks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM score_checks c JOIN repos r ON r.id = c.repo_id WHERE r.repo_key = $1",
    )
    .bind(ALPHA.to_ascii_lowercase())
    .fetch_one(&pool)
    .await
    .unwrap();
    let table = page
        .split("<table id=\"checks\">")
        .nth(1)
        .expect("the checks table");
    let table = table.split("</table>").next().unwrap();
    assert_eq!(
        table.matches("<tr>").count() as i64,
        checks + 1,
        "a row per check: {table}"
    );
    let reason: String = sqlx::query_scalar(
        "SELECT c.reason FROM score_checks c JOIN repos r ON r.id = c.repo_id WHERE r.repo_key = $1 ORDER BY c.name LIMIT 1",
    )
    .bind(ALPHA.to_ascii_lowercase())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        table.contains(&api::html::escape(&reason)),
        "{reason} in {table}"
    );
    let chart = page
        .split("<svg id=\"chart\"")
        .nth(1)
        .expect("the history chart");
    assert_eq!(
        chart.matches("class=\"point\"").count(),
        3,
        "a point per scan: {chart}"
    );
    assert!(page.contains("<polyline"), "{page}");
    // When it was scanned, at which commit and when it is due, in words read at a glance.
    let freshness = page
        .split("<p id=\"freshness\">")
        .nth(1)
        .expect("the freshness line");
    assert!(
        freshness.contains(&format!("at commit <code title=\"{}\">", ALPHA_SCANS[2].0)),
        "{freshness}"
    );
    assert!(freshness.contains("Next scan due <time"), "{freshness}");
    assert!(freshness.contains(" UTC</time>"), "{freshness}");
    assert!(
        !page.contains("id=\"stale\""),
        "a fresh result is not stale"
    );
    let (old_repo,): (String,) = sqlx::query_as(
        "SELECT r.owner || '/' || r.name FROM repos r JOIN scores s ON s.repo_id = r.id
         WHERE s.scored_at < now() - interval '30 days'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let stale = fleet_tests::browser::browse_to(
        api.url(&format!("/projects/github.com/{old_repo}")),
        "api-repository-stale.png",
    )
    .await;
    assert!(
        stale.contains("<p id=\"stale\" class=\"stale\">Stale: this result is 40 days old"),
        "{stale}"
    );
    let (older_repo,): (String,) = sqlx::query_as(
        "SELECT r.owner || '/' || r.name FROM repos r JOIN scores s ON s.repo_id = r.id
         WHERE s.scored_at BETWEEN now() - interval '25 days' AND now() - interval '15 days'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let older = api
        .get(
            &format!("/projects/github.com/{older_repo}"),
            &[("accept", "text/html")],
        )
        .await;
    assert_eq!(older.status, 200);
    assert!(
        older.body.contains("id=\"freshness\"") && !older.body.contains("id=\"stale\""),
        "20 days, under two intervals, is not stale: {}",
        older.body
    );

    // The search box leads to the page; a browser asking for an unknown repository gets a page.
    let found = api
        .get("/search?repo=github.com/fleet-test/alpha", &[])
        .await;
    assert_eq!(found.status, 303);
    assert_eq!(
        found.header("location"),
        Some("/projects/github.com/fleet-test/alpha")
    );
    let unknown = api
        .get(
            "/projects/github.com/fleet-test/nobody-knows",
            &[("accept", "text/html")],
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("not known to this service yet"));
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_service_keeps_its_openapi_contract_under_schemathesis(pool: PgPool) {
    seed(&pool).await;
    // The document's examples name github.com/ossf/scorecard: give them data to reach.
    let example = RepoName::parse("github.com/ossf/scorecard").unwrap();
    let result = result_at_commit(&example, "example-1", Utc::now(), 0, None);
    sink::upsert::write_batch(
        &pool,
        Timeouts::default(),
        &[Record::Result(result)],
        &schedule(),
        false,
    )
    .await
    .unwrap();
    let keys = std::env::temp_dir().join(stack::unique("api-keys"));
    let key = "contract-key-0123456789abcdef";
    std::fs::write(&keys, format!("contract:{key}\n")).unwrap();
    let client = async_nats::connect(stack::nats_url())
        .await
        .expect("the stack's NATS");
    let js = async_nats::jetstream::new(client);
    let prefix = stack::unique("api-contract");
    let topology = Topology::new(TopologyArgs {
        nats_prefix: prefix.clone(),
        ..Default::default()
    })
    .unwrap();
    topology.ensure(&js).await.unwrap();
    // An export to serve, so /stats and /data/ answer with their files too.
    let export_dir = std::env::temp_dir().join(stack::unique("api-contract-export"));
    let exported = std::process::Command::new(stack::workspace_binary("export"))
        .arg("run")
        .env("DATABASE_URL", stack::database_url_of(&pool))
        .env("NATS_URL", stack::nats_url())
        .env("NATS_PREFIX", &prefix)
        .env("EXPORT_TO", &export_dir)
        .output()
        .expect("running the export");
    assert!(exported.status.success(), "{exported:?}");
    let api = api_on(
        &pool,
        &[
            ("NATS_PREFIX", prefix),
            ("API_KEYS_FILE", keys.display().to_string()),
            ("EXPORT_DIR", export_dir.display().to_string()),
            // The /webhooks routes, on: without a key they answer 503, which is a 5xx.
            (
                "WEBHOOK_SIGNING_KEY",
                "contract-webhook-signing-key-0123456789".into(),
            ),
        ],
    )
    .await;
    let auth = format!("Authorization: Bearer {key}");
    let own = vec![
        api.url("/openapi.json"),
        "--checks".into(),
        "all".into(),
        "--exclude-checks".into(),
        "ignored_auth,positive_data_acceptance".into(),
        "--header".into(),
        auth,
    ];
    // The public Scorecard API's own spec, its GET paths with every check (positive data
    // accepted included): clients written
    // against it work here unchanged (a name it would not find is a 404, a badge is always SVG).
    let public = vec![
        fleet_tests::fixtures::dir()
            .join("api/scorecard-api-openapi.yaml")
            .display()
            .to_string(),
        "--url".into(),
        api.url(""),
        "--include-method".into(),
        "GET".into(),
        "--checks".into(),
        "all".into(),
        // Its POST is scorecard-action's signed upload, which this service does not serve,
        // so `Allow` rightly leaves it out.
        "--exclude-checks".into(),
        "allow_header_conformance".into(),
    ];
    for args in [own, public] {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(stack::tool("schemathesis"))
                .arg("run")
                .args(&args)
                .args([
                    "--max-examples",
                    "60",
                    // One worker: with two threads, Python 3.11's `ast` (which hypothesis calls
                    // to describe its filters) can fail spuriously with "AST constructor
                    // recursion depth mismatch" (CPython gh-106905), a crash of the tool
                    // reported as a broken contract.
                    "--workers",
                    "1",
                    "--no-color",
                    "--seed",
                    "20261202",
                ])
                .args(["--generation-database", "none"])
                .current_dir(std::env::temp_dir())
                .env("SCHEMATHESIS_HOOKS", "")
                .output()
                .expect("running schemathesis (dev/web-tools installs it)")
        })
        .await
        .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "schemathesis found a broken contract:\n{report}\napi log:\n{}",
            api.log_text()
        );
        assert!(
            !report.contains("5xx") && report.contains("passed"),
            "{report}"
        );
        println!("{report}");
    }
    let _ = std::fs::remove_file(keys);
    let _ = std::fs::remove_dir_all(export_dir);
    for s in topology.streams() {
        let _ = js.delete_stream(&s.name).await;
    }
}

/// The api on `pool`'s database through a proxy that counts round trips, with `env`.
async fn api_counting_round_trips(
    pool: &PgPool,
    env: &[(&str, String)],
) -> (ApiServer, fleet_tests::proxy::PgSyncCounter) {
    api_server::ensure_login(pool).await;
    let direct = api_server::url_as_login(pool);
    let (prefix, rest) = direct.rsplit_once('@').unwrap();
    let (host_port, database) = rest.split_once('/').unwrap();
    let upstream = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let counter = fleet_tests::proxy::PgSyncCounter::start(upstream).await;
    let url = format!("{prefix}@{}/{database}", counter.addr);
    (ApiServer::start(&url, env).await, counter)
}

/// The round trips counted once they stop changing.
async fn settled_round_trips(counter: &fleet_tests::proxy::PgSyncCounter) -> u64 {
    let mut last = counter.syncs();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = counter.syncs();
        if now == last {
            return now;
        }
        last = now;
    }
}

async fn api_counter(api: &ApiServer, name: &str) -> u64 {
    let (_, text) = fleet_tests::probe::get(api.ops, "/metrics").await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A transaction holding `scores` so that no lookup can read it until it ends.
async fn lock_scores(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE scores IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// Waits until the api has been asked `total` lookups since it started.
async fn until_lookups_asked(api: &ApiServer, total: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api_counter(api, "api_lookups_total").await < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the GETs' lookups never all reached the api"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A known repository's GET is one statement; the pool adds only sqlx's ping as the connection
/// goes back. Counted in round trips (Sync messages) through a proxy, so a second statement or
/// a ping before every checkout (sqlx's default, a third of the api's database traffic) fails
/// here rather than as a slower benchmark.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_known_repositorys_get_costs_the_database_two_round_trips(pool: PgPool) {
    seed(&pool).await;
    let (api, counter) = api_counting_round_trips(&pool, &[]).await;
    let path = "/projects/github.com/fleet-test/alpha";
    // The statement prepared, the pool warm.
    for _ in 0..5 {
        assert_eq!(api.get(path, &[]).await.status, 200);
    }
    const GETS: u64 = 200;
    let before = settled_round_trips(&counter).await;
    for _ in 0..GETS {
        assert_eq!(api.get(path, &[]).await.status, 200);
    }
    let trips = settled_round_trips(&counter).await - before;
    // A little room for the api's own background reads (readiness) during the run.
    assert!(
        trips <= 2 * GETS + 10,
        "{trips} round trips for {GETS} GETs: more than the statement and the release ping"
    );
    assert!(
        trips >= GETS,
        "{trips} round trips for {GETS} GETs: the proxy missed statements"
    );
}

/// GETs that arrive while the database is busy share its queries: under load the api's cost
/// per request in round trips falls rather than holding it at one query each. The lookups are
/// held behind a lock until all of them have reached the api, so they are certain to wait
/// together; then they are counted on the wire.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn concurrent_gets_share_the_databases_queries(pool: PgPool) {
    seed(&pool).await;
    // The default pool (8): four lookup runners. The lookups wait behind the lock for as long
    // as the GETs take to arrive, well within this statement timeout on a loaded machine.
    let (api, counter) = api_counting_round_trips(
        &pool,
        &[("DATABASE_STATEMENT_TIMEOUT_MS", "300000".to_owned())],
    )
    .await;
    let paths = [
        "/projects/github.com/fleet-test/alpha",
        "/projects/github.com/fleet-test/alpha/badge",
    ];
    for path in paths {
        assert_eq!(api.get(path, &[]).await.status, 200);
    }
    const GETS: u64 = 200;
    let before = settled_round_trips(&counter).await;
    let asked_before = api_counter(&api, "api_lookups_total").await;
    let lock = lock_scores(&pool).await;
    let gets =
        futures::future::join_all((0..GETS as usize).map(|i| api.get(paths[i % paths.len()], &[])));
    let release = async {
        until_lookups_asked(&api, asked_before + GETS).await;
        lock.commit().await.unwrap();
    };
    let (answers, ()) = tokio::join!(gets, release);
    for answer in &answers {
        assert_eq!(
            answer.status,
            200,
            "{}; the api's log:\n{}",
            answer.body,
            api.log_text()
        );
    }
    assert!(
        answers[0].body.contains("\"score\""),
        "the score answered: {}",
        answers[0].body
    );
    assert!(
        answers[1].body.contains("<svg"),
        "a badge answered: {}",
        answers[1].body
    );
    let trips = settled_round_trips(&counter).await - before;
    let queries = api_counter(&api, "api_lookup_queries_total").await;
    // Four runners each held one query behind the lock; the other lookups waited, and a
    // query answers up to 64 of them: about a dozen queries, each with its release ping.
    assert!(
        trips <= GETS / 4,
        "{trips} round trips for {GETS} concurrent GETs ({queries} lookup queries): they did \
         not share queries"
    );
}

/// GETs gathered into one query that the database fails all get that failure at once, a 503,
/// rather than each being tried again alone (a stalled database would then hold the last of
/// them for one failure per lookup ahead of it). The lookups wait behind a lock until every one
/// has reached the api; then each query blocked on the lock is cancelled, as a statement
/// timeout would end it.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn gathered_gets_share_the_databases_failure(pool: PgPool) {
    seed(&pool).await;
    let api = api_on(&pool, &[]).await;
    let path = "/projects/github.com/fleet-test/alpha";
    assert_eq!(api.get(path, &[]).await.status, 200);
    const GETS: u64 = 100;
    let asked_before = api_counter(&api, "api_lookups_total").await;
    let queries_before = api_counter(&api, "api_lookup_queries_total").await;
    let lock = lock_scores(&pool).await;
    let gets = futures::future::join_all((0..GETS).map(|_| api.get(path, &[])));
    let cancel = async {
        until_lookups_asked(&api, asked_before + GETS).await;
        loop {
            sqlx::query(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
                 WHERE usename = $1 AND wait_event_type = 'Lock'",
            )
            .bind(api_server::LOGIN)
            .execute(&pool)
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let answers = tokio::select! {
        answers = gets => answers,
        () = cancel => unreachable!("cancelling never ends by itself"),
    };
    lock.rollback().await.unwrap();
    for answer in &answers {
        assert_eq!(answer.status, 503, "{}", answer.body);
    }
    let queries = api_counter(&api, "api_lookup_queries_total").await - queries_before;
    // Four runners' first queries, then the rest in batches of up to 64.
    assert!(
        queries <= GETS / 4,
        "{queries} lookup queries for {GETS} GETs: the failed batches were retried one by one"
    );
    assert_eq!(api.get(path, &[]).await.status, 200, "answers again");
}

/// A GET whose lookup the database never answers (a lock held on `scores`) is a 503 once the
/// statement timeout runs out, not a request left hanging.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_get_the_database_never_answers_is_a_503(pool: PgPool) {
    seed(&pool).await;
    let api = api_on(
        &pool,
        &[("DATABASE_STATEMENT_TIMEOUT_MS", "2000".to_owned())],
    )
    .await;
    let path = "/projects/github.com/fleet-test/alpha";
    assert_eq!(api.get(path, &[]).await.status, 200);
    let lock = lock_scores(&pool).await;
    // The four lookup runners held, and GETs waiting behind them.
    let gets = futures::future::join_all((0..8).map(|_| api.get(path, &[])));
    let answers = tokio::time::timeout(Duration::from_secs(60), gets)
        .await
        .expect("every GET answered while the database stalls");
    for answer in &answers {
        assert_eq!(answer.status, 503, "{}", answer.body);
    }
    lock.rollback().await.unwrap();
    assert_eq!(api.get(path, &[]).await.status, 200, "answers again");
}

/// A statement of the api's that the database never answers (a lock held on the table it
/// reads or writes) is a 503 once the statement timeout runs out, and is cancelled in the
/// database, not left waiting on a connection of the pool: a repository's history, the fleet's
/// status and a scan request, with session pooling and behind PgBouncer in transaction pooling
/// mode.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_statement_the_database_never_answers_is_cancelled_at_the_statement_timeout(
    pool: PgPool,
) {
    seed(&pool).await;
    let js = async_nats::jetstream::new(
        async_nats::connect(stack::nats_url())
            .await
            .expect("the stack's NATS"),
    );
    let prefix = stack::unique("api");
    Topology::new(TopologyArgs {
        nats_prefix: prefix.clone(),
        ..Default::default()
    })
    .unwrap()
    .ensure(&js)
    .await
    .unwrap();
    let keys = std::env::temp_dir().join(stack::unique("api-keys"));
    let key = "ci-key-5f0c1d2e3a4b5c6d7e8f";
    std::fs::write(&keys, format!("ci:{key}\n")).unwrap();
    let bouncer = fleet_tests::pgbouncer::PrivatePgBouncer::start();
    let env = [
        ("DATABASE_STATEMENT_TIMEOUT_MS", "1000".to_owned()),
        ("NATS_PREFIX", prefix),
        ("API_KEYS_FILE", keys.display().to_string()),
    ];
    let direct = api_on(&pool, &env).await;
    let pooled = ApiServer::start(
        &bouncer.url_as_api_login(&pool),
        &[&env[..], &[("DATABASE_POOLING", "transaction".into())]].concat(),
    )
    .await;
    let bearer = format!("Bearer {key}");
    let history = format!("/projects/{ALPHA}/history");
    let scan = format!("/projects/{ALPHA}/scan");
    // The status is counted at most every 30 s, so it is asked first, before it is cached.
    let cases = [
        ("GET", "/status", "work_failures"),
        ("GET", history.as_str(), "score_history"),
        ("POST", scan.as_str(), "repos"),
    ];
    for (api, how) in [
        (&direct, "session pooling"),
        (&pooled, "transaction pooling"),
    ] {
        for (method, path, table) in cases {
            let ask = || async {
                match method {
                    "GET" => api.get(path, &[]).await,
                    _ => api.post(path, &[("authorization", &bearer)]).await,
                }
            };
            let mut lock = pool.begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            )))
            .execute(&mut *lock)
            .await
            .unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(30), ask())
                .await
                .unwrap_or_else(|_| panic!("{how}: {method} {path} still waits on the lock"));
            assert_eq!(
                answer.status, 503,
                "{how}: {method} {path}: {}",
                answer.body
            );
            assert_eq!(
                fleet_tests::pg::waiting_on_locks(&pool).await,
                0,
                "{how}: the statement of {method} {path} still waits on the lock"
            );
            lock.rollback().await.unwrap();
            let again = ask().await;
            assert!(
                (200..300).contains(&again.status),
                "{how}: {method} {path} answers again: {again:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_database_outage_is_a_503_and_readyz_names_postgres_until_it_is_back() {
    let pg = fleet_tests::pg::PrivatePostgres::start();
    let pool = pg.pool().await;
    fleet_runtime::db::migrate(&pool, Default::default())
        .await
        .unwrap();
    seed(&pool).await;
    api_server::ensure_login(&pool).await;
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/postgres",
        api_server::LOGIN,
        api_server::PASSWORD,
        pg.port
    );
    let api = ApiServer::start(&url, &[]).await;
    assert_eq!(
        api.get("/projects/github.com/fleet-test/alpha", &[])
            .await
            .status,
        200
    );

    pg.stop();
    let down = api.get("/projects/github.com/fleet-test/alpha", &[]).await;
    assert_error(&down, 503, "the database is unavailable");
    assert_eq!(down.header("retry-after"), Some("5"));
    // The badge says so as a badge: it sits in someone's <img>.
    let badge = api
        .get("/projects/github.com/fleet-test/alpha/badge", &[])
        .await;
    assert_eq!(badge.status, 503, "{badge:?}");
    assert_eq!(badge.header("content-type"), Some("image/svg+xml"));
    assert!(
        badge.body.starts_with("<svg") && badge.body.contains(">unavailable<"),
        "{}",
        badge.body
    );
    fleet_tests::probe::readyz_until(api.ops, 503, "postgres", Duration::from_secs(20)).await;

    pg.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = api.get("/projects/github.com/fleet-test/alpha", &[]).await;
        if answer.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet_tests::probe::readyz_until(api.ops, 200, "", Duration::from_secs(5)).await;
    let log = api.log_text();
    assert!(
        !log.contains(api_server::PASSWORD),
        "the password leaked:\n{log}"
    );
}

/// Behind PgBouncer in transaction pooling mode (`DATABASE_POOLING=transaction`): many reads at
/// once, each on whichever server connection is free, each answered with its own repository's
/// score; history, badges, rankings and /status too.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_api_answers_many_reads_at_once_through_pgbouncer_in_transaction_mode(pool: PgPool) {
    let others = seed(&pool).await;
    api_server::ensure_login(&pool).await;
    let bouncer = fleet_tests::pgbouncer::PrivatePgBouncer::start();
    let api = ApiServer::start(
        &bouncer.url_as_api_login(&pool),
        &[
            ("DATABASE_POOLING", "transaction".into()),
            ("DATABASE_MAX_CONNECTIONS", "16".into()),
        ],
    )
    .await;
    let reads = others.iter().cycle().take(600).map(|repo| {
        let api = &api;
        async move {
            let path = format!("/projects/{repo}");
            let answer = api.get(&path, &[]).await;
            assert_eq!(answer.status, 200, "{path}: {answer:?}");
            let shown = answer.json()["repo"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert_eq!(
                shown.to_lowercase(),
                repo.key(),
                "{path} answered another repository"
            );
            let badge = api.get(&format!("/projects/{repo}/badge"), &[]).await;
            assert_eq!(badge.status, 200, "{badge:?}");
        }
    });
    use futures::StreamExt as _;
    futures::stream::iter(reads)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let history = api.get(&format!("/projects/{ALPHA}/history"), &[]).await;
    assert_eq!(history.status, 200, "{history:?}");
    assert_eq!(history.json()["scans"].as_array().map(Vec::len), Some(3));
    let status = api.get("/status", &[("accept", "application/json")]).await;
    assert_eq!(status.status, 200, "{status:?}");
    let check = api.get("/checks/Maintained?max=10", &[]).await;
    assert_eq!(check.status, 200, "{check:?}");
    let log = api.log_text();
    assert!(!log.contains("ERROR"), "the api logged errors:\n{log}");
}
