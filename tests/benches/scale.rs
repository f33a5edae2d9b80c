//! Cost per item as the repositories grow: the same measurements on a database of 1,000,000
//! and of 10,000,000 repositories (`SCALE_REPOS=1000000,10000000` to change), side by side.
//! Each row is the cost at the largest size next to its cost at the smallest (the baseline);
//! a cost that stays flat is what the fleet needs, one that grows with the table shows here.
//!
//! Run with `cargo bench -p fleet-tests --bench scale` once `dev/stack up postgres nats` is
//! up; `dev/bench` runs it. It prints a markdown table and writes `target/bench-scale.json`.

use std::future::IntoFuture as _;
use std::time::{Duration, Instant};

use anyhow::ensure;
use chrono::{TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_proto::v1::{FailureClass, WorkFailure};
use fleet_runtime::db::{Db, Pooling};
use fleet_runtime::topology::WORKER_SCHEDULED;
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::results::{derive_repos, repo_list, result_for};
use fleet_tests::scratch::{Scratch, Stack};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use producer::import;
use producer::run::{Producer, Settings};
use prometheus_client::registry::Registry;
use prost::Message as _;
use sink::decode::Record;
use sink::schedule::Schedule;
use tokio_util::sync::CancellationToken;

/// Work items claimed and published at each size.
const CLAIM_ITEMS: u64 = 50_000;
/// Results the sink writes at each size, in batches of the sink's default size.
const SINK_RESULTS: usize = 20_000;
/// Dead letters `producer replay --dry-run` walks.
const DEAD_LETTERS: usize = 100_000;
/// Repositories the api looks up, at random, 16 at a time.
const API_LOOKUPS: usize = 20_000;
/// Runs of each whole-table query; the median is reported.
const QUERY_RUNS: usize = 3;

/// One measurement at one size: its cost per item (or per call) in microseconds.
struct Cost {
    what: &'static str,
    unit: &'static str,
    micros: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let stack = Stack::connect().await?;
    let sizes: Vec<usize> = std::env::var("SCALE_REPOS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    ensure!(sizes.len() >= 2, "SCALE_REPOS needs two sizes or more");
    let real = repo_list();
    let mut by_size: Vec<(usize, Vec<Cost>)> = Vec::new();
    for &n in &sizes {
        let costs = stack
            .scratch(&format!("scale-{n}"), async |s| measure(s, &real, n).await)
            .await?;
        for c in &costs {
            eprintln!("{n} repositories: {} {:.1} {}", c.what, c.micros, c.unit);
        }
        by_size.push((n, costs));
    }
    let (small, first) = &by_size[0];
    let (large, last) = by_size.last().expect("two sizes");
    let rows: Vec<Row> = first
        .iter()
        .zip(last)
        .map(|(a, b)| Row {
            what: format!("{} at {} repositories", b.what, number(*large as f64)),
            unit: b.unit,
            value: b.micros,
            baseline: a.micros,
            baseline_how: format!("the same at {} repositories", number(*small as f64)),
            better: Better::Lower,
            // Flat: within a quarter of the small table's cost.
            target: Some(a.micros * 1.25),
            notes: format!(
                "{} at {}, {} at {} ({:.2}×)",
                number(a.micros),
                number(*small as f64),
                number(b.micros),
                number(*large as f64),
                b.micros / a.micros
            ),
        })
        .collect();
    let took = started.elapsed();
    println!("\n{}", report::markdown(&rows));
    let machine = vec![(
        "sizes".to_owned(),
        sizes
            .iter()
            .map(|n| number(*n as f64))
            .collect::<Vec<_>>()
            .join(", "),
    )];
    let finished = serde_json::json!({ "finished_at": Utc::now().to_rfc3339() });
    let path = report::write_json("scale", &machine, &rows, finished, took)?;
    println!(
        "written to {} ({:.0} s)",
        path.display(),
        took.as_secs_f64()
    );
    Ok(())
}

async fn measure(s: &Scratch, real: &[RepoName], n: usize) -> anyhow::Result<Vec<Cost>> {
    let repos = derive_repos(real, n);
    let mut costs = Vec::new();

    let t = Instant::now();
    import::write(&s.pool, &repos).await?;
    costs.push(per("import (producer import)", "µs/repo", t.elapsed(), n));
    // What autovacuum does to a freshly imported table anyway, done before the measurements
    // rather than during them.
    sqlx::query("VACUUM ANALYZE repos").execute(&s.pool).await?;

    costs.push(claim_publish(s).await?);
    costs.push(sink_upsert(s, &repos).await?);

    let interval = TimeDelta::days(14);
    let status = median_call(|| async {
        fleet_runtime::status::status(&Db::new(s.pool.clone(), Default::default()), interval)
            .await?;
        Ok(())
    })
    .await?;
    costs.push(per(
        "`sink status` (and the api's /status)",
        "ms/call",
        status,
        1000,
    ));
    let freshness = median_call(|| async {
        sink::freshness_counts(&s.pool, interval).await?;
        Ok(())
    })
    .await?;
    costs.push(per(
        "the sink's freshness gauge query",
        "ms/call",
        freshness,
        1000,
    ));

    costs.push(replay_dry_run(s).await?);
    costs.push(api_lookups(s, &repos).await?);
    Ok(costs)
}

/// `took` spread over `items`, in µs (or in ms when `items` is 1000 and one call was made).
fn per(what: &'static str, unit: &'static str, took: Duration, items: usize) -> Cost {
    Cost {
        what,
        unit,
        micros: took.as_secs_f64() * 1e6 / items as f64,
    }
}

async fn median_call<F, Fut>(call: F) -> anyhow::Result<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut took = Vec::new();
    for _ in 0..QUERY_RUNS {
        let t = Instant::now();
        call().await?;
        took.push(t.elapsed());
    }
    took.sort();
    Ok(took[took.len() / 2])
}

/// The producer's own loop claiming and publishing [`CLAIM_ITEMS`] of the due repositories.
async fn claim_publish(s: &Scratch) -> anyhow::Result<Cost> {
    let consumer = s
        .consumer(&s.topology.work_stream(), WORKER_SCHEDULED)
        .await?;
    let producer = Producer {
        pool: s.pool.clone(),
        js: s.js.clone(),
        topology: s.topology.clone(),
        consumer,
        settings: Settings {
            batch_size: 5_000,
            high_water: u64::MAX,
            lease: TimeDelta::hours(24),
            backoff_cap: Duration::from_secs(1),
            db_timeouts: Default::default(),
            retire_after: None,
        },
        metrics: producer::metrics::Metrics::register(&mut Registry::default()),
        db: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let run = producer.run(shutdown.clone());
    let watch = async {
        while producer.metrics.published.get() < CLAIM_ITEMS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t.elapsed();
        shutdown.cancel();
        took
    };
    let ((), took) = tokio::join!(run, watch);
    ensure!(
        producer.metrics.publish_errors.get() == 0,
        "publishes failed"
    );
    Ok(per(
        "claim + publish (`Producer::run`)",
        "µs/item",
        took,
        CLAIM_ITEMS as usize,
    ))
}

/// The sink's write path: [`SINK_RESULTS`] results for repositories spread over the table.
async fn sink_upsert(s: &Scratch, repos: &[RepoName]) -> anyhow::Result<Cost> {
    let step = repos.len() / SINK_RESULTS;
    let at = Utc::now() - TimeDelta::hours(1);
    let records: Vec<Record> = (0..SINK_RESULTS)
        .map(|i| {
            let id = uuid::Uuid::now_v7().to_string();
            Record::Result(result_for(&repos[i * step], &id, at, i))
        })
        .collect();
    let schedule = Schedule {
        interval: TimeDelta::days(14),
        jitter: TimeDelta::hours(24),
        missing_for: TimeDelta::days(7),
    };
    let t = Instant::now();
    for batch in records.chunks(sink::config::DEFAULT_BATCH_SIZE) {
        sink::upsert::write_batch(&s.pool, Default::default(), batch, &schedule, true).await?;
    }
    Ok(per(
        "sink upsert (`write_batch`, events on)",
        "µs/result",
        t.elapsed(),
        SINK_RESULTS,
    ))
}

/// `producer replay --dry-run` over [`DEAD_LETTERS`] dead letters.
async fn replay_dry_run(s: &Scratch) -> anyhow::Result<Cost> {
    let subject = s.topology.dead_subject(FailureClass::Timeout.name());
    let mut acks = FuturesUnordered::new();
    for i in 0..DEAD_LETTERS {
        if acks.len() >= 512
            && let Some(ack) = acks.next().await
        {
            ack?;
        }
        let failure = WorkFailure {
            work_id: format!("dead-{i}"),
            repo: "github.com/ossf/scorecard".into(),
            class: FailureClass::Timeout as i32,
            message: "scorecard ran past its deadline".into(),
            ..Default::default()
        };
        let ack =
            s.js.publish(subject.clone(), failure.encode_to_vec().into())
                .await?;
        acks.push(ack.into_future());
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let t = Instant::now();
    let entries = producer::replay::replay(&s.js, &s.topology, &Default::default(), true).await?;
    let took = t.elapsed();
    ensure!(
        entries.len() == DEAD_LETTERS,
        "replay saw {} of {DEAD_LETTERS} dead letters",
        entries.len()
    );
    Ok(per(
        "`producer replay --dry-run`",
        "µs/letter",
        took,
        DEAD_LETTERS,
    ))
}

/// The api's query for `GET /projects/...` on random scored and unscored repositories.
async fn api_lookups(s: &Scratch, repos: &[RepoName]) -> anyhow::Result<Cost> {
    let db = Db::new(s.pool.clone(), Pooling::Session);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let keys: Vec<String> = (0..API_LOOKUPS)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            repos[(seed % repos.len() as u64) as usize].key()
        })
        .collect();
    let t = Instant::now();
    let found: Vec<_> = futures::stream::iter(&keys)
        .map(|key| api::store::latest(&db, key, true))
        .buffer_unordered(16)
        .collect()
        .await;
    let took = t.elapsed();
    for f in found {
        ensure!(f?.is_some(), "a repository the api did not find");
    }
    Ok(per(
        "api `GET /projects/...` query",
        "µs/request",
        took,
        API_LOOKUPS,
    ))
}
