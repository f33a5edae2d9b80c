//! PostgreSQL: the pool, the migrations (applied by the producer only) and the schema-version
//! check the other services run before they touch a table.
//!
//! Every service must work through PgBouncer in transaction pooling mode, where each
//! transaction may run on another server connection. So: no session state (settings are
//! `SET LOCAL`, see [`begin`]); statements with parameters run inside a transaction (sqlx
//! parses, syncs, then binds: outside a transaction the two halves could reach different
//! servers); and no statement is prepared by name (`persistent(false)`), since a name
//! prepared on one server connection is unknown, or another client's, on the next. The write
//! paths do this always (one parse per batch); the api's single-row reads, the one hot path,
//! keep prepared statements unless [`Pooling::Transaction`] says otherwise ([`Db`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use crate::config::{DbArgs, redact_url};
use crate::http::Readiness;

/// The schema this build was written for; `migrations/` at the workspace root.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long a query waits for a free connection before failing: long enough to ride out a
/// burst, short enough that a dead database shows up in /readyz within seconds.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection idle longer than this is pinged before it is handed out. One used
/// moments ago is not: sqlx already pings every connection as it goes back to the pool, and a
/// second round trip as it is handed out again would cost the api a third of its database
/// traffic.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The pool every service opens: see [`PING_IDLE_AFTER`].
fn pool_options(args: &DbArgs) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

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
    open(args, shutdown, Duration::ZERO).await
}

async fn open(
    args: &DbArgs,
    shutdown: &CancellationToken,
    statement_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let shown = redact_url(args.database_url.expose());
    let mut options: PgConnectOptions = args
        .database_url
        .expose()
        .parse()
        .with_context(|| format!("reading the database URL {shown}"))?;
    if !statement_timeout.is_zero() {
        options = options.options([("statement_timeout", statement_timeout.as_millis())]);
    }
    let attempt = || async {
        pool_options(args)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("connecting to PostgreSQL at {shown}"))
    };
    crate::retry::until_ready(&format!("PostgreSQL at {shown}"), shutdown, attempt).await
}

/// Applies pending migrations. Only the producer calls this, so two kinds of service never
/// race to change the schema. They need a session of their own (an advisory lock, prepared
/// statements), so never through a transaction pooler.
pub async fn migrate(pool: &PgPool, pooling: Pooling) -> anyhow::Result<()> {
    if pooling == Pooling::Transaction {
        anyhow::bail!(
            "migrations need a session of their own (an advisory lock): run `producer migrate` \
             with DATABASE_URL pointing at PostgreSQL itself, not at a transaction pooler \
             (DATABASE_POOLING=transaction)"
        );
    }
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}

/// Refuses a database whose schema is not exactly the one this binary was built for.
pub async fn check_schema(pool: &PgPool) -> Result<(), SchemaError> {
    // In a transaction and unnamed, as every statement here (see the module's note).
    let read = async {
        let mut tx = pool.begin().await?;
        let found = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .persistent(false)
            .fetch_one(&mut *tx)
            .await;
        tx.commit().await?;
        found
    };
    let found: Option<i64> = read.await.or_else(|e| match &e {
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

/// How long the service's statements may run and wait for locks. Set on each transaction
/// (`SET LOCAL`), not on the connection, so the limits hold behind PgBouncer's transaction
/// pooling, where a session's settings would land on whichever server connection served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub statement: Duration,
    pub lock: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            statement: Duration::from_secs(30),
            lock: Duration::from_secs(5),
        }
    }
}

