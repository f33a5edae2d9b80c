//! The whole pipeline as processes (producer, workers, sink binaries) on the local stack, and
//! the faults operators meet. Every test ends with the same invariant (`fleet::check_invariant`):
//! every enqueued work item ends as exactly one score or one dead-lettered failure, no work item
//! is scanned twice, and nothing is left unacked.

use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use fleet_proto::v1::FailureClass;
use fleet_runtime::topology::{Topology, TopologyArgs};
use fleet_tests::fleet::{
    FAST, Fleet, SETTLE, check_invariant, scored, settle, sim_ok, wait_scored,
};
use fleet_tests::nats_server::PrivateNats;
use fleet_tests::pg::PrivatePostgres;
use fleet_tests::pgbouncer::PrivatePgBouncer;
use fleet_tests::results::repo_list;
use fleet_tests::stack;
use sqlx::PgPool;

fn topology(max_deliver: i64, ack_wait_secs: u64) -> Topology {
    Topology::new(TopologyArgs {
        nats_prefix: stack::unique("e2e"),
        work_max_deliver: max_deliver,
        work_ack_wait_secs: ack_wait_secs,
        ..Default::default()
    })
    .unwrap()
}

/// A fleet on the stack's NATS and this test's database, with `topology` created.
async fn fleet_on_stack(
    pool: &PgPool,
    topology: Topology,
    env: &[(&str, &str)],
) -> (jetstream::Context, Topology, Fleet) {
    let js = jetstream::new(async_nats::connect(stack::nats_url()).await.unwrap());
    topology.ensure(&js).await.unwrap();
    let fleet = Fleet::prepare(
        &stack::database_url_of(pool),
        &stack::nats_url(),
        topology.clone(),
        env,
    )
    .await;
    (js, topology, fleet)
}

