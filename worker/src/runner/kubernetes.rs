//! The Kubernetes runner. Per work item it makes four API requests (create, pod list, log get,
//! delete) and waits through the process's one shared Job watch, by the Job's uid.
//!
//! - A Job that already exists (`AlreadyExists`) was started by an earlier delivery: once its
//!   work-id annotation says it is this item's, it is adopted and waited on, not run again.
//! - The pod is selected by `batch.kubernetes.io/controller-uid`, so a retry's new Job (same
//!   name) is never answered with the previous attempt's pod or log. The log is read as a
//!   stream and its last `LOG_LIMIT_BYTES` kept, whatever its length in lines.
//! - Every wait is bounded. A pod not Ready within the pending timeout is checked once for the
//!   reason (ImagePullBackOff, Unschedulable, …); a Job with no pod at all (a quota or an
//!   admission policy refused it) ends with the Job controller's `FailedCreate` message; both
//!   are INFRA failures, not a TIMEOUT an hour later. A Job the watch never reports ended is
//!   settled by a direct GET once it is past its deadline plus the pending timeout.

use std::time::Duration;

use chrono::Utc;
use fleet_proto::v1::WorkItem;
use futures::AsyncBufReadExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};

use super::{JobError, RunResult, Runner};
use crate::job::{self, CONTAINER, JobSettings};
use crate::logs::{LogEnd, LogKept, RunLog};
use crate::metrics::Metrics;
use crate::watch::{JobView, JobWatch};

pub struct KubeRunner {
    pub jobs: Api<Job>,
    pub pods: Api<Pod>,
    /// The Job controller's events: why a Job's pod could not be created.
    pub events: Api<Event>,
    pub settings: JobSettings,
    pub watch: JobWatch,
    /// A pod not Ready this long after its Job was created is stuck (image pull,
    /// scheduling): an INFRA failure, with the reason Kubernetes gives.
    pub pending_timeout: Duration,
    /// Log bytes kept per scan, from its end; scorecard's JSON is ~10-50 KB.
    pub log_limit_bytes: usize,
    pub metrics: Metrics,
    /// Bounds this process's concurrent API requests (the shared watch aside).
    api_permits: tokio::sync::Semaphore,
}

/// Concurrent API requests per worker. kube-rs speaks HTTP/1.1 and opens a connection per
/// concurrent request: a burst of 1,000 Job creations meant 1,000 connections and ~40 MB of
/// buffers that stayed (measured); 32 keeps that burst cheap and spares the API server.
const API_CONCURRENCY: usize = 32;

/// The longest a finished scan's log may take to read: its end holds the result, so a log
/// that trickles in holds one of the [`API_CONCURRENCY`] requests for no more than this.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(60);

impl KubeRunner {
    pub fn new(
        client: Client,
        settings: JobSettings,
        watch: JobWatch,
        pending_timeout: Duration,
        log_limit_bytes: usize,
        metrics: Metrics,
    ) -> Self {
        Self {
            jobs: Api::namespaced(client.clone(), &settings.namespace),
            pods: Api::namespaced(client.clone(), &settings.namespace),
            events: Api::namespaced(client, &settings.namespace),
            settings,
            watch,
            pending_timeout,
            log_limit_bytes,
            metrics,
            api_permits: tokio::sync::Semaphore::new(API_CONCURRENCY),
        }
    }

    /// The last `log_limit_bytes` of a finished scan's log, read as a stream ([`LogEnd`]), in
    /// at most [`LOG_READ_TIMEOUT`].
    async fn log_end(&self, pod: &str) -> Result<LogKept, LogError> {
        let params = LogParams {
            container: Some(CONTAINER.to_owned()),
            ..Default::default()
        };
        let read = async {
            let mut stream = std::pin::pin!(self.pods.log_stream(pod, &params).await?);
            let mut end = LogEnd::new(self.log_limit_bytes);
            loop {
                let chunk = stream.fill_buf().await?;
                if chunk.is_empty() {
                    return Ok(end.finish());
                }
                end.push(chunk);
                let n = chunk.len();
                stream.consume_unpin(n);
            }
        };
        tokio::time::timeout(LOG_READ_TIMEOUT, read)
            .await
            .map_err(|_| LogError::TimedOut)?
    }

