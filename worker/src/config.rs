//! The worker's command line; every flag has an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use fleet_runtime::config::{HttpArgs, NatsArgs, Secret};
use fleet_runtime::telemetry::LogArgs;

use crate::job::JobSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerKind {
    /// One Kubernetes Job per work item (in a cluster, or via KUBECONFIG).
    Kubernetes,
    /// A local `scorecard` binary as a child process.
    Process,
}

/// How scans get their GitHub credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BudgetKind {
    /// A fleet-wide budget per credential, shared in JetStream: a scan starts only when its
    /// credential has room.
    Fleet,
    /// Each replica alone, round-robin, a rest after a rate limit (the benchmark's baseline).
    Off,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "scorecard-fleet worker: runs scorecard for each work item"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,

    /// How scans run.
    #[arg(long, env = "WORKER_RUNNER", value_enum, default_value_t = RunnerKind::Kubernetes)]
    pub runner: RunnerKind,

    /// Scans this process runs at once. The fleet-wide cap is the consumers' max ack pending.
    #[arg(long, env = "WORKER_MAX_IN_FLIGHT", default_value_t = 50)]
    pub max_in_flight: usize,

    /// Slots reserved for the manual lane, on top of WORKER_MAX_IN_FLIGHT: a person's request starts at once even while every other slot runs scheduled work
    #[arg(long, env = "WORKER_MANUAL_IN_FLIGHT", default_value_t = 5)]
    pub manual_in_flight: usize,

    /// Seconds SIGTERM waits for running scans before leaving them to the next delivery
    /// (which adopts the still-running Job).
    #[arg(long, env = "WORKER_DRAIN_DEADLINE_SECS", default_value_t = 60)]
    pub drain_deadline_secs: u64,

    /// Milliseconds one pull waits for scheduled work before asking the manual and discovery
    /// lanes again: the longest a person's request waits behind an idle scheduled lane.
    #[arg(long, env = "WORKER_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,

    /// Kubeconfig file, outside a cluster; in a cluster the pod's ServiceAccount is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace the scorecard Jobs run in: the scans' own (deploy/base/scans), holding only
    /// the GitHub credentials, the scan ServiceAccount and the worker's Role.
    #[arg(long, env = "WORKER_NAMESPACE", default_value = "scorecard-scans")]
    pub namespace: String,

    /// The scorecard image, pinned.
    #[arg(
        long,
        env = "SCORECARD_IMAGE",
        default_value = "ghcr.io/ossf/scorecard:v5.3.0"
    )]
    pub image: String,

    /// ServiceAccount of the scorecard pods (it needs no permissions; its token is not mounted).
    #[arg(long, env = "SCAN_SERVICE_ACCOUNT", default_value = "scorecard-scan")]
    pub scan_service_account: String,

    /// Secret holding the GitHub tokens.
    #[arg(long, env = "TOKEN_SECRET", default_value = "scorecard-github-tokens")]
    pub token_secret: String,

    /// Keys of the token Secret, comma-separated: the token pool, used round-robin.
    #[arg(
        long,
        env = "TOKEN_KEYS",
        value_delimiter = ',',
        default_value = "token"
    )]
    pub token_keys: Vec<String>,

    /// Secret of the GitHub App (keys `app-id` and `private-key`), for GITHUB_APP_INSTALLATIONS.
    #[arg(
        long,
        env = "GITHUB_APP_SECRET",
        default_value = "scorecard-github-app"
    )]
    pub github_app_secret: String,

    /// GitHub App installation ids, comma-separated: each is a credential of the pool beside the tokens
    #[arg(long, env = "GITHUB_APP_INSTALLATIONS", value_delimiter = ',')]
    pub github_app_installations: Vec<String>,

    /// How credentials are handed out.
    #[arg(long, env = "CREDENTIAL_BUDGET", value_enum, default_value_t = BudgetKind::Fleet)]
    pub credential_budget: BudgetKind,

    /// Estimated GitHub API calls one scan makes: a credential's budget starts at its calls
    /// per window over this, and shrinks when scans meet its rate limit.
    #[arg(long, env = "SCAN_COST_CALLS", default_value_t = 70, value_parser = clap::value_parser!(u32).range(1..))]
    pub scan_cost_calls: u32,

    /// GitHub API calls a personal access token may make per quota window.
    #[arg(long, env = "GITHUB_TOKEN_CALLS_PER_WINDOW", default_value_t = 5000)]
    pub token_calls_per_window: u32,

    /// GitHub API calls an App installation may make per window (5,000 at least; more for
    /// large organizations, 15,000 on Enterprise Cloud).
    #[arg(long, env = "GITHUB_APP_CALLS_PER_WINDOW", default_value_t = 5000)]
    pub app_calls_per_window: u32,

    /// Seconds of GitHub's quota window (an hour).
    #[arg(long, env = "GITHUB_WINDOW_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub github_window_secs: u64,

    /// scorecard checks to run, comma-separated (all when empty): `--checks=` of every scan.
    /// Leaving out the costliest (CI-Tests, Contributors, SAST) saves most of a scan's calls.
    #[arg(long, env = "SCORECARD_CHECKS", value_delimiter = ',')]
    pub scorecard_checks: Vec<String>,

    /// Seconds a token rests after its scan met GitHub's rate limit.
    #[arg(long, env = "TOKEN_COOLDOWN_SECS", default_value_t = 900)]
    pub token_cooldown_secs: u64,

    /// A scan's deadline (activeDeadlineSeconds); scorecard may sleep out a rate limit.
    #[arg(long, env = "JOB_DEADLINE_SECS", default_value_t = 3600)]
    pub job_deadline_secs: i64,

    /// Seconds a finished Job is kept if the worker could not delete it (a safety net). At
    /// least GITHUB_WINDOW_SECS + JOB_DEADLINE_SECS + POD_PENDING_TIMEOUT_SECS +
    /// WORK_ACK_WAIT_SECS, so a finished Job outlives the wait of its redelivery for a free slot
    /// and is adopted, not rerun.
    #[arg(long, env = "JOB_TTL_SECS", default_value_t = 10800)]
    pub job_ttl_secs: i32,

    /// Seconds a scan's pod may stay unready (image pull, scheduling) before it is an INFRA
    /// failure.
    #[arg(long, env = "POD_PENDING_TIMEOUT_SECS", default_value_t = 600)]
    pub pending_timeout_secs: u64,

    /// Seconds the Job watch may fail before /readyz turns 503
    #[arg(long, env = "WATCH_UNREADY_SECS", default_value_t = 60)]
    pub watch_unready_secs: u64,

    /// Bytes kept from the end of a scan's log, where its result is read (at least 64 KiB)
    #[arg(long, env = "LOG_LIMIT_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(65_536..))]
    pub log_limit_bytes: usize,

    /// CPU request of a scan.
    #[arg(long, env = "SCAN_CPU_REQUEST", default_value = "250m")]
    pub cpu_request: String,
    /// CPU limit of a scan.
    #[arg(long, env = "SCAN_CPU_LIMIT", default_value = "1")]
    pub cpu_limit: String,
    /// Memory request of a scan.
    #[arg(long, env = "SCAN_MEMORY_REQUEST", default_value = "256Mi")]
    pub memory_request: String,
    /// Memory limit of a scan.
    #[arg(long, env = "SCAN_MEMORY_LIMIT", default_value = "1Gi")]
    pub memory_limit: String,
    /// Size limit of a scan's /tmp (clones are unpacked there).
    #[arg(long, env = "SCAN_TMP_SIZE", default_value = "2Gi")]
    pub tmp_size: String,

    /// The scorecard binary (process runner).
    #[arg(long, env = "SCORECARD_BINARY", default_value = "scorecard")]
    pub scorecard_binary: PathBuf,

    /// GitHub token(s) for the process runner (comma-separated for scorecard's round-robin).
    /// Never logged.
    #[arg(long, env = "GITHUB_AUTH_TOKEN", hide_env_values = true)]
    pub github_token: Option<Secret>,
}

