//! The fleet at a glance: what `sink status` prints and the api's `/status` serves.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub repos: i64,
    pub enabled: i64,
    pub fresh: i64,
    pub due_now: i64,
    pub in_flight: i64,
    pub never_scored: i64,
    pub oldest_overdue: Option<DateTime<Utc>>,
    pub failed_by_class: Vec<(String, i64)>,
}

pub async fn status(pool: &PgPool, interval: TimeDelta) -> Result<Status, sqlx::Error> {
    // One transaction: a consistent view, and one server behind a transaction pooler.
    let mut tx = pool.begin().await?;
    let row: (i64, i64, i64, i64, i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE r.enabled),
                count(*) FILTER (WHERE r.last_scored_at >= now() - $1::interval),
                count(*) FILTER (WHERE r.enabled AND r.next_due_at <= now()),
                count(*) FILTER (WHERE r.last_enqueued_at IS NOT NULL
                                   AND r.last_enqueued_at > coalesce(r.last_scored_at, '-infinity')
                                   AND r.last_enqueued_at > coalesce(f.failed_at, '-infinity')),
                count(*) FILTER (WHERE r.last_scored_at IS NULL),
                min(r.next_due_at) FILTER (WHERE r.enabled AND r.next_due_at <= now())
         FROM repos r LEFT JOIN work_failures f ON f.repo_id = r.id",
    )
    .persistent(false)
    .bind(interval_text(interval))
    .fetch_one(&mut *tx)
    .await?;
    let failed_by_class = sqlx::query_as(
        "SELECT class, count(*) FROM work_failures GROUP BY class ORDER BY count(*) DESC, class",
    )
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Status {
        repos: row.0,
        enabled: row.1,
        fresh: row.2,
        due_now: row.3,
        in_flight: row.4,
        never_scored: row.5,
        oldest_overdue: row.6,
        failed_by_class,
    })
}

fn interval_text(interval: TimeDelta) -> String {
    format!("{} seconds", interval.num_seconds())
}
