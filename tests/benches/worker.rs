//! The worker's Kubernetes costs against the local stack, each next to the seed design (one
//! watch per Job, on the Job's name, open while it runs) measured in the same run:
//!
//! 1. Kubernetes API requests per Job, and the Job watches open at once;
//! 2. sustained Jobs/s through one worker (the same runs as 1);
//! 3. the worker's memory with 1,000 Jobs in flight.
//!
//! Run with `cargo bench -p fleet-tests --bench worker` once `dev/stack up` is up. It prints a
//! markdown table and writes it as JSON to `target/bench-worker.json`. Every measurement gets a
//! namespace and a NATS prefix of its own and removes both when done.
//!
//! Row 3 re-executes this binary (`worker-<hash> probe MODE NAMESPACE`) as a watch-only process,
//! so the per-Job watches are measured in a process of their own and compared with the same
//! process holding one shared watch.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use async_nats::jetstream;
use chrono::Utc;
use fleet_proto::v1::{FailureClass, WorkItem, WorkReason};
use fleet_runtime::topology::{Topology, TopologyArgs};
use fleet_tests::kube_support;
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::sim::Simulator;
use fleet_tests::stack;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use worker::budget::Pool;
use worker::consume::{Settings, Worker};
use worker::job::{self, CONTAINER, JobSettings, SELECTOR};
use worker::logs::RunLog;
use worker::metrics::{ClassLabel, Metrics};
use worker::runner::kubernetes::KubeRunner;
use worker::runner::{RunResult, Runner};
use worker::tokens::TokenPool;
use worker::watch::{JobView, JobWatch};

/// Work items per throughput run: enough for several turns of the in-flight window.
const JOBS: usize = 300;
/// The in-process worker's max in flight in the throughput runs.
const IN_FLIGHT: usize = 100;
/// Jobs held running for the memory measurement.
const HELD: usize = 1000;
/// The brief's targets.
const REQUESTS_TARGET: f64 = 4.0;
const RSS_TARGET_MB: f64 = 64.0;
/// A throughput run that has not finished by then is stuck; it is reported as it stands.
const THROUGHPUT_TIMEOUT: Duration = Duration::from_secs(240);
/// 1,000 Jobs, their pods scheduled and marked Running by KWOK: about a minute on 2 cores.
const SCALE_TIMEOUT: Duration = Duration::from_secs(300);
/// A probe opening 1,000 watches (1,000 TLS connections, 1,000 lists).
const PROBE_TIMEOUT: Duration = Duration::from_secs(240);
/// Time for a process's allocations to settle before its memory is read, and for watches
/// whose initial list is done to have their watch request open.
const SETTLE: Duration = Duration::from_secs(5);
/// The latest the worker is sampled again (from its first enqueue), once the API server has
/// closed the connections the burst of creates left idle.
const LATER_SAMPLE: Duration = Duration::from_secs(130);
/// How long a finished measurement waits for its namespace to go before the next one starts,
/// so the garbage collector's work does not fall into the next measurement.
const NAMESPACE_GONE_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests in flight at once in the bounded burst probe.
const BOUNDED: usize = 32;
const TOKEN_KEY: &str = "token-0";
const PROBE: &str = "probe";
/// The verbs `Metrics::kube` counts.
const VERBS: [&str; 6] = ["create", "get", "list", "log", "delete", "watch"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; only the probe mode takes arguments of its own.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(PROBE) {
        let (Some(mode), Some(namespace)) = (args.get(1), args.get(2)) else {
            bail!("usage: {PROBE} per-job|shared|burst|burst-N NAMESPACE < job names");
        };
        return probe(mode, namespace).await;
    }
    bench().await
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    let machine = machine();
    println!("# scorecard-fleet worker bench\n");
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!();
    let worker_binary = build_worker()?;
    let phase = |name: &str| eprintln!("[{:>4.0} s] {name}", started.elapsed().as_secs_f64());
    phase("worker binary built");
    let shared = throughput(Design::Shared).await?;
    phase("shared-watch run done");
    let per_job = throughput(Design::PerJob).await?;
    phase("per-Job-watch run done");
    let scale = scale(&worker_binary).await?;
    phase("memory measurement done");

    let rows = vec![
        requests_row(&shared, &per_job),
        watches_row(&shared, &per_job),
        throughput_row(&shared, &per_job),
        rss_row(&scale),
        probe_row(&scale),
    ];
    let took = started.elapsed();
    println!("\n{}", markdown(&rows));
    for row in &rows {
        println!("- {}: {}", row.what, row.notes);
    }
    println!("\nwhole bench: {:.0} s", took.as_secs_f64());
    let details = serde_json::json!({
        "details": {
            "throughput": [shared.json(), per_job.json()],
            "scale": scale.json(),
        }
    });
    let path = report::write_json("worker", &machine, &rows, details, took)?;
    println!("written to {}", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rows 1 and 2: requests per Job and Jobs/s, through the worker's own loop.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    /// This design: the KubeRunner and the process's one shared Job watch.
    Shared,
    /// The seed design: a watch per Job, opened on its name while it runs.
    PerJob,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared watch",
            Self::PerJob => "watch per Job",
        }
    }
}

