//! Webhook subscriptions, managed by API-key holders: each belongs to the key's name (never
//! the key), and only its owner sees it. The webhooks service delivers them; this module makes,
//! lists and deletes them, queues a test ping, and reads the delivery log.
//!
//! A new subscription's signing secret is derived from the master key the webhooks service
//! signs with (`fleet_runtime::webhook`) and shown in the creation's answer only. Without a
//! master key every route here answers 503 and the rest of the api serves as usual. Neither
//! secrets nor subscription URLs (which may carry a token) are logged or echoed in an error.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use fleet_proto::RepoName;
use fleet_proto::repo::RepoNameError;
use fleet_runtime::db::Db;
use fleet_runtime::outbound::Policy;
use fleet_runtime::webhook::{MasterKey, SigningKeyError};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::WebhookArgs;
use crate::model::ApiError;
use crate::routes::{self, ApiKey, App, Failure, Params, Segments};

/// Longest URL accepted: more than any real endpoint needs, short enough for every log row.
const URL_MAX: usize = 2048;
/// Most entries of each filter list: a large watch list, and still one small row.
const LIST_MAX: usize = 1000;
/// How long a URL's host may take to resolve before the subscription is refused: a person
/// is waiting for the answer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the webhook routes need beyond the api's own state.
#[derive(Debug)]
pub struct Webhooks {
    /// `None`: webhooks are not configured here and every route answers 503.
    master: Option<MasterKey>,
    policy: Policy,
    per_owner: u32,
}

impl Webhooks {
    /// From the settings; says once, in the log, when webhooks are off.
    pub fn new(args: &WebhookArgs) -> anyhow::Result<Self> {
        // The key's Secret is optional for the api (deploy/ mounts it so): without it the api
        // serves everything but /webhooks, so adding webhooks never takes the scores down.
        let master = match args.signing.load() {
            Err(SigningKeyError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            loaded => loaded?,
        };
        if master.is_none() {
            tracing::warn!(
                "webhooks are not configured (no WEBHOOK_SIGNING_KEY_FILE or WEBHOOK_SIGNING_KEY): /webhooks answers 503"
            );
        }
        Ok(Self {
            master,
            policy: Policy::new(&args.outbound)?,
            per_owner: args.webhooks_per_owner,
        })
    }
}

/// The routes, merged into the api's router.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).delete(delete))
        .route("/webhooks/{id}/ping", post(ping))
        .route("/webhooks/{id}/deliveries", get(deliveries))
}

// ---- What the routes take and answer.

/// A new subscription. A repository is in scope when listed in `repos` or its owner in
/// `owners` (both empty: every repository); then any trigger set makes a delivery.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: https (a public address).
    #[schema(max_length = 2048, example = "https://hooks.example.com/scorecard")]
    pub url: String,
    /// Repositories, `github.com/OWNER/NAME`.
    #[serde(default)]
    #[schema(max_items = 1000, example = json!(["github.com/ossf/scorecard"]))]
    pub repos: Vec<String>,
    /// Whole owners (organisations or users), `github.com/OWNER` or `OWNER`.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub owners: Vec<String>,
    /// Checks whose drop `check_drops` reports (scorecard's names, any case; only with it).
    #[serde(default)]
    #[schema(max_items = 1000, example = json!(["Code-Review"]))]
    pub checks: Vec<String>,
    /// Trigger: the aggregate score drops below this.
    #[schema(minimum = 0, maximum = 10)]
    pub below: Option<f64>,
    /// Trigger: a check's score drops.
    #[serde(default)]
    pub check_drops: bool,
    /// Trigger: any change of the score or a check.
    #[serde(default)]
    pub any_change: bool,
}

/// A subscription, as its owner sees it (never with its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// Lower-cased `github.com/owner/name`.
    pub repos: Vec<String>,
    /// Lower-cased `github.com/owner`.
    pub owners: Vec<String>,
    pub checks: Vec<String>,
    pub below: Option<f64>,
    pub check_drops: bool,
    pub any_change: bool,
    pub created_at: DateTime<Utc>,
    /// Since when deliveries have been dead-lettered (null: not failing).
    pub failing_since: Option<DateTime<Utc>>,
    pub failing_reason: Option<String>,
}

/// A new subscription and its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The Standard Webhooks secret (`whsec_…`) that verifies its deliveries. Not shown again.
    pub secret: String,
}

