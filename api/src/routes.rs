//! The HTTP routes: the public Scorecard API's paths, then history, rankings, status and scan
//! requests. Every error is `{"code", "message"}`; every score and badge carries caching
//! headers a CDN can use.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_runtime::db::Db;
use fleet_runtime::http::Readiness;
use fleet_runtime::topology::Topology;
use serde::Deserialize;

use crate::badge::{self, Style};
use crate::discovery::{self, Client, Discovery, Standing, Unscored};
use crate::keys::{Keys, RateLimit};
use crate::metrics::Metrics;
use crate::model::{self, ApiError};
use crate::store::Latest;
use crate::{html, store};

/// The readiness dependency of the database.
const POSTGRES: &str = "postgres";
/// How long `/status`'s counts are reused: they walk the repos table.
const STATUS_FOR: Duration = Duration::from_secs(30);
/// Most items of a page.
pub const PAGE_MAX: i64 = 100;
const PAGE_DEFAULT: i64 = 30;

/// What every request handler shares.
pub struct App {
    pub db: Db,
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
    pub readiness: Readiness,
    pub db_failing: AtomicBool,
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
    retry_after: Option<u64>,
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
        failure.retry_after = answer.retry_after().map(|d| d.as_secs().max(1));
        failure.max_age = unscored_max_age(answer);
        failure
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
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
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl App {
    /// A database error becomes a 503 and marks the service not ready until a query works.
    fn db_error(&self, e: &sqlx::Error) -> Failure {
        let why = fleet_runtime::db::describe(e);
        tracing::warn!(error = %why, "a database query failed");
        self.metrics
            .db_errors
            .get_or_create(&fleet_runtime::db::ErrorLabel::from(e))
            .inc();
        if !self.db_failing.swap(true, Ordering::Relaxed) {
            self.readiness.failing(POSTGRES, &why);
        }
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; try again shortly",
        )
        .retry_after(5)
    }

    fn db_ok(&self) {
        if self.db_failing.swap(false, Ordering::Relaxed) {
            self.readiness.recovered(POSTGRES);
        }
    }