struct Throughput {
    design: Design,
    published: u64,
    failed: u64,
    retried: u64,
    /// From the first enqueue to the last result published.
    elapsed: Duration,
    /// Requests by verb, as `worker::metrics::Metrics` counted them.
    verbs: BTreeMap<&'static str, u64>,
    /// Requests made once per process whatever the number of Jobs (the shared watch's
    /// connects; its initial list is not counted by the worker and is added in the notes).
    per_process: u64,
    peak_watches: usize,
}

impl Throughput {
    /// Requests attributable to the Jobs (the per-process watch left out).
    fn per_job(&self) -> f64 {
        let total: u64 = self.verbs.values().sum();
        (total - self.per_process) as f64 / JOBS as f64
    }

    fn jobs_per_sec(&self) -> f64 {
        self.published as f64 / self.elapsed.as_secs_f64()
    }

    fn verbs_text(&self) -> String {
        self.verbs
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(verb, n)| {
                let n = if self.design == Design::Shared && *verb == "watch" {
                    n.saturating_sub(self.per_process)
                } else {
                    *n
                };
                format!("{verb} {:.2}", n as f64 / JOBS as f64)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "design": self.design.name(),
            "jobs": JOBS,
            "in_flight": IN_FLIGHT,
            "published": self.published,
            "failed": self.failed,
            "retried": self.retried,
            "seconds": self.elapsed.as_secs_f64(),
            "jobs_per_sec": self.jobs_per_sec(),
            "requests_by_verb": self.verbs,
            "per_process_requests": self.per_process,
            "requests_per_job": self.per_job(),
            "peak_open_watches": self.peak_watches,
        })
    }
}

/// Runs `JOBS` succeeding scans through an in-process Worker with `design`'s runner.
async fn throughput(design: Design) -> anyhow::Result<Throughput> {
    eprintln!("{}: {JOBS} Jobs, {IN_FLIGHT} in flight", design.name());
    let scratch = Scratch::create("bench-tput", 60).await?;
    let result = throughput_in(&scratch, design).await;
    scratch.remove(NAMESPACE_GONE_TIMEOUT).await;
    result
}

