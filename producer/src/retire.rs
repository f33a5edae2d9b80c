//! Retiring discovered repositories nobody asks for. A GET of a repository the fleet has never
//! scored adds it (`discovered`, migration 0008), and each later GET refreshes its
//! `last_asked_at` (at most daily); one nobody has asked for in a while is retired: disabled,
//! with `retired_at` saying the producer did it, so a GET or an import brings it back. Its
//! scores stay. A repository an operator disabled (`enabled` alone) is never touched. A sweep
//! retires [`RETIRE_ROWS`] a statement along its own partial index.

use chrono::TimeDelta;
use fleet_runtime::db::{self, Timeouts};
use sqlx::PgPool;

/// Rows retired per statement: a short transaction beside the claims and the sink's writes,
/// and a backlog of 100,000 (a first sweep after retirement was off) is 100 of them.
pub const RETIRE_ROWS: i64 = 1000;

/// Retires up to `limit` discovered repositories last asked for (or, never asked for, added)
/// more than `older_than` ago, oldest first. Returns how many.
///
/// The WHERE is the partial index `repos_discovered_asked_idx`'s predicate and expression
/// exactly, so the statement walks that index (discovered rows only, oldest ask first) and
/// stops at `limit`, whatever the size of the table. Rows another transaction holds (a sink
/// writing a result, a GET asking for it) are skipped, not waited for: they are seen at the
/// next sweep, and a sweep never deadlocks with the sink's id-ordered locks.
pub async fn retire_batch(
    pool: &PgPool,
    timeouts: Timeouts,
    older_than: TimeDelta,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let mut tx = db::begin(pool, timeouts).await?;
    let retired = sqlx::query(
        "WITH unasked AS (
             SELECT id FROM repos
             WHERE discovered AND enabled
               AND coalesce(last_asked_at, created_at) < now() - $1::interval
             ORDER BY coalesce(last_asked_at, created_at)
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE repos r SET enabled = false, retired_at = now()
         FROM unasked WHERE r.id = unasked.id",
    )
    .persistent(false)
    .bind(db::interval_text(older_than))
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(retired)
}
