//! The producer's Prometheus metrics.

use fleet_runtime::db::ErrorLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct Metrics {
    pub claimed: Counter,
    pub published: Counter,
    pub publish_errors: Counter,
    pub retired: Counter,
    pub db_errors: Family<ErrorLabel, Counter>,
    pub due_backlog: Gauge,
    pub oldest_overdue_seconds: Gauge,
    pub queue_pending: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("producer");
        r.register(
            "claimed",
            "Repositories claimed from the database",
            m.claimed.clone(),
        );
        r.register(
            "published",
            "Work items published to JetStream",
            m.published.clone(),
        );
        r.register(
            "publish_errors",
            "Work items whose publish failed (handed back)",
            m.publish_errors.clone(),
        );
        r.register(
            "retired",
            "Discovered repositories retired because nobody asked for them",
            m.retired.clone(),
        );
        r.register(
            "db_errors",
            "Failed database calls, by kind (retried with backoff)",
            m.db_errors.clone(),
        );
        r.register(
            "due_backlog",
            "Enabled repositories due now and not yet enqueued",
            m.due_backlog.clone(),
        );
        r.register(
            "oldest_overdue_seconds",
            "How long the most overdue repository has been waiting (0: none overdue)",
            m.oldest_overdue_seconds.clone(),
        );
        r.register(
            "queue_pending",
            "Scheduled work items waiting for a worker",
            m.queue_pending.clone(),
        );
        m
    }
}