async fn throughput_in(scratch: &Scratch, design: Design) -> anyhow::Result<Throughput> {
    let sim = Simulator::start(scratch.admin.clone(), &scratch.ns);
    let metrics = Metrics::default();
    let shutdown = CancellationToken::new();
    let open = Arc::new(OpenWatches::default());
    let settings = job_settings(&scratch.ns);
    let runner: Arc<dyn Runner> = match design {
        Design::Shared => {
            let watch = JobWatch::start(
                scratch.client.clone(),
                &scratch.ns,
                metrics.clone(),
                shutdown.clone(),
            );
            tokio::time::timeout(Duration::from_secs(30), watch.synced())
                .await
                .context("the shared Job watch did not sync")?;
            // As `worker::run` does: the shared watch counts once per process.
            metrics.kube("watch");
            open.open().forget();
            Arc::new(KubeRunner::new(
                scratch.client.clone(),
                settings,
                watch,
                // The worker's default: no pending checks in a healthy run.
                Duration::from_secs(600),
                4 << 20,
                metrics.clone(),
            ))
        }
        Design::PerJob => Arc::new(PerJobWatchRunner {
            jobs: Api::namespaced(scratch.client.clone(), &scratch.ns),
            pods: Api::namespaced(scratch.client.clone(), &scratch.ns),
            settings,
            metrics: metrics.clone(),
            open: open.clone(),
        }),
    };
    let worker = Arc::new(
        Worker::open(
            scratch.js.clone(),
            scratch.topology.clone(),
            runner,
            Arc::new(Pool::RoundRobin(TokenPool::new(
                vec![TOKEN_KEY.into()],
                Duration::from_secs(60),
            ))),
            metrics.clone(),
            Settings {
                max_in_flight: IN_FLIGHT,
                manual_in_flight: 0,
                heartbeat: Duration::from_secs(15),
                drain_deadline: Duration::from_secs(10),
                max_deliver: 3,
                // WORKER_POLL_MS's default: a pull that waited out a poll hid behind a shorter one.
                poll: Duration::from_secs(1),
                quota_window: Duration::from_secs(3600),
            },
            Duration::from_secs(600),
        )
        .await?,
    );
    let running = tokio::spawn(
        worker
            .clone()
            .run(shutdown.clone(), fleet_runtime::http::Readiness::default()),
    );

    let repos: Vec<String> = (0..JOBS)
        .map(|i| format!("github.com/sim-ok/t{i}"))
        .collect();
    let started = Instant::now();
    scratch.enqueue(&repos).await?;
    let deadline = started + THROUGHPUT_TIMEOUT;
    let mut next_progress = started + Duration::from_secs(5);
    let finished_at = loop {
        let published = metrics.succeeded.get();
        let ended = published + class_total(&metrics.failed);
        let now = Instant::now();
        if ended >= JOBS as u64 {
            break now;
        }
        if now > deadline {
            eprintln!(
                "  timed out after {:?} with {ended}/{JOBS} ended; reporting what finished",
                THROUGHPUT_TIMEOUT
            );
            break now;
        }
        if now >= next_progress {
            eprintln!(
                "  {:>4.0} s: {published}/{JOBS} published, {} in flight, {} watches open",
                started.elapsed().as_secs_f64(),
                metrics.in_flight.get(),
                open.now.load(Ordering::SeqCst)
            );
            next_progress = now + Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = finished_at - started;
    // The loop drains: every cleanup (the Job's delete) is counted before the counts are read.
    shutdown.cancel();
    running.await.context("the worker loop panicked")?;
    drop(sim);

    let verbs = VERBS
        .iter()
        .map(|verb| {
            let label = worker::metrics::VerbLabel {
                verb: (*verb).to_owned(),
            };
            (*verb, metrics.kube_requests.get_or_create(&label).get())
        })
        .collect();
    let result = Throughput {
        design,
        published: metrics.succeeded.get(),
        failed: class_total(&metrics.failed),
        retried: class_total(&metrics.retried),
        elapsed,
        verbs,
        per_process: match design {
            Design::Shared => 1 + metrics.watch_restarts.get(),
            Design::PerJob => 0,
        },
        peak_watches: open.peak.load(Ordering::SeqCst),
    };
    eprintln!(
        "  {}: {} published in {:.1} s ({:.1} Jobs/s), {:.2} requests per Job, peak {} watches",
        design.name(),
        result.published,
        elapsed.as_secs_f64(),
        result.jobs_per_sec(),
        result.per_job(),
        result.peak_watches
    );
    Ok(result)
}

/// The sum over failure classes of a per-class counter.
fn class_total(
    family: &prometheus_client::metrics::family::Family<
        ClassLabel,
        prometheus_client::metrics::counter::Counter,
    >,
) -> u64 {
    (0..32)
        .filter_map(|i| FailureClass::try_from(i).ok())
        .map(|class| {
            family
                .get_or_create(&ClassLabel {
                    class: class.name().to_owned(),
                })
                .get()
        })
        .sum()
}

/// Watches open now and at most, for the seed design (the shared design has one).
#[derive(Default)]
struct OpenWatches {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl OpenWatches {
    fn open(self: &Arc<Self>) -> WatchGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        WatchGuard(Some(self.clone()))
    }
}

/// Closes its watch in the count when dropped.
struct WatchGuard(Option<Arc<OpenWatches>>);

impl WatchGuard {
    /// For a watch that stays open for the life of the process.
    fn forget(mut self) {
        self.0 = None;
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(open) = self.0.take() {
            open.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The seed design's runner: as the KubeRunner (create, wait, pod list, log, delete) except
/// that each Job is waited for through a watch of its own on its name. Requests are counted
/// into the same `Metrics` family by the same verbs; the watcher's initial list of each watch
/// is a `list`, each (re)connect a `watch`.
struct PerJobWatchRunner {
    jobs: Api<Job>,
    pods: Api<Pod>,
    settings: JobSettings,
    metrics: Metrics,
    open: Arc<OpenWatches>,
}

impl PerJobWatchRunner {
    async fn run_item(&self, item: &WorkItem) -> RunResult {
        let name = job::job_name(&item.id);
        let infra = |message: String, created: bool| RunResult::Infra {
            message,
            job_name: name.clone(),
            created,
        };
        self.metrics.kube("create");
        let job = job::build(item, &self.settings, TOKEN_KEY);
        if let Err(e) = self.jobs.create(&PostParams::default(), &job).await {
            return infra(format!("creating Job {name}: {e}"), false);
        }
        let view = match self.wait(&name).await {
            Ok(view) => view,
            Err(message) => return infra(message, true),
        };
        match self.finished(&name, &view).await {
            Ok(run) => RunResult::Ended {
                run,
                adopted: false,
                ended_before: false,
            },
            Err(message) => infra(message, true),
        }
    }

    async fn wait(&self, name: &str) -> Result<JobView, String> {
        let _open = self.open.open();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher::watcher(self.jobs.clone(), config)
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                // `Init` comes before each (re)list request is made.
                Ok(Event::Init) => self.metrics.kube("list"),
                Ok(Event::InitApply(job) | Event::Apply(job)) => {
                    let view = JobView::of(&job);
                    if view.finished.is_some() {
                        return Ok(view);
                    }
                    if view.deleting {
                        return Err(format!("Job {name} was deleted while running"));
                    }
                }
                // The watch request follows the list; the Job was not finished in it.
                Ok(Event::InitDone) => self.metrics.kube("watch"),
                Ok(Event::Delete(_)) => return Err(format!("Job {name} disappeared")),
                // A failed list is followed by `Init` again; anything else by a new watch.
                Err(watcher::Error::InitialListFailed(_)) => {}
                Err(_) => self.metrics.kube("watch"),
            }
        }
        Err(format!("the watch of Job {name} ended"))
    }

    async fn finished(&self, name: &str, view: &JobView) -> Result<RunLog, String> {
        self.metrics.kube("list");
        let pods = self
            .pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
            .await
            .map_err(|e| format!("listing the pod of Job {name}: {e}"))?;
        let pod = pods
            .items
            .into_iter()
            .max_by_key(|p| p.creation_timestamp());
        let terminated = pod.as_ref().and_then(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .clone()
        });
        let mut log = String::new();
        if let Some(pod) = &pod {
            self.metrics.kube("log");
            let params = LogParams {
                container: Some(CONTAINER.to_owned()),
                tail_lines: Some(500),
                limit_bytes: Some(4 << 20),
                ..Default::default()
            };
            log = self
                .pods
                .logs(&pod.name_any(), &params)
                .await
                .unwrap_or_default();
        }
        Ok(RunLog {
            job_name: name.to_owned(),
            token_key: None,
            exit_code: terminated.as_ref().map(|t| t.exit_code),
            reason: terminated.as_ref().and_then(|t| t.reason.clone()),
            deadline_exceeded: view
                .finished
                .as_ref()
                .is_some_and(|f| f.reason == "DeadlineExceeded"),
            log,
            log_cut: false,
            started_at: view.created,
            finished_at: terminated
                .and_then(|t| t.finished_at.map(|f| worker::watch::utc(&f.0)))
                .or_else(|| Some(Utc::now())),
        })
    }
}

/// `Runner` is an `async_trait`; written out by hand, as this crate does not depend on it.
impl Runner for PerJobWatchRunner {
    fn run<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        item: &'life1 WorkItem,
        _credential: Option<&'life2 str>,
    ) -> Pin<Box<dyn Future<Output = RunResult> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.run_item(item))
    }

    fn cleanup<'life0, 'life1, 'async_trait>(
        &'life0 self,
        item: &'life1 WorkItem,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.metrics.kube("delete");
            let name = job::job_name(&item.id);
            match self.jobs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => eprintln!("  deleting Job {name}: {e}"),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Row 3: memory with 1,000 Jobs in flight.

