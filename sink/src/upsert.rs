//! One batch, one transaction. Every statement is a set operation over the whole batch
//! (UNNEST of column arrays; binary COPY for the ~18 per-check rows a result), so a batch costs
//! a handful of round trips whatever its size. The batch's repositories are locked first, in id
//! order, so concurrent batches sharing a repository serialise and none deadlock.
//!
//! Idempotent by construction: history ignores a work id it has seen; the latest score only
//! moves forward in (scored_at, work_id) order; a failure already recorded is not counted twice.
//! A result clears the repository's failure only if that failure is older, so a result older
//! than a failure that arrived first leaves the failure and its retry schedule alone.
//!
//! A result for a repository the database has not seen creates its row. The checks are stored
//! once: name, score and reason in `score_checks` (the latest per repository, by binary
//! `COPY` for full batches), everything else in `scores.raw_json`, scorecard's line verbatim.
//! A NUL, which PostgreSQL text cannot hold, becomes U+FFFD ([`crate::copy::pg_text`]) rather
//! than failing its batch forever.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use fleet_proto::v1::{Check, FailureClass, ScoreResult, WorkFailure};
use fleet_proto::{RepoName, datetime};
use fleet_runtime::db::{self, Timeouts};
use sqlx::{PgPool, Postgres, Transaction};

use crate::copy::{BinaryCopy, pg_text};
use crate::decode::{Record, failure_repo};
use crate::schedule::Schedule;

/// The scored repositories' row update: when each was scored, and when it is due next (a
/// repository with a failure row keeps the due time the failure set). A score after scorecard
/// found no such repository on GitHub says it exists now and clears that memory; one from
/// before the check (delivered late) does not. `$1` ids, `$2` scored times, `$3` next due
/// times, `$4` the ids whose latest result changed. Public for the bloat benchmark, which
/// drives this very statement.
pub const REPOS_SCORED: &str = "UPDATE repos SET last_scored_at = u.t, pending_work_id = NULL,
         next_due_at = CASE WHEN EXISTS (SELECT 1 FROM work_failures f WHERE f.repo_id = u.r)
                            THEN repos.next_due_at ELSE u.d END,
         missing_until = CASE WHEN repos.missing_checked_at <= u.t
                              THEN NULL ELSE repos.missing_until END,
         missing_checked_at = CASE WHEN repos.missing_checked_at <= u.t
                                   THEN NULL ELSE repos.missing_checked_at END
     FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS u(r, t, d)
     WHERE repos.id = u.r AND repos.id = ANY($4)";

/// What a committed batch changed; duplicates and stale records count as seen, not written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub history_rows: u64,
    pub scores_updated: u64,
    pub failures_recorded: u64,
    pub skipped: u64,
    /// Change events recorded in the outbox.
    pub events: u64,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, other: Self) {
        self.history_rows += other.history_rows;
        self.scores_updated += other.scores_updated;
        self.failures_recorded += other.failures_recorded;
        self.skipped += other.skipped;
        self.events += other.events;
    }
}

