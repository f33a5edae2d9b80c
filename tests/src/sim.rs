//! The scorecard stand-in of the local stack. KWOK runs no containers, so a "scan" is played
//! back: the pod's log becomes a recorded scorecard output, and the pod terminates with the
//! exit code scorecard would have given (see dev/kwok/stages.yaml).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, GroupVersionKind, LogParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use worker::job::Credential;

use crate::quota::{Charge, Ledger};
pub use crate::quota::{Quota, Window, calls_for};

/// The annotation KWOK's `pod-exit` stage waits for.
pub const EXIT_CODE_ANNOTATION: &str = "sim.scorecard-fleet.dev/exit-code";

/// Which stream a log line went to; Kubernetes merges both into the pod log.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Lines in the CRI log format KWOK reads: `<RFC 3339 nanos> <stream> F <line>`.
pub fn cri_log(lines: &[(Stream, &str)]) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut out = String::new();
    for (stream, line) in lines {
        let stream = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        for part in line.split('\n') {
            out.push_str(&format!("{now} {stream} F {part}\n"));
        }
    }
    out
}

fn logs_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs"),
        "logs",
    )
}

/// Plays a scan back on `pod`: its log becomes `lines`, then it exits with `exit_code`.
/// Returns once the log is served through the API server, so a reader never races KWOK.
pub async fn finish_pod(
    client: &Client,
    pod: &Pod,
    exit_code: i32,
    lines: &[(Stream, &str)],
) -> anyhow::Result<()> {
    let ns = pod.namespace().context("pod without namespace")?;
    let name = pod.name_any();
    let dir: PathBuf = crate::stack::stack_dir().join("sim-logs").join(&ns);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{name}.log"));
    std::fs::write(&file, cri_log(lines))?;

    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let mut logs = DynamicObject::new(&name, &logs_resource()).within(&ns);
    logs.data = serde_json::json!({
        "spec": {"logs": [{"containers": containers, "logsFile": file}]}
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &logs_resource())
        .create(&PostParams::default(), &logs)
        .await
        .context("registering the pod's log with KWOK")?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let container = containers.first().cloned();
    crate::kube_support::eventually("KWOK to serve the log", Duration::from_secs(30), || {
        let params = LogParams {
            container: container.clone(),
            limit_bytes: Some(1),
            ..Default::default()
        };
        let pods = pods.clone();
        let name = name.clone();
        async move { Ok(pods.logs(&name, &params).await.ok().map(|_| ())) }
    })
    .await?;

    let patch = serde_json::json!({
        "metadata": {"annotations": {EXIT_CODE_ANNOTATION: exit_code.to_string()}}
    });
    pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("setting the exit code")?;
    Ok(())
}

/// What the stand-in does with a scan of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Prints fixture `variant` (re-aimed at the repo) and exits `exit_code` (0, or 1 when a
    /// check hit a runtime error).
    Succeed { variant: usize, exit_code: i32 },
    /// `Skipping <repo>: ...` on stderr, exit 0, no JSON: scorecard gave up on the repo.
    Skip,
    /// Runs until the Job's deadline.
    Hang,
    /// Exits 2 with a Go panic and no JSON.
    Crash,
    /// Prints GitHub's rate-limit error and exits 0 without JSON.
    RateLimited,
    /// Runs until [`Simulator::release`] is called for the repo, then succeeds.
    Hold,
    /// The first pod of a work item crashes (as [`Behavior::Crash`]); later ones succeed.
    FailOnce,
    /// Prints [`LEAKED_TOKEN`] in every form a credential leaks in, then exits 2 without JSON.
    Leak,
    /// Prints a large repository's result pretty-printed (as `jq` or a wrapper script prints
    /// it): fixture 0 with [`PRETTY_DETAILS`] lines of Pinned-Dependencies details, more
    /// lines in all than a short tail of the log holds.
    Pretty,
}

/// The Pinned-Dependencies details of a [`Behavior::Pretty`] scan: a repository with this
/// many unpinned dependencies.
pub const PRETTY_DETAILS: usize = 3_000;

