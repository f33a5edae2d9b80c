//! `producer replay`: dead-lettered work back into the queue as REPLAY items. A replayed entry
//! is deleted from the dead stream once its replay is acknowledged, so it is never replayed
//! twice; should the replay fail again, it comes back as a new dead letter (attempt_of says
//! which one it repeats). A replay's id is derived from the dead letter, so a replay repeated
//! after a crash is deduplicated by the server. A dead webhook delivery (class WEBHOOK) goes
//! back to the webhooks stream as it was, same webhook-id, with a fresh retry window.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use chrono::{DateTime, Utc};
use fleet_proto::v1::{FailureClass, WebhookDelivery, WorkFailure, WorkItem, WorkReason};
use fleet_proto::{RepoName, timestamp};
use fleet_runtime::publish::publish_once;
use fleet_runtime::topology::Topology;
use futures::StreamExt;
use prost::Message as _;

/// Dead letters read per fetch.
const PAGE: usize = 500;

/// Namespace of replay ids: the id of a replay is a function of what it replays, so running
/// the same replay twice (after a crash) publishes the same id and the server drops the copy.
const REPLAY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c0e_ca2d_f1ee_7000_8000_0000_7e91_a7ed);

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<DateTime<Utc>>,
    pub classes: Vec<FailureClass>,
    pub repo: Option<RepoName>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// Replayed (or would be, in a dry run) as the new item.
    Replayed {
        sequence: u64,
        failure: Box<WorkFailure>,
        item: WorkItem,
    },
    /// A dead webhook delivery, sent again (or would be) as the delivery it was.
    Redelivered {
        sequence: u64,
        failure: Box<WorkFailure>,
        webhook_id: String,
    },
    /// Cannot be replayed; the reason says why.
    Skipped { sequence: u64, reason: String },
}

/// The new item for a dead letter, or why there is none. Pure.
pub fn replay_item(failure: &WorkFailure, sequence: u64) -> Result<WorkItem, String> {
    let Some(original) = &failure.item else {
        return Err(
            "no work item in it (a poison message): inspect it with `nats stream view`".into(),
        );
    };
    let repo = RepoName::parse(&original.repo).map_err(|e| e.to_string())?;
    let id = uuid::Uuid::new_v5(
        &REPLAY_NAMESPACE,
        format!("{}/{sequence}", failure.work_id).as_bytes(),
    );
    Ok(WorkItem {
        id: id.to_string(),
        repo: repo.to_string(),
        commit: original.commit.clone(),
        reason: WorkReason::Replay as i32,
        priority: original.priority,
        enqueued_at: Some(timestamp(Utc::now())),
        attempt_of: Some(failure.work_id.clone()),
    })
}

/// The webhook id of a dead delivery, if it can go back to `deliver_subject` (this fleet's
/// webhooks subject: a letter from another prefix's fleet is not ours to send). Pure.
pub fn redelivery(failure: &WorkFailure, deliver_subject: &str) -> Result<String, String> {
    if failure.source_subject != deliver_subject {
        return Err(format!(
            "a webhook delivery from {:?}, not this fleet's {deliver_subject}",
            failure.source_subject
        ));
    }
    WebhookDelivery::decode(failure.source_payload.as_slice())
        .map(|d| d.webhook_id)
        .map_err(|e| format!("an undecodable webhook delivery: {e}"))
}

fn matches(filter: &Filter, failure: &WorkFailure) -> bool {
    let repo_ok = filter.repo.as_ref().is_none_or(|want| {
        let named = failure
            .item
            .as_ref()
            .map(|i| i.repo.as_str())
            .unwrap_or(&failure.repo);
        RepoName::parse(named).is_ok_and(|r| r.key() == want.key())
    });
    let class_ok =
        filter.classes.is_empty() || filter.classes.iter().any(|c| *c as i32 == failure.class);
    repo_ok && class_ok
}

/// Walks the dead stream (filtered by class through subjects, by time through the start
/// position) and replays what matches, unless `dry_run`.
pub async fn replay(
    js: &Context,
    topology: &Topology,
    filter: &Filter,
    dry_run: bool,
) -> anyhow::Result<Vec<Entry>> {
    let stream = js
        .get_stream(topology.dead_stream())
        .await
        .context("opening the dead-letter stream")?;
    let entries = pick(&stream, topology, filter).await?;
    if !dry_run {
        republish(js, &stream, topology, &entries).await?;
    }
    Ok(entries)
}

/// Reads the whole dead stream (the part `filter` names) and says what would become of each.
async fn pick(
    stream: &async_nats::jetstream::stream::Stream,
    topology: &Topology,
    filter: &Filter,
) -> anyhow::Result<Vec<Entry>> {
    let filter_subjects = if filter.classes.is_empty() {
        vec![topology.dead_subjects()]
    } else {
        filter
            .classes
            .iter()
            .map(|c| topology.dead_subject(c.name()))
            .collect()
    };
    let deliver_policy = match filter.since {
        Some(t) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp(t.timestamp())
                .context("--since is out of range")?,
        },
        None => DeliverPolicy::All,
    };
    // An ephemeral reader: no state left behind on the server once it is idle.
    let reader = stream
        .create_consumer(pull::Config {
            filter_subjects,
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .context("reading the dead-letter stream")?;
    let mut entries = Vec::new();
    loop {
        // The expiry bounds the wait on the client too: a lost request cannot hang the command.
        let mut page = reader
            .fetch()
            .max_messages(PAGE)
            .expires(std::time::Duration::from_secs(5))
            .messages()
            .await
            .context("fetching dead letters")?;
        let mut got = 0;
        while let Some(message) = page.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("fetching dead letters: {e}"))?;
            got += 1;
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            entries.extend(entry(
                filter,
                sequence,
                &message.payload,
                &topology.webhook_deliver_subject(),
            ));
        }
        if got == 0 {
            return Ok(entries);
        }
    }
}

