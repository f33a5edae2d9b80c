//! One shared watch per worker process over every Job of the fleet (a label selector), never
//! one per Job. Each Job's latest state sits in a `tokio::sync::watch` channel that waiters
//! subscribe to by uid: a retry's new Job has the old one's name, never its uid, so it is
//! never answered with the previous attempt's state. The kube-rs watcher re-lists after a 410
//! (expired resource version) and reconnects with backoff; Jobs that vanished while it was
//! away are reported gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_runtime::retry::JOB_WATCH;

use chrono::{DateTime, Utc};
use fleet_runtime::http::Readiness;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::job::{SELECTOR, TOKEN_KEY_ANNOTATION, WORK_ID_ANNOTATION};
use crate::metrics::Metrics;

/// The readiness dependency of the Job watch.
pub const KUBERNETES: &str = "kubernetes";

/// How a Job ended, as its `Complete` or `Failed` condition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    pub succeeded: bool,
    /// The condition's reason: `DeadlineExceeded`, `BackoffLimitExceeded`, ...
    pub reason: String,
}

/// What waiters need of a Job, and no more (a worker may see thousands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub uid: String,
    pub work_id: Option<String>,
    /// The token Secret key the scan uses, so a rate limit cools the right one.
    pub token_key: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub ready: i32,
    pub finished: Option<JobEnd>,
    pub deleting: bool,
}