/// A token-shaped secret the `sim-leak` scans print, for tests that no copy of it is kept.
pub const LEAKED_TOKEN: &str = "ghp_L3aK3dT0k3nL3aK3dT0k3nL3aK3dT0k3n0000";

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Tests choose an outcome through the owner's name (`github.com/sim-skip/x`); other
/// repositories get a realistic mix, stable per repository: 85% results (of which 1 in 8
/// exits 1), 7% scan failures, 1% scans that print their token and fail, 4% rate limits, 3%
/// timeouts.
pub fn behavior_for(repo: &str) -> Behavior {
    let owner = repo
        .split('/')
        .nth(1)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let h = fnv(&repo.to_ascii_lowercase());
    let variant = usize::try_from(h % 3).unwrap_or(0);
    match owner.as_str() {
        o if o.starts_with("sim-ok") => {
            return Behavior::Succeed {
                variant,
                exit_code: 0,
            };
        }
        o if o.starts_with("sim-exit1") => {
            return Behavior::Succeed {
                variant,
                exit_code: 1,
            };
        }
        o if o.starts_with("sim-skip") => return Behavior::Skip,
        o if o.starts_with("sim-hang") => return Behavior::Hang,
        o if o.starts_with("sim-crash") => return Behavior::Crash,
        o if o.starts_with("sim-ratelimit") => return Behavior::RateLimited,
        o if o.starts_with("sim-hold") => return Behavior::Hold,
        o if o.starts_with("sim-flaky") => return Behavior::FailOnce,
        o if o.starts_with("sim-leak") => return Behavior::Leak,
        o if o.starts_with("sim-pretty") => return Behavior::Pretty,
        _ => {}
    }
    match (h >> 8) % 100 {
        0..=74 => Behavior::Succeed {
            variant,
            exit_code: 0,
        },
        75..=84 => Behavior::Succeed {
            variant,
            exit_code: 1,
        },
        85..=91 => Behavior::Skip,
        92 => Behavior::Leak,
        93..=96 => Behavior::RateLimited,
        _ => Behavior::Hang,
    }
}

/// The log and exit code of a scan of `repo`, or `None` for a scan that does not end.
pub fn scan_output(repo: &str, behavior: Behavior) -> Option<(i32, Vec<(Stream, String)>)> {
    let start = (Stream::Stderr, format!("Starting scorecard for {repo}"));
    match behavior {
        Behavior::Succeed { variant, exit_code } => {
            let outputs = crate::fixtures::scorecard_outputs();
            let (_, line) = &outputs[variant % outputs.len()];
            let mut json: serde_json::Value = serde_json::from_str(line).expect("fixture JSON");
            json["repo"]["name"] = repo.into();
            json["date"] = chrono::Utc::now().to_rfc3339().into();
            let mut lines = vec![start];
            if exit_code == 1 {
                lines.push((
                    Stream::Stderr,
                    "Error: check runtime error: Fuzzing: internal error".into(),
                ));
            }
            lines.push((Stream::Stdout, json.to_string()));
            Some((exit_code, lines))
        }
        Behavior::Pretty => {
            let outputs = crate::fixtures::scorecard_outputs();
            let mut json: serde_json::Value =
                serde_json::from_str(&outputs[0].1).expect("fixture JSON");
            json["repo"]["name"] = repo.into();
            json["date"] = chrono::Utc::now().to_rfc3339().into();
            let pinned = json["checks"]
                .as_array_mut()
                .expect("checks")
                .iter_mut()
                .find(|c| c["name"] == "Pinned-Dependencies")
                .expect("a Pinned-Dependencies check");
            pinned["details"] = (0..PRETTY_DETAILS)
                .map(|i| {
                    format!(
                        "Warn: third-party GitHubAction not pinned by hash: .github/workflows/w{i}.yml:12"
                    )
                })
                .collect();
            let pretty = serde_json::to_string_pretty(&json).expect("JSON");
            let mut lines = vec![start];
            lines.extend(pretty.lines().map(|l| (Stream::Stdout, l.to_owned())));
            lines.push((Stream::Stderr, "scan finished".to_owned()));
            Some((0, lines))
        }
        Behavior::Skip => Some((
            0,
            vec![
                start,
                (
                    Stream::Stderr,
                    format!(
                        "Skipping {repo}: repo unreachable: GET https://api.github.com/repos/{}: 404 Not Found",
                        repo.trim_start_matches("github.com/")
                    ),
                ),
            ],
        )),
        Behavior::RateLimited => Some((
            0,
            vec![
                start,
                (
                    Stream::Stderr,
                    format!(
                        "Skipping {repo}: GET https://api.github.com/graphql: 403 API rate limit exceeded"
                    ),
                ),
            ],
        )),
        Behavior::Crash => Some((
            2,
            vec![
                start,
                (
                    Stream::Stderr,
                    "panic: runtime error: invalid memory address or nil pointer dereference"
                        .into(),
                ),
            ],
        )),
        Behavior::Leak => Some((
            2,
            vec![
                start,
                (
                    Stream::Stderr,
                    format!(
                        "GET https://x-access-token:{LEAKED_TOKEN}@api.github.com/repos/a/b: 502"
                    ),
                ),
                (
                    Stream::Stderr,
                    format!("retrying https://api.github.com/graphql?token={LEAKED_TOKEN}"),
                ),
                (
                    Stream::Stderr,
                    format!("> Authorization: Bearer {LEAKED_TOKEN}"),
                ),
                (
                    Stream::Stderr,
                    format!("panic: bad credentials {LEAKED_TOKEN}"),
                ),
            ],
        )),
        Behavior::Hang | Behavior::Hold | Behavior::FailOnce => None,
    }
}