/// The owner's subscriptions, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// A queued test delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct PingQueued {
    /// Its `webhook-id` header.
    pub webhook_id: String,
}

/// One page of a subscription's delivery attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryLog {
    pub deliveries: Vec<DeliveryAttempt>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryAttempt {
    pub webhook_id: String,
    /// `score_changed` or `ping`.
    pub kind: String,
    /// 1 for the first attempt of this `webhook_id`.
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// `delivered`, `retrying` or `dead`.
    pub outcome: String,
}

#[derive(Debug, Deserialize)]
pub struct DeliveryQuery {
    limit: Option<i64>,
    before: Option<String>,
}

// ---- Deciding what is stored (pure).

/// A request's filters as they are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    pub repos: Vec<String>,
    pub owners: Vec<String>,
    pub checks: Vec<String>,
    pub below: Option<f64>,
    pub check_drops: bool,
    pub any_change: bool,
}

/// The filters of `request`, or a sentence saying what is wrong with them.
pub fn filters(request: &CreateWebhook) -> Result<Filters, String> {
    for (name, list) in [
        ("repos", &request.repos),
        ("owners", &request.owners),
        ("checks", &request.checks),
    ] {
        if list.len() > LIST_MAX {
            return Err(format!(
                "{name} has {} entries: at most {LIST_MAX}",
                list.len()
            ));
        }
    }
    let repos = request
        .repos
        .iter()
        .map(|r| {
            RepoName::parse(r)
                .map(|r| r.key())
                .map_err(|e| format!("repos: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let owners = request
        .owners
        .iter()
        .map(|o| owner_key(o))
        .collect::<Result<Vec<_>, _>>()?;
    let checks = request
        .checks
        .iter()
        .map(|c| check(c))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(below) = request.below
        && !(0.0..=10.0).contains(&below)
    {
        return Err(format!("below {below} is out of range: 0 to 10"));
    }
    if !checks.is_empty() && !request.check_drops {
        return Err(
            "checks narrow check_drops to the checks named; ask for check_drops too, or leave \
             checks out"
                .into(),
        );
    }
    if request.below.is_none() && !request.check_drops && !request.any_change {
        return Err(
            "a subscription needs at least one trigger: any_change, below (a score) or check_drops"
                .into(),
        );
    }
    Ok(Filters {
        repos: sorted(repos),
        owners: sorted(owners),
        checks: sorted(checks),
        below: request.below,
        check_drops: request.check_drops,
        any_change: request.any_change,
    })
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// `github.com/OWNER` or `OWNER` as lower-cased `github.com/owner`, checked as the
/// repository name parser checks an owner.
fn owner_key(given: &str) -> Result<String, String> {
    let trimmed = given.trim().trim_end_matches('/');
    let owner = trimmed
        .get(..fleet_proto::repo::GITHUB.len() + 1)
        .filter(|head| head.eq_ignore_ascii_case("github.com/"))
        .map_or(trimmed, |head| &trimmed[head.len()..]);
    let shape = || format!("owners: {given:?} is not an owner: expected github.com/OWNER or OWNER");
    if owner.is_empty() || owner.contains('/') {
        return Err(shape());
    }
    match RepoName::parse(&format!("github.com/{owner}/x")) {
        Ok(parsed) => Ok(format!(
            "github.com/{}",
            parsed.owner().to_ascii_lowercase()
        )),
        Err(RepoNameError::Owner { why, .. }) => {
            Err(format!("owners: owner {owner:?} is invalid: {why}"))
        }
        Err(_) => Err(shape()),
    }
}

/// A check as scorecard spells it.
fn check(given: &str) -> Result<String, String> {
    fleet_proto::scorecard::CHECKS
        .iter()
        .find(|c| c.eq_ignore_ascii_case(given.trim()))
        .map(|c| (*c).to_owned())
        .ok_or_else(|| {
            format!(
                "checks: {given:?} is not a scorecard check (one of {})",
                fleet_proto::scorecard::CHECKS.join(", ")
            )
        })
}

/// `url` as it may be stored, or why not: the shared outbound policy, then its host resolved
/// (a name whose every address is refused would never be delivered to). The deliverer checks
/// the addresses again at each delivery; this is for the person making the subscription.
async fn check_url(policy: &Policy, url: &str) -> Result<String, String> {
    if url.len() > URL_MAX {
        return Err(format!(
            "url is {} characters: at most {URL_MAX}",
            url.len()
        ));
    }
    let parsed = policy
        .check_url(url)
        .map_err(|e| format!("url refused: {e}"))?;
    let Some(host) = parsed.domain() else {
        // A literal address, already judged.
        return Ok(parsed.to_string());
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<_> =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            Ok(Err(_)) => return Err(format!("url refused: its host {host} does not resolve")),
            Err(_) => {
                return Err(format!(
                    "url refused: its host {host} did not resolve within {} s",
                    RESOLVE_TIMEOUT.as_secs()
                ));
            }
        };
    let refused: Vec<String> = addrs
        .iter()
        .filter_map(|a| policy.check_addr(*a).err())
        .map(|e| e.to_string())
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "url refused: its host {host} resolves to no address"
        ));
    }
    if refused.len() == addrs.len() {
        return Err(format!(
            "url refused: every address its host {host} resolves to is one webhooks may not reach ({})",
            refused.join("; ")
        ));
    }
    Ok(parsed.to_string())
}

// ---- Queries (as `scorecard_api`: SELECT on the tables, the 0009 functions to write).

const COLUMNS: &str = "id, url, repos, owners, checks, below::float8 AS below, check_drops,
     any_change, created_at, failing_since, failing_reason";

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: Uuid,
    url: String,
    repos: Vec<String>,
    owners: Vec<String>,
    checks: Vec<String>,
    below: Option<f64>,
    check_drops: bool,
    any_change: bool,
    created_at: DateTime<Utc>,
    failing_since: Option<DateTime<Utc>>,
    failing_reason: Option<String>,
}

impl From<Row> for Webhook {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            url: r.url,
            repos: r.repos,
            owners: r.owners,
            checks: r.checks,
            below: r.below,
            check_drops: r.check_drops,
            any_change: r.any_change,
            created_at: r.created_at,
            failing_since: r.failing_since,
            failing_reason: r.failing_reason,
        }
    }
}