/// Begins a transaction with `timeouts` in force for it.
pub async fn begin(
    pool: &PgPool,
    timeouts: Timeouts,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A transaction left idle (its client cut off mid-way) gives up its locks after twice the
    // statement timeout rather than when TCP keepalive notices, hours later.
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),
                set_config('idle_in_transaction_session_timeout', $3, true)",
    )
    .persistent(false)
    .bind(timeouts.statement.as_millis().to_string())
    .bind(timeouts.lock.as_millis().to_string())
    .bind((timeouts.statement.as_millis() * 2).to_string())
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// How the service's connections reach PostgreSQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooling {
    /// Directly, or through a pooler in session mode: a connection is one server session.
    #[default]
    Session,
    /// Through PgBouncer (or another pooler) in transaction pooling mode.
    Transaction,
}

/// A pool and how it reaches PostgreSQL, for the reads that would otherwise run as single
/// statements on the pool.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: PgPool,
    pub pooling: Pooling,
    /// Behind a transaction pooler, the statement timeout of each transaction [`Db::begin`]
    /// opens (zero: none); with session pooling the pool's connections carry it
    /// ([`Db::connect_reads`]).
    timeout: Duration,
}

impl Db {
    pub fn new(pool: PgPool, pooling: Pooling) -> Self {
        Self {
            pool,
            pooling,
            timeout: Duration::ZERO,
        }
    }

    /// Opens the pool ([`connect`]) of a service whose statements run outside transactions of
    /// its own (the api), each bounded by `args`' statement timeout, so a statement the database
    /// never answers is cancelled there rather than holding a connection. With session pooling
    /// each connection starts with it as its default (no round trip a statement); behind a
    /// transaction pooler a session setting would land on whichever server connection served
    /// it, so [`Db::begin`] sets it on each transaction instead.
    pub async fn connect_reads(
        args: &DbArgs,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let statement = args.timeouts().statement;
        let (session, timeout) = match args.database_pooling {
            Pooling::Session => (statement, Duration::ZERO),
            Pooling::Transaction => (Duration::ZERO, statement),
        };
        Ok(Self {
            pool: open(args, shutdown, session).await?,
            pooling: args.database_pooling,
            timeout,
        })
    }

    /// A transaction, under the statement timeout of [`Db::connect_reads`].
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        if self.timeout.is_zero() {
            return self.pool.begin().await;
        }
        // In the same round trip as the BEGIN.
        self.pool
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SET LOCAL statement_timeout = {}",
                self.timeout.as_millis()
            )))
            .await
    }

    /// Whether statements may be prepared once per connection and reused
    /// (`query.persistent(db.prepares())`).
    pub fn prepares(&self) -> bool {
        self.pooling == Pooling::Session
    }

    /// A connection for a few reads: behind a transaction pooler, a transaction, so each
    /// statement's round trips reach one server. End it with [`Conn::done`].
    pub async fn conn(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self.pooling {
            Pooling::Session => Conn::Session(self.pool.acquire().await?),
            Pooling::Transaction => Conn::Transaction(self.begin().await?),
        })
    }
}

/// See [`Db::conn`].
pub enum Conn {
    Session(PoolConnection<Postgres>),
    Transaction(Transaction<'static, Postgres>),
}

impl Conn {
    pub async fn done(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Session(_) => Ok(()),
            Self::Transaction(tx) => tx.commit().await,
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Self::Session(c) => c,
            Self::Transaction(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Session(c) => c,
            Self::Transaction(tx) => tx,
        }
    }
}

/// One attempt, for commands a person runs: an unreachable database is an immediate error.
pub async fn connect_once(args: &DbArgs) -> anyhow::Result<PgPool> {
    pool_options(args)
        .connect(args.database_url.expose())
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {}",
                redact_url(args.database_url.expose())
            )
        })
}

/// The label of a database error metric: its [`ErrorKind`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ErrorLabel {
    pub kind: String,
}

impl From<&sqlx::Error> for ErrorLabel {
    fn from(e: &sqlx::Error) -> Self {
        ErrorKind::of(e).label()
    }
}