/// The credential a scan pod runs with: the token Secret key its env references, or
/// `app:<installation>` (the worker's pool keys).
pub fn credential_of(pod: &Pod) -> String {
    let env = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    for var in &env {
        match var.name.as_str() {
            "GITHUB_AUTH_TOKEN" => {
                if let Some(key) = var
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                {
                    return key.key.clone();
                }
            }
            "GITHUB_APP_INSTALLATION_ID" => {
                return Credential::App(var.value.as_deref().unwrap_or_default()).key();
            }
            _ => {}
        }
    }
    String::new()
}

/// What GitHub's quota did to the scans, once [`Simulator::limit`] gave it one.
#[derive(Debug, Default)]
struct Quotas {
    quota: Option<Quota>,
    ledger: Ledger,
    /// Scans that waited for a reset.
    stalled: u64,
    /// Each scan's credential and start, in order.
    starts: Vec<(String, Instant)>,
    /// Credentials GitHub answers "Bad credentials" for.
    revoked: HashSet<String>,
}

/// What scorecard prints when GitHub rejects its token: exit 1, no JSON.
fn bad_credentials(repo: &str) -> (i32, Vec<(Stream, String)>) {
    (
        1,
        vec![
            (Stream::Stderr, format!("Starting scorecard for {repo}")),
            (
                Stream::Stderr,
                format!(
                    "Error: RepoUnreachable: GET https://api.github.com/repos/{}: 401 Bad credentials []",
                    repo.trim_start_matches("github.com/")
                ),
            ),
        ],
    )
}

/// Spends `calls` of `credential`'s quota, waiting out resets as scorecard does; how long it
/// waited, if it had to.
async fn spend(
    quotas: &Mutex<Quotas>,
    quota: Quota,
    credential: &str,
    calls: u32,
) -> Option<Duration> {
    let began = Instant::now();
    let mut owed = calls;
    let mut stalled = false;
    loop {
        let charge = quotas
            .lock()
            .unwrap()
            .ledger
            .charge(quota, credential, owed, Instant::now());
        match charge {
            Charge::Done => break,
            Charge::Stall { reset, rest } => {
                if !stalled {
                    quotas.lock().unwrap().stalled += 1;
                    stalled = true;
                }
                owed = rest;
                tokio::time::sleep_until(reset.into()).await;
            }
        }
    }
    stalled.then(|| began.elapsed())
}

