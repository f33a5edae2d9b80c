//! What operators read: `sink status` (the fleet at a glance) and `sink show REPO`.

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_runtime::status::Status;
use sqlx::{PgConnection, PgPool};

pub fn render_status(s: &Status, interval: TimeDelta, now: DateTime<Utc>) -> String {
    let pct = |n: i64| {
        if s.repos == 0 {
            0.0
        } else {
            100.0 * n as f64 / s.repos as f64
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "repositories     {:>10} ({} enabled)",
        s.repos, s.enabled
    );
    let _ = writeln!(
        out,
        "fresh            {:>10} ({:.1}% scored within {} days)",
        s.fresh,
        pct(s.fresh),
        interval.num_days()
    );
    let _ = writeln!(out, "never scored     {:>10}", s.never_scored);
    let _ = writeln!(out, "due now          {:>10}", s.due_now);
    let _ = writeln!(out, "in flight        {:>10}", s.in_flight);
    match s.oldest_overdue {
        Some(t) => {
            let _ = writeln!(
                out,
                "oldest overdue   {:>10} (due since {})",
                human(now - t),
                t.to_rfc3339()
            );
        }
        None => {
            let _ = writeln!(out, "oldest overdue   {:>10}", "none");
        }
    }
    let failed: i64 = s.failed_by_class.iter().map(|(_, n)| n).sum();
    let _ = writeln!(out, "failing          {failed:>10}");
    for (class, n) in &s.failed_by_class {
        let _ = writeln!(out, "  {class:<15}{n:>10}");
    }
    if s.estimated {
        let _ = writeln!(
            out,
            "(repository counts estimated from a sample of about {} rows; failures counted)",
            fleet_runtime::status::SAMPLE_ROWS
        );
    }
    out
}

fn human(d: TimeDelta) -> String {
    if d.num_days() > 0 {
        format!("{}d{}h", d.num_days(), d.num_hours() % 24)
    } else if d.num_hours() > 0 {
        format!("{}h{}m", d.num_hours(), d.num_minutes() % 60)
    } else {
        format!("{}m{}s", d.num_minutes(), d.num_seconds() % 60)
    }
}

#[derive(sqlx::FromRow)]
struct RepoRow {
    id: i64,
    enabled: bool,
    next_due: DateTime<Utc>,
    last_enqueued: Option<DateTime<Utc>>,
    last_scored: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ScoreRow {
    score: Option<f64>,
    commit_sha: String,
    scorecard_version: String,
    scored_at: DateTime<Utc>,
    work_id: String,
}

/// `sink show REPO`: everything the database knows about one repository, as text.
pub async fn show(pool: &PgPool, repo: &RepoName) -> anyhow::Result<String> {
    let key = repo.key();
    // One transaction: a consistent view, and one server behind a transaction pooler.
    let mut tx = pool.begin().await?;
    let Some(RepoRow {
        id,
        enabled,
        next_due,
        last_enqueued,
        last_scored,
    }) = sqlx::query_as(
        "SELECT id, enabled, next_due_at AS next_due, last_enqueued_at AS last_enqueued,
                last_scored_at AS last_scored FROM repos WHERE repo_key = $1",
    )
    .persistent(false)
    .bind(&key)
    .fetch_optional(&mut *tx)
    .await?
    else {
        anyhow::bail!("{repo} is not in the database (import or enqueue it first)");
    };
    let opt = |t: Option<DateTime<Utc>>| t.map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
    let mut out = String::new();
    let _ = writeln!(out, "{repo}{}", if enabled { "" } else { " (disabled)" });
    let _ = writeln!(out, "  next due       {}", next_due.to_rfc3339());
    let _ = writeln!(out, "  last enqueued  {}", opt(last_enqueued));
    let _ = writeln!(out, "  last scored    {}", opt(last_scored));
    show_score(&mut tx, id, &mut out).await?;
    show_history(&mut tx, id, &mut out).await?;
    show_failure(&mut tx, id, &mut out).await?;
    tx.commit().await?;
    Ok(out)
}

/// The latest score and its checks.
async fn show_score(conn: &mut PgConnection, id: i64, out: &mut String) -> sqlx::Result<()> {
    let score: Option<ScoreRow> = sqlx::query_as(
        "SELECT score::float8 AS score, commit_sha, scorecard_version, scored_at, work_id
         FROM scores WHERE repo_id = $1",
    )
    .persistent(false)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(ScoreRow {
        score,
        commit_sha: commit,
        scorecard_version: version,
        scored_at: at,
        work_id: work,
    }) = score
    else {
        let _ = writeln!(out, "\nno score yet");
        return Ok(());
    };
    let shown = score.map_or_else(|| "inconclusive".into(), |s| format!("{s:.1}"));
    let _ = writeln!(
        out,
        "\nscore {shown} at {} (commit {commit}, scorecard {version}, work {work})",
        at.to_rfc3339()
    );
    let checks: Vec<(String, Option<i16>, String)> = sqlx::query_as(
        "SELECT name, score, reason FROM score_checks WHERE repo_id = $1 ORDER BY name",
    )
    .persistent(false)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    for (name, score, reason) in checks {
        let s = score.map_or_else(|| "?".into(), |s| s.to_string());
        let _ = writeln!(out, "  {name:<24}{s:>3}  {reason}");
    }
    Ok(())
}

/// The latest ten scans.
async fn show_history(conn: &mut PgConnection, id: i64, out: &mut String) -> sqlx::Result<()> {
    let history: Vec<(DateTime<Utc>, Option<f64>, String, String)> = sqlx::query_as(
        "SELECT scored_at, score::float8, scorecard_version, work_id FROM score_history
         WHERE repo_id = $1 ORDER BY scored_at DESC LIMIT 10",
    )
    .persistent(false)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    if !history.is_empty() {
        let _ = writeln!(out, "\nhistory (latest 10)");
        for (at, score, version, work) in history {
            let shown = score.map_or_else(|| "inconclusive".into(), |s| format!("{s:.1}"));
            let _ = writeln!(
                out,
                "  {}  {shown:>12}  {version:<10} {work}",
                at.to_rfc3339()
            );
        }
    }
    Ok(())
}

/// The last failure, if one is recorded.
async fn show_failure(conn: &mut PgConnection, id: i64, out: &mut String) -> sqlx::Result<()> {
    let failure: Option<(String, String, i32, i32, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT class, message, attempts, consecutive, failed_at, work_id FROM work_failures WHERE repo_id = $1",
    )
    .persistent(false)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((class, message, attempts, consecutive, at, work)) = failure {
        let _ = writeln!(
            out,
            "\nlast failure {class} at {} ({attempts} attempts, {consecutive} in a row, work {work})\n  {message}",
            at.to_rfc3339()
        );
    }
    Ok(())
}
