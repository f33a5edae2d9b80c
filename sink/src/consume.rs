//! Pull a batch, write it, ack it: the sink's loop. Nothing is acked before its transaction
//! commits; while PostgreSQL is down the batch is held (with progress acks so JetStream does
//! not hand it elsewhere), retried with capped backoff, and `/readyz` reports not ready.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use backon::{BackoffBuilder, ExponentialBuilder};
use fleet_runtime::dead;
use fleet_runtime::http::Readiness;
use fleet_runtime::topology::Topology;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::decode::{Record, decode};
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::upsert::{Written, write_batch};

/// Longest wait between retries of a failing batch or fetch: an outage is noticed within
/// seconds of its end, and the database is not hammered while it restarts.
const RETRY_CAP: Duration = Duration::from_secs(10);

pub struct Sink {
    pub js: Context,
    pub consumer: PullConsumer,
    pub pool: PgPool,
    pub topology: Topology,
    pub schedule: Schedule,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub batch_size: usize,
    pub batch_wait: Duration,
    /// Batches written at once (each in its own transaction).
    pub writers: usize,
}

/// What happened to one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub messages: usize,
    pub poison: usize,
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
                    let pause = fetch_retry.next().unwrap_or(RETRY_CAP);
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

    /// Writes one batch and acks it. Returns only once the batch is committed and acked, or
    /// on shutdown (then the unwritten messages are nak'ed for prompt redelivery).
    pub async fn process(
        &self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<BatchReport> {
        let mut report = BatchReport {
            messages: messages.len(),
            ..Default::default()
        };
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
                    report.poison += 1;
                }
            }
        }
        if records.is_empty() {
            return Ok(report);
        }
        let Some(written) = self.write_until_committed(&records, &keep, shutdown).await else {
            report.handed_back = true;
            return Ok(report);
        };
        report.written = written;
        for message in &keep {
            // A lost ack only means a redelivery, which the upsert ignores.
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "ack failed; the record will be redelivered and ignored");
            }
        }
        Ok(report)
    }

    async fn write_until_committed(
        &self,
        records: &[Record],
        messages: &[Message],
        shutdown: &CancellationToken,
    ) -> Option<Written> {
        let mut retry = retry_policy();
        loop {
            let started = Instant::now();
            match write_batch(&self.pool, records, &self.schedule).await {
                Ok(written) => {
                    self.readiness.set(true);
                    self.metrics.batches.inc();
                    self.metrics
                        .batch_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.results.inc_by(written.history_rows);
                    self.metrics.failures.inc_by(written.failures_recorded);
                    let seen = records.len() as u64;
                    let new = written.history_rows + written.failures_recorded + written.skipped;
                    self.metrics.duplicates.inc_by(seen.saturating_sub(new));
                    tracing::debug!(records = records.len(), ?written, "batch committed");
                    return Some(written);
                }
                Err(e) => {
                    self.readiness.set(false);
                    self.metrics.db_errors.inc();
                    let pause = retry.next().unwrap_or(RETRY_CAP);
                    tracing::warn!(error = %e, records = records.len(), retry_in = ?pause,
                        "writing a batch failed; holding it");
                    for message in messages {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            for message in messages {
                                let _ = message.ack_with(AckKind::Nak(None)).await;
                            }
                            tracing::warn!("shut down with an unwritten batch: handed back to JetStream");
                            return None;
                        }
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Publishes the poison message to the dead stream, then terminates it: it is never
    /// redelivered, and nothing of it is lost.
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
        tracing::warn!(subject = %message.subject, sequence, %reason, "dead-lettering poison message");
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
                    let pause = retry.next().unwrap_or(RETRY_CAP);
                    tracing::warn!(error = %e, retry_in = ?pause, "dead-lettering failed");
                    let _ = message.ack_with(AckKind::Progress).await;
                    tokio::select! {
                        () = shutdown.cancelled() => anyhow::bail!("shut down while dead-lettering: {e}"),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        self.metrics.poison.inc();
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

fn retry_policy() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(RETRY_CAP)
        .with_jitter()
        .without_max_times()
        .build()
}
