//! The process runner: scorecard as a local child process, for people without a cluster.
//! Same command line, same parsing, same messages as a Job.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use fleet_proto::v1::WorkItem;
use fleet_runtime::config::Secret;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{RunResult, Runner};
use crate::job::scorecard_args;
use crate::logs::{LogEnd, LogKept, RunLog};
use fleet_runtime::scrub::scrub;

pub struct ProcessRunner {
    pub binary: PathBuf,
    pub timeout: Duration,
    pub token: Option<Secret>,
    /// Most bytes kept of each output stream (the end is what matters).
    pub log_limit_bytes: usize,
    /// scorecard's `--checks=` (all when empty).
    pub checks: Vec<String>,
}

async fn read_capped(mut stream: impl AsyncRead + Unpin, cap: usize) -> LogKept {
    let mut end = LogEnd::new(cap);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => end.push(&chunk[..n]),
        }
    }
    end.finish()
}

#[async_trait::async_trait]
impl Runner for ProcessRunner {
    async fn run(&self, item: &WorkItem, _credential: Option<&str>) -> RunResult {
        let started = Utc::now();
        let mut cmd = Command::new(&self.binary);
        cmd.args(scorecard_args(item, &self.checks))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            cmd.env("GITHUB_AUTH_TOKEN", token.expose());
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return RunResult::Infra {
                    message: format!("starting {}: {e}", self.binary.display()),
                    job_name: String::new(),
                    created: false,
                };
            }
        };
        let stdout = read_capped(child.stdout.take().expect("piped"), self.log_limit_bytes);
        let stderr = read_capped(child.stderr.take().expect("piped"), self.log_limit_bytes);
        let waited = tokio::time::timeout(self.timeout, async {
            let (out, err, status) = tokio::join!(stdout, stderr, child.wait());
            (out, err, status)
        })
        .await;
        let (log, log_cut, exit_code, deadline_exceeded) = match waited {
            // stderr first, then stdout: the result line ends the log, as in a pod log.
            Ok((out, err, Ok(status))) => (
                format!("{}{}", err.text, out.text),
                out.cut || err.cut,
                status.code(),
                false,
            ),
            Ok((_, _, Err(e))) => {
                return RunResult::Infra {
                    message: format!("waiting for scorecard: {e}"),
                    job_name: String::new(),
                    created: true,
                };
            }
            Err(_) => (String::new(), false, None, true),
        };
        // This runner holds the token the scan got: its exact value goes, whatever its form.
        let log = match &self.token {
            Some(token) => scrub(&log, &[token.expose()]).into_owned(),
            None => log,
        };
        RunResult::Ended {
            run: RunLog {
                job_name: String::new(),
                token_key: None,
                exit_code,
                reason: None,
                deadline_exceeded,
                log,
                log_cut,
                started_at: Some(started),
                finished_at: Some(Utc::now()),
            },
            adopted: false,
            ended_before: false,
        }
    }

    async fn cleanup(&self, _item: &WorkItem) {}
}
