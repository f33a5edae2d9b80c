//! `producer run`: keep the scheduled queue topped up to a high-water mark with the repositories
//! that matter most (the most critical, the most overdue first). One [`Producer::tick`] is one
//! decision (the step tests drive); the loop around it backs off exponentially with jitter when
//! there is nothing to do or on errors, and resets on success. Idle, it costs one database
//! query per backoff period. At start-up and hourly it also retires the discovered
//! repositories nobody asks for ([`retire`]).
//!
//! Publishing is pipelined with `Nats-Msg-Id` = work id
//! ([`fleet_runtime::publish::publish_all`]), and the next batch is claimed while the current
//! one publishes. What cannot be published is handed back to the database, due again in 30 s.
//! A batch in hand when shutdown comes is still published (or handed back).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::PullConsumer;
use chrono::{TimeDelta, Utc};
use fleet_proto::v1::WorkReason;
use fleet_runtime::db::{DbHealth, ErrorKind, Timeouts};
use fleet_runtime::topology::Topology;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::{claim, retire};
use fleet_runtime::publish::{publish_all, work_item};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Most repositories claimed per database round trip.
    pub batch_size: i64,
    /// Scheduled items allowed to wait in the queue; the producer tops up to this and no further,
    /// so newly due repositories and people's requests are never buried.
    pub high_water: u64,
    /// How far a claim pushes `next_due_at`: after this, an item whose result never came back
    /// is due again.
    pub lease: TimeDelta,
    /// Cap of the exponential pause between two looks at an idle database or a full queue;
    /// jitter adds up to as much again, so replicas do not poll in step.
    pub backoff_cap: Duration,
    /// Statement and lock timeouts of every claim, hand-back and count.
    pub db_timeouts: Timeouts,
    /// How long a discovered repository nobody asks for stays scheduled before it is retired
    /// (`None`: never).
    pub retire_after: Option<TimeDelta>,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Published this many (some may have been handed back).
    Published(usize),
    /// Nothing was due.
    Idle,
    /// The queue is at its high-water mark.
    Full,
}

pub struct Producer {
    pub pool: PgPool,
    pub js: Context,
    pub topology: Topology,
    pub consumer: PullConsumer,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Database errors counted, and not ready while PostgreSQL fails (NATS is watched by the
    /// connection's own monitor).
    pub db: DbHealth,
}

/// Seconds between backlog counts while busy: the count walks the due index, cheap but not free.
const BACKLOG_EVERY: Duration = Duration::from_secs(15);

/// Between two retirement sweeps: retirement is a matter of intervals (weeks), and a sweep
/// that finds nothing is one probe of its partial index.
const RETIRE_EVERY: Duration = Duration::from_secs(3600);

/// What a look at the queue and the database gave.
enum Claim {
    Batch(Vec<claim::Claimed>),
    Idle,
    Full,
}

impl Producer {
    /// Claims and publishes at most one batch.
    pub async fn tick(&self) -> anyhow::Result<Tick> {
        match self.claim_next(0).await? {
            Claim::Batch(claimed) => Ok(Tick::Published(self.publish(claimed).await?)),
            Claim::Idle => Ok(Tick::Idle),
            Claim::Full => Ok(Tick::Full),
        }
    }