/// What becomes of dead letter `sequence`, or `None` when `filter` leaves it out.
fn entry(filter: &Filter, sequence: u64, payload: &[u8], deliver_subject: &str) -> Option<Entry> {
    let failure = match WorkFailure::decode(payload) {
        Ok(f) => f,
        Err(e) => {
            return Some(Entry::Skipped {
                sequence,
                reason: format!("undecodable: {e}"),
            });
        }
    };
    if !matches(filter, &failure) {
        return None;
    }
    if failure.class == FailureClass::Webhook as i32 {
        return Some(match redelivery(&failure, deliver_subject) {
            Ok(webhook_id) => Entry::Redelivered {
                sequence,
                failure: Box::new(failure),
                webhook_id,
            },
            Err(reason) => Entry::Skipped { sequence, reason },
        });
    }
    Some(match replay_item(&failure, sequence) {
        Ok(item) => Entry::Replayed {
            sequence,
            failure: Box::new(failure),
            item,
        },
        Err(reason) => Entry::Skipped { sequence, reason },
    })
}

/// Publishes each replayed item, then removes its dead letter: a crash between the two
/// leaves a dead letter whose replay the work stream's dedup drops if run again at once.
async fn republish(
    js: &Context,
    stream: &async_nats::jetstream::stream::Stream,
    topology: &Topology,
    entries: &[Entry],
) -> anyhow::Result<()> {
    for entry in entries {
        if let Entry::Redelivered {
            sequence, failure, ..
        } = entry
        {
            // The dead letter's id names its delivery message: replaying it twice sends once.
            publish_once(
                js,
                failure.source_subject.clone(),
                &format!("replay-{}", failure.work_id),
                failure.source_payload.clone().into(),
            )
            .await
            .with_context(|| format!("publishing the replay of {}", failure.work_id))?;
            stream
                .delete_message(*sequence)
                .await
                .with_context(|| format!("removing replayed dead letter {sequence}"))?;
            continue;
        }
        let Entry::Replayed { sequence, item, .. } = entry else {
            continue;
        };
        publish_once(
            js,
            topology.scheduled_subject(),
            &item.id,
            item.encode_to_vec().into(),
        )
        .await
        .with_context(|| {
            format!(
                "publishing the replay of {}",
                item.attempt_of.as_deref().unwrap_or("?")
            )
        })?;
        stream
            .delete_message(*sequence)
            .await
            .with_context(|| format!("removing replayed dead letter {sequence}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(class: FailureClass, repo: &str) -> WorkFailure {
        WorkFailure {
            work_id: "w-1".into(),
            item: Some(WorkItem {
                id: "w-1".into(),
                repo: repo.into(),
                commit: Some("abc".into()),
                priority: 7,
                ..Default::default()
            }),
            class: class as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_replay_repeats_the_item_with_a_stable_new_id() {
        let f = failure(FailureClass::Timeout, "github.com/a/b");
        let a = replay_item(&f, 9).unwrap();
        let b = replay_item(&f, 9).unwrap();
        assert_eq!(a.id, b.id, "same dead letter, same replay id");
        assert_ne!(a.id, replay_item(&f, 10).unwrap().id);
        assert_eq!(a.reason(), WorkReason::Replay);
        assert_eq!(a.attempt_of.as_deref(), Some("w-1"));
        assert_eq!(
            (a.repo.as_str(), a.commit.as_deref(), a.priority),
            ("github.com/a/b", Some("abc"), 7)
        );
    }

    #[test]
    fn poison_and_bad_names_are_skipped_with_a_reason() {
        let mut poison = failure(FailureClass::Poison, "github.com/a/b");
        poison.item = None;
        assert!(replay_item(&poison, 1).unwrap_err().contains("poison"));
        let bad = failure(FailureClass::Poison, "github.com/a/..");
        assert!(
            replay_item(&bad, 1)
                .unwrap_err()
                .contains("not repository names")
        );
    }

    #[test]
    fn a_dead_webhook_goes_back_to_this_fleets_webhooks_subject_only() {
        let delivery = WebhookDelivery {
            webhook_id: "msg_1".into(),
            ..Default::default()
        };
        let mut f = failure(FailureClass::Webhook, "github.com/a/b");
        f.source_subject = "scorecard.webhooks.deliver".into();
        f.source_payload = delivery.encode_to_vec();
        assert_eq!(
            redelivery(&f, "scorecard.webhooks.deliver").unwrap(),
            "msg_1"
        );
        assert!(redelivery(&f, "p.scorecard.webhooks.deliver").is_err());
        f.source_payload = vec![0xff];
        assert!(redelivery(&f, "scorecard.webhooks.deliver").is_err());
    }

    #[test]
    fn filters_by_class_and_repo() {
        let f = failure(FailureClass::Timeout, "github.com/A/B");
        assert!(matches(&Filter::default(), &f));
        let by_class = Filter {
            classes: vec![FailureClass::Timeout],
            ..Default::default()
        };
        assert!(matches(&by_class, &f));
        let other = Filter {
            classes: vec![FailureClass::ScanFailed],
            ..Default::default()
        };
        assert!(!matches(&other, &f));
        let by_repo = Filter {
            repo: RepoName::parse("github.com/a/b").ok(),
            ..Default::default()
        };
        assert!(matches(&by_repo, &f), "case-insensitive");
        let other_repo = Filter {
            repo: RepoName::parse("github.com/a/c").ok(),
            ..Default::default()
        };
        assert!(!matches(&other_repo, &f));
    }
}
