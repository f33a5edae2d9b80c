//! From a JetStream message to a record the sink can write, or the reason it cannot.

use fleet_proto::v1::{ScoreResult, WorkFailure};
use fleet_proto::{RepoName, datetime};
use prost::Message as _;

/// A message the sink understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Result(ScoreResult),
    Failure(WorkFailure),
}

/// What a record is about, once checked: the repository and the work item.
impl Record {
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
        if failure.work_id.is_empty() {
            return Err("WorkFailure without a work_id".into());
        }
        if failure.failed_at.is_none() {
            return Err(format!("WorkFailure {} without failed_at", failure.work_id));
        }
        Ok(Record::Failure(failure))
    } else {
        Err(format!("unexpected subject {subject}"))
    }
}

fn check_result(r: &ScoreResult) -> Result<(), String> {
    if r.work_id.is_empty() {
        return Err("ScoreResult without a work_id".into());
    }
    RepoName::parse(&r.repo).map_err(|e| format!("ScoreResult {}: {e}", r.work_id))?;
    let scored_at = r
        .scored_at
        .as_ref()
        .ok_or_else(|| format!("ScoreResult {} without scored_at", r.work_id))?;
    if datetime(scored_at).timestamp() <= 0 {
        return Err(format!(
            "ScoreResult {} with an invalid scored_at",
            r.work_id
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
