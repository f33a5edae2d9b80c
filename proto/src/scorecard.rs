//! scorecard's `--format=json` output (schema v2) and its conversion to [`ScoreResult`].

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::v1::{Check, ScoreResult};
use crate::{RepoName, timestamp};

/// scorecard's checks (v5): the names `--checks=` takes and results carry.
pub const CHECKS: &[&str] = &[
    "Binary-Artifacts",
    "Branch-Protection",
    "CI-Tests",
    "CII-Best-Practices",
    "Code-Review",
    "Contributors",
    "Dangerous-Workflow",
    "Dependency-Update-Tool",
    "Fuzzing",
    "License",
    "Maintained",
    "Packaging",
    "Pinned-Dependencies",
    "SAST",
    "SBOM",
    "Security-Policy",
    "Signed-Releases",
    "Token-Permissions",
    "Vulnerabilities",
    "Webhooks",
];

/// What a finished run tells about itself besides its JSON; the runner fills this in.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub work_id: String,
    pub job_name: String,
    pub exit_code: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScorecardJsonError {
    #[error("not scorecard JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("scorecard JSON has an unreadable date {0:?}")]
    Date(String),
    #[error("scorecard JSON names an invalid repository: {0}")]
    Repo(#[from] crate::RepoNameError),
    #[error("scorecard JSON has score {0} outside -1..=10")]
    Score(f64),
}

// Only the fields the fleet reads; unknown ones (newer scorecard versions) are ignored and
// survive untouched in `raw_json`.
#[derive(Deserialize)]
struct Output {
    date: String,
    repo: RepoRef,
    scorecard: Version,
    score: f64,
    checks: Vec<OutputCheck>,
}

#[derive(Deserialize)]
struct RepoRef {
    name: String,
    #[serde(default)]
    commit: String,
}

#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    version: String,
    #[serde(default)]
    commit: String,
}

#[derive(Deserialize)]
struct OutputCheck {
    name: String,
    score: i32,
    #[serde(default)]
    reason: String,
    details: Option<Vec<String>>,
    documentation: Option<Documentation>,
}

#[derive(Deserialize)]
struct Documentation {
    #[serde(default)]
    url: String,
    #[serde(default)]
    short: String,
}

/// Reads one line of scorecard JSON into a [`ScoreResult`], keeping the line verbatim.
pub fn parse_result(line: &str, run: &RunInfo) -> Result<ScoreResult, ScorecardJsonError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let out: Output = serde_json::from_str(line)?;
    let repo = RepoName::parse(&out.repo.name)?;
    let scored_at = parse_date(&out.date)?;
    if !(-1.0..=10.0).contains(&out.score) {
        return Err(ScorecardJsonError::Score(out.score));
    }
    let checks = out
        .checks
        .into_iter()
        .map(|c| {
            let doc = c.documentation.unwrap_or(Documentation {
                url: String::new(),
                short: String::new(),
            });
            Check {
                name: c.name,
                score: (c.score >= 0).then_some(c.score),
                reason: c.reason,
                details: c.details.unwrap_or_default(),
                doc_url: doc.url,
                doc_short: doc.short,
            }
        })
        .collect();
    Ok(ScoreResult {
        work_id: run.work_id.clone(),
        repo: repo.to_string(),
        commit: out.repo.commit,
        score: (out.score >= 0.0).then_some(out.score),
        checks,
        scorecard_version: out.scorecard.version,
        scorecard_commit: out.scorecard.commit,
        scored_at: Some(timestamp(scored_at)),
        raw_json: line.to_owned(),
        job_name: run.job_name.clone(),
        exit_code: run.exit_code,
        started_at: run.started_at.map(timestamp),
        finished_at: run.finished_at.map(timestamp),
        reason: 0,
    })
}