/// Writes `records` in one transaction; nothing is written unless all of it is. With `events`,
/// each change of a latest score is recorded in the outbox in the same transaction.
pub async fn write_batch(
    pool: &PgPool,
    timeouts: Timeouts,
    records: &[Record],
    schedule: &Schedule,
    events: bool,
) -> Result<Written, sqlx::Error> {
    let mut results: Vec<(&ScoreResult, RepoName)> = Vec::new();
    let mut failures: Vec<(&WorkFailure, RepoName)> = Vec::new();
    let mut written = Written::default();
    for record in records {
        match record {
            Record::Result(r) => match RepoName::parse(&r.repo) {
                Ok(repo) => results.push((r, repo)),
                Err(_) => written.skipped += 1,
            },
            Record::Failure(f) => match failure_repo(f) {
                Some(repo) => failures.push((f, repo)),
                None => written.skipped += 1,
            },
        }
    }
    let mut tx = db::begin(pool, timeouts).await?;
    let mut repos: Vec<&RepoName> = results
        .iter()
        .map(|(_, r)| r)
        .chain(failures.iter().map(|(_, r)| r))
        .collect();
    let ids = ensure_repos(&mut tx, &mut repos).await?;
    lock_repos(&mut tx, &ids).await?;
    if !results.is_empty() {
        write_results(&mut tx, &results, &ids, schedule, events, &mut written).await?;
    }
    if !failures.is_empty() {
        write_failures(&mut tx, &failures, &ids, schedule, &mut written).await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// Ids of the batch's repositories by key, creating rows for repositories the database has not
/// seen (manual enqueues of new repos). Results almost always come for known repositories, so
/// this looks them up first and inserts only what is missing. Keys are inserted in sorted order
/// so concurrent sinks lock rows in the same order and cannot deadlock.
async fn ensure_repos(
    tx: &mut Transaction<'_, Postgres>,
    repos: &mut Vec<&RepoName>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    // `key()` allocates: computed once per repository, not per comparison.
    repos.sort_by_cached_key(|r| r.key());
    repos.dedup_by_key(|r| r.key());
    let keys: Vec<String> = repos.iter().map(|r| r.key()).collect();
    let mut ids = repo_ids(tx, &keys).await?;
    let missing: Vec<&RepoName> = repos
        .iter()
        .copied()
        .filter(|r| !ids.contains_key(&r.key()))
        .collect();
    if missing.is_empty() {
        return Ok(ids);
    }
    let keys: Vec<String> = missing.iter().map(|r| r.key()).collect();
    let named: Vec<(&str, &RepoName, Option<i32>)> = keys
        .iter()
        .zip(missing)
        .map(|(k, r)| (k.as_str(), r, None))
        .collect();
    fleet_runtime::db::insert_repos(tx, &named).await?;
    // Also finds the rows a concurrent import or sink inserted first.
    ids.extend(repo_ids(tx, &keys).await?);
    Ok(ids)
}

/// Locks the batch's repositories, in id order, before anything else is written: two batches
/// (concurrent writers, or sink replicas) that share a repository then run one after the other,
/// each seeing what the other committed — a failure cannot slip in beside a newer result unseen
/// — and batches that share none touch different rows. Taking the locks in one order means no
/// deadlock.
async fn lock_repos(
    tx: &mut Transaction<'_, Postgres>,
    ids: &HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    let mut ids: Vec<i64> = ids.values().copied().collect();
    ids.sort_unstable();
    sqlx::query("SELECT 1 FROM repos WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .persistent(false)
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn repo_ids(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[String],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, repo_key FROM repos WHERE repo_key = ANY($1)")
            .persistent(false)
            .bind(keys)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().map(|(id, key)| (key, id)).collect())
}

/// Column arrays of the results of one batch, newest first per repository.
#[derive(Default)]
struct ResultColumns {
    work_id: Vec<String>,
    repo_id: Vec<i64>,
    score: Vec<Option<f64>>,
    commit: Vec<String>,
    version: Vec<String>,
    sc_commit: Vec<String>,
    scored_at: Vec<DateTime<Utc>>,
    exit_code: Vec<i32>,
    check_scores: Vec<String>,
    raw_json: Vec<String>,
    next_due: Vec<DateTime<Utc>>,
}

/// A result with its repository id and time, newest first.
type Ordered<'a> = Vec<(&'a ScoreResult, i64, DateTime<Utc>)>;

async fn write_results(
    tx: &mut Transaction<'_, Postgres>,
    results: &[(&ScoreResult, RepoName)],
    ids: &HashMap<String, i64>,
    schedule: &Schedule,
    events: bool,
    written: &mut Written,
) -> Result<(), sqlx::Error> {
    let ordered = newest_first(results, ids);
    let (all, mut latest) = result_columns(&ordered);
    written.history_rows += insert_history(tx, &all).await?;
    insert_raw(tx, &all).await?;
    // Rows go in repo id order, so concurrent sinks lock them in the same order (no deadlock),
    // sorted here rather than by an ORDER BY that would sort the whole wide rows in SQL.
    latest.sort_by_key(|&i| all.repo_id[i]);
    let top = latest_columns(&ordered, &all, &latest, schedule);
    // What the new scores replace, for the change events (the rows are locked).
    let before = if events {
        Some(crate::events::stored(tx, &top.repo_id).await?)
    } else {
        None
    };
    let stored_now = upsert_scores(tx, &top).await?;
    let changed: Vec<i64> = stored_now.iter().map(|(id, _)| *id).collect();
    written.scores_updated += changed.len() as u64;
    if changed.is_empty() {
        return Ok(());
    }
    if let Some(before) = &before {
        let now: HashMap<i64, Option<f64>> = stored_now.iter().copied().collect();
        let made: Vec<_> = latest
            .iter()
            .filter_map(|&i| {
                let repo = all.repo_id[i];
                let score = now.get(&repo)?;
                crate::events::change(ordered[i].0, *score, before.get(&repo))
            })
            .collect();
        crate::events::record(tx, &made).await?;
        written.events += made.len() as u64;
    }
    replace_checks(tx, &ordered, &latest, &changed).await?;
    settle_repos(tx, &top, &changed).await
}

/// Newest first, so the first result seen per repository is the one `scores` may take; one
/// per work id.
fn newest_first<'a>(
    results: &[(&'a ScoreResult, RepoName)],
    ids: &HashMap<String, i64>,
) -> Ordered<'a> {
    let mut ordered: Ordered<'a> = results
        .iter()
        .map(|(r, repo)| {
            let scored_at = r.scored_at.as_ref().map(datetime).unwrap_or_default();
            (*r, ids[&repo.key()], scored_at)
        })
        .collect();
    ordered.sort_by(|a, b| (b.2, &b.0.work_id).cmp(&(a.2, &a.0.work_id)));
    ordered.dedup_by(|a, b| a.0.work_id == b.0.work_id);
    ordered
}

/// Every result in column arrays, and the index of each repository's newest.
fn result_columns(ordered: &Ordered<'_>) -> (ResultColumns, Vec<usize>) {
    let mut all = ResultColumns::default();
    let mut latest_repo = HashSet::new();
    let mut latest = Vec::new();
    for (i, (r, repo_id, scored_at)) in ordered.iter().enumerate() {
        all.work_id.push(pg_text(&r.work_id).into_owned());
        all.repo_id.push(*repo_id);
        all.score.push(r.score);
        all.commit.push(pg_text(&r.commit).into_owned());
        all.version.push(pg_text(&r.scorecard_version).into_owned());
        all.sc_commit
            .push(pg_text(&r.scorecard_commit).into_owned());
        all.scored_at.push(*scored_at);
        all.exit_code.push(r.exit_code);
        all.check_scores.push(check_scores_json(r));
        all.raw_json.push(pg_text(&r.raw_json).into_owned());
        if latest_repo.insert(*repo_id) {
            latest.push(i);
        }
    }
    (all, latest)
}

/// One history row per work id; returns how many were new.
async fn insert_history(
    tx: &mut Transaction<'_, Postgres>,
    all: &ResultColumns,
) -> Result<u64, sqlx::Error> {
    let history = sqlx::query(
        "INSERT INTO score_history (work_id, repo_id, score, commit_sha, scorecard_version,
                                    scored_at, exit_code, check_scores)
         SELECT w, r, s::numeric(3,1), c, v, t, e, cs::jsonb
         FROM UNNEST($1::text[], $2::int8[], $3::float8[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::int4[], $8::text[]) AS u(w, r, s, c, v, t, e, cs)
         ON CONFLICT (work_id) DO NOTHING",
    )
    .persistent(false)
    .bind(&all.work_id)
    .bind(&all.repo_id)
    .bind(&all.score)
    .bind(&all.commit)
    .bind(&all.version)
    .bind(&all.scored_at)
    .bind(&all.exit_code)
    .bind(&all.check_scores)
    .execute(&mut **tx)
    .await?;
    Ok(history.rows_affected())
}

/// The newest result of each commit in full, for the retention period (the api's
/// `?commit=`). `all` is newest first: the first of a (repository, commit) wins, and one
/// statement may not update a row twice.
async fn insert_raw(
    tx: &mut Transaction<'_, Postgres>,
    all: &ResultColumns,
) -> Result<(), sqlx::Error> {
    let mut commits = HashSet::new();
    let raw: Vec<usize> = (0..all.work_id.len())
        .filter(|&i| commits.insert((all.repo_id[i], all.commit[i].as_str())))
        .collect();
    fn pick<'a>(raw: &[usize], col: &'a [String]) -> Vec<&'a str> {
        raw.iter().map(|&i| col[i].as_str()).collect()
    }
    sqlx::query(
        "INSERT INTO score_raw AS k (work_id, repo_id, commit_sha, scored_at, raw_json)
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::timestamptz[], $5::text[])
         ON CONFLICT (repo_id, commit_sha) DO UPDATE SET
             work_id = EXCLUDED.work_id, scored_at = EXCLUDED.scored_at, raw_json = EXCLUDED.raw_json
         WHERE (k.scored_at, k.work_id) < (EXCLUDED.scored_at, EXCLUDED.work_id)",
    )
    .persistent(false)
    .bind(pick(&raw, &all.work_id))
    .bind(raw.iter().map(|&i| all.repo_id[i]).collect::<Vec<_>>())
    .bind(pick(&raw, &all.commit))
    .bind(raw.iter().map(|&i| all.scored_at[i]).collect::<Vec<_>>())
    .bind(pick(&raw, &all.raw_json))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Each repository's newest result, in `latest`'s order, with its next due time.
