//! The fleet-wide GitHub budget on the local stack, with the real worker binaries as processes:
//! replicas together keep to a credential's budget, a credential GitHub rejects leaves the
//! pool for every replica, and a spent pool starts nothing past its budget while the items it
//! holds for a credential do not expire and a person's request still starts at once.

use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use fleet_runtime::topology::{Topology, TopologyArgs, WORKER_SCHEDULED};
use fleet_tests::fleet::{FAST, Fleet, SETTLE, check_invariant, settle, sim_ok, wait_scored};
use fleet_tests::stack;
use sqlx::PgPool;

async fn fleet(pool: &PgPool, env: &[(&str, &str)]) -> (jetstream::Context, Topology, Fleet) {
    let topology = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("budget"),
        work_max_deliver: 5,
        work_ack_wait_secs: 30,
        ..Default::default()
    })
    .unwrap();
    let js = jetstream::new(async_nats::connect(stack::nats_url()).await.unwrap());
    topology.ensure(&js).await.unwrap();
    let env: Vec<(&str, &str)> = FAST.iter().chain(env).copied().collect();
    let fleet = Fleet::prepare(
        &stack::database_url_of(pool),
        &stack::nats_url(),
        topology.clone(),
        &env,
    )
    .await;
    (js, topology, fleet)
}

