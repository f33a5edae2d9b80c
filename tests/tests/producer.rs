//! The producer against the stack's PostgreSQL and NATS.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_proto::v1::{FailureClass, WorkFailure, WorkItem, WorkReason};
use fleet_runtime::db::Db;
use fleet_runtime::dead;
use fleet_runtime::topology::{Topology, TopologyArgs, WORKER_MANUAL, WORKER_SCHEDULED};
use fleet_tests::nats_server::PrivateNats;
use fleet_tests::results::repo_list;
use fleet_tests::{fixtures, stack};
use futures::StreamExt;
use producer::claim;
use producer::import;
use producer::metrics::Metrics;
use producer::replay::{self, Entry, Filter};
use producer::run::{Producer, Settings, Tick};
use prost::Message;
use sqlx::PgPool;

async fn js_at(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("NATS (dev/stack up)"))
}

async fn topology(js: &jetstream::Context) -> Topology {
    let t = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("prod"),
        ..Default::default()
    })
    .unwrap();
    t.ensure(js).await.unwrap();
    t
}

async fn consumer(js: &jetstream::Context, t: &Topology, name: &str) -> PullConsumer {
    js.get_stream(t.work_stream())
        .await
        .unwrap()
        .get_consumer(name)
        .await
        .unwrap()
}

fn settings(high_water: u64) -> Settings {
    Settings {
        batch_size: 1000,
        high_water,
        lease: TimeDelta::hours(24),
        backoff_cap: Duration::from_secs(1),
        db_timeouts: Default::default(),
        retire_after: None,
    }
}

async fn producer(
    pool: &PgPool,
    js: &jetstream::Context,
    t: &Topology,
    high_water: u64,
) -> Producer {
    Producer {
        pool: pool.clone(),
        js: js.clone(),
        topology: t.clone(),
        consumer: consumer(js, t, WORKER_SCHEDULED).await,
        settings: settings(high_water),
        metrics: Metrics::default(),
        db: Default::default(),
    }
}

async fn queued(c: &PullConsumer, max: usize) -> Vec<WorkItem> {
    let mut out = Vec::new();
    let mut batch = c
        .fetch()
        .max_messages(max)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        out.push(WorkItem::decode(m.payload.clone()).unwrap());
        m.ack().await.unwrap();
    }
    out
}

