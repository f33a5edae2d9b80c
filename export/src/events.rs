//! The change events of each day, as NDJSON, read from the events stream (which keeps
//! EVENTS_MAX_AGE_DAYS of them). Each line carries its stream sequence, so the oldest day the
//! stream still holds, which may have lost events to its age limit, is completed from an earlier
//! export's copy of it: that copy's events from before the stream's first one come first.

use anyhow::Context as _;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use fleet_proto::v1::ScoreChanged;
use fleet_runtime::topology::Topology;
use futures::TryStreamExt as _;
use prost::Message as _;
use serde_json::json;

use object_store::ObjectStoreExt as _;

use crate::dest::{Destination, Hashed, Written};
use crate::manifest::{Kind, Manifest};

pub struct Day {
    pub date: NaiveDate,
    pub path: String,
    pub lines: u64,
    pub written: Written,
}

/// One line: the event as the fleet published it, with the time it was published and its
/// sequence in the events stream.
pub fn line(event: &ScoreChanged, published: DateTime<Utc>, seq: u64) -> serde_json::Value {
    let scored_at = event
        .scored_at
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.try_into().ok()?));
    json!({
        "repo": event.repo,
        "work_id": event.work_id,
        "first": event.first,
        "previous_score": event.previous_score,
        "score": event.score,
        "commit": event.commit,
        "scored_at": scored_at,
        "published_at": published,
        "seq": seq,
        "checks": event.checks.iter().map(|c| json!({
            "name": c.name, "previous": c.previous, "score": c.score,
        })).collect::<Vec<_>>(),
    })
}

/// Writes a file per publish date of every event in the stream, under `snapshot`; the first
/// day starts with `previous`'s events of that day from before the stream's first.
pub async fn write_days(
    js: &async_nats::jetstream::Context,
    topology: &Topology,
    dest: &Destination,
    snapshot: &str,
    previous: Option<&Manifest>,
) -> anyhow::Result<Vec<Day>> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    let name = topology.events_stream();
    let mut stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        // No service of the fleet has made it yet: no event was ever published.
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            tracing::warn!(stream = %name, "no events stream yet: no events exported");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e).with_context(|| format!("opening the events stream {name}")),
    };
    let state = stream.info().await?.state.clone();
    if state.messages == 0 {
        return Ok(Vec::new());
    }
    let last = state.last_sequence;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut days = Vec::new();
    let mut open: Option<(NaiveDate, String, Hashed, u64)> = None;
    while let Some(message) = messages.try_next().await? {
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = info.stream_sequence;
        let published = DateTime::<Utc>::from_timestamp(
            info.published.unix_timestamp(),
            info.published.nanosecond(),
        )
        .unwrap_or_default();
        // Never back to a day already written: a publish time a moment behind the one before
        // (clocks of a cluster's servers) stays in the day being written.
        let date = match &open {
            Some((d, ..)) => published.date_naive().max(*d),
            None => published.date_naive(),
        };
        if open.as_ref().is_some_and(|(d, ..)| *d != date)
            && let Some((date, path, writer, lines)) = open.take()
        {
            days.push(finish(date, path, writer, lines).await?);
        }
        if open.is_none() {
            let path = format!("events/date={date}/events.ndjson");
            let mut writer = dest.writer(&format!("{snapshot}/{path}"));
            let mut lines = 0;
            if days.is_empty()
                && let Some((kept, n)) = earlier(dest, previous, date, seq).await?
            {
                writer.put(kept).await?;
                lines = n;
            }
            open = Some((date, path, writer, lines));
        }
        let (_, _, writer, lines) = open.as_mut().expect("opened above");
        // An event the fleet cannot read is skipped, never a stopped export.
        match ScoreChanged::decode(message.payload.clone()) {
            Ok(event) => {
                let mut text = serde_json::to_vec(&line(&event, published, seq))?;
                text.push(b'\n');
                writer.put(Bytes::from(text)).await?;
                *lines += 1;
            }
            Err(e) => tracing::warn!(seq, error = %e, "an event that does not decode is left out"),
        }
        // The last one there was at the start, or none left (it expired meanwhile).
        if seq >= last || info.pending == 0 {
            break;
        }
    }
    if let Some((date, path, writer, lines)) = open.take() {
        days.push(finish(date, path, writer, lines).await?);
    }
    Ok(days)
}

/// `previous`'s lines of `date` with a sequence below `first`, and how many.
async fn earlier(
    dest: &Destination,
    previous: Option<&Manifest>,
    date: NaiveDate,
    first: u64,
) -> anyhow::Result<Option<(Bytes, u64)>> {
    let Some((previous, entry)) = previous.and_then(|p| Some((p, p.entry(Kind::Events, date)?)))
    else {
        return Ok(None);
    };
    let path = dest.path(&format!("{}/{}", previous.snapshot, entry.path));
    let text = dest
        .store
        .get(&path)
        .await
        .with_context(|| format!("reading {} of {}", entry.path, previous.snapshot))?
        .bytes()
        .await?;
    let mut kept = Vec::new();
    let mut n = 0;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let seq = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["seq"].as_u64());
        if seq.is_some_and(|s| s < first) {
            kept.extend_from_slice(line);
            kept.push(b'\n');
            n += 1;
        }
    }
    Ok((n > 0).then(|| (Bytes::from(kept), n)))
}

async fn finish(date: NaiveDate, path: String, writer: Hashed, lines: u64) -> anyhow::Result<Day> {
    Ok(Day {
        date,
        path,
        lines,
        written: writer.finish().await?,
    })
}