/// The sum of a database error counter over every kind.
pub fn errors_total(
    family: &prometheus_client::metrics::family::Family<
        ErrorLabel,
        prometheus_client::metrics::counter::Counter,
    >,
) -> u64 {
    ErrorKind::ALL
        .iter()
        .map(|k| family.get(&k.label()).map_or(0, |c| c.get()))
        .sum()
}

/// What a failed database call says about what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No connection, or the server going away (SQLSTATE 08, 57P01–57P03, pool time-outs).
    Connection,
    /// `statement_timeout` ran out (57014): something held the tables too long.
    StatementTimeout,
    /// `lock_timeout` ran out (55P03): another session holds the rows.
    LockTimeout,
    /// Serialization failure or deadlock (class 40): retrying is the fix.
    Conflict,
    /// The records themselves (class 22 data exception, 23 integrity constraint, 54 program
    /// limit such as an oversized index row): the same records fail every time.
    Data,
    /// The server cannot do it now, whatever the records: resources, schema, permissions,
    /// I/O. Retried; never blamed on the records.
    Unavailable,
    /// An error of no known class. Retried; if it repeats for the same records they are
    /// taken to be its cause.
    Other,
}

impl ErrorKind {
    pub const ALL: [Self; 7] = [
        Self::Connection,
        Self::StatementTimeout,
        Self::LockTimeout,
        Self::Conflict,
        Self::Data,
        Self::Unavailable,
        Self::Other,
    ];

    pub fn label(self) -> ErrorLabel {
        ErrorLabel {
            kind: self.name().to_owned(),
        }
    }

    pub fn of(e: &sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                match code {
                    "57014" => Self::StatementTimeout,
                    "55P03" => Self::LockTimeout,
                    c if c.starts_with("57P") || c.starts_with("08") => Self::Connection,
                    // An idle-in-transaction kill, a read-only standby after a failover.
                    "25P03" | "25006" => Self::Connection,
                    c if c.starts_with("40") => Self::Conflict,
                    c if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") => {
                        Self::Data
                    }
                    // The server's state, never the records': resources (disk, memory), schema
                    // or permissions (a rolling deploy, a revoked grant), I/O, internal errors.
                    c if ["53", "42", "58", "XX", "3D", "3F", "28", "0A"]
                        .iter()
                        .any(|class| c.starts_with(class)) =>
                    {
                        Self::Unavailable
                    }
                    _ => Self::Other,
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Connection,
            sqlx::Error::Encode(_) => Self::Data,
            // Reading rows back (decode, a missing column or type) is this code's business.
            _ => Self::Unavailable,
        }
    }

    /// The metric label and log field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::StatementTimeout => "statement_timeout",
            Self::LockTimeout => "lock_timeout",
            Self::Conflict => "conflict",
            Self::Data => "data",
            Self::Unavailable => "unavailable",
            Self::Other => "other",
        }
    }
}

/// PostgreSQL's own words for a refused statement, with its SQLSTATE and the constraint or
/// column it names: what a person needs to see in a dead letter.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut text = format!("PostgreSQL refused it: {} (SQLSTATE {code})", db.message());
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(", constraint {constraint}"));
            }
            if let Some(table) = db.table() {
                text.push_str(&format!(", table {table}"));
            }
            text
        }
        other => other.to_string(),
    }
}

/// The dependency `/readyz` names while the database fails.
pub const POSTGRES: &str = "postgres";

/// What every service does with the outcome of its database calls: each error counted by kind
/// (the service's `db_errors` metric) and, when the error is the database's rather than the
/// records' (a data error) or a conflict the next attempt settles, `/readyz` failing and naming
/// PostgreSQL until a call succeeds.
#[derive(Clone, Default)]
pub struct DbHealth {
    errors: Family<ErrorLabel, Counter>,
    readiness: Readiness,
    /// Whether `/readyz` was told of a failure: a success on a hot path costs an atomic load,
    /// not the readiness lock.
    failing: Arc<AtomicBool>,
}

