//! The fleet at a glance (`GET /status`), the status page and its search box.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{SecondsFormat, Utc};
use fleet_proto::RepoName;
use serde::Deserialize;

use super::{App, Failure, Params, STATUS_FOR, Shared, html_page};
use crate::discovery::{self};
use crate::html;
use crate::model::{self, ApiError};

/// The fleet's numbers, counted at most every 30 s per replica.
pub(super) async fn fleet_status(app: &App) -> Result<model::Status, Failure> {
    let waits = app.discovery.waits(app.nats.get(), &app.topology).await;
    let queue = |lane: Option<discovery::LaneWait>| {
        lane.map(|l| model::LaneQueue {
            waiting: l.waiting,
            oldest_wait_seconds: l.oldest.as_secs(),
        })
    };
    let lanes = model::Lanes {
        manual: queue(waits.manual),
        discovery: queue(waits.discovery),
    };
    if let Some((at, status)) = app.status.lock().expect("status cache").as_ref()
        && at.elapsed() < STATUS_FOR
    {
        return Ok(model::Status {
            lanes,
            ..status.clone()
        });
    }
    let s = app
        .query(fleet_runtime::status::status(&app.db, app.interval))
        .await?;
    let status = model::Status {
        fresh_ratio: if s.repos == 0 {
            1.0
        } else {
            s.fresh as f64 / s.repos as f64
        },
        repos: s.repos,
        enabled: s.enabled,
        fresh: s.fresh,
        interval_days: u32::try_from(app.interval.num_days()).unwrap_or(0),
        due_now: s.due_now,
        in_flight: s.in_flight,
        never_scored: s.never_scored,
        oldest_overdue: s
            .oldest_overdue
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        failures_by_class: s.failed_by_class.into_iter().collect::<BTreeMap<_, _>>(),
        counted_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        estimated: s.estimated,
        lanes,
    };
    *app.status.lock().expect("status cache") = Some((Instant::now(), status.clone()));
    Ok(status)
}

/// The fleet at a glance: freshness, due, in flight, failures by class.
#[utoipa::path(
    get,
    path = "/status",
    responses(
        (status = 200, description = "The numbers of `sink status`", body = model::Status),
        (status = 503, description = "The database is unavailable", body = ApiError),
    )
)]
pub async fn status(State(app): State<Shared>) -> Result<Response, Failure> {
    Ok(axum::Json(fleet_status(&app).await?).into_response())
}

/// The status page.
#[utoipa::path(
    get,
    path = "/",
    responses(
        (status = 200, description = "The status page", content_type = "text/html", body = String),
        (status = 503, description = "The database is unavailable", body = ApiError),
    )
)]
pub async fn index(State(app): State<Shared>) -> Result<Response, Failure> {
    Ok(html_page(html::status(&fleet_status(&app).await?)))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    repo: Option<String>,
}

/// The status page's search box: to the repository's page.
#[utoipa::path(
    get,
    path = "/search",
    params(("repo" = Option<String>, Query, example = "github.com/ossf/scorecard", description = "github.com/OWNER/NAME")),
    responses(
        (status = 303, description = "To the repository's page"),
        (status = 400, description = "Not a repository name", body = ApiError),
    )
)]
pub async fn search(Params(query): Params<SearchQuery>) -> Result<Response, Failure> {
    let repo = RepoName::parse(query.repo.as_deref().unwrap_or_default())
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Redirect::to(&html::project_path(&repo)).into_response())
}
