//! Pull a batch, write it, ack it: the sink's loop. Nothing is acked before its transaction
//! commits; while PostgreSQL is down the batch is held (with progress acks so JetStream does
//! not hand it elsewhere), retried with capped backoff, and `/readyz` reports not ready.
//! Up to `writers` batches are written at once, each on its own connection, while the next
//! is fetched ([`Sink::run`]).
//!
//! One bad record never stops the sink. An error is judged by its
//! [`fleet_runtime::db::ErrorKind`]: the database's trouble (a lost connection, a timeout, a
//! conflict, a failover, a full disk, a schema or permission problem) holds the batch and
//! retries it; a data or constraint error, or an unknown one that repeats three times for the
//! same records, is the records'. Then the batch is halved until the record stands alone,
//! the rest is committed and acked, and the record is dead-lettered with PostgreSQL's message,
//! SQLSTATE, constraint and table ([`Sink::process`]). An undecodable or invalid message is
//! dead-lettered before the database sees it ([`crate::decode`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use fleet_runtime::db::{self, ErrorKind};
use fleet_runtime::dead;
use fleet_runtime::retry::SINK_WRITE;
use fleet_runtime::topology::Topology;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::decode::{Record, decode};
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::upsert::{Written, write_batch};

/// How often an unclassified error may repeat for the same records before they are taken to
/// be its cause (and halved to find the one).
const REPEATS_BEFORE_SUSPECT: u32 = 3;

/// How one write of a part of a batch ended.
enum Attempt {
    Committed(Written),
    /// PostgreSQL refuses these records for what they are.
    Refused(sqlx::Error),
    /// Shutdown came while the database was failing.
    HandedBack,
}

pub struct Sink {
    pub js: Context,
    pub consumer: PullConsumer,
    pub pool: PgPool,
    pub timeouts: db::Timeouts,
    /// With change events: woken after each commit that recorded some.
    pub events: Option<Arc<Notify>>,
    pub topology: Topology,
    pub schedule: Schedule,
    pub metrics: Metrics,
    /// `metrics.db_errors` and the service's readiness.
    pub db: db::DbHealth,
    pub batch_size: usize,
    pub batch_wait: Duration,
    /// Batches written at once (each in its own transaction).
    pub writers: usize,
}

/// What happened to one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub messages: usize,
    /// Undecodable or invalid: dead-lettered before the database saw them.
    pub poison: usize,
    /// Refused by PostgreSQL for what they are: dead-lettered with its reason.
    pub refused: usize,
    pub written: Written,
    /// Shutdown came while the database was failing: the batch went back to JetStream.
    pub handed_back: bool,
}