impl Cli {
    pub fn job_settings(&self) -> JobSettings {
        JobSettings {
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            service_account: self.scan_service_account.clone(),
            token_secret: self.token_secret.clone(),
            app_secret: self.github_app_secret.clone(),
            active_deadline_secs: self.job_deadline_secs,
            ttl_after_finished_secs: self.job_ttl_secs,
            cpu_request: self.cpu_request.clone(),
            cpu_limit: self.cpu_limit.clone(),
            memory_request: self.memory_request.clone(),
            memory_limit: self.memory_limit.clone(),
            tmp_size_limit: self.tmp_size.clone(),
            checks: self
                .scorecard_checks
                .iter()
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect(),
        }
    }

    pub fn budget_settings(&self) -> crate::budget::Settings {
        crate::budget::Settings {
            window: Duration::from_secs(self.github_window_secs),
            token_calls: self.token_calls_per_window,
            app_calls: self.app_calls_per_window,
            scan_cost: self.scan_cost_calls,
            rest_after_limit: self.cooldown(),
        }
    }

    /// The credential pool: the token Secret's keys and the App installations (as
    /// [`crate::job::Credential`] keys), in that order.
    pub fn token_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .token_keys
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        for installation in self
            .github_app_installations
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
        {
            anyhow::ensure!(
                installation.bytes().all(|b| b.is_ascii_digit()),
                "GITHUB_APP_INSTALLATIONS: {installation:?} is not an installation id (a number, \
                 as in https://github.com/organizations/ORG/settings/installations/ID)"
            );
            keys.push(crate::job::Credential::App(installation).key());
        }
        anyhow::ensure!(
            !keys.is_empty(),
            "no GitHub credentials: TOKEN_KEYS names no key of the token Secret and \
             GITHUB_APP_INSTALLATIONS no installation"
        );
        Ok(keys)
    }

    /// Refuses a Job TTL shorter than a redelivery can wait. A redelivery comes after the ack
    /// wait and goes ahead of new work, so it waits at most for one slot to free. A slot holds
    /// an item waiting for a credential (at most a quota window, when every credential is dry)
    /// and then its scan (at most its deadline plus its pod's pending timeout). A finished Job
    /// deleted sooner would be scanned again, spending quota on a result that was there.
    pub fn check_job_ttl(&self, ack_wait_secs: u64) -> Result<(), String> {
        let deadline = u64::try_from(self.job_deadline_secs).unwrap_or(0);
        let floor = self
            .github_window_secs
            .saturating_add(deadline)
            .saturating_add(self.pending_timeout_secs)
            .saturating_add(ack_wait_secs);
        match u64::try_from(self.job_ttl_secs) {
            Ok(ttl) if ttl >= floor => Ok(()),
            _ => Err(format!(
                "JOB_TTL_SECS ({}) must be at least GITHUB_WINDOW_SECS ({}) + JOB_DEADLINE_SECS \
                 ({}) + POD_PENDING_TIMEOUT_SECS ({}) + WORK_ACK_WAIT_SECS ({ack_wait_secs}) = \
                 {floor}: a finished Job must outlive the wait of its redelivery for a free slot",
                self.job_ttl_secs,
                self.github_window_secs,
                self.job_deadline_secs,
                self.pending_timeout_secs
            )),
        }
    }

    pub fn cooldown(&self) -> Duration {
        Duration::from_secs(self.token_cooldown_secs)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("worker").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_default_job_ttl_outlives_a_redelivery_waiting_for_a_slot() {
        assert_eq!(cli(&[]).check_job_ttl(120), Ok(()));
    }

    #[test]
    fn a_job_ttl_shorter_than_a_redelivery_can_wait_is_refused_with_the_sum() {
        let short = cli(&["--job-ttl-secs", "3600"]);
        let err = short.check_job_ttl(120).unwrap_err();
        assert!(err.contains("JOB_TTL_SECS (3600)"), "{err}");
        assert!(err.contains("= 7920"), "{err}");
        let fits = cli(&[
            "--job-ttl-secs",
            "700",
            "--job-deadline-secs",
            "30",
            "--github-window-secs",
            "10",
        ]);
        assert_eq!(fits.check_job_ttl(60), Ok(()));
        assert!(fits.check_job_ttl(61).is_err());
    }
}
