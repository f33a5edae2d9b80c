//! Sending deliveries: pull as many as there are free slots, sign each with its
//! subscription's derived secret (the `standardwebhooks` crate: `webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), POST it, and end it as [`crate::outcome`]
//! decides — ack, hand back with a delay (the same message, so the same webhook-id), or
//! dead-letter.
//!
//! A slot is taken before a message is pulled, and an endpoint (scheme, host, port) holds at
//! most `per_endpoint` of them: a delivery to an endpoint at its share is handed back at once
//! with a short delay, so a hanging endpoint ties up only its own share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Context, Message};
use fleet_proto::v1::{FailureClass, WebhookDelivery, WebhookKind, WorkFailure};
use fleet_runtime::db::{DbHealth, Timeouts};
use fleet_runtime::topology::Topology;
use fleet_runtime::webhook::MasterKey;
use futures::StreamExt as _;
use prost::Message as _;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::client::Client;
use crate::metrics::Metrics;
use crate::outcome::{self, Attempt, Ending, Retries};
use crate::{body, store};

/// A delivery whose endpoint has its share in flight comes back after this: soon enough that
/// a freed share is used, long enough not to spin on a hanging endpoint.
const BUSY_DELAY: Duration = Duration::from_secs(1);

/// When the database or the dead stream cannot be reached, the delivery comes back after this.
const TROUBLE_DELAY: Duration = Duration::from_secs(5);

/// Longest a pull waits for deliveries before looking at the slots (and shutdown) again.
const FETCH_WAIT: Duration = Duration::from_secs(2);

/// Most deliveries asked for in one pull.
const FETCH_MAX: usize = 256;

/// In-flight deliveries per endpoint, shared by this replica's tasks.
#[derive(Debug)]
pub struct Endpoints {
    per: usize,
    busy: Mutex<HashMap<String, usize>>,
}

/// One of an endpoint's slots; given back on drop.
pub struct EndpointSlot {
    endpoints: Arc<Endpoints>,
    key: String,
}

impl Endpoints {
    pub fn new(per: usize) -> Arc<Self> {
        Arc::new(Self {
            per: per.max(1),
            busy: Mutex::new(HashMap::new()),
        })
    }

    /// A slot of `key`'s, or `None` when it has its share.
    pub fn try_take(self: &Arc<Self>, key: &str) -> Option<EndpointSlot> {
        let mut busy = self.busy.lock().expect("endpoints lock");
        let n = busy.entry(key.to_owned()).or_insert(0);
        if *n >= self.per {
            return None;
        }
        *n += 1;
        Some(EndpointSlot {
            endpoints: self.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for EndpointSlot {
    fn drop(&mut self) {
        let mut busy = self.endpoints.busy.lock().expect("endpoints lock");
        if let Some(n) = busy.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&self.key);
            }
        }
    }
}

/// The endpoint a URL is sent to, as the per-endpoint bound counts it.
pub fn endpoint_of(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.origin().ascii_serialization())
}

/// What one delivery message became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Sent; `Ending` says what came of it.
    Sent(Ending),
    /// Its endpoint had its share in flight: handed back for later.
    Busy,
    /// Its subscription is gone: dropped.
    Unsubscribed,
    /// Unreadable: dead-lettered.
    Poison(String),
    /// The database or NATS failed: handed back for later.
    Trouble(String),
}

pub struct Deliverer {
    pub js: Context,
    pub consumer: PullConsumer,
    pub pool: PgPool,
    pub timeouts: Timeouts,
    pub topology: Topology,
    pub metrics: Metrics,
    /// Database errors counted, and not ready while they last (shared with the fan-out).
    pub db: DbHealth,
    pub client: Client,
    pub master: MasterKey,
    pub retries: Retries,
    pub api_public_url: String,
    pub max_in_flight: usize,
    pub endpoints: Arc<Endpoints>,
}

