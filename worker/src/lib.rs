//! The worker: each work item becomes one scorecard run (a Kubernetes Job by default) whose
//! result or failure is published back to JetStream. It never connects to PostgreSQL: it needs
//! no database credentials, and the schema check is the producer's and the sink's.
//!
//! - [`config`]: the command line.
//! - [`intake`]: a work message to a validated work item (protobuf, JSON or a bare name), or poison.
//! - [`job`]: the Job for a work item, as a pure function.
//! - [`policy`]: the scans' admission policy parameters, checked against the Job settings.
//! - [`budget`]: the fleet-wide GitHub budget per credential (tokens and App installations),
//!   shared through JetStream; a scan starts only when its credential has room.
//! - [`tokens`]: the per-replica round-robin with a cooldown after a rate limit (the budget's
//!   baseline, `CREDENTIAL_BUDGET=off`).
//! - [`watch`]: the one shared Job watch per process.
//! - [`runner`]: the Kubernetes and process runners behind one trait.
//! - [`logs`]: a finished run's log and exit status into a result or a classified failure.
//! - [`scans`]: the fleet-wide scan register: which work item last scanned each repository.
//! - [`outcome`]: retry, give up or publish, and the table of what each ending does.
//! - [`consume`]: the loop: bounded pulls, heartbeats, publish-then-ack, drain.
//! - [`exhausted`]: work that ran out of deliveries, dead-lettered from JetStream's advisory.
//! - [`metrics`]: what `/metrics` exports.
//!
//! A work item's path, one type per step: the Job's end ([`watch::JobEnd`]) and what the run
//! left ([`logs::RunLog`]) make a [`runner::RunResult`] (or an INFRA failure); its log reads as
//! a [`logs::Verdict`] (a result or a classified failure); [`outcome::Outcome`] decides publish,
//! retry or give up; and the delivery's [`outcome::Ending`] (every way one ends, hand-backs and
//! poison too), which `handle` returns, says in one table what is published, recorded, acked
//! and removed.

pub mod budget;
pub mod config;
pub mod consume;
pub mod exhausted;
pub mod intake;
pub mod job;
pub mod logs;
pub mod metrics;
pub mod outcome;
pub mod policy;
pub mod runner;
pub mod scans;
pub mod tokens;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleet_runtime::http;
use fleet_runtime::nats;
use fleet_runtime::topology::Topology;
use tokio_util::sync::CancellationToken;

use crate::budget::{Budget, Pool};
use crate::config::{BudgetKind, Cli, RunnerKind};
use crate::consume::{Settings, Worker};
use crate::metrics::Metrics;
use crate::runner::Runner;
use crate::runner::kubernetes::KubeRunner;
use crate::runner::process::ProcessRunner;
use crate::tokens::TokenPool;
use crate::watch::JobWatch;