fn latest_columns(
    ordered: &Ordered<'_>,
    all: &ResultColumns,
    latest: &[usize],
    schedule: &Schedule,
) -> ResultColumns {
    let mut top = ResultColumns::default();
    for &i in latest {
        let r = ordered[i].0;
        top.work_id.push(all.work_id[i].clone());
        top.repo_id.push(all.repo_id[i]);
        top.score.push(all.score[i]);
        top.commit.push(all.commit[i].clone());
        top.version.push(all.version[i].clone());
        top.sc_commit.push(all.sc_commit[i].clone());
        top.scored_at.push(all.scored_at[i]);
        top.exit_code.push(all.exit_code[i]);
        top.raw_json.push(all.raw_json[i].clone());
        top.next_due
            .push(schedule.next_due_after_result(all.scored_at[i], &r.work_id));
    }
    top
}

/// The latest scores, where newer than the stored ones. Returns each changed repository with
/// its new score as stored (numeric(3,1)), for the events.
async fn upsert_scores(
    tx: &mut Transaction<'_, Postgres>,
    top: &ResultColumns,
) -> Result<Vec<(i64, Option<f64>)>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO scores AS s (repo_id, work_id, score, commit_sha, scorecard_version,
                                  scorecard_commit, scored_at, exit_code, raw_json)
         SELECT r, w, sc::numeric(3,1), c, v, vc, t, e, raw
         FROM UNNEST($1::int8[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::int4[], $9::text[])
              AS u(r, w, sc, c, v, vc, t, e, raw)
         ON CONFLICT (repo_id) DO UPDATE SET
             work_id = EXCLUDED.work_id, score = EXCLUDED.score,
             commit_sha = EXCLUDED.commit_sha, scorecard_version = EXCLUDED.scorecard_version,
             scorecard_commit = EXCLUDED.scorecard_commit, scored_at = EXCLUDED.scored_at,
             exit_code = EXCLUDED.exit_code, raw_json = EXCLUDED.raw_json, updated_at = now(),
             -- Not written since migration 0002; cleared so no stale copy stays behind.
             checks = NULL
         WHERE (s.scored_at, s.work_id) < (EXCLUDED.scored_at, EXCLUDED.work_id)
         RETURNING repo_id, score::float8",
    )
    .persistent(false)
    .bind(&top.repo_id)
    .bind(&top.work_id)
    .bind(&top.score)
    .bind(&top.commit)
    .bind(&top.version)
    .bind(&top.sc_commit)
    .bind(&top.scored_at)
    .bind(&top.exit_code)
    .bind(&top.raw_json)
    .fetch_all(&mut **tx)
    .await
}

