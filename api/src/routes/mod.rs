//! The HTTP routes: the public Scorecard API's paths, then history, rankings, status and scan
//! requests. Every error is `{"code", "message"}`; every score and badge carries caching
//! headers a CDN can use.
//!
//! A name the public API would not find is a 404 on the GET paths; a malformed commit, limit
//! or cursor is a 400. The `ETag` is the result's work id (with the style, for badges);
//! `If-Modified-Since` answers 304 when no `If-None-Match` is sent.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_runtime::db::Db;
use fleet_runtime::topology::Topology;
use serde::Deserialize;

use crate::discovery::{Discovery, Unscored};
use crate::keys::{Keys, RateLimit};
use crate::metrics::Metrics;
use crate::model::{self, ApiError};

mod badge;
mod history;
mod project;
mod ranking;
mod scan;
mod status;

// The handlers with their OpenAPI descriptions (utoipa's `__path_*` beside each).
pub use badge::*;
pub use history::*;
pub use project::*;
pub use ranking::*;
pub use scan::*;
pub use status::*;

/// How long `/status`'s counts are reused: they walk the repos table.
const STATUS_FOR: Duration = Duration::from_secs(30);
/// Most items of a page.
pub const PAGE_MAX: i64 = 100;
const PAGE_DEFAULT: i64 = 30;

/// What every request handler shares.
pub struct App {
    pub db: Db,
    /// The GETs' lookups of a repository's latest result.
    pub lookups: crate::lookup::Lookups,
    pub keys: Keys,
    pub limit: RateLimit,
    /// Set once NATS answers; scan requests before that are 503.
    pub nats: Arc<OnceLock<async_nats::jetstream::Context>>,
    pub topology: Topology,
    pub cache_seconds: u32,
    pub lease: TimeDelta,
    pub interval: TimeDelta,
    pub raw_history_days: u32,
    /// The export's directory, when this api serves it under /data/.
    pub data: Option<crate::data::DataDir>,
    pub metrics: Metrics,
    /// Database errors counted (`metrics.db_errors`), and not ready while they last.
    pub db_health: fleet_runtime::db::DbHealth,
    pub status: Mutex<Option<(Instant, model::Status)>>,
    pub discovery: Discovery,
    pub webhooks: crate::webhooks::Webhooks,
}

type Shared = Arc<App>;

pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/search", get(search))
        .route("/openapi.json", get(openapi))
        .route("/status", get(status))
        .route("/projects/{platform}/{org}/{repo}", get(project))
        .route("/projects/{platform}/{org}/{repo}/badge", get(badge_svg))
        .route("/projects/{platform}/{org}/{repo}/history", get(history))
        .route("/projects/{platform}/{org}/{repo}/scan", post(scan))
        .route("/checks/{name}", get(ranking))
        .route("/stats", get(crate::data::stats))
        .route("/data", get(|| async { Redirect::permanent("/data/") }))
        .route("/data/", get(crate::data::index))
        .route("/data/{*path}", get(crate::data::file))
        .merge(crate::webhooks::routes())
        .fallback(|| async { Failure::new(StatusCode::NOT_FOUND, "no such path") })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::metrics::track,
        ))
        .with_state(app)
}

/// An error answer: `{"code", "message"}` with the status.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    message: String,
    retry_after: Option<Duration>,
    /// How long a cache may keep the answer.
    max_age: u32,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            max_age: 60,
        }
    }

    /// A repository without a score, as the public API answers it: a 404 in its shape.
    fn unscored(repo: &RepoName, answer: &Unscored) -> Self {
        let mut failure = Self::new(answer.status(), answer.message(repo));
        failure.retry_after = answer.retry_after();
        failure.max_age = unscored_max_age(answer);
        failure
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(Duration::from_secs(seconds));
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.status.as_u16(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        // Errors may change any moment (a first score, a recovered database): a CDN keeps
        // them briefly at most.
        headers.insert(header::CACHE_CONTROL, max_age(self.max_age));
        if let Some(after) = self.retry_after {
            set_retry_after(headers, after);
        }
        response
    }
}

/// Says in `headers` when to come back: `Retry-After` in whole seconds, at least one.
pub(super) fn set_retry_after(headers: &mut HeaderMap, after: Duration) {
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(after.as_secs().max(1)),
    );
}

impl App {
    /// A database error becomes a 503 and marks the service not ready until a query works.
    fn db_error(&self, e: &sqlx::Error) -> Failure {
        let why = self.db_health.failed(e);
        tracing::warn!(error = %why, "a database query failed");
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; try again shortly",
        )
        .retry_after(5)
    }

    /// Runs a query, turning its error (its own, or one a gathered lookup shares) into the 503
    /// answer.
    pub(crate) async fn query<T, E: std::borrow::Borrow<sqlx::Error>>(
        &self,
        q: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Failure> {
        match q.await {
            Ok(v) => {
                self.db_health.succeeded();
                Ok(v)
            }
            Err(e) => Err(self.db_error(e.borrow())),
        }
    }

    fn cache_control(&self) -> HeaderValue {
        HeaderValue::try_from(format!("public, max-age={}", self.cache_seconds))
            .expect("a valid header value")
    }
}