    /// Runs one API request under the concurrency bound, counting it by verb.
    async fn api<T>(&self, verb: &str, request: impl std::future::Future<Output = T>) -> T {
        let _permit = self.api_permits.acquire().await.expect("never closed");
        self.metrics.kube(verb);
        request.await
    }

    /// Creates the Job with `credential`, or finds the one a previous delivery created;
    /// without a credential, only finds it.
    async fn create_or_adopt(
        &self,
        item: &WorkItem,
        name: &str,
        credential: Option<&str>,
    ) -> Result<Started, JobError> {
        let Some(credential) = credential else {
            return match self.existing(item, name).await? {
                Some(existing) => Ok(self.adopted(name, &existing)),
                None => Err(JobError::NothingToAdopt(name.to_owned())),
            };
        };
        let job = job::build(item, &self.settings, credential);
        match self
            .api("create", self.jobs.create(&PostParams::default(), &job))
            .await
        {
            Ok(created) => {
                self.metrics.started.inc();
                Ok(Started::of(&created, false))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Its uid is what the watch and the pod selector need; a GET also says whose
                // it is, whatever the watch has seen so far.
                match self.existing(item, name).await? {
                    Some(existing) => Ok(self.adopted(name, &existing)),
                    None => Err(JobError::DeletedWhileCreated(name.to_owned())),
                }
            }
            Err(source) => Err(JobError::Create {
                job: name.to_owned(),
                source,
            }),
        }
    }