/// The per-check rows of each `changed` repository, replaced by its new score's.
async fn replace_checks(
    tx: &mut Transaction<'_, Postgres>,
    ordered: &Ordered<'_>,
    latest: &[usize],
    changed: &[i64],
) -> Result<(), sqlx::Error> {
    let changed_set: HashSet<i64> = changed.iter().copied().collect();
    // One row per check name: a result naming a check twice must not fail its batch forever.
    let mut checks = CheckRows::default();
    let mut names = HashSet::new();
    for &i in latest {
        let (result, repo_id, _) = ordered[i];
        if !changed_set.contains(&repo_id) {
            continue;
        }
        names.clear();
        for check in &result.checks {
            if names.insert(check.name.as_str()) {
                checks.push(repo_id, check);
            }
        }
    }
    sqlx::query("DELETE FROM score_checks WHERE repo_id = ANY($1)")
        .persistent(false)
        .bind(changed)
        .execute(&mut **tx)
        .await?;
    checks.insert(tx).await
}

/// A newer score clears the repository's last failure if that failure is older, and
/// schedules the next scan unless a newer failure (delivered first) already did.
async fn settle_repos(
    tx: &mut Transaction<'_, Postgres>,
    top: &ResultColumns,
    changed: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM work_failures f
         USING UNNEST($1::int8[], $2::timestamptz[]) AS u(r, t)
         WHERE f.repo_id = u.r AND f.failed_at <= u.t AND u.r = ANY($3)",
    )
    .persistent(false)
    .bind(&top.repo_id)
    .bind(&top.scored_at)
    .bind(changed)
    .execute(&mut **tx)
    .await?;
    sqlx::query(REPOS_SCORED)
        .persistent(false)
        .bind(&top.repo_id)
        .bind(&top.scored_at)
        .bind(&top.next_due)
        .bind(changed)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Per-check rows of a batch's new latest scores, in column arrays.