/// The scorecard stand-in for a namespace: watches the fleet's pods and plays each scan back
/// as [`behavior_for`] its repository says. Counts pods per repository, so tests can check
/// that a work item was never scanned twice.
pub struct Simulator {
    pods: Arc<Mutex<HashMap<String, Vec<String>>>>,
    by_work: Arc<Mutex<HashMap<String, usize>>>,
    held: Arc<Mutex<HashMap<String, Pod>>>,
    quotas: Arc<Mutex<Quotas>>,
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

/// The annotation on scan pods that names their repository.
pub const REPO_ANNOTATION: &str = "scorecard-fleet/repo";
/// The annotation on scan pods that names their work item.
pub const WORK_ID_ANNOTATION: &str = "scorecard-fleet/work-id";

/// What the stand-in keeps for the tests, shared by the watch and each scan it plays.
#[derive(Clone)]
struct Player {
    pods: Arc<Mutex<HashMap<String, Vec<String>>>>,
    by_work: Arc<Mutex<HashMap<String, usize>>>,
    held: Arc<Mutex<HashMap<String, Pod>>>,
    quotas: Arc<Mutex<Quotas>>,
    client: Client,
}

impl Player {
    /// Watches the namespace's scan pods and plays each once it runs.
    async fn watch(self, api: Api<Pod>) {
        let config =
            watcher::Config::default().labels("app.kubernetes.io/managed-by=scorecard-fleet");
        let mut events = watcher::watcher(api, config).boxed();
        let mut handled: HashSet<String> = HashSet::new();
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let uid = pod.uid().unwrap_or_default();
            if running && pod.metadata.deletion_timestamp.is_none() && handled.insert(uid.clone()) {
                self.play(pod, uid);
            }
        }
    }

    /// Counts a running pod and plays its scan back as its repository says.
    fn play(&self, pod: Pod, uid: String) {
        let annotation = |name: &str| pod.annotations().get(name).cloned().unwrap_or_default();
        let (repo, work_id) = (annotation(REPO_ANNOTATION), annotation(WORK_ID_ANNOTATION));
        self.pods
            .lock()
            .unwrap()
            .entry(repo.clone())
            .or_default()
            .push(uid);
        let nth = {
            let mut by_work = self.by_work.lock().unwrap();
            let n = by_work.entry(work_id.clone()).or_default();
            *n += 1;
            *n
        };
        let behavior = match behavior_for(&repo) {
            Behavior::FailOnce if nth == 1 => Behavior::Crash,
            Behavior::FailOnce => Behavior::Succeed {
                variant: 0,
                exit_code: 0,
            },
            other => other,
        };
        if behavior == Behavior::Hold {
            self.held.lock().unwrap().insert(repo, pod);
            return;
        }
        let credential = credential_of(&pod);
        let (quota, revoked) = {
            let mut q = self.quotas.lock().unwrap();
            q.starts.push((credential.clone(), Instant::now()));
            (q.quota, q.revoked.contains(&credential))
        };
        // With a quota, rate limits and long scans come from the quota itself.
        let behavior = match behavior {
            Behavior::RateLimited | Behavior::Hang if quota.is_some() => Behavior::Succeed {
                variant: 0,
                exit_code: 0,
            },
            other => other,
        };
        let played = if revoked {
            // GitHub turned the scan away at its first request: nothing was scanned, and the
            // retry with another credential is not a second scan.
            self.not_a_scan(&work_id);
            Some(bad_credentials(&repo))
        } else {
            scan_output(&repo, behavior)
        };
        let Some((code, lines)) = played else {
            return;
        };
        let quota = quota.filter(|_| !revoked).map(|q| {
            let calls = match behavior {
                Behavior::Succeed { .. } | Behavior::Pretty => calls_for(&repo),
                _ => 5,
            };
            (q, credential, calls)
        });
        tokio::spawn(self.clone().finish(pod, work_id, code, lines, quota));
    }

    /// Spends the scan's calls of its credential's quota (waiting out a reset, as scorecard
    /// does, and saying so in the log), then ends the pod.
    async fn finish(
        self,
        pod: Pod,
        work_id: String,
        code: i32,
        mut lines: Vec<(Stream, String)>,
        quota: Option<(Quota, String, u32)>,
    ) {
        if let Some((quota, credential, calls)) = quota
            && let Some(waited) = spend(&self.quotas, quota, &credential, calls).await
        {
            // scorecard's rate-limit transport, word for word.
            let waiting = format!(
                "Rate limit exceeded. Waiting {}s to retry...",
                waited.as_secs()
            );
            lines.insert(1, (Stream::Stderr, waiting));
            lines.insert(
                2,
                (Stream::Stderr, "Rate limit exceeded. Retrying...".into()),
            );
        }
        let lines: Vec<(Stream, &str)> = lines.iter().map(|(s, l)| (*s, l.as_str())).collect();
        if let Err(e) = finish_pod(&self.client, &pod, code, &lines).await {
            // The stand-in could not play this scan back (KWOK lagging): the pod runs into its
            // deadline, a TIMEOUT the fleet rightly retries. That retry is not a second scan of
            // the item: this one never ran.
            eprintln!("simulator: finishing {}: {e:#}", pod.name_any());
            self.not_a_scan(&work_id);
        }
    }

