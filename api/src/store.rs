//! Every query the api runs: one indexed lookup or keyset page each, read-only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleet_runtime::db::Db;

/// Runs `query` with `fetch` on a connection of `db`: prepared where `db`'s pooling allows,
/// inside a transaction behind a transaction pooler (see `fleet_runtime::db`).
macro_rules! read {
    ($db:expr, $fetch:ident, $query:expr) => {{
        let mut c = $db.conn().await?;
        let found = $query.persistent($db.prepares()).$fetch(&mut *c).await?;
        c.done().await?;
        Ok::<_, sqlx::Error>(found)
    }};
}

/// A repository, its latest result if it has one, and where it stands in the schedule.
#[derive(Debug, sqlx::FromRow)]
pub struct Latest {
    pub repo_id: i64,
    /// As people spelled it (`github.com/OSSF/Scorecard`).
    pub repo: String,
    pub work_id: Option<String>,
    pub score: Option<f64>,
    pub commit_sha: Option<String>,
    pub scorecard_version: Option<String>,
    pub scored_at: Option<DateTime<Utc>>,
    /// scorecard's JSON v2, verbatim (not read for badges).
    pub raw_json: Option<String>,
    pub enabled: bool,
    pub discovered: bool,
    pub last_asked_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
    pub last_enqueued_at: Option<DateTime<Utc>>,
    pub next_due_at: DateTime<Utc>,
    pub missing_checked_at: Option<DateTime<Utc>>,
    pub missing_until: Option<DateTime<Utc>>,
    /// When its latest failure was recorded, read only for a repository without a score (a
    /// scored one's GET, the hot path, makes one query).
    #[sqlx(skip)]
    pub failed_at: Option<DateTime<Utc>>,
}

/// What [`Latest`] reads, but scorecard's output.
macro_rules! latest_columns {
    () => {
        "r.id AS repo_id, r.host || '/' || r.owner || '/' || r.name AS repo, s.work_id,
         s.score::float8 AS score, s.commit_sha, s.scorecard_version, s.scored_at, r.enabled,
         r.discovered, r.last_asked_at, r.retired_at, r.last_enqueued_at, r.next_due_at,
         r.missing_checked_at, r.missing_until"
    };
}

/// The repository of `key` (lower-cased name) with its latest result; `None` if unknown.
/// `with_raw`: with scorecard's output (a badge does without). The api's GETs ask through
/// [`crate::lookup::Lookups`], which gathers concurrent ones into [`latest_many`].
pub async fn latest(db: &Db, key: &str, with_raw: bool) -> Result<Option<Latest>, sqlx::Error> {
    // Two statements rather than a parameter, so each keeps a plan that reads only what it
    // returns.
    let query = if with_raw {
        concat!(
            "SELECT ",
            latest_columns!(),
            ", s.raw_json FROM repos r LEFT JOIN scores s ON s.repo_id = r.id
             WHERE r.repo_key = $1"
        )
    } else {
        concat!(
            "SELECT ",
            latest_columns!(),
            ", NULL::text AS raw_json FROM repos r LEFT JOIN scores s ON s.repo_id = r.id
             WHERE r.repo_key = $1"
        )
    };
    let mut row: Option<Latest> = read!(db, fetch_optional, sqlx::query_as(query).bind(key))?;
    if let Some(r) = row.as_mut() {
        with_failure(db, r).await?;
    }
    Ok(row)
}

/// [`latest`] of each of `keys` (with scorecard's output where its flag says so) in one
/// query, in the order asked.
pub async fn latest_many(
    db: &Db,
    keys: &[(&str, bool)],
) -> Result<Vec<Option<Latest>>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Numbered {
        ord: i64,
        #[sqlx(flatten)]
        latest: Latest,
    }
    let (names, raw): (Vec<&str>, Vec<bool>) = keys.iter().copied().unzip();
    // The output is read (and decompressed) only for the rows that asked for it.
    let rows: Vec<Numbered> = read!(
        db,
        fetch_all,
        sqlx::query_as(concat!(
            "SELECT k.ord, ",
            latest_columns!(),
            ", CASE WHEN k.raw THEN s.raw_json END AS raw_json
             FROM unnest($1::text[], $2::bool[]) WITH ORDINALITY AS k(key, raw, ord)
             JOIN repos r ON r.repo_key = k.key
             LEFT JOIN scores s ON s.repo_id = r.id"
        ))
        .bind(names)
        .bind(raw)
    )?;
    let mut found: Vec<Option<Latest>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
    for Numbered { ord, mut latest } in rows {
        with_failure(db, &mut latest).await?;
        let at = usize::try_from(ord - 1).expect("ordinals count from 1");
        found[at] = Some(latest);
    }
    Ok(found)
}

/// Reads when `row`'s latest failure was recorded if it has no score (a scored repository's
/// GET, the hot path, makes one query).
async fn with_failure(db: &Db, row: &mut Latest) -> Result<(), sqlx::Error> {
    if row.work_id.is_none() {
        row.failed_at = last_failed_at(db, row.repo_id).await?;
    }
    Ok(())
}