#[derive(Default)]
struct CheckRows<'a> {
    repo_id: Vec<i64>,
    name: Vec<Cow<'a, str>>,
    score: Vec<Option<i16>>,
    reason: Vec<Cow<'a, str>>,
}

/// Batches with fewer rows take an `INSERT`: `COPY` ends with two small writes in a row
/// (data, then done), which on a TCP connection without `TCP_NODELAY` (sqlx sets none) waits
/// for the server's delayed ACK — ~40 ms, dwarfing a small batch. A full batch of 500 results
/// (~9,000 rows) saves far more than that with `COPY` (measured: 15% of the batch).
const COPY_MIN_ROWS: usize = 1_000;

impl<'a> CheckRows<'a> {
    fn push(&mut self, repo_id: i64, check: &'a Check) {
        self.repo_id.push(repo_id);
        self.name.push(pg_text(&check.name));
        self.score
            .push(check.score.and_then(|s| i16::try_from(s).ok()));
        self.reason.push(pg_text(&check.reason));
    }

    async fn insert(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.repo_id.len() < COPY_MIN_ROWS {
            sqlx::query(
                "INSERT INTO score_checks (repo_id, name, score, reason)
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int2[], $4::text[])",
            )
            .persistent(false)
            .bind(&self.repo_id)
            .bind(&self.name)
            .bind(&self.score)
            .bind(&self.reason)
            .execute(&mut **tx)
            .await?;
            return Ok(());
        }
        let mut copy = BinaryCopy::new(4);
        for i in 0..self.repo_id.len() {
            copy.row();
            copy.int8(self.repo_id[i]);
            copy.text(&self.name[i]);
            copy.int2(self.score[i]);
            copy.text(&self.reason[i]);
        }
        let mut copy_in = tx
            .copy_in_raw(
                "COPY score_checks (repo_id, name, score, reason) FROM STDIN (FORMAT binary)",
            )
            .await?;
        if let Err(e) = copy_in.send(copy.finish()).await {
            // Leaves the connection usable; the transaction rolls back with the error.
            let _ = copy_in.abort("sending the per-check rows failed").await;
            return Err(e);
        }
        copy_in.finish().await?;
        Ok(())
    }
}

