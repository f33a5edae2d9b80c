//! End-to-end throughput of the whole fleet on the local stack: the real producer, two workers
//! and the sink (release binaries, as processes) take real repositories from due to a score or
//! a classified failure, with the scorecard stand-in's outcome mix. The baseline is the same
//! fleet with every batching knob at one — a claim per row, one Job at a time per worker, a
//! transaction per result — measured in the same run.
//!
//! Run with `dev/bench` (it builds the release binaries this starts), or
//! `cargo build --release --workspace --bins && cargo bench -p fleet-tests --bench fleet` once
//! `dev/stack up` is up. Prints a table and writes `target/bench-fleet.json`.

use std::time::{Duration, Instant};

use anyhow::ensure;
use fleet_runtime::topology::TopologyArgs;
use fleet_tests::fleet::{Fleet, check_invariant, settle};
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::results::repo_list;
use fleet_tests::scratch::{Scratch, Stack};
use fleet_tests::stack;
use producer::import;

/// Repositories the fleet takes end to end.
const ITEMS: usize = 1_000;
/// The baseline runs this long and is rated by what it finished; its rate is clear by then.
const NAIVE_WINDOW: Duration = Duration::from_secs(60);
/// A fleet that has not finished by then is stuck.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const WORKERS: usize = 2;

/// Settings both runs share: the demo's (as `dev/run`): every failure final at its first
/// attempt and 30 s scans, so a timeout costs 30 s and not an hour. The workers keep their
/// default poll, as shipped: a pull that waited out a shorter one hid a tenfold slowdown.
const COMMON: [(&str, &str); 3] = [
    ("JOB_DEADLINE_SECS", "30"),
    ("PRODUCER_BACKOFF_CAP_SECS", "1"),
    ("SINK_BATCH_WAIT_MS", "200"),
];
/// The fleet as shipped (its defaults), with enough in flight for the local cluster.
const DESIGNED: [(&str, &str); 1] = [("WORKER_MAX_IN_FLIGHT", "100")];
/// Every batch a batch of one.
const NAIVE: [(&str, &str); 3] = [
    ("PRODUCER_BATCH_SIZE", "1"),
    ("WORKER_MAX_IN_FLIGHT", "1"),
    ("SINK_BATCH_SIZE", "1"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let stack = Stack::connect().await?;
    let machine = report::host();
    println!("# scorecard-fleet end-to-end bench\n");
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!();
    let repos: Vec<_> = repo_list().into_iter().take(ITEMS).collect();
    ensure!(
        repos.len() == ITEMS,
        "the fixture list has {} repositories",
        repos.len()
    );

    let naive = run(&stack, "fleet-naive", &repos, &NAIVE, Some(NAIVE_WINDOW)).await?;
    eprintln!("baseline: {}", naive.text());
    let designed = run(&stack, "fleet", &repos, &DESIGNED, None).await?;
    eprintln!("fleet: {}", designed.text());

    let rows = vec![Row {
        what: format!(
            "end to end: {} real repositories, producer + {WORKERS} workers + sink on the local \
             stack (scans simulated)",
            number(ITEMS as f64)
        ),
        unit: "items/s",
        value: designed.rate(),
        baseline: naive.rate(),
        baseline_how: format!(
            "the same fleet with batches of one (producer batch 1, 1 Job in flight per worker, \
             sink batch 1), rated on what it finished in {} s",
            NAIVE_WINDOW.as_secs()
        ),
        better: Better::Higher,
        target: None,
        notes: format!("fleet: {}; baseline: {}", designed.text(), naive.text()),
    }];
    let took = started.elapsed();
    println!("{}", report::markdown(&rows));
    for r in &rows {
        println!("- {}: {}", r.what, r.notes);
    }
    let path = report::write_json("fleet", &machine, &rows, serde_json::json!({}), took)?;
    println!(
        "\nwhole bench: {:.0} s; written to {}",
        took.as_secs_f64(),
        path.display()
    );
    Ok(())
}

struct Run {
    done: u64,
    scored: u64,
    failed: u64,
    took: Duration,
    /// Whether every item finished (the designed run must; the baseline is cut at its window).
    finished: bool,
}

impl Run {
    fn rate(&self) -> f64 {
        self.done as f64 / self.took.as_secs_f64()
    }

    fn text(&self) -> String {
        format!(
            "{} items ({} scored, {} failed) in {:.0} s{}",
            self.done,
            self.scored,
            self.failed,
            self.took.as_secs_f64(),
            if self.finished {
                ""
            } else {
                ", cut at its window"
            }
        )
    }
}

/// Imports `repos` into a scratch database and runs the fleet with `settings` until every item
/// ended (checking the end-to-end invariant), or for `window`.
async fn run(
    stack: &Stack,
    label: &str,
    repos: &[fleet_proto::RepoName],
    settings: &[(&str, &str)],
    window: Option<Duration>,
) -> anyhow::Result<Run> {
    let args = TopologyArgs {
        work_max_deliver: 1,
        work_ack_wait_secs: 60,
        ..Default::default()
    };
    stack
        .scratch_with(label, args, async |s: &Scratch| {
            import::write(&s.pool, repos).await?;
            let db = s.opts.get_database().unwrap_or_default().to_owned();
            let env: Vec<(&str, &str)> = COMMON.iter().chain(settings).copied().collect();
            let mut fleet = Fleet::prepare(
                &stack::database_url_for(&db),
                &stack::nats_url(),
                s.topology.clone(),
                &env,
            )
            .await;
            let started = Instant::now();
            fleet.start("sink", "sink", &["run"]);
            for i in 1..=WORKERS {
                fleet.start(&format!("worker-{i}"), "worker", &[]);
            }
            fleet.start("producer", "producer", &["run"]);
            let run = match window {
                None => {
                    settle(&s.pool, &s.js, &s.topology, SETTLE_TIMEOUT).await;
                    let took = started.elapsed();
                    fleet.stop_all().await;
                    let out = check_invariant(&s.pool, &s.js, &s.topology, &fleet.sim).await;
                    ensure!(
                        out.enqueued as usize == repos.len(),
                        "{} items enqueued for {} repositories",
                        out.enqueued,
                        repos.len()
                    );
                    Run {
                        done: out.enqueued,
                        scored: out.scored.len() as u64,
                        failed: out.failed.len() as u64,
                        took,
                        finished: true,
                    }
                }
                Some(window) => {
                    tokio::time::sleep(window).await;
                    let (scored, failed) = ended(s).await?;
                    let took = started.elapsed();
                    fleet.stop_all().await;
                    Run {
                        done: scored + failed,
                        scored,
                        failed,
                        took,
                        finished: false,
                    }
                }
            };
            Ok(run)
        })
        .await
}

/// Repositories with a score, and with a recorded failure (each item ends at its first
/// attempt, so these are items).
async fn ended(s: &Scratch) -> anyhow::Result<(u64, u64)> {
    let (scored, failed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM score_history), (SELECT count(*) FROM work_failures)",
    )
    .fetch_one(&s.pool)
    .await?;
    Ok((scored.try_into()?, failed.try_into()?))
}