/// What creating a subscription came to.
enum Made {
    Created(Row, Vec<u8>),
    /// The owner has this many already.
    Full(i64),
}

/// Creates the subscription unless its owner has `cap` already (two replicas racing may let
/// an owner past the cap by one each: a bound on abuse, not an invariant).
async fn insert(
    db: &Db,
    owner: &str,
    url: &str,
    f: &Filters,
    cap: u32,
) -> Result<Made, sqlx::Error> {
    let mut tx = db.begin().await?;
    let have: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_subscriptions WHERE owner = $1")
            .persistent(db.prepares())
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
    if have >= i64::from(cap) {
        return Ok(Made::Full(have));
    }
    let (id, salt): (Uuid, Vec<u8>) = sqlx::query_as(
        "SELECT id, secret_salt
         FROM create_webhook_subscription($1, $2, $3, $4, $5, $6::numeric, $7, $8)",
    )
    .persistent(db.prepares())
    .bind(owner)
    .bind(url)
    .bind(&f.repos)
    .bind(&f.owners)
    .bind(&f.checks)
    .bind(f.below)
    .bind(f.check_drops)
    .bind(f.any_change)
    .fetch_one(&mut *tx)
    .await?;
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions WHERE id = $1"
    )))
    .persistent(db.prepares())
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Made::Created(row, salt))
}

async fn owned(db: &Db, owner: &str, id: Option<Uuid>) -> Result<Vec<Row>, sqlx::Error> {
    let mut c = db.conn().await?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_subscriptions
         WHERE owner = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id"
    )))
    .persistent(db.prepares())
    .bind(owner)
    .bind(id)
    .fetch_all(&mut *c)
    .await?;
    c.done().await?;
    Ok(rows)
}

async fn remove(db: &Db, owner: &str, id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let gone: bool = sqlx::query_scalar("SELECT delete_webhook_subscription($1, $2)")
        .persistent(db.prepares())
        .bind(id)
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(gone)
}

/// Where a page of the log starts: after this attempt, in (at, webhook id, attempt) order.
#[derive(Debug, Clone, PartialEq)]
struct LogCursor {
    at: DateTime<Utc>,
    attempt: i32,
    webhook_id: String,
}