impl Deliverer {
    /// Sends deliveries until `shutdown`, then waits for those in flight (each bounded by
    /// the request timeout).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let slots = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        let tracker = TaskTracker::new();
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            };
            let mut permits = vec![first];
            while permits.len() < FETCH_MAX {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let fetched = self
                .consumer
                .fetch()
                .max_messages(permits.len())
                .expires(FETCH_WAIT)
                .messages()
                .await;
            let mut batch = match fetched {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling deliveries failed; trying again");
                    // Never back off holding slots.
                    drop(permits);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(TROUBLE_DELAY) => continue,
                    }
                }
            };
            while let Some(next) = batch.next().await {
                let message = match next {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "pulling deliveries failed");
                        break;
                    }
                };
                let Some(permit) = permits.pop() else { break };
                let me = self.clone();
                tracker.spawn(async move {
                    me.handle(&message).await;
                    drop(permit);
                });
            }
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    /// One delivery message, start to end (the step tests drive).
    pub async fn handle(&self, message: &Message) -> Handled {
        let handled = self.attempt(message).await;
        let acked = match &handled {
            Handled::Sent(Ending::Retry { after }) => {
                message.ack_with(AckKind::Nak(Some(*after))).await
            }
            Handled::Sent(_) | Handled::Unsubscribed | Handled::Poison(_) => message.ack().await,
            Handled::Busy => message.ack_with(AckKind::Nak(Some(BUSY_DELAY))).await,
            Handled::Trouble(_) => message.ack_with(AckKind::Nak(Some(TROUBLE_DELAY))).await,
        };
        if let Err(e) = acked {
            // Unacked, it comes back after the ack wait: at least once still holds.
            tracing::warn!(error = %e, "acknowledging a delivery failed");
        }
        handled
    }

    async fn attempt(&self, message: &Message) -> Handled {
        let (sequence, age) = match message.info() {
            Ok(info) => {
                let age = time::OffsetDateTime::now_utc() - info.published;
                (
                    info.stream_sequence,
                    Duration::try_from(age).unwrap_or_default(),
                )
            }
            Err(_) => (0, Duration::ZERO),
        };
        let decoded = WebhookDelivery::decode(message.payload.as_ref())
            .map_err(|e| format!("undecodable WebhookDelivery: {e}"))
            .and_then(|d| {
                let id = Uuid::parse_str(&d.subscription_id).map_err(|_| {
                    format!("subscription id {:?} is not a uuid", d.subscription_id)
                })?;
                let kind = match WebhookKind::try_from(d.kind) {
                    Ok(WebhookKind::ScoreChanged) => "score_changed",
                    Ok(WebhookKind::Ping) => "ping",
                    _ => return Err(format!("unknown delivery kind {}", d.kind)),
                };
                Ok((d, id, kind))
            });
        let (delivery, subscription, kind) = match decoded {
            Ok(ok) => ok,
            Err(reason) => return self.poison(message, sequence, reason).await,
        };
        let target = match store::target(&self.pool, self.timeouts, subscription).await {
            Ok(Some(t)) => {
                self.db.succeeded();
                t
            }
            Ok(None) => {
                tracing::debug!(%subscription, webhook_id = %delivery.webhook_id,
                    "subscription deleted; delivery dropped");
                return Handled::Unsubscribed;
            }
            Err(e) => return self.database_trouble(&e),
        };
        let Some(_slot) = self.endpoints.try_take(&endpoint_of(&target.url)) else {
            self.metrics.busy.inc();
            return Handled::Busy;
        };
        let body = match body::render(&delivery, &self.api_public_url) {
            Ok(b) => b,
            Err(e) => return self.poison(message, sequence, e.to_string()).await,
        };
        let secret = self
            .master
            .subscription_secret(subscription, &target.secret_salt);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = standardwebhooks::Webhook::from_bytes(secret.bytes().to_vec())
            .and_then(|w| w.sign(&delivery.webhook_id, timestamp, &body));
        let signature = match signature {
            Ok(s) => s,
            Err(e) => {
                return self
                    .poison(message, sequence, format!("signing: {e}"))
                    .await;
            }
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            (
                standardwebhooks::HEADER_WEBHOOK_ID,
                delivery.webhook_id.clone(),
            ),
            (
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            ),
            (standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature),
        ] {
            match http::HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(_) => {
                    return self
                        .poison(message, sequence, format!("webhook id unfit for {name}"))
                        .await;
                }
            }
        }

        self.metrics.in_flight.inc();
        let started = Instant::now();
        let attempt = self.client.post(&target.url, headers, body).await;
        self.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.in_flight.dec();
        let ending = outcome::decide(&attempt, age, &self.retries);
        if matches!(attempt, Attempt::Refused(_)) {
            self.metrics.refused.inc();
        }
        if let Ending::Dead { reason } = &ending {
            let failure = WorkFailure {
                // Per stream message: a replayed delivery that dies again is a new letter.
                work_id: format!("webhook-{}-{sequence}", delivery.webhook_id),
                class: FailureClass::Webhook as i32,
                message: reason.clone(),
                failed_at: Some(fleet_proto::timestamp(chrono::Utc::now())),
                source_subject: message.subject.to_string(),
                source_payload: message.payload.to_vec(),
                repo: delivery
                    .event
                    .as_ref()
                    .map(|e| e.repo.clone())
                    .unwrap_or_default(),
                attempts: message
                    .info()
                    .map(|i| u32::try_from(i.delivered).unwrap_or(0))
                    .unwrap_or(0),
                ..Default::default()
            };
            if let Err(e) = fleet_runtime::dead::publish(&self.js, &self.topology, &failure).await {
                return Handled::Trouble(e.to_string());
            }
        }
        let (status, error) = match &attempt {
            Attempt::Status { code, said } => {
                (Some(*code), (!said.is_empty()).then(|| said.clone()))
            }
            Attempt::Failed(why) | Attempt::Refused(why) => (None, Some(why.clone())),
        };
        let error = match &ending {
            Ending::Dead { reason } => Some(reason.clone()),
            _ => error,
        };
        let record = store::Record {
            subscription,
            webhook_id: &delivery.webhook_id,
            kind,
            status,
            error,
            ending: &ending,
            was_failing: target.failing,
        };
        if let Err(e) = store::record(&self.pool, self.timeouts, &record).await {
            // The delivery's fate is settled (sent, or dead-lettered): a lost log line must
            // not send it again.
            let why = self.db.failed(&e);
            tracing::warn!(error = %why, %subscription,
                "recording a delivery attempt failed");
        }
        self.metrics.attempt(ending.outcome());
        match &ending {
            Ending::Delivered => {
                self.metrics
                    .delivered_after_seconds
                    .observe(age.as_secs_f64());
                tracing::debug!(%subscription, webhook_id = %delivery.webhook_id, "delivered");
            }
            Ending::Retry { after } => {
                tracing::info!(%subscription, webhook_id = %delivery.webhook_id,
                    attempt = %outcome::describe(&attempt), retry_in = ?after, "delivery failed");
            }
            Ending::Dead { reason } => {
                tracing::warn!(%subscription, webhook_id = %delivery.webhook_id, %reason,
                    "delivery dead-lettered; subscription marked failing");
            }
        }
        Handled::Sent(ending)
    }

    async fn poison(&self, message: &Message, sequence: u64, reason: String) -> Handled {
        let failure = fleet_runtime::dead::poison(
            &self.topology.webhooks_stream(),
            sequence,
            &message.subject,
            &message.payload,
            reason.clone(),
            1,
        );
        if let Err(e) = fleet_runtime::dead::publish(&self.js, &self.topology, &failure).await {
            return Handled::Trouble(e.to_string());
        }
        self.metrics.poison.inc();
        tracing::warn!(%reason, "undeliverable delivery message dead-lettered");
        Handled::Poison(reason)
    }

    fn database_trouble(&self, e: &sqlx::Error) -> Handled {
        Handled::Trouble(self.db.failed(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_holds_at_most_its_share_and_gets_it_back() {
        let endpoints = Endpoints::new(2);
        let a = endpoint_of("https://hooks.example.com/a?token=1");
        assert_eq!(a, "https://hooks.example.com");
        assert_eq!(a, endpoint_of("https://hooks.example.com:443/b"));
        let one = endpoints.try_take(&a).unwrap();
        let _two = endpoints.try_take(&a).unwrap();
        assert!(endpoints.try_take(&a).is_none(), "full");
        assert!(endpoints.try_take("https://other.example").is_some());
        drop(one);
        assert!(endpoints.try_take(&a).is_some(), "a slot came back");
    }
}
