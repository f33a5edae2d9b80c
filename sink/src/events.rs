//! Change events: what a batch changed becomes a `ScoreChanged` in the outbox table
//! (`score_events`), written in the batch's own transaction; the publisher moves outbox rows to
//! `scorecard.events.score_changed` and deletes them once JetStream has acknowledged them.
//! Exactly once per change: a sink killed after its commit publishes the rows after restart;
//! one killed after JetStream's ack but before the delete publishes them again, and the
//! events stream drops the copy (Nats-Msg-Id `score-changed-<work_id>`, a day's window).
//! Replicas publish side by side, so two events of one repository may arrive out of order:
//! consumers order them by `scored_at`.
//!
//! What is a change ([`change`]): a first score (every check listed, `first` set), or a newer
//! result whose aggregate (as stored, one decimal) or any check's score differs; `checks` then
//! names only those, with old and new score. A rescan that changes no score, a result older
//! than the latest, and a redelivery make no event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use fleet_proto::v1::{CheckChange, ScoreChanged, ScoreResult};
use fleet_runtime::db::{self, Timeouts};
use fleet_runtime::publish::send_once;
use prost::Message as _;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A repository's latest score as stored: aggregate and per-check scores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub score: Option<f64>,
    pub checks: BTreeMap<String, Option<i32>>,
}

/// The scores the repositories `ids` have now, before the batch replaces them (their rows are
/// locked by the batch, so nothing changes them meanwhile).
pub async fn stored(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<HashMap<i64, Stored>, sqlx::Error> {
    let rows: Vec<(i64, Option<f64>, String)> = sqlx::query_as(
        "SELECT s.repo_id, s.score::float8,
                COALESCE((SELECT jsonb_object_agg(c.name, c.score) FROM score_checks c
                          WHERE c.repo_id = s.repo_id), '{}'::jsonb)::text
         FROM scores s WHERE s.repo_id = ANY($1)",
    )
    .persistent(false)
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, score, checks)| {
            let checks: BTreeMap<String, Option<i32>> =
                serde_json::from_str(&checks).unwrap_or_default();
            (id, Stored { score, checks })
        })
        .collect())
}

/// The event `result` makes, its aggregate stored as `score` (one decimal, `numeric(3,1)`:
/// compared and published as the database holds it), replacing `before` (`None`: the
/// repository's first score); `None` if no score changed.
pub fn change(
    result: &ScoreResult,
    score: Option<f64>,
    before: Option<&Stored>,
) -> Option<ScoreChanged> {
    let mut after: BTreeMap<&str, Option<i32>> = BTreeMap::new();
    for check in &result.checks {
        // The first of a name, as the sink stores it.
        after.entry(check.name.as_str()).or_insert(check.score);
    }
    let empty = BTreeMap::new();
    let previous = before.map_or(&empty, |b| &b.checks);
    let mut checks: Vec<CheckChange> = Vec::new();
    for (name, now) in &after {
        let was = previous.get(*name).copied().flatten();
        if before.is_none() || !previous.contains_key(*name) || was != *now {
            checks.push(CheckChange {
                name: (*name).to_owned(),
                previous: was,
                score: *now,
            });
        }
    }
    for (name, was) in previous {
        if !after.contains_key(name.as_str()) {
            checks.push(CheckChange {
                name: name.clone(),
                previous: *was,
                score: None,
            });
        }
    }
    let previous_score = before.and_then(|b| b.score);
    if before.is_some() && previous_score == score && checks.is_empty() {
        return None;
    }
    Some(ScoreChanged {
        repo: result.repo.clone(),
        work_id: result.work_id.clone(),
        previous_score,
        score,
        checks,
        scored_at: result.scored_at,
        commit: result.commit.clone(),
        first: before.is_none(),
    })
}