    /// The Job `name` a previous delivery of `item` started, if there is one; an error if
    /// the name is another item's or the Job is on its way out.
    async fn existing(&self, item: &WorkItem, name: &str) -> Result<Option<Job>, JobError> {
        let Some(existing) = self
            .api("get", self.jobs.get_opt(name))
            .await
            .map_err(|source| JobError::ReadExisting {
                job: name.to_owned(),
                source,
            })?
        else {
            return Ok(None);
        };
        let owner = existing.annotations().get(job::WORK_ID_ANNOTATION).cloned();
        if owner.as_deref() != Some(item.id.as_str()) {
            return Err(JobError::NotOurs {
                job: name.to_owned(),
                owner,
                item: item.id.clone(),
            });
        }
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(JobError::StillDeleting(name.to_owned()));
        }
        Ok(Some(existing))
    }

    fn adopted(&self, name: &str, existing: &Job) -> Started {
        self.metrics.adopted.inc();
        tracing::info!(job = name, "adopted the Job a previous delivery started");
        Started::of(existing, true)
    }

    /// Waits for the Job to end; an error is an INFRA failure message. Bounded: if the watch
    /// never reports an end (watch broken, Job deleted unseen), a direct GET decides once the
    /// Job is past its deadline plus the pending timeout.
    async fn wait(&self, started: &Started, name: &str) -> Result<JobView, JobError> {
        let mut rx = self.watch.subscribe(&started.uid);
        let mut seen = false;
        let bound = self.bound(started);
        // Checking a pod costs a request, so only Jobs without a Ready pod are checked, and
        // each at most once per pending timeout.
        let mut next_pending_check = tokio::time::Instant::now() + self.pending_timeout;
        loop {
            let view = rx.borrow_and_update().clone();
            match view {
                Some(v) if v.finished.is_some() => return Ok(v),
                Some(v) if v.deleting => {
                    return Err(JobError::DeletedWhileRunning(name.to_owned()));
                }
                Some(v) => {
                    seen = true;
                    if v.ready == 0 && tokio::time::Instant::now() >= next_pending_check {
                        if let Some(reason) = self.stuck_reason(&started.uid, name).await {
                            return Err(JobError::Stuck(reason));
                        }
                        next_pending_check = tokio::time::Instant::now() + self.pending_timeout;
                    }
                }
                None if seen => return Err(JobError::Disappeared(name.to_owned())),
                None => {}
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(JobError::WatchStopped);
                    }
                }
                () = tokio::time::sleep_until(next_pending_check) => {}
                () = tokio::time::sleep_until(bound) => return self.ask(started, name).await,
            }
        }
    }

    /// When a Job must have ended: its deadline, plus the pending timeout for the controller.
    fn bound(&self, started: &Started) -> tokio::time::Instant {
        let deadline =
            Duration::from_secs(u64::try_from(self.settings.active_deadline_secs).unwrap_or(0));
        let age = (Utc::now() - started.created).to_std().unwrap_or_default();
        let left = (deadline + self.pending_timeout).saturating_sub(age);
        tokio::time::Instant::now() + left
    }

    /// The API server's word on a Job the watch has not reported ended in time.
    async fn ask(&self, started: &Started, name: &str) -> Result<JobView, JobError> {
        tracing::warn!(
            job = name,
            "the Job watch never reported this Job's end; asking the API server"
        );
        match self.api("get", self.jobs.get_opt(name)).await {
            Ok(Some(job)) if job.uid().as_deref() == Some(started.uid.as_str()) => {
                let view = JobView::of(&job);
                if view.finished.is_some() {
                    Ok(view)
                } else {
                    Err(JobError::Overdue {
                        job: name.to_owned(),
                        seconds: self.pending_timeout.as_secs(),
                    })
                }
            }
            Ok(_) => Err(JobError::Gone(name.to_owned())),
            Err(source) => Err(JobError::ReadAfterDeadline {
                job: name.to_owned(),
                source,
            }),
        }
    }

    /// Why the Job's pod is not running: stuck in Pending, or never created (a quota or an
    /// admission policy refused it; the Job controller says why in a FailedCreate event).
    async fn stuck_reason(&self, uid: &str, name: &str) -> Option<String> {
        let pod = match self.pod_of(uid).await {
            Ok(Some(pod)) => pod,
            Ok(None) => return Some(self.not_created_reason(uid, name).await),
            Err(_) => return None,
        };
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

    async fn not_created_reason(&self, uid: &str, name: &str) -> String {
        let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
        let why = match self.api("list", self.events.list(&params)).await {
            Ok(events) => events
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
                .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
                .and_then(|e| e.message),
            Err(e) => Some(format!("(its events could not be read: {e})")),
        };
        format!(
            "no pod was created for Job {name} in {}s: {}",
            self.pending_timeout.as_secs(),
            why.unwrap_or_else(|| "the Job controller gave no reason".into())
        )
    }

    /// The Job's pod, selected by the Job's uid: a previous attempt's pod (same Job name) is
    /// never read instead.
    async fn pod_of(&self, uid: &str) -> Result<Option<Pod>, kube::Error> {
        let params =
            ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}"));
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
    ) -> Result<RunLog, JobError> {
        let finish = view.finished.clone().expect("called on finished Jobs");
        let pod = self
            .pod_of(&view.uid)
            .await
            .map_err(|source| JobError::ListPod {
                job: name.to_owned(),
                source,
            })?;
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
        let mut log = LogKept::default();
        if let Some(pod) = &pod {
            match self.api("log", self.log_end(&pod.name_any())).await {
                Ok(kept) => log = kept,
                // Without a log the rules still classify the run (NO_OUTPUT, TIMEOUT, ...).
                Err(e) => tracing::warn!(job = name, error = %e, "reading the scan's log failed"),
            }
        }
        tracing::debug!(work_id = %item.id, job = name, succeeded = finish.succeeded, reason = %finish.reason, "Job finished");
        Ok(RunLog {
            job_name: name.to_owned(),
            token_key: view.token_key.clone(),
            exit_code: terminated.as_ref().map(|t| t.exit_code),
            reason: terminated.as_ref().and_then(|t| t.reason.clone()),
            deadline_exceeded: finish.reason == "DeadlineExceeded",
            log: log.text,
            log_cut: log.cut,
            started_at: view.created,
            finished_at: terminated
                .and_then(|t| t.finished_at.map(|f| crate::watch::utc(&f.0)))
                .or_else(|| Some(Utc::now())),
        })
    }
}

