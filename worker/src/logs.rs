//! A finished scan's log and exit status into a result or a classified failure: the rules of
//! scorecard's CLI (see ../shared/fixtures/README.md), as one pure function.
//!
//! - The result is the last document that parses as scorecard JSON, wherever it sits among
//!   log lines (pod logs merge stdout and stderr): one line, or pretty-printed over many (as
//!   `jq` or a wrapper script prints it).
//! - Exit 1 with JSON is a result (some check hit a runtime error); exit 0 without JSON is a
//!   failure (scorecard printed `Skipping <repo>: ...` and gave up).
//! - A failure's class, the first that applies: past the deadline, TIMEOUT; JSON that does
//!   not parse or scores another repository, INVALID_OUTPUT; GitHub's `Bad credentials`, INFRA
//!   (not the repository's fault: the credential leaves the pool and another one scans it);
//!   a rate-limit message, RATE_LIMITED; `Skipping …`, SCAN_FAILED (with that line as the
//!   reason); OOMKilled or another non-zero exit, POD_FAILED; else NO_OUTPUT. API errors and
//!   stuck pods never reach here: the runner makes them INFRA.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use fleet_proto::RepoName;
use fleet_proto::scorecard::{RunInfo, parse_result};
use fleet_proto::v1::{FailureClass, ScoreResult, WorkItem};

use fleet_runtime::budget::Signal;

/// GitHub's answer to a revoked or invalid credential (HTTP 401).
pub const BAD_CREDENTIALS: &str = "Bad credentials";
/// What scorecard logs before it sleeps until a token's quota resets.
pub const RATE_LIMIT_WAIT: &str = "Rate limit exceeded. Waiting";

/// Bytes of log kept with a failure: enough for the last few dozen lines.
pub const LOG_TAIL_BYTES: usize = 4096;

/// What a run that ended left: its exit, its log and its times, as the runner saw them.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    pub job_name: String,
    /// The token Secret key the scan used (Kubernetes runner), so a rate limit rests it.
    pub token_key: Option<String>,
    /// The container's exit code, when it is known.
    pub exit_code: Option<i32>,
    /// The container's termination reason (`OOMKilled`, `Error`, ...).
    pub reason: Option<String>,
    /// The run hit its deadline (the Job's activeDeadlineSeconds, or the process timeout).
    pub deadline_exceeded: bool,
    pub log: String,
    /// The log was longer than the worker reads (`LOG_LIMIT_BYTES`): only its end is `log`.
    pub log_cut: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Result(Box<ScoreResult>),
    Failure {
        class: FailureClass,
        message: String,
        log_tail: String,
    },
}

pub fn interpret(item: &WorkItem, run: &RunLog) -> Verdict {
    let fail = |(class, message): (FailureClass, String)| Verdict::Failure {
        class,
        message,
        log_tail: tail(&run.log, LOG_TAIL_BYTES),
    };
    if run.deadline_exceeded {
        return fail((
            FailureClass::Timeout,
            "scorecard ran past its deadline (it may have been waiting out a GitHub rate limit)"
                .into(),
        ));
    }
    match result_in_log(item, run) {
        Some(Ok(result)) => Verdict::Result(result),
        Some(Err(message)) => fail((FailureClass::InvalidOutput, message)),
        None => fail(failure_in_log(run)),
    }
}

/// The result the log ends with, checked against the item; `Err` when a result line is there
/// but broken or for another repository; `None` when there is no result at all.
fn result_in_log(item: &WorkItem, run: &RunLog) -> Option<Result<Box<ScoreResult>, String>> {
    let info = RunInfo {
        work_id: item.id.clone(),
        job_name: run.job_name.clone(),
        exit_code: run.exit_code.unwrap_or(0),
        started_at: run.started_at,
        finished_at: run.finished_at,
    };
    let mut invalid = None;
    for line in documents(&run.log) {
        match parse_result(line, &info) {
            Ok(mut result) => {
                let wanted = RepoName::parse(&item.repo)
                    .map(|r| r.key())
                    .unwrap_or_default();
                let got = RepoName::parse(&result.repo)
                    .map(|r| r.key())
                    .unwrap_or_default();
                if wanted != got {
                    return Some(Err(format!(
                        "scorecard scored {} but the work item asked for {}",
                        result.repo, item.repo
                    )));
                }
                result.reason = item.reason;
                return Some(Ok(Box::new(result)));
            }
            Err(e) if invalid.is_none() && line.contains("\"checks\"") => {
                invalid = Some(e.to_string())
            }
            Err(_) => {}
        }
    }
    invalid.map(|e| Err(format!("scorecard's output did not parse: {e}")))
}

