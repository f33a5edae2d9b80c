//! GitHub's quota as the limit: 3 worker replicas and 4 credentials score 2,000 real
//! repositories against the stand-in's quota (an accelerated hour of 60 s, scans drawing ~70
//! calls from a realistic spread, a scan past the quota waiting for the reset as scorecard
//! does), with two pools: four tokens of 5,000 calls a window, and three such tokens beside an
//! App installation of 15,000. The fleet-wide budget against today's round-robin with a
//! cooldown (`CREDENTIAL_BUDGET=off`), in the same run: scans per credential-window against
//! the physical limit (calls per window ÷ mean calls per scan), stalled scans, TIMEOUTs, and
//! the wall time until every repository that scores has its score (beside the floor the
//! pool's quota puts under it), and until every one has a score or a final failure. A
//! credential-window counts when it ended while scheduled work still waited in the queue:
//! after that only a few retries with their delays are left.
//!
//! Run with `dev/bench`, or `cargo build --release --workspace --bins && cargo bench -p
//! fleet-tests --bench quota` once `dev/stack up` is up (~45 min). `QUOTA_POOLS=tokens` or
//! `mixed` runs one pool, `QUOTA_ITEMS=` changes the repository count, `QUOTA_FLEET_ENV=K=V,…`
//! sets more of the fleet's settings in every run, `QUOTA_RUNS=budget` runs the budget alone
//! and prints its line. Prints a table and writes `target/bench-quota.json`.

use std::time::{Duration, Instant};

use anyhow::ensure;
use fleet_runtime::topology::TopologyArgs;
use fleet_tests::fleet::{Fleet, settle};
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::results::repo_list;
use fleet_tests::scratch::{Scratch, Stack};
use fleet_tests::sim::{Quota, Window};
use fleet_tests::stack;
use producer::import;
use worker::job::Credential;

const WORKERS: usize = 3;
const QUOTA: Quota = Quota {
    calls_per_window: 5_000,
    app_calls_per_window: 15_000,
    window: Duration::from_secs(60),
};
/// A fleet that has not finished by then is stuck.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40 * 60);

/// Both runs: the quota's window as GitHub's hour, scans given one window (as production gives
/// them an hour), transient failures retried.
const COMMON: [(&str, &str); 11] = [
    ("GITHUB_TOKEN_CALLS_PER_WINDOW", "5000"),
    ("GITHUB_APP_CALLS_PER_WINDOW", "15000"),
    ("GITHUB_WINDOW_SECS", "60"),
    ("SCAN_COST_CALLS", "70"),
    ("TOKEN_COOLDOWN_SECS", "15"),
    ("JOB_DEADLINE_SECS", "60"),
    ("WORKER_MAX_IN_FLIGHT", "50"),
    ("PRODUCER_BACKOFF_CAP_SECS", "1"),
    ("SINK_BATCH_WAIT_MS", "200"),
    ("WORKER_POLL_MS", "200"),
    ("LOG", "warn"),
];

/// The credentials a run scans with.
struct Pool {
    name: &'static str,
    what: &'static str,
    /// `TOKEN_KEYS` and `GITHUB_APP_INSTALLATIONS`, as the workers get them.
    env: &'static [(&'static str, &'static str)],
}

impl Pool {
    /// Calls the whole pool may make per window: its keys as the stand-in sees them
    /// (`token-0`, `app:<installation>`).
    fn calls_per_window(&self) -> u32 {
        let mut calls = 0;
        for (var, list) in self.env {
            for key in list.split(',') {
                calls += match *var {
                    "TOKEN_KEYS" => QUOTA.calls_of(key),
                    "GITHUB_APP_INSTALLATIONS" => QUOTA.calls_of(&Credential::App(key).key()),
                    _ => 0,
                };
            }
        }
        calls
    }
}

/// Four personal tokens alike: round-robin's even spread is what they need.
const TOKENS: Pool = Pool {
    name: "tokens",
    what: "4 tokens of 5,000 calls",
    env: &[("TOKEN_KEYS", "token-0,token-1,token-2,token-3")],
};