    /// Runs a query, turning its error into the 503 answer.
    pub(crate) async fn query<T>(
        &self,
        q: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, Failure> {
        match q.await {
            Ok(v) => {
                self.db_ok();
                Ok(v)
            }
            Err(e) => Err(self.db_error(&e)),
        }
    }

    fn cache_control(&self) -> HeaderValue {
        HeaderValue::try_from(format!("public, max-age={}", self.cache_seconds))
            .expect("a valid header value")
    }
}

/// Path segments, with a malformed path answered as a JSON 400 like every other error.
pub struct Segments<T>(pub T);

impl<T, S> FromRequestParts<S> for Segments<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// Query parameters, likewise.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// `{platform}/{org}/{repo}` as a repository name, or the answer (`status`: 404 on the GET
/// paths, as the public API has it; 400 on a POST) that says what is wrong. Stricter than a
/// pasted name: each segment must be the name itself (no `.git`, no encoded slash).
fn repo_name(
    (platform, org, repo): &(String, String, String),
    status: StatusCode,
) -> Result<RepoName, Failure> {
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

/// How long a cache may keep the answer for a repository without a score: briefly while its
/// scan is on the way, so the score shows soon after it lands.
fn unscored_max_age(answer: &Unscored) -> u32 {
    if answer.coming() { 15 } else { 60 }
}

/// A repository a GET asked for: its row with a score, or what to answer without one.
enum Found {
    Scored(Box<Latest>),
    Unscored(Unscored),
}

/// Looks `repo` up for a GET (`badge`: without scorecard's output), queueing its scan when
/// the fleet has never scored it and discovery may.
async fn look_up(
    app: &App,
    repo: &RepoName,
    client: &Client,
    badge: bool,
) -> Result<Found, Failure> {
    let row = app
        .query(store::latest(&app.db, &repo.key(), !badge))
        .await?;
    let now = Utc::now();
    if let Some(r) = &row {
        app.discovery.note_asked(r, now);
    }
    match discovery::standing(row.as_ref(), now, app.lease) {
        Standing::Scored { rediscover } => {
            if rediscover {
                // Retired, and asked for again: scheduled again, the kept score served now,
                // whether or not the scan could be queued this time.
                if let Err(e) = discover(app, repo, true, client).await {
                    tracing::warn!(%repo, error = %e.message, "bringing back a retired repository failed");
                }
            }
            Ok(Found::Scored(Box::new(row.expect("a scored row"))))
        }
        Standing::Discoverable => Ok(Found::Unscored(
            discover(app, repo, row.is_some(), client).await?,
        )),
        Standing::Unscored(Unscored::Pending { since, .. }) => {
            let waits = app.discovery.waits(app.nats.get(), &app.topology).await;
            let answer = Unscored::Pending {
                since,
                retry: app.discovery.retry(waits),
            };
            app.count_discovery(&answer);
            Ok(Found::Unscored(answer))
        }
        Standing::Unscored(answer) => {
            app.count_discovery(&answer);
            Ok(Found::Unscored(answer))
        }
    }
}

/// Queues one scan of `repo` on the discovery lane if the database's `discover()` says so,
/// publishing inside its transaction; `known`: the repository has a row.
async fn discover(
    app: &App,
    repo: &RepoName,
    known: bool,
    client: &Client,
) -> Result<Unscored, Failure> {
    let answer = discover_once(app, repo, known, client).await?;
    app.count_discovery(&answer);
    Ok(answer)
}

async fn discover_once(
    app: &App,
    repo: &RepoName,
    known: bool,
    client: &Client,
) -> Result<Unscored, Failure> {
    if !app.discovery.settings.enabled {
        return Ok(if known {
            Unscored::NotScheduled
        } else {
            Unscored::Unknown
        });
    }
    // A client past its allowance never reaches the database's lock.
    if let Err(wait) = app.discovery.client_has_room(client.0) {
        return Ok(Unscored::ClientLimited { retry: wait });
    }
    let Some(js) = app.nats.get() else {
        return Err(busy("NATS is not connected yet; try again shortly"));
    };
    // Discoveries hold a connection and the fleet-wide lock while they publish: a few at a time
    // per replica, so a stalled NATS never takes the pool the reads need.
    let Ok(_turn) = tokio::time::timeout(DISCOVERY_WAIT, app.discovery.turns.acquire()).await
    else {
        return Err(busy(
            "many new repositories are being queued right now; try again shortly",
        ));
    };
    let decided = async {
        let mut tx = fleet_runtime::db::begin(&app.db.pool, DISCOVERY_TIMEOUTS).await?;
        let (outcome, retry_secs, checked): (String, i32, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT outcome, retry_secs, checked
                     FROM discover($1, $2, $3, $4::interval, $5, $6)",
        )
        .persistent(false)
        .bind(repo.key())
        .bind(repo.owner())
        .bind(repo.name())
        .bind(fleet_runtime::db::interval_text(app.lease))
        .bind(i32::try_from(app.discovery.settings.per_hour).unwrap_or(i32::MAX))
        .bind(discovery::DISCOVERED_PRIORITY)
        .fetch_one(&mut *tx)
        .await?;
        Ok::<_, sqlx::Error>((tx, outcome, retry_secs, checked))
    }
    .await;
    let (tx, outcome, retry_secs, checked) = match decided {
        Ok(decided) => {
            app.db_ok();
            decided
        }
        // Another discovery held the lock too long: busy, not a database outage.
        Err(e)
            if matches!(
                fleet_runtime::db::ErrorKind::of(&e),
                fleet_runtime::db::ErrorKind::LockTimeout
                    | fleet_runtime::db::ErrorKind::StatementTimeout
            ) =>
        {
            tracing::warn!(%repo, error = %fleet_runtime::db::describe(&e), "a discovery timed out");
            return Err(busy(
                "many new repositories are being queued right now; try again shortly",
            ));
        }
        Err(e) => return Err(app.db_error(&e)),
    };
    let retry = |waits| app.discovery.retry(waits);
    match outcome.as_str() {
        "queued" => {
            // Only a scan this request queues counts against its client: concurrent GETs of
            // one new repository cost one.
            if let Err(wait) = app.discovery.take_client(client.0) {
                drop(tx);
                return Ok(Unscored::ClientLimited { retry: wait });
            }
            let item = discovery::work_item(repo);
            // One attempt, bounded: the lock is held meanwhile, and the client asks again.
            let published = tokio::time::timeout(
                DISCOVERY_WAIT,
                fleet_runtime::publish::publish_item(js, app.topology.discovery_subject(), &item),
            )
            .await;
            if !matches!(published, Ok(Ok(()))) {
                // Dropping the transaction rolls it back: nothing says a scan is queued.
                drop(tx);
                let why = match published {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {DISCOVERY_WAIT:?}"),
                };
                tracing::warn!(%repo, error = %why, "publishing a discovery failed");
                return Err(busy(&format!(
                    "{repo} has not been scored yet, and its scan could not be queued; try again shortly"
                )));
            }
            app.query(tx.commit()).await?;
            tracing::info!(%repo, work_id = %item.id, "discovered: scan queued");
            let waits = app.discovery.waits(Some(js), &app.topology).await;
            Ok(Unscored::Queued {
                retry: retry(waits),
            })
        }
        other => {
            app.query(tx.commit()).await?;
            Ok(match other {
                "pending" => {
                    let waits = app.discovery.waits(Some(js), &app.topology).await;
                    Unscored::Pending {
                        since: None,
                        retry: retry(waits),
                    }
                }
                "missing" => Unscored::Missing { checked },
                "budget" => Unscored::OverBudget {
                    retry: Duration::from_secs(u64::try_from(retry_secs).unwrap_or(1)),
                },
                _ => Unscored::NotScheduled,
            })
        }
    }
}

/// How long a discovery waits for its turn, and for NATS to store its work item.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// A discovery gives up on the fleet-wide lock rather than queue behind a stalled holder.
const DISCOVERY_TIMEOUTS: fleet_runtime::db::Timeouts = fleet_runtime::db::Timeouts {
    statement: Duration::from_secs(5),
    lock: Duration::from_secs(3),
};

/// A 503 to try again shortly.
fn busy(message: &str) -> Failure {
    Failure::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(5)
}

#[derive(Debug, Deserialize)]
pub struct ProjectQuery {
    commit: Option<String>,
}

/// The latest result of a repository (or the one of `?commit=`), as the public API serves it.
/// A repository the fleet has never scored gets its scan queued (discovery) and a 404 that
/// says so, with `Retry-After`.
#[utoipa::path(
    get,
    path = "/projects/{platform}/{org}/{repo}",
    params(
        ("platform" = String, Path, pattern = r"^github\.com$", example = "github.com", description = "github.com"),
        ("org" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", example = "ossf", description = "The repository's owner (any case)"),
        ("repo" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "scorecard", description = "The repository's name (any case)"),
        ("commit" = Option<String>, Query, pattern = r"^[0-9a-fA-F]{40}$", description = "40 hex digits: the result for that commit, if kept"),
    ),
    responses(
        (status = 200, description = "scorecard's JSON v2 (an HTML view for browsers); Last-Modified is the scan's date",
            content((model::ScorecardResult = "application/json"), (String = "text/html"))),
        (status = 304, description = "Not modified (If-None-Match, or If-Modified-Since)"),
        (status = 400, description = "Invalid commit", body = ApiError),
        (status = 404, description = "Not a repository name; not scored yet (its scan queued, or refused for now: Retry-After); or no such repository on GitHub", body = ApiError),
        (status = 503, description = "The database or NATS is unavailable", body = ApiError),
    )
)]
pub async fn project(
    State(app): State<Shared>,
    Segments(path): Segments<(String, String, String)>,
    Params(query): Params<ProjectQuery>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let repo = repo_name(&path, StatusCode::NOT_FOUND)?;
    let commit = query.commit.map(|c| commit_hex(&c)).transpose()?;
    let page = wants_html(&headers) && commit.is_none();
    let latest = match look_up(&app, &repo, &client, false).await? {
        Found::Scored(latest) => latest,
        Found::Unscored(answer) if page => return Ok(unscored_page(&repo, &answer)),
        Found::Unscored(answer) => return Err(Failure::unscored(&repo, &answer)),
    };
    if page {
        return repo_page(&app, &latest).await;
    }
    let latest = *latest;
    let (Some(work_id), Some(raw)) = (latest.work_id, latest.raw_json) else {
        return Err(Failure::unscored(&repo, &Unscored::NotScheduled));
    };
    let (work_id, raw, modified) = match &commit {
        Some(c) if latest.commit_sha.as_deref() != Some(c.as_str()) => {
            let (work_id, raw) = app
                .query(store::at_commit(&app.db, latest.repo_id, c))
                .await?
                .ok_or_else(|| {
                    Failure::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{repo} has no result for commit {c} (results are kept {} days)",
                            app.raw_history_days
                        ),
                    )
                })?;
            (work_id, raw, None)
        }
        // Moved, not copied: the hot path's one large value.
        _ => (work_id, raw, latest.scored_at),
    };
    Ok(cached(
        &app,
        &headers,
        format!("\"{work_id}\""),
        modified,
        "application/json",
        raw,
    ))
}

