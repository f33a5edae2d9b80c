//! Fixture-shaped results for tests and benchmarks: the recorded scorecard outputs, re-aimed
//! at other repositories and dates so many distinct results can be made from three files.

use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::scorecard::{RunInfo, parse_result};
use fleet_proto::v1::ScoreResult;
use fleet_proto::{RepoName, timestamp};

use crate::fixtures;

/// The repositories of `../shared/fixtures/repos/github-projects-2021.csv`, valid ones only.
pub fn repo_list() -> Vec<RepoName> {
    let path = fixtures::dir().join("repos/github-projects-2021.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .filter_map(|repo| RepoName::parse(repo).ok())
        .collect()
}

/// `n` distinct valid repositories from the real list: each name gets `-{i}` appended (cut to
/// GitHub's 100-character limit first). All distinct, even case-insensitively, because the
/// text after the last `-` is the unique index.
pub fn derive_repos(real: &[RepoName], n: usize) -> Vec<RepoName> {
    const NAME_MAX: usize = 100;
    (0..n)
        .map(|i| {
            let base = &real[i % real.len()];
            let suffix = format!("-{i}");
            let keep = base.name().len().min(NAME_MAX - suffix.len());
            let name = format!("{}{suffix}", &base.name()[..keep]);
            RepoName::parse(&format!("github.com/{}/{name}", base.owner()))
                .unwrap_or_else(|e| panic!("derived name is invalid: {e}"))
        })
        .collect()
}

/// A result for `repo` as if scorecard ran at `scored_at`, built from fixture `variant`.
pub fn result_for(
    repo: &RepoName,
    work_id: &str,
    scored_at: DateTime<Utc>,
    variant: usize,
) -> ScoreResult {
    result_at_commit(repo, work_id, scored_at, variant, None)
}

/// [`result_for`] of another commit than the fixture's (40 hex digits).
pub fn result_at_commit(
    repo: &RepoName,
    work_id: &str,
    scored_at: DateTime<Utc>,
    variant: usize,
    commit: Option<&str>,
) -> ScoreResult {
    let outputs = fixtures::scorecard_outputs();
    let (_, line) = &outputs[variant % outputs.len()];
    let mut json: serde_json::Value = serde_json::from_str(line).expect("fixture JSON");
    json["repo"]["name"] = repo.to_string().into();
    if let Some(commit) = commit {
        json["repo"]["commit"] = commit.into();
    }
    json["date"] = scored_at.to_rfc3339().into();
    let line = json.to_string();
    let mut result = parse_result(
        &line,
        &RunInfo {
            work_id: work_id.to_owned(),
            job_name: format!("sc-{work_id}"),
            exit_code: 0,
            started_at: Some(scored_at - TimeDelta::seconds(90)),
            finished_at: Some(scored_at),
        },
    )
    .expect("fixture converts");
    result.finished_at = Some(timestamp(scored_at));
    result
}