/// Three tokens and an App installation with three times their quota, as a fleet that moved
/// its bulk onto an App has: an even spread runs the tokens dry while the App has calls left.
const MIXED: Pool = Pool {
    name: "mixed",
    what: "3 tokens of 5,000 calls and an App installation of 15,000",
    env: &[
        ("TOKEN_KEYS", "token-0,token-1,token-2"),
        ("GITHUB_APP_INSTALLATIONS", "1"),
    ],
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let stack = Stack::connect().await?;
    let machine = report::host();
    println!("# scorecard-fleet quota bench\n");
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!();
    let items: usize = std::env::var("QUOTA_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let repos: Vec<_> = repo_list().into_iter().take(items).collect();
    ensure!(
        repos.len() == items,
        "the fixture list has {} repositories",
        repos.len()
    );
    let wanted = std::env::var("QUOTA_POOLS").unwrap_or_else(|_| "tokens,mixed".into());
    let pools: Vec<&Pool> = [&TOKENS, &MIXED]
        .into_iter()
        .filter(|p| wanted.split(',').any(|w| w.trim() == p.name))
        .collect();
    ensure!(
        !pools.is_empty(),
        "QUOTA_POOLS names no pool (tokens, mixed): {wanted}"
    );

    // `QUOTA_RUNS=budget`: an experiment on the budget alone, its line and no table.
    let budget_only = std::env::var("QUOTA_RUNS").as_deref() == Ok("budget");
    let mut rows = Vec::new();
    let mut windows = Vec::new();
    for pool in pools {
        let baseline = if budget_only {
            None
        } else {
            Some(measure(&stack, pool, &repos, "off").await?)
        };
        let budget = measure(&stack, pool, &repos, "fleet").await?;
        windows.extend(budget.series(pool, "budget"));
        if let Some(baseline) = baseline {
            windows.extend(baseline.series(pool, "round-robin"));
            rows.extend(rows_of(pool, items, &budget, &baseline));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let took = started.elapsed();
    println!("{}", report::markdown(&rows));
    for r in &rows {
        if !r.notes.is_empty() {
            println!("- {}: {}", r.what, r.notes);
        }
    }
    // Every credential's windows, for the book's chart of where the quota went.
    let series = serde_json::json!({ "series": { "windows": windows } });
    let path = report::write_json("quota", &machine, &rows, series, took)?;
    println!(
        "\nwhole bench: {:.0} s; written to {}",
        took.as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// One run of the fleet on `pool` with `CREDENTIAL_BUDGET=budget`, its line and windows printed.
async fn measure(
    stack: &Stack,
    pool: &Pool,
    repos: &[fleet_proto::RepoName],
    budget: &str,
) -> anyhow::Result<Run> {
    let measured = run(stack, pool, repos, budget).await?;
    let lane = if budget == "off" {
        "round-robin"
    } else {
        "budget"
    };
    eprintln!(
        "{lane} ({}): {}\n{}",
        pool.name,
        measured.text(pool),
        measured.windows_text()
    );
    Ok(measured)
}

/// The table's rows for one pool: the budget against round-robin.
fn rows_of(pool: &Pool, items: usize, budget: &Run, baseline: &Run) -> Vec<Row> {
    let what = |m: &str| {
        format!(
            "{m}: {WORKERS} workers, {}, {} real repositories, {} s windows",
            pool.what,
            number(items as f64),
            QUOTA.window.as_secs()
        )
    };
    let row = |m: &str, unit, value, base, better, target| Row {
        what: what(m),
        unit,
        value,
        baseline: base,
        baseline_how: "today's round-robin with a cooldown after a rate limit, the same run"
            .to_owned(),
        better,
        target,
        notes: String::new(),
    };
    let mut share = row(
        "scans per credential-window, share of the physical limit",
        "%",
        budget.efficiency() * 100.0,
        baseline.efficiency() * 100.0,
        Better::Higher,
        Some(90.0),
    );
    share.notes = format!(
        "budget: {}; round-robin: {}",
        budget.text(pool),
        baseline.text(pool)
    );
    let mut last = row(
        "wall time until every repository that scores has its score",
        "s",
        budget.to_last_score.as_secs_f64(),
        baseline.to_last_score.as_secs_f64(),
        Better::Lower,
        None,
    );
    last.notes = format!(
        "the quota's floor for the calls each run spent: budget {:.0} s, round-robin {:.0} s",
        budget.floor(pool).as_secs_f64(),
        baseline.floor(pool).as_secs_f64()
    );
    vec![
        share,
        row(
            "scans that waited for a quota reset",
            "%",
            budget.stalled_share() * 100.0,
            baseline.stalled_share() * 100.0,
            Better::Lower,
            Some(1.0),
        ),
        row(
            "TIMEOUTs (scans past their deadline, retried or final)",
            "scans",
            budget.timeouts,
            baseline.timeouts,
            Better::Lower,
            None,
        ),
        last,
        row(
            "wall time until every repository has a score or a final failure",
            "s",
            budget.took.as_secs_f64(),
            baseline.took.as_secs_f64(),
            Better::Lower,
            None,
        ),
    ]
}

struct Run {
    windows: Vec<Window>,
    started: Instant,
    /// The last moment scheduled work waited in the queue: windows after it had nothing to
    /// spend their quota on (only a few retries with their delays were left).
    backlog_until: Instant,
    scans: u64,
    /// Each scan's credential and the moment its pod was seen.
    starts: Vec<(String, Instant)>,
    stalled: u64,
    timeouts: f64,
    took: Duration,
    /// From the start to the last score written (repositories that end in a final failure
    /// wait out the retry ladder, which is the same with or without a budget).
    to_last_score: Duration,
}

impl Run {
    /// Windows in which the credential had work all along: they ended while scheduled work
    /// still waited in the queue.
    fn full_windows(&self) -> Vec<&Window> {
        self.windows
            .iter()
            .filter(|w| w.started + QUOTA.window <= self.backlog_until)
            .collect()
    }

    /// Every call the run's scans made.
    fn calls(&self) -> u64 {
        self.windows.iter().map(|w| u64::from(w.calls)).sum()
    }

    /// Mean over full credential-windows of the scans in it over the physical limit (its
    /// credential's calls per window over the run's mean calls per scan).
    fn efficiency(&self) -> f64 {
        let full = self.full_windows();
        let scans: u64 = self.windows.iter().map(|w| u64::from(w.scans)).sum();
        if full.is_empty() || scans == 0 {
            return 0.0;
        }
        let per_scan = self.calls() as f64 / scans as f64;
        let share =
            |w: &&Window| f64::from(w.scans) * per_scan / f64::from(QUOTA.calls_of(&w.credential));
        full.iter().map(share).sum::<f64>() / full.len() as f64
    }

    /// The least time the pool's quota allows for the calls the run made: what no rule for
    /// handing out credentials can beat.
    fn floor(&self, pool: &Pool) -> Duration {
        QUOTA
            .window
            .mul_f64(self.calls() as f64 / f64::from(pool.calls_per_window()))
    }

    /// Each credential's windows as JSON: the pool, the rule (`budget` or `round-robin`), when
    /// the window began (seconds into the run), the calls spent against the credential's
    /// limit, the scans, and whether scheduled work waited all through it.
    fn series(&self, pool: &Pool, rule: &str) -> Vec<serde_json::Value> {
        let mut windows: Vec<&Window> = self.windows.iter().collect();
        windows.sort_by_key(|w| (w.credential.clone(), w.started));
        windows
            .into_iter()
            .map(|w| {
                serde_json::json!({
                    "pool": pool.what,
                    "rule": rule,
                    "credential": w.credential,
                    "at_s": w.started.saturating_duration_since(self.started).as_secs_f64(),
                    "calls": w.calls,
                    "limit": QUOTA.calls_of(&w.credential),
                    "scans": w.scans,
                    "full": w.started + QUOTA.window <= self.backlog_until,
                })
            })
            .collect()
    }

    /// Per credential, each full window as `scans/started` (scans whose last call fell in it,
    /// pods seen in it), `!` where it ran dry: where the quota went.
    fn windows_text(&self) -> String {
        let mut lines: Vec<(String, Vec<String>)> = Vec::new();
        let mut full = self.full_windows();
        full.sort_by_key(|w| (w.credential.clone(), w.started));
        for w in &full {
            let started = self
                .starts
                .iter()
                .filter(|(c, t)| {
                    *c == w.credential && *t >= w.started && *t < w.started + QUOTA.window
                })
                .count();
            let dry = if w.calls >= QUOTA.calls_of(&w.credential) {
                "!"
            } else {
                ""
            };
            let cell = format!("{}/{started}{dry}", w.scans);
            match lines.last_mut() {
                Some((c, cells)) if *c == w.credential => cells.push(cell),
                _ => lines.push((w.credential.clone(), vec![cell])),
            }
        }
        lines
            .iter()
            .map(|(c, cells)| format!("  {c}: {}", cells.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stalled_share(&self) -> f64 {
        self.stalled as f64 / self.scans.max(1) as f64
    }

    fn text(&self, pool: &Pool) -> String {
        let full = self.full_windows();
        format!(
            "{} scans in {:.0} s (work waiting for the first {:.0} s, the last score at {:.0} s, the quota's floor {:.0} s), {} full credential-windows at {:.1}% of the limit, {} stalled, {} TIMEOUTs",
            self.scans,
            self.took.as_secs_f64(),
            self.backlog_until
                .duration_since(self.started)
                .as_secs_f64(),
            self.to_last_score.as_secs_f64(),
            self.floor(pool).as_secs_f64(),
            full.len(),
            self.efficiency() * 100.0,
            self.stalled,
            self.timeouts
        )
    }
}

/// Samples the scheduled consumer twice a second and records in `seen` the last moment it had
/// messages waiting for a pull (items handed back with a delay are not waiting).
async fn backlog_until(
    js: async_nats::jetstream::Context,
    stream: String,
    seen: std::sync::Arc<std::sync::Mutex<Instant>>,
) {
    loop {
        let pending = async {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_stream(&stream)
                .await
                .ok()?
                .get_consumer(fleet_runtime::topology::WORKER_SCHEDULED)
                .await
                .ok()?;
            Some(consumer.info().await.ok()?.num_pending)
        };
        if pending.await.is_some_and(|n| n > 0) {
            *seen.lock().unwrap() = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sum of a counter's series whose labels contain `label`.
fn counter(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn run(
    stack: &Stack,
    pool: &Pool,
    repos: &[fleet_proto::RepoName],
    budget: &str,
) -> anyhow::Result<Run> {
    let label = format!("quota-{}-{budget}", pool.name);
    let args = TopologyArgs {
        work_max_deliver: 5,
        work_ack_wait_secs: 60,
        ..Default::default()
    };
    stack
        .scratch_with(&label, args, async |s: &Scratch| {
            import::write(&s.pool, repos).await?;
            let db = s.opts.get_database().unwrap_or_default().to_owned();
            let mut env: Vec<(&str, &str)> = COMMON.to_vec();
            env.extend(pool.env);
            env.push(("CREDENTIAL_BUDGET", budget));
            // Settings tried on both runs, `K=V,K=V`: what an experiment changes.
            let extra = std::env::var("QUOTA_FLEET_ENV").unwrap_or_default();
            env.extend(extra.split(',').filter_map(|kv| kv.split_once('=')));
            let mut fleet = Fleet::prepare(
                &stack::database_url_for(&db),
                &stack::nats_url(),
                s.topology.clone(),
                &env,
            )
            .await;
            fleet.sim.limit(QUOTA);
            let started = Instant::now();
            let db_started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
                .fetch_one(&s.pool)
                .await?;
            fleet.start("sink", "sink", &["run"]);
            for i in 1..=WORKERS {
                fleet.start(&format!("worker-{i}"), "worker", &[]);
            }
            fleet.start("producer", "producer", &["run"]);
            let seen = std::sync::Arc::new(std::sync::Mutex::new(started));
            let backlog = tokio::spawn(backlog_until(
                s.js.clone(),
                s.topology.work_stream(),
                seen.clone(),
            ));
            settle(&s.pool, &s.js, &s.topology, SETTLE_TIMEOUT).await;
            let took = started.elapsed();
            backlog.abort();
            let backlog_until = *seen.lock().unwrap();
            let last_score: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT max(updated_at) FROM scores")
                    .fetch_one(&s.pool)
                    .await?;
            let to_last_score = last_score
                .and_then(|t| (t - db_started).to_std().ok())
                .unwrap_or_default();
            let mut timeouts = 0.0;
            for i in 1..=WORKERS {
                let m = fleet.metrics(&format!("worker-{i}")).await;
                timeouts += counter(&m, "worker_retried", "class=\"TIMEOUT\"")
                    + counter(&m, "worker_failed", "class=\"TIMEOUT\"");
            }
            if budget == "fleet" {
                // What an operator sees: the pool as the workers learned it.
                let plan = std::process::Command::new(stack::workspace_binary("sink"))
                    .arg("plan")
                    .env("DATABASE_URL", stack::database_url_for(&db))
                    .env("NATS_URL", stack::nats_url())
                    .env("NATS_PREFIX", &s.topology.args().nats_prefix)
                    .output()?;
                println!(
                    "`sink plan` after the budget run:\n\n{}{}",
                    String::from_utf8_lossy(&plan.stdout),
                    String::from_utf8_lossy(&plan.stderr)
                );
            }
            fleet.stop_all().await;
            Ok(Run {
                windows: fleet.sim.windows(),
                started,
                backlog_until,
                to_last_score,
                scans: fleet.sim.starts().len() as u64,
                starts: fleet.sim.starts(),
                stalled: fleet.sim.stalled(),
                timeouts,
                took,
            })
        })
        .await
}
