//! The sink against the stack's NATS and a fresh PostgreSQL database per test.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::v1::{FailureClass, ScoreResult, WorkFailure, WorkItem};
use fleet_proto::{RepoName, timestamp};
use fleet_runtime::db::DbHealth;
use fleet_runtime::http::Readiness;
use fleet_runtime::topology::{self, SINK, Topology, TopologyArgs};
use fleet_tests::pg::PrivatePostgres;
use fleet_tests::pgbouncer::PrivatePgBouncer;
use fleet_tests::results::{repo_list, result_for};
use fleet_tests::stack;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use prost::Message;
use sink::consume::{BatchReport, Sink};
use sink::decode::Record;
use sink::metrics::Metrics;
use sink::schedule::Schedule;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

struct Harness {
    js: jetstream::Context,
    topology: Topology,
    sink: Sink,
}

fn schedule() -> Schedule {
    Schedule {
        interval: TimeDelta::days(14),
        jitter: TimeDelta::hours(24),
        missing_for: TimeDelta::days(7),
    }
}

async fn harness(pool: PgPool) -> Harness {
    let client = async_nats::connect(stack::nats_url())
        .await
        .expect("the stack's NATS (dev/stack up)");
    let js = jetstream::new(client);
    let topology = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("sink"),
        ..Default::default()
    })
    .unwrap();
    topology.ensure(&js).await.unwrap();
    let sink = sink_on(&js, &topology, pool, SINK).await;
    Harness { js, topology, sink }
}

async fn sink_on(
    js: &jetstream::Context,
    topology: &Topology,
    pool: PgPool,
    consumer: &str,
) -> Sink {
    topology::ensure_consumer(
        js,
        &topology.results_stream(),
        topology.sink_consumer(consumer),
    )
    .await
    .unwrap();
    let consumer: PullConsumer = js
        .get_stream(topology.results_stream())
        .await
        .unwrap()
        .get_consumer(consumer)
        .await
        .unwrap();
    // Started, as `sink::run` leaves it before the loop.
    let readiness = Readiness::default();
    readiness.set(true);
    let metrics = Metrics::register(&mut Registry::default());
    Sink {
        js: js.clone(),
        consumer,
        pool,
        timeouts: Default::default(),
        events: None,
        topology: topology.clone(),
        schedule: schedule(),
        db: DbHealth::new(metrics.db_errors.clone(), readiness),
        metrics,
        batch_size: 100,
        batch_wait: Duration::from_millis(300),
        writers: 2,
    }
}