struct Scale {
    /// When the worker reached 1,000 in flight, 1,000 Jobs and 1,000 running pods (or gave up).
    reached_after: Duration,
    in_flight: f64,
    jobs: usize,
    running: usize,
    /// The worker before any work: its floor.
    worker_idle: ProcStats,
    /// The worker with 1,000 Jobs in flight: the measurement.
    worker: ProcStats,
    /// The worker once the probes ran and its idle API connections had time to be closed.
    worker_later: ProcStats,
    worker_later_after: Duration,
    per_job: ProbeReport,
    shared: ProbeReport,
    /// The probe process after one concurrent GET per Job and no watch: what a burst of
    /// requests leaves in the kube client (the worker's burst of creates).
    burst: ProbeReport,
    /// The same GETs, at most `BOUNDED` at a time.
    bounded: ProbeReport,
}

impl Scale {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "held_jobs": HELD,
            "reached_after_seconds": self.reached_after.as_secs_f64(),
            "worker_in_flight": self.in_flight,
            "jobs": self.jobs,
            "running_pods": self.running,
            "worker_open_watches": 1,
            "worker_idle": self.worker_idle.json(),
            "worker": self.worker.json(),
            "worker_later": self.worker_later.json(),
            "worker_later_after_seconds": self.worker_later_after.as_secs_f64(),
            "probe_per_job": self.per_job.json(),
            "probe_shared": self.shared.json(),
            "probe_burst": self.burst.json(),
            "probe_burst_bounded": self.bounded.json(),
        })
    }
}

/// A process's memory and connections, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    rss_kb: u64,
    /// Heap and other anonymous memory; the rest of RSS is mapped files (the binary).
    anon_kb: u64,
    hwm_kb: u64,
    threads: u64,
    sockets: u64,
    /// TCP connections to the API server.
    api_sockets: u64,
}

impl ProcStats {
    fn rss_mb(&self) -> f64 {
        self.rss_kb as f64 / 1024.0
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "vm_rss_kb": self.rss_kb,
            "rss_anon_kb": self.anon_kb,
            "vm_hwm_kb": self.hwm_kb,
            "threads": self.threads,
            "sockets": self.sockets,
            "api_server_connections": self.api_sockets,
        })
    }

    fn parse(v: &serde_json::Value) -> anyhow::Result<Self> {
        let int = |k: &str| v[k].as_u64().with_context(|| format!("no {k} in {v}"));
        Ok(Self {
            rss_kb: int("vm_rss_kb")?,
            anon_kb: int("rss_anon_kb")?,
            hwm_kb: int("vm_hwm_kb")?,
            threads: int("threads")?,
            sockets: int("sockets")?,
            api_sockets: int("api_server_connections")?,
        })
    }

    fn text(&self) -> String {
        format!(
            "{:.1} MB RSS ({:.1} MB anonymous, peak {:.1} MB), {} API server connections",
            self.rss_mb(),
            self.anon_kb as f64 / 1024.0,
            self.hwm_kb as f64 / 1024.0,
            self.api_sockets
        )
    }
}

/// `/proc/<pid>/status`, and the process's sockets (those connected to the API server apart).
fn proc_stats(pid: &str) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // Lines of /proc/<pid>/net/tcp{,6}: `sl local rem st ... uid timeout inode ...`, ports in hex.
    let api_port = format!(":{:04X}", api_server_port());
    let api_sockets: usize = ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    cols.len() > 9 && cols[2].ends_with(&api_port) && inodes.contains(cols[9])
                })
                .count()
        })
        .sum();
    Ok(ProcStats {
        rss_kb: field("VmRSS"),
        anon_kb: field("RssAnon"),
        hwm_kb: field("VmHWM"),
        threads: field("Threads"),
        sockets: u64::try_from(inodes.len()).unwrap_or(u64::MAX),
        api_sockets: u64::try_from(api_sockets).unwrap_or(u64::MAX),
    })
}

/// The API server's port, from the stack's kubeconfig.
fn api_server_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        kube::config::Kubeconfig::read_from(stack::kubeconfig())
            .ok()
            .and_then(|k| k.clusters.first()?.cluster.as_ref()?.server.clone())
            .and_then(|server| {
                server
                    .rsplit(':')
                    .next()?
                    .trim_end_matches('/')
                    .parse()
                    .ok()
            })
            .unwrap_or(443)
    })
}