impl DbHealth {
    /// `errors`: the service's `db_errors` counter, registered with its other metrics (the
    /// default: a counter of its own and a readiness no server reports, for tests).
    pub fn new(errors: Family<ErrorLabel, Counter>, readiness: Readiness) -> Self {
        Self {
            errors,
            readiness,
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A call went through: `/readyz` stops naming PostgreSQL.
    pub fn succeeded(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            self.readiness.recovered(POSTGRES);
        }
    }

    /// A call failed with `e`: counted, and the database marked failing unless `e` is a data
    /// error or a conflict. Returns what happened, for the caller's log line.
    pub fn failed(&self, e: &sqlx::Error) -> String {
        let kind = ErrorKind::of(e);
        self.errors.get_or_create(&kind.label()).inc();
        let why = format!("{} ({})", describe(e), kind.name());
        if !matches!(kind, ErrorKind::Data | ErrorKind::Conflict) {
            self.failing.store(true, Ordering::Relaxed);
            self.readiness.failing(POSTGRES, &why);
        }
        why
    }

    /// The readiness it reports to.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// [`Self::succeeded`] or [`Self::failed`], by `outcome`, which is passed on.
    pub fn observe<T>(&self, outcome: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        match &outcome {
            Ok(_) => self.succeeded(),
            Err(e) => {
                self.failed(e);
            }
        }
        outcome
    }
}

/// An interval as PostgreSQL's `interval` text, for a `$n::interval` parameter.
pub fn interval_text(interval: chrono::TimeDelta) -> String {
    format!("{} seconds", interval.num_seconds())
}

/// Adds the repositories `rows` names (each with its key and, from a list that says, its
/// priority) that the table lacks, due at once; known ones are left as they are but for a
/// priority the row gives. Returns how many were new. The caller's order is the order rows are
/// locked in: callers pass them sorted by key.
pub async fn insert_repos(
    conn: &mut PgConnection,
    rows: &[(&str, &fleet_proto::RepoName, Option<i32>)],
) -> Result<u64, sqlx::Error> {
    let keys: Vec<&str> = rows.iter().map(|(k, _, _)| *k).collect();
    let owners: Vec<&str> = rows.iter().map(|(_, r, _)| r.owner()).collect();
    let names: Vec<&str> = rows.iter().map(|(_, r, _)| r.name()).collect();
    let priorities: Vec<Option<i32>> = rows.iter().map(|(_, _, p)| *p).collect();
    let inserted = sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name, priority)
         SELECT k, 'github.com', o, n, coalesce(p, 0)
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[]) AS u(k, o, n, p)
         ON CONFLICT (repo_key) DO NOTHING",
    )
    .persistent(false)
    .bind(&keys)
    .bind(&owners)
    .bind(&names)
    .bind(&priorities)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if priorities.iter().any(Option::is_some) {
        // A list's priorities change from week to week; a row is rewritten only if its did.
        // Rows locked in id order, as the sink locks them, so the two cannot deadlock.
        sqlx::query(
            "WITH changed AS (
                 SELECT r.id, u.p FROM repos r
                 JOIN UNNEST($1::text[], $2::int4[]) AS u(k, p) ON r.repo_key = u.k
                 WHERE u.p IS NOT NULL AND r.priority <> u.p
                 ORDER BY r.id FOR UPDATE OF r
             )
             UPDATE repos r SET priority = changed.p FROM changed WHERE r.id = changed.id",
        )
        .persistent(false)
        .bind(&keys)
        .bind(&priorities)
        .execute(conn)
        .await?;
    }
    Ok(inserted)
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn connection_errors_are_not_the_records_fault() {
        assert_eq!(
            ErrorKind::of(&sqlx::Error::PoolTimedOut),
            ErrorKind::Connection
        );
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(ErrorKind::of(&io), ErrorKind::Connection);
        assert_eq!(
            ErrorKind::of(&sqlx::Error::RowNotFound),
            ErrorKind::Unavailable
        );
    }
}