/// The JSON documents `log` may hold, last first: one from every line that opens with `{`,
/// read whole across the lines it spans. A candidate that is not whole JSON runs to the end
/// of the log, so a broken result, on one line or many, is still recognised as one.
fn documents(log: &str) -> impl Iterator<Item = &str> {
    let mut at = 0;
    let mut starts = Vec::new();
    for line in log.split_inclusive('\n') {
        if line.trim_start().starts_with('{') {
            starts.push(at + (line.len() - line.trim_start().len()));
        }
        at += line.len();
    }
    starts.into_iter().rev().map(|start| {
        let rest = &log[start..];
        let mut values =
            serde_json::Deserializer::from_str(rest).into_iter::<serde::de::IgnoredAny>();
        match values.next() {
            Some(Ok(_)) => &rest[..values.byte_offset()],
            _ => rest,
        }
    })
}

/// Why a run without a result failed, from its log and exit.
fn failure_in_log(run: &RunLog) -> (FailureClass, String) {
    if run.log.contains(BAD_CREDENTIALS) {
        // Not the repository's fault: another credential's delivery will scan it.
        return (
            FailureClass::Infra,
            "GitHub rejected the scan's credential (Bad credentials); it is taken out of the pool"
                .into(),
        );
    }
    if let Some(line) = run
        .log
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("rate limit"))
    {
        return (
            FailureClass::RateLimited,
            format!("GitHub rate limit: {}", line.trim()),
        );
    }
    if let Some(skip) = run
        .log
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("Skipping "))
    {
        return (FailureClass::ScanFailed, skip.trim().to_owned());
    }
    match (run.exit_code, run.reason.as_deref()) {
        (_, Some("OOMKilled")) => (
            FailureClass::PodFailed,
            "scorecard was killed for using too much memory (OOMKilled)".into(),
        ),
        (Some(0), _) if run.log_cut => (
            FailureClass::NoOutput,
            "scorecard exited 0 without a result in the end of its log the worker reads \
             (LOG_LIMIT_BYTES); a result longer than that is not read"
                .into(),
        ),
        (Some(0), _) => (
            FailureClass::NoOutput,
            "scorecard exited 0 without printing a result".into(),
        ),
        (Some(code), reason) => (
            FailureClass::PodFailed,
            format!(
                "scorecard exited {code} without a result{}",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ),
        (None, _) => (
            FailureClass::NoOutput,
            "the scan ended without an exit code or a result".into(),
        ),
    }
}

/// What a finished scan says about its credential's quota, for the budget.
pub fn quota_signal(run: &RunLog, verdict: &Verdict) -> Option<Signal> {
    let failed_with = |c| matches!(verdict, Verdict::Failure { class, .. } if *class == c);
    if failed_with(FailureClass::Infra) && run.log.contains(BAD_CREDENTIALS) {
        Some(Signal::Revoked)
    } else if failed_with(FailureClass::RateLimited) {
        Some(Signal::RateLimited)
    } else if run.log.contains(RATE_LIMIT_WAIT) {
        Some(Signal::Waited)
    } else {
        None
    }
}

/// The last `max` bytes of `log`, cut at a character boundary.
pub fn tail(log: &str, max: usize) -> String {
    if log.len() <= max {
        return log.to_owned();
    }
    let mut start = log.len() - max;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_owned()
}

/// The end of a log read as a stream: its last `limit` bytes, from the first whole line in
/// them. The kubelet caps a log only from its start (`limitBytes`) or counts lines from its
/// end (`tailLines`), and a result pretty-printed over thousands of lines sits at the end.
pub struct LogEnd {
    kept: VecDeque<u8>,
    limit: usize,
    /// Bytes were dropped from the front; and whether the last of them ended a line.
    cut: bool,
    cut_after_newline: bool,
}

/// What [`LogEnd`] kept.
#[derive(Debug, Default)]
pub struct LogKept {
    pub text: String,
    /// The log was longer than the limit: its beginning was not read.
    pub cut: bool,
}