impl LogCursor {
    fn of(a: &DeliveryAttempt) -> String {
        format!("{}_{}_{}", a.at.timestamp_micros(), a.attempt, a.webhook_id)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '_');
        let at = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let attempt = parts.next()?.parse().ok()?;
        let webhook_id = parts.next()?;
        (!webhook_id.is_empty() && webhook_id.len() <= 64).then(|| Self {
            at,
            attempt,
            webhook_id: webhook_id.to_owned(),
        })
    }
}

/// A page of the log, newest first (the index on (subscription_id, at DESC)).
async fn log_page(
    db: &Db,
    id: Uuid,
    before: Option<&LogCursor>,
    limit: i64,
) -> Result<Vec<DeliveryAttempt>, sqlx::Error> {
    let mut c = db.conn().await?;
    let rows = sqlx::query_as(
        "SELECT webhook_id, kind, attempt, at, status_code, error, outcome
         FROM webhook_deliveries
         WHERE subscription_id = $1
           AND ($2::timestamptz IS NULL OR (at, webhook_id, attempt) < ($2, $3, $4))
         ORDER BY at DESC, webhook_id DESC, attempt DESC
         LIMIT $5",
    )
    .persistent(db.prepares())
    .bind(id)
    .bind(before.map(|b| b.at))
    .bind(before.map(|b| b.webhook_id.as_str()))
    .bind(before.map(|b| b.attempt))
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    c.done().await?;
    Ok(rows)
}

// ---- Handlers.

/// The master key subscriptions' secrets are sealed with, or 503 without one.
fn master(app: &App) -> Result<&MasterKey, Failure> {
    app.webhooks.master.as_ref().ok_or_else(|| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks are not configured on this api",
        )
    })
}

fn not_found(id: Uuid) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!("no webhook subscription {id} of this key"),
    )
}

fn bad_request(message: String) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, message)
}

/// Subscription `id` if `owner` owns it.
async fn find(app: &App, owner: &str, id: Uuid) -> Result<Row, Failure> {
    app.query(owned(&app.db, owner, Some(id)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(id))
}

/// Subscribes to score changes; the answer holds the signing secret, shown only this once.
#[utoipa::path(
    post,
    path = "/webhooks",
    request_body = CreateWebhook,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `secret` is not shown again", body = CreatedWebhook,
         headers(("Location" = String, description = "The subscription's path"))),
        (status = 400, description = "A URL, filter or trigger that cannot be used, said in a sentence", body = ApiError),
        (status = 401, description = "No valid key", body = ApiError),
        (status = 409, description = "This key's owner has API_WEBHOOKS_PER_OWNER subscriptions already", body = ApiError),
        (status = 503, description = "Webhooks are not configured, or the database is unavailable", body = ApiError),
    )
)]
pub async fn create(
    State(app): State<Arc<App>>,
    ApiKey(owner): ApiKey,
    body: Bytes,
) -> Result<Response, Failure> {
    let master = master(&app)?;
    // serde's message names the field and the position, never a value of the URL's.
    let request: CreateWebhook = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("the body is not a subscription: {e}")))?;
    let filters = filters(&request).map_err(bad_request)?;
    let url = check_url(&app.webhooks.policy, &request.url)
        .await
        .map_err(bad_request)?;
    let cap = app.webhooks.per_owner;
    let (row, salt) = match app
        .query(insert(&app.db, &owner, &url, &filters, cap))
        .await?
    {
        Made::Created(row, salt) => (row, salt),
        Made::Full(have) => {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!(
                    "key {owner} has {have} webhook subscriptions, the most one owner may have \
                     (API_WEBHOOKS_PER_OWNER = {cap}); delete one first"
                ),
            ));
        }
    };
    let secret = master.subscription_secret(row.id, &salt).whsec();
    tracing::info!(owner, subscription = %row.id, "webhook subscription created");
    let location = HeaderValue::try_from(format!("/webhooks/{}", row.id))
        .expect("a uuid path is a header value");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(CreatedWebhook {
            webhook: row.into(),
            secret: secret.expose().to_owned(),
        }),
    )
        .into_response())
}