/// Path segments, with a malformed path answered as a JSON 400 like every other error.
#[derive(FromRequestParts)]
#[from_request(via(Path), rejection(Failure))]
pub struct Segments<T>(pub T);

/// Query parameters, likewise.
#[derive(FromRequestParts)]
#[from_request(via(Query), rejection(Failure))]
pub struct Params<T>(pub T);

impl From<PathRejection> for Failure {
    fn from(e: PathRejection) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<QueryRejection> for Failure {
    fn from(e: QueryRejection) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, e.body_text())
    }
}

/// The `{platform}/{org}/{repo}` of the repository paths, described once for the OpenAPI
/// document.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RepoPath {
    /// github.com
    #[param(pattern = r"^github\.com$", example = "github.com")]
    platform: String,
    /// The repository's owner (any case)
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", example = "ossf")]
    org: String,
    /// The repository's name (any case)
    #[param(pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "scorecard")]
    repo: String,
}

/// The path as a repository name, or the answer (`status`: 404 on the GET paths, as the public
/// API has it; 400 on a POST) that says what is wrong. Stricter than a pasted name: each segment
/// must be the name itself (no `.git`, no encoded slash).
fn repo_name(path: &RepoPath, status: StatusCode) -> Result<RepoName, Failure> {
    let RepoPath {
        platform,
        org,
        repo,
    } = path;
    let given = format!("{platform}/{org}/{repo}");
    let parsed = RepoName::parse(&given).map_err(|e| Failure::new(status, e.to_string()))?;
    if platform != fleet_proto::repo::GITHUB || parsed.owner() != org || parsed.name() != repo {
        return Err(Failure::new(
            status,
            format!(
                "{given:?} is not a repository path: expected github.com/OWNER/NAME, each part as GitHub spells it"
            ),
        ));
    }
    Ok(parsed)
}

/// The repository a GET path names. Whatever the public API would not find there is a 404, as it
/// is there: a segment that does not decode too.
fn asked_repo(path: Result<Segments<RepoPath>, Failure>) -> Result<RepoName, Failure> {
    let Segments(path) = path.map_err(|e| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "the path is not a repository path: expected github.com/OWNER/NAME ({})",
                e.message
            ),
        )
    })?;
    repo_name(&path, StatusCode::NOT_FOUND)
}

/// A browser asking for a page rather than a program asking for JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Whether the client's copy is current: `If-None-Match` names `etag` (weak comparison, as RFC
/// 9110 asks for it), or, without one, `If-Modified-Since` is no older than `modified`.
fn not_modified(headers: &HeaderMap, etag: &str, modified: Option<DateTime<Utc>>) -> bool {
    let mut tags = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    if tags.peek().is_some() {
        return tags
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == etag || tag == "*");
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match (since, modified) {
        (Some(since), Some(modified)) => {
            // HTTP dates have whole seconds.
            modified.timestamp() <= DateTime::<Utc>::from(since).timestamp()
        }
        _ => false,
    }
}

fn max_age(seconds: u32) -> HeaderValue {
    HeaderValue::try_from(format!("public, max-age={seconds}")).expect("a valid header value")
}

/// A cacheable answer: 304 when the client has it, else `body` as `content_type`;
/// `modified` (the scan's date) becomes `Last-Modified`.
fn cached(
    app: &App,
    headers: &HeaderMap,
    etag: String,
    modified: Option<DateTime<Utc>>,
    content_type: &'static str,
    body: String,
) -> Response {
    let mut response = if not_modified(headers, &etag, modified) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, app.cache_control());
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(etag) = HeaderValue::try_from(etag) {
        h.insert(header::ETAG, etag);
    }
    if let Some(modified) = modified
        && let Ok(value) = HeaderValue::try_from(httpdate::fmt_http_date(modified.into()))
    {
        h.insert(header::LAST_MODIFIED, value);
    }
    response
}

fn html_page(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::VARY, "Accept"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, Failure> {
    match limit {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(n) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("limit {n} is out of range: 1 to {PAGE_MAX}"),
        )),
    }
}

pub(crate) fn bad_cursor(name: &str) -> Failure {
    Failure::new(
        StatusCode::BAD_REQUEST,
        format!("{name} is not a cursor this service gave out (pass the page's `next` as it is)"),
    )
}

/// The name of the API key a request's bearer token presents: who makes the request, and the
/// owner of what it creates. Without a valid key the request is answered 401.
pub struct ApiKey(pub String);

impl FromRequestParts<Shared> for ApiKey {
    type Rejection = Unauthorized;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Unauthorized> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        app.keys
            .check(presented.trim())
            .map(|name| Self(name.to_owned()))
            .ok_or(Unauthorized)
    }
}

/// The 401 answer, which says how to authenticate.
pub struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut denied = Failure::new(
            StatusCode::UNAUTHORIZED,
            "a valid API key is needed: Authorization: Bearer <key>",
        )
        .into_response();
        denied
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        denied
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json", body = Object))
)]
pub async fn openapi() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(crate::openapi::json);
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}
