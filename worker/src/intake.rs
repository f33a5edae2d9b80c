//! A work message to a validated work item, or the reason it is poison. Accepts protobuf
//! (what the producer sends), the protobuf JSON mapping, and a bare `github.com/owner/name`
//! body, so a person can enqueue with the stock `nats pub`.

use async_nats::HeaderMap;
use fleet_proto::RepoName;
use fleet_proto::v1::{WorkItem, WorkReason};
use fleet_runtime::topology::WorkLane;
use prost::Message as _;

/// Longest work id accepted: ids name Jobs (hashed) and rows; anything longer is not ours.
const MAX_ID_LEN: usize = 128;

/// Namespace for ids given to hand-written items that carry none.
const DERIVED_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c0e_ca2d_f1ee_7000_8000_0000_0000_1d5a);

/// Decodes and validates. `stream_sequence` names an id-less item stably across redeliveries,
/// so a redelivered hand-written request still maps to one Job; an item without a reason
/// takes its `lane`'s.
pub fn decode(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    stream: &str,
    stream_sequence: u64,
    lane: WorkLane,
) -> Result<WorkItem, String> {
    let content_type = headers
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str().to_ascii_lowercase());
    let text = std::str::from_utf8(payload).ok().map(str::trim);
    let mut item = if content_type.as_deref().is_some_and(|c| c.contains("json"))
        || text.is_some_and(|t| t.starts_with('{'))
    {
        serde_json::from_slice::<WorkItem>(payload)
            .map_err(|e| format!("invalid work item JSON: {e}"))?
    } else if let Some(repo) = text.filter(|t| !t.is_empty() && !t.contains(char::is_control)) {
        if content_type
            .as_deref()
            .is_some_and(|c| c.contains("protobuf"))
        {
            decode_protobuf(payload)?
        } else {
            // A bare repository name, as typed into `nats pub`.
            WorkItem {
                repo: repo.to_owned(),
                ..Default::default()
            }
        }
    } else if payload.is_empty() {
        return Err("empty work message".into());
    } else {
        decode_protobuf(payload)?
    };
    let repo = RepoName::parse(&item.repo).map_err(|e| format!("invalid repository: {e}"))?;
    item.repo = repo.to_string();
    if item.id.len() > MAX_ID_LEN || item.id.contains(char::is_control) {
        return Err(format!(
            "work id is not a valid id ({} bytes)",
            item.id.len()
        ));
    }
    if item.id.is_empty() {
        item.id = uuid::Uuid::new_v5(
            &DERIVED_ID_NAMESPACE,
            format!("{stream}/{stream_sequence}").as_bytes(),
        )
        .to_string();
    }
    if item.reason == WorkReason::Unspecified as i32 {
        item.reason = match lane {
            WorkLane::Manual => WorkReason::Manual,
            WorkLane::Discovery => WorkReason::Discovery,
            WorkLane::Scheduled => WorkReason::Scheduled,
        } as i32;
    }
    Ok(item)
}

fn decode_protobuf(payload: &[u8]) -> Result<WorkItem, String> {
    WorkItem::decode(payload)
        .map_err(|e| format!("undecodable work item (neither protobuf nor JSON): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Content-Type", "application/json");
        h
    }

    #[test]
    fn protobuf_from_the_producer() {
        let item = WorkItem {
            id: "w-1".into(),
            repo: "github.com/ossf/scorecard".into(),
            reason: WorkReason::Scheduled as i32,
            ..Default::default()
        };
        assert_eq!(
            decode(None, &item.encode_to_vec(), "S", 1, WorkLane::Scheduled).unwrap(),
            item
        );
    }

    #[test]
    fn what_a_person_types_into_nats_pub() {
        let a = decode(
            None,
            br#"{"repo":"github.com/ossf/scorecard"}"#,
            "S",
            7,
            WorkLane::Manual,
        )
        .unwrap();
        assert_eq!(a.repo, "github.com/ossf/scorecard");
        assert_eq!(a.reason(), WorkReason::Manual);
        assert!(!a.id.is_empty());
        let again = decode(
            None,
            br#"{"repo":"github.com/ossf/scorecard"}"#,
            "S",
            7,
            WorkLane::Manual,
        )
        .unwrap();
        assert_eq!(a.id, again.id, "a redelivery keeps its derived id");
        assert_ne!(
            a.id,
            decode(
                None,
                br#"{"repo":"github.com/ossf/scorecard"}"#,
                "S",
                8,
                WorkLane::Manual
            )
            .unwrap()
            .id
        );

        let bare = decode(
            None,
            b"https://github.com/OSSF/Scorecard.git\n",
            "S",
            9,
            WorkLane::Manual,
        )
        .unwrap();
        assert_eq!(bare.repo, "github.com/OSSF/Scorecard");
        let with_header = decode(
            Some(&json_headers()),
            br#" {"repo":"github.com/a/b","priority":3}"#,
            "S",
            1,
            WorkLane::Scheduled,
        )
        .unwrap();
        assert_eq!(
            (with_header.priority, with_header.reason()),
            (3, WorkReason::Scheduled)
        );
    }

    #[test]
    fn an_item_without_a_reason_takes_its_lanes_and_one_with_a_reason_keeps_it() {
        for (lane, reason) in [
            (WorkLane::Manual, WorkReason::Manual),
            (WorkLane::Discovery, WorkReason::Discovery),
            (WorkLane::Scheduled, WorkReason::Scheduled),
        ] {
            let bare = decode(None, b"github.com/a/b", "S", 1, lane).unwrap();
            assert_eq!(bare.reason(), reason, "{lane:?}");
            let replayed = br#"{"repo":"github.com/a/b","reason":"WORK_REASON_REPLAY"}"#;
            let kept = decode(None, replayed, "S", 1, lane).unwrap();
            assert_eq!(kept.reason(), WorkReason::Replay, "{lane:?}");
        }
    }

    #[test]
    fn poison_has_a_reason_a_person_understands() {
        let cases: [(&[u8], &str); 6] = [
            (br#"{"repo":"github.com/-bad/x"}"#, "cannot start with '-'"),
            (br#"{"repo": 5}"#, "invalid work item JSON"),
            (b"{not json", "invalid work item JSON"),
            (b"gitlab.com/a/b", "only github.com"),
            (b"\xff\xff\xff\xff", "undecodable work item"),
            (b"", "empty work message"),
        ];
        for (payload, want) in cases {
            let err = decode(None, payload, "S", 1, WorkLane::Manual).unwrap_err();
            assert!(err.contains(want), "{payload:?}: {err}");
        }
        let long_id = format!(r#"{{"id":"{}","repo":"github.com/a/b"}}"#, "x".repeat(200));
        assert!(
            decode(None, long_id.as_bytes(), "S", 1, WorkLane::Manual)
                .unwrap_err()
                .contains("work id")
        );
    }
}