    /// Claims the most critical, most overdue repositories that fit under the high-water mark,
    /// counting `in_flight` items being published as already queued.
    async fn claim_next(&self, in_flight: u64) -> anyhow::Result<Claim> {
        let mut consumer = self.consumer.clone();
        let info = consumer
            .info()
            .await
            .context("reading the scheduled queue's depth")?;
        let pending = info.num_pending;
        self.metrics
            .queue_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        let room = self
            .settings
            .high_water
            .saturating_sub(pending)
            .saturating_sub(in_flight);
        if room == 0 {
            return Ok(Claim::Full);
        }
        let limit = self
            .settings
            .batch_size
            .min(i64::try_from(room).unwrap_or(i64::MAX));
        let claimed = claim::claim(
            &self.pool,
            self.settings.db_timeouts,
            limit,
            self.settings.lease,
        )
        .await;
        let claimed = self
            .db
            .observe(claimed)
            .context("claiming due repositories")?;
        self.metrics.claimed.inc_by(claimed.len() as u64);
        if (claimed.len() as i64) < limit {
            // Everything due was claimed: its oldest is the oldest overdue. A full batch may
            // leave older repositories of a lower priority; the backlog count finds those.
            let oldest = claimed
                .iter()
                .map(|c| c.was_due)
                .min()
                .map_or(0, |due| (Utc::now() - due).num_seconds().max(0));
            self.metrics.oldest_overdue_seconds.set(oldest);
            self.metrics.due_backlog.set(0);
        }
        if claimed.is_empty() {
            return Ok(Claim::Idle);
        }
        Ok(Claim::Batch(claimed))
    }

    /// Publishes one work item per claimed repository; what cannot be published is handed back
    /// to the database, due again soon. Returns how many were published.
    async fn publish(&self, claimed: Vec<claim::Claimed>) -> anyhow::Result<usize> {
        if claimed.is_empty() {
            return Ok(0);
        }
        let items: Vec<_> = claimed
            .iter()
            .map(|c| {
                let mut item = work_item(&c.repo, WorkReason::Scheduled, c.priority);
                // An earlier publish of this claim may have been stored: same id, so the
                // server drops the copy, or the workers know it.
                if let Some(id) = &c.pending_work_id {
                    item.id.clone_from(id);
                }
                item
            })
            .collect();
        let failed = publish_all(&self.js, &self.topology.scheduled_subject(), &items).await;
        let published = items.len() - failed.len();
        self.metrics.published.inc_by(published as u64);
        if !failed.is_empty() {
            self.metrics.publish_errors.inc_by(failed.len() as u64);
            tracing::warn!(failed = failed.len(), error = %failed[0].1, "publishing work items failed; handing them back");
            let released: Vec<(i64, String)> = failed
                .iter()
                .map(|(i, _)| (claimed[*i].id, items[*i].id.clone()))
                .collect();
            // Due again soon, not after the whole lease: the database still holds the truth.
            let retry_at = Utc::now() + TimeDelta::seconds(30);
            self.release(&released, retry_at).await?;
            if published == 0 {
                anyhow::bail!("no work item could be published: {}", failed[0].1);
            }
        }
        tracing::debug!(published, "published a batch");
        Ok(published)
    }

    /// Ticks until `shutdown`. While one batch publishes, the next is claimed: the database
    /// and JetStream each wait on the other otherwise. A batch claimed when `shutdown` comes
    /// is still published (or handed back) before returning, so no repository waits out its
    /// lease for nothing.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut backoff = self.backoff();
        let mut last_backlog = Instant::now() - BACKLOG_EVERY;
        let mut claimed: Vec<claim::Claimed> = Vec::new();
        // None: a sweep is due at start-up.
        let mut last_retire: Option<Instant> = None;
        loop {
            let stopping = shutdown.is_cancelled();
            if stopping && claimed.is_empty() {
                break;
            }
            if !stopping && last_retire.is_none_or(|t| t.elapsed() >= RETIRE_EVERY) {
                // A failed sweep waits for the next one: nothing is lost meanwhile.
                last_retire = Some(Instant::now());
                if let Err(e) = self.retire_unasked().await {
                    tracing::warn!(error = %format!("{e:#}"), "retirement sweep failed");
                }
            }
            let in_flight = claimed.len() as u64;
            let batch = std::mem::take(&mut claimed);
            let next = async {
                if stopping {
                    Ok(Claim::Idle)
                } else {
                    self.claim_next(in_flight).await
                }
            };
            let (published, next) = tokio::join!(self.publish(batch), next);
            let mut pause = None;
            if let Err(e) = published {
                let p = backoff.next().unwrap_or(self.settings.backoff_cap);
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?p, "publishing failed");
                pause = Some(p);
            }
            match next {
                Ok(Claim::Batch(batch)) => {
                    claimed = batch;
                    if pause.is_none() {
                        backoff = self.backoff();
                    }
                    if last_backlog.elapsed() >= BACKLOG_EVERY {
                        last_backlog = Instant::now();
                        self.refresh_backlog().await;
                    }
                }
                Ok(Claim::Full) if last_backlog.elapsed() >= BACKLOG_EVERY => {
                    // No claim while the queue is full: the count keeps the metric and
                    // /readyz true to the database.
                    last_backlog = Instant::now();
                    self.refresh_backlog().await;
                    pause =
                        pause.or_else(|| Some(backoff.next().unwrap_or(self.settings.backoff_cap)));
                }
                Ok(Claim::Idle | Claim::Full) => {
                    pause =
                        pause.or_else(|| Some(backoff.next().unwrap_or(self.settings.backoff_cap)));
                }
                Err(e) => {
                    let p = backoff.next().unwrap_or(self.settings.backoff_cap);
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?p, "producer tick failed");
                    pause = pause.or(Some(p));
                }
            }
            if let Some(pause) = pause {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        tracing::info!("producer stopped");
    }

