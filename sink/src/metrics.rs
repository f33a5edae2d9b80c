//! The sink's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use fleet_runtime::db::ErrorLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    pub results: Counter,
    pub failures: Counter,
    pub duplicates: Counter,
    pub poison: Counter,
    pub refused: Counter,
    pub events: Counter,
    pub batches: Counter,
    pub db_errors: Family<ErrorLabel, Counter>,
    pub batch_seconds: Histogram,
    pub repos: Gauge,
    pub fresh_ratio: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            results: Counter::default(),
            failures: Counter::default(),
            duplicates: Counter::default(),
            poison: Counter::default(),
            refused: Counter::default(),
            events: Counter::default(),
            batches: Counter::default(),
            db_errors: Family::default(),
            // 1 ms .. ~16 s: a healthy batch commits in tens of milliseconds.
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            repos: Gauge::default(),
            fresh_ratio: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("sink");
        r.register(
            "results_written",
            "Score results that changed scores or history",
            m.results.clone(),
        );
        r.register(
            "failures_recorded",
            "Final failures recorded in work_failures",
            m.failures.clone(),
        );
        r.register(
            "duplicates",
            "Records already written (redeliveries, stale results)",
            m.duplicates.clone(),
        );
        r.register(
            "poison",
            "Undecodable or invalid messages dead-lettered",
            m.poison.clone(),
        );
        r.register(
            "refused",
            "Records PostgreSQL refused for what they are, dead-lettered with its reason",
            m.refused.clone(),
        );
        r.register(
            "events_published",
            "Change events published to the events stream",
            m.events.clone(),
        );
        r.register("batches", "Batches committed", m.batches.clone());
        r.register(
            "db_errors",
            "Failed batch transactions, by kind (data errors isolate the record; others are retried)",
            m.db_errors.clone(),
        );
        r.register(
            "batch_seconds",
            "Time to write and commit one batch",
            m.batch_seconds.clone(),
        );
        m
    }
}