    /// Takes back the count of a pod that scanned nothing.
    fn not_a_scan(&self, work_id: &str) {
        if let Some(n) = self.by_work.lock().unwrap().get_mut(work_id) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Simulator {
    pub fn start(client: Client, namespace: &str) -> Self {
        let player = Player {
            pods: Arc::default(),
            by_work: Arc::default(),
            held: Arc::default(),
            quotas: Arc::default(),
            client: client.clone(),
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let task = tokio::spawn(player.clone().watch(api));
        let Player {
            pods,
            by_work,
            held,
            quotas,
            client,
        } = player;
        Self {
            pods,
            by_work,
            held,
            quotas,
            client,
            task,
        }
    }

    /// From now on each credential has `quota`: scans spend calls ([`calls_for`]) and wait
    /// for the reset when a window runs dry. Rate-limit and hang outcomes of the mix become
    /// results: the quota decides who waits.
    pub fn limit(&self, quota: Quota) {
        self.quotas.lock().unwrap().quota = Some(quota);
    }

    /// From now on GitHub rejects `credential` ("Bad credentials").
    pub fn revoke(&self, credential: &str) {
        self.quotas
            .lock()
            .unwrap()
            .revoked
            .insert(credential.to_owned());
    }

    /// Scans that waited for a quota reset.
    pub fn stalled(&self) -> u64 {
        self.quotas.lock().unwrap().stalled
    }

    /// Each scan's credential and start, in order.
    pub fn starts(&self) -> Vec<(String, Instant)> {
        self.quotas.lock().unwrap().starts.clone()
    }

    /// The quota's windows so far, per credential in order.
    pub fn windows(&self) -> Vec<Window> {
        self.quotas.lock().unwrap().ledger.windows()
    }

    /// Pods that ran for `repo` so far.
    pub fn pods_for(&self, repo: &str) -> usize {
        self.pods.lock().unwrap().get(repo).map_or(0, Vec::len)
    }

    /// Work ids that got more than one pod: scanned twice for one work item.
    pub fn scanned_twice(&self) -> Vec<(String, usize)> {
        self.by_work
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(w, n)| (w.clone(), *n))
            .collect()
    }

    /// Pods seen in all.
    pub fn pods_total(&self) -> usize {
        self.by_work.lock().unwrap().values().sum()
    }

    /// Whether a scan of `repo` is being held.
    pub fn holding(&self, repo: &str) -> bool {
        self.held.lock().unwrap().contains_key(repo)
    }

    /// Lets a held scan of `repo` finish with a result.
    pub async fn release(&self, repo: &str) -> anyhow::Result<()> {
        let pod = self
            .held
            .lock()
            .unwrap()
            .remove(repo)
            .context("no held scan for that repo")?;
        let (code, lines) = scan_output(
            repo,
            Behavior::Succeed {
                variant: 0,
                exit_code: 0,
            },
        )
        .expect("a success ends");
        let lines: Vec<(Stream, &str)> = lines.iter().map(|(s, l)| (*s, l.as_str())).collect();
        finish_pod(&self.client, &pod, code, &lines).await
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use fleet_proto::v1::WorkItem;
    use k8s_openapi::api::core::v1::Pod;
    use worker::job::build;

    use super::credential_of;

    /// The stand-in charges a scan to the pool key the worker chose, read back from the pod
    /// the worker's Job makes: a token's Secret key, or an App installation's `app:<id>`.
    #[test]
    fn a_scan_pod_names_the_pool_key_the_worker_chose() {
        let settings = crate::kube_support::scan_job_settings("scorecard-scans", 60);
        let item = WorkItem {
            id: "w-1".into(),
            repo: "github.com/ossf/scorecard".into(),
            ..Default::default()
        };
        for key in ["token-2", "app:7"] {
            let job = build(&item, &settings, key);
            let template = job.spec.expect("a Job spec").template;
            let pod = Pod {
                metadata: template.metadata.unwrap_or_default(),
                spec: template.spec,
                status: None,
            };
            assert_eq!(credential_of(&pod), key);
        }
    }
}