/// scorecard prints RFC 3339 from its CLI but a bare `YYYY-MM-DD` in older versions and in
/// its own cron; a bare date is taken as midnight UTC.
fn parse_date(date: &str) -> Result<DateTime<Utc>, ScorecardJsonError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(date) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| ScorecardJsonError::Date(date.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datetime;
    use std::path::PathBuf;

    fn fixtures() -> Vec<(String, String)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/scorecard");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "expected the recorded outputs in {}",
            dir.display()
        );
        files
            .into_iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    }

    #[test]
    fn every_fixture_converts_completely() {
        let run = RunInfo {
            work_id: "w1".into(),
            exit_code: 0,
            ..Default::default()
        };
        for (name, text) in fixtures() {
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let result = parse_result(&text, &run).unwrap_or_else(|e| panic!("{name}: {e}"));
            let checks = json["checks"].as_array().unwrap();
            assert_eq!(result.checks.len(), checks.len(), "{name}: all checks kept");
            for (got, want) in result.checks.iter().zip(checks) {
                assert_eq!(got.name, want["name"].as_str().unwrap());
                let score = want["score"].as_i64().unwrap();
                assert_eq!(
                    got.score.map(i64::from),
                    (score >= 0).then_some(score),
                    "{name}"
                );
                assert_eq!(got.reason, want["reason"].as_str().unwrap());
                assert_eq!(got.doc_url, want["documentation"]["url"].as_str().unwrap());
            }
            assert_eq!(result.score, json["score"].as_f64(), "{name}");
            assert_eq!(result.repo, json["repo"]["name"].as_str().unwrap());
            assert_eq!(result.commit, json["repo"]["commit"].as_str().unwrap());
            assert_eq!(
                result.scorecard_version,
                json["scorecard"]["version"].as_str().unwrap()
            );
            // The whole original output survives byte for byte (minus the line ending).
            assert_eq!(result.raw_json, text.trim_end());
            assert_eq!(result.work_id, "w1");
        }
    }

    #[test]
    fn both_date_formats() {
        let day = parse_date("2022-07-14").unwrap();
        assert_eq!(day.to_rfc3339(), "2022-07-14T00:00:00+00:00");
        let full = parse_date("2023-04-20T23:25:12Z").unwrap();
        assert_eq!(full.to_rfc3339(), "2023-04-20T23:25:12+00:00");
        let offset = parse_date("2023-04-20T23:25:12+02:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2023-04-20T21:25:12+00:00");
        assert!(matches!(
            parse_date("yesterday"),
            Err(ScorecardJsonError::Date(_))
        ));
    }

    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let (_, text) = fixtures().remove(0);
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        edit(&mut json);
        serde_json::to_string(&json).unwrap()
    }

    #[test]
    fn inconclusive_unknown_version_nulls_and_extra_fields() {
        let line = edited(|j| {
            j["score"] = (-1.0).into();
            j["scorecard"]["version"] = "unknown".into();
            j["scorecard"]["commit"] = "unknown".into();
            j["metadata"] = serde_json::Value::Null;
            j["from_the_future"] = serde_json::json!({"x": [1, 2]});
            j["checks"][0]["details"] = serde_json::json!(["line one\n\tline two"]);
            j["checks"][0]["new_field"] = true.into();
            j["checks"][1]["details"] = serde_json::Value::Null;
            j["checks"][2]["score"] = (-1).into();
            j["checks"][2]["reason"] = "internal error: boom".into();
        });
        let result = parse_result(&line, &RunInfo::default()).unwrap();
        assert_eq!(result.score, None, "-1 is inconclusive, not zero");
        assert_eq!(result.scorecard_version, "unknown");
        assert_eq!(result.checks[0].details, vec!["line one\n\tline two"]);
        assert!(result.checks[1].details.is_empty());
        assert_eq!(result.checks[2].score, None);
        assert!(result.raw_json.contains("from_the_future"));
        let zero = edited(|j| j["score"] = 0.0.into());
        assert_eq!(
            parse_result(&zero, &RunInfo::default()).unwrap().score,
            Some(0.0)
        );
    }

    #[test]
    fn run_info_is_carried() {
        let (_, text) = fixtures().remove(0);
        let started = parse_date("2026-01-01T00:00:00Z").unwrap();
        let run = RunInfo {
            work_id: "abc".into(),
            job_name: "sc-1".into(),
            exit_code: 1,
            started_at: Some(started),
            finished_at: None,
        };
        let result = parse_result(&text, &run).unwrap();
        assert_eq!(result.job_name, "sc-1");
        assert_eq!(result.exit_code, 1);
        assert_eq!(result.started_at.as_ref().map(datetime), Some(started));
        assert_eq!(result.finished_at, None);
    }

    #[test]
    fn rejects_what_is_not_a_result() {
        for line in [
            "Skipping github.com/o/n: repo not found",
            "{}",
            r#"{"date":"2022-01-01","repo":{"name":"github.com/o/n"},"scorecard":{},"score":11,"checks":[]}"#,
            r#"{"date":"2022-01-01","repo":{"name":"o/n"},"scorecard":{},"score":1,"checks":[]}"#,
        ] {
            assert!(parse_result(line, &RunInfo::default()).is_err(), "{line}");
        }
    }
}