fn commit_hex(commit: &str) -> Result<String, Failure> {
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(commit.to_ascii_lowercase())
    } else {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("commit {commit:?} is not a commit id: expected 40 hexadecimal digits"),
        ))
    }
}

fn unknown(repo: &RepoName) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!("{repo} is not known to this service"),
    )
}

/// The page of a repository without a score; it refreshes itself while its scan is on the way.
fn unscored_page(repo: &RepoName, answer: &Unscored) -> Response {
    let mut page = html_page(html::unscored(repo, answer));
    *page.status_mut() = answer.status();
    page.headers_mut()
        .insert(header::CACHE_CONTROL, max_age(unscored_max_age(answer)));
    if let Some(retry) = answer.retry_after() {
        page.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry.as_secs().max(1)),
        );
    }
    page
}

async fn repo_page(app: &App, latest: &Latest) -> Result<Response, Failure> {
    let checks = app.query(store::checks(&app.db, latest.repo_id)).await?;
    let scans = app
        .query(store::history(&app.db, latest.repo_id, None, PAGE_MAX))
        .await?;
    let failure = app.query(store::failure(&app.db, latest.repo_id)).await?;
    Ok(html_page(html::repo(
        latest,
        &checks,
        &scans,
        failure.as_ref(),
        app.interval,
        Utc::now(),
    )))
}

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
        ("platform" = String, Path, pattern = r"^github\.com$", example = "github.com", description = "github.com"),
        ("org" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", example = "ossf"),
        ("repo" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "scorecard"),
        ("style" = Option<Style>, Query, description = "The badge's shape"),
    ),
    responses(
        (status = 200, description = "The badge: the score, or grey \"pending\" (short max-age), \"repo not found\", \"unknown\"; Last-Modified is the scan's date", content_type = "image/svg+xml", body = String),
        (status = 304, description = "Not modified (If-None-Match, or If-Modified-Since)"),
        (status = 400, description = "Invalid style: a grey badge that says so", content_type = "image/svg+xml", body = String),
        (status = 404, description = "Not a repository path: a grey \"invalid repo path\" badge", content_type = "image/svg+xml", body = String),
        (status = 503, description = "The database is unavailable: a grey badge that says so", content_type = "image/svg+xml", body = String),
    )
)]
pub async fn badge_svg(
    State(app): State<Shared>,
    path: Result<Segments<(String, String, String)>, Failure>,
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
    let repo = match path.and_then(|Segments(p)| repo_name(&p, StatusCode::NOT_FOUND)) {
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
            if let Some(retry) = answer.retry_after() {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry.as_secs().max(1)),
                );
            }
            response
        }
        Err(failure) => badge_answer(failure.status, style, "unavailable", 30),
    }
}

