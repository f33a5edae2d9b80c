//! PostgreSQL: the pool, the migrations (applied by the producer only) and the schema-version
//! check the other services run before they touch a table.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::config::{DbArgs, redact_url};

/// The schema this build was written for; `migrations/` at the workspace root.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long a query waits for a free connection before failing: long enough to ride out a
/// burst, short enough that a dead database shows up in /readyz within seconds.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database has no scorecard-fleet schema (no applied migrations): run `producer migrate` first"
    )]
    Empty,
    #[error("the database schema is at version {found} but this binary needs {expected}: {advice}")]
    Mismatch {
        found: i64,
        expected: i64,
        advice: &'static str,
    },
    #[error("reading the schema version")]
    Query(#[source] sqlx::Error),
}

/// The latest migration this binary knows.
pub fn expected_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Opens the pool, retrying until the database answers or `shutdown` fires.
pub async fn connect(args: &DbArgs, shutdown: &CancellationToken) -> anyhow::Result<PgPool> {
    let shown = redact_url(args.database_url.expose());
    let attempt = || async {
        PgPoolOptions::new()
            .max_connections(args.database_max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(args.database_url.expose())
            .await
            .with_context(|| format!("connecting to PostgreSQL at {shown}"))
    };
    crate::retry::until_ready(&format!("PostgreSQL at {shown}"), shutdown, attempt).await
}

/// Applies pending migrations. Only the producer calls this, so two kinds of service never
/// race to change the schema.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}

/// Refuses a database whose schema is not exactly the one this binary was built for.
pub async fn check_schema(pool: &PgPool) -> Result<(), SchemaError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|e| match &e {
                // 42P01 undefined_table: nothing was ever migrated here.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(SchemaError::Query(e)),
            })?;
    let expected = expected_version();
    match found {
        None => Err(SchemaError::Empty),
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(SchemaError::Mismatch {
            found,
            expected,
            advice: if found < expected {
                "run `producer migrate` (or upgrade the producer first)"
            } else {
                "this binary is older than the database; upgrade it"
            },
        }),
    }
}

/// One attempt, for commands a person runs: an unreachable database is an immediate error.
pub async fn connect_once(args: &DbArgs) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(args.database_url.expose())
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {}",
                redact_url(args.database_url.expose())
            )
        })
}
