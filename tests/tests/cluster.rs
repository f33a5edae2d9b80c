//! The fleet on a three-server JetStream cluster (every stream and bucket with three replicas,
//! every service given all three seed URLs) through the faults a cluster meets: its leaders
//! killed, a rolling restart of every server, a server cut off and back. Each test ends with
//! the fleet's invariant (`fleet::check_invariant`): every item exactly one score or one dead
//! letter, no work item scanned twice, nothing left unacked.

use std::time::Duration;

use async_nats::jetstream;
use fleet_runtime::topology::{SINK, Topology, TopologyArgs, TopologyError};
use fleet_tests::fleet::{FAST, Fleet, SETTLE, check_invariant, settle, sim_ok, wait_scored};
use fleet_tests::nats_cluster::PrivateCluster;
use fleet_tests::stack;
use sqlx::PgPool;

fn topology() -> Topology {
    Topology::new(TopologyArgs {
        nats_prefix: stack::unique("cluster"),
        // Deliveries as in production (ack waits shortened): an outage spends them.
        work_max_deliver: 5,
        work_ack_wait_secs: 10,
        stream_replicas: 3,
        ..Default::default()
    })
    .unwrap()
}

/// A fleet on `cluster`'s seeds with the test database, nothing started yet.
async fn prepare(pool: &PgPool, cluster: &PrivateCluster, topo: &Topology) -> Fleet {
    Fleet::prepare(
        &stack::database_url_of(pool),
        &cluster.url(),
        topo.clone(),
        FAST,
    )
    .await
}

/// A cluster, its topology with three replicas, and a fleet of `items` repositories on it:
/// the sink, two workers and the producer running.
async fn fleet_on_cluster(
    pool: &PgPool,
    items: usize,
) -> (PrivateCluster, jetstream::Context, Topology, Fleet) {
    let cluster = PrivateCluster::start().await;
    let js = cluster.jetstream().await;
    let topo = topology();
    topo.ensure_until_ready(&js, &Default::default())
        .await
        .unwrap();
    let mut fleet = prepare(pool, &cluster, &topo).await;
    fleet.import(&sim_ok(items));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("worker-2", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    (cluster, js, topo, fleet)
}

async fn finish(pool: &PgPool, js: &jetstream::Context, topo: &Topology, mut fleet: Fleet) {
    settle(pool, js, topo, SETTLE).await;
    fleet.stop_all().await;
    let out = check_invariant(pool, js, topo, &fleet.sim).await;
    assert_eq!(
        out.failed.len(),
        0,
        "the stand-in scores every sim-ok repository"
    );
}

#[sqlx::test(migrations = false)]
async fn killing_the_work_streams_leader_while_1000_items_flow_loses_nothing(pool: PgPool) {
    let (mut cluster, js, topo, fleet) = fleet_on_cluster(&pool, 1000).await;
    wait_scored(&pool, 150).await;
    let leader = cluster.stream_leader(&js, &topo.work_stream()).await;
    cluster.kill(leader);
    // The two survivors elect a new leader; work goes on without the dead server.
    wait_scored(&pool, 500).await;
    assert_ne!(
        cluster.stream_leader(&js, &topo.work_stream()).await,
        leader
    );
    cluster.restart(leader).await;
    finish(&pool, &js, &topo, fleet).await;
}

#[sqlx::test(migrations = false)]
async fn killing_the_sink_consumers_leader_loses_nothing(pool: PgPool) {
    let (mut cluster, js, topo, fleet) = fleet_on_cluster(&pool, 400).await;
    wait_scored(&pool, 100).await;
    let leader = cluster
        .consumer_leader(&js, &topo.results_stream(), SINK)
        .await;
    cluster.kill(leader);
    wait_scored(&pool, 250).await;
    cluster.restart(leader).await;
    finish(&pool, &js, &topo, fleet).await;
}

#[sqlx::test(migrations = false)]
async fn a_rolling_restart_of_all_three_servers_loses_nothing(pool: PgPool) {
    let (mut cluster, js, topo, fleet) = fleet_on_cluster(&pool, 600).await;
    for i in 0..3 {
        wait_scored(&pool, 100 + 120 * i as i64).await;
        cluster.roll(i).await;
    }
    finish(&pool, &js, &topo, fleet).await;
}

/// A server cut off from its peers and clients (SIGSTOP: it holds its sockets and answers
/// nothing, as a partitioned host looks), then back: the work stream's leader, so the
/// fleet's queue must move to the majority and the stale leader must step down on return.
#[sqlx::test(migrations = false)]
async fn a_partitioned_server_that_led_the_work_stream_rejoins_and_loses_nothing(pool: PgPool) {
    let (cluster, js, topo, fleet) = fleet_on_cluster(&pool, 400).await;
    wait_scored(&pool, 100).await;
    let leader = cluster.stream_leader(&js, &topo.work_stream()).await;
    cluster.pause(leader);
    wait_scored(&pool, 250).await;
    cluster.resume(leader);
    cluster.wait_healthy(leader).await;
    finish(&pool, &js, &topo, fleet).await;
}

#[tokio::test]
async fn a_stream_with_other_replicas_is_a_clear_error_and_left_alone() {
    let cluster = PrivateCluster::start().await;
    let js = cluster.jetstream().await;
    let one = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("replicas"),
        ..Default::default()
    })
    .unwrap();
    one.ensure_until_ready(&js, &Default::default())
        .await
        .unwrap();
    let three = Topology::new(TopologyArgs {
        stream_replicas: 3,
        ..one.args().clone()
    })
    .unwrap();
    let err = three
        .ensure_until_ready(&js, &Default::default())
        .await
        .unwrap_err();
    match err.downcast_ref::<TopologyError>() {
        Some(TopologyError::Mismatch {
            setting,
            found,
            wanted,
            ..
        }) => assert_eq!(
            (*setting, found.as_str(), wanted.as_str()),
            ("replicas", "1", "3")
        ),
        _ => panic!("expected a replicas mismatch, got {err:#}"),
    }
    let mut work = js.get_stream(one.work_stream()).await.unwrap();
    assert_eq!(work.info().await.unwrap().config.num_replicas, 1);
}