/// What a probe process reports, as one JSON line.
#[derive(Debug, Clone, Default)]
struct ProbeReport {
    mode: String,
    watches: usize,
    jobs: usize,
    synced: usize,
    sync_seconds: f64,
    /// With its client connected and the Jobs' names listed, before any watch.
    floor: ProcStats,
    /// With every Job watched.
    watching: ProcStats,
}

impl ProbeReport {
    /// What watching the Jobs added.
    fn growth_mb(&self) -> f64 {
        (self.watching.rss_kb as f64 - self.floor.rss_kb as f64) / 1024.0
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode,
            "watches": self.watches,
            "jobs": self.jobs,
            "synced": self.synced,
            "sync_seconds": self.sync_seconds,
            "floor": self.floor.json(),
            "watching": self.watching.json(),
        })
    }

    fn parse(line: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let int = |k: &str| {
            v[k].as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .with_context(|| format!("no {k}"))
        };
        Ok(Self {
            mode: v["mode"].as_str().unwrap_or_default().to_owned(),
            watches: int("watches")?,
            jobs: int("jobs")?,
            synced: int("synced")?,
            sync_seconds: v["sync_seconds"].as_f64().unwrap_or(0.0),
            floor: ProcStats::parse(&v["floor"])?,
            watching: ProcStats::parse(&v["watching"])?,
        })
    }

    fn text(&self) -> String {
        format!(
            "{} ({:+.1} MB over its {:.1} MB floor), {} watch(es), {}/{} Jobs seen in {:.0} s",
            self.watching.text(),
            self.growth_mb(),
            self.floor.rss_mb(),
            self.watches,
            self.synced,
            self.jobs,
            self.sync_seconds
        )
    }
}

/// Kills the worker if the measurement ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scale(worker_binary: &Path) -> anyhow::Result<Scale> {
    eprintln!("memory: {HELD} held Jobs through the worker binary");
    let scratch = Scratch::create("bench-mem", 300).await?;
    let result = scale_in(&scratch, worker_binary).await;
    // Deleting the namespace removes the held Jobs and pods; the held scans are never released.
    scratch.remove(Duration::from_secs(60)).await;
    result
}