impl Harness {
    async fn publish(&self, subject: String, payload: Vec<u8>) {
        self.js
            .publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    async fn result(&self, r: &ScoreResult) {
        self.publish(self.topology.results_subject(), r.encode_to_vec())
            .await;
    }
    async fn failure(&self, f: &WorkFailure) {
        self.publish(self.topology.failures_subject(), f.encode_to_vec())
            .await;
    }
}

/// Fetches and processes batches until the consumer has nothing more.
async fn drain(sink: &Sink) -> Vec<BatchReport> {
    let shutdown = CancellationToken::new();
    let mut reports = Vec::new();
    loop {
        let batch = sink.fetch().await.unwrap();
        if batch.is_empty() {
            return reports;
        }
        reports.push(sink.process(batch, &shutdown).await.unwrap());
    }
}

async fn pending(sink: &Sink) -> (u64, usize) {
    let mut consumer = sink.consumer.clone();
    let info = consumer.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn duplicates_and_late_old_results_change_nothing(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let r = repo("github.com/OSSF/Scorecard");
    let old = result_for(&r, "w-old", at("2026-01-01T00:00:00Z"), 0);
    let new = result_for(&r, "w-new", at("2026-02-01T00:00:00Z"), 1);
    // Newest first, then the old one late, then both again (redeliveries).
    for res in [&new, &old, &new, &old] {
        h.result(res).await;
    }
    drain(&h.sink).await;

    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(history, 2, "one history row per work id");
    let (work, score, raw): (String, Option<f64>, String) =
        sqlx::query_as("SELECT work_id, score::float8, raw_json FROM scores")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        work, "w-new",
        "the late old result did not overwrite the new one"
    );
    assert_eq!(score, new.score);
    assert_eq!(raw, new.raw_json);
    let checks: Vec<(String, Option<i16>)> =
        sqlx::query_as("SELECT name, score FROM score_checks ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut want: Vec<(String, Option<i16>)> = new
        .checks
        .iter()
        .map(|c| (c.name.clone(), c.score.map(|s| s as i16)))
        .collect();
    want.sort();
    assert_eq!(checks, want);
    // The repo row was created with its spelling, keyed lower-case, and scheduled.
    let (key, owner, next_due, last_scored): (String, String, DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT repo_key, owner, next_due_at, last_scored_at FROM repos")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (key.as_str(), owner.as_str()),
        ("github.com/ossf/scorecard", "OSSF")
    );
    assert_eq!(last_scored, at("2026-02-01T00:00:00Z"));
    assert_eq!(
        next_due,
        schedule().next_due_after_result(last_scored, "w-new")
    );
    assert_eq!(pending(&h.sink).await, (0, 0), "everything acked");

    // The old result arriving alone, later, still changes nothing.
    h.result(&old).await;
    drain(&h.sink).await;
    let work: String = sqlx::query_scalar("SELECT work_id FROM scores")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(work, "w-new");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn per_check_scores_are_queryable_and_null_is_not_zero(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let repos = repo_list();
    for (i, r) in repos.iter().take(30).enumerate() {
        let mut res = result_for(r, &format!("w{i}"), at("2026-03-01T00:00:00Z"), i);
        if i == 0 {
            res.score = None;
        }
        h.result(&res).await;
    }
    drain(&h.sink).await;
    // Every fixture has Maintained 0 or 10; "Maintained < 3" is an indexed query on columns.
    let low: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM score_checks WHERE name = 'Maintained' AND score < 3",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(low, 20, "two of the three fixtures have Maintained 0");
    let nulls: i64 = sqlx::query_scalar("SELECT count(*) FROM scores WHERE score IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(nulls, 1, "an inconclusive score is NULL, not 0");
    let inconclusive_checks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM score_checks WHERE name = 'CI-Tests' AND score IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(inconclusive_checks, 30, "CI-Tests is -1 in every fixture");
}

fn failure(
    r: &RepoName,
    work_id: &str,
    class: FailureClass,
    failed_at: DateTime<Utc>,
) -> WorkFailure {
    WorkFailure {
        work_id: work_id.into(),
        item: Some(WorkItem {
            id: work_id.into(),
            repo: r.to_string(),
            ..Default::default()
        }),
        class: class as i32,
        message: format!("{} for {r}", class.name()),
        attempts: 5,
        failed_at: Some(timestamp(failed_at)),
        ..Default::default()
    }
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn failures_are_recorded_once_and_back_off_by_class(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let gone = repo("github.com/deleted-org/gone");
    let t1 = at("2026-04-01T00:00:00Z");
    let f1 = failure(&gone, "f1", FailureClass::ScanFailed, t1);
    h.failure(&f1).await;
    h.failure(&f1).await; // redelivered
    drain(&h.sink).await;
    let row = || async {
        sqlx::query_as::<_, (String, i32, DateTime<Utc>)>(
            "SELECT f.class, f.consecutive, r.next_due_at FROM work_failures f JOIN repos r ON r.id = f.repo_id",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(
        row().await,
        ("SCAN_FAILED".into(), 1, t1 + TimeDelta::days(1))
    );

    let t2 = t1 + TimeDelta::days(1);
    h.failure(&failure(&gone, "f2", FailureClass::ScanFailed, t2))
        .await;
    drain(&h.sink).await;
    assert_eq!(
        row().await,
        ("SCAN_FAILED".into(), 2, t2 + TimeDelta::days(2))
    );

    // A success clears the failure; a failure older than that success is then ignored.
    let ok = result_for(&gone, "w-ok", t2 + TimeDelta::days(3), 0);
    h.result(&ok).await;
    h.failure(&failure(
        &gone,
        "f-late",
        FailureClass::Timeout,
        t2 + TimeDelta::days(1),
    ))
    .await;
    drain(&h.sink).await;
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM work_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failures, 0);

    // A failure that names no valid repository is acked and skipped, not retried forever.
    let mut nameless = failure(&gone, "f-bad", FailureClass::Infra, t2);
    nameless.item.as_mut().unwrap().repo = "not a repo".into();
    h.failure(&nameless).await;
    drain(&h.sink).await;
    assert_eq!(pending(&h.sink).await, (0, 0));
}

/// `Sink::run` with several batches written at once: results for the same repositories,
/// old and new, land in different concurrent transactions beside failures for them, in batches
/// of 500 (the bulk path) and of a few (the small one). The newest result wins everywhere, every
/// work id is recorded once, and no write had to be retried (a deadlock would be).
/// A pool of the test's database through `bouncer` (transaction pooling), or the direct one.
async fn writers_pool(pool: &PgPool, bouncer: Option<&PrivatePgBouncer>) -> PgPool {
    match bouncer {
        Some(b) => sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&b.url_of(pool))
            .await
            .expect("connect through pgbouncer"),
        None => pool.clone(),
    }
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn concurrent_writers_keep_the_newest_score_and_never_deadlock(pool: PgPool) {
    concurrent_writers(pool, None).await;
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn concurrent_writers_through_pgbouncer_in_transaction_mode(pool: PgPool) {
    let bouncer = PrivatePgBouncer::start();
    concurrent_writers(pool, Some(&bouncer)).await;
}

async fn concurrent_writers(pool: PgPool, bouncer: Option<&PrivatePgBouncer>) {
    let writing = writers_pool(&pool, bouncer).await;
    let h = harness(pool.clone()).await;
    let repos: Vec<RepoName> = repo_list().into_iter().take(40).collect();
    let base = at("2026-03-01T00:00:00Z");
    let mut newest = std::collections::HashMap::new();
    let mut results = 0;
    // Each repository gets 15 results in a shuffled (but fixed) order of time, and a failure
    // older than its newest result.
    for round in 0..15i64 {
        for (i, r) in repos.iter().enumerate() {
            let minutes = (round * 7 + i as i64 * 3) % 15;
            let t = base + TimeDelta::minutes(minutes);
            let id = format!("w-{i}-{round}");
            h.result(&result_for(r, &id, t, round as usize)).await;
            results += 1;
            let best = newest.entry(r.key()).or_insert((t, id.clone()));
            if (t, &id) > (best.0, &best.1) {
                *best = (t, id);
            }
            if round == 7 {
                h.failure(&failure(r, &format!("f-{i}"), FailureClass::Timeout, t))
                    .await;
            }
        }
    }
    for (batch_size, writers) in [(500, 2), (3, 4)] {
        let mut sink = sink_on(&h.js, &h.topology, writing.clone(), &format!("w{writers}")).await;
        sink.batch_size = batch_size;
        sink.writers = writers;
        sqlx::query("TRUNCATE scores, score_history, score_checks, work_failures")
            .execute(&pool)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let run = sink.run(shutdown.clone());
        let watch = async {
            // Everything was published before the sink started, so nothing pending or unacked
            // means everything was committed.
            while pending(&sink).await != (0, 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            shutdown.cancel();
        };
        let (ran, ()) =
            tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(run, watch) })
                .await
                .expect("the sink wrote everything");
        ran.unwrap();
        assert_eq!(
            fleet_runtime::db::errors_total(&sink.metrics.db_errors),
            0,
            "no write was retried"
        );
        let history: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(history as usize, results);
        let latest: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT r.repo_key, s.work_id, s.scored_at FROM scores s JOIN repos r ON r.id = s.repo_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(latest.len(), repos.len());
        for (key, work_id, scored_at) in latest {
            assert_eq!((scored_at, work_id), newest[&key].clone(), "{key}");
        }
        let checks: i64 = sqlx::query_scalar("SELECT count(DISTINCT repo_id) FROM score_checks")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(checks as usize, repos.len());
        let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM work_failures")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            failures, 0,
            "every failure is older than its repository's newest result"
        );
    }
}

/// A batch first locks its repositories: a failure written while another transaction holds
/// its repository (a concurrent batch writing a newer result) waits for it, then sees the newer
/// score and is not recorded. Without the lock it would be recorded beside the newer score,
/// as neither transaction sees the other's uncommitted row.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_batch_waits_for_another_holding_its_repository(pool: PgPool) {
    batch_waits(pool, None).await;
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_batch_waits_for_another_through_pgbouncer_in_transaction_mode(pool: PgPool) {
    let bouncer = PrivatePgBouncer::start();
    batch_waits(pool, Some(&bouncer)).await;
}

async fn batch_waits(pool: PgPool, bouncer: Option<&PrivatePgBouncer>) {
    let writing = writers_pool(&pool, bouncer).await;
    let r = repo("github.com/ossf/scorecard");
    let old = result_for(&r, "w-old", at("2026-03-01T00:00:00Z"), 0);
    sink::upsert::write_batch(
        &writing,
        Default::default(),
        &[Record::Result(old)],
        &schedule(),
        false,
    )
    .await
    .unwrap();
    let repo_id: i64 = sqlx::query_scalar("SELECT id FROM repos")
        .fetch_one(&pool)
        .await
        .unwrap();

    // The other batch: holds the repository and is about to commit a newer score.
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM repos WHERE id = $1 FOR UPDATE")
        .bind(repo_id)
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("UPDATE scores SET work_id = 'w-new', scored_at = $2 WHERE repo_id = $1")
        .bind(repo_id)
        .bind(at("2026-03-03T00:00:00Z"))
        .execute(&mut *other)
        .await
        .unwrap();

    let f = failure(
        &r,
        "f-between",
        FailureClass::Timeout,
        at("2026-03-02T00:00:00Z"),
    );
    let write = tokio::spawn({
        let pool = writing.clone();
        async move {
            sink::upsert::write_batch(
                &pool,
                Default::default(),
                &[Record::Failure(f)],
                &schedule(),
                false,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "the failure's batch waited for the repository"
    );
    other.commit().await.unwrap();
    let written = write.await.unwrap().unwrap();
    assert_eq!(written.failures_recorded, 0, "older than the newer score");
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM work_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failures, 0);
}

/// PostgreSQL text cannot hold NUL. A result or failure carrying one (a `\u0000` escape in
/// scorecard's JSON) is written with the character replaced, instead of failing its batch on
/// every retry and stopping the sink.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn nul_characters_are_replaced_not_fatal(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let r = repo("github.com/ossf/scorecard");
    let mut res = result_for(&r, "w-nul", at("2026-03-01T00:00:00Z"), 0);
    res.checks[0].reason = "before\0after".into();
    res.checks[1].name = "Odd\0Name".into();
    res.raw_json = res.raw_json.replacen('{', "{\"x\":\"\0\",", 1);
    h.result(&res).await;
    let other = repo("github.com/ossf/other");
    let mut f = failure(
        &other,
        "f-nul",
        FailureClass::ScanFailed,
        at("2026-03-01T00:00:00Z"),
    );
    f.message = "Skipping \0 repo".into();
    h.failure(&f).await;
    let reports = drain(&h.sink).await;
    assert_eq!(reports.iter().map(|r| r.poison).sum::<usize>(), 0);
    assert_eq!(pending(&h.sink).await, (0, 0));
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM score_checks WHERE reason LIKE 'before%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reason, "before\u{FFFD}after");
    let message: String = sqlx::query_scalar("SELECT message FROM work_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(message, "Skipping \u{FFFD} repo");
}

/// A result older than the repository's recorded failure, delivered after it (batches commit
/// out of stream order with several writers): the score is recorded, but the newer failure and
/// the retry it scheduled stay.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn an_older_result_does_not_erase_a_newer_failure(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let r = repo("github.com/ossf/scorecard");
    let t2 = at("2026-05-02T00:00:00Z");
    h.failure(&failure(&r, "f-new", FailureClass::ScanFailed, t2))
        .await;
    drain(&h.sink).await;
    h.result(&result_for(&r, "w-old", at("2026-05-01T00:00:00Z"), 0))
        .await;
    drain(&h.sink).await;
    let (work_id, scored_at): (String, DateTime<Utc>) =
        sqlx::query_as("SELECT work_id, scored_at FROM scores")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(work_id, "w-old");
    let (failure_id, next_due): (String, DateTime<Utc>) = sqlx::query_as(
        "SELECT f.work_id, r.next_due_at FROM work_failures f JOIN repos r ON r.id = f.repo_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failure_id, "f-new");
    assert_eq!(
        next_due,
        t2 + TimeDelta::days(1),
        "the failure's retry, not scored_at + 14 days"
    );
    assert!(scored_at < t2);
}

/// scorecard's answer for a repository GitHub does not have (fixtures/README.md) is trusted for
/// SINK_MISSING_FOR_DAYS: remembered on the row, and the repository is not due before it runs
/// out. Another scan failure leaves the memory; a score newer than the check clears it, one
/// older (delivered late) does not.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_repository_github_does_not_have_is_not_rescanned_until_that_answer_expires(
    pool: PgPool,
) {
    let h = harness(pool.clone()).await;
    let gone = repo("github.com/Deleted-Org/Gone");
    let flaky = repo("github.com/ossf/flaky");
    let t1 = at("2026-04-01T00:00:00Z");
    let mut missing = failure(&gone, "f-404", FailureClass::ScanFailed, t1);
    missing.message = "Skipping github.com/Deleted-Org/Gone: repo unreachable: GET \
                       https://api.github.com/repos/Deleted-Org/Gone: 404 Not Found []"
        .into();
    let mut outage = failure(&flaky, "f-500", FailureClass::ScanFailed, t1);
    outage.message = "Skipping github.com/ossf/flaky: repo unreachable: GET \
                      https://api.github.com/repos/ossf/flaky: 500 Internal Server Error []"
        .into();
    h.failure(&missing).await;
    h.failure(&outage).await;
    drain(&h.sink).await;
    type Row = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, DateTime<Utc>);
    let row = |r: &RepoName| {
        let (pool, key) = (pool.clone(), r.key());
        async move {
            sqlx::query_as::<_, Row>(
                "SELECT missing_checked_at, missing_until, next_due_at FROM repos WHERE repo_key = $1",
            )
            .bind(key)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let until = t1 + TimeDelta::days(7);
    assert_eq!(
        row(&gone).await,
        (Some(t1), Some(until), until),
        "due when the answer expires, not after SCAN_FAILED's one day"
    );
    assert_eq!(
        row(&flaky).await,
        (None, None, t1 + TimeDelta::days(1)),
        "GitHub's 500 says nothing about the repository"
    );

    // Another failure of the repository leaves what the 404 said.
    let t2 = t1 + TimeDelta::days(2);
    let mut again = failure(&gone, "f-500-gone", FailureClass::ScanFailed, t2);
    again.message = outage.message.replace("ossf/flaky", "Deleted-Org/Gone");
    h.failure(&again).await;
    drain(&h.sink).await;
    let (checked, kept, _) = row(&gone).await;
    assert_eq!((checked, kept), (Some(t1), Some(until)));

    // A result from before the check, delivered late, does not say it exists now.
    h.result(&result_for(&gone, "w-before", t1 - TimeDelta::days(1), 0))
        .await;
    drain(&h.sink).await;
    let (checked, kept, _) = row(&gone).await;
    assert_eq!((checked, kept), (Some(t1), Some(until)));

    // A score after it does.
    let t3 = t1 + TimeDelta::days(10);
    h.result(&result_for(&gone, "w-back", t3, 0)).await;
    drain(&h.sink).await;
    assert_eq!(
        row(&gone).await,
        (None, None, schedule().next_due_after_result(t3, "w-back"))
    );
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn poison_is_dead_lettered_with_its_reason_and_the_rest_written(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let good = result_for(
        &repo("github.com/a/b"),
        "w-good",
        at("2026-05-01T00:00:00Z"),
        2,
    );
    h.result(&good).await;
    h.publish(
        h.topology.results_subject(),
        b"\x08\x96\x01garbage\xff".to_vec(),
    )
    .await;
    let mut bad_repo = good.clone();
    bad_repo.work_id = "w-bad".into();
    bad_repo.repo = "github.com/../etc".into();
    h.result(&bad_repo).await;
    let reports = drain(&h.sink).await;
    assert_eq!(reports.iter().map(|r| r.poison).sum::<usize>(), 2);
    assert_eq!(
        pending(&h.sink).await,
        (0, 0),
        "poison terminated, not redelivered"
    );
    let scores: i64 = sqlx::query_scalar("SELECT count(*) FROM scores")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(scores, 1);

    let dead =
        h.js.get_stream(h.topology.dead_stream())
            .await
            .unwrap()
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
    let mut messages = dead.fetch().max_messages(10).messages().await.unwrap();
    let mut letters = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        assert_eq!(m.subject.as_str(), h.topology.dead_subject("POISON"));
        letters.push(WorkFailure::decode(m.payload.clone()).unwrap());
    }
    assert_eq!(letters.len(), 2);
    assert!(
        letters[0].message.contains("undecodable ScoreResult"),
        "{}",
        letters[0].message
    );
    assert_eq!(letters[0].source_payload, b"\x08\x96\x01garbage\xff");
    assert_eq!(letters[0].source_subject, h.topology.results_subject());
    assert!(
        letters[1].message.contains("w-bad"),
        "{}",
        letters[1].message
    );
}

/// PostgreSQL stops in the middle of the run: nothing is acked while it is down, `/readyz`
/// turns false, and once it is back every result is written exactly once.
#[tokio::test]
async fn a_postgres_restart_mid_run_loses_nothing_and_duplicates_nothing() {
    let pg = PrivatePostgres::start();
    let pool = pg.pool().await;
    fleet_runtime::db::migrate(&pool, Default::default())
        .await
        .unwrap();
    let h = harness(pool.clone()).await;
    let repos = repo_list();
    let t = at("2026-06-01T00:00:00Z");
    for (i, r) in repos.iter().take(250).enumerate() {
        h.result(&result_for(r, &format!("w{i}"), t, i)).await;
    }
    let shutdown = CancellationToken::new();
    let first = h.sink.fetch().await.unwrap();
    assert_eq!(
        h.sink
            .process(first, &shutdown)
            .await
            .unwrap()
            .written
            .history_rows,
        100
    );

    pg.stop();
    let second = h.sink.fetch().await.unwrap();
    assert_eq!(second.len(), 100);
    let sink = &h.sink;
    let writing = sink.process(second, &shutdown);
    tokio::pin!(writing);
    // Let it fail a few times against the stopped database.
    let outcome = tokio::time::timeout(Duration::from_secs(4), &mut writing).await;
    assert!(
        outcome.is_err(),
        "the batch cannot finish while PostgreSQL is down"
    );
    assert!(!sink.db.readiness().get(), "/readyz reports the outage");
    assert_eq!(pending(sink).await.1, 100, "the held batch is not acked");

    pg.resume();
    let report = writing.await.unwrap();
    assert_eq!(report.written.history_rows, 100);
    assert!(sink.db.readiness().get());
    drain(sink).await;

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT work_id) FROM score_history")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (250, 250));
    assert_eq!(pending(sink).await, (0, 0));
}

/// A fresh database fed the whole results stream by a new consumer ends with the same scores.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn replaying_the_results_stream_rebuilds_the_same_scores(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let repos = repo_list();
    let t = at("2026-07-01T00:00:00Z");
    for (i, r) in repos.iter().take(120).enumerate() {
        // Two results per repository for some, in either order, and a failure for others.
        h.result(&result_for(
            r,
            &format!("a{i}"),
            t + TimeDelta::hours(i as i64 % 5),
            i,
        ))
        .await;
        if i % 3 == 0 {
            h.result(&result_for(
                r,
                &format!("b{i}"),
                t - TimeDelta::days(1),
                i + 1,
            ))
            .await;
        }
        if i % 7 == 0 {
            h.failure(&failure(
                &repos[500 + i],
                &format!("f{i}"),
                FailureClass::Timeout,
                t,
            ))
            .await;
        }
    }
    drain(&h.sink).await;

    // The rebuild: an empty database next to the first, and a new consumer from the start.
    let rebuilt_name = format!("rebuild_{}", &stack::unique("db")[3..]).replace('-', "_");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {rebuilt_name}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let rebuilt = PgPool::connect(&stack::database_url_for(&rebuilt_name))
        .await
        .unwrap();
    fleet_runtime::db::migrate(&rebuilt, Default::default())
        .await
        .unwrap();
    let replayer = sink_on(&h.js, &h.topology, rebuilt.clone(), "rebuild").await;
    drain(&replayer).await;

    let snapshot = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, String, Option<f64>, String, String, DateTime<Utc>)>(
            "SELECT r.repo_key, s.work_id, s.score::float8,
                    (SELECT string_agg(c.name || '=' || coalesce(c.score::text, '?') || ' ' || c.reason,
                                       '|' ORDER BY c.name)
                     FROM score_checks c WHERE c.repo_id = s.repo_id),
                    s.raw_json, r.next_due_at
             FROM scores s JOIN repos r ON r.id = s.repo_id ORDER BY r.repo_key",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let original = snapshot(pool.clone()).await;
    assert_eq!(original.len(), 120);
    assert_eq!(snapshot(rebuilt.clone()).await, original);
    let failures = |pool: PgPool| async move {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT count(*), coalesce(string_agg(work_id, ',' ORDER BY work_id), '') FROM work_failures",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(
        failures(rebuilt.clone()).await,
        failures(pool.clone()).await
    );
    rebuilt.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {rebuilt_name}")))
        .execute(&pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn status_and_show_tell_operators_what_they_need(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let now = Utc::now();
    let fresh = repo("github.com/fresh/one");
    h.result(&result_for(&fresh, "w1", now - TimeDelta::days(1), 0))
        .await;
    h.failure(&failure(
        &repo("github.com/gone/two"),
        "f1",
        FailureClass::ScanFailed,
        now,
    ))
    .await;
    drain(&h.sink).await;
    sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name, next_due_at)
         VALUES ('github.com/due/three', 'github.com', 'due', 'three', now() - interval '3 days 2 hours')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let status = fleet_runtime::status::status(
        &fleet_runtime::db::Db::new(pool.clone(), Default::default()),
        TimeDelta::days(14),
    )
    .await
    .unwrap();
    assert_eq!(status.repos, 3);
    assert_eq!(status.fresh, 1);
    assert_eq!(status.due_now, 1);
    assert_eq!(status.never_scored, 2);
    assert_eq!(status.failed_by_class, vec![("SCAN_FAILED".to_owned(), 1)]);
    let text = sink::report::render_status(&status, TimeDelta::days(14), now);
    assert!(text.contains("33.3% scored within 14 days"), "{text}");
    assert!(
        text.contains("oldest overdue") && text.contains("3d"),
        "{text}"
    );

    let shown = sink::report::show(&pool, &fresh).await.unwrap();
    assert!(shown.contains("score 4.3"), "{shown}");
    assert!(shown.contains("Binary-Artifacts"), "{shown}");
    assert!(shown.contains("history (latest 10)"), "{shown}");
    let gone = sink::report::show(&pool, &repo("github.com/gone/two"))
        .await
        .unwrap();
    assert!(gone.contains("last failure SCAN_FAILED"), "{gone}");
    let missing = sink::report::show(&pool, &repo("github.com/nope/nope"))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("not in the database"),
        "{missing}"
    );
}

/// A long manual transaction holding a repository (an `UPDATE repos …` from the runbook) does
/// not stall a batch silently: the batch fails on `lock_timeout` and is retried, the metric
/// and `/readyz` say why, and once the lock is gone the result is written once.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_held_lock_fails_the_batch_fast_and_says_why(pool: PgPool) {
    let mut h = harness(pool.clone()).await;
    h.sink.timeouts = fleet_runtime::db::Timeouts {
        statement: Duration::from_secs(30),
        lock: Duration::from_millis(300),
    };
    let r = repo("github.com/ossf/scorecard");
    h.result(&result_for(&r, "w-old", at("2026-03-01T00:00:00Z"), 0))
        .await;
    drain(&h.sink).await;

    let mut manual = pool.begin().await.unwrap();
    sqlx::query("UPDATE repos SET priority = priority + 1 WHERE repo_key = $1")
        .bind(r.key())
        .execute(&mut *manual)
        .await
        .unwrap();
    h.result(&result_for(&r, "w-new", at("2026-03-02T00:00:00Z"), 1))
        .await;
    let batch = h.sink.fetch().await.unwrap();
    let shutdown = CancellationToken::new();
    let writing = h.sink.process(batch, &shutdown);
    tokio::pin!(writing);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut writing)
            .await
            .is_err(),
        "the batch cannot commit while the row is held"
    );
    let lock_timeouts = h
        .sink
        .metrics
        .db_errors
        .get_or_create(&fleet_runtime::db::ErrorKind::LockTimeout.label())
        .get();
    assert!(
        lock_timeouts >= 2,
        "failed fast and retried: {lock_timeouts}"
    );
    let why = h.sink.db.readiness().reason().unwrap_or_default();
    assert!(
        why.contains("postgres") && why.contains("lock_timeout"),
        "{why}"
    );

    manual.rollback().await.unwrap();
    let report = writing.await.unwrap();
    assert_eq!(report.written.history_rows, 1);
    assert!(h.sink.db.readiness().get());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

/// Records PostgreSQL always refuses, among good ones in batches of 500: each is found and
/// dead-lettered with PostgreSQL's reason, every good record is written once, the sink keeps
/// running and ready, and nothing is redelivered.
async fn refused_records_are_isolated(pool: PgPool, bad: &[usize]) {
    // A constraint of the test's own stands for any value PostgreSQL always refuses.
    sqlx::query(
        "ALTER TABLE score_history ADD CONSTRAINT refuses_test_commits
         CHECK (commit_sha NOT LIKE 'refused%')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut h = harness(pool.clone()).await;
    h.sink.batch_size = 500;
    let repos = repo_list();
    let t = at("2026-08-01T00:00:00Z");
    for (i, r) in repos.iter().take(1_000).enumerate() {
        let mut result = result_for(r, &format!("w{i}"), t, i);
        if bad.contains(&i) {
            result.commit = format!("refused{i}");
        }
        h.result(&result).await;
    }
    let good = 1_000 - bad.len() as i64;

    let shutdown = CancellationToken::new();
    let checks = async {
        let written = until("every good record written", || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
                .fetch_one(&pool)
                .await
                .unwrap();
            (n == good).then_some(())
        })
        .await;
        let letters = dead_letters(&h, bad.len()).await;
        // Still running: a record published now is written.
        h.result(&result_for(&repos[1_000], "w-after", t, 3)).await;
        let after = until("a later record written", || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
                .fetch_one(&pool)
                .await
                .unwrap();
            (n == good + 1).then_some(())
        })
        .await;
        let ready = h.sink.db.readiness().get();
        shutdown.cancel();
        (written, letters, after, ready)
    };
    let (run, (written, letters, after, ready)) =
        tokio::join!(h.sink.run(shutdown.clone()), checks);
    run.expect("the sink keeps running");
    written.expect("a refused record must not hold its batch");
    after.expect("the sink still writes after refusing records");
    assert!(
        ready,
        "refused records are not an outage: /readyz stays ready"
    );

    let mut refused: Vec<String> = letters
        .iter()
        .map(|l| {
            assert!(
                l.message.contains("refuses_test_commits"),
                "the dead letter carries PostgreSQL's reason: {}",
                l.message
            );
            assert_eq!(l.source_subject, h.topology.results_subject());
            ScoreResult::decode(l.source_payload.as_slice())
                .expect("the original record is kept")
                .work_id
        })
        .collect();
    refused.sort();
    let mut expected: Vec<String> = bad.iter().map(|i| format!("w{i}")).collect();
    expected.sort();
    assert_eq!(refused, expected);

    let (rows, distinct, refused_rows): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT work_id), count(*) FILTER (WHERE commit_sha LIKE 'refused%')
         FROM score_history",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct, refused_rows), (good + 1, good + 1, 0));
    let info = h.sink.consumer.clone().info().await.unwrap().clone();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    assert_eq!(info.num_redelivered, 0, "nothing was redelivered");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn one_refused_record_does_not_hold_its_batch(pool: PgPool) {
    refused_records_are_isolated(pool, &[321]).await;
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn three_refused_records_in_two_batches_are_each_dead_lettered(pool: PgPool) {
    refused_records_are_isolated(pool, &[0, 499, 777]).await;
}

/// What PostgreSQL cannot hold never reaches it: a far-future or pre-epoch time, and text too
/// large for an index, are dead-lettered at decode with a reason a person understands.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn records_postgres_cannot_hold_are_refused_at_decode(pool: PgPool) {
    let h = harness(pool.clone()).await;
    let repos = repo_list();
    let t = at("2026-08-01T00:00:00Z");
    let mut future = result_for(&repos[0], "w-future", t, 0);
    future.scored_at = Some(timestamp(at("3000-01-01T00:00:00Z")));
    let mut long_name = result_for(&repos[1], "w-long", t, 1);
    long_name.checks[0].name = "x".repeat(5_000);
    let long_id = result_for(&repos[2], &"w".repeat(5_000), t, 2);
    let mut ancient = failure(&repos[3], "f-ancient", FailureClass::Timeout, t);
    ancient.failed_at = Some(fleet_proto::Timestamp {
        seconds: -300_000_000_000,
        nanos: 0,
    });
    for r in [&future, &long_name, &long_id] {
        h.result(r).await;
    }
    h.failure(&ancient).await;
    h.result(&result_for(&repos[4], "w-good", t, 4)).await;
    let reports = drain(&h.sink).await;
    assert_eq!(reports.iter().map(|r| r.poison).sum::<usize>(), 4);
    let letters = dead_letters(&h, 4).await;
    let reasons: Vec<&str> = letters.iter().map(|l| l.message.as_str()).collect();
    for expected in ["in the future", "check name", "work_id", "failed_at"] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "a reason mentions {expected:?}: {reasons:?}"
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

/// Exactly `n` dead letters of the harness's dead stream (waits for them).
async fn dead_letters(h: &Harness, n: usize) -> Vec<WorkFailure> {
    let dead =
        h.js.get_stream(h.topology.dead_stream())
            .await
            .unwrap()
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while letters.len() < n && std::time::Instant::now() < deadline {
        let mut batch = dead
            .fetch()
            .max_messages(n + 1)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            letters.push(WorkFailure::decode(m.unwrap().payload.clone()).unwrap());
        }
    }
    assert_eq!(letters.len(), n, "dead letters: {letters:?}");
    letters
}

/// Waits up to 90 s for `check` to hold.
async fn until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    fleet_tests::kube_support::eventually(what, Duration::from_secs(90), || {
        let checked = check();
        async move { Ok(checked.await) }
    })
    .await
}

/// Every event in the harness's events stream, in order.
async fn score_events(h: &Harness) -> Vec<fleet_proto::v1::ScoreChanged> {
    let mut stream = h.js.get_stream(h.topology.events_stream()).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(m) = stream.get_raw_message(sequence).await {
            out.push(fleet_proto::v1::ScoreChanged::decode(m.payload).unwrap());
        }
    }
    out
}