/// A service starting while the cluster has no quorum (two of three servers down: JetStream
/// answers nothing) waits for one instead of exiting, and sets up its streams once it is back.
#[tokio::test]
async fn a_service_starting_without_a_quorum_waits_for_one() {
    let mut cluster = PrivateCluster::start().await;
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(cluster.seeds())
        .await
        .unwrap();
    // Requests give up quickly, so a start-up that did not retry would be over at once.
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client);
    cluster.kill(1);
    cluster.kill(2);
    let topo = topology();
    let starting = tokio::spawn({
        let (topo, js) = (topo.clone(), js.clone());
        async move { topo.ensure_until_ready(&js, &Default::default()).await }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !starting.is_finished(),
        "start-up gave up without a quorum: {:?}",
        starting.await
    );
    cluster.restart(1).await;
    cluster.restart(2).await;
    tokio::time::timeout(Duration::from_secs(120), starting)
        .await
        .expect("set up within 120 s of the quorum's return")
        .unwrap()
        .unwrap();
    let mut work = js.get_stream(topo.work_stream()).await.unwrap();
    assert_eq!(work.info().await.unwrap().config.num_replicas, 3);
}

/// A worker started while the cluster has no quorum (no stream, consumer or budget bucket can
/// be made or read) waits for one and then works: it neither exits nor stays stuck.
#[sqlx::test(migrations = false)]
async fn a_worker_starting_without_a_quorum_waits_and_then_scans(pool: PgPool) {
    let mut cluster = PrivateCluster::start().await;
    let js = cluster.jetstream().await;
    let topo = topology();
    let mut fleet = prepare(&pool, &cluster, &topo).await;
    fleet.import(&sim_ok(30));
    cluster.kill(1);
    cluster.kill(2);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("worker-2", "worker", &[]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    for worker in ["worker-1", "worker-2"] {
        assert!(
            fleet.is_running(worker),
            "{worker} gave up: {}",
            fleet.log(worker)
        );
    }
    cluster.restart(1).await;
    cluster.restart(2).await;
    // Each worker must get through its own start-up: the other one doing all the work would
    // hide one that is stuck (a stop while waiting exits cleanly, so the end cannot tell).
    for worker in ["worker-1", "worker-2"] {
        fleet.wait_ready(worker, Duration::from_secs(90)).await;
    }
    fleet.start("sink", "sink", &["run"]);
    fleet.start("producer", "producer", &["run"]);
    wait_scored(&pool, 30).await;
    finish(&pool, &js, &topo, fleet).await;
}

/// A service given every seed reaches the cluster while the first seed is down.
#[tokio::test]
async fn a_service_connects_through_any_live_seed() {
    let mut cluster = PrivateCluster::start().await;
    cluster.kill(0);
    let args = fleet_runtime::config::NatsArgs {
        nats_url: fleet_runtime::config::Secret::new(cluster.url()),
        nats_creds: None,
        nats_token: None,
        topology: Default::default(),
    };
    let client = tokio::time::timeout(
        Duration::from_secs(30),
        fleet_runtime::nats::connect(&args, "seeds", &Default::default()),
    )
    .await
    .expect("connected within 30 s")
    .unwrap();
    // The dead server may have led the cluster's metadata: JetStream answers once the two
    // others have elected a new leader.
    let js = jetstream::new(client);
    fleet_tests::kube_support::eventually("JetStream answers", Duration::from_secs(30), || async {
        Ok(js.query_account().await.ok().map(|_| ()))
    })
    .await
    .unwrap();
}
