//! Claiming due repositories. The most critical tier first (`repos.priority`, higher first),
//! within a tier the oldest due: when more is due than the fleet scans, what matters most is
//! fresh first. Each tier is one statement that picks its oldest due rows no other producer
//! holds (`FOR UPDATE SKIP LOCKED`) and pushes their due time forward by a lease, so two
//! replicas never claim the same repository, and a repository whose result never comes back
//! is due again once the lease runs out. The tiers with due work are found by one descent
//! each of the `(priority DESC, next_due_at)` index, so a claim costs the same at any table
//! size (and priorities should stay a few tiers).
//!
//! A claim whose publish the server did not confirm (it may have stored it all the same) is
//! handed back with its work id ([`release`], `repos.pending_work_id`), and the next claim of
//! that repository publishes the same id: the server's dedup, the workers' scan register and
//! Job adoption see one work item, never a second scan under a fresh id. The sink clears the id
//! with the result.

use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_runtime::db::{self, Timeouts};
use sqlx::{PgConnection, PgPool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub repo: RepoName,
    pub priority: i32,
    /// When it was due.
    pub was_due: DateTime<Utc>,
    /// The work id of an earlier claim whose publish was not confirmed: published again as is.
    pub pending_work_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    owner: String,
    name: String,
    priority: i32,
    was_due: DateTime<Utc>,
    pending_work_id: Option<String>,
}

/// The priority tiers that have due repositories, highest first: a walk down the
/// `(priority DESC, next_due_at)` index, one descent per tier, so its cost is the number of
/// tiers and not of repositories (see migration 0006 for what one statement would cost).
const DUE_TIERS: &str = "WITH RECURSIVE tiers(p) AS (
         SELECT max(priority) FROM repos WHERE enabled
         UNION ALL
         SELECT (SELECT max(priority) FROM repos WHERE enabled AND priority < t.p)
         FROM tiers t WHERE t.p IS NOT NULL
     )
     SELECT p FROM tiers
     WHERE p IS NOT NULL AND EXISTS (
         SELECT 1 FROM repos WHERE enabled AND priority = tiers.p AND next_due_at <= now()
     )
     ORDER BY p DESC";

/// Claims up to `limit` due repositories: the highest priority first, oldest due first within
/// a priority.
pub async fn claim(
    pool: &PgPool,
    timeouts: Timeouts,
    limit: i64,
    lease: TimeDelta,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut tx = db::begin(pool, timeouts).await?;
    let tiers: Vec<i32> = sqlx::query_scalar(DUE_TIERS)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?;
    let mut rows: Vec<Row> = Vec::new();
    for tier in tiers {
        let left = limit - i64::try_from(rows.len()).unwrap_or(i64::MAX);
        if left <= 0 {
            break;
        }
        rows.extend(claim_tier(&mut tx, tier, left, lease).await?);
    }
    tx.commit().await?;
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .filter_map(|r| {
            // The table's CHECK keeps names valid; a row edited by hand into nonsense is
            // skipped (and logged) rather than published to poison the queue.
            match RepoName::parse(&format!("github.com/{}/{}", r.owner, r.name)) {
                Ok(repo) => Some(Claimed {
                    id: r.id,
                    repo,
                    priority: r.priority,
                    was_due: r.was_due,
                    pending_work_id: r.pending_work_id,
                }),
                Err(e) => {
                    tracing::error!(repo_id = r.id, error = %e, "invalid repository row skipped");
                    None
                }
            }
        })
        .collect();
    claimed.sort_by_key(|c| (std::cmp::Reverse(c.priority), c.was_due, c.id));
    Ok(claimed)
}

/// Claims up to `limit` of the oldest due repositories of one priority.
async fn claim_tier(
    tx: &mut PgConnection,
    priority: i32,
    limit: i64,
    lease: TimeDelta,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT id, next_due_at, pending_work_id FROM repos
             WHERE enabled AND priority = $3 AND next_due_at <= now()
             ORDER BY next_due_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE repos r SET next_due_at = now() + $2::interval, last_enqueued_at = now(),
             pending_work_id = NULL
         FROM due WHERE r.id = due.id
         RETURNING r.id, r.owner, r.name, r.priority, due.next_due_at AS was_due,
             due.pending_work_id",
    )
    .persistent(false)
    .bind(limit)
    .bind(db::interval_text(lease))
    .bind(priority)
    .fetch_all(tx)
    .await
}

/// Hands claimed repositories back (their publish was not confirmed): due again at `at`,
/// remembering the work id each was published under, so the next claim publishes it again.
pub async fn release(
    pool: &PgPool,
    timeouts: Timeouts,
    released: &[(i64, String)],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(pool, timeouts).await?;
    let (ids, work_ids): (Vec<i64>, Vec<String>) = released.iter().cloned().unzip();
    // Rows locked in id order, as the sink locks them, so the two cannot deadlock.
    sqlx::query(
        "WITH locked AS (SELECT id FROM repos WHERE id = ANY($1) ORDER BY id FOR UPDATE)
         UPDATE repos r SET next_due_at = $3, pending_work_id = u.work_id
         FROM locked JOIN UNNEST($1::int8[], $2::text[]) AS u(id, work_id) ON u.id = locked.id
         WHERE r.id = locked.id",
    )
    .persistent(false)
    .bind(&ids)
    .bind(&work_ids)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// How many repositories are due and since when the oldest: the freshness operators watch.
pub async fn backlog(
    pool: &PgPool,
    timeouts: Timeouts,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let mut tx = db::begin(pool, timeouts).await?;
    let counted = sqlx::query_as(
        "SELECT count(*), min(next_due_at) FROM repos WHERE enabled AND next_due_at <= now()",
    )
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(counted)
}