fn publisher(h: &Harness) -> sink::events::Publisher {
    sink::events::Publisher {
        js: h.js.clone(),
        pool: h.sink.pool.clone(),
        timeouts: Default::default(),
        subject: h.topology.score_changed_subject(),
        metrics: h.sink.metrics.clone(),
        wake: Default::default(),
    }
}

/// One event per change of a latest score, by rule: a first score; a changed score (naming the
/// changed check); none for a rescan that changes no score, a late older result, or a
/// redelivered result.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn change_events_follow_each_rule(pool: PgPool) {
    let mut h = harness(pool.clone()).await;
    h.sink.events = Some(Default::default());
    let publisher = publisher(&h);
    let r = repo("github.com/ossf/scorecard");
    let step = async |h: &Harness, result: &ScoreResult| {
        h.result(result).await;
        drain(&h.sink).await;
        while publisher.publish_once().await.unwrap() > 0 {}
        score_events(h).await
    };

    let first = result_for(&r, "w-1", at("2026-04-01T00:00:00Z"), 0);
    let events = step(&h, &first).await;
    assert_eq!(events.len(), 1, "a first score is a change");
    assert!(events[0].first);
    assert_eq!(events[0].work_id, "w-1");
    assert_eq!(events[0].repo, "github.com/ossf/scorecard");
    assert_eq!(events[0].previous_score, None);
    assert_eq!(events[0].checks.len(), first.checks.len());

    let mut changed = first.clone();
    changed.work_id = "w-2".into();
    changed.scored_at = Some(timestamp(at("2026-04-02T00:00:00Z")));
    let name = changed.checks[0].name.clone();
    let was = changed.checks[0].score;
    changed.checks[0].score = Some(if was == Some(10) { 0 } else { 10 });
    let events = step(&h, &changed).await;
    assert_eq!(events.len(), 2, "a changed check score is a change");
    let e = &events[1];
    assert!(!e.first);
    assert_eq!(e.work_id, "w-2");
    assert_eq!(e.checks.len(), 1, "{:?}", e.checks);
    assert_eq!(e.checks[0].name, name);
    assert_eq!(e.checks[0].previous, was);
    assert_eq!(e.checks[0].score, changed.checks[0].score);

    let mut rescan = changed.clone();
    rescan.work_id = "w-3".into();
    rescan.scored_at = Some(timestamp(at("2026-04-03T00:00:00Z")));
    assert_eq!(
        step(&h, &rescan).await.len(),
        2,
        "an unchanged rescan emits nothing"
    );
    let latest: String = sqlx::query_scalar("SELECT work_id FROM scores")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(latest, "w-3", "the rescan is the latest score all the same");

    let mut late = first.clone();
    late.work_id = "w-0".into();
    late.scored_at = Some(timestamp(at("2026-03-01T00:00:00Z")));
    late.score = Some(0.0);
    assert_eq!(
        step(&h, &late).await.len(),
        2,
        "a late older result emits nothing"
    );

    assert_eq!(
        step(&h, &changed).await.len(),
        2,
        "a redelivery emits nothing"
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM score_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0, "published events leave the outbox");
}

