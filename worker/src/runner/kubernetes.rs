//! The Kubernetes runner. Per work item it makes four API requests (create, pod list, log get,
//! delete) and waits through the process's one shared Job watch.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fleet_proto::v1::WorkItem;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};

use super::{RunResult, Runner};
use crate::job::{self, CONTAINER, JobSettings};
use crate::logs::Finished;
use crate::metrics::Metrics;
use crate::tokens::TokenPool;
use crate::watch::{JobView, JobWatch};

pub struct KubeRunner {
    pub jobs: Api<Job>,
    pub pods: Api<Pod>,
    pub settings: JobSettings,
    pub tokens: Arc<TokenPool>,
    pub watch: JobWatch,
    /// A pod not Ready this long after its Job was created is stuck (image pull,
    /// scheduling): an INFRA failure, with the reason Kubernetes gives.
    pub pending_timeout: Duration,
    /// Most log bytes read per scan; scorecard's JSON is ~10-50 KB.
    pub log_limit_bytes: i64,
    pub metrics: Metrics,
    /// Bounds this process's concurrent API requests (the shared watch aside).
    api_permits: tokio::sync::Semaphore,
}

/// Concurrent API requests per worker. kube-rs speaks HTTP/1.1 and opens a connection per
/// concurrent request: a burst of 1,000 Job creations meant 1,000 connections and ~40 MB of
/// buffers that stayed (measured); 32 keeps that burst cheap and spares the API server.
const API_CONCURRENCY: usize = 32;

/// Log lines read from the end of a scan's log: the JSON is the last stdout line, followed by
/// at most a few stderr lines.
const LOG_TAIL_LINES: i64 = 500;

impl KubeRunner {
    pub fn new(
        client: Client,
        settings: JobSettings,
        tokens: Arc<TokenPool>,
        watch: JobWatch,
        pending_timeout: Duration,
        log_limit_bytes: i64,
        metrics: Metrics,
    ) -> Self {
        Self {
            jobs: Api::namespaced(client.clone(), &settings.namespace),
            pods: Api::namespaced(client, &settings.namespace),
            settings,
            tokens,
            watch,
            pending_timeout,
            log_limit_bytes,
            metrics,
            api_permits: tokio::sync::Semaphore::new(API_CONCURRENCY),
        }
    }

    /// Runs one API request under the concurrency bound, counting it by verb.
    async fn api<T>(&self, verb: &str, request: impl std::future::Future<Output = T>) -> T {
        let _permit = self.api_permits.acquire().await.expect("never closed");
        self.metrics.kube(verb);
        request.await
    }

    /// Creates the Job, or finds the one a previous delivery created. Returns whether adopted.
    async fn create_or_adopt(&self, item: &WorkItem, name: &str) -> Result<bool, String> {
        let job = job::build(item, &self.settings, &self.tokens.pick());
        match self
            .api("create", self.jobs.create(&PostParams::default(), &job))
            .await
        {
            Ok(_) => {
                self.metrics.started.inc();
                Ok(false)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Whose is it? The watch usually knows; ask the API server only if not yet.
                let owner = match self.watch.get(name) {
                    Some(view) => view.work_id,
                    None => self
                        .api("get", self.jobs.get(name))
                        .await
                        .map_err(|e| format!("reading existing Job {name}: {e}"))?
                        .annotations()
                        .get(job::WORK_ID_ANNOTATION)
                        .cloned(),
                };
                if owner.as_deref() != Some(item.id.as_str()) {
                    return Err(format!(
                        "Job {name} exists but belongs to work item {owner:?}, not {}",
                        item.id
                    ));
                }
                self.metrics.adopted.inc();
                tracing::info!(job = name, "adopted the Job a previous delivery started");
                Ok(true)
            }
            Err(e) => Err(format!("creating Job {name}: {e}")),
        }
    }

