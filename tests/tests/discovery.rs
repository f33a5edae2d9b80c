//! Discovery on the real stack: a GET of a repository the fleet has never scored queues one
//! scan of it on the discovery lane, the real worker and sink score it, and the next GET has
//! the score. The api runs as the read-only role's login, so `discover()`'s grants are proven
//! too. The stand-in scan answers scorecard's "repo unreachable ... 404" for `sim-skip` owners.

use std::time::Duration;

use api::discovery::{self, Standing, Unscored};
use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::v1::{WorkItem, WorkReason};
use fleet_runtime::topology::{Topology, TopologyArgs};
use fleet_tests::api_server::{self, ApiServer};
use fleet_tests::browser::browse_to;
use fleet_tests::fleet::{FAST, Fleet};
use fleet_tests::kube_support::eventually;
use fleet_tests::probe::Answer;
use fleet_tests::stack;
use prost::Message as _;
use sqlx::PgPool;

async fn topology(js: &jetstream::Context) -> Topology {
    let topology = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("discovery"),
        ..Default::default()
    })
    .unwrap();
    topology.ensure(js).await.unwrap();
    topology
}

async fn nats() -> jetstream::Context {
    jetstream::new(
        async_nats::connect(stack::nats_url())
            .await
            .expect("the stack's NATS"),
    )
}

async fn api_on(pool: &PgPool, topology: &Topology, env: &[(&str, String)]) -> ApiServer {
    api_server::ensure_login(pool).await;
    let mut all = vec![("NATS_PREFIX", topology.args().nats_prefix.clone())];
    all.extend(env.iter().cloned());
    ApiServer::start(&api_server::url_as_login(pool), &all).await
}

/// Every work item on the discovery subject not yet taken by a worker (read by sequence: a
/// work-queue stream admits no second consumer of a subject).
async fn discoveries(js: &jetstream::Context, topology: &Topology) -> Vec<WorkItem> {
    let stream = js.get_stream(topology.work_stream()).await.unwrap();
    let mut items = Vec::new();
    let mut next = 1;
    while let Ok(m) = stream
        .raw_message_builder()
        .sequence(next)
        .next_by_subject(topology.discovery_subject())
        .send()
        .await
    {
        items.push(WorkItem::decode(m.payload.as_ref()).unwrap());
        next = m.sequence + 1;
    }
    items
}