async fn last_failed_at(db: &Db, repo_id: i64) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    read!(
        db,
        fetch_optional,
        sqlx::query_scalar("SELECT failed_at FROM work_failures WHERE repo_id = $1").bind(repo_id)
    )
}

/// A repository's id and name as people spelled it, without its result.
pub async fn repo(db: &Db, key: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
    read!(
        db,
        fetch_optional,
        sqlx::query_as(
            "SELECT id, host || '/' || owner || '/' || name FROM repos WHERE repo_key = $1",
        )
        .bind(key)
    )
}

/// The newest kept result of `commit` (lower-case hex): work id and raw JSON.
pub async fn at_commit(
    db: &Db,
    repo_id: i64,
    commit: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    read!(
        db,
        fetch_optional,
        sqlx::query_as(
            "SELECT work_id, raw_json FROM score_raw WHERE repo_id = $1 AND commit_sha = $2",
        )
        .bind(repo_id)
        .bind(commit)
    )
}

/// One scan in a repository's history.
#[derive(Debug, sqlx::FromRow)]
pub struct Scan {
    pub work_id: String,
    pub scored_at: DateTime<Utc>,
    pub commit_sha: String,
    pub score: Option<f64>,
    pub scorecard_version: String,
    pub check_scores: sqlx::types::Json<BTreeMap<String, Option<i64>>>,
}

/// Where a page of history starts: strictly older than this scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    pub scored_at: DateTime<Utc>,
    pub work_id: String,
}

/// Up to `limit` scans of `repo_id`, newest first, older than `before`.
pub async fn history(
    db: &Db,
    repo_id: i64,
    before: Option<&HistoryCursor>,
    limit: i64,
) -> Result<Vec<Scan>, sqlx::Error> {
    // 'infinity' sorts after every time, so no cursor means "from the newest".
    let (at, work) = before.map_or((None, String::new()), |c| {
        (Some(c.scored_at), c.work_id.clone())
    });
    read!(
        db,
        fetch_all,
        sqlx::query_as(
            "SELECT work_id, scored_at, commit_sha, score::float8 AS score, scorecard_version,
                check_scores
         FROM score_history
         WHERE repo_id = $1
           AND (scored_at, work_id) < (coalesce($2, 'infinity'::timestamptz), $3)
         ORDER BY scored_at DESC, work_id DESC
         LIMIT $4",
        )
        .bind(repo_id)
        .bind(at)
        .bind(work)
        .bind(limit)
    )
}

/// One check of a repository's latest result.
#[derive(Debug, sqlx::FromRow)]
pub struct Check {
    pub name: String,
    pub score: Option<i16>,
    pub reason: String,
}

pub async fn checks(db: &Db, repo_id: i64) -> Result<Vec<Check>, sqlx::Error> {
    read!(
        db,
        fetch_all,
        sqlx::query_as(
            "SELECT name, score, reason FROM score_checks WHERE repo_id = $1 ORDER BY name",
        )
        .bind(repo_id)
    )
}

/// A repository whose check scored in the asked range.
#[derive(Debug, sqlx::FromRow)]
pub struct Ranked {
    pub repo_id: i64,
    pub repo: String,
    pub score: i16,
    pub reason: String,
}

/// Where a page of a check's ranking starts: strictly after this (score, repository).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankCursor {
    pub score: i16,
    pub repo_id: i64,
}

/// Repositories whose `check` scored within `min..=max`, lowest score first, after `after`:
/// a keyset walk of `score_checks (name, score, repo_id)`.
pub async fn ranked(
    db: &Db,
    check: &str,
    min: i16,
    max: i16,
    after: Option<RankCursor>,
    limit: i64,
) -> Result<Vec<Ranked>, sqlx::Error> {
    let after = after.unwrap_or(RankCursor {
        score: -1,
        repo_id: 0,
    });
    read!(
        db,
        fetch_all,
        sqlx::query_as(
            "SELECT c.repo_id, r.host || '/' || r.owner || '/' || r.name AS repo, c.score, c.reason
         FROM score_checks c JOIN repos r ON r.id = c.repo_id
         WHERE c.name = $1 AND c.score BETWEEN $2 AND $3 AND (c.score, c.repo_id) > ($4, $5)
         ORDER BY c.score, c.repo_id
         LIMIT $6",
        )
        .bind(check)
        .bind(min)
        .bind(max)
        .bind(after.score)
        .bind(after.repo_id)
        .bind(limit)
    )
}

/// Whether any repository has a result with check `name`.
pub async fn check_known(db: &Db, name: &str) -> Result<bool, sqlx::Error> {
    read!(
        db,
        fetch_one,
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM score_checks WHERE name = $1)").bind(name)
    )
}

/// A repository's latest failure, if it is newer than its latest score.
#[derive(Debug, sqlx::FromRow)]
pub struct Failure {
    pub class: String,
    pub message: String,
    pub failed_at: DateTime<Utc>,
}

pub async fn failure(db: &Db, repo_id: i64) -> Result<Option<Failure>, sqlx::Error> {
    read!(
        db,
        fetch_optional,
        sqlx::query_as("SELECT class, message, failed_at FROM work_failures WHERE repo_id = $1")
            .bind(repo_id)
    )
}
