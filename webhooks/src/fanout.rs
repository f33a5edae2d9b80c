//! Change events to deliveries: for each `score_changed`, the subscriptions it matches get one
//! delivery each on the webhooks stream, then the event is acked. A delivery's id derives
//! from the event's id and the subscription's, so an event fanned out again (a crash before
//! its ack) queues no second copy: the stream drops it.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use fleet_proto::v1::{ScoreChanged, WebhookDelivery, WebhookKind};
use fleet_runtime::db::{DbHealth, Timeouts};
use fleet_runtime::publish::send_once;
use fleet_runtime::topology::Topology;
use fleet_runtime::webhook::webhook_id;
use futures::StreamExt as _;
use prost::Message as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::matching;
use crate::metrics::Metrics;
use crate::store;

/// How long an event waits before another try after the database or NATS failed it: long
/// enough not to hammer an outage, short against the consumer's ack wait.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Events pulled per batch: fan-outs are a query and a few publishes each.
const BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("looking up the subscriptions of an event")]
    Database(#[source] sqlx::Error),
    #[error("publishing a delivery: {0}")]
    Publish(String),
    #[error("dead-lettering an undecodable event")]
    DeadLetter(#[source] fleet_runtime::dead::DeadLetterError),
    #[error("acknowledging an event: {0}")]
    Ack(String),
}

/// What one event became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fanned {
    /// Deliveries queued (perhaps none: no subscription wanted it).
    Queued(usize),
    /// The event could not be read; it went to the dead stream.
    Poison(String),
}

pub struct Fanout {
    pub js: Context,
    pub consumer: PullConsumer,
    pub pool: PgPool,
    pub timeouts: Timeouts,
    pub topology: Topology,
    pub metrics: Metrics,
    /// Database errors counted, and not ready while they last (shared with the deliverer).
    pub db: DbHealth,
}

impl Fanout {
    /// Fans events out until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut messages = self
            .consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pulling change events: {e}"))?;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pulling change events failed; trying again");
                    continue;
                }
                None => anyhow::bail!("the change events consumer ended"),
            };
            if let Err(e) = self.handle(&message).await {
                tracing::warn!(error = %format!("{e:#}"), "fanning out an event failed; it will be tried again");
                message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await.ok();
            }
        }
    }

    /// Fans one event out and acks it; an error leaves it to the caller to hand back.
    pub async fn handle(&self, message: &Message) -> Result<Fanned, FanoutError> {
        let (sequence, published) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                chrono::DateTime::from_timestamp_nanos(
                    i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
                ),
            ),
            Err(_) => (0, chrono::Utc::now()),
        };
        let event = ScoreChanged::decode(message.payload.as_ref())
            .map_err(|e| format!("undecodable ScoreChanged: {e}"))
            .and_then(|event| match matching::keys(&event) {
                Some(keys) => Ok((event, keys)),
                None => Err(format!("{:?} is not a repository", event.repo)),
            });
        let (event, (repo_key, owner_key)) = match event {
            Ok(ok) => ok,
            Err(reason) => {
                let failure = fleet_runtime::dead::poison(
                    &self.topology.events_stream(),
                    sequence,
                    &message.subject,
                    &message.payload,
                    reason.clone(),
                    1,
                );
                fleet_runtime::dead::publish(&self.js, &self.topology, &failure)
                    .await
                    .map_err(FanoutError::DeadLetter)?;
                self.metrics.poison.inc();
                message
                    .ack()
                    .await
                    .map_err(|e| FanoutError::Ack(e.to_string()))?;
                return Ok(Fanned::Poison(reason));
            }
        };
        let event_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| format!("{}-{sequence}", self.topology.events_stream()));

        let candidates = match store::in_scope(
            &self.pool,
            self.timeouts,
            &repo_key,
            &owner_key,
            published,
        )
        .await
        {
            Ok(c) => {
                self.db.succeeded();
                c
            }
            Err(e) => {
                self.db.failed(&e);
                return Err(FanoutError::Database(e));
            }
        };
        let mut acks = Vec::new();
        for candidate in candidates.iter().filter(|c| c.filters.matches(&event)) {
            let delivery = WebhookDelivery {
                webhook_id: webhook_id(&event_id, candidate.id),
                subscription_id: candidate.id.to_string(),
                kind: WebhookKind::ScoreChanged as i32,
                event: Some(event.clone()),
                // The event's time, not now: a refanned copy is byte for byte the same.
                created_at: Some(fleet_proto::timestamp(published)),
            };
            let ack = send_once(
                &self.js,
                self.topology.webhook_deliver_subject(),
                &delivery.webhook_id,
                delivery.encode_to_vec().into(),
            )
            .await
            .map_err(|e| FanoutError::Publish(e.to_string()))?;
            acks.push(ack);
        }
        let queued = acks.len();
        for ack in acks {
            ack.await.map_err(|e| FanoutError::Publish(e.to_string()))?;
        }
        message
            .ack()
            .await
            .map_err(|e| FanoutError::Ack(e.to_string()))?;
        self.metrics.events.inc();
        self.metrics.queued.inc_by(queued as u64);
        tracing::debug!(repo = %event.repo, event = %event_id, queued, "event fanned out");
        Ok(Fanned::Queued(queued))
    }
}
