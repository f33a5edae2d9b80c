//! The badge (`GET /projects/.../badge`): an SVG for every answer, errors included.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::project::{Found, look_up, unscored_max_age};
use super::{
    Failure, Params, RepoPath, Segments, Shared, asked_repo, cached, max_age, set_retry_after,
};
use crate::badge::{self, Style};
use crate::discovery::Client;

#[derive(Debug, Deserialize)]
pub struct BadgeQuery {
    style: Option<String>,
}

/// An SVG badge of the repository's score. Every answer is a badge, errors included (it is
/// embedded in `<img>`): grey, naming the problem; "pending" while a scan is on the way.
#[utoipa::path(
    get,
    path = "/projects/{platform}/{org}/{repo}/badge",
    params(
        RepoPath,
        ("style" = Option<Style>, Query, description = "The badge's shape"),
    ),
    responses(
        (status = 200, description = "The badge: the score, or grey \"pending\" (short max-age), \"repo not found\", \"not scored yet\", \"try later\" (Retry-After), \"unknown\"; Last-Modified is the scan's date", content_type = "image/svg+xml", body = String),
        (status = 304, description = "Not modified (If-None-Match, or If-Modified-Since)"),
        (status = 400, description = "Invalid style: a grey badge that says so", content_type = "image/svg+xml", body = String),
        (status = 404, description = "Not a repository path: a grey \"invalid repo path\" badge", content_type = "image/svg+xml", body = String),
        (status = 503, description = "The database is unavailable: a grey badge that says so", content_type = "image/svg+xml", body = String),
    )
)]
pub async fn badge_svg(
    State(app): State<Shared>,
    path: Result<Segments<RepoPath>, Failure>,
    query: Result<Params<BadgeQuery>, Failure>,
    client: Client,
    headers: HeaderMap,
) -> Response {
    let style = match query {
        Ok(Params(BadgeQuery { style: None })) => Ok(Style::default()),
        Ok(Params(BadgeQuery { style: Some(s) })) => {
            serde_json::from_value::<Style>(serde_json::Value::String(s.clone()))
                .map_err(|_| format!("invalid style {s}"))
        }
        // A malformed query (`style` twice, say).
        Err(_) => Err("invalid query".to_owned()),
    };
    let style = match style {
        Ok(style) => style,
        Err(says) => return badge_answer(StatusCode::BAD_REQUEST, Style::default(), &says, 60),
    };
    let repo = match asked_repo(path) {
        Ok(repo) => repo,
        Err(_) => return badge_answer(StatusCode::NOT_FOUND, style, "invalid repo path", 3_600),
    };
    match look_up(&app, &repo, &client, true).await {
        Ok(Found::Scored(latest)) => cached(
            &app,
            &headers,
            format!(
                "\"{}-{}\"",
                latest.work_id.as_deref().unwrap_or_default(),
                style.name()
            ),
            latest.scored_at,
            "image/svg+xml",
            badge::render(style, latest.score, true),
        ),
        Ok(Found::Unscored(answer)) => {
            let mut response = badge_answer(
                StatusCode::OK,
                style,
                answer.badge_value(),
                unscored_max_age(&answer),
            );
            if let Some(after) = answer.retry_after() {
                set_retry_after(response.headers_mut(), after);
            }
            response
        }
        Err(failure) => badge_answer(failure.status, style, "unavailable", 30),
    }
}

/// A grey badge that says `value`, answered with `status`.
pub(super) fn badge_answer(
    status: StatusCode,
    style: Style,
    value: &str,
    seconds: u32,
) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (header::CACHE_CONTROL, max_age(seconds)),
        ],
        badge::render_text(style, value),
    )
        .into_response()
}