/// Writes `events` to the outbox, in the batch's transaction.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    events: &[ScoreChanged],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let work_ids: Vec<&str> = events.iter().map(|e| e.work_id.as_str()).collect();
    let payloads: Vec<Vec<u8>> = events.iter().map(|e| e.encode_to_vec()).collect();
    sqlx::query(
        "INSERT INTO score_events (work_id, payload)
         SELECT * FROM UNNEST($1::text[], $2::bytea[])",
    )
    .persistent(false)
    .bind(&work_ids)
    .bind(&payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Most outbox rows moved per round.
const BATCH: i64 = 500;

/// The outbox's publisher: every sink replica runs one; rows are locked while published
/// (`SKIP LOCKED`), so replicas share the work without publishing a row at once.
pub struct Publisher {
    pub js: Context,
    pub pool: PgPool,
    pub timeouts: Timeouts,
    pub subject: String,
    pub metrics: Metrics,
    /// Woken after a batch that recorded events commits.
    pub wake: Arc<Notify>,
}

impl Publisher {
    /// Publishes until `shutdown`; what is left is published by the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let pause = match self.publish_once().await {
                Ok(n) if n as i64 == BATCH => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    Duration::from_secs(1)
                }
                Err(e) => {
                    failures += 1;
                    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(7)));
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?pause,
                        "publishing change events failed; they stay in the outbox");
                    pause
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes up to [`BATCH`] outbox rows, oldest first, and deletes them once acknowledged.
    /// Returns how many; on any error nothing is deleted.
    pub async fn publish_once(&self) -> anyhow::Result<usize> {
        let mut tx = db::begin(&self.pool, self.timeouts).await?;
        let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, work_id, payload FROM score_events ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .persistent(false)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut acks = Vec::with_capacity(rows.len());
        for (_, work_id, payload) in &rows {
            let id = format!("score-changed-{work_id}");
            acks.push(
                send_once(&self.js, self.subject.clone(), &id, payload.clone().into()).await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
        sqlx::query("DELETE FROM score_events WHERE id = ANY($1)")
            .persistent(false)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.metrics.events.inc_by(rows.len() as u64);
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::Check;

    fn result(score: f64, checks: &[(&str, Option<i32>)]) -> ScoreResult {
        ScoreResult {
            work_id: "w".into(),
            repo: "github.com/a/b".into(),
            score: Some(score),
            checks: checks
                .iter()
                .map(|(n, s)| Check {
                    name: (*n).into(),
                    score: *s,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn stored(score: f64, checks: &[(&str, Option<i32>)]) -> Stored {
        Stored {
            score: Some(score),
            checks: checks.iter().map(|(n, s)| ((*n).into(), *s)).collect(),
        }
    }

    #[test]
    fn a_first_score_lists_every_check() {
        let e = change(
            &result(5.25, &[("A", Some(3)), ("B", None)]),
            Some(5.3),
            None,
        )
        .unwrap();
        assert!(e.first);
        assert_eq!(e.score, Some(5.3), "as stored: one decimal");
        assert_eq!(e.previous_score, None);
        assert_eq!(e.checks.len(), 2);
    }

    #[test]
    fn an_unchanged_rescan_is_no_event_and_a_changed_check_is_named() {
        let before = stored(5.3, &[("A", Some(3)), ("B", None)]);
        assert_eq!(
            change(
                &result(5.25, &[("A", Some(3)), ("B", None)]),
                Some(5.3),
                Some(&before)
            ),
            None
        );
        let e = change(
            &result(5.3, &[("A", Some(4)), ("B", None)]),
            Some(5.3),
            Some(&before),
        )
        .unwrap();
        assert!(!e.first);
        assert_eq!(
            e.checks,
            [CheckChange {
                name: "A".into(),
                previous: Some(3),
                score: Some(4)
            }]
        );
        let dropped = change(&result(5.3, &[("A", Some(3))]), Some(5.3), Some(&before)).unwrap();
        assert_eq!(dropped.checks[0].name, "B");
        let e = change(
            &result(6.0, &[("A", Some(3)), ("B", None)]),
            Some(6.0),
            Some(&before),
        )
        .unwrap();
        assert_eq!((e.previous_score, e.score), (Some(5.3), Some(6.0)));
        assert!(e.checks.is_empty());
    }
}