/// The key's subscriptions, oldest first, without their secrets.
#[utoipa::path(
    get,
    path = "/webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key owner's subscriptions", body = WebhookList),
        (status = 401, description = "No valid key", body = ApiError),
        (status = 503, description = "Webhooks are not configured, or the database is unavailable", body = ApiError),
    )
)]
pub async fn list(State(app): State<Arc<App>>, ApiKey(owner): ApiKey) -> Result<Response, Failure> {
    master(&app)?;
    let rows = app.query(owned(&app.db, &owner, None)).await?;
    Ok(axum::Json(WebhookList {
        webhooks: rows.into_iter().map(Webhook::from).collect(),
    })
    .into_response())
}

/// One of the key's subscriptions, without its secret.
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    params(("id" = Uuid, Path, description = "The subscription")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscription", body = Webhook),
        (status = 400, description = "Not a subscription id", body = ApiError),
        (status = 401, description = "No valid key", body = ApiError),
        (status = 404, description = "No such subscription of this key", body = ApiError),
        (status = 503, description = "Webhooks are not configured, or the database is unavailable", body = ApiError),
    )
)]
pub async fn show(
    State(app): State<Arc<App>>,
    ApiKey(owner): ApiKey,
    Segments(id): Segments<Uuid>,
) -> Result<Response, Failure> {
    master(&app)?;
    let row = find(&app, &owner, id).await?;
    Ok(axum::Json(Webhook::from(row)).into_response())
}

/// Deletes one of the key's subscriptions and its log; nothing more is delivered to it.
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    params(("id" = Uuid, Path, description = "The subscription")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a subscription id", body = ApiError),
        (status = 401, description = "No valid key", body = ApiError),
        (status = 404, description = "No such subscription of this key", body = ApiError),
        (status = 503, description = "Webhooks are not configured, or the database is unavailable", body = ApiError),
    )
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    ApiKey(owner): ApiKey,
    Segments(id): Segments<Uuid>,
) -> Result<Response, Failure> {
    master(&app)?;
    if !app.query(remove(&app.db, &owner, id)).await? {
        return Err(not_found(id));
    }
    tracing::info!(owner, subscription = %id, "webhook subscription deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Queues a test delivery (`type` `ping`) to one of the key's subscriptions.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/ping",
    params(("id" = Uuid, Path, description = "The subscription")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued; the delivery log shows how it went", body = PingQueued),
        (status = 400, description = "Not a subscription id", body = ApiError),
        (status = 401, description = "No valid key", body = ApiError),
        (status = 404, description = "No such subscription of this key", body = ApiError),
        (status = 503, description = "Webhooks are not configured, or NATS or the database is unavailable", body = ApiError),
    )
)]
pub async fn ping(
    State(app): State<Arc<App>>,
    ApiKey(owner): ApiKey,
    Segments(id): Segments<Uuid>,
) -> Result<Response, Failure> {
    master(&app)?;
    find(&app, &owner, id).await?;
    let unavailable = |what: &str| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the ping could not be queued: {what}; try again shortly"),
        )
        .retry_after(5)
    };
    let Some(js) = app.nats.get() else {
        return Err(unavailable("NATS is not connected yet"));
    };
    let delivery = fleet_runtime::webhook::ping(id);
    fleet_runtime::publish::publish_once(
        js,
        app.topology.webhook_deliver_subject(),
        &delivery.webhook_id,
        delivery.encode_to_vec().into(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(owner, subscription = %id, error = %e, "queueing a webhook ping failed");
        unavailable("NATS refused it")
    })?;
    tracing::info!(owner, subscription = %id, webhook_id = %delivery.webhook_id, "webhook ping queued");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(PingQueued {
            webhook_id: delivery.webhook_id,
        }),
    )
        .into_response())
}

