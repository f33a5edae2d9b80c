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
