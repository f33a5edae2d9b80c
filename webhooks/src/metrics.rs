//! The webhooks service's Prometheus metrics. No label names a subscription, a URL or a
//! secret: an endpoint is its owner's business, and labels must stay few.

use fleet_runtime::db::ErrorLabel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub events: Counter,
    pub queued: Counter,
    pub attempts: Family<OutcomeLabel, Counter>,
    pub busy: Counter,
    pub refused: Counter,
    pub poison: Counter,
    pub db_errors: Family<ErrorLabel, Counter>,
    pub in_flight: Gauge,
    pub request_seconds: Histogram,
    pub delivered_after_seconds: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            events: Counter::default(),
            queued: Counter::default(),
            attempts: Family::default(),
            busy: Counter::default(),
            refused: Counter::default(),
            poison: Counter::default(),
            db_errors: Family::default(),
            in_flight: Gauge::default(),
            // 5 ms .. ~40 s: a healthy endpoint answers in tens of milliseconds, a timeout
            // lands in the last buckets.
            request_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            // 10 ms .. ~1.5 days: from first delivery at once to the end of a retry window.
            delivered_after_seconds: Histogram::new(exponential_buckets(0.01, 3.0, 18)),
        };
        let r = registry.sub_registry_with_prefix("webhooks");
        r.register(
            "events",
            "Change events fanned out to subscriptions",
            m.events.clone(),
        );
        r.register(
            "queued",
            "Deliveries queued by the fan-out (one per event and matching subscription)",
            m.queued.clone(),
        );
        r.register(
            "attempts",
            "Delivery attempts, by outcome (delivered, retrying, dead)",
            m.attempts.clone(),
        );
        r.register(
            "busy",
            "Deliveries handed back for later because their endpoint had its share in flight",
            m.busy.clone(),
        );
        r.register(
            "refused",
            "Deliveries refused because the endpoint's address is inside (SSRF)",
            m.refused.clone(),
        );
        r.register(
            "poison",
            "Undecodable events or deliveries dead-lettered",
            m.poison.clone(),
        );
        r.register(
            "db_errors",
            "Failed database calls, by kind",
            m.db_errors.clone(),
        );
        r.register("in_flight", "Deliveries being sent", m.in_flight.clone());
        r.register(
            "request_seconds",
            "Time one delivery's request took, answered or not",
            m.request_seconds.clone(),
        );
        r.register(
            "delivered_after_seconds",
            "Time from a delivery's queueing to the start of the attempt that succeeded",
            m.delivered_after_seconds.clone(),
        );
        m
    }

    pub fn attempt(&self, outcome: &'static str) {
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