/// A grey badge that says `value`, answered with `status`.
fn badge_answer(status: StatusCode, style: Style, value: &str, seconds: u32) -> Response {
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

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    before: Option<String>,
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

fn history_cursor(text: &str) -> Result<store::HistoryCursor, Failure> {
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
        ("platform" = String, Path, pattern = r"^github\.com$", example = "github.com", description = "github.com"),
        ("org" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", example = "ossf"),
        ("repo" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "scorecard"),
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
    Segments(path): Segments<(String, String, String)>,
    Params(query): Params<PageQuery>,
) -> Result<Response, Failure> {
    let repo = repo_name(&path, StatusCode::NOT_FOUND)?;
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

#[derive(Debug, Deserialize)]
pub struct RankQuery {
    min_score: Option<i16>,
    max_score: Option<i16>,
    limit: Option<i64>,
    after: Option<String>,
}

fn check_name(name: &str) -> Result<String, Failure> {
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

fn score_bound(name: &str, value: Option<i16>, default: i16) -> Result<i16, Failure> {
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

/// The fleet's numbers, counted at most every 30 s per replica.
async fn fleet_status(app: &App) -> Result<model::Status, Failure> {
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
        .query(fleet_runtime::status::status(&app.db.pool, app.interval))
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

/// A scan now, ahead of the schedule, on the manual lane.
#[utoipa::path(
    post,
    path = "/projects/{platform}/{org}/{repo}/scan",
    params(
        ("platform" = String, Path, pattern = r"^github\.com$", example = "github.com", description = "github.com"),
        ("org" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", example = "ossf"),
        ("repo" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,100}$", example = "scorecard"),
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
    Segments(path): Segments<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let Some(key) = bearer_key(&app, &headers) else {
        app.count_scan("unauthorized");
        return Ok(unauthorized());
    };
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
        &app.db.pool,
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

/// The API key the request's bearer token names, if it is one.
pub(crate) fn bearer_key<'a>(app: &'a App, headers: &HeaderMap) -> Option<&'a str> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    app.keys.check(presented.trim())
}

/// The 401 answer, which says how to authenticate.
pub(crate) fn unauthorized() -> Response {
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

impl App {
    /// A GET of a repository without a score, by how it was answered.
    fn count_discovery(&self, answer: &Unscored) {
        let label = match answer {
            Unscored::Queued { .. } => "queued",
            Unscored::Pending { .. } => "pending",
            Unscored::Missing { .. } => "missing",
            Unscored::Failed { .. } => "failed",
            Unscored::OverBudget { .. } => "over_budget",
            Unscored::ClientLimited { .. } => "client_limited",
            Unscored::NotScheduled => "not_scheduled",
            Unscored::Unknown => "unknown",
        };
        self.metrics
            .discovery
            .get_or_create(&crate::metrics::DiscoveryLabel::new(label))
            .inc();
    }

    /// One scan request, by how it ended.
    fn count_scan(&self, outcome: &str) {
        self.metrics
            .scan_requests
            .get_or_create(&crate::metrics::ScanLabel::new(outcome))
            .inc();
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
