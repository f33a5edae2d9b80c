//! Throughput of the pipeline's hot paths against the local stack, each next to a naive
//! baseline measured in the same run:
//!
//! 1. `producer import` writing a million repositories;
//! 2. the producer claiming due repositories and publishing their work items into JetStream;
//! 3. what an idle producer costs the database;
//! 4. the sink writing results, directly and end to end from JetStream.
//!
//! Run with `cargo bench -p fleet-tests --bench pipeline` once `dev/stack up postgres nats` is
//! up. It prints a markdown table and writes it as JSON to `target/bench-pipeline.json`.
//! Every measurement gets a scratch database and NATS prefix of its own
//! ([`fleet_tests::scratch`]).

use std::future::IntoFuture as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use async_nats::HeaderMap;
use async_nats::jetstream;
use chrono::{TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_proto::v1::WorkReason;
use fleet_runtime::publish::work_item;
use fleet_runtime::topology::{SINK, WORKER_SCHEDULED};
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::results::{derive_repos, repo_list, result_for};
use fleet_tests::scratch::{Scratch, Stack};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use producer::run::{Producer, Settings};
use producer::{claim, import};
use prometheus_client::registry::Registry;
use prost::Message as _;
use sink::consume::Sink;
use sink::decode::Record;
use sink::schedule::Schedule;
use sink::upsert::{Written, write_batch};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Repositories imported, and due for the claim measurement.
const IMPORT_REPOS: usize = 1_000_000;
/// Rows the naive import inserts one statement at a time (a sample of the same set).
const NAIVE_IMPORT_ROWS: usize = 20_000;
/// Work items claimed and published; enough for many batches and for autovacuum to show.
const CLAIM_ITEMS: usize = 200_000;
const CLAIM_BATCH: i64 = 5_000;
const NAIVE_CLAIM_ITEMS: usize = 3_000;
/// Long enough for the producer's backoff to reach its cap several times.
const IDLE_WINDOW: Duration = Duration::from_secs(8);
const NAIVE_POLL: Duration = Duration::from_millis(100);
/// Results the sink writes, on distinct repositories, with the sink's default batch size and
/// batches written at once.
const SINK_RESULTS: usize = 50_000;
const SINK_BATCH: usize = sink::config::DEFAULT_BATCH_SIZE;
const SINK_WRITERS: usize = sink::config::DEFAULT_WRITERS;
const NAIVE_SINK_RESULTS: usize = 2_000;
/// Results taken end to end through JetStream: fewer, as each carries ~10 KB of raw JSON.
const E2E_RESULTS: usize = 20_000;
const NAIVE_E2E_RESULTS: usize = 1_000;
/// A naive baseline stops here even if its sample is unfinished: its rate is clear long
/// before, and the whole bench has to stay within a few minutes.
const NAIVE_BUDGET: Duration = Duration::from_secs(15);
/// A drain that has not finished by then is stuck (the sink retries a failing write forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Publishes awaiting their ack at once when loading the results stream.
const PUBLISH_WINDOW: usize = 512;
/// Time for an exiting backend to flush its statistics into pg_stat_database.
const STATS_SETTLE: Duration = Duration::from_millis(700);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let stack = Stack::connect().await?;
    let machine = machine(&stack).await?;
    println!("# scorecard-fleet pipeline bench\n");
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!();

    // `cargo bench -p fleet-tests --bench pipeline -- sink idle` runs only the measurements
    // whose key contains one of the words (cargo adds `--bench` itself).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |key: &str| only.is_empty() || only.iter().any(|w| key.contains(w.as_str()));

    let real = repo_list();
    let repos = derive_repos(&real, IMPORT_REPOS);
    let mut rows = Vec::new();
    if wanted("import") {
        rows.push(progress(import_rate(&stack, &repos).await?));
    }
    if wanted("claim") {
        rows.push(progress(claim_publish_rate(&stack, &repos).await?));
    }
    if wanted("idle") {
        rows.push(progress(idle_cost(&stack).await?));
    }
    if wanted("sink") || wanted("e2e") || wanted("events") {
        let sink_repos = &repos[..SINK_RESULTS + NAIVE_SINK_RESULTS];
        let records = fixture_results(sink_repos);
        if wanted("sink") {
            rows.push(progress(sink_rate(&stack, sink_repos, &records).await?));
        }
        if wanted("e2e") {
            rows.push(progress(
                sink_end_to_end(&stack, sink_repos, &records).await?,
            ));
        }
        if wanted("events") {
            rows.push(progress(sink_events(&stack, sink_repos, &records).await?));
        }
    }

    // The same measurements on replicated streams are rows of their own.
    let name = if stack.replicas == 1 {
        "pipeline".to_owned()
    } else {
        for row in &mut rows {
            row.what = format!(
                "{} — NATS R{} (a {}-server JetStream cluster)",
                row.what, stack.replicas, stack.replicas
            );
        }
        format!("pipeline-r{}", stack.replicas)
    };
    let took = started.elapsed();
    println!("\n{}", report::markdown(&rows));
    for row in &rows {
        println!("- {}: {}", row.what, row.notes);
    }
    println!(
        "\nwhole bench: {:.0} s; load average at the end: {}",
        took.as_secs_f64(),
        load_average()
    );
    let finished = serde_json::json!({ "finished_at": Utc::now().to_rfc3339() });
    let path = report::write_json(&name, &machine, &rows, finished, took)?;
    println!("written to {}", path.display());
    Ok(())
}