async fn write_failures(
    tx: &mut Transaction<'_, Postgres>,
    failures: &[(&WorkFailure, RepoName)],
    ids: &HashMap<String, i64>,
    schedule: &Schedule,
    written: &mut Written,
) -> Result<(), sqlx::Error> {
    // The newest failure per repository; ON CONFLICT may touch a row once per statement.
    let mut newest: HashMap<i64, (&WorkFailure, DateTime<Utc>)> = HashMap::new();
    for (f, repo) in failures {
        let at = f.failed_at.as_ref().map(datetime).unwrap_or_default();
        let id = ids[&repo.key()];
        match newest.get(&id) {
            Some((_, seen)) if *seen >= at => {}
            _ => {
                newest.insert(id, (f, at));
            }
        }
    }
    let mut rows: Vec<_> = newest.into_iter().collect();
    rows.sort_by_key(|(id, _)| *id);
    let repo_id: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    let work_id: Vec<Cow<str>> = rows.iter().map(|(_, (f, _))| pg_text(&f.work_id)).collect();
    let class: Vec<&str> = rows.iter().map(|(_, (f, _))| class_of(f).name()).collect();
    let message: Vec<Cow<str>> = rows.iter().map(|(_, (f, _))| pg_text(&f.message)).collect();
    let attempts: Vec<i32> = rows
        .iter()
        .map(|(_, (f, _))| i32::try_from(f.attempts).unwrap_or(i32::MAX))
        .collect();
    let failed_at: Vec<DateTime<Utc>> = rows.iter().map(|(_, (_, at))| *at).collect();
    // Recorded unless already seen (same work id), older than what is stored, or older than
    // the repository's latest score.
    let recorded: Vec<(i64, String, i32, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO work_failures AS f (repo_id, work_id, class, message, attempts, failed_at)
         SELECT r, w, c, m, a, t
         FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::timestamptz[])
              AS u(r, w, c, m, a, t)
         WHERE NOT EXISTS (SELECT 1 FROM scores s WHERE s.repo_id = u.r AND s.scored_at >= u.t)
         ON CONFLICT (repo_id) DO UPDATE SET
             work_id = EXCLUDED.work_id, class = EXCLUDED.class, message = EXCLUDED.message,
             attempts = EXCLUDED.attempts, failed_at = EXCLUDED.failed_at,
             consecutive = f.consecutive + 1
         WHERE f.work_id <> EXCLUDED.work_id AND f.failed_at < EXCLUDED.failed_at
         RETURNING repo_id, class, consecutive, failed_at",
    )
    .persistent(false)
    .bind(&repo_id)
    .bind(&work_id)
    .bind(&class)
    .bind(&message)
    .bind(&attempts)
    .bind(&failed_at)
    .fetch_all(&mut **tx)
    .await?;
    written.failures_recorded += recorded.len() as u64;
    if recorded.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = recorded.iter().map(|r| r.0).collect();
    let mut due: Vec<DateTime<Utc>> = Vec::with_capacity(recorded.len());
    let mut checked: Vec<DateTime<Utc>> = Vec::with_capacity(recorded.len());
    let mut missing_until: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(recorded.len());
    for (id, class, consecutive, at) in &recorded {
        let class = FailureClass::parse(class).unwrap_or(FailureClass::Unspecified);
        // `rows` is sorted by id, and what was recorded is one of them.
        let message = rows
            .binary_search_by_key(id, |(id, _)| *id)
            .map_or("", |i| rows[i].1.0.message.as_str());
        let until = schedule.missing_until(*at, class, message);
        let retry =
            schedule.next_due_after_failure(*at, class, u32::try_from(*consecutive).unwrap_or(1));
        // A repository GitHub does not have is not scanned again while that answer holds.
        due.push(until.map_or(retry, |until| retry.max(until)));
        checked.push(*at);
        missing_until.push(until);
    }
    // Another failure leaves what an earlier 404 said (`u.m` is NULL).
    sqlx::query(
        "UPDATE repos SET next_due_at = u.d, pending_work_id = NULL,
             missing_checked_at = CASE WHEN u.m IS NULL THEN repos.missing_checked_at ELSE u.t END,
             missing_until = coalesce(u.m, repos.missing_until)
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
              AS u(r, d, t, m)
         WHERE repos.id = u.r",
    )
    .persistent(false)
    .bind(&ids)
    .bind(&due)
    .bind(&checked)
    .bind(&missing_until)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn class_of(f: &WorkFailure) -> FailureClass {
    FailureClass::try_from(f.class).unwrap_or(FailureClass::Unspecified)
}

/// `{check: score or null}` for the history row.
fn check_scores_json(r: &ScoreResult) -> String {
    let map: serde_json::Map<String, serde_json::Value> = r
        .checks
        .iter()
        .map(|c| (pg_text(&c.name).into_owned(), c.score.into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}