    /// Retires the discovered repositories nobody has asked for within `retire_after`, a
    /// bounded statement at a time until fewer are left than one takes. Returns how many.
    pub async fn retire_unasked(&self) -> anyhow::Result<u64> {
        let Some(after) = self.settings.retire_after else {
            return Ok(0);
        };
        let mut retired = 0;
        loop {
            let batch = retire::retire_batch(
                &self.pool,
                self.settings.db_timeouts,
                after,
                retire::RETIRE_ROWS,
            )
            .await;
            let n = match self.db.observe(batch) {
                Ok(n) => n,
                Err(e) => {
                    // What earlier statements committed is retired all the same.
                    self.retired(retired, after);
                    return Err(e).context("retiring discovered repositories nobody asks for");
                }
            };
            self.metrics.retired.inc_by(n);
            retired += n;
            if n < retire::RETIRE_ROWS as u64 {
                self.retired(retired, after);
                return Ok(retired);
            }
        }
    }

    fn retired(&self, retired: u64, after: TimeDelta) {
        if retired > 0 {
            tracing::info!(
                retired,
                unasked_days = after.num_days(),
                "retired discovered repositories nobody asked for"
            );
        }
    }

    async fn refresh_backlog(&self) {
        let counted = claim::backlog(&self.pool, self.settings.db_timeouts).await;
        match self.db.observe(counted) {
            Ok((due, oldest)) => {
                self.metrics.due_backlog.set(due);
                let age = oldest.map_or(0, |t| (Utc::now() - t).num_seconds().max(0));
                self.metrics.oldest_overdue_seconds.set(age);
            }
            Err(e) => tracing::warn!(error = %e, "counting the due backlog failed"),
        }
    }

    /// Hands claims back, retrying a few times on the database's own trouble (a sink holding
    /// the rows past the lock timeout, a lost connection): a hand-back that fails leaves the
    /// repositories waiting out the whole lease.
    async fn release(
        &self,
        released: &[(i64, String)],
        retry_at: chrono::DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut pauses = self.backoff().take(4);
        loop {
            let outcome =
                claim::release(&self.pool, self.settings.db_timeouts, released, retry_at).await;
            match self.db.observe(outcome) {
                Ok(()) => return Ok(()),
                Err(e) if ErrorKind::of(&e) != ErrorKind::Data => match pauses.next() {
                    Some(pause) => {
                        tracing::warn!(error = %e, retry_in = ?pause, "handing back claims failed; retrying");
                        tokio::time::sleep(pause).await;
                    }
                    None => return Err(e).context("handing back unpublished repositories"),
                },
                Err(e) => return Err(e).context("handing back unpublished repositories"),
            }
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        fleet_runtime::retry::producer_claim(self.settings.backoff_cap).pauses()
    }
}