/// One line as each measurement finishes, so a long run shows where it is.
fn progress(row: Row) -> Row {
    eprintln!(
        "measured {}: {} {} (baseline {} {})",
        row.what,
        number(row.value),
        row.unit,
        number(row.baseline),
        row.unit
    );
    row
}

// ---------------------------------------------------------------------------------------------
// Data.

/// One fixture-shaped result per repository (distinct work ids, a minute apart). Built on
/// every core: each result re-reads and re-parses its fixture.
fn fixture_results(repos: &[RepoName]) -> Vec<Record> {
    let started = Instant::now();
    let epoch = Utc::now() - TimeDelta::days(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = repos.len().div_ceil(threads);
    let records: Vec<Record> = std::thread::scope(|scope| {
        let parts: Vec<_> = repos
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(j, repo)| {
                            let i = c * chunk + j;
                            let at = epoch + TimeDelta::minutes(i as i64 % (24 * 60));
                            let work_id = uuid::Uuid::now_v7().to_string();
                            Record::Result(result_for(repo, &work_id, at, i))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("building fixture results"))
            .collect()
    });
    eprintln!(
        "built {} fixture results in {:.1} s",
        records.len(),
        started.elapsed().as_secs_f64()
    );
    records
}

fn encode(record: &Record) -> Vec<u8> {
    match record {
        Record::Result(r) => r.encode_to_vec(),
        Record::Failure(f) => f.encode_to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Import.

async fn import_rate(stack: &Stack, repos: &[RepoName]) -> anyhow::Result<Row> {
    let took = stack
        .scratch("import", async |s| {
            let started = Instant::now();
            let imported = import::write(&s.pool, repos).await?;
            let took = started.elapsed();
            ensure!(
                imported.new == repos.len() as u64,
                "imported {imported:?} of {} distinct repositories",
                repos.len()
            );
            Ok(took)
        })
        .await?;

    // Its own empty database: the same rows into a bigger table would only flatter the bulk path.
    let step = (repos.len() / NAIVE_IMPORT_ROWS).max(1);
    let (naive, naive_took) = stack
        .scratch("import-naive", async |s| {
            let started = Instant::now();
            let mut done = 0;
            for repo in repos.iter().step_by(step).take(NAIVE_IMPORT_ROWS) {
                if started.elapsed() >= NAIVE_BUDGET {
                    break;
                }
                sqlx::query(
                    "INSERT INTO repos (repo_key, host, owner, name)
                     VALUES ($1, 'github.com', $2, $3)
                     ON CONFLICT (repo_key) DO NOTHING",
                )
                .bind(repo.key())
                .bind(repo.owner())
                .bind(repo.name())
                .execute(&s.pool)
                .await?;
                done += 1;
            }
            Ok((done, started.elapsed()))
        })
        .await?;

    Ok(Row {
        what: format!(
            "import {} repos (`import::write`)",
            number(repos.len() as f64)
        ),
        unit: "repos/s",
        value: rate(repos.len(), took),
        baseline: rate(naive, naive_took),
        baseline_how: format!(
            "one INSERT … ON CONFLICT DO NOTHING per row, {} rows",
            number(naive as f64)
        ),
        better: Better::Higher,
        target: Some(100_000.0),
        notes: format!(
            "{:.1} s for {} rows in batches of {}; baseline {} rows into an empty table in {:.1} s",
            took.as_secs_f64(),
            number(repos.len() as f64),
            number(import::BATCH_ROWS as f64),
            number(naive as f64),
            naive_took.as_secs_f64()
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Claim and publish.

async fn claim_publish_rate(stack: &Stack, repos: &[RepoName]) -> anyhow::Result<Row> {
    stack
        .scratch("claim", async |s| {
            import::write(&s.pool, repos).await?;
            // As autovacuum would within a minute of the import: the claim's plan needs stats.
            sqlx::query("ANALYZE repos").execute(&s.pool).await?;
            let lease = TimeDelta::hours(24);
            let subject = s.topology.scheduled_subject();

            // The baseline first: the batches after it leave hundreds of thousands of dead
            // index entries at the head of the due index, which would slow it unfairly.
            let started = Instant::now();
            let mut naive = 0;
            while naive < NAIVE_CLAIM_ITEMS && started.elapsed() < NAIVE_BUDGET {
                naive_claim_publish_one(s, lease, &subject).await?;
                naive += 1;
            }
            let naive_took = started.elapsed();

            // The producer's own loop (`Producer::run`), stopped once it has published enough.
            let consumer = s
                .consumer(&s.topology.work_stream(), WORKER_SCHEDULED)
                .await?;
            let producer = Producer {
                pool: s.pool.clone(),
                js: s.js.clone(),
                topology: s.topology.clone(),
                consumer,
                settings: Settings {
                    batch_size: CLAIM_BATCH,
                    high_water: u64::MAX,
                    lease,
                    backoff_cap: Duration::from_secs(1),
                    db_timeouts: Default::default(),
                    retire_after: None,
                },
                metrics: producer::metrics::Metrics::register(&mut Registry::default()),
                db: Default::default(),
            };
            let ((), took) = run_until(
                |shutdown| producer.run(shutdown),
                || producer.metrics.published.get() >= CLAIM_ITEMS as u64,
            )
            .await;
            ensure!(
                producer.metrics.publish_errors.get() == 0,
                "{} publishes failed",
                producer.metrics.publish_errors.get()
            );
            let published = usize::try_from(producer.metrics.published.get())?;
            let stored =
                s.js.get_stream(s.topology.work_stream())
                    .await?
                    .info()
                    .await?
                    .state
                    .messages;
            ensure!(
                stored == (naive + published) as u64,
                "the work stream holds {stored} items, {} were published",
                naive + published
            );
            Ok(Row {
                what: format!(
                    "claim + publish {} work items (`Producer::run`, batches of {})",
                    number(CLAIM_ITEMS as f64),
                    number(CLAIM_BATCH as f64)
                ),
                unit: "items/s",
                value: rate(CLAIM_ITEMS, took),
                baseline: rate(naive, naive_took),
                baseline_how: format!(
                    "a transaction per row (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1, UPDATE) \
                     + publish awaiting each ack, {} items",
                    number(naive as f64)
                ),
                better: Better::Higher,
                target: Some(30_000.0),
                notes: format!(
                    "{:.1} s over {} repos due, claiming the next batch while one publishes",
                    took.as_secs_f64(),
                    number(repos.len() as f64),
                ),
            })
        })
        .await
}

/// The obvious loop: claim one row in its own transaction, publish it, wait for the ack.
async fn naive_claim_publish_one(
    s: &Scratch,
    lease: TimeDelta,
    subject: &str,
) -> anyhow::Result<()> {
    let mut tx = s.pool.begin().await?;
    let (id, owner, name, priority): (i64, String, String, i32) = sqlx::query_as(
        "SELECT id, owner, name, priority FROM repos
         WHERE enabled AND next_due_at <= now()
         ORDER BY next_due_at LIMIT 1
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?
    .context("ran out of due repositories")?;
    sqlx::query(
        "UPDATE repos SET next_due_at = now() + $2::interval, last_enqueued_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(fleet_runtime::db::interval_text(lease))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let repo = RepoName::parse(&format!("github.com/{owner}/{name}"))?;
    let item = work_item(&repo, WorkReason::Scheduled, priority);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", item.id.as_str());
    s.js.publish_with_headers(subject.to_owned(), headers, item.encode_to_vec().into())
        .await?
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Idle cost.

async fn idle_cost(stack: &Stack) -> anyhow::Result<Row> {
    stack
        .scratch("idle", async |s| {
            let lease = TimeDelta::hours(24);
            // The setup's connections may hold the migration's counts for up to 10 s (a busy
            // backend flushes at most once a second, else on an idle timeout); closing them
            // flushes the counts now instead of into a window below.
            s.pool.close().await;
            tokio::time::sleep(STATS_SETTLE).await;
            // What one reading costs by itself (its connection's start-up and query, which
            // the next reading sees), subtracted from every window below.
            let before = transactions(&s.opts).await?;
            let own = transactions(&s.opts).await? - before;

            let consumer = s
                .consumer(&s.topology.work_stream(), WORKER_SCHEDULED)
                .await?;
            let (ticks, window) = count_transactions(s, own, async |pool, stop| {
                let producer = Producer {
                    pool,
                    js: s.js.clone(),
                    topology: s.topology.clone(),
                    consumer,
                    settings: Settings {
                        batch_size: 1000,
                        high_water: 10_000,
                        lease,
                        backoff_cap: Duration::from_secs(1),
                        db_timeouts: Default::default(),
                        retire_after: None,
                    },
                    metrics: Default::default(),
                    db: Default::default(),
                };
                producer.run(stop).await;
                Ok(())
            })
            .await?;

            let (polls, naive_window) = count_transactions(s, own, async |pool, stop| {
                let mut every = tokio::time::interval(NAIVE_POLL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        _ = every.tick() => {
                            claim::claim(&pool, Default::default(), 1000, lease).await?;
                        }
                    }
                }
            })
            .await?;

            let per_second = ticks as f64 / window.as_secs_f64();
            Ok(Row {
                what: "idle producer, nothing due (`Producer::run`, backoff cap 1 s)".into(),
                unit: "queries/s",
                value: per_second,
                baseline: polls as f64 / naive_window.as_secs_f64(),
                baseline_how: format!(
                    "`claim` every {} ms, {polls} queries in {:.1} s",
                    NAIVE_POLL.as_millis(),
                    naive_window.as_secs_f64()
                ),
                better: Better::Lower,
                target: Some(1.0),
                notes: format!(
                    "{ticks} database transactions = {ticks} ticks, so {ticks} backoff periods in \
                     {:.1} s (mean pause {:.2} s; the jitter adds up to 100 % on top of the cap); \
                     each tick also asks NATS for the queue depth; counted from \
                     pg_stat_database with the bench's own {own} subtracted per reading",
                    window.as_secs_f64(),
                    window.as_secs_f64() / ticks.max(1) as f64,
                ),
            })
        })
        .await
}

/// Transactions `work` causes in the scratch database over [`IDLE_WINDOW`], in steady state:
/// its pool (one connection) is connected and has its statement prepared before counting
/// starts. `own` is what one [`transactions`] reading adds by itself.
async fn count_transactions(
    s: &Scratch,
    own: i64,
    work: impl AsyncFnOnce(PgPool, CancellationToken) -> anyhow::Result<()>,
) -> anyhow::Result<(i64, Duration)> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(s.opts.clone())
        .await?;
    // A backend flushes its counts when it goes idle, but at most once a second (otherwise
    // up to 10 s later): wait that second, so the warm-up query's counts land before `before`.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    claim::claim(&pool, Default::default(), 1, TimeDelta::hours(24)).await?;
    tokio::time::sleep(STATS_SETTLE).await;
    let before = transactions(&s.opts).await?;

    let stop = CancellationToken::new();
    let started = Instant::now();
    let (done, ()) = tokio::join!(work(pool.clone(), stop.clone()), async {
        tokio::time::sleep(IDLE_WINDOW).await;
        stop.cancel();
    });
    let window = started.elapsed();
    done?;
    // An exiting backend always flushes its counts: closing is what makes them readable.
    pool.close().await;
    tokio::time::sleep(STATS_SETTLE).await;
    let after = transactions(&s.opts).await?;
    Ok((after - before - own, window))
}

/// Transactions committed and rolled back in the scratch database so far, read on a connection
/// of its own that is closed at once, so its own counts are flushed by the next reading.
/// A fresh connection has no cached statistics snapshot, so no pg_stat_clear_snapshot().
async fn transactions(opts: &PgConnectOptions) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect_with(opts).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database
         WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    tokio::time::sleep(STATS_SETTLE).await;
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// 4. Sink.

fn schedule() -> Schedule {
    Schedule {
        interval: TimeDelta::days(14),
        jitter: TimeDelta::hours(24),
        missing_for: TimeDelta::days(7),
    }
}

async fn sink_rate(stack: &Stack, repos: &[RepoName], records: &[Record]) -> anyhow::Result<Row> {
    let (main, naive_records) = records.split_at(SINK_RESULTS);
    stack
        .scratch("sink", async |s| {
            // Results come for repositories the producer scheduled: they exist already.
            import::write(&s.pool, repos).await?;
            sqlx::query("ANALYZE repos").execute(&s.pool).await?;
            let schedule = schedule();

            // The baseline first, on the emptier tables: the comparison can only flatter it.
            let started = Instant::now();
            let mut naive = 0;
            for record in naive_records.iter().take(NAIVE_SINK_RESULTS) {
                if started.elapsed() >= NAIVE_BUDGET {
                    break;
                }
                write_batch(&s.pool, Default::default(), std::slice::from_ref(record), &schedule, false).await?;
                naive += 1;
            }
            let naive_took = started.elapsed();

            // Timed at its middle too: a rate that holds in the second half is sustained.
            let half = main.len() / 2;
            let started = Instant::now();
            let mut latencies = Vec::new();
            let mut total = Written::default();
            let (mut done, mut halfway) = (0, None);
            // As `Sink::run` writes them: SINK_WRITERS batches at once.
            let mut writes = futures::stream::iter(main.chunks(SINK_BATCH))
                .map(|batch| async {
                    let t = Instant::now();
                    let written = write_batch(&s.pool, Default::default(), batch, &schedule, false).await;
                    (batch.len(), written, t.elapsed())
                })
                .buffer_unordered(SINK_WRITERS);
            while let Some((n, written, latency)) = writes.next().await {
                let written = written?;
                latencies.push(latency);
                total.history_rows += written.history_rows;
                total.scores_updated += written.scores_updated;
                done += n;
                if done >= half && halfway.is_none() {
                    halfway = Some((done, started.elapsed()));
                }
            }
            let (half, halfway) = halfway.unwrap_or((main.len(), started.elapsed()));
            let took = started.elapsed();
            ensure!(
                total.history_rows == main.len() as u64
                    && total.scores_updated == main.len() as u64,
                "wrote {total:?} for {} results",
                main.len()
            );
            let checks: i64 = sqlx::query_scalar("SELECT count(*) FROM score_checks")
                .fetch_one(&s.pool)
                .await?;
            latencies.sort();
            Ok(Row {
                what: format!(
                    "sink upsert {} results (`write_batch`, {SINK_BATCH} a batch, {SINK_WRITERS} at once)",
                    number(main.len() as f64)
                ),
                unit: "results/s",
                value: rate(main.len(), took),
                baseline: rate(naive, naive_took),
                baseline_how: format!(
                    "`write_batch` of one result per transaction, {} results",
                    number(naive as f64)
                ),
                better: Better::Higher,
                target: Some(5_000.0),
                notes: format!(
                    "{:.1} s; first half {} results/s, second half {} results/s; batch p50 {} ms, \
                     p99 {} ms; {} per-check rows ({:.1} a result); raw JSON {:.1} KB a result",
                    took.as_secs_f64(),
                    number(rate(half, halfway)),
                    number(rate(main.len() - half, took - halfway)),
                    percentile(&latencies, 0.50).as_millis(),
                    percentile(&latencies, 0.99).as_millis(),
                    number(checks as f64),
                    checks as f64 / (main.len() + naive) as f64,
                    mean_raw_json_kb(main),
                ),
            })
        })
        .await
}

async fn sink_end_to_end(
    stack: &Stack,
    repos: &[RepoName],
    records: &[Record],
) -> anyhow::Result<Row> {
    let main = &records[..E2E_RESULTS];
    let naive_records = &records[SINK_RESULTS..SINK_RESULTS + NAIVE_E2E_RESULTS];
    stack
        .scratch("sink-e2e", async |s| {
            import::write(&s.pool, repos).await?;
            sqlx::query("ANALYZE repos").execute(&s.pool).await?;
            let consumer = s.consumer(&s.topology.results_stream(), SINK).await?;
            let sink = |batch_size, writers| Sink {
                js: s.js.clone(),
                consumer: consumer.clone(),
                pool: s.pool.clone(),
                timeouts: Default::default(),
                events: None,
                topology: s.topology.clone(),
                schedule: schedule(),
                metrics: sink::metrics::Metrics::register(&mut Registry::default()),
                db: Default::default(),
                batch_size,
                batch_wait: Duration::from_millis(500),
                writers,
            };
            let subject = s.topology.results_subject();

            // The baseline's results are drained before the main ones are published, so each
            // sink sees only its own.
            publish_pipelined(&s.js, &subject, naive_records).await?;
            let naive_took = drain(&sink(1, 1), naive_records.len()).await?;

            let publish_took = publish_pipelined(&s.js, &subject, main).await?;
            let took = drain(&sink(SINK_BATCH, SINK_WRITERS), main.len()).await?;

            let history: i64 = sqlx::query_scalar("SELECT count(*) FROM score_history")
                .fetch_one(&s.pool)
                .await?;
            ensure!(
                history == (main.len() + naive_records.len()) as i64,
                "{history} history rows for {} results",
                main.len() + naive_records.len()
            );
            let stream =
                s.js.get_stream(s.topology.results_stream())
                    .await?
                    .info()
                    .await?
                    .state
                    .bytes;
            Ok(Row {
                what: format!(
                    "sink end to end, {} results from JetStream (`Sink::run`, \
                     {SINK_BATCH} a batch, {SINK_WRITERS} writers)",
                    number(main.len() as f64)
                ),
                unit: "results/s",
                value: rate(main.len(), took),
                baseline: rate(naive_records.len(), naive_took),
                baseline_how: format!(
                    "the same sink fetching and committing one message at a time, {} results",
                    number(naive_records.len() as f64)
                ),
                better: Better::Higher,
                target: Some(5_000.0),
                notes: format!(
                    "{:.1} s; loading the stream first took {:.1} s ({} results/s, {:.0} MB \
                     stored in all)",
                    took.as_secs_f64(),
                    publish_took.as_secs_f64(),
                    number(rate(main.len(), publish_took)),
                    stream as f64 / 1e6,
                ),
            })
        })
        .await
}

/// The sink end to end with change events on (every result a first score, so an event each,
/// through the outbox and its publisher) next to the same run with events off.
async fn sink_events(stack: &Stack, repos: &[RepoName], records: &[Record]) -> anyhow::Result<Row> {
    let main = &records[..E2E_RESULTS];
    let mut took = Vec::new();
    for events in [false, true] {
        let name = if events {
            "sink-events-on"
        } else {
            "sink-events-off"
        };
        let t = stack
            .scratch(name, async |s| {
                import::write(&s.pool, repos).await?;
                sqlx::query("ANALYZE repos").execute(&s.pool).await?;
                let consumer = s.consumer(&s.topology.results_stream(), SINK).await?;
                let metrics = sink::metrics::Metrics::register(&mut Registry::default());
                let wake = std::sync::Arc::new(tokio::sync::Notify::new());
                let sink = Sink {
                    js: s.js.clone(),
                    consumer,
                    pool: s.pool.clone(),
                    timeouts: Default::default(),
                    events: events.then(|| wake.clone()),
                    topology: s.topology.clone(),
                    schedule: schedule(),
                    metrics: metrics.clone(),
                    db: Default::default(),
                    batch_size: SINK_BATCH,
                    batch_wait: Duration::from_millis(500),
                    writers: SINK_WRITERS,
                };
                publish_pipelined(&s.js, &s.topology.results_subject(), main).await?;
                let publisher = sink::events::Publisher {
                    js: s.js.clone(),
                    pool: s.pool.clone(),
                    timeouts: Default::default(),
                    subject: s.topology.score_changed_subject(),
                    metrics: metrics.clone(),
                    wake,
                };
                let stop = CancellationToken::new();
                let publishing = tokio::spawn(publisher.run(stop.clone()));
                let want = main.len() as u64;
                let (ran, t) = tokio::time::timeout(
                    DRAIN_TIMEOUT,
                    run_until(
                        |shutdown| sink.run(shutdown),
                        || {
                            metrics.results.get() >= want
                                && (!events || metrics.events.get() >= want)
                        },
                    ),
                )
                .await
                .context("the sink did not finish")?;
                ran?;
                stop.cancel();
                publishing.await?;
                if events {
                    let published =
                        s.js.get_stream(s.topology.events_stream())
                            .await?
                            .info()
                            .await?
                            .state
                            .messages;
                    ensure!(
                        published == want,
                        "{published} events for {want} first scores"
                    );
                }
                Ok(t)
            })
            .await?;
        took.push(t);
    }
    Ok(Row {
        what: format!(
            "sink end to end with change events, {} first scores (outbox in the batch's \
             transaction, published and deleted by the publisher)",
            number(main.len() as f64)
        ),
        unit: "results/s",
        value: rate(main.len(), took[1]),
        baseline: rate(main.len(), took[0]),
        baseline_how: "the same sink with SINK_EVENTS=false".into(),
        better: Better::Higher,
        target: None,
        notes: format!(
            "events on {:.1} s (every result an event), off {:.1} s",
            took[1].as_secs_f64(),
            took[0].as_secs_f64()
        ),
    })
}

/// Publishes `records` with up to [`PUBLISH_WINDOW`] acks outstanding; returns how long it took.
async fn publish_pipelined(
    js: &jetstream::Context,
    subject: &str,
    records: &[Record],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for record in records {
        if acks.len() >= PUBLISH_WINDOW
            && let Some(ack) = acks.next().await
        {
            ack?;
        }
        let ack = js
            .publish(subject.to_owned(), encode(record).into())
            .await?;
        acks.push(ack.into_future());
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(started.elapsed())
}

/// Runs the sink (`Sink::run`, its own loop and concurrency) until `expected` results are
/// written; returns the time that took.
async fn drain(sink: &Sink, expected: usize) -> anyhow::Result<Duration> {
    let (ran, took) = tokio::time::timeout(
        DRAIN_TIMEOUT,
        run_until(
            |shutdown| sink.run(shutdown),
            || sink.metrics.results.get() >= expected as u64,
        ),
    )
    .await
    .with_context(|| format!("draining {expected} results took over {DRAIN_TIMEOUT:?}"))?;
    ran?;
    ensure!(
        sink.metrics.poison.get() == 0,
        "{} poison messages",
        sink.metrics.poison.get()
    );
    Ok(took)
}

/// Runs a service's own loop until `done` holds, then shuts it down; returns what the loop
/// returned and the time until `done` first held.
async fn run_until<F, T>(
    run: impl FnOnce(CancellationToken) -> F,
    done: impl Fn() -> bool,
) -> (T, Duration)
where
    F: Future<Output = T>,
{
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let watch = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = started.elapsed();
        shutdown.cancel();
        took
    };
    tokio::join!(run(shutdown.clone()), watch)
}

fn mean_raw_json_kb(records: &[Record]) -> f64 {
    let bytes: usize = records
        .iter()
        .map(|r| match r {
            Record::Result(r) => r.raw_json.len(),
            Record::Failure(_) => 0,
        })
        .sum();
    bytes as f64 / records.len().max(1) as f64 / 1e3
}

// ---------------------------------------------------------------------------------------------
// The report.

/// What the numbers were measured on.
async fn machine(stack: &Stack) -> anyhow::Result<Vec<(String, String)>> {
    let mut admin = stack.admin().await?;
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;
    let commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut admin)
        .await?;
    admin.close().await?;
    let mut facts = report::host();
    facts.extend([
        // Other work on the machine (a build) takes cores from PostgreSQL and NATS.
        ("load average at the start".into(), load_average()),
        (
            "postgresql".into(),
            format!("{postgres} (synchronous_commit {commit})"),
        ),
        (
            "nats-server".into(),
            stack.client.server_info().version.clone(),
        ),
    ]);
    Ok(facts)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}