impl Sink {
    /// Runs until `shutdown`; the batches in hand are finished (or handed back) first.
    ///
    /// Up to `writers` batches are written at once, each in its own transaction on its own
    /// connection, while the next batch is fetched: one PostgreSQL backend works on one core,
    /// and a batch waits on its commit's WAL flush. Batches that share a repository run one
    /// after the other (each first locks its repositories in id order, so none deadlock), and
    /// cannot undo each other (the latest score only moves forward, history ignores a work id
    /// it has seen).
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut fetch_retry = retry_policy();
        let mut writing = FuturesUnordered::new();
        let writers = self.writers.max(1);
        // The first failed batch stops the fetching; the batches still being written finish
        // (never dropped mid-transaction or between commit and ack) before it is returned.
        let mut failed = None;
        while !shutdown.is_cancelled() && failed.is_none() {
            while writing.len() >= writers && failed.is_none() {
                if let Some(done) = writing.next().await {
                    keep_first(&mut failed, done);
                }
            }
            if failed.is_some() {
                break;
            }
            // The fetch is never dropped half-way for a finished write (its messages would sit
            // unacked until redelivery): finished writes are collected while it runs.
            let fetch = self.fetch();
            tokio::pin!(fetch);
            let batch = loop {
                tokio::select! {
                    () = shutdown.cancelled() => break None,
                    batch = &mut fetch => break Some(batch),
                    Some(done) = writing.next(), if !writing.is_empty() => keep_first(&mut failed, done),
                }
            };
            let Some(batch) = batch else { break };
            match batch {
                Ok(messages) => {
                    fetch_retry = retry_policy();
                    if !messages.is_empty() {
                        writing.push(self.process(messages, &shutdown));
                    }
                }
                Err(e) => {
                    let pause = fetch_retry.next().unwrap_or(SINK_WRITE.cap);
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?pause, "fetching results failed");
                    let sleep = tokio::time::sleep(pause);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = &mut sleep => break,
                            Some(done) = writing.next(), if !writing.is_empty() => keep_first(&mut failed, done),
                        }
                    }
                }
            }
        }
        while let Some(done) = writing.next().await {
            keep_first(&mut failed, done);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        tracing::info!("sink stopped");
        Ok(())
    }

    /// Up to `batch_size` messages, waiting at most `batch_wait` for them.
    pub async fn fetch(&self) -> anyhow::Result<Vec<Message>> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(self.batch_size)
            .expires(self.batch_wait)
            .messages()
            .await
            .context("requesting a batch")?;
        let mut messages = Vec::with_capacity(self.batch_size);
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| anyhow::anyhow!("receiving a batch: {e}"))?);
        }
        Ok(messages)
    }

    /// Writes one batch and acks it. Returns only once every record is committed and acked
    /// or dead-lettered, or on shutdown (then the unwritten messages are nak'ed for prompt
    /// redelivery).
    ///
    /// A record PostgreSQL refuses for what it is (see [`write_until_committed`]) would fail
    /// its batch on every attempt: the batch is halved until that record stands alone, the
    /// rest is committed, and the record is dead-lettered with PostgreSQL's reason. One bad
    /// record among 500 costs about 18 small transactions, once.
    ///
    /// [`write_until_committed`]: Sink::write_until_committed
    pub async fn process(
        &self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<BatchReport> {
        let mut report = BatchReport {
            messages: messages.len(),
            ..Default::default()
        };
        let (records, keep) = self.decode_all(messages, shutdown, &mut report).await?;
        // Parts of `records` still to write, last first.
        let mut parts = Vec::new();
        parts.push(0..records.len());
        let mut settled = vec![false; records.len()];
        while let Some(part) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            let unsettled: Vec<&Message> = keep
                .iter()
                .zip(&settled)
                .filter_map(|(m, done)| (!done).then_some(m))
                .collect();
            match self
                .write_until_committed(&records[part.clone()], &unsettled, shutdown)
                .await
            {
                Attempt::Committed(written) => {
                    report.written += written;
                    for message in &keep[part.clone()] {
                        // A lost ack only means a redelivery, which the upsert ignores.
                        if let Err(e) = message.ack().await {
                            tracing::warn!(error = %e, "ack failed; the record will be redelivered and ignored");
                        }
                    }
                    settled[part].fill(true);
                }
                Attempt::Refused(e) if part.len() == 1 => {
                    let record = &records[part.start];
                    let reason = format!(
                        "{} {}: {}",
                        record.kind(),
                        record.work_id(),
                        db::describe(&e)
                    );
                    if let Err(e) = self.dead_letter(&keep[part.start], reason, shutdown).await {
                        nak_unsettled(&keep, &settled).await;
                        return Err(e);
                    }
                    self.metrics.refused.inc();
                    report.refused += 1;
                    settled[part.start] = true;
                }
                Attempt::Refused(e) => {
                    tracing::info!(records = part.len(), error = %db::describe(&e),
                        "PostgreSQL refused part of a batch; halving it to find the record");
                    let middle = part.start + part.len() / 2;
                    parts.push(middle..part.end);
                    parts.push(part.start..middle);
                }
                Attempt::HandedBack => {
                    nak_unsettled(&keep, &settled).await;
                    tracing::warn!("shut down with an unwritten batch: handed back to JetStream");
                    report.handed_back = true;
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }

    /// The batch's records, with their messages in the same order; a message that is not a
    /// record is dead-lettered on the way.
    async fn decode_all(
        &self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
        report: &mut BatchReport,
    ) -> anyhow::Result<(Vec<Record>, Vec<Message>)> {
        let results = self.topology.results_subject();
        let failures = self.topology.failures_subject();
        let mut records = Vec::with_capacity(messages.len());
        let mut keep = Vec::with_capacity(messages.len());
        for message in messages {
            match decode(&message.subject, &message.payload, &results, &failures) {
                Ok(record) => {
                    records.push(record);
                    keep.push(message);
                }
                Err(reason) => {
                    self.dead_letter(&message, reason, shutdown).await?;
                    self.metrics.poison.inc();
                    report.poison += 1;
                }
            }
        }
        Ok((records, keep))
    }

    /// Writes `records` in one transaction, retrying (with backoff, holding `held` with
    /// progress acks) while the fault is not theirs: a lost connection, a timeout, a conflict,
    /// a schema or permission problem. Returns them refused on a data or constraint error, or
    /// on any other error that repeats [`REPEATS_BEFORE_SUSPECT`] times for the same records.
    async fn write_until_committed(
        &self,
        records: &[Record],
        held: &[&Message],
        shutdown: &CancellationToken,
    ) -> Attempt {
        let mut retry = retry_policy();
        let mut repeated: Option<(String, u32)> = None;
        loop {
            let started = Instant::now();
            let e = match write_batch(
                &self.pool,
                self.timeouts,
                records,
                &self.schedule,
                self.events.is_some(),
            )
            .await
            {
                Ok(written) => {
                    self.committed(records.len(), &written, started);
                    return Attempt::Committed(written);
                }
                Err(e) => e,
            };
            let kind = ErrorKind::of(&e);
            self.db.failed(&e);
            match kind {
                ErrorKind::Data => return Attempt::Refused(e),
                ErrorKind::Other => {
                    let text = e.to_string();
                    let count = match &mut repeated {
                        Some((seen, count)) if *seen == text => {
                            *count += 1;
                            *count
                        }
                        _ => {
                            repeated = Some((text, 1));
                            1
                        }
                    };
                    if count >= REPEATS_BEFORE_SUSPECT {
                        return Attempt::Refused(e);
                    }
                }
                _ => repeated = None,
            }
            let pause = retry.next().unwrap_or(SINK_WRITE.cap);
            tracing::warn!(error = %e, kind = kind.name(), records = records.len(), retry_in = ?pause,
                "writing a batch failed; holding it");
            for message in held {
                let _ = message.ack_with(AckKind::Progress).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Attempt::HandedBack,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Counts a committed batch of `records` and wakes the events' publisher if it made any.
    fn committed(&self, records: usize, written: &Written, started: Instant) {
        self.db.succeeded();
        self.metrics.batches.inc();
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.results.inc_by(written.history_rows);
        self.metrics.failures.inc_by(written.failures_recorded);
        let new = written.history_rows + written.failures_recorded + written.skipped;
        self.metrics
            .duplicates
            .inc_by((records as u64).saturating_sub(new));
        tracing::debug!(records, ?written, "batch committed");
        if written.events > 0
            && let Some(wake) = &self.events
        {
            wake.notify_one();
        }
    }

    /// Publishes the message (poison, or refused by PostgreSQL) to the dead stream, then
    /// terminates it: it is never redelivered, and nothing of it is lost.
    async fn dead_letter(
        &self,
        message: &Message,
        reason: String,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (stream, sequence, delivered) = match message.info() {
            Ok(info) => (
                info.stream.to_owned(),
                info.stream_sequence,
                u32::try_from(info.delivered).unwrap_or(u32::MAX),
            ),
            Err(_) => (self.topology.results_stream(), 0, 1),
        };
        tracing::warn!(subject = %message.subject, sequence, %reason, "dead-lettering a record");
        let failure = dead::poison(
            &stream,
            sequence,
            &message.subject,
            &message.payload,
            reason,
            delivered,
        );
        let mut retry = retry_policy();
        loop {
            match dead::publish(&self.js, &self.topology, &failure).await {
                Ok(()) => break,
                Err(e) => {
                    let pause = retry.next().unwrap_or(SINK_WRITE.cap);
                    tracing::warn!(error = %e, retry_in = ?pause, "dead-lettering failed");
                    let _ = message.ack_with(AckKind::Progress).await;
                    tokio::select! {
                        () = shutdown.cancelled() => anyhow::bail!("shut down while dead-lettering: {e}"),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| anyhow::anyhow!("terminating a dead-lettered message: {e}"))
    }
}

fn keep_first(failed: &mut Option<anyhow::Error>, done: anyhow::Result<BatchReport>) {
    if let Err(e) = done {
        failed.get_or_insert(e);
    }
}

/// Hands the batch's unsettled messages back for redelivery at once, not after the ack wait.
async fn nak_unsettled(keep: &[Message], settled: &[bool]) {
    for (message, done) in keep.iter().zip(settled) {
        if !done {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// Retries of a failing batch or fetch: an outage is noticed within seconds of its end, and
/// the database is not hammered while it restarts.
fn retry_policy() -> impl Iterator<Item = Duration> {
    SINK_WRITE.pauses()
}