/// Failure rows of the `sim-leak` repositories (scans that printed their token).
async fn leaking_failures(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM work_failures f JOIN repos r ON r.id = f.repo_id
         WHERE r.owner = 'sim-leak'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_real_repo_list_ends_with_every_outcome_and_poison_in_every_stream(pool: PgPool) {
    real_repo_list(pool, None).await;
}

/// The same run with the producer and sink behind PgBouncer in transaction pooling mode, as
/// large deployments run them: nothing prepared by name, no session state.
#[sqlx::test(migrations = false)]
async fn a_real_repo_list_through_pgbouncer_in_transaction_mode(pool: PgPool) {
    let bouncer = PrivatePgBouncer::start();
    real_repo_list(pool, Some(&bouncer)).await;
}

async fn real_repo_list(pool: PgPool, pooler: Option<&PrivatePgBouncer>) {
    let (js, topo, mut fleet) = fleet_on_stack(&pool, topology(1, 30), FAST).await;
    if let Some(pooler) = pooler {
        fleet.through_transaction_pooler(&pooler.url_of(&pool));
    }
    let repos: Vec<String> = repo_list()
        .iter()
        .take(250)
        .map(ToString::to_string)
        .collect();
    // Scans that print their token, in every form it leaks in.
    let leaking: Vec<String> = (0..3)
        .map(|i| format!("github.com/sim-leak/prints-its-token-{i}"))
        .collect();
    fleet.import(&[repos.clone(), leaking].concat());
    // Poison in every stream the fleet reads.
    for subject in [
        topo.manual_subject(),
        topo.results_subject(),
        topo.failures_subject(),
    ] {
        js.publish(subject, b"\x0a\xff\xffnot a message".as_slice().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("worker-2", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    // A person's request with the stock nats CLI, for a repository the database does not know.
    let published = Command::new(stack::tool("nats"))
        .args([
            "--server",
            &stack::nats_url(),
            "pub",
            &topo.manual_subject(),
        ])
        .arg(r#"{"repo":"github.com/sim-ok/By-Hand"}"#)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "nats pub: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    settle(&pool, &js, &topo, SETTLE).await;
    fleet
        .assert_kept_nowhere(fleet_tests::sim::LEAKED_TOKEN, &js)
        .await;
    fleet.stop_all().await;

    let by_hand: Option<f64> = sqlx::query_scalar(
        "SELECT s.score::float8 FROM scores s JOIN repos r ON r.id = s.repo_id
         WHERE r.repo_key = 'github.com/sim-ok/by-hand' AND r.owner = 'sim-ok' AND r.name = 'By-Hand'",
    )
    .fetch_one(&pool)
    .await
    .expect("the hand-enqueued repository has a score row");
    assert!(by_hand.is_some());
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(
        out.enqueued, 255,
        "253 scheduled items, one by hand, one poison message"
    );
    assert_eq!(out.poison, 1);
    let leaked = leaking_failures(&pool).await;
    assert_eq!(leaked, 3, "each leaking scan is one failure");
    for class in [
        FailureClass::PodFailed,
        FailureClass::ScanFailed,
        FailureClass::RateLimited,
        FailureClass::Timeout,
    ] {
        assert!(
            out.failed.values().any(|c| *c == class),
            "no {class:?} in {:?}",
            out.failed
        );
    }
    assert!(out.scored.len() > 180, "most score: {}", out.scored.len());
    let failed_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM work_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        failed_rows as usize,
        out.failed.len(),
        "each failure recorded against its repo"
    );
    // The sink dead-lettered the two poison results/failures messages.
    let mut dead = js.get_stream(topo.dead_stream()).await.unwrap();
    assert_eq!(
        dead.info().await.unwrap().state.messages as usize,
        out.failed.len() + 3
    );
}

#[sqlx::test(migrations = false)]
async fn killed_and_drained_workers_lose_nothing_and_scan_nothing_twice(pool: PgPool) {
    let (js, topo, mut fleet) = fleet_on_stack(&pool, topology(3, 4), FAST).await;
    fleet.import(&sim_ok(200));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("worker-2", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    wait_scored(&pool, 30).await;
    fleet.kill("worker-1");
    wait_scored(&pool, 70).await;
    let status = fleet.terminate("worker-2").await;
    assert!(
        status.success(),
        "a drained worker exits cleanly: {status:?}"
    );
    fleet.start("worker-3", "worker", &[]);
    settle(&pool, &js, &topo, SETTLE).await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(out.scored.len(), 200);
}

/// What operators do every day while work flows: a rolling restart (every worker SIGTERMed in
/// turn and replaced) and a scale-in from three workers to one. Each drained worker finishes
/// what it runs; nothing is lost, nothing scanned twice.
#[sqlx::test(migrations = false)]
async fn a_rolling_restart_and_a_scale_in_lose_nothing_and_scan_nothing_twice(pool: PgPool) {
    let mut env = FAST.to_vec();
    // Room for a loaded stack (three workers' scans at once on two cores) to finish what is in
    // flight: the test asserts the drain ends well before it.
    env.push(("WORKER_DRAIN_DEADLINE_SECS", "90"));
    let (js, topo, mut fleet) = fleet_on_stack(&pool, topology(3, 30), &env).await;
    fleet.import(&sim_ok(1000));
    fleet.start("sink", "sink", &["run"]);
    for w in ["worker-1", "worker-2", "worker-3"] {
        fleet.start(w, "worker", &[]);
    }
    fleet.start("producer", "producer", &["run"]);
    async fn drain(fleet: &mut Fleet, name: &str) {
        let started = std::time::Instant::now();
        let status = fleet.terminate(name).await;
        assert!(status.success(), "{name} drains cleanly: {status:?}");
        // A drain ends with the last scan in flight, not at the 90 s deadline.
        assert!(
            started.elapsed() < Duration::from_secs(80),
            "{name} drained in {:?}",
            started.elapsed()
        );
        eprintln!("{name} drained in {:?}", started.elapsed());
    }
    for (i, (old, new)) in [
        ("worker-1", "worker-4"),
        ("worker-2", "worker-5"),
        ("worker-3", "worker-6"),
    ]
    .into_iter()
    .enumerate()
    {
        wait_scored(&pool, 100 + 150 * i as i64).await;
        drain(&mut fleet, old).await;
        fleet.start(new, "worker", &[]);
    }
    wait_scored(&pool, 600).await;
    drain(&mut fleet, "worker-4").await;
    drain(&mut fleet, "worker-5").await;
    settle(&pool, &js, &topo, Duration::from_secs(600)).await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(out.scored.len(), 1000);
    assert_eq!(out.enqueued, 1000, "no item enqueued twice");
}

/// Work that runs out of deliveries (its only delivery's worker was killed mid-scan) ends as
/// one EXHAUSTED failure row per item in the database, not as items waiting in the work stream.
#[sqlx::test(migrations = false)]
async fn items_whose_last_delivery_died_end_as_one_failure_row_each(pool: PgPool) {
    let (js, topo, mut fleet) = fleet_on_stack(&pool, topology(1, 4), FAST).await;
    let held: Vec<String> = (0..5)
        .map(|i| format!("github.com/sim-hold/exhaust-{i}"))
        .collect();
    fleet.import(&held);
    fleet.start("sink", "sink", &["run"]);
    fleet.start("producer", "producer", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    for repo in &held {
        fleet_tests::kube_support::eventually(
            "the held scans",
            Duration::from_secs(60),
            || async { Ok(fleet.sim.holding(repo).then_some(())) },
        )
        .await
        .unwrap();
    }
    fleet.kill("worker-1");
    fleet.import(&sim_ok(50));
    fleet.start("worker-2", "worker", &[]);
    settle(&pool, &js, &topo, SETTLE).await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(out.scored.len(), 50);
    assert_eq!(out.failed.len(), 5);
    assert!(out.failed.values().all(|c| *c == FailureClass::Exhausted));
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.repo_key, f.class FROM work_failures f JOIN repos r ON r.id = f.repo_id ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut want: Vec<(String, String)> = held
        .iter()
        .map(|r| (r.clone(), "EXHAUSTED".to_owned()))
        .collect();
    want.sort();
    assert_eq!(rows, want);
}

#[sqlx::test(migrations = false)]
async fn a_killed_producer_and_two_producers_at_once_enqueue_each_item_once(pool: PgPool) {
    let mut env = FAST.to_vec();
    env.extend([
        ("PRODUCER_BATCH_SIZE", "10"),
        ("PRODUCER_HIGH_WATER", "30"),
        ("PRODUCER_LEASE_SECS", "20"),
    ]);
    let (js, topo, mut fleet) = fleet_on_stack(&pool, topology(3, 30), &env).await;
    fleet.import(&sim_ok(200));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("producer-1", "producer", &["run"]);
    wait_scored(&pool, 20).await;
    fleet.kill("producer-1");
    fleet.start("producer-2", "producer", &["run"]);
    fleet.start("producer-3", "producer", &["run"]);
    settle(&pool, &js, &topo, SETTLE).await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(scored(&pool).await, 200);
    // A repository is enqueued again only once its lease ran out without a result (the batch the
    // killed producer had claimed but not published); never twice at once.
    assert!(out.enqueued <= 200 + 10, "enqueued {}", out.enqueued);
}

#[sqlx::test(migrations = false)]
async fn a_nats_restart_mid_run_loses_nothing(pool: PgPool) {
    let mut nats = PrivateNats::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let topo = topology(3, 10);
    topo.ensure(&js).await.unwrap();
    let mut fleet = Fleet::prepare(
        &stack::database_url_of(&pool),
        &nats.url(),
        topo.clone(),
        FAST,
    )
    .await;
    fleet.import(&sim_ok(150));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    wait_scored(&pool, 40).await;
    nats.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.resume();
    settle(&pool, &js, &topo, SETTLE).await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(out.scored.len(), 150);
}

#[tokio::test]
async fn postgres_stopped_while_the_sink_writes_loses_nothing() {
    let pg = PrivatePostgres::start();
    let pool = pg.pool().await;
    let js = jetstream::new(async_nats::connect(stack::nats_url()).await.unwrap());
    let topo = topology(3, 30);
    topo.ensure(&js).await.unwrap();
    let mut fleet = Fleet::prepare(&pg.url(), &stack::nats_url(), topo.clone(), FAST).await;
    fleet.import(&sim_ok(150));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    wait_scored(&pool, 40).await;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.resume();
    settle(&pool, &js, &topo, SETTLE).await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(out.scored.len(), 150);
}
