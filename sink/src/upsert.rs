//! One batch, one transaction. Every statement is a set operation over the whole batch
//! (UNNEST of column arrays), so a batch costs a handful of round trips whatever its size.
//!
//! Idempotent by construction: history ignores a work id it has seen; the latest score only
//! moves forward in (scored_at, work_id) order; a failure already recorded is not counted twice.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use fleet_proto::v1::{FailureClass, ScoreResult, WorkFailure};
use fleet_proto::{RepoName, datetime};
use sqlx::{PgPool, Postgres, Transaction};

use crate::decode::{Record, failure_repo};
use crate::schedule::Schedule;

/// What a committed batch changed; duplicates and stale records count as seen, not written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub history_rows: u64,
    pub scores_updated: u64,
    pub failures_recorded: u64,
    pub skipped: u64,
}

/// Writes `records` in one transaction; nothing is written unless all of it is.
pub async fn write_batch(
    pool: &PgPool,
    records: &[Record],
    schedule: &Schedule,
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
    let mut tx = pool.begin().await?;
    let mut repos: Vec<&RepoName> = results
        .iter()
        .map(|(_, r)| r)
        .chain(failures.iter().map(|(_, r)| r))
        .collect();
    let ids = ensure_repos(&mut tx, &mut repos).await?;
    if !results.is_empty() {
        write_results(&mut tx, &results, &ids, schedule, &mut written).await?;
    }
    if !failures.is_empty() {
        write_failures(&mut tx, &failures, &ids, schedule, &mut written).await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// Creates rows for repositories the database has not seen (manual enqueues of new repos)
/// and returns every id by key. Keys are inserted in sorted order so concurrent sinks lock
/// rows in the same order and cannot deadlock.
async fn ensure_repos(
    tx: &mut Transaction<'_, Postgres>,
    repos: &mut Vec<&RepoName>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    repos.sort_by_key(|r| r.key());
    repos.dedup_by_key(|r| r.key());
    let keys: Vec<String> = repos.iter().map(|r| r.key()).collect();
    let owners: Vec<&str> = repos.iter().map(|r| r.owner()).collect();
    let names: Vec<&str> = repos.iter().map(|r| r.name()).collect();
    sqlx::query(
        "INSERT INTO repos (repo_key, host, owner, name)
         SELECT k, 'github.com', o, n FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(k, o, n)
         ON CONFLICT (repo_key) DO NOTHING",
    )
    .bind(&keys)
    .bind(&owners)
    .bind(&names)
    .execute(&mut **tx)
    .await?;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, repo_key FROM repos WHERE repo_key = ANY($1)")
            .bind(&keys)
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
    checks: Vec<String>,
    check_scores: Vec<String>,
    raw_json: Vec<String>,
    next_due: Vec<DateTime<Utc>>,
}

async fn write_results(
    tx: &mut Transaction<'_, Postgres>,
    results: &[(&ScoreResult, RepoName)],
    ids: &HashMap<String, i64>,
    schedule: &Schedule,
    written: &mut Written,
) -> Result<(), sqlx::Error> {
    // Newest first, so the first result seen per repository is the one `scores` may take.
    let mut ordered: Vec<(&ScoreResult, i64, DateTime<Utc>)> = results
        .iter()
        .map(|(r, repo)| {
            let scored_at = r.scored_at.as_ref().map(datetime).unwrap_or_default();
            (*r, ids[&repo.key()], scored_at)
        })
        .collect();
    ordered.sort_by(|a, b| (b.2, &b.0.work_id).cmp(&(a.2, &a.0.work_id)));
    ordered.dedup_by(|a, b| a.0.work_id == b.0.work_id);

    let mut all = ResultColumns::default();
    let mut latest_repo = std::collections::HashSet::new();
    let mut latest = Vec::new();
    for (i, (r, repo_id, scored_at)) in ordered.iter().enumerate() {
        all.work_id.push(r.work_id.clone());
        all.repo_id.push(*repo_id);
        all.score.push(r.score);
        all.commit.push(r.commit.clone());
        all.version.push(r.scorecard_version.clone());
        all.sc_commit.push(r.scorecard_commit.clone());
        all.scored_at.push(*scored_at);
        all.exit_code.push(r.exit_code);
        all.check_scores.push(check_scores_json(r));
        if latest_repo.insert(*repo_id) {
            latest.push(i);
        }
    }
    let history = sqlx::query(
        "INSERT INTO score_history (work_id, repo_id, score, commit_sha, scorecard_version,
                                    scored_at, exit_code, check_scores)
         SELECT w, r, s::numeric(3,1), c, v, t, e, cs::jsonb
         FROM UNNEST($1::text[], $2::int8[], $3::float8[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::int4[], $8::text[]) AS u(w, r, s, c, v, t, e, cs)
         ON CONFLICT (work_id) DO NOTHING",
    )
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
    written.history_rows += history.rows_affected();

    // Rows go in repo id order, so concurrent sinks lock them in the same order (no deadlock),
    // sorted here rather than by an ORDER BY that would sort the whole wide rows in SQL.
    latest.sort_by_key(|&i| all.repo_id[i]);
    let mut top = ResultColumns::default();
    for &i in &latest {
        let r = ordered[i].0;
        top.work_id.push(all.work_id[i].clone());
        top.repo_id.push(all.repo_id[i]);
        top.score.push(all.score[i]);
        top.commit.push(all.commit[i].clone());
        top.version.push(all.version[i].clone());
        top.sc_commit.push(all.sc_commit[i].clone());
        top.scored_at.push(all.scored_at[i]);
        top.exit_code.push(all.exit_code[i]);
        top.checks.push(checks_json(r));
        top.raw_json.push(r.raw_json.clone());
        top.next_due
            .push(schedule.next_due_after_result(all.scored_at[i], &r.work_id));
    }
    let changed: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO scores AS s (repo_id, work_id, score, commit_sha, scorecard_version,
                                  scorecard_commit, scored_at, exit_code, checks, raw_json)
         SELECT r, w, sc::numeric(3,1), c, v, vc, t, e, ch::jsonb, raw
         FROM UNNEST($1::int8[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::int4[], $9::text[], $10::text[])
              AS u(r, w, sc, c, v, vc, t, e, ch, raw)
         ON CONFLICT (repo_id) DO UPDATE SET
             work_id = EXCLUDED.work_id, score = EXCLUDED.score,
             commit_sha = EXCLUDED.commit_sha, scorecard_version = EXCLUDED.scorecard_version,
             scorecard_commit = EXCLUDED.scorecard_commit, scored_at = EXCLUDED.scored_at,
             exit_code = EXCLUDED.exit_code, checks = EXCLUDED.checks,
             raw_json = EXCLUDED.raw_json, updated_at = now()
         WHERE (s.scored_at, s.work_id) < (EXCLUDED.scored_at, EXCLUDED.work_id)
         RETURNING repo_id",
    )
    .bind(&top.repo_id)
    .bind(&top.work_id)
    .bind(&top.score)
    .bind(&top.commit)
    .bind(&top.version)
    .bind(&top.sc_commit)
    .bind(&top.scored_at)
    .bind(&top.exit_code)
    .bind(&top.checks)
    .bind(&top.raw_json)
    .fetch_all(&mut **tx)
    .await?;
    written.scores_updated += changed.len() as u64;
    if changed.is_empty() {
        return Ok(());
    }

    let changed_set: std::collections::HashSet<i64> = changed.iter().copied().collect();
    let (mut c_repo, mut c_name, mut c_score, mut c_reason) = (vec![], vec![], vec![], vec![]);
    for &i in &latest {
        if !changed_set.contains(&all.repo_id[i]) {
            continue;
        }
        for check in &ordered[i].0.checks {
            c_repo.push(all.repo_id[i]);
            c_name.push(check.name.as_str());
            c_score.push(check.score.and_then(|s| i16::try_from(s).ok()));
            c_reason.push(check.reason.as_str());
        }
    }
    sqlx::query("DELETE FROM score_checks WHERE repo_id = ANY($1)")
        .bind(&changed)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO score_checks (repo_id, name, score, reason)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int2[], $4::text[])
         ON CONFLICT (repo_id, name) DO NOTHING",
    )
    .bind(&c_repo)
    .bind(&c_name)
    .bind(&c_score)
    .bind(&c_reason)
    .execute(&mut **tx)
    .await?;
    // A newer result schedules the next scan and clears the repository's last failure.
    sqlx::query(
        "UPDATE repos SET last_scored_at = u.t, next_due_at = u.d
         FROM UNNEST($1::int8[], $2::timestamptz[], $3::timestamptz[]) AS u(r, t, d)
         WHERE repos.id = u.r AND repos.id = ANY($4)",
    )
    .bind(&top.repo_id)
    .bind(&top.scored_at)
    .bind(&top.next_due)
    .bind(&changed)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM work_failures WHERE repo_id = ANY($1)")
        .bind(&changed)
        .execute(&mut **tx)
        .await?;
    Ok(())
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
    let work_id: Vec<&str> = rows.iter().map(|(_, (f, _))| f.work_id.as_str()).collect();
    let class: Vec<&str> = rows.iter().map(|(_, (f, _))| class_of(f).name()).collect();
    let message: Vec<&str> = rows.iter().map(|(_, (f, _))| f.message.as_str()).collect();
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
    let due: Vec<DateTime<Utc>> = recorded
        .iter()
        .map(|(_, class, consecutive, at)| {
            let class = FailureClass::parse(class).unwrap_or(FailureClass::Unspecified);
            schedule.next_due_after_failure(*at, class, u32::try_from(*consecutive).unwrap_or(1))
        })
        .collect();
    sqlx::query(
        "UPDATE repos SET next_due_at = u.d
         FROM UNNEST($1::int8[], $2::timestamptz[]) AS u(r, d)
         WHERE repos.id = u.r",
    )
    .bind(&ids)
    .bind(&due)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn class_of(f: &WorkFailure) -> FailureClass {
    FailureClass::try_from(f.class).unwrap_or(FailureClass::Unspecified)
}

/// The checks as stored in `scores.checks`.
fn checks_json(r: &ScoreResult) -> String {
    let checks: Vec<serde_json::Value> = r
        .checks
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "score": c.score,
                "reason": c.reason,
                "details": c.details,
                "doc_url": c.doc_url,
            })
        })
        .collect();
    serde_json::Value::Array(checks).to_string()
}

/// `{check: score or null}` for the history row.
fn check_scores_json(r: &ScoreResult) -> String {
    let map: serde_json::Map<String, serde_json::Value> = r
        .checks
        .iter()
        .map(|c| (c.name.clone(), c.score.into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}
