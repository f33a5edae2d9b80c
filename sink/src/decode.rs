//! From a JetStream message to a record the sink can write, or the reason it cannot.
//!
//! Invalid is also what PostgreSQL could not hold or the schedule could not use: a time before
//! 1970 or more than a day ahead of the sink's clock (a result dated years ahead would pin its
//! repository's latest score for good), a work id or check name over [`MAX_KEY_BYTES`] (index
//! keys), a score outside 0–10.

use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::v1::{ScoreResult, WorkFailure};
use fleet_proto::{RepoName, Timestamp};
use prost::Message as _;

/// Longest work id or check name accepted: both are index keys, and PostgreSQL refuses an
/// index entry over ~2.7 kB; real ones are a few dozen bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// How far ahead of the sink's clock a time may be (workers' clocks drift): the latest score
/// only moves forward, so a result dated years ahead would pin a repository's score for good.
const CLOCK_SKEW: TimeDelta = TimeDelta::hours(24);

/// A message the sink understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Result(ScoreResult),
    Failure(WorkFailure),
}

/// What a record is about, once checked: the repository and the work item.
impl Record {
    /// The message type, as people read it in a dead letter.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Result(_) => "ScoreResult",
            Record::Failure(_) => "WorkFailure",
        }
    }

    pub fn work_id(&self) -> &str {
        match self {
            Record::Result(r) => &r.work_id,
            Record::Failure(f) => &f.work_id,
        }
    }
}

/// Decodes by subject. An `Err` is the reason the message is poison.
pub fn decode(
    subject: &str,
    payload: &[u8],
    results_subject: &str,
    failures_subject: &str,
) -> Result<Record, String> {
    if subject == results_subject {
        let result = ScoreResult::decode(payload)
            .map_err(|e| format!("undecodable ScoreResult protobuf: {e}"))?;
        check_result(&result)?;
        Ok(Record::Result(result))
    } else if subject == failures_subject {
        let failure = WorkFailure::decode(payload)
            .map_err(|e| format!("undecodable WorkFailure protobuf: {e}"))?;
        check_key("WorkFailure", "work_id", &failure.work_id)?;
        check_time(
            "WorkFailure",
            &failure.work_id,
            "failed_at",
            failure.failed_at.as_ref(),
        )?;
        Ok(Record::Failure(failure))
    } else {
        Err(format!("unexpected subject {subject}"))
    }
}

fn check_result(r: &ScoreResult) -> Result<(), String> {
    check_key("ScoreResult", "work_id", &r.work_id)?;
    RepoName::parse(&r.repo).map_err(|e| format!("ScoreResult {}: {e}", r.work_id))?;
    check_time("ScoreResult", &r.work_id, "scored_at", r.scored_at.as_ref())?;
    if let Some(long) = r.checks.iter().find(|c| c.name.len() > MAX_KEY_BYTES) {
        return Err(format!(
            "ScoreResult {}: a check name of {} bytes (at most {MAX_KEY_BYTES}): {}…",
            r.work_id,
            long.name.len(),
            long.name.chars().take(40).collect::<String>()
        ));
    }
    if let Some(score) = r.score
        && !(0.0..=10.0).contains(&score)
    {
        return Err(format!(
            "ScoreResult {} with score {score} outside 0..=10",
            r.work_id
        ));
    }
    if let Some(bad) = r
        .checks
        .iter()
        .find(|c| c.score.is_some_and(|s| !(0..=10).contains(&s)))
    {
        return Err(format!(
            "ScoreResult {}: check {} has score {:?} outside 0..=10",
            r.work_id, bad.name, bad.score
        ));
    }
    Ok(())
}

/// A work id: present, and small enough to be an index key.
fn check_key(what: &str, field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} without a {field}"));
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(format!(
            "{what} with a {field} of {} bytes (at most {MAX_KEY_BYTES}): {}…",
            value.len(),
            value.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// A time after 1970 and not in the future beyond clock skew: what the schedule can use, and
/// always inside PostgreSQL's range.
fn check_time(what: &str, id: &str, field: &str, t: Option<&Timestamp>) -> Result<(), String> {
    let t = t.ok_or_else(|| format!("{what} {id} without {field}"))?;
    let Some(at) = DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)) else {
        return Err(format!(
            "{what} {id} with {field} outside any representable time ({} s)",
            t.seconds
        ));
    };
    if at.timestamp() <= 0 {
        return Err(format!("{what} {id} with {field} {at} before 1970"));
    }
    if at > Utc::now() + CLOCK_SKEW {
        return Err(format!("{what} {id} with {field} {at}, in the future"));
    }
    Ok(())
}

/// The repository a failure is about, if any part of it names a valid one.
pub fn failure_repo(f: &WorkFailure) -> Option<RepoName> {
    let from_item = f.item.as_ref().map(|i| i.repo.as_str());
    [from_item, Some(f.repo.as_str())]
        .into_iter()
        .flatten()
        .find_map(|r| RepoName::parse(r).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::scorecard::{RunInfo, parse_result};

    const R: &str = "scorecard.results";
    const F: &str = "scorecard.failures";

    fn result() -> ScoreResult {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/scorecard/cli-v4.10.5_spencerschrock-reusable-workflow-test.json");
        let text = std::fs::read_to_string(dir).unwrap();
        parse_result(
            &text,
            &RunInfo {
                work_id: "w1".into(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn decodes_by_subject() {
        let r = result();
        assert_eq!(
            decode(R, &r.encode_to_vec(), R, F).unwrap(),
            Record::Result(r.clone())
        );
        let f = WorkFailure {
            work_id: "w2".into(),
            failed_at: Some(fleet_proto::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            decode(F, &f.encode_to_vec(), R, F).unwrap(),
            Record::Failure(f)
        );
    }

    #[test]
    fn poison_has_a_reason() {
        let garbage = decode(R, b"\xff\xff\xff", R, F).unwrap_err();
        assert!(garbage.contains("undecodable ScoreResult"), "{garbage}");
        let mut r = result();
        r.repo = "github.com/-bad/x".into();
        assert!(
            decode(R, &r.encode_to_vec(), R, F)
                .unwrap_err()
                .contains("cannot start with")
        );
        let mut r = result();
        r.work_id.clear();
        assert!(
            decode(R, &r.encode_to_vec(), R, F)
                .unwrap_err()
                .contains("work_id")
        );
        let mut r = result();
        r.checks[0].score = Some(11);
        assert!(
            decode(R, &r.encode_to_vec(), R, F)
                .unwrap_err()
                .contains("outside")
        );
        let f = WorkFailure::default();
        assert!(
            decode(F, &f.encode_to_vec(), R, F)
                .unwrap_err()
                .contains("work_id")
        );
        assert!(
            decode("scorecard.other", b"", R, F)
                .unwrap_err()
                .contains("unexpected subject")
        );
    }
}
