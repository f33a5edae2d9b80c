//! Dead-lettering, the one way every service does it: the failure (with the work item, or the
//! original bytes of a poison message) goes to `scorecard.dead.<class>` in the dead stream,
//! where operators inspect it (`nats stream view`) and replay it (`producer replay`).

use async_nats::jetstream::Context;
use fleet_proto::v1::{FailureClass, WorkFailure};
use prost::Message as _;

use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
#[error("dead-lettering {what} failed: {message}")]
pub struct DeadLetterError {
    what: String,
    message: String,
}

/// Publishes `failure` to the dead stream and waits for the server's acknowledgement, so the
/// caller may then terminate the original message without losing anything.
pub async fn publish(
    js: &Context,
    topology: &Topology,
    failure: &WorkFailure,
) -> Result<(), DeadLetterError> {
    let class = FailureClass::try_from(failure.class).unwrap_or(FailureClass::Unspecified);
    let subject = topology.dead_subject(class.name());
    let what = if failure.work_id.is_empty() {
        format!("a {} message", class.name())
    } else {
        format!("work item {}", failure.work_id)
    };
    let err = |e: &dyn std::fmt::Display| DeadLetterError {
        what: what.clone(),
        message: e.to_string(),
    };
    let payload = failure.encode_to_vec().into();
    if failure.work_id.is_empty() {
        js.publish(subject, payload)
            .await
            .map_err(|e| err(&e))?
            .await
            .map_err(|e| err(&e))?;
    } else {
        // A retried dead-lettering of the same item is dropped by the server.
        let id = format!("dead-{}", failure.work_id);
        crate::publish::publish_once(js, subject, &id, payload)
            .await
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// A failure record for a message that cannot be processed at all; keeps its bytes. `stream`
/// and `sequence` locate the original, and name the record so re-dead-lettering it is a no-op.
pub fn poison(
    stream: &str,
    sequence: u64,
    subject: &str,
    payload: &[u8],
    reason: String,
    deliveries: u32,
) -> WorkFailure {
    WorkFailure {
        work_id: format!("poison-{stream}-{sequence}"),
        class: FailureClass::Poison as i32,
        message: reason,
        attempts: deliveries,
        failed_at: Some(fleet_proto::timestamp(chrono::Utc::now())),
        source_subject: subject.to_owned(),
        source_payload: payload.to_vec(),
        ..Default::default()
    }
}
