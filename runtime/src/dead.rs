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
/// caller may then terminate the original message without losing anything. Every record has a
/// work id (a poison message's names its stream position): a retried dead-lettering of the
/// same one is dropped by the server.
pub async fn publish(
    js: &Context,
    topology: &Topology,
    failure: &WorkFailure,
) -> Result<(), DeadLetterError> {
    let class = FailureClass::try_from(failure.class).unwrap_or(FailureClass::Unspecified);
    let id = if failure.work_id.is_empty() {
        // Not built by this fleet: nothing to dedup it by, and two must not collapse into one.
        uuid::Uuid::now_v7().to_string()
    } else {
        failure.work_id.clone()
    };
    crate::publish::publish_once(
        js,
        topology.dead_subject(class.name()),
        &format!("dead-{id}"),
        failure.encode_to_vec().into(),
    )
    .await
    .map_err(|e| DeadLetterError {
        what: format!("work item {id}"),
        message: e.to_string(),
    })
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