/// A 404 in the public API's shape whose message says `says`.
fn assert_404(answer: &Answer, says: &str) {
    assert_eq!(answer.status, 404, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["code"], 404, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

fn retry_after(answer: &Answer) -> u64 {
    answer
        .header("retry-after")
        .unwrap_or_else(|| panic!("Retry-After in {answer:?}"))
        .parse()
        .unwrap()
}

async fn metric(api: &ApiServer, answer: &str) -> u64 {
    let (_, text) = fleet_tests::probe::get(api.ops, "/metrics").await.unwrap();
    let line = format!("api_discovery_total{{answer=\"{answer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The fleet's processes (worker, sink, the stand-in scan) on this test's database and
/// `topology`, none started yet.
async fn fleet_on(pool: &PgPool, topology: &Topology) -> Fleet {
    Fleet::prepare(
        &stack::database_url_of(pool),
        &stack::nats_url(),
        topology.clone(),
        FAST,
    )
    .await
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_hundred_gets_of_an_unscored_repository_queue_one_scan_and_its_score_follows(
    pool: PgPool,
) {
    let js = nats().await;
    let topology = topology(&js).await;
    let mut fleet = fleet_on(&pool, &topology).await;
    let api = api_on(&pool, &topology, &[]).await;
    let path = "/projects/github.com/sim-ok-found/Asked-For";

    // A hundred at once, as JSON, badge and page: no worker runs yet, so all see it queued.
    let answers = futures::future::join_all((0..100).map(|i| {
        let api = &api;
        async move {
            match i % 3 {
                0 => (0, api.get(path, &[]).await),
                1 => (1, api.get(&format!("{path}/badge"), &[]).await),
                _ => (2, api.get(path, &[("accept", "text/html")]).await),
            }
        }
    }))
    .await;
    for (kind, answer) in &answers {
        match kind {
            0 => {
                assert_404(answer, "has not been scored yet; its scan ");
                assert!(retry_after(answer) >= 60, "{answer:?}");
            }
            1 => {
                assert_eq!(answer.status, 200, "{answer:?}");
                assert_eq!(answer.header("content-type"), Some("image/svg+xml"));
                assert!(answer.body.contains(">pending<"), "{}", answer.body);
                assert_eq!(answer.header("cache-control"), Some("public, max-age=15"));
            }
            _ => {
                assert_eq!(answer.status, 404);
                assert!(answer.body.contains("is being scored"), "{}", answer.body);
                assert!(
                    answer.body.contains("<meta http-equiv=\"refresh\""),
                    "{}",
                    answer.body
                );
            }
        }
    }
    let queued = discoveries(&js, &topology).await;
    assert_eq!(
        queued.len(),
        1,
        "one work item for a hundred GETs: {queued:?}"
    );
    assert_eq!(queued[0].repo, "github.com/sim-ok-found/Asked-For");
    assert_eq!(queued[0].reason, WorkReason::Discovery as i32);
    assert_eq!(metric(&api, "queued").await, 1);
    assert_eq!(metric(&api, "pending").await, 99);
    let (discovered, priority): (bool, i32) = sqlx::query_as(
        "SELECT discovered, priority FROM repos WHERE repo_key = 'github.com/sim-ok-found/asked-for'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(discovered);
    assert_eq!(priority, api::discovery::DISCOVERED_PRIORITY);

    // The real worker and sink score it: one Job, and the next GET has the score.
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    let scored = eventually("the score", Duration::from_secs(120), || async {
        let answer = api.get(path, &[]).await;
        Ok((answer.status == 200).then_some(answer))
    })
    .await
    .unwrap();
    assert_eq!(fleet.sim.pods_for("github.com/sim-ok-found/Asked-For"), 1);
    let modified = scored.header("last-modified").expect("Last-Modified");
    let scanned: DateTime<Utc> =
        sqlx::query_scalar("SELECT s.scored_at FROM scores s JOIN repos r ON r.id = s.repo_id")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        modified,
        scanned.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    );
    let same = api.get(path, &[("if-modified-since", modified)]).await;
    assert_eq!(same.status, 304, "{same:?}");
    let earlier = (scanned - TimeDelta::hours(1))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    assert_eq!(
        api.get(path, &[("if-modified-since", &earlier)])
            .await
            .status,
        200
    );
    let badge = api.get(&format!("{path}/badge"), &[]).await;
    assert_eq!(badge.header("last-modified"), Some(modified));
    assert_eq!(
        api.get(&format!("{path}/badge"), &[("if-modified-since", modified)])
            .await
            .status,
        304
    );
    fleet.stop_all().await;
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_repository_github_does_not_have_is_remembered_and_queues_nothing_meanwhile(
    pool: PgPool,
) {
    let js = nats().await;
    let topology = topology(&js).await;
    let mut fleet = fleet_on(&pool, &topology).await;
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    let api = api_on(&pool, &topology, &[]).await;
    let path = "/projects/github.com/sim-skip-gone/nowhere";
    assert_404(&api.get(path, &[]).await, "its scan is queued now");

    // scorecard says GitHub has no such repository: answered from the row from then on.
    let answer = eventually("the missing answer", Duration::from_secs(120), || async {
        let answer = api.get(path, &[]).await;
        Ok((answer.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no such public repository")))
        .then_some(answer))
    })
    .await
    .unwrap();
    let today = Utc::now().format("%Y-%m-%d").to_string();
    assert_404(
        &answer,
        &format!(
            "no such public repository on GitHub: github.com/sim-skip-gone/nowhere (checked {today})"
        ),
    );
    for _ in 0..20 {
        assert_404(&api.get(path, &[]).await, "no such public repository");
    }
    let badge = api.get(&format!("{path}/badge"), &[]).await;
    assert!(badge.body.contains(">repo not found<"), "{}", badge.body);
    // The worker took the one item off the stream: the api's count and the Jobs say it.
    assert_eq!(metric(&api, "queued").await, 1);
    assert_eq!(fleet.sim.pods_for("github.com/sim-skip-gone/nowhere"), 1);
    assert!(metric(&api, "missing").await >= 21);

    // Once the memory runs out, a GET checks again.
    sqlx::query("UPDATE repos SET missing_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert_404(&api.get(path, &[]).await, "its scan is queued now");
    assert_eq!(metric(&api, "queued").await, 2);
    fleet.stop_all().await;
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_fleet_budget_and_the_per_client_limit_refuse_with_retry_after(pool: PgPool) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_on(
        &pool,
        &topology,
        &[
            ("API_DISCOVERY_PER_HOUR", "3".into()),
            ("API_DISCOVERY_PER_CLIENT_PER_HOUR", "2".into()),
            ("API_CLIENT_ADDRESS_HEADER", "X-Forwarded-For".into()),
        ],
    )
    .await;
    let from = |client: &'static str| [("x-forwarded-for", client)];
    let get = |n: u32, client: &'static str| {
        let api = &api;
        async move {
            api.get(
                &format!("/projects/github.com/sim-ok-budget/repo-{n}"),
                &from(client),
            )
            .await
        }
    };

    let first = get(1, "198.51.100.1").await;
    assert_404(&first, "queued now");
    // Retry-After is the discovery lane's wait and a scan (60 s): nothing waited before it.
    let wait = retry_after(&first);
    assert!((60..=61).contains(&wait), "{wait}");
    // No worker runs here: the first item waits, and the next answer counts its wait.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let second = get(2, "203.0.113.5, 198.51.100.1").await;
    assert_404(&second, "queued now");
    let wait = retry_after(&second);
    assert!((66..=70).contains(&wait), "the oldest waited 6 s: {wait}");
    // Its third: refused for this address, and the proxy's entry is what counts.
    let limited = get(3, "198.51.100.1").await;
    assert_404(
        &limited,
        "was not queued: this address has asked for many new repositories",
    );
    let wait = retry_after(&limited);
    assert!(
        (1_700..=1_800).contains(&wait),
        "half an hour for one of two an hour: {wait}"
    );
    // Another address takes the fleet's third; a fourth is past the fleet's budget.
    assert_404(&get(3, "198.51.100.2").await, "queued now");
    let over = get(4, "198.51.100.3").await;
    assert_404(
        &over,
        "was not queued: this service has queued as many new repositories as it may this hour",
    );
    let wait = retry_after(&over);
    assert!(
        (3_500..=3_600).contains(&wait),
        "until the oldest leaves the hour: {wait}"
    );
    let badge = api
        .get(
            "/projects/github.com/sim-ok-budget/repo-4/badge",
            &from("198.51.100.4"),
        )
        .await;
    // The badge names why there is no score: not queued, for now.
    assert!(badge.body.contains(">try later<"), "{}", badge.body);
    assert!(badge.header("retry-after").is_some());

    let queued: Vec<String> = discoveries(&js, &topology)
        .await
        .into_iter()
        .map(|i| i.repo)
        .collect();
    assert_eq!(
        queued,
        [
            "github.com/sim-ok-budget/repo-1",
            "github.com/sim-ok-budget/repo-2",
            "github.com/sim-ok-budget/repo-3",
        ]
    );
    assert_eq!(metric(&api, "queued").await, 3);
    assert_eq!(metric(&api, "client_limited").await, 1);
    assert_eq!(metric(&api, "over_budget").await, 2);

    // Off: a plain 404 that queues nothing.
    drop(api);
    let off = api_on(&pool, &topology, &[("API_DISCOVERY", "false".into())]).await;
    assert_404(
        &off.get("/projects/github.com/sim-ok-budget/repo-9", &[])
            .await,
        "is not known to this service",
    );
    assert_eq!(discoveries(&js, &topology).await.len(), 3);
}

/// Retires the test's one repository as the producer does one nobody asked for: disabled, its
/// data kept.
/// A discovery whose work item NATS does not store is a 503 "try again shortly", and its
/// decision is rolled back with it: nothing says a scan is queued, so the next GET, once the
/// work stream takes items again, queues it.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_discovery_nats_does_not_store_is_a_503_that_records_nothing(pool: PgPool) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_on(&pool, &topology, &[]).await;
    js.delete_stream(topology.work_stream()).await.unwrap();
    let path = "/projects/github.com/sim-ok/stored-later";
    let refused = api.get(path, &[]).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("its scan could not be queued; try again shortly"),
        "{message:?}"
    );
    assert!(retry_after(&refused) > 0);
    topology.ensure(&js).await.unwrap();
    let queued = api.get(path, &[]).await;
    assert_404(&queued, "queued now");
    assert_eq!(discoveries(&js, &topology).await.len(), 1);
}

async fn retire(pool: &PgPool) {
    sqlx::query(
        "UPDATE repos SET enabled = false, retired_at = now(), last_enqueued_at = now() - interval '3 days',
             last_asked_at = now() - interval '90 days'",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Whether the test's one repository is enabled, and when it was retired.
async fn scheduled(pool: &PgPool) -> (bool, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT enabled, retired_at FROM repos")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_retired_repository_comes_back_when_asked_for_and_asks_keep_one_from_retiring(
    pool: PgPool,
) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_on(&pool, &topology, &[]).await;
    let path = "/projects/github.com/sim-ok-retired/again";
    assert_404(&api.get(path, &[]).await, "queued now");

    // As the producer retires one nobody asked for: disabled, data kept.
    retire(&pool).await;
    assert_404(&api.get(path, &[]).await, "queued now");
    let (enabled, retired) = scheduled(&pool).await;
    assert!(enabled && retired.is_none(), "brought back");
    assert_eq!(discoveries(&js, &topology).await.len(), 2);

    // An operator's disabling is not undone by a GET.
    sqlx::query("UPDATE repos SET enabled = false, last_enqueued_at = now() - interval '3 days'")
        .execute(&pool)
        .await
        .unwrap();
    assert_404(&api.get(path, &[]).await, "has not been scored yet");
    assert_eq!(discoveries(&js, &topology).await.len(), 2);

    // A GET of a discovered repository asked for long ago refreshes its ask.
    sqlx::query(
        "UPDATE repos SET enabled = true, last_asked_at = now() - interval '40 days',
             last_enqueued_at = now()",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_404(&api.get(path, &[]).await, "its scan was queued");
    eventually("the ask recorded", Duration::from_secs(30), || async {
        let asked: DateTime<Utc> = sqlx::query_scalar("SELECT last_asked_at FROM repos")
            .fetch_one(&pool)
            .await?;
        Ok((asked > Utc::now() - TimeDelta::minutes(1)).then_some(()))
    })
    .await
    .unwrap();

    // Retired with a score kept: the GET answers the kept score and schedules it again.
    let repo = fleet_proto::RepoName::parse("github.com/sim-ok-retired/again").unwrap();
    let kept = fleet_tests::results::result_at_commit(
        &repo,
        "kept",
        Utc::now() - TimeDelta::days(60),
        0,
        None,
    );
    sink::upsert::write_batch(
        &pool,
        fleet_runtime::db::Timeouts::default(),
        &[sink::decode::Record::Result(kept)],
        &sink::schedule::Schedule {
            interval: TimeDelta::days(14),
            jitter: TimeDelta::hours(24),
            missing_for: TimeDelta::days(7),
        },
        false,
    )
    .await
    .unwrap();
    retire(&pool).await;
    let answer = api.get(path, &[]).await;
    assert_eq!(answer.status, 200, "the kept score: {answer:?}");
    assert!(answer.json()["score"].is_number(), "{}", answer.body);
    let (enabled, retired) = scheduled(&pool).await;
    assert!(
        enabled && retired.is_none(),
        "a scored one brought back too"
    );
    assert_eq!(discoveries(&js, &topology).await.len(), 3);
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_pending_page_and_badge_render_in_a_real_browser(pool: PgPool) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_on(&pool, &topology, &[]).await;
    let page = browse_to(
        api.url("/projects/github.com/sim-ok-browser/pending"),
        "api-pending.png",
    )
    .await;
    assert!(
        page.contains("<h1 id=\"repo\">github.com/sim-ok-browser/pending</h1>"),
        "{page}"
    );
    assert!(page.contains("This repository is being scored."), "{page}");
    assert!(page.contains("This page refreshes itself."), "{page}");
    let badge = browse_to(
        api.url("/projects/github.com/sim-ok-browser/pending/badge?style=for-the-badge"),
        "api-pending-badge.png",
    )
    .await;
    assert!(badge.contains("PENDING"), "{badge}");
    let invalid = browse_to(
        api.url("/projects/github.com/-not-a-name-/x/badge"),
        "api-invalid-badge.png",
    )
    .await;
    assert!(invalid.contains("invalid repo path"), "{invalid}");
    // The status page shows each lane's wait in words.
    let status = browse_to(api.url("/"), "api-status-lanes.png").await;
    // The page's visit queued one discovery, and no worker runs here: it waits.
    let discovery_row =
        "<td>new repositories (discovery)</td><td class=\"num\">1</td><td class=\"num\">";
    let waited = status
        .split(discovery_row)
        .nth(1)
        .and_then(|rest| rest.split("</td>").next())
        .unwrap_or_else(|| panic!("the discovery lane's row: {status}"));
    assert!(
        waited.ends_with(" s") || waited.ends_with(" min"),
        "the oldest's wait in words: {waited:?}"
    );
    assert!(
        status.contains("<td>scan requests (manual)</td><td class=\"num\">none</td>"),
        "{status}"
    );
    let json = api.get("/status", &[]).await.json();
    assert_eq!(json["lanes"]["discovery"]["waiting"], 1, "{json}");
    assert_eq!(json["lanes"]["manual"]["waiting"], 0, "{json}");
    assert!(
        !status.contains("+00:00"),
        "machine dates on the page: {status}"
    );
    let counted = status
        .split("Counted <time datetime=")
        .nth(1)
        .and_then(|rest| rest.split("</time>").next())
        .unwrap_or_else(|| panic!("when the numbers were counted: {status}"));
    let shown = counted.rsplit('>').next().unwrap_or_default();
    assert!(
        chrono::NaiveDateTime::parse_from_str(shown, "%Y-%m-%d %H:%M UTC").is_ok(),
        "a date read at a glance (2026-12-06 15:06 UTC): {counted:?}"
    );
}

/// What the api decides from the row it read, by kind.
fn standing_kind(s: &Standing) -> &'static str {
    match s {
        Standing::Scored { rediscover: false } => "scored",
        Standing::Scored { rediscover: true } => "scored, rediscover",
        Standing::Discoverable => "discoverable",
        Standing::Unscored(Unscored::Pending { .. }) => "pending",
        Standing::Unscored(Unscored::Missing { .. }) => "missing",
        Standing::Unscored(Unscored::Failed { .. }) => "failed",
        Standing::Unscored(Unscored::NotScheduled) => "not scheduled",
        Standing::Unscored(other) => panic!("standing() never answers {other:?}"),
    }
}

/// One row state, times in minutes before now (`missing_until`: minutes after now).
#[derive(Default)]
struct Case {
    name: &'static str,
    disabled: bool,
    discovered: bool,
    enqueued: Option<i32>,
    scored: Option<i32>,
    failed: Option<i32>,
    missing_checked: Option<i32>,
    missing_until: Option<i32>,
    retired: Option<i32>,
    /// What the api decides from the row, and what `discover()` answers.
    api: &'static str,
    db: &'static str,
}

/// The api reads a row and decides with `standing()` without taking the discovery lock; the
/// database's `discover()` decides under it. Row by row, they must agree: a GET the api
/// sends to `discover()` is one it queues, and one it answers itself is one `discover()`
/// would not queue.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_api_and_the_database_decide_every_row_alike(pool: PgPool) {
    const DAY: i32 = 24 * 60;
    let cases = [
        Case {
            name: "never-tried",
            api: "discoverable",
            db: "queued",
            ..Case::default()
        },
        Case {
            name: "enqueued",
            enqueued: Some(1),
            api: "pending",
            db: "pending",
            ..Case::default()
        },
        Case {
            name: "enqueued-then-failed",
            enqueued: Some(2),
            failed: Some(1),
            api: "failed",
            db: "known",
            ..Case::default()
        },
        Case {
            name: "lease-ran-out",
            enqueued: Some(60),
            api: "discoverable",
            db: "queued",
            ..Case::default()
        },
        Case {
            name: "missing",
            failed: Some(DAY),
            missing_checked: Some(DAY),
            missing_until: Some(6 * DAY),
            api: "missing",
            db: "missing",
            ..Case::default()
        },
        Case {
            name: "missing-then-enqueued",
            enqueued: Some(1),
            failed: Some(DAY),
            missing_checked: Some(DAY),
            missing_until: Some(6 * DAY),
            api: "pending",
            db: "pending",
            ..Case::default()
        },
        Case {
            name: "missing-memory-ran-out",
            failed: Some(8 * DAY),
            missing_checked: Some(8 * DAY),
            missing_until: Some(-DAY),
            api: "discoverable",
            db: "queued",
            ..Case::default()
        },
        Case {
            name: "failed-after-missing",
            failed: Some(2 * DAY),
            missing_checked: Some(8 * DAY),
            missing_until: Some(-DAY),
            api: "failed",
            db: "known",
            ..Case::default()
        },
        Case {
            name: "failed",
            failed: Some(60),
            api: "failed",
            db: "known",
            ..Case::default()
        },
        Case {
            name: "disabled",
            disabled: true,
            api: "not scheduled",
            db: "known",
            ..Case::default()
        },
        Case {
            name: "retired",
            disabled: true,
            discovered: true,
            retired: Some(DAY),
            api: "discoverable",
            db: "queued",
            ..Case::default()
        },
        Case {
            name: "retired-missing",
            disabled: true,
            discovered: true,
            retired: Some(DAY),
            failed: Some(0),
            missing_checked: Some(0),
            missing_until: Some(7 * DAY),
            api: "missing",
            db: "missing",
            ..Case::default()
        },
        Case {
            name: "scored",
            scored: Some(DAY),
            api: "scored",
            db: "known",
            ..Case::default()
        },
        Case {
            name: "scored-enqueued",
            scored: Some(DAY),
            enqueued: Some(1),
            api: "scored",
            db: "pending",
            ..Case::default()
        },
        Case {
            name: "scored-retired",
            scored: Some(30 * DAY),
            disabled: true,
            discovered: true,
            retired: Some(DAY),
            api: "scored, rediscover",
            db: "queued",
            ..Case::default()
        },
    ];
    let db = fleet_runtime::db::Db::new(pool.clone(), fleet_runtime::db::Pooling::Session);
    let mut disagreements = Vec::new();
    for c in &cases {
        let key = format!("github.com/agree/{}", c.name);
        sqlx::query(
            "INSERT INTO repos (repo_key, host, owner, name, enabled, discovered, last_enqueued_at,
                                last_scored_at, missing_checked_at, missing_until, retired_at)
             VALUES ($1, 'github.com', 'agree', $2, $3, $4, now() - make_interval(mins => $5),
                     now() - make_interval(mins => $6), now() - make_interval(mins => $7),
                     now() + make_interval(mins => $8), now() - make_interval(mins => $9))",
        )
        .bind(&key)
        .bind(c.name)
        .bind(!c.disabled)
        .bind(c.discovered)
        .bind(c.enqueued)
        .bind(c.scored)
        .bind(c.missing_checked)
        .bind(c.missing_until)
        .bind(c.retired)
        .execute(&pool)
        .await
        .unwrap();
        if c.scored.is_some() {
            sqlx::query(
                "INSERT INTO scores (repo_id, work_id, score, commit_sha, scorecard_version,
                                     scorecard_commit, scored_at, exit_code, raw_json)
                 SELECT id, 'w-' || id, 5.0, 'c', 'v5', 'c', last_scored_at, 0, '{}'
                 FROM repos WHERE repo_key = $1",
            )
            .bind(&key)
            .execute(&pool)
            .await
            .unwrap();
        }
        if let Some(failed) = c.failed {
            sqlx::query(
                "INSERT INTO work_failures (repo_id, work_id, class, message, attempts, failed_at)
                 SELECT id, 'f-' || id, 'SCAN_FAILED', 'failed', 1,
                        CASE WHEN $3 THEN missing_checked_at ELSE now() - make_interval(mins => $2) END
                 FROM repos WHERE repo_key = $1",
            )
            .bind(&key)
            .bind(failed)
            // The sink records the "missing" memory from the failure itself: the same time.
            .bind(c.missing_checked == Some(failed))
            .execute(&pool)
            .await
            .unwrap();
        }
        decide_both(&pool, &db, &key, c.api, c.db, &mut disagreements).await;
    }
    // No row at all.
    decide_both(
        &pool,
        &db,
        "github.com/agree/unknown",
        "discoverable",
        "queued",
        &mut disagreements,
    )
    .await;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Asks both sides about `key`, noting where either differs from what is expected or from
/// the other.
async fn decide_both(
    pool: &PgPool,
    db: &fleet_runtime::db::Db,
    key: &str,
    api_says: &str,
    db_says: &str,
    disagreements: &mut Vec<String>,
) {
    const LEASE_MINUTES: i32 = 10;
    let row = api::store::latest(db, key, true).await.unwrap();
    let standing = discovery::standing(
        row.as_ref(),
        Utc::now(),
        TimeDelta::minutes(i64::from(LEASE_MINUTES)),
    );
    let name = key.rsplit('/').next().unwrap();
    // discover() writes when it queues: asked inside a transaction that is rolled back, so
    // the row stays as set.
    let mut tx = pool.begin().await.unwrap();
    let outcome: String = sqlx::query_scalar(
        "SELECT outcome FROM discover($1, 'agree', $2, make_interval(mins => $3), 1000000, -1)",
    )
    .bind(key)
    .bind(name)
    .bind(LEASE_MINUTES)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let api_got = standing_kind(&standing);
    // The api calls discover() exactly for these, and answers every other row itself.
    let api_queues = matches!(api_got, "discoverable" | "scored, rediscover");
    if api_got != api_says || outcome != db_says || api_queues != (outcome == "queued") {
        disagreements.push(format!(
            "{key}: the api decided {api_got:?} (expected {api_says:?}), discover() {outcome:?} (expected {db_says:?})"
        ));
    }
}