/// The most scan starts of `credential` within any `window`.
fn most_in_any_window(starts: &[(String, Instant)], credential: &str, window: Duration) -> usize {
    let times: Vec<Instant> = starts
        .iter()
        .filter(|(c, _)| c == credential)
        .map(|(_, t)| *t)
        .collect();
    times
        .iter()
        .map(|&from| {
            times
                .iter()
                .filter(|&&t| t >= from && t < from + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[sqlx::test(migrations = false)]
async fn two_workers_together_never_start_more_than_a_credentials_budget(pool: PgPool) {
    // 700 calls per 10 s window at 70 a scan: 10 scans a window, one a second.
    let (js, topo, mut fleet) = fleet(
        &pool,
        &[
            ("GITHUB_TOKEN_CALLS_PER_WINDOW", "700"),
            ("GITHUB_WINDOW_SECS", "10"),
            ("SCAN_COST_CALLS", "70"),
        ],
    )
    .await;
    fleet.import(&sim_ok(30));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("worker-2", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    settle(&pool, &js, &topo, SETTLE).await;
    let w1 = fleet.metrics("worker-1").await;
    let waits: f64 = w1
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("budget_waits_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(waits > 0.0, "worker-1 never waited for the budget: {w1}");
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert_eq!(out.scored.len(), 30);

    let starts = fleet.sim.starts();
    assert!(starts.iter().all(|(c, _)| c == "token-0"), "{starts:?}");
    // Ten a window (10.6 once three windows were spent without a limit: 2% a window until
    // the first), one more where a start up to a twentieth of the window late keeps its place,
    // and one for the stand-in seeing a pod start a moment after its Job's. Two replicas each
    // pacing alone would start twenty.
    let most = most_in_any_window(&starts, "token-0", Duration::from_secs(10));
    assert!(
        most <= 13,
        "{most} scans started within 10 s on a budget of 10"
    );
    let span = starts.last().unwrap().1 - starts.first().unwrap().1;
    assert!(
        span >= Duration::from_secs(26),
        "30 scans at one a second started within {span:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_revoked_credential_leaves_the_pool_of_every_worker_with_an_alert(pool: PgPool) {
    // One scan at a time, so the first rejection is learned before the next scan starts.
    let (js, topo, mut fleet) = fleet(
        &pool,
        &[
            ("TOKEN_KEYS", "token-0,token-1"),
            ("WORKER_MAX_IN_FLIGHT", "1"),
            ("WORKER_MANUAL_IN_FLIGHT", "0"),
        ],
    )
    .await;
    fleet.sim.revoke("token-1");
    fleet.import(&sim_ok(12));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);
    settle(&pool, &js, &topo, SETTLE).await;

    let on = |fleet: &Fleet, credential: &str| {
        fleet
            .sim
            .starts()
            .iter()
            .filter(|(c, _)| c == credential)
            .count()
    };
    assert_eq!(
        on(&fleet, "token-1"),
        1,
        "the revoked token ran one scan, then none"
    );
    let metrics = fleet.metrics("worker-1").await;
    assert!(
        metrics.lines().any(|l| l.contains("credentials_revoked")
            && l.contains("token-1")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    let log = fleet.log("worker-1");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("token-1") && l.contains("Bad credentials")),
        "{log}"
    );
    let budget = js.get_key_value(topo.budget_bucket()).await.unwrap();
    let entry = budget.get("token-1").await.unwrap().expect("an entry");
    assert!(
        String::from_utf8_lossy(&entry).contains("Bad credentials"),
        "{entry:?}"
    );

    // A replica started later knows it too: its scans go to token-0 only.
    fleet.terminate("worker-1").await;
    fleet.start("worker-2", "worker", &[]);
    js.publish(
        topo.manual_subject(),
        r#"{"repo":"github.com/sim-ok/after-restart"}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_scored(&pool, 13).await;
    assert_eq!(on(&fleet, "token-1"), 1);
    // A scan the stand-in could not end in time (KWOK slow to serve its log) runs into its
    // deadline and is scanned again: each such retry is one more scan, on token-0 as well.
    let retried = ["worker-1", "worker-2"]
        .iter()
        .map(|w| {
            fleet
                .log(w)
                .lines()
                .filter(|l| l.contains("retrying later") && !l.contains("Bad credentials"))
                .count()
        })
        .sum::<usize>();
    assert_eq!(
        on(&fleet, "token-0"),
        13 + retried,
        "12 scheduled, the one token-1 failed, one by hand, and {retried} retried"
    );
    let log = fleet.log("worker-2");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("token-1")),
        "{log}"
    );
    settle(&pool, &js, &topo, SETTLE).await;
    fleet.stop_all().await;
    let out = check_invariant(&pool, &js, &topo, &fleet.sim).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);

    // `sink plan` plans with the pool the workers know.
    let plan = Command::new(stack::workspace_binary("sink"))
        .arg("plan")
        .env("DATABASE_URL", stack::database_url_of(&pool))
        .env("NATS_URL", stack::nats_url())
        .env("NATS_PREFIX", &topo.args().nats_prefix)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        text.contains("1 in the pool, 1 rejected by GitHub (token-1)"),
        "{text}"
    );
    assert!(
        text.contains("13 scores in the last 24 hours; 13 of 13"),
        "{text}"
    );
    assert!(text.contains("all fresh             now"), "{text}");
}

#[sqlx::test(migrations = false)]
async fn a_spent_pool_starts_nothing_past_its_budget_lets_nothing_expire_and_a_request_still_starts_at_once(
    pool: PgPool,
) {
    // 420 calls a minute at 70 a scan: six scans a minute, one every 10 s.
    let (js, topo, mut fleet) = fleet(
        &pool,
        &[
            ("GITHUB_TOKEN_CALLS_PER_WINDOW", "420"),
            ("GITHUB_WINDOW_SECS", "60"),
            ("SCAN_COST_CALLS", "70"),
        ],
    )
    .await;
    fleet.import(&sim_ok(20));
    fleet.start("sink", "sink", &["run"]);
    fleet.start("worker-1", "worker", &[]);
    fleet.start("worker-2", "worker", &[]);
    fleet.start("producer", "producer", &["run"]);

    let mut scheduled: jetstream::consumer::PullConsumer = js
        .get_stream(topo.work_stream())
        .await
        .unwrap()
        .get_consumer(WORKER_SCHEDULED)
        .await
        .unwrap();
    let scored = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM scores s JOIN repos r ON r.id = s.repo_id
             WHERE r.owner = 'sim-ok' AND r.name <> 'by-hand'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // Longer than the 30 s ack wait: an item held for a credential without progress acks
    // would be redelivered within it.
    let watched = Instant::now();
    let mut redelivered = 0;
    while watched.elapsed() < Duration::from_secs(40) {
        let info = scheduled.info().await.unwrap();
        redelivered = redelivered.max(info.num_redelivered);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(redelivered, 0, "items waiting for a credential expired");
    // One scan at once, then one every 10 s.
    let early = scored().await;
    assert!(
        early <= 6,
        "{early} scans in 40 s on a budget of one per 10 s"
    );

    let asked = Instant::now();
    js.publish(
        topo.manual_subject(),
        r#"{"repo":"github.com/sim-ok/by-hand"}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let by_hand = async {
        loop {
            let scored: Option<i64> = sqlx::query_scalar(
                "SELECT count(*) FROM scores s JOIN repos r ON r.id = s.repo_id
                 WHERE r.owner = 'sim-ok' AND r.name = 'by-hand'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap();
            if scored.unwrap_or(0) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(8), by_hand)
        .await
        .expect("the request was scored within 8 s, ahead of the paced scheduled work");
    eprintln!("request scored {:?} after it was asked", asked.elapsed());
    let ahead = scored().await;
    assert!(
        ahead <= 8,
        "scheduled work was not behind: {ahead} of 20 scored"
    );
    fleet.stop_all().await;
}
