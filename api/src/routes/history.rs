//! A repository's scans, newest first (`GET /projects/.../history`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::project::unknown;
use super::{Failure, Params, RepoPath, Segments, Shared, asked_repo, bad_cursor, page_limit};
use crate::model::{self, ApiError};
use crate::store;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    before: Option<String>,
}

pub(super) fn history_cursor(text: &str) -> Result<store::HistoryCursor, Failure> {
    let (micros, work_id) = text.split_once('_').ok_or_else(|| bad_cursor("before"))?;
    let micros: i64 = micros.parse().map_err(|_| bad_cursor("before"))?;
    let scored_at =
        DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| bad_cursor("before"))?;
    if work_id.is_empty() || work_id.len() > 256 {
        return Err(bad_cursor("before"));
    }
    Ok(store::HistoryCursor {
        scored_at,
        work_id: work_id.to_owned(),
    })
}

/// Every scan of a repository, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/projects/{platform}/{org}/{repo}/history",
    params(
        RepoPath,
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Scans a page (30)"),
        ("before" = Option<String>, Query, description = "The previous page's `next`"),
    ),
    responses(
        (status = 200, description = "A page of scans", body = model::History),
        (status = 400, description = "Invalid limit or cursor", body = ApiError),
        (status = 404, description = "Not a repository name, or unknown", body = ApiError),
        (status = 503, description = "The database is unavailable", body = ApiError),
    )
)]
pub async fn history(
    State(app): State<Shared>,
    path: Result<Segments<RepoPath>, Failure>,
    Params(query): Params<PageQuery>,
) -> Result<Response, Failure> {
    let repo = asked_repo(path)?;
    let limit = page_limit(query.limit)?;
    let before = query.before.as_deref().map(history_cursor).transpose()?;
    // The repository alone: its latest result (and its raw output) is not needed here.
    let (repo_id, spelled) = app
        .query(store::repo(&app.db, &repo.key()))
        .await?
        .ok_or_else(|| unknown(&repo))?;
    let scans = app
        .query(store::history(&app.db, repo_id, before.as_ref(), limit + 1))
        .await?;
    let more = scans.len() as i64 > limit;
    let scans: Vec<_> = scans.into_iter().take(limit as usize).collect();
    let next = more
        .then(|| {
            scans
                .last()
                .map(|s| format!("{}_{}", s.scored_at.timestamp_micros(), s.work_id))
        })
        .flatten();
    let body = model::History {
        repo: spelled,
        scans: scans
            .into_iter()
            .map(|s| model::HistoryScan {
                date: s.scored_at.to_rfc3339(),
                work_id: s.work_id,
                commit: s.commit_sha,
                score: s.score,
                scorecard_version: s.scorecard_version,
                checks: s.check_scores.0,
            })
            .collect(),
        next,
    };
    Ok(axum::Json(body).into_response())
}