impl LogEnd {
    pub fn new(limit: usize) -> Self {
        Self {
            kept: VecDeque::new(),
            limit,
            cut: false,
            cut_after_newline: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.kept.extend(chunk);
        if self.kept.len() > self.limit {
            let excess = self.kept.len() - self.limit;
            self.cut_after_newline = self.kept[excess - 1] == b'\n';
            // A ring: dropping the front moves nothing else.
            self.kept.drain(..excess);
            self.cut = true;
        }
    }

    pub fn finish(self) -> LogKept {
        let kept = Vec::from(self.kept);
        let whole_lines = match (self.cut, self.cut_after_newline) {
            (false, _) | (true, true) => &kept[..],
            (true, false) => match kept.iter().position(|&b| b == b'\n') {
                Some(newline) => &kept[newline + 1..],
                None => &[],
            },
        };
        LogKept {
            text: String::from_utf8_lossy(whole_lines).into_owned(),
            cut: self.cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../shared/fixtures/scorecard/cli-v4.8.0_ossf-tests-reusable-workflow-caller.json",
        );
        std::fs::read_to_string(path).unwrap().trim_end().to_owned()
    }

    fn item() -> WorkItem {
        WorkItem {
            id: "w1".into(),
            repo: "github.com/ossf-tests/scorecard-webapp-reusable-workflow-caller-e2e".into(),
            reason: 1,
            ..Default::default()
        }
    }

    fn run(exit: i32, log: String) -> RunLog {
        RunLog {
            job_name: "sc-x".into(),
            exit_code: Some(exit),
            log,
            ..Default::default()
        }
    }

    fn class(v: &Verdict) -> FailureClass {
        match v {
            Verdict::Failure { class, .. } => *class,
            Verdict::Result(_) => FailureClass::Unspecified,
        }
    }

    #[test]
    fn the_json_line_among_log_lines_is_the_result() {
        let log = format!("Starting [Fuzzing]\n{}\nFinished [Fuzzing]\n", fixture());
        let Verdict::Result(r) = interpret(&item(), &run(0, log)) else {
            panic!("no result")
        };
        assert_eq!(r.work_id, "w1");
        assert_eq!(r.job_name, "sc-x");
        assert_eq!(r.raw_json, fixture());
        assert_eq!(r.reason, 1);
    }

    #[test]
    fn exit_1_with_json_is_a_result() {
        let log = format!("Error: check runtime error: Fuzzing\n{}\n", fixture());
        let Verdict::Result(r) = interpret(&item(), &run(1, log)) else {
            panic!("no result")
        };
        assert_eq!(r.exit_code, 1);
    }

    #[test]
    fn exit_0_without_json_is_a_scan_failure_with_the_reason() {
        let log = "Skipping github.com/o/n: repo unreachable: GET https://api.github.com/repos/o/n: 404\n";
        let v = interpret(&item(), &run(0, log.into()));
        assert_eq!(class(&v), FailureClass::ScanFailed);
        let Verdict::Failure {
            message, log_tail, ..
        } = v
        else {
            unreachable!()
        };
        assert!(
            message.starts_with("Skipping github.com/o/n: repo unreachable"),
            "{message}"
        );
        assert_eq!(log_tail, log);
        assert_eq!(
            class(&interpret(&item(), &run(0, "done\n".into()))),
            FailureClass::NoOutput
        );
    }

    #[test]
    fn rate_limits_timeouts_and_dead_pods_are_told_apart() {
        let limited = "Skipping github.com/o/n: API rate limit exceeded for installation\n";
        assert_eq!(
            class(&interpret(&item(), &run(0, limited.into()))),
            FailureClass::RateLimited
        );
        let timeout = RunLog {
            deadline_exceeded: true,
            ..run(0, fixture())
        };
        assert_eq!(class(&interpret(&item(), &timeout)), FailureClass::Timeout);
        let oom = RunLog {
            reason: Some("OOMKilled".into()),
            ..run(137, "cloning\n".into())
        };
        let v = interpret(&item(), &oom);
        assert_eq!(class(&v), FailureClass::PodFailed);
        assert!(matches!(&v, Verdict::Failure { message, .. } if message.contains("OOMKilled")));
        let crashed = interpret(&item(), &run(2, "panic: boom\n".into()));
        assert!(
            matches!(&crashed, Verdict::Failure { class: FailureClass::PodFailed, message, .. } if message.contains("exited 2"))
        );
    }

    #[test]
    fn what_a_scan_says_about_its_credential() {
        let signal = |exit, log: &str| {
            let run = run(exit, log.to_owned());
            quota_signal(&run, &interpret(&item(), &run))
        };
        let revoked =
            "Error: RepoUnreachable: GET https://api.github.com/repos/o/n: 401 Bad credentials []";
        assert_eq!(signal(1, revoked), Some(Signal::Revoked));
        let r = run(1, revoked.to_owned());
        assert_eq!(class(&interpret(&item(), &r)), FailureClass::Infra);
        assert_eq!(
            signal(0, "Skipping github.com/o/n: 403 API rate limit exceeded"),
            Some(Signal::RateLimited)
        );
        let waited = format!(
            "Rate limit exceeded. Waiting 41m2s to retry...\nRate limit exceeded. Retrying...\n{}",
            fixture()
        );
        assert_eq!(signal(0, &waited), Some(Signal::Waited));
        let r = run(0, waited);
        assert!(matches!(interpret(&item(), &r), Verdict::Result(_)));
        assert_eq!(signal(0, &fixture()), None);
    }

    #[test]
    fn broken_or_foreign_json_is_invalid_output() {
        let truncated = &fixture()[..2000];
        let v = interpret(&item(), &run(0, format!("{truncated}\n")));
        assert_eq!(class(&v), FailureClass::InvalidOutput);
        let other = WorkItem {
            repo: "github.com/some/other".into(),
            ..item()
        };
        let v = interpret(&other, &run(0, fixture()));
        assert!(
            matches!(&v, Verdict::Failure { class: FailureClass::InvalidOutput, message, .. } if message.contains("asked for github.com/some/other"))
        );
        // An unrelated JSON log line is not a result and not an error.
        let logged = format!("{}\n{{\"level\":\"info\",\"msg\":\"done\"}}\n", fixture());
        assert!(matches!(
            interpret(&item(), &run(0, logged)),
            Verdict::Result(_)
        ));
    }

    fn pretty(json: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        serde_json::to_string_pretty(&value).unwrap()
    }

    #[test]
    fn a_pretty_printed_result_among_log_lines_is_the_result() {
        let doc = pretty(&fixture());
        assert!(doc.lines().count() > 20);
        let log = format!("Starting [Fuzzing]\n{doc}\nFinished [Fuzzing]\n");
        let Verdict::Result(r) = interpret(&item(), &run(0, log)) else {
            panic!("no result")
        };
        assert_eq!(r.work_id, "w1");
        let raw: serde_json::Value = serde_json::from_str(&r.raw_json).unwrap();
        assert_eq!(
            raw,
            serde_json::from_str::<serde_json::Value>(&fixture()).unwrap()
        );
    }

    #[test]
    fn the_last_document_wins_whether_one_line_or_pretty() {
        let mut later: serde_json::Value = serde_json::from_str(&fixture()).unwrap();
        later["score"] = serde_json::json!(1.5);
        let later = later.to_string();
        for log in [
            format!("{}\n{}\n", pretty(&fixture()), later),
            format!("{}\n{}\n", fixture(), pretty(&later)),
        ] {
            let Verdict::Result(r) = interpret(&item(), &run(0, log)) else {
                panic!("no result")
            };
            assert_eq!(r.score, Some(1.5));
        }
    }

    #[test]
    fn a_truncated_pretty_printed_result_is_invalid_output() {
        let doc = pretty(&fixture());
        let v = interpret(&item(), &run(0, format!("{}\n", &doc[..doc.len() / 2])));
        assert_eq!(class(&v), FailureClass::InvalidOutput);
    }

    fn end_of(log: &str, limit: usize, chunk: usize) -> LogKept {
        let mut end = LogEnd::new(limit);
        for piece in log.as_bytes().chunks(chunk) {
            end.push(piece);
        }
        end.finish()
    }

    #[test]
    fn a_log_end_keeps_the_last_whole_lines_within_its_limit() {
        let log: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        for chunk in [1, 7, 64, 4096] {
            let LogKept { text, cut } = end_of(&log, 100, chunk);
            assert!(cut, "{chunk}");
            assert!(text.len() <= 100, "{chunk}: {text:?}");
            assert!(
                text.starts_with("line "),
                "{chunk}: a whole first line: {text:?}"
            );
            assert!(log.ends_with(&text), "{chunk}: the log's end");
            assert!(
                text.len() > 80,
                "{chunk}: all the whole lines that fit: {text:?}"
            );
        }
        let short = end_of("{\"a\": 1}\nlast", 100, 3);
        assert_eq!(
            (short.text.as_str(), short.cut),
            ("{\"a\": 1}\nlast", false),
            "a short log whole"
        );
        // Cut exactly where a line starts: that line is whole, and kept.
        let exact = end_of("dropped\n{\"result\": 1}\n", 14, 5);
        assert_eq!(
            (exact.text.as_str(), exact.cut),
            ("{\"result\": 1}\n", true)
        );
    }

    #[test]
    fn a_result_beyond_the_end_read_says_so() {
        // The end of a result pretty-printed past the limit: its opening brace was not read.
        let end = "      \"Warn: unpinned\"\n      ],\n      \"score\": 0\n    }\n  ],\n  \"score\": 4.3\n}\n";
        let mut run = run(0, end.into());
        run.log_cut = true;
        let Verdict::Failure { class, message, .. } = interpret(&item(), &run) else {
            panic!("a failure")
        };
        assert_eq!(class, FailureClass::NoOutput);
        assert!(message.contains("LOG_LIMIT_BYTES"), "{message}");
    }

    #[test]
    fn tails_are_cut_at_character_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("short", 100), "short");
    }
}
