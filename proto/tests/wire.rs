//! The wire format as other services and people produce it.

use fleet_proto::v1::{FailureClass, WorkFailure, WorkItem, WorkReason};
use prost::Message;

#[test]
fn hand_written_json_work_item() {
    // What `nats pub scorecard.work.manual '{"repo":"github.com/ossf/scorecard"}'` sends.
    let item: WorkItem = serde_json::from_str(r#"{"repo":"github.com/ossf/scorecard"}"#).unwrap();
    assert_eq!(item.repo, "github.com/ossf/scorecard");
    assert_eq!(item.id, "");
    assert_eq!(item.reason(), WorkReason::Unspecified);

    let full: WorkItem = serde_json::from_str(
        r#"{"id":"w-1","repo":"github.com/o/n","commit":"abc","reason":"WORK_REASON_MANUAL",
            "priority":5,"enqueuedAt":"2026-11-26T10:00:00Z","attemptOf":"w-0"}"#,
    )
    .unwrap();
    assert_eq!(full.reason(), WorkReason::Manual);
    assert_eq!(full.commit.as_deref(), Some("abc"));
    assert_eq!(full.enqueued_at.unwrap().seconds, 1_795_687_200);
    assert_eq!(full.attempt_of.as_deref(), Some("w-0"));
}

#[test]
fn json_rejects_garbage_with_a_reason() {
    let err = serde_json::from_str::<WorkItem>(r#"{"repo": 7}"#).unwrap_err();
    assert!(err.to_string().contains("string"), "{err}");
    assert!(serde_json::from_str::<WorkItem>(r#"{"reason":"WHENEVER"}"#).is_err());
}

#[test]
fn protobuf_round_trip_keeps_everything() {
    let item = WorkItem {
        id: "w-9".into(),
        repo: "github.com/o/n".into(),
        commit: None,
        reason: WorkReason::Replay as i32,
        priority: -3,
        enqueued_at: Some(fleet_proto::Timestamp {
            seconds: 1,
            nanos: 2,
        }),
        attempt_of: Some("w-8".into()),
    };
    let failure = WorkFailure {
        work_id: item.id.clone(),
        item: Some(item.clone()),
        class: FailureClass::Timeout as i32,
        message: "deadline".into(),
        attempts: 3,
        source_payload: vec![0xff, 0x00],
        ..Default::default()
    };
    let bytes = failure.encode_to_vec();
    let back = WorkFailure::decode(bytes.as_slice()).unwrap();
    assert_eq!(back, failure);
    let json = serde_json::to_string(&back).unwrap();
    assert!(
        json.contains(r#""class":"FAILURE_CLASS_TIMEOUT""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<WorkFailure>(&json).unwrap(), failure);
}