/// Who hands out GitHub credentials: the fleet-wide budget, the per-replica round-robin, or
/// nobody (the process runner uses its own token).
async fn credential_pool(
    cli: &Cli,
    topology: &Topology,
    js: &async_nats::jetstream::Context,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<Pool> {
    Ok(match (cli.runner, cli.credential_budget) {
        (RunnerKind::Process, _) => Pool::Unmanaged,
        (RunnerKind::Kubernetes, BudgetKind::Off) => {
            Pool::RoundRobin(TokenPool::new(cli.token_keys()?, cli.cooldown()))
        }
        (RunnerKind::Kubernetes, BudgetKind::Fleet) => {
            let store = fleet_runtime::retry::while_transient(
                "the credential budget bucket",
                shutdown,
                || topology.ensure_budget_bucket(js),
                fleet_runtime::topology::TopologyError::is_transient,
            )
            .await?;
            let budget = Budget::new(
                store,
                cli.token_keys()?,
                cli.budget_settings(),
                metrics.clone(),
            );
            report_revoked(&budget).await;
            Pool::Budget(Box::new(budget))
        }
    })
}

/// Says at start-up which credentials GitHub rejected earlier. Only for the log and
/// `/metrics`: every take reads the bucket again, so a failed read only warns.
async fn report_revoked(budget: &Budget) {
    match budget.snapshot().await {
        Ok(entries) => {
            let revoked: Vec<String> = entries
                .into_iter()
                .filter(|(_, a)| a.revoked.is_some())
                .map(|(k, _)| k)
                .collect();
            if !revoked.is_empty() {
                tracing::error!(credentials = ?revoked, "GitHub rejected these credentials earlier; they stay out of the pool until replaced and their budget keys deleted");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the credential budget yet"),
    }
}

/// The Kubernetes runner, once the admission policy agrees with the Job settings and the Job
/// watch has listed; `None` if shutdown came first.
async fn kube_runner(
    cli: &Cli,
    metrics: &Metrics,
    readiness: &http::Readiness,
    stopped: &CancellationToken,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<KubeRunner>> {
    let client = kube_client(cli.kubeconfig.as_deref()).await?;
    policy::verify(client.clone(), &cli.job_settings()).await?;
    let watch = JobWatch::start(
        client.clone(),
        &cli.namespace,
        metrics.clone(),
        stopped.clone(),
    );
    metrics.kube("watch");
    watch.report_to(
        readiness.clone(),
        Duration::from_secs(cli.watch_unready_secs),
        stopped.clone(),
    );
    tokio::select! {
        () = watch.synced() => {}
        () = shutdown.cancelled() => return Ok(None),
    }
    Ok(Some(KubeRunner::new(
        client,
        cli.job_settings(),
        watch,
        Duration::from_secs(cli.pending_timeout_secs),
        cli.log_limit_bytes,
        metrics.clone(),
    )))
}

/// A client from `kubeconfig`, or from the pod's ServiceAccount in a cluster.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => {
            kube::Config::incluster().context("no --kubeconfig and not running in a cluster")?
        }
    };
    fleet_runtime::tls::install_crypto_provider();
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The loop's settings from the command line and the topology.
pub fn settings(cli: &Cli, topology: &Topology) -> Settings {
    let ack_wait = topology.args().work_ack_wait_secs;
    Settings {
        max_in_flight: cli.max_in_flight.max(1),
        manual_in_flight: cli.manual_in_flight,
        // Four progress acks per ack wait: one lost ack never lets a running item expire.
        heartbeat: Duration::from_secs((ack_wait / 4).max(1)),
        drain_deadline: Duration::from_secs(cli.drain_deadline_secs),
        max_deliver: u64::try_from(topology.args().work_max_deliver).unwrap_or(1),
        poll: Duration::from_millis(cli.poll_ms.max(10)),
        quota_window: Duration::from_secs(cli.github_window_secs.max(1)),
    }
}

/// Starts the service and runs it until `shutdown`, then drains.
///
/// `shutdown` only stops the pulling. What a running scan needs (the Job watch, the NATS
/// connection, `/metrics`) lives until the drain is over, on `stopped`.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<()> {
    let stopped = CancellationToken::new();
    let _stop_on_return = stopped.clone().drop_guard();
    let http::OpsServer {
        metrics,
        readiness,
        server,
    } = http::start(cli.http.http_addr, &stopped, Metrics::register).await?;

    let client = nats::connect(&cli.nats, "scorecard-fleet-worker", &shutdown).await?;
    nats::watch_connection(client.clone(), readiness.clone(), stopped.clone());
    let js = async_nats::jetstream::new(client);
    let topology = Topology::new(cli.nats.topology.clone())?;
    topology.ensure_until_ready(&js, &shutdown).await?;

    job::check_names(&cli.job_settings().checks).map_err(anyhow::Error::msg)?;
    let pool = credential_pool(&cli, &topology, &js, &metrics, &shutdown).await?;
    let runner: Arc<dyn Runner> = match cli.runner {
        RunnerKind::Kubernetes => {
            cli.check_job_ttl(topology.args().work_ack_wait_secs)
                .map_err(anyhow::Error::msg)?;
            let Some(runner) = kube_runner(&cli, &metrics, &readiness, &stopped, &shutdown).await?
            else {
                return Ok(());
            };
            Arc::new(runner)
        }
        RunnerKind::Process => Arc::new(ProcessRunner {
            binary: cli.scorecard_binary.clone(),
            timeout: Duration::from_secs(u64::try_from(cli.job_deadline_secs).unwrap_or(3600)),
            token: cli.github_token.clone(),
            log_limit_bytes: cli.log_limit_bytes,
            checks: cli.job_settings().checks,
        }),
    };
    let settings = settings(&cli, &topology);
    let job_deadline = Duration::from_secs(u64::try_from(cli.job_deadline_secs).unwrap_or(3600));
    let worker = Arc::new(
        Worker::open(
            js,
            topology,
            runner,
            Arc::new(pool),
            metrics,
            settings,
            job_deadline,
        )
        .await?,
    );
    readiness.set(true);
    tracing::info!(runner = ?cli.runner, max_in_flight = worker.settings.max_in_flight, "worker running");
    worker.run(shutdown.clone(), readiness.clone()).await;
    stopped.cancel();
    server.await.ok();
    Ok(())
}