/// Every delivery attempt of one of the key's subscriptions, newest first, a page at a time
/// (kept for the webhooks service's WEBHOOKS_LOG_DAYS).
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    params(
        ("id" = Uuid, Path, description = "The subscription"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Attempts a page (30)"),
        ("before" = Option<String>, Query, description = "The previous page's `next`"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of attempts", body = DeliveryLog),
        (status = 400, description = "Not a subscription id, or an invalid limit or cursor", body = ApiError),
        (status = 401, description = "No valid key", body = ApiError),
        (status = 404, description = "No such subscription of this key", body = ApiError),
        (status = 503, description = "Webhooks are not configured, or the database is unavailable", body = ApiError),
    )
)]
pub async fn deliveries(
    State(app): State<Arc<App>>,
    ApiKey(owner): ApiKey,
    Segments(id): Segments<Uuid>,
    Params(query): Params<DeliveryQuery>,
) -> Result<Response, Failure> {
    master(&app)?;
    let limit = routes::page_limit(query.limit)?;
    let before = query
        .before
        .as_deref()
        .map(|t| LogCursor::parse(t).ok_or_else(|| routes::bad_cursor("before")))
        .transpose()?;
    find(&app, &owner, id).await?;
    let mut rows = app
        .query(log_page(&app.db, id, before.as_ref(), limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last().map(LogCursor::of)).flatten();
    Ok(axum::Json(DeliveryLog {
        deliveries: rows,
        next,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(json: serde_json::Value) -> CreateWebhook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn filters_are_stored_as_the_deliverer_matches_them() {
        let f = filters(&ask(serde_json::json!({
            "url": "https://x.example/",
            "repos": ["https://github.com/Acme/Anvil.git", "github.com/acme/anvil"],
            "owners": ["Acme", "github.com/Other/"],
            "checks": ["code-review", "SAST"],
            "check_drops": true,
            "below": 4.5,
        })))
        .unwrap();
        assert_eq!(f.repos, ["github.com/acme/anvil"], "keyed, once");
        assert_eq!(f.owners, ["github.com/acme", "github.com/other"]);
        assert_eq!(f.checks, ["Code-Review", "SAST"]);
        assert_eq!(
            (f.below, f.check_drops, f.any_change),
            (Some(4.5), true, false)
        );
    }

    #[test]
    fn each_bad_filter_is_a_sentence_naming_what_is_wrong() {
        for (json, says) in [
            (
                serde_json::json!({"repos": ["github.com/a"]}),
                "\"github.com/a\" is not a repository",
            ),
            (
                serde_json::json!({"owners": ["a/b"]}),
                "\"a/b\" is not an owner",
            ),
            (
                serde_json::json!({"owners": ["-a"]}),
                "owner \"-a\" is invalid",
            ),
            (
                serde_json::json!({"checks": ["Nope"]}),
                "\"Nope\" is not a scorecard check",
            ),
            (
                serde_json::json!({"checks": ["SAST"], "below": 3}),
                "checks narrow check_drops",
            ),
            (serde_json::json!({"below": -1}), "below -1 is out of range"),
            (serde_json::json!({"below": null}), "at least one trigger"),
        ] {
            let mut body = serde_json::json!({"url": "https://x.example/", "any_change": true});
            for (k, v) in json.as_object().unwrap() {
                body[k] = v.clone();
            }
            if says == "at least one trigger" {
                body.as_object_mut().unwrap().remove("any_change");
            }
            let e = filters(&ask(body.clone())).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
        let many = serde_json::json!({"url": "u", "any_change": true,
            "owners": vec!["a"; LIST_MAX + 1]});
        assert!(filters(&ask(many)).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_log_cursor_reads_back_what_it_wrote() {
        let a = DeliveryAttempt {
            webhook_id: "msg_ab_cd".into(),
            kind: "ping".into(),
            attempt: 3,
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            status_code: None,
            error: None,
            outcome: "delivered".into(),
        };
        let cursor = LogCursor::parse(&LogCursor::of(&a)).unwrap();
        assert_eq!(
            cursor,
            LogCursor {
                at: a.at,
                attempt: 3,
                webhook_id: "msg_ab_cd".into()
            }
        );
        for bad in ["", "x", "1_2", "1_x_msg", "1_2_"] {
            assert!(LogCursor::parse(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_url_is_refused_with_its_reason_and_never_its_path() {
        let strict = Policy::default();
        for (url, says) in [
            ("http://1.1.1.1/t0ken", "scheme http is not allowed"),
            ("https://127.0.0.1/t0ken", "127.0.0.1 is loopback"),
            (
                "https://localhost/t0ken",
                "every address its host localhost resolves to",
            ),
            ("https://no-such-host.invalid/t0ken", "resolve"),
        ] {
            let e = check_url(&strict, url).await.unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("t0ken"), "{e}");
        }
        assert_eq!(
            check_url(&strict, "https://1.1.1.1/hook").await.unwrap(),
            "https://1.1.1.1/hook"
        );
    }
}