    /// Waits for the Job to end; an error is an INFRA failure message.
    async fn wait(&self, name: &str) -> Result<JobView, String> {
        let mut rx = self.watch.subscribe(name);
        let mut seen = false;
        // Checking a pod costs a request, so only Jobs without a Ready pod are checked, and
        // each at most once per pending timeout.
        let mut next_pending_check = tokio::time::Instant::now() + self.pending_timeout;
        loop {
            let view = rx.borrow_and_update().clone();
            match view {
                Some(v) if v.finished.is_some() => return Ok(v),
                Some(v) if v.deleting => {
                    return Err(format!("Job {name} was deleted while running"));
                }
                Some(v) => {
                    seen = true;
                    if v.ready == 0 && tokio::time::Instant::now() >= next_pending_check {
                        if let Some(reason) = self.stuck_reason(name).await {
                            return Err(reason);
                        }
                        next_pending_check = tokio::time::Instant::now() + self.pending_timeout;
                    }
                }
                None if seen => return Err(format!("Job {name} disappeared while running")),
                None => {}
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err("the Job watch stopped".into());
                    }
                }
                () = tokio::time::sleep_until(next_pending_check) => {}
            }
        }
    }

    /// Why the Job's pod is not running, if it is stuck in Pending.
    async fn stuck_reason(&self, name: &str) -> Option<String> {
        let pod = self.pod_of(name).await.ok().flatten()?;
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Pending") {
            return None;
        }
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .map(|w| {
                format!(
                    "{}: {}",
                    w.reason.as_deref().unwrap_or("Waiting"),
                    w.message.as_deref().unwrap_or("")
                )
            })
            .next();
        let unschedulable = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("Unschedulable"),
                    c.message.as_deref().unwrap_or("")
                )
            });
        let why = waiting
            .or(unschedulable)
            .unwrap_or_else(|| "Pending".into());
        Some(format!(
            "the scan's pod {} is stuck ({why}) after {}s",
            pod.name_any(),
            self.pending_timeout.as_secs()
        ))
    }

    async fn pod_of(&self, name: &str) -> Result<Option<Pod>, kube::Error> {
        let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
        let pods = self.api("list", self.pods.list(&params)).await?;
        // backoffLimit 0: one pod, or none if it was already removed (deadline, TTL).
        Ok(pods
            .items
            .into_iter()
            .max_by_key(|p| p.creation_timestamp()))
    }

    async fn finished(
        &self,
        item: &WorkItem,
        name: &str,
        view: &JobView,
    ) -> Result<Finished, String> {
        let finish = view.finished.clone().expect("called on finished Jobs");
        let pod = self
            .pod_of(name)
            .await
            .map_err(|e| format!("listing the pod of Job {name}: {e}"))?;
        let terminated = pod
            .as_ref()
            .and_then(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .iter()
                    .find(|c| c.name == CONTAINER)
                    .cloned()
            })
            .and_then(|c| c.state?.terminated);
        let mut log = String::new();
        if let Some(pod) = &pod {
            let params = LogParams {
                container: Some(CONTAINER.to_owned()),
                tail_lines: Some(LOG_TAIL_LINES),
                limit_bytes: Some(self.log_limit_bytes),
                ..Default::default()
            };
            let pod_name = pod.name_any();
            match self.api("log", self.pods.logs(&pod_name, &params)).await {
                Ok(text) => log = text,
                // Without a log the rules still classify the run (NO_OUTPUT, TIMEOUT, ...).
                Err(e) => tracing::warn!(job = name, error = %e, "reading the scan's log failed"),
            }
        }
        tracing::debug!(work_id = %item.id, job = name, succeeded = finish.succeeded, reason = %finish.reason, "Job finished");
        Ok(Finished {
            job_name: name.to_owned(),
            exit_code: terminated.as_ref().map(|t| t.exit_code),
            reason: terminated.as_ref().and_then(|t| t.reason.clone()),
            deadline_exceeded: finish.reason == "DeadlineExceeded",
            log,
            started_at: view.created,
            finished_at: terminated
                .and_then(|t| t.finished_at.map(|f| crate::watch::utc(&f.0)))
                .or_else(|| Some(Utc::now())),
        })
    }
}

#[async_trait::async_trait]
impl Runner for KubeRunner {
    async fn run(&self, item: &WorkItem) -> RunResult {
        let name = job::job_name(&item.id);
        let infra = |message: String| RunResult::Infra {
            message,
            job_name: name.clone(),
        };
        let adopted = match self.create_or_adopt(item, &name).await {
            Ok(adopted) => adopted,
            Err(message) => return infra(message),
        };
        let view = match self.wait(&name).await {
            Ok(view) => view,
            Err(message) => return infra(message),
        };
        match self.finished(item, &name, &view).await {
            Ok(run) => RunResult::Finished { run, adopted },
            Err(message) => infra(message),
        }
    }

    async fn cleanup(&self, item: &WorkItem) {
        let name = job::job_name(&item.id);
        match self
            .api(
                "delete",
                self.jobs.delete(&name, &DeleteParams::background()),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // The Job's TTL removes it later; the outcome is already durable.
            Err(e) => tracing::warn!(job = %name, error = %e, "deleting the Job failed"),
        }
        self.watch.forget(&name);
    }

    fn rate_limited(&self, item: &WorkItem) {
        // The key the Job used is on the Job (it may have been picked by another worker).
        if let Some(key) = self
            .watch
            .get(&job::job_name(&item.id))
            .and_then(|v| v.token_key)
        {
            self.tokens.cool(&key);
        }
    }
}
