//! Publishing to JetStream with `Nats-Msg-Id`, so a retried publish is dropped by the server's
//! dedup: one message ([`publish_once`]) or work items pipelined ([`publish_all`]: many
//! publishes in flight, their acknowledgements awaited as a window, not one round trip each).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::subject::ToSubject;
use bytes::Bytes;
use chrono::Utc;
use fleet_proto::v1::{WorkItem, WorkReason};
use fleet_proto::{RepoName, timestamp};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message as _;

/// Publishes awaiting their ack at once: enough to hide the round trip, bounded so a stalled
/// server cannot make the producer buffer without limit.
pub const WINDOW: usize = 512;

/// Attempts per item before it is handed back to the database for later.
const ATTEMPTS: usize = 3;

/// Sends `payload` to `subject` with `Nats-Msg-Id` = `id`: within the stream's duplicate window
/// the server keeps one copy however often it is sent. The returned future is the server's
/// ack, for callers that pipeline many sends.
pub async fn send_once(
    js: &Context,
    subject: impl ToSubject,
    id: &str,
    payload: Bytes,
) -> Result<PublishAckFuture, PublishError> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers(subject, headers, payload).await
}

/// [`send_once`], and waits for the server's ack: the message is stored (or was already).
pub async fn publish_once(
    js: &Context,
    subject: impl ToSubject,
    id: &str,
    payload: Bytes,
) -> Result<(), PublishError> {
    send_once(js, subject, id, payload).await?.await.map(|_| ())
}

/// Publishes one work item to `subject` under its id, once, and waits for the server's ack.
pub async fn publish_item(
    js: &Context,
    subject: impl ToSubject,
    item: &WorkItem,
) -> Result<(), PublishError> {
    publish_once(js, subject, &item.id, item.encode_to_vec().into()).await
}

/// A new work item; ids are UUIDv7 (time-ordered, so they sort by enqueue time in logs).
pub fn work_item(repo: &RepoName, reason: WorkReason, priority: i32) -> WorkItem {
    WorkItem {
        id: uuid::Uuid::now_v7().to_string(),
        repo: repo.to_string(),
        commit: None,
        reason: reason as i32,
        priority,
        enqueued_at: Some(timestamp(Utc::now())),
        attempt_of: None,
    }
}

/// Publishes `items` to `subject`; returns the indexes that could not be published.
pub async fn publish_all(js: &Context, subject: &str, items: &[WorkItem]) -> Vec<(usize, String)> {
    let mut todo: Vec<usize> = (0..items.len()).collect();
    let mut last_error = vec![String::new(); items.len()];
    for attempt in 0..ATTEMPTS {
        if todo.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let mut failed = Vec::new();
        let mut acks = FuturesUnordered::new();
        for &i in &todo {
            if acks.len() >= WINDOW
                && let Some((j, result)) = acks.next().await
            {
                note(result, j, &mut failed, &mut last_error);
            }
            let item = &items[i];
            match send_once(
                js,
                subject.to_owned(),
                &item.id,
                item.encode_to_vec().into(),
            )
            .await
            {
                Ok(ack) => {
                    acks.push(async move { (i, ack.await.map(|_| ()).map_err(|e| e.to_string())) })
                }
                Err(e) => {
                    last_error[i] = e.to_string();
                    failed.push(i);
                }
            }
        }
        while let Some((j, result)) = acks.next().await {
            note(result, j, &mut failed, &mut last_error);
        }
        todo = failed;
    }
    todo.into_iter()
        .map(|i| (i, std::mem::take(&mut last_error[i])))
        .collect()
}

fn note(result: Result<(), String>, i: usize, failed: &mut Vec<usize>, last_error: &mut [String]) {
    if let Err(e) = result {
        last_error[i] = e;
        failed.push(i);
    }
}
