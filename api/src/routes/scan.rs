//! A person's scan request (`POST /projects/.../scan`), on the manual lane.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiKey, App, Failure, RepoPath, Segments, Shared, Unauthorized, repo_name};
use crate::model::{self, ApiError};

/// A scan now, ahead of the schedule, on the manual lane.
#[utoipa::path(
    post,
    path = "/projects/{platform}/{org}/{repo}/scan",
    params(
        RepoPath,
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued", body = model::ScanAccepted),
        (status = 400, description = "Invalid platform or name", body = ApiError),
        (status = 401, description = "No valid key", body = ApiError),
        (status = 404, description = "No such path", body = ApiError),
        (status = 429, description = "This key's request budget is spent (Retry-After)", body = ApiError),
        (status = 503, description = "NATS or the database is unavailable", body = ApiError),
    )
)]
pub async fn scan(
    State(app): State<Shared>,
    Segments(path): Segments<RepoPath>,
    key: Result<ApiKey, Unauthorized>,
) -> Result<Response, Failure> {
    let Ok(ApiKey(key)) = key else {
        app.count_scan("unauthorized");
        return Ok(Unauthorized.into_response());
    };
    let key = key.as_str();
    let repo = repo_name(&path, StatusCode::BAD_REQUEST)?;
    if let Err(wait) = app.limit.take(key, Instant::now()) {
        app.count_scan("rate_limited");
        return Err(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "key {key} has used its scan requests for now; try again in {} s",
                wait.as_secs() + 1
            ),
        )
        .retry_after(wait.as_secs() + 1));
    }
    let Some(js) = app.nats.get() else {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NATS is not connected yet; try again shortly",
        )
        .retry_after(5));
    };
    let items = fleet_runtime::manual::enqueue(
        &app.db,
        js,
        &app.topology,
        std::slice::from_ref(&repo),
        app.lease,
    )
    .await
    .map_err(|e| {
        let why = fleet_runtime::scrub::scrub(&format!("{e:#}"), &[]).into_owned();
        tracing::warn!(%repo, key, error = %why, "a scan request failed");
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the scan request could not be queued: {why}"),
        )
        .retry_after(5)
    })?;
    let item = items
        .into_iter()
        .next()
        .expect("one item for one repository");
    app.count_scan("accepted");
    tracing::info!(%repo, key, work_id = %item.id, "scan requested");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(model::ScanAccepted {
            work_id: item.id,
            repo: repo.to_string(),
        }),
    )
        .into_response())
}

impl App {
    /// One scan request, by how it ended.
    pub(super) fn count_scan(&self, outcome: &str) {
        self.metrics
            .scan_requests
            .get_or_create(&crate::metrics::ScanLabel::new(outcome))
            .inc();
    }
}
