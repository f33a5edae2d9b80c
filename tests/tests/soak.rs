//! A soak: two thousand real repositories (SOAK_ITEMS to change it; `dev/bench` runs ten
//! thousand) through the whole pipeline with the stand-in's failure mix, ending with the same
//! invariant as every end-to-end test.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use fleet_runtime::topology::{Topology, TopologyArgs};
use fleet_tests::fleet::{Fleet, check_invariant, settle};
use fleet_tests::results::repo_list;
use fleet_tests::stack;
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn thousands_of_items_with_a_failure_mix(pool: PgPool) {
    let items: usize = std::env::var("SOAK_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let js = jetstream::new(async_nats::connect(stack::nats_url()).await.unwrap());
    let topo = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("soak"),
        work_max_deliver: 1,
        work_ack_wait_secs: 60,
        ..Default::default()
    })
    .unwrap();
    topo.ensure(&js).await.unwrap();
    let url = stack::database_url_of(&pool);
    let env = [
        ("JOB_DEADLINE_SECS", "30"),
        ("PRODUCER_BACKOFF_CAP_SECS", "1"),
        ("PRODUCER_HIGH_WATER", "2000"),
        ("SINK_BATCH_WAIT_MS", "200"),
        ("WORKER_MAX_IN_FLIGHT", "150"),
        ("WORKER_POLL_MS", "200"),
    ];
    let mut fleet = Fleet::prepare(&url, &stack::nats_url(), topo.clone(), &env).await;
    let repos: Vec<String> = repo_list()
        .iter()
        .take(items)
        .map(ToString::to_string)
        .collect();
    fleet.import(&repos);
    let started = Instant::now();
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("worker-2", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    settle(&pool, &js, &topo, Duration::from_secs(45 * 60)).await;
    let took = started.elapsed();
    // About 1 in 100 scans of the mix prints its token.
    fleet
        .assert_kept_nowhere(fleet_tests::sim::LEAKED_TOKEN, &js)
        .await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    let distinct: std::collections::HashSet<String> =
        repos.iter().map(|r| r.to_lowercase()).collect();
    assert_eq!(out.enqueued as usize, distinct.len());
    eprintln!(
        "soak: {} items in {:.0}s ({:.1}/s): {} scored, {} failed",
        out.enqueued,
        took.as_secs_f64(),
        out.enqueued as f64 / took.as_secs_f64(),
        out.scored.len(),
        out.failed.len()
    );
}
