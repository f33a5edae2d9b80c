//! Publishing work items to JetStream, pipelined: many publishes are in flight and their
//! acknowledgements are awaited as a window, not one round trip per item. Each carries
//! `Nats-Msg-Id` = work id, so a retried publish is dropped by the server's dedup.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
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
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", item.id.as_str());
            match js
                .publish_with_headers(subject.to_owned(), headers, item.encode_to_vec().into())
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
