//! The operations endpoint every service serves: `/metrics` (Prometheus text), `/healthz`
//! (the process is alive) and `/readyz` (started, and every dependency it watches answers; the
//! body names the one that does not, so a rollout stalls and an operator sees why).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Whether the service is ready: it has started (and is not draining), and none of the
/// dependencies it watches is failing. Starts not ready. `/readyz` says which dependency is
/// failing and why.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<ReadyState>>);

#[derive(Debug, Default)]
struct ReadyState {
    started: bool,
    failing: BTreeMap<&'static str, String>,
}

impl Readiness {
    /// Started (true) or not started / draining (false).
    pub fn set(&self, started: bool) {
        let mut state = self.0.lock().expect("readiness lock");
        if state.started != started {
            state.started = started;
            tracing::info!(started, "readiness changed");
        }
    }

    /// `dependency` is failing: not ready until [`Readiness::recovered`].
    pub fn failing(&self, dependency: &'static str, why: impl std::fmt::Display) {
        let why = crate::scrub::scrub(&why.to_string(), &[]).into_owned();
        let mut state = self.0.lock().expect("readiness lock");
        if state.failing.insert(dependency, why.clone()).is_none() {
            tracing::warn!(dependency, %why, "not ready: a dependency is failing");
        }
    }

    pub fn recovered(&self, dependency: &'static str) {
        let mut state = self.0.lock().expect("readiness lock");
        if state.failing.remove(dependency).is_some() {
            tracing::info!(dependency, "dependency recovered");
        }
    }

    pub fn get(&self) -> bool {
        self.reason().is_none()
    }

    /// Why the service is not ready; `None` when it is.
    pub fn reason(&self) -> Option<String> {
        let state = self.0.lock().expect("readiness lock");
        if !state.started {
            return Some("not started, or draining".into());
        }
        if state.failing.is_empty() {
            return None;
        }
        let parts: Vec<String> = state
            .failing
            .iter()
            .map(|(dependency, why)| format!("{dependency}: {why}"))
            .collect();
        Some(parts.join("; "))
    }
}

#[derive(Clone)]
struct Ops {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// The router alone, so tests can drive it without a socket.
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Ops {
            registry,
            readiness,
        })
}

/// Binds `addr` and serves until `shutdown`; binding errors are returned at once.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP server to {addr}"))?;
    let local: SocketAddr = listener.local_addr()?;
    tracing::info!(addr = %local, "serving /metrics, /healthz, /readyz");
    let app = router(registry, readiness);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }))
}

/// A service's operations endpoint, running.
pub struct OpsServer<M> {
    /// The service's metrics, registered in the registry `/metrics` serves.
    pub metrics: M,
    /// Starts not ready; the service sets it once its dependencies answer.
    pub readiness: Readiness,
    /// Ends after `shutdown`.
    pub server: tokio::task::JoinHandle<()>,
}

/// Registers a service's metrics with `register` and serves them with the probes on `addr`:
/// the first thing every service's `run` does.
pub async fn start<M>(
    addr: SocketAddr,
    shutdown: &CancellationToken,
    register: impl FnOnce(&mut Registry) -> M,
) -> anyhow::Result<OpsServer<M>> {
    let mut registry = Registry::default();
    let metrics = register(&mut registry);
    let readiness = Readiness::default();
    let server = serve(
        addr,
        Arc::new(registry),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    Ok(OpsServer {
        metrics,
        readiness,
        server,
    })
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &ops.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics: {e}\n"),
        ),
    }
}

async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    match ops.readiness.reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    #[tokio::test]
    async fn probes_and_metrics_over_a_real_socket() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("things", "Things done", counter.clone());
        counter.inc_by(3);
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = serve(
            addr,
            Arc::new(registry),
            readiness.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();

        assert_eq!(get_text(addr, "/healthz").await.0, 200);
        assert_eq!(get_text(addr, "/readyz").await.0, 503);
        readiness.set(true);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        readiness.failing("postgres", "connection refused");
        readiness.failing("nats", "disconnected");
        let (status, body) = get_text(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(
            body.ends_with("not ready: nats: disconnected; postgres: connection refused\n"),
            "{body}"
        );
        readiness.recovered("nats");
        readiness.recovered("postgres");
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        let (status, body) = get_text(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("things_total 3"), "{body}");

        shutdown.cancel();
        server.await.unwrap();
    }
}
