//! Repositories by one check's score (`GET /checks/{name}`), lowest first, paged by keyset
//! on `score_checks (name, score, repo_id)`: a page deep in the list costs what the first does.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Failure, Params, Segments, Shared, bad_cursor, page_limit};
use crate::model::{self, ApiError};
use crate::store;

#[derive(Debug, Deserialize)]
pub struct RankQuery {
    min_score: Option<i16>,
    max_score: Option<i16>,
    limit: Option<i64>,
    after: Option<String>,
}

pub(super) fn check_name(name: &str) -> Result<String, Failure> {
    if let Some(known) = fleet_proto::scorecard::CHECKS
        .iter()
        .find(|c| c.eq_ignore_ascii_case(name))
    {
        return Ok((*known).to_owned());
    }
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not a check name (letters, digits and '-', like Code-Review)"),
        ));
    }
    Ok(name.to_owned())
}

pub(super) fn score_bound(name: &str, value: Option<i16>, default: i16) -> Result<i16, Failure> {
    match value {
        None => Ok(default),
        Some(v) if (0..=10).contains(&v) => Ok(v),
        Some(v) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("{name} {v} is out of range: 0 to 10"),
        )),
    }
}

/// Repositories by one check's score (inconclusive results are left out), lowest first.
#[utoipa::path(
    get,
    path = "/checks/{name}",
    params(
        ("name" = String, Path, pattern = r"^[A-Za-z0-9-]{1,64}$", example = "Code-Review", description = "A check (any case)"),
        ("min_score" = Option<i16>, Query, minimum = 0, maximum = 10),
        ("max_score" = Option<i16>, Query, minimum = 0, maximum = 10),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Repositories a page (30)"),
        ("after" = Option<String>, Query, description = "The previous page's `next`"),
    ),
    responses(
        (status = 200, description = "A page of repositories", body = model::Ranking),
        (status = 400, description = "Invalid check name, bound, limit or cursor", body = ApiError),
        (status = 404, description = "No repository has this check", body = ApiError),
        (status = 503, description = "The database is unavailable", body = ApiError),
    )
)]
pub async fn ranking(
    State(app): State<Shared>,
    Segments(name): Segments<String>,
    Params(query): Params<RankQuery>,
) -> Result<Response, Failure> {
    let check = check_name(&name)?;
    let min = score_bound("min_score", query.min_score, 0)?;
    let max = score_bound("max_score", query.max_score, 10)?;
    let limit = page_limit(query.limit)?;
    let after = query
        .after
        .as_deref()
        .map(|text| {
            let (score, repo_id) = text.split_once('_').ok_or_else(|| bad_cursor("after"))?;
            Ok::<_, Failure>(store::RankCursor {
                score: score.parse().map_err(|_| bad_cursor("after"))?,
                repo_id: repo_id.parse().map_err(|_| bad_cursor("after"))?,
            })
        })
        .transpose()?;
    if !app.query(store::check_known(&app.db, &check)).await? {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("no repository has a result with check {check}"),
        ));
    }
    let rows = app
        .query(store::ranked(&app.db, &check, min, max, after, limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<_> = rows.into_iter().take(limit as usize).collect();
    let next = more
        .then(|| rows.last().map(|r| format!("{}_{}", r.score, r.repo_id)))
        .flatten();
    Ok(axum::Json(model::Ranking {
        check,
        repos: rows
            .into_iter()
            .map(|r| model::RankedRepo {
                repo: r.repo,
                score: i64::from(r.score),
                reason: r.reason,
            })
            .collect(),
        next,
    })
    .into_response())
}