/// The sink is SIGKILLed in each window where an event could be lost or doubled — between a
/// batch's commit and its events' publish (the events stream refusing publishes meanwhile),
/// between JetStream's ack and the outbox delete (the outbox held by a lock meanwhile) — and at
/// random while results flow: in the end there is exactly one event per changed score, and
/// none for the results that changed nothing.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_sink_killed_in_every_window_emits_each_change_exactly_once(pool: PgPool) {
    use std::collections::{BTreeMap, HashSet};
    let h = harness(pool.clone()).await;
    let repos = repo_list();
    let t = at("2026-05-01T00:00:00Z");
    // A first score for each of 1,500 repositories; then a newer result for 600 of them,
    // every other one with the same scores.
    let first: Vec<ScoreResult> = (0..1_500)
        .map(|i| result_for(&repos[i], &format!("a{i}"), t, i))
        .collect();
    let second: Vec<ScoreResult> = (0..600)
        .map(|i| {
            let mut r = first[i].clone();
            r.work_id = format!("b{i}");
            r.scored_at = Some(timestamp(t + TimeDelta::hours(1)));
            if i % 2 == 0 {
                r.checks[0].score = Some(if r.checks[0].score == Some(10) { 0 } else { 10 });
            }
            r
        })
        .collect();
    fn scores(r: &ScoreResult) -> (Option<i64>, BTreeMap<&str, Option<i32>>) {
        let checks = r
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.score))
            .collect();
        (r.score.map(|s| (s * 10.0).round() as i64), checks)
    }
    let changed_later = second
        .iter()
        .zip(&first)
        .filter(|(b, a)| scores(b) != scores(a))
        .count();
    assert_eq!(changed_later, 300);
    let changes = first.len() + changed_later;

    let start = || {
        std::process::Command::new(stack::workspace_binary("sink"))
            .arg("run")
            .env_clear()
            .env("DATABASE_URL", stack::database_url_of(&pool))
            .env("NATS_URL", stack::nats_url())
            .env("NATS_PREFIX", &h.topology.args().nats_prefix)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("SINK_BATCH_SIZE", "100")
            .env("SINK_BATCH_WAIT_MS", "50")
            .env("DATABASE_LOCK_TIMEOUT_MS", "1000")
            .env("LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the sink binary (cargo build --bins)")
    };
    let kill = |mut sink: std::process::Child| {
        sink.kill().unwrap();
        sink.wait().unwrap();
    };
    let count = async |sql: &'static str| -> i64 {
        sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
    };
    let history = async || count("SELECT count(*) FROM score_history").await;
    let outbox = async || count("SELECT count(*) FROM score_events").await;
    let published = async || -> u64 {
        let mut stream = h.js.get_stream(h.topology.events_stream()).await.unwrap();
        stream.info().await.unwrap().state.messages
    };

    // At random while the first scores flow.
    for r in &first {
        h.result(r).await;
    }
    // Three sinks killed at random moments (their unacked batches come back after the
    // consumer's 60 s ack wait), then one that writes the rest.
    for life in [1_500, 2_000, 2_500] {
        let sink = start();
        tokio::time::sleep(Duration::from_millis(life)).await;
        kill(sink);
    }
    let sink = start();
    fleet_tests::kube_support::eventually(
        "the first scores written",
        Duration::from_secs(180),
        || async { Ok((history().await >= 1_500).then_some(())) },
    )
    .await
    .unwrap();
    kill(sink);

    // Between commit and publish: once the sink runs, the events stream takes no publishes
    // while the second results are written; the sink dies with their events in the outbox.
    let sink = start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut config =
        h.js.get_stream(h.topology.events_stream())
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .clone();
    let subjects = config.subjects.clone();
    config.subjects = vec![format!("{}.parked", h.topology.events_stream())];
    h.js.update_stream(config.clone()).await.unwrap();
    for r in &second {
        h.result(r).await;
    }
    until("the second results written, their events held", || async {
        (history().await >= 2_100 && outbox().await >= 300).then_some(())
    })
    .await
    .unwrap();
    kill(sink);
    assert_eq!(
        outbox().await,
        300,
        "the changes' events outlive the sink in the outbox"
    );
    let before = published().await;

    // Between ack and delete: the stream takes publishes again, but the outbox's rows cannot
    // be deleted (a lock held here); the sink dies once its publishes are acknowledged.
    config.subjects = subjects;
    h.js.update_stream(config).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE score_events IN SHARE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let sink = start();
    until("the held events published", || async {
        (published().await >= before + 300).then_some(())
    })
    .await
    .unwrap();
    kill(sink);
    holder.rollback().await.unwrap();
    assert_eq!(
        outbox().await,
        300,
        "published, acknowledged, not yet deleted"
    );

    // A last sink, left to finish: the outbox empties, the copies are dropped.
    let sink = start();
    until("the outbox to empty", || async {
        (outbox().await == 0).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill(sink);

    let events = score_events(&h).await;
    let ids: HashSet<&str> = events.iter().map(|e| e.work_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "no change emitted twice");
    assert_eq!(events.len(), changes, "one event per changed score");
    for (i, b) in second.iter().enumerate() {
        assert_eq!(
            ids.contains(b.work_id.as_str()),
            i % 2 == 0,
            "{}: an event exactly when its scores changed",
            b.work_id
        );
    }
}

/// Above 250,000 repositories the status counts come from a block sample, not a walk of the
/// whole table: said to be estimates, and close (totals within the spread of a sample of
/// about 100,000 rows; ratios, which the gauge reports, much closer).
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn status_of_a_large_table_is_estimated_from_a_sample_and_close(pool: PgPool) {
    // 400,000 repositories: every fourth scored a day ago, every tenth disabled.
    sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name, enabled, next_due_at, last_scored_at)
         SELECT 'github.com/o/r' || i, 'github.com', 'o', 'r' || i, i % 10 <> 0,
                now() + interval '1 day',
                CASE WHEN i % 4 = 0 THEN now() - interval '1 day' END
         FROM generate_series(1, 400000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let interval = TimeDelta::days(14);
    let exact = fleet_runtime::status::status(
        &fleet_runtime::db::Db::new(pool.clone(), Default::default()),
        interval,
    )
    .await
    .unwrap();
    assert!(
        !exact.estimated,
        "not analyzed yet: PostgreSQL does not know its size"
    );
    assert_eq!((exact.repos, exact.fresh), (400_000, 100_000));

    sqlx::query("ANALYZE repos").execute(&pool).await.unwrap();
    let s = fleet_runtime::status::status(
        &fleet_runtime::db::Db::new(pool.clone(), Default::default()),
        interval,
    )
    .await
    .unwrap();
    assert!(s.estimated);
    let close = |got: i64, want: f64| (got as f64 - want).abs() / want < 0.15;
    assert!(close(s.repos, 400_000.0), "{s:?}");
    assert!(close(s.enabled, 360_000.0), "{s:?}");
    assert!(close(s.never_scored, 300_000.0), "{s:?}");
    let ratio = s.fresh as f64 / s.repos as f64;
    assert!((ratio - 0.25).abs() < 0.01, "{ratio} {s:?}");
    assert_eq!(s.due_now, 0);
    let text = sink::report::render_status(&s, interval, Utc::now());
    assert!(text.contains("estimated from a sample"), "{text}");

    // Enabled and scored: multiples of 4 that are not multiples of 10, 80,000 of 360,000.
    let (total, fresh) = sink::freshness_counts(&pool, interval).await.unwrap();
    assert!(close(total, 360_000.0), "{total}");
    let ratio = fresh as f64 / total as f64;
    assert!((ratio - 80.0 / 360.0).abs() < 0.01, "{ratio}");
}