/// Why a scan's log could not be read.
#[derive(Debug, thiserror::Error)]
enum LogError {
    #[error(transparent)]
    Request(#[from] kube::Error),
    #[error("reading it: {0}")]
    Read(#[from] std::io::Error),
    #[error("not read whole within {LOG_READ_TIMEOUT:?}")]
    TimedOut,
}

/// A Job this delivery created or adopted.
struct Started {
    uid: String,
    created: chrono::DateTime<Utc>,
    adopted: bool,
    /// Adopted after it had already ended: a previous delivery's run.
    ended: bool,
}

impl Started {
    fn of(job: &Job, adopted: bool) -> Self {
        Self {
            uid: job.uid().unwrap_or_default(),
            created: job
                .creation_timestamp()
                .map_or_else(Utc::now, |t| crate::watch::utc(&t.0)),
            adopted,
            ended: adopted && JobView::of(job).finished.is_some(),
        }
    }
}

/// How long a discard waits for a deleted Job to be gone before the fresh one is created.
const DISCARD_WAIT: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl Runner for KubeRunner {
    async fn run(&self, item: &WorkItem, credential: Option<&str>) -> RunResult {
        let name = job::job_name(&item.id);
        let infra = |message: String, created: bool| RunResult::Infra {
            message,
            job_name: name.clone(),
            created,
        };
        let started = match self.create_or_adopt(item, &name, credential).await {
            Ok(started) => started,
            Err(e) => return infra(e.to_string(), false),
        };
        let created = !started.adopted;
        let view = match self.wait(&started, &name).await {
            Ok(view) => view,
            Err(e) => return infra(e.to_string(), created),
        };
        match self.finished(item, &name, &view).await {
            Ok(run) => RunResult::Ended {
                run,
                adopted: started.adopted,
                ended_before: started.ended,
            },
            Err(e) => infra(e.to_string(), created),
        }
    }

    async fn has_run(&self, item: &WorkItem) -> bool {
        let name = job::job_name(&item.id);
        matches!(self.existing(item, &name).await, Ok(Some(_)))
    }

    async fn cleanup(&self, item: &WorkItem) {
        if let Err(e) = self.delete(item).await {
            // The Job's TTL removes it later; the outcome is already durable.
            tracing::warn!(error = %e, "deleting the Job failed");
        }
    }

    async fn discard(&self, item: &WorkItem) -> Result<(), JobError> {
        self.delete(item).await?;
        let name = job::job_name(&item.id);
        let gone = async {
            loop {
                match self.api("get", self.jobs.get_opt(&name)).await {
                    Ok(None) => return Ok(()),
                    Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(250)).await,
                    Err(source) => {
                        return Err(JobError::Read {
                            job: name.clone(),
                            source,
                        });
                    }
                }
            }
        };
        tokio::time::timeout(DISCARD_WAIT, gone)
            .await
            .map_err(|_| JobError::StillThere {
                job: name.clone(),
                seconds: DISCARD_WAIT.as_secs(),
            })?
    }

    async fn ended(&self, item: &WorkItem) -> Option<RunResult> {
        let name = job::job_name(&item.id);
        let job = self.api("get", self.jobs.get_opt(&name)).await.ok()??;
        if job.annotations().get(job::WORK_ID_ANNOTATION) != Some(&item.id) {
            return None;
        }
        let view = JobView::of(&job);
        view.finished.as_ref()?;
        let run = self.finished(item, &name, &view).await.ok()?;
        Some(RunResult::Ended {
            run,
            adopted: true,
            ended_before: true,
        })
    }
}

impl KubeRunner {
    async fn delete(&self, item: &WorkItem) -> Result<(), JobError> {
        let name = job::job_name(&item.id);
        match self
            .api(
                "delete",
                self.jobs.delete(&name, &DeleteParams::background()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(JobError::Delete { job: name, source }),
        }
    }
}