async fn scale_in(scratch: &Scratch, worker_binary: &Path) -> anyhow::Result<Scale> {
    let sim = Simulator::start(scratch.admin.clone(), &scratch.ns);
    let addr = free_port()?;
    let log_path = report::target_dir().join("bench-worker-scale.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = ChildGuard(
        Command::new(worker_binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NATS_URL", stack::nats_url())
            .env("NATS_PREFIX", scratch.topology.args().nats_prefix.clone())
            .env("WORK_ACK_WAIT_SECS", "300")
            .env("WORK_MAX_DELIVER", "3")
            .env("KUBECONFIG", stack::kubeconfig())
            .env("WORKER_NAMESPACE", &scratch.ns)
            .env("TOKEN_KEYS", TOKEN_KEY)
            // The stand-in spends no GitHub quota: a budget the bench cannot spend.
            .env("GITHUB_TOKEN_CALLS_PER_WINDOW", "1000000000")
            // A replayed rate-limit failure is the recording's, not the stand-in's quota.
            .env("TOKEN_COOLDOWN_SECS", "1")
            .env("HTTP_ADDR", addr.to_string())
            .env("WORKER_MAX_IN_FLIGHT", HELD.to_string())
            .env("WORKER_POLL_MS", "200")
            .env("LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the worker binary")?,
    );
    let pid = child.0.id().to_string();
    let exited = |child: &mut ChildGuard| -> anyhow::Result<()> {
        match child.0.try_wait()? {
            Some(status) => bail!("the worker exited ({status}); see {}", log_path.display()),
            None => Ok(()),
        }
    };

    // Ready: its watch synced and `/metrics` answering.
    let up = Instant::now();
    while scrape(addr)
        .await
        .ok()
        .and_then(|t| metric(&t, "worker_in_flight"))
        .is_none()
    {
        exited(&mut child)?;
        ensure!(
            up.elapsed() < Duration::from_secs(60),
            "the worker did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let worker_idle = proc_stats(&pid)?;
    eprintln!("  worker, idle: {}", worker_idle.text());

    let repos: Vec<String> = (0..HELD)
        .map(|i| format!("github.com/sim-hold/b{i}"))
        .collect();
    let started = Instant::now();
    scratch.enqueue(&repos).await?;
    let jobs: Api<Job> = Api::namespaced(scratch.admin.clone(), &scratch.ns);
    let mut next_progress = started;
    // Each Job's name and uid: the per-Job watches and the GETs go by name, the shared watch
    // (as the worker's) by uid.
    let mut names: Vec<String> = Vec::new();
    let (in_flight, job_count, running) = loop {
        exited(&mut child)?;
        let in_flight = scrape(addr)
            .await
            .ok()
            .and_then(|text| metric(&text, "worker_in_flight"))
            .unwrap_or(0.0);
        if let Ok(list) = jobs
            .list_metadata(&ListParams::default().labels(SELECTOR))
            .await
        {
            names = list
                .items
                .iter()
                .map(|j| format!("{} {}", j.name_any(), j.uid().unwrap_or_default()))
                .collect();
        }
        let job_count = names.len();
        let running = repos.iter().filter(|r| sim.holding(r)).count();
        let done = in_flight >= HELD as f64 && job_count >= HELD && running >= HELD;
        if done || started.elapsed() > SCALE_TIMEOUT {
            if !done {
                eprintln!("  gave up waiting after {SCALE_TIMEOUT:?}; measuring as it stands");
            }
            break (in_flight, job_count, running);
        }
        if Instant::now() >= next_progress {
            eprintln!(
                "  {:>4.0} s: worker_in_flight {in_flight}, {job_count} Jobs, {running} pods running",
                started.elapsed().as_secs_f64()
            );
            next_progress = Instant::now() + Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let reached_after = started.elapsed();
    eprintln!(
        "  {:>4.0} s: worker_in_flight {in_flight}, {job_count} Jobs, {running} pods running",
        reached_after.as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let worker = proc_stats(&pid)?;
    eprintln!("  worker, {HELD} in flight: {}", worker.text());

    let per_job = run_probe("per-job", &scratch.ns, &names).await?;
    eprintln!("  probe, a watch per Job: {}", per_job.text());
    let shared = run_probe("shared", &scratch.ns, &names).await?;
    eprintln!("  probe, one shared watch: {}", shared.text());
    let burst = run_probe("burst", &scratch.ns, &names).await?;
    eprintln!(
        "  probe, {HELD} concurrent GETs, no watch: {}",
        burst.text()
    );
    let bounded = run_probe(&format!("burst-{BOUNDED}"), &scratch.ns, &names).await?;
    eprintln!(
        "  probe, {HELD} GETs {BOUNDED} at a time, no watch: {}",
        bounded.text()
    );

    // Connections left idle by the burst of creates are closed by the API server after its
    // idle timeout (90 s); whether the worker's memory follows is worth knowing.
    while proc_stats(&pid)?.api_sockets > 10 && started.elapsed() < LATER_SAMPLE {
        exited(&mut child)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let worker_later_after = started.elapsed();
    let worker_later = proc_stats(&pid)?;
    eprintln!(
        "  worker, {:.0} s after the enqueue: {}",
        worker_later_after.as_secs_f64(),
        worker_later.text()
    );
    drop(child);
    drop(sim);
    Ok(Scale {
        reached_after,
        in_flight,
        jobs: job_count,
        running,
        worker_idle,
        worker,
        worker_later,
        worker_later_after,
        per_job,
        shared,
        burst,
        bounded,
    })
}

/// Re-executes this binary as a watch-only process, hands it the Jobs' names and uids (`NAME
/// UID` lines) and reads its report.
async fn run_probe(mode: &str, namespace: &str, names: &[String]) -> anyhow::Result<ProbeReport> {
    let exe = std::env::current_exe().context("this binary's path")?;
    let mut child = tokio::process::Command::new(exe)
        .args([PROBE, mode, namespace])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the probe")?;
    let mut stdin = child.stdin.take().context("the probe's stdin")?;
    stdin
        .write_all((names.join("\n") + "\n").as_bytes())
        .await?;
    drop(stdin);
    let output = tokio::time::timeout(PROBE_TIMEOUT + SETTLE * 2, child.wait_with_output())
        .await
        .with_context(|| format!("the {mode} probe did not finish"))??;
    ensure!(
        output.status.success(),
        "the {mode} probe failed: {}",
        output.status
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let line = line
        .lines()
        .last()
        .with_context(|| format!("the {mode} probe printed no report"))?;
    ProbeReport::parse(line).with_context(|| format!("the {mode} probe's report: {line}"))
}

/// The probe process: watches the Jobs named on stdin the `mode` way (or, `burst`, GETs each
/// once, all at once), then reports its own memory as one JSON line on stdout. The same
/// binary, client and runtime in every mode, so the differences between them are the watches.
/// The names come from the parent so that listing them leaves nothing in this heap.
async fn probe(mode: &str, namespace: &str) -> anyhow::Result<()> {
    let (names, uids): (Vec<String>, Vec<String>) = std::io::read_to_string(std::io::stdin())
        .context("reading the Jobs' names")?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, uid)| (name.to_owned(), uid.to_owned()))
        .unzip();
    let client = kube_support::admin().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    // One request, so the floor includes a connected client, as the idle worker's does.
    jobs.list_metadata(&ListParams::default().limit(1)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let floor = proc_stats("self")?;
    let synced = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let watches = match mode {
        "per-job" => {
            for name in &names {
                tokio::spawn(hold_own_watch(
                    jobs.clone(),
                    name.clone(),
                    synced.clone(),
                    stop.clone(),
                ));
            }
            names.len()
        }
        "shared" => {
            let watch = JobWatch::start(client, namespace, Metrics::default(), stop.clone());
            for uid in &uids {
                tokio::spawn(hold_subscription(
                    watch.clone(),
                    uid.clone(),
                    synced.clone(),
                    stop.clone(),
                ));
            }
            1
        }
        // `burst`: every GET at once, as the worker's creates go out; `burst-N`: N at a time.
        burst if burst.starts_with("burst") => {
            let limit = burst
                .strip_prefix("burst-")
                .map_or(Ok(names.len()), str::parse::<usize>)
                .context("burst-N takes a number")?
                .max(1);
            // Each answer is dropped as it comes, as the worker drops what a create returns.
            let ok = futures::stream::iter(names.iter().map(|name| jobs.get(name)))
                .buffer_unordered(limit)
                .filter(|r| futures::future::ready(r.is_ok()))
                .count()
                .await;
            synced.fetch_add(ok, Ordering::SeqCst);
            0
        }
        other => bail!("unknown probe mode {other}"),
    };
    let mut next_progress = started + Duration::from_secs(10);
    // A burst is over once its requests are answered; watches once each has seen its Job.
    let awaiting = if watches == 0 { 0 } else { names.len() };
    while synced.load(Ordering::SeqCst) < awaiting && started.elapsed() < PROBE_TIMEOUT {
        if Instant::now() >= next_progress {
            eprintln!(
                "  probe {mode}: {}/{} Jobs seen",
                synced.load(Ordering::SeqCst),
                names.len()
            );
            next_progress = Instant::now() + Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sync_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let report = ProbeReport {
        mode: mode.to_owned(),
        watches,
        jobs: names.len(),
        synced: synced.load(Ordering::SeqCst),
        sync_seconds,
        floor,
        watching: proc_stats("self")?,
    };
    println!("{}", report.json());
    stop.cancel();
    Ok(())
}

/// The seed design's waiter: a watch on one Job's name, keeping what a waiter keeps.
async fn hold_own_watch(
    jobs: Api<Job>,
    name: String,
    synced: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(jobs, config).default_backoff().boxed();
    let mut view: Option<JobView> = None;
    let mut counted = false;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            Some(Ok(Event::InitApply(job) | Event::Apply(job))) => view = Some(JobView::of(&job)),
            Some(Ok(Event::InitDone)) if !counted && view.is_some() => {
                counted = true;
                synced.fetch_add(1, Ordering::SeqCst);
            }
            None => return,
            _ => {}
        }
    }
}

/// This design's waiter: a subscription to the shared watch, as `KubeRunner::wait` holds.
async fn hold_subscription(
    watch: JobWatch,
    uid: String,
    synced: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut rx = watch.subscribe(&uid);
    let seen = tokio::select! {
        () = stop.cancelled() => return,
        seen = rx.wait_for(Option::is_some) => seen.is_ok(),
    };
    if !seen {
        return;
    }
    synced.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// A free local port for the worker's HTTP server.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The worker's `/metrics` text, over a plain HTTP/1.1 request (this crate has no HTTP client).
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text)).await??;
    Ok(text)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// A namespace and a NATS prefix per measurement.

struct Scratch {
    admin: Client,
    /// The worker's ServiceAccount, with deploy/'s Role.
    client: Client,
    ns: String,
    js: jetstream::Context,
    topology: Topology,
}

impl Scratch {
    async fn create(prefix: &str, ack_wait_secs: u64) -> anyhow::Result<Self> {
        let admin = kube_support::admin().await;
        let ns = stack::unique(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .context("creating the namespace")?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("scorecard-github-tokens".into()),
                ..Default::default()
            },
            string_data: Some([(TOKEN_KEY.to_owned(), "not-a-real-token".to_owned())].into()),
            ..Default::default()
        };
        Api::<Secret>::namespaced(admin.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .context("creating the token Secret")?;
        kube_support::install_scans(&ns, &ns).await;
        let token =
            kube_support::service_account_token(&admin, &ns, "scorecard-fleet-worker").await?;
        let client = kube_support::as_service_account(token).await;
        let js = jetstream::new(
            async_nats::connect(stack::nats_url())
                .await
                .context("connecting to NATS")?,
        );
        let topology = Topology::new(TopologyArgs {
            nats_prefix: stack::unique("wbench"),
            work_ack_wait_secs: ack_wait_secs,
            work_max_deliver: 3,
            ..Default::default()
        })?;
        topology.ensure(&js).await?;
        Ok(Self {
            admin,
            client,
            ns,
            js,
            topology,
        })
    }

    /// Publishes one scheduled work item per repository, all acks awaited together.
    async fn enqueue(&self, repos: &[String]) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(repos.len());
        for repo in repos {
            let item = WorkItem {
                id: uuid::Uuid::now_v7().to_string(),
                repo: repo.clone(),
                reason: WorkReason::Scheduled as i32,
                ..Default::default()
            };
            acks.push(
                self.js
                    .publish(
                        self.topology.scheduled_subject(),
                        item.encode_to_vec().into(),
                    )
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        Ok(())
    }

    /// Removes the streams and the namespace (with its Jobs and pods), waiting up to `wait`
    /// for the namespace to be gone.
    async fn remove(self, wait: Duration) {
        for stream in [
            self.topology.work_stream(),
            self.topology.results_stream(),
            self.topology.dead_stream(),
        ] {
            if let Err(e) = self.js.delete_stream(&stream).await {
                eprintln!("  deleting stream {stream}: {e}");
            }
        }
        let namespaces = Api::<Namespace>::all(self.admin.clone());
        if let Err(e) = namespaces
            .delete(&self.ns, &DeleteParams::background())
            .await
        {
            eprintln!("  deleting namespace {}: {e}", self.ns);
            return;
        }
        let asked = Instant::now();
        loop {
            if let Ok(None) = namespaces.get_opt(&self.ns).await {
                eprintln!(
                    "  namespace {} gone in {:.0} s",
                    self.ns,
                    asked.elapsed().as_secs_f64()
                );
                break;
            }
            if asked.elapsed() > wait {
                eprintln!("  namespace {} still terminating; moving on", self.ns);
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The Simulator's log files for the namespace's pods.
        let _ = std::fs::remove_dir_all(stack::stack_dir().join("sim-logs").join(&self.ns));
    }
}

fn job_settings(ns: &str) -> JobSettings {
    kube_support::scan_job_settings(ns, 600)
}

/// Builds the worker binary (release, as this bench) next to this binary's profile directory.
fn build_worker() -> anyhow::Result<PathBuf> {
    eprintln!("building the worker binary (cargo build --release -p worker)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "worker",
            "--bin",
            "worker",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building the worker binary failed");
    Ok(stack::workspace_binary("worker"))
}

// ---------------------------------------------------------------------------------------------
// The table.

fn requests_row(shared: &Throughput, per_job: &Throughput) -> Row {
    Row {
        what: format!("Kubernetes API requests per Job ({JOBS} Jobs, {IN_FLIGHT} in flight)"),
        unit: "req/Job",
        value: shared.per_job(),
        baseline: per_job.per_job(),
        baseline_how: WATCH_PER_JOB.into(),
        better: Better::Lower,
        target: Some(REQUESTS_TARGET),
        notes: format!(
            "shared: {} per Job, plus {} watch connect(s) per process (and its initial list, \
             which the worker does not count) = {:.3} per Job all in; watch per Job: {}",
            shared.verbs_text(),
            shared.per_process,
            (shared.per_job() * JOBS as f64 + shared.per_process as f64 + 1.0) / JOBS as f64,
            per_job.verbs_text()
        ),
    }
}

fn watches_row(shared: &Throughput, per_job: &Throughput) -> Row {
    Row {
        what: "Job watches open at once, peak (same runs)".into(),
        unit: "watches",
        value: shared.peak_watches as f64,
        baseline: per_job.peak_watches as f64,
        baseline_how: WATCH_PER_JOB.into(),
        better: Better::Lower,
        target: Some(1.0),
        notes: "each per-Job watch is its own HTTP/1.1 connection to the API server \
                (kube-rs has no HTTP/2), a list and a watch request"
            .into(),
    }
}

fn throughput_row(shared: &Throughput, per_job: &Throughput) -> Row {
    let run = |t: &Throughput| {
        format!(
            "{} published, {} failed, {} retried in {:.1} s",
            t.published,
            t.failed,
            t.retried,
            t.elapsed.as_secs_f64()
        )
    };
    Row {
        what: "Sustained Jobs/s, one worker (first enqueue to last result)".into(),
        unit: "Jobs/s",
        value: shared.jobs_per_sec(),
        baseline: per_job.jobs_per_sec(),
        baseline_how: WATCH_PER_JOB.into(),
        better: Better::Higher,
        target: None,
        notes: format!("shared: {}; watch per Job: {}", run(shared), run(per_job)),
    }
}

fn rss_row(scale: &Scale) -> Row {
    Row {
        what: format!("Worker RSS, {HELD} Jobs in flight (worker binary vs per-Job-watch process)"),
        unit: "MB",
        value: scale.worker.rss_mb(),
        baseline: scale.per_job.watching.rss_mb(),
        baseline_how: WATCH_PER_JOB.into(),
        better: Better::Lower,
        target: Some(RSS_TARGET_MB),
        notes: format!(
            "worker binary, 1 watch open, worker_in_flight {}, {} Jobs, {} pods running \
             (after {:.0} s): {}; idle before any work: {}; {:.0} s after the enqueue: {}. \
             Baseline, a process with only a kube client and a watch per Job: {}. The probe \
             process after {HELD} concurrent GETs and no watch: {}; the same GETs {BOUNDED} at \
             a time: {}",
            scale.in_flight,
            scale.jobs,
            scale.running,
            scale.reached_after.as_secs_f64(),
            scale.worker.text(),
            scale.worker_idle.text(),
            scale.worker_later_after.as_secs_f64(),
            scale.worker_later.text(),
            scale.per_job.text(),
            scale.burst.text(),
            scale.bounded.text()
        ),
    }
}

fn probe_row(scale: &Scale) -> Row {
    Row {
        what: format!(
            "RSS added by watching {HELD} running Jobs, watch-only process (like with like)"
        ),
        unit: "MB",
        value: scale.shared.growth_mb(),
        baseline: scale.per_job.growth_mb(),
        baseline_how: WATCH_PER_JOB.into(),
        better: Better::Lower,
        target: None,
        notes: format!(
            "the same binary, kube client and runtime, a waiter per Job in both; one shared \
             watch (its start lists the {HELD} Jobs in full): {}; a watch per Job: {}",
            scale.shared.text(),
            scale.per_job.text()
        ),
    }
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measurement | this design (one shared watch) | seed design (a watch per Job), same run | gain | target | met |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in rows {
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "—",
        };
        let target = row.target.map_or("—".to_owned(), |t| {
            let op = if row.better == Better::Lower {
                "≤"
            } else {
                "≥"
            };
            format!("{op} {} {}", number(t), row.unit)
        });
        out.push_str(&format!(
            "| {} | {} {} | {} {} | {:.1}× | {target} | {met} |\n",
            row.what,
            number(row.value),
            row.unit,
            number(row.baseline),
            row.unit,
            row.gain(),
        ));
    }
    out
}

/// What the numbers were measured on.
/// How the baseline of every row was measured.
const WATCH_PER_JOB: &str = "one watch per Job (field selector on its name) while it runs";

fn machine() -> Vec<(String, String)> {
    let mut facts = report::host();
    facts.extend([
        (
            "cluster".into(),
            "dev/stack: kube-apiserver + job controller v1.37.2, one KWOK node".into(),
        ),
        ("nats".into(), stack::nats_url()),
    ]);
    facts
}