async fn import_n(pool: &PgPool, n: usize) -> Vec<RepoName> {
    let repos: Vec<RepoName> = repo_list().into_iter().take(n).collect();
    import::write(pool, &repos).await.unwrap();
    repos
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn importing_the_real_list_twice_is_idempotent_and_keeps_scores(pool: PgPool) {
    let bytes = std::fs::read(fixtures::dir().join("repos/github-projects-2021.csv")).unwrap();
    let parsed = import::parse("projects.csv", &bytes).unwrap();
    let first = import::write_parsed(&pool, &parsed).await.unwrap();
    let distinct: std::collections::HashSet<String> =
        parsed.repos.iter().map(RepoName::key).collect();
    assert_eq!(
        first.new as usize,
        distinct.len(),
        "case-variant duplicates collapse to one row"
    );
    sqlx::query(
        "INSERT INTO scores (repo_id, work_id, score, commit_sha, scorecard_version, scorecard_commit,
                             scored_at, exit_code, raw_json)
         SELECT id, 'w', 5.0, 'c', 'v', 'c', now(), 0, '{}' FROM repos LIMIT 10",
    )
    .execute(&pool)
    .await
    .unwrap();
    let again = import::write_parsed(&pool, &parsed).await.unwrap();
    assert_eq!(again.new, 0);
    // A criticality score is a priority tier; a new week's list moves it, a line without one
    // leaves it.
    let priority = |key: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT priority FROM repos WHERE repo_key = $1")
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(priority("github.com/0ad/0ad").await, 5, "criticality 0.48");
    assert_eq!(priority("github.com/01org/processor-trace").await, 0);
    let week = import::parse(
        "w.csv",
        b"repo,metadata\ngithub.com/0ad/0ad,criticality_score:0.91\n",
    )
    .unwrap();
    import::write_parsed(&pool, &week).await.unwrap();
    assert_eq!(priority("github.com/0ad/0ad").await, 9);
    let plain = import::parse("p.txt", b"github.com/0ad/0ad\n").unwrap();
    import::write_parsed(&pool, &plain).await.unwrap();
    assert_eq!(priority("github.com/0ad/0ad").await, 9);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM repos")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, distinct.len());
    let scores: i64 = sqlx::query_scalar("SELECT count(*) FROM scores")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(scores, 10, "re-import keeps existing scores");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn two_producers_never_claim_the_same_repo(pool: PgPool) {
    import_n(&pool, 5000).await;
    // Four priorities: claims that cross from one to the next skip each other's rows too.
    sqlx::query("UPDATE repos SET priority = id % 4")
        .execute(&pool)
        .await
        .unwrap();
    let lease = TimeDelta::hours(1);
    let claims = (0..4).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = claim::claim(&pool, Default::default(), 300, lease)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        })
    });
    let mut all = Vec::new();
    for c in claims {
        all.extend(c.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "a repository was claimed twice");
    assert_eq!(total, 5000);
    // Within the lease nothing is due; past it, everything is again.
    assert!(
        claim::claim(&pool, Default::default(), 10, lease)
            .await
            .unwrap()
            .is_empty()
    );
    sqlx::query("UPDATE repos SET next_due_at = next_due_at - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        claim::claim(&pool, Default::default(), 10, lease)
            .await
            .unwrap()
            .len(),
        10
    );
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn the_most_critical_due_repositories_are_claimed_first_oldest_first_within_a_tier(
    pool: PgPool,
) {
    import_n(&pool, 300).await;
    // Three tiers, due times spread inside each (7919 and 3001 are coprime: no two alike); a
    // fourth, higher tier with nothing due yet.
    sqlx::query(
        "UPDATE repos SET priority = id % 3,
                          next_due_at = now() - make_interval(secs => (id * 7919) % 3001)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE repos SET priority = 9, next_due_at = now() + interval '1 day'
         WHERE id IN (SELECT id FROM repos ORDER BY id LIMIT 10)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let order = "SELECT id FROM repos WHERE enabled AND next_due_at <= now()
                 ORDER BY priority DESC, next_due_at, id";
    let expected: Vec<i64> = sqlx::query_scalar(order).fetch_all(&pool).await.unwrap();
    assert_eq!(expected.len(), 290);
    let lease = TimeDelta::hours(1);
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let batch = claim::claim(&pool, Default::default(), 120, lease)
            .await
            .unwrap();
        // Each batch spans the tiers it reaches, highest first.
        assert!(
            batch.windows(2).all(|w| w[0].priority >= w[1].priority),
            "{:?}",
            batch.iter().map(|c| c.priority).collect::<Vec<_>>()
        );
        claimed.extend(batch.into_iter().map(|c| c.id));
    }
    assert_eq!(claimed, expected);
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn ticks_fill_the_queue_to_the_high_water_mark_and_no_further(pool: PgPool) {
    let repos = import_n(&pool, 2500).await;
    let js = js_at(&stack::nats_url()).await;
    let t = topology(&js).await;
    let p = producer(&pool, &js, &t, 1500).await;
    assert_eq!(p.tick().await.unwrap(), Tick::Published(1000));
    assert_eq!(
        p.tick().await.unwrap(),
        Tick::Published(500),
        "tops up to 1500"
    );
    assert_eq!(p.tick().await.unwrap(), Tick::Full);

    let workers = consumer(&js, &t, WORKER_SCHEDULED).await;
    let items = queued(&workers, 1500).await;
    assert_eq!(items.len(), 1500);
    assert!(
        items
            .iter()
            .all(|i| i.reason() == WorkReason::Scheduled && !i.id.is_empty())
    );
    let mut names: Vec<&str> = items.iter().map(|i| i.repo.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1500, "no repository enqueued twice");

    assert_eq!(p.tick().await.unwrap(), Tick::Published(1000));
    queued(&workers, 1000).await;
    assert_eq!(
        p.tick().await.unwrap(),
        Tick::Idle,
        "all {} claimed",
        repos.len()
    );
    // A claimed repository is leased, and its enqueue time recorded.
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM repos WHERE next_due_at > now() + interval '23 hours' AND last_enqueued_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leased, 2500);
}

#[tokio::test]
async fn a_retried_publish_is_dropped_by_the_server() {
    let js = js_at(&stack::nats_url()).await;
    let t = topology(&js).await;
    let repo = RepoName::parse("github.com/a/b").unwrap();
    let item = fleet_runtime::publish::work_item(&repo, WorkReason::Scheduled, 0);
    let items = vec![item.clone(), item.clone(), item];
    assert!(
        fleet_runtime::publish::publish_all(&js, &t.scheduled_subject(), &items)
            .await
            .is_empty()
    );
    assert_eq!(stored_items(&js, &t).await, 1);
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn nats_down_is_an_error_and_claims_nothing(pool: PgPool) {
    import_n(&pool, 100).await;
    let mut nats = PrivateNats::start();
    let js = js_at(&nats.url()).await;
    let t = topology(&js).await;
    let p = producer(&pool, &js, &t, 1000).await;
    nats.stop();
    let err = tokio::time::timeout(Duration::from_secs(30), p.tick())
        .await
        .expect("a tick does not hang on a dead NATS")
        .unwrap_err();
    assert!(format!("{err:#}").contains("queue's depth"), "{err:#}");
    assert_eq!(
        enqueued_repos(&pool).await,
        0,
        "nothing claimed while the queue is unreachable"
    );

    nats.resume();
    let mut published = None;
    for _ in 0..100 {
        if let Ok(tick) = p.tick().await {
            published = Some(tick);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        published,
        Some(Tick::Published(100)),
        "recovers once NATS is back"
    );
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn enqueue_creates_the_repo_and_uses_the_manual_lane(pool: PgPool) {
    let js = js_at(&stack::nats_url()).await;
    let t = topology(&js).await;
    let repo = RepoName::parse("https://github.com/New-Org/New-Repo.git").unwrap();
    let items = fleet_runtime::manual::enqueue(
        &Db::new(pool.clone(), Default::default()),
        &js,
        &t,
        std::slice::from_ref(&repo),
        TimeDelta::hours(24),
    )
    .await
    .unwrap();
    assert_eq!(items.len(), 1);
    let manual = queued(&consumer(&js, &t, WORKER_MANUAL).await, 10).await;
    assert_eq!(manual, items);
    assert_eq!(manual[0].reason(), WorkReason::Manual);
    let (key, enqueued): (String, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT repo_key, last_enqueued_at FROM repos")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(key, "github.com/new-org/new-repo");
    assert!(enqueued.is_some());
}

/// A person's request for a due repository pushes its due time forward as a claim would: the
/// producer running beside it does not enqueue a second, scheduled scan.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn enqueue_of_a_due_repository_leaves_nothing_for_the_scheduled_lane(pool: PgPool) {
    let js = js_at(&stack::nats_url()).await;
    let t = topology(&js).await;
    let repos = import_n(&pool, 2).await;
    sqlx::query("UPDATE repos SET next_due_at = now() + interval '10 days' WHERE repo_key = $1")
        .bind(repos[1].key())
        .execute(&pool)
        .await
        .unwrap();
    fleet_runtime::manual::enqueue(
        &Db::new(pool.clone(), Default::default()),
        &js,
        &t,
        &repos,
        TimeDelta::hours(24),
    )
    .await
    .unwrap();
    let p = producer(&pool, &js, &t, 1000).await;
    let tick = p.tick().await.unwrap();
    assert!(!matches!(tick, Tick::Published(_)), "{tick:?}");
    assert!(
        queued(&consumer(&js, &t, WORKER_SCHEDULED).await, 10)
            .await
            .is_empty()
    );
    assert_eq!(
        queued(&consumer(&js, &t, WORKER_MANUAL).await, 10)
            .await
            .len(),
        2
    );
    let due: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT repo_key, next_due_at FROM repos ORDER BY repo_key = $1")
            .bind(repos[1].key())
            .fetch_all(&pool)
            .await
            .unwrap();
    let hours = |t: DateTime<Utc>| (t - Utc::now()).num_hours();
    assert!(
        (23..=24).contains(&hours(due[0].1)),
        "pushed by the lease: {due:?}"
    );
    assert!(
        hours(due[1].1) > 24 * 9,
        "a later due time is not pulled closer: {due:?}"
    );
}

/// Publishes refused by a full work stream are handed back with their work ids; the next
/// claim publishes those same ids (a publish whose ack was lost may have been stored: a new
/// id would be a second scan).
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn an_unconfirmed_publish_is_handed_back_and_republished_under_the_same_work_id(
    pool: PgPool,
) {
    let js = js_at(&stack::nats_url()).await;
    let t = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("prod"),
        work_max_messages: 2,
        ..Default::default()
    })
    .unwrap();
    t.ensure(&js).await.unwrap();
    import_n(&pool, 5).await;
    let p = producer(&pool, &js, &t, 1000).await;
    assert_eq!(p.tick().await.unwrap(), Tick::Published(2));
    let pending: Vec<String> = sqlx::query_scalar(
        "SELECT pending_work_id FROM repos WHERE pending_work_id IS NOT NULL ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        pending.len(),
        3,
        "the refused three are handed back with their ids"
    );
    let first = queued(&consumer(&js, &t, WORKER_SCHEDULED).await, 10).await;
    assert_eq!(first.len(), 2);

    // Due again (after the hand-back's delay): claimed again, published under the same ids.
    sqlx::query("UPDATE repos SET next_due_at = now() WHERE pending_work_id IS NOT NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(p.tick().await.unwrap(), Tick::Published(2));
    let mut again: Vec<String> = queued(&consumer(&js, &t, WORKER_SCHEDULED).await, 10)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    sqlx::query("UPDATE repos SET next_due_at = now() WHERE pending_work_id IS NOT NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(p.tick().await.unwrap(), Tick::Published(1));
    again.extend(
        queued(&consumer(&js, &t, WORKER_SCHEDULED).await, 10)
            .await
            .into_iter()
            .map(|i| i.id),
    );
    again.sort();
    let mut pending = pending;
    pending.sort();
    assert_eq!(again, pending);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM repos WHERE pending_work_id IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

fn dead_letter(work_id: &str, repo: &str, class: FailureClass) -> WorkFailure {
    WorkFailure {
        work_id: work_id.into(),
        item: Some(WorkItem {
            id: work_id.into(),
            repo: repo.into(),
            reason: WorkReason::Scheduled as i32,
            ..Default::default()
        }),
        class: class as i32,
        message: "it failed".into(),
        attempts: 5,
        ..Default::default()
    }
}

#[tokio::test]
async fn replay_republishes_matching_dead_letters_once() {
    let js = js_at(&stack::nats_url()).await;
    let t = topology(&js).await;
    for (id, repo, class) in [
        ("d1", "github.com/a/one", FailureClass::Timeout),
        ("d2", "github.com/a/two", FailureClass::ScanFailed),
        ("d3", "github.com/a/three", FailureClass::Timeout),
    ] {
        dead::publish(&js, &t, &dead_letter(id, repo, class))
            .await
            .unwrap();
    }
    let poison = dead::poison("S", 7, "scorecard.work.manual", b"junk", "bad".into(), 1);
    dead::publish(&js, &t, &poison).await.unwrap();

    let timeouts = Filter {
        classes: vec![FailureClass::Timeout],
        ..Default::default()
    };
    let dry = replay::replay(&js, &t, &timeouts, true).await.unwrap();
    assert_eq!(dry.len(), 2);
    assert_eq!(
        consumer(&js, &t, WORKER_SCHEDULED)
            .await
            .clone()
            .info()
            .await
            .unwrap()
            .num_pending,
        0,
        "dry run publishes nothing"
    );

    let done = replay::replay(&js, &t, &timeouts, false).await.unwrap();
    assert_eq!(done.len(), 2);
    let items = queued(&consumer(&js, &t, WORKER_SCHEDULED).await, 10).await;
    let mut attempts: Vec<&str> = items
        .iter()
        .map(|i| i.attempt_of.as_deref().unwrap())
        .collect();
    attempts.sort();
    assert_eq!(attempts, ["d1", "d3"]);
    assert!(items.iter().all(|i| i.reason() == WorkReason::Replay));
    assert!(
        replay::replay(&js, &t, &timeouts, false)
            .await
            .unwrap()
            .is_empty(),
        "never replayed twice"
    );

    // Everything else: the scan failure is replayed, the poison message skipped with a reason.
    let rest = replay::replay(&js, &t, &Filter::default(), false)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(
        rest.iter()
            .any(|e| matches!(e, Entry::Replayed { failure, .. } if failure.work_id == "d2"))
    );
    assert!(
        rest.iter()
            .any(|e| matches!(e, Entry::Skipped { reason, .. } if reason.contains("poison")))
    );
    let repo_filter = Filter {
        repo: RepoName::parse("github.com/a/two").ok(),
        ..Default::default()
    };
    assert!(
        replay::replay(&js, &t, &repo_filter, true)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `Producer::run` claims the next batch while one publishes and respects the high-water mark
/// all the same; stopped mid-stream, it publishes the batch it holds before returning, so every
/// claimed repository has its work item and none waits out a lease for nothing.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn run_publishes_every_claimed_batch_and_stays_under_the_high_water_mark(pool: PgPool) {
    import_n(&pool, 6000).await;
    let js = js_at(&stack::nats_url()).await;
    let t = topology(&js).await;
    let p = producer(&pool, &js, &t, 4500).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = async {
        // Full: the loop now only looks at the queue once per backoff period.
        while p.metrics.published.get() < 4500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.cancel();
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(p.run(shutdown.clone()), stop)
    })
    .await
    .expect("the producer stopped");
    let stored = stored_items(&js, &t).await;
    assert_eq!(
        stored, 4500,
        "topped up to the high-water mark and no further"
    );
    let claimed = enqueued_repos(&pool).await;
    assert_eq!(claimed, stored, "every claimed repository was published");

    // Stopped while it holds a claimed batch: that batch is still published.
    let workers = consumer(&js, &t, WORKER_SCHEDULED).await;
    queued(&workers, 4500).await;
    let p = producer(&pool, &js, &t, 100_000).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = async {
        while p.metrics.claimed.get() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        shutdown.cancel();
    };
    tokio::join!(p.run(shutdown.clone()), stop);
    let claimed = enqueued_repos(&pool).await;
    let stored = stored_items(&js, &t).await;
    assert!(claimed > 4500);
    assert_eq!(claimed, 4500 + stored, "the batch in hand was published");
}

/// Work items held in the work stream.
async fn stored_items(js: &jetstream::Context, t: &Topology) -> u64 {
    js.get_stream(t.work_stream())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Repositories the producer has ever claimed.
async fn enqueued_repos(pool: &PgPool) -> u64 {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM repos WHERE last_enqueued_at IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
    n.try_into().unwrap()
}

/// `/readyz` of a running producer says 503 and names the dependency while PostgreSQL or NATS
/// is down, and 200 once it is back.
#[tokio::test]
async fn readyz_names_postgres_or_nats_while_it_is_down() {
    use clap::Parser as _;
    use fleet_tests::pg::PrivatePostgres;
    use fleet_tests::probe::readyz_until;
    let pg = PrivatePostgres::start();
    let mut nats = PrivateNats::start();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", stack::free_port()).parse().unwrap();
    let cli = producer::config::Cli::try_parse_from([
        "producer",
        "run",
        "--database-url",
        &pg.url(),
        "--nats-url",
        &nats.url(),
        "--http-addr",
        &addr.to_string(),
        "--backoff-cap-secs",
        "1",
    ])
    .unwrap();
    let producer::config::Command::Run(args) = cli.command else {
        unreachable!("parsed as run")
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(producer::run(args, shutdown.clone()));
    let wait = Duration::from_secs(30);
    readyz_until(addr, 200, "ready", wait).await;

    pg.stop();
    readyz_until(addr, 503, "postgres", wait).await;
    pg.resume();
    readyz_until(addr, 200, "ready", wait).await;

    nats.stop();
    readyz_until(addr, 503, "nats: disconnected", wait).await;
    nats.resume();
    readyz_until(addr, 200, "ready", wait).await;

    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// `producer enqueue` and `producer replay` only publish and read: they need the fleet's names,
/// not its settings. Against a fleet whose services run another ack wait than the command's
/// defaults they work; against a prefix no service has set up they say so.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn one_shot_commands_need_the_names_not_the_services_settings(pool: PgPool) {
    let js = js_at(&stack::nats_url()).await;
    let t = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("oneshot"),
        work_ack_wait_secs: 30,
        ..Default::default()
    })
    .unwrap();
    t.ensure(&js).await.unwrap();
    let producer = |prefix: &str, args: &[&str]| {
        std::process::Command::new(stack::workspace_binary("producer"))
            .args(args)
            .env("DATABASE_URL", stack::database_url_of(&pool))
            .env("NATS_URL", stack::nats_url())
            .env("NATS_PREFIX", prefix)
            .env_remove("WORK_ACK_WAIT_SECS")
            .output()
            .unwrap()
    };
    let prefix = t.args().nats_prefix.clone();
    let enqueued = producer(&prefix, &["enqueue", "github.com/ossf/scorecard"]);
    assert!(
        enqueued.status.success(),
        "{}",
        String::from_utf8_lossy(&enqueued.stderr)
    );
    let manual = queued(&consumer(&js, &t, WORKER_MANUAL).await, 10).await;
    assert_eq!(manual.len(), 1);
    let replayed = producer(&prefix, &["replay", "--dry-run"]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );

    let nowhere = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("nowhere"),
        ..Default::default()
    })
    .unwrap();
    let refused = producer(
        &nowhere.args().nats_prefix,
        &["enqueue", "github.com/ossf/scorecard"],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains(&nowhere.work_stream()) && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(
        js.get_stream(nowhere.work_stream()).await.is_err(),
        "a one-shot command creates nothing"
    );
}

/// Adds a discovered repository as a GET does (priority -1), asked for `asked` ago (never, if
/// `None`), created `created` ago; `enabled` false with `retired` as the producer or an
/// operator leaves it.
async fn discovered(
    pool: &PgPool,
    repo: &str,
    asked: Option<TimeDelta>,
    created: TimeDelta,
    enabled: bool,
    retired: bool,
) -> i64 {
    let r = RepoName::parse(repo).unwrap();
    let now = Utc::now();
    sqlx::query_scalar(
        "INSERT INTO repos (repo_key, host, owner, name, priority, discovered, last_asked_at,
                            created_at, enabled, retired_at)
         VALUES ($1, 'github.com', $2, $3, -1, true, $4, $5, $6, $7) RETURNING id",
    )
    .bind(r.key())
    .bind(r.owner())
    .bind(r.name())
    .bind(asked.map(|a| now - a))
    .bind(now - created)
    .bind(enabled)
    .bind(retired.then(|| now - TimeDelta::days(1)))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn give_score(pool: &PgPool, id: i64) {
    sqlx::query(
        "INSERT INTO scores (repo_id, work_id, score, commit_sha, scorecard_version, scorecard_commit,
                             scored_at, exit_code, raw_json)
         VALUES ($1, 'w-' || $1, 5.0, 'c', 'v', 'c', now() - interval '10 days', 0, '{}')",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

/// (discovered, enabled, retired, priority) of a repository.
async fn standing(pool: &PgPool, repo: &str) -> (bool, bool, bool, i32) {
    sqlx::query_as(
        "SELECT discovered, enabled, retired_at IS NOT NULL, priority FROM repos WHERE repo_key = $1",
    )
    .bind(RepoName::parse(repo).unwrap().key())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A discovered repository nobody has asked for in PRODUCER_RETIRE_AFTER_INTERVALS score
/// intervals is retired when the producer starts: disabled, its score kept. Ones asked for
/// since, ones a list names and ones an operator disabled are left alone; with retirement off
/// nothing is retired.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn discovered_repositories_nobody_asks_for_are_retired_with_their_data_kept(pool: PgPool) {
    let days = TimeDelta::days;
    // More than one statement's worth of them, asked for four days ago.
    sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name, priority, discovered, last_asked_at,
                            created_at)
         SELECT 'github.com/old/r' || i, 'github.com', 'old', 'r' || i, -1, true,
                now() - interval '4 days', now() - interval '40 days'
         FROM generate_series(1, 2500) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let scored: i64 =
        sqlx::query_scalar("SELECT id FROM repos WHERE repo_key = 'github.com/old/r1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    give_score(&pool, scored).await;
    discovered(&pool, "github.com/never/asked", None, days(4), true, false).await;
    discovered(
        &pool,
        "github.com/asked/lately",
        Some(days(2)),
        days(40),
        true,
        false,
    )
    .await;
    discovered(
        &pool,
        "github.com/operator/off",
        Some(days(40)),
        days(40),
        false,
        false,
    )
    .await;
    let listed = import_n(&pool, 1).await[0].to_string();
    sqlx::query("UPDATE repos SET created_at = now() - interval '40 days' WHERE NOT discovered")
        .execute(&pool)
        .await
        .unwrap();

    let js = js_at(&stack::nats_url()).await;
    let t = topology(&js).await;
    let mut p = producer(&pool, &js, &t, 1).await;
    assert_eq!(p.retire_unasked().await.unwrap(), 0, "off");
    // Three intervals of one day.
    p.settings.retire_after = Some(days(3));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = async {
        while p.metrics.retired.get() < 2501 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(p.run(shutdown.clone()), stop)
    })
    .await
    .expect("the producer retired them at start-up");

    let retired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM repos WHERE NOT enabled AND retired_at IS NOT NULL AND discovered",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(retired, 2501);
    assert_eq!(
        standing(&pool, "github.com/old/r1").await,
        (true, false, true, -1)
    );
    assert_eq!(
        standing(&pool, "github.com/never/asked").await,
        (true, false, true, -1)
    );
    let scores: i64 = sqlx::query_scalar("SELECT count(*) FROM scores WHERE repo_id = $1")
        .bind(scored)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(scores, 1, "a retired repository keeps its score");
    assert_eq!(
        standing(&pool, "github.com/asked/lately").await,
        (true, true, false, -1)
    );
    assert_eq!(
        standing(&pool, "github.com/operator/off").await,
        (true, false, false, -1),
        "an operator's disable is not a retirement (a GET would bring that back)"
    );
    assert_eq!(standing(&pool, &listed).await, (false, true, false, 0));
    assert_eq!(p.metrics.retired.get(), 2501);
    assert_eq!(p.retire_unasked().await.unwrap(), 0, "once");
}

/// A list naming a discovered repository adopts it: no longer discovered (so never retired),
/// at a list's priority, and enabled again if the producer had retired it, so it is scheduled.
/// One an operator disabled stays disabled; a retired one no list names stays retired.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn an_import_adopts_discovered_repositories_and_brings_retired_ones_back(pool: PgPool) {
    let days = TimeDelta::days;
    let back = discovered(
        &pool,
        "github.com/gone/back",
        Some(days(60)),
        days(60),
        false,
        true,
    )
    .await;
    give_score(&pool, back).await;
    discovered(
        &pool,
        "github.com/asked/for",
        Some(days(1)),
        days(9),
        true,
        false,
    )
    .await;
    discovered(
        &pool,
        "github.com/operator/off",
        None,
        days(9),
        false,
        false,
    )
    .await;
    discovered(&pool, "github.com/not/listed", None, days(60), false, true).await;
    let list = import::parse(
        "list.csv",
        b"repo,metadata\ngithub.com/Gone/Back,\ngithub.com/asked/for,criticality_score:0.71\n\
          github.com/operator/off,\n",
    )
    .unwrap();
    let done = import::write_parsed(&pool, &list).await.unwrap();
    assert_eq!((done.new, done.existing), (0, 3));
    assert_eq!(
        standing(&pool, "github.com/gone/back").await,
        (false, true, false, 0)
    );
    assert_eq!(
        standing(&pool, "github.com/asked/for").await,
        (false, true, false, 7)
    );
    assert_eq!(
        standing(&pool, "github.com/operator/off").await,
        (false, false, false, 0)
    );
    assert_eq!(
        standing(&pool, "github.com/not/listed").await,
        (true, false, true, -1)
    );
    let claimed: Vec<i64> = claim::claim(&pool, Default::default(), 10, TimeDelta::hours(1))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(claimed.contains(&back), "scheduled again: {claimed:?}");
}
