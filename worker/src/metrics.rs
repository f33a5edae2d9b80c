//! The worker's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabel {
    pub credential: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub in_flight: Gauge,
    pub started: Counter,
    pub adopted: Counter,
    pub succeeded: Counter,
    pub failed: Family<ClassLabel, Counter>,
    pub retried: Family<ClassLabel, Counter>,
    pub poison: Counter,
    pub job_seconds: Histogram,
    pub kube_requests: Family<VerbLabel, Counter>,
    pub watch_restarts: Counter,
    /// Unix seconds of the last event or bookmark of the Job watch: how stale it may be.
    pub watch_last_event: Gauge,
    pub exhausted: Counter,
    pub covered: Counter,
    pub already_done: Counter,
    pub handed_back: Counter,
    pub abandoned: Counter,
    pub ack_failures: Counter,
    pub fresh_attempts: Counter,
    pub jobs_kept: Counter,
    /// Times a slot waited because no credential had room.
    pub budget_waits: Counter,
    pub budget_scans_per_window: Family<CredentialLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub scans_stalled: Family<CredentialLabel, Counter>,
    pub credentials_revoked: Family<CredentialLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            in_flight: Gauge::default(),
            started: Counter::default(),
            adopted: Counter::default(),
            succeeded: Counter::default(),
            failed: Family::default(),
            retried: Family::default(),
            poison: Counter::default(),
            // 1 s .. ~4.5 h: scans take minutes, a rate-limit sleep up to the 1 h deadline.
            job_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            kube_requests: Family::default(),
            watch_restarts: Counter::default(),
            watch_last_event: Gauge::default(),
            exhausted: Counter::default(),
            covered: Counter::default(),
            already_done: Counter::default(),
            handed_back: Counter::default(),
            abandoned: Counter::default(),
            ack_failures: Counter::default(),
            fresh_attempts: Counter::default(),
            jobs_kept: Counter::default(),
            budget_waits: Counter::default(),
            budget_scans_per_window: Family::default(),
            scans_stalled: Family::default(),
            credentials_revoked: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("worker");
        r.register(
            "in_flight",
            "Work items being run by this worker",
            m.in_flight.clone(),
        );
        r.register("jobs_started", "scorecard Jobs created", m.started.clone());
        r.register(
            "jobs_adopted",
            "Jobs found already running for a redelivered item (no second scan)",
            m.adopted.clone(),
        );
        r.register(
            "succeeded",
            "Work items that produced a published result",
            m.succeeded.clone(),
        );
        r.register(
            "failed",
            "Work items given up on, by failure class",
            m.failed.clone(),
        );
        r.register(
            "retried",
            "Failed runs handed back for another delivery, by class",
            m.retried.clone(),
        );
        r.register(
            "poison",
            "Undecodable or invalid work messages dead-lettered",
            m.poison.clone(),
        );
        r.register(
            "job_seconds",
            "From Job creation (or adoption) to its end",
            m.job_seconds.clone(),
        );
        r.register(
            "kube_requests",
            "Kubernetes API requests, by verb",
            m.kube_requests.clone(),
        );
        r.register(
            "watch_restarts",
            "Restarts of the shared Job watch (expiry, reconnects)",
            m.watch_restarts.clone(),
        );
        r.register(
            "watch_last_event_timestamp_seconds",
            "When the shared Job watch last heard from the API server (event or bookmark)",
            m.watch_last_event.clone(),
        );
        r.register(
            "deliveries_exhausted",
            "Work items that ran out of deliveries without an outcome, dead-lettered as EXHAUSTED",
            m.exhausted.clone(),
        );
        r.register(
            "covered",
            "Work items not scanned because a newer scan of the same repository answers them",
            m.covered.clone(),
        );
        r.register(
            "already_done",
            "Redelivered work items whose outcome was already published (acked, nothing re-run)",
            m.already_done.clone(),
        );
        r.register(
            "handed_back",
            "Work items handed back because their outcome could not be recorded (NATS trouble)",
            m.handed_back.clone(),
        );
        r.register(
            "budget_waits",
            "Times an item waited for a GitHub credential with room (held with progress acks meanwhile)",
            m.budget_waits.clone(),
        );
        r.register(
            "budget_scans_per_window",
            "Scans per quota window each credential is allowed now (learned from rate limits)",
            m.budget_scans_per_window.clone(),
        );
        r.register(
            "scans_stalled",
            "Scans that waited for a credential's quota to reset, by credential",
            m.scans_stalled.clone(),
        );
        r.register(
            "credentials_revoked",
            "1 for a credential GitHub rejected (Bad credentials): out of the pool until replaced",
            m.credentials_revoked.clone(),
        );
        r.register(
            "abandoned",
            "Work items left running at the drain deadline for the next delivery",
            m.abandoned.clone(),
        );
        r.register(
            "ack_failures",
            "Acks that failed after the outcome was published (the Job is kept for the redelivery)",
            m.ack_failures.clone(),
        );
        r.register(
            "fresh_attempts",
            "Redeliveries that found a previous attempt's failed Job and started a fresh one",
            m.fresh_attempts.clone(),
        );
        r.register(
            "jobs_kept",
            "Ended Jobs left for their TTL because more than one delivery claimed the scan",
            m.jobs_kept.clone(),
        );
        m
    }

    pub fn kube(&self, verb: &str) {
        self.kube_requests
            .get_or_create(&VerbLabel {
                verb: verb.to_owned(),
            })
            .inc();
    }
}
