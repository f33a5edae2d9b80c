//! The fleet at a glance: what `sink status` prints and the api's `/status` serves.
//!
//! Counted exactly while the repos table is small; above [`COUNT_EXACTLY_BELOW`] rows (by
//! PostgreSQL's own statistics) the per-repository numbers are estimated from a block sample
//! of about [`SAMPLE_ROWS`] rows, so the cost stays that of counting a small table however
//! large it grows (a count over 10M rows walks all of them, every five minutes for the gauge).
//! An estimate is within a few per cent and says so (`estimated`). Failures by class and the
//! oldest overdue time stay exact: the failures table is small, and the oldest due time is one
//! probe of the due index.

use crate::db::Db;
use chrono::{DateTime, TimeDelta, Utc};

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
    /// The per-repository counts are estimates from a sample (the failures by class and the
    /// oldest overdue time are exact).
    pub estimated: bool,
}

/// Below this many rows every count is exact.
pub const COUNT_EXACTLY_BELOW: f64 = 250_000.0;
/// About how many rows a sample reads.
pub const SAMPLE_ROWS: f64 = 100_000.0;

/// How the repos table is read for a count: all of it, or a sample of this percentage of its
/// blocks (`TABLESAMPLE SYSTEM`: every block equally likely, so scaled counts are unbiased).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    All,
    Sample { percent: f64 },
}

impl Reading {
    /// The reading for a table PostgreSQL believes holds `rows` rows (`-1`: never analyzed).
    pub fn for_rows(rows: f64) -> Self {
        if rows < COUNT_EXACTLY_BELOW {
            Reading::All
        } else {
            Reading::Sample {
                percent: (100.0 * SAMPLE_ROWS / rows).clamp(0.0001, 100.0),
            }
        }
    }

    /// The `FROM` item for the repos table under `alias`.
    pub fn from_repos(self, alias: &str) -> String {
        match self {
            Reading::All => format!("repos {alias}"),
            Reading::Sample { percent } => {
                format!("repos {alias} TABLESAMPLE SYSTEM ({percent})")
            }
        }
    }

    /// A count over the rows read, scaled to the whole table.
    pub fn scale(self, counted: i64) -> i64 {
        match self {
            Reading::All => counted,
            Reading::Sample { percent } => (counted as f64 * 100.0 / percent).round() as i64,
        }
    }

    pub fn estimated(self) -> bool {
        self != Reading::All
    }
}

/// How the repos table is to be read now, by PostgreSQL's statistics (one catalog row).
pub async fn reading(conn: &mut sqlx::PgConnection) -> Result<Reading, sqlx::Error> {
    let rows: f64 =
        sqlx::query_scalar("SELECT reltuples::float8 FROM pg_class WHERE oid = 'repos'::regclass")
            .persistent(false)
            .fetch_one(conn)
            .await?;
    Ok(Reading::for_rows(rows))
}

pub async fn status(db: &Db, interval: TimeDelta) -> Result<Status, sqlx::Error> {
    // One transaction: a consistent view, and one server behind a transaction pooler.
    let mut tx = db.begin().await?;
    let read = reading(&mut tx).await?;
    let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*),
                count(*) FILTER (WHERE r.enabled),
                count(*) FILTER (WHERE r.last_scored_at >= now() - $1::interval),
                count(*) FILTER (WHERE r.enabled AND r.next_due_at <= now()),
                count(*) FILTER (WHERE r.last_enqueued_at IS NOT NULL
                                   AND r.last_enqueued_at > coalesce(r.last_scored_at, '-infinity')
                                   AND r.last_enqueued_at > coalesce(f.failed_at, '-infinity')),
                count(*) FILTER (WHERE r.last_scored_at IS NULL)
         FROM {} LEFT JOIN work_failures f ON f.repo_id = r.id",
        read.from_repos("r")
    )))
    .persistent(false)
    .bind(crate::db::interval_text(interval))
    .fetch_one(&mut *tx)
    .await?;
    // The due index's first entry: exact, and one index probe at any size.
    let oldest_overdue: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(next_due_at) FROM repos WHERE enabled AND next_due_at <= now()",
    )
    .persistent(false)
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
        repos: read.scale(row.0),
        enabled: read.scale(row.1),
        fresh: read.scale(row.2),
        due_now: read.scale(row.3),
        in_flight: read.scale(row.4),
        never_scored: read.scale(row.5),
        oldest_overdue,
        failed_by_class,
        estimated: read.estimated(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_are_counted_and_large_ones_sampled_to_about_the_same_rows() {
        assert_eq!(Reading::for_rows(-1.0), Reading::All);
        assert_eq!(Reading::for_rows(249_999.0), Reading::All);
        for rows in [1e6, 1e7, 1e8] {
            let read = Reading::for_rows(rows);
            let Reading::Sample { percent } = read else {
                panic!("{rows} rows are sampled")
            };
            assert!((rows * percent / 100.0 - SAMPLE_ROWS).abs() < 1.0);
            assert_eq!(read.scale((SAMPLE_ROWS / 2.0) as i64), (rows / 2.0) as i64);
            assert!(
                read.from_repos("r")
                    .starts_with("repos r TABLESAMPLE SYSTEM (")
            );
        }
        assert_eq!(Reading::All.scale(7), 7);
        assert_eq!(Reading::All.from_repos("r"), "repos r");
    }
}