impl JobView {
    pub fn of(job: &Job) -> Self {
        let status = job.status.as_ref();
        let finished = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|conditions| {
                conditions
                    .iter()
                    .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
            })
            .map(|c| JobEnd {
                succeeded: c.type_ == "Complete",
                reason: c.reason.clone().unwrap_or_default(),
            });
        Self {
            uid: job.uid().unwrap_or_default(),
            work_id: job.annotations().get(WORK_ID_ANNOTATION).cloned(),
            token_key: job.annotations().get(TOKEN_KEY_ANNOTATION).cloned(),
            created: job.creation_timestamp().map(|t| utc(&t.0)),
            ready: status.and_then(|s| s.ready).unwrap_or(0),
            finished,
            deleting: job.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Kubernetes times (jiff) as the chrono times the wire format uses.
pub fn utc(t: &k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    let nanos = u32::try_from(t.subsec_nanosecond()).unwrap_or(0);
    DateTime::from_timestamp(t.as_second(), nanos).unwrap_or_default()
}

type Slot = watch::Sender<Option<JobView>>;

#[derive(Clone)]
pub struct JobWatch {
    jobs: Arc<Mutex<HashMap<String, Slot>>>,
    synced: watch::Sender<bool>,
    health: Arc<Mutex<Health>>,
}

/// The watch's current run of errors, if any.
#[derive(Debug, Default)]
struct Health {
    /// The first error since the last event.
    since: Option<Instant>,
    last_at: Option<Instant>,
    last: String,
}

/// No error for this long after the last one: the watch has resumed. During an outage the
/// reconnects' errors come at least every [`JOB_WATCH`]'s cap plus as much jitter, so a quiet
/// recovery (a resumed watch brings no event) is told apart from a continuing outage.
const QUIET_AFTER_ERRORS: Duration = Duration::from_secs(25);
const _: () = assert!(QUIET_AFTER_ERRORS.as_secs() > 2 * JOB_WATCH.cap.as_secs());

/// The watch's reconnect pauses ([`JOB_WATCH`]); reset by the first event after a reconnect.
struct Reconnect(backon::ExponentialBackoff);

impl Reconnect {
    fn new() -> Self {
        Self(JOB_WATCH.pauses())
    }
}

impl Iterator for Reconnect {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.0.next()
    }
}

impl Backoff for Reconnect {
    fn reset(&mut self) {
        *self = Self::new();
    }
}

impl JobWatch {
    /// Starts the watch in the background until `stop` (the end of the worker's drain, not the
    /// signal that starts it: draining scans still wait on it).
    pub fn start(
        client: Client,
        namespace: &str,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Self {
        let (synced, _) = watch::channel(false);
        let this = Self {
            jobs: Arc::default(),
            synced,
            health: Arc::default(),
        };
        let api: Api<Job> = Api::namespaced(client, namespace);
        let me = this.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().labels(SELECTOR);
            let mut events = watcher::watcher(api, config)
                .backoff(Reconnect::new())
                .boxed();
            let mut listing: Option<HashSet<String>> = None;
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => break,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => {
                        metrics.watch_last_event.set(Utc::now().timestamp());
                        *me.health.lock().expect("health lock") = Health::default();
                        me.apply(event, &mut listing);
                    }
                    Some(Err(e)) => {
                        metrics.watch_restarts.inc();
                        tracing::warn!(error = %e, "Job watch interrupted; resuming");
                        let mut health = me.health.lock().expect("health lock");
                        let now = Instant::now();
                        // After a quiet recovery (no event to clear it), a new run of errors.
                        if health
                            .last_at
                            .is_some_and(|at| at.elapsed() >= QUIET_AFTER_ERRORS)
                        {
                            health.since = None;
                        }
                        health.since.get_or_insert(now);
                        health.last_at = Some(now);
                        health.last = e.to_string();
                    }
                    None => break,
                }
            }
        });
        this
    }

    fn apply(&self, event: Event<Job>, listing: &mut Option<HashSet<String>>) {
        match event {
            Event::Apply(job) => self.update(&job),
            Event::InitApply(job) => {
                if let Some(seen) = listing.as_mut() {
                    seen.insert(job.uid().unwrap_or_default());
                }
                self.update(&job);
            }
            Event::Delete(job) => self.gone(&job.uid().unwrap_or_default()),
            Event::Init => *listing = Some(HashSet::new()),
            Event::InitDone => {
                // A (re)list is the whole truth: what it did not return no longer exists.
                if let Some(seen) = listing.take() {
                    let known: Vec<String> = self
                        .jobs
                        .lock()
                        .expect("watch lock")
                        .keys()
                        .cloned()
                        .collect();
                    for uid in known.into_iter().filter(|u| !seen.contains(u)) {
                        self.gone(&uid);
                    }
                }
                self.synced.send_replace(true);
            }
        }
    }

    fn update(&self, job: &Job) {
        let view = JobView::of(job);
        let mut jobs = self.jobs.lock().expect("watch lock");
        jobs.entry(view.uid.clone())
            .or_insert_with(|| watch::channel(None).0)
            .send_replace(Some(view));
    }

    fn gone(&self, uid: &str) {
        let mut jobs = self.jobs.lock().expect("watch lock");
        if let Some(slot) = jobs.get(uid) {
            slot.send_replace(None);
            if slot.receiver_count() == 0 {
                jobs.remove(uid);
            }
        }
    }

    /// The state of the Job with `uid`, now and as it changes. `None` until the Job is seen.
    pub fn subscribe(&self, uid: &str) -> watch::Receiver<Option<JobView>> {
        let mut jobs = self.jobs.lock().expect("watch lock");
        jobs.entry(uid.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// How long the watch has been failing, and its last error; `None` while it works.
    pub fn failing_for(&self) -> Option<(Duration, String)> {
        let health = self.health.lock().expect("health lock");
        let (since, last_at) = (health.since?, health.last_at?);
        (last_at.elapsed() < QUIET_AFTER_ERRORS).then(|| (since.elapsed(), health.last.clone()))
    }

    /// Keeps `readiness` true to the watch until `stop`: not ready once it has been failing
    /// for `threshold` (a worker that cannot see its Jobs' ends cannot finish a scan).
    pub fn report_to(&self, readiness: Readiness, threshold: Duration, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.failing_for() {
                    Some((failing, why)) if failing >= threshold => readiness.failing(
                        KUBERNETES,
                        format!("the Job watch has failed for {}s: {why}", failing.as_secs()),
                    ),
                    _ => readiness.recovered(KUBERNETES),
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }

    /// Waits until the first list has completed.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}
