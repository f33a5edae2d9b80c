//! The api's Prometheus metrics, and the middleware that counts every request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use fleet_runtime::db::ErrorLabel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::routes::App;

/// A request by route (the path pattern, never the repository) and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// A scan request's outcome: accepted, unauthorized, rate_limited.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanLabel {
    pub result: String,
}

impl ScanLabel {
    pub fn new(result: &str) -> Self {
        Self {
            result: result.to_owned(),
        }
    }
}

/// How a request for an export file was answered: `range` (part of it), `whole`,
/// `not_modified`, `precondition_failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DataLabel {
    pub answer: String,
}

/// How a GET of a repository without a score was answered: `queued` (a discovery), `pending`,
/// and the refusals `missing`, `failed`, `over_budget`, `client_limited`, `not_scheduled`,
/// `unknown`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveryLabel {
    pub answer: String,
}

impl DiscoveryLabel {
    pub fn new(answer: &str) -> Self {
        Self {
            answer: answer.to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabel, Counter>,
    pub request_seconds: Family<RouteLabel, Histogram>,
    pub scan_requests: Family<ScanLabel, Counter>,
    pub db_errors: Family<ErrorLabel, Counter>,
    pub data_requests: Family<DataLabel, Counter>,
    pub discovery: Family<DiscoveryLabel, Counter>,
    /// GETs' lookups of a repository's latest result, and the queries that answered them.
    pub lookups: Counter,
    pub lookup_queries: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            // 100 µs .. ~3 s.
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 15))
            }),
            scan_requests: Family::default(),
            db_errors: Family::default(),
            data_requests: Family::default(),
            discovery: Family::default(),
            lookups: Counter::default(),
            lookup_queries: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("api");
        r.register(
            "requests",
            "Requests answered, by route and status code",
            m.requests.clone(),
        );
        r.register(
            "request_seconds",
            "Time to answer a request, by route",
            m.request_seconds.clone(),
        );
        r.register(
            "scan_requests",
            "Scan requests by result (accepted, unauthorized, rate_limited)",
            m.scan_requests.clone(),
        );
        r.register("db_errors", "Database errors by kind", m.db_errors.clone());
        r.register(
            "data_requests",
            "Requests for an export file under /data/, by answer (range, whole, not_modified)",
            m.data_requests.clone(),
        );
        r.register(
            "discovery",
            "GETs of a repository without a score, by answer (queued: a scan queued; pending; \
             refused: missing, failed, over_budget, client_limited, not_scheduled, unknown)",
            m.discovery.clone(),
        );
        r.register(
            "lookups",
            "GETs' lookups of a repository's latest result",
            m.lookups.clone(),
        );
        r.register(
            "lookup_queries",
            "Queries that answered the lookups (concurrent ones share a query; \
             lookups / lookup_queries is how many each answered)",
            m.lookup_queries.clone(),
        );
        m
    }

    pub fn data_request(&self, answer: &str) {
        self.data_requests
            .get_or_create(&DataLabel {
                answer: answer.to_owned(),
            })
            .inc();
    }
}

/// Counts and times every request under its route pattern.
pub async fn track(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .request_seconds
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    app.metrics
        .requests
        .get_or_create(&RequestLabel {
            route,
            code: response.status().as_u16(),
        })
        .inc();
    response
}
