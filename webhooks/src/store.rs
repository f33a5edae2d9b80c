//! The service's reads and writes of `webhook_subscriptions` and `webhook_deliveries`. Each
//! statement runs in a short transaction and unnamed (see `fleet_runtime::db`: a transaction
//! pooler may sit in front).

use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_runtime::db::{self, Timeouts};
use sqlx::PgPool;
use uuid::Uuid;

use crate::matching::Filters;
use crate::outcome::Ending;

/// Longest error text kept in the log: a reason, not a transcript.
const ERROR_CHARS: usize = 300;

/// Rows deleted per retention transaction: short, beside the service's own writes.
const PRUNE_ROWS: i64 = 10_000;

/// A subscription as the fan-out sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Uuid,
    pub filters: Filters,
}

/// The subscriptions whose scope takes `repo_key` (`github.com/owner/name`) or `owner_key`
/// (`github.com/owner`), or that have no scope, made before `at` (a subscription is not told
/// about changes from before it existed, however late the fan-out runs).
pub async fn in_scope(
    pool: &PgPool,
    timeouts: Timeouts,
    repo_key: &str,
    owner_key: &str,
    at: DateTime<Utc>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let mut tx = db::begin(pool, timeouts).await?;
    // Three index lookups OR'ed (the two GIN indexes and the partial index of the unscoped):
    // the work is the number of subscriptions that match, not the number there are.
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Option<f64>,
        bool,
        bool,
    )> = sqlx::query_as(
        "SELECT id, repos, owners, checks, below::float8, check_drops, any_change
             FROM webhook_subscriptions
             WHERE (repos @> ARRAY[$1]::text[] OR owners @> ARRAY[$2]::text[]
                    OR (repos = '{}' AND owners = '{}'))
               AND created_at <= $3",
    )
    .persistent(false)
    .bind(repo_key)
    .bind(owner_key)
    .bind(at)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, repos, owners, checks, below, check_drops, any_change)| Candidate {
                id,
                filters: Filters {
                    repos,
                    owners,
                    checks,
                    below,
                    check_drops,
                    any_change,
                },
            },
        )
        .collect())
}

/// What a delivery needs of its subscription.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub secret_salt: Vec<u8>,
    pub failing: bool,
}

/// Subscription `id`, or `None` once it is deleted.
pub async fn target(
    pool: &PgPool,
    timeouts: Timeouts,
    id: Uuid,
) -> Result<Option<Target>, sqlx::Error> {
    let mut tx = db::begin(pool, timeouts).await?;
    let row: Option<(String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT url, secret_salt, failing_since IS NOT NULL FROM webhook_subscriptions WHERE id = $1",
    )
    .persistent(false)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|(url, secret_salt, failing)| Target {
        url,
        secret_salt,
        failing,
    }))
}

/// One attempt for the log, and what it means for the subscription's failing mark.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub subscription: Uuid,
    pub webhook_id: &'a str,
    pub kind: &'static str,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub ending: &'a Ending,
    /// The subscription was marked failing when the attempt started.
    pub was_failing: bool,
}

/// Logs the attempt (numbered after the delivery's earlier ones) and sets or clears the
/// subscription's failing mark: dead marks it, a success clears it.
pub async fn record(pool: &PgPool, timeouts: Timeouts, r: &Record<'_>) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(pool, timeouts).await?;
    let error: Option<String> = r
        .error
        .as_deref()
        .map(|e| e.chars().take(ERROR_CHARS).collect());
    sqlx::query(
        "INSERT INTO webhook_deliveries
             (subscription_id, webhook_id, kind, attempt, status_code, error, outcome)
         SELECT $1, $2, $3, coalesce(max(attempt), 0) + 1, $4, $5, $6
         FROM webhook_deliveries WHERE webhook_id = $2",
    )
    .persistent(false)
    .bind(r.subscription)
    .bind(r.webhook_id)
    .bind(r.kind)
    .bind(r.status.map(i32::from))
    .bind(&error)
    .bind(r.ending.outcome())
    .execute(&mut *tx)
    .await?;
    match r.ending {
        Ending::Dead { reason } => {
            sqlx::query(
                "UPDATE webhook_subscriptions
                 SET failing_since = coalesce(failing_since, now()), failing_reason = $2
                 WHERE id = $1",
            )
            .persistent(false)
            .bind(r.subscription)
            .bind(reason.chars().take(ERROR_CHARS).collect::<String>())
            .execute(&mut *tx)
            .await?;
        }
        Ending::Delivered if r.was_failing => {
            sqlx::query(
                "UPDATE webhook_subscriptions SET failing_since = NULL, failing_reason = NULL
                 WHERE id = $1",
            )
            .persistent(false)
            .bind(r.subscription)
            .execute(&mut *tx)
            .await?;
        }
        _ => {}
    }
    tx.commit().await
}

/// Deletes log rows older than `days`, in short transactions; how many.
pub async fn prune(pool: &PgPool, timeouts: Timeouts, days: u32) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let mut tx = db::begin(pool, timeouts).await?;
        let n = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM webhook_deliveries
                 WHERE at < now() - make_interval(days => $1) LIMIT $2))",
        )
        .persistent(false)
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .bind(PRUNE_ROWS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        deleted += n;
        if n < PRUNE_ROWS as u64 {
            return Ok(deleted);
        }
    }
}

/// How often the log's retention runs: rows age by days.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
