//! The whole fleet as processes (the real producer, worker and sink binaries) on the local
//! stack, for end-to-end and fault tests, and the invariant every such test ends with.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use fleet_proto::v1::{FailureClass, ScoreResult, WorkFailure};
use fleet_runtime::topology::{
    SINK, Topology, WORKER_DISCOVERY, WORKER_EXHAUSTED, WORKER_MANUAL, WORKER_SCHEDULED,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use prost::Message as _;
use sqlx::PgPool;

use crate::kube_support::{self, TestNamespace};
use crate::sim::Simulator;
use crate::stack;

/// One fleet at a time per test process: two would share 2 cores and turn scan deadlines into
/// timeouts that the invariant would rightly call double scans.
static ONE_FLEET: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::OnceLock::new();

pub struct Fleet {
    _turn: tokio::sync::OwnedMutexGuard<()>,
    /// What the services connect to: PostgreSQL, or a pooler in front of it.
    pub database_url: String,
    /// PostgreSQL itself, for migrations and the test's own looks.
    pub direct_database_url: String,
    pub nats_url: String,
    pub topology: Topology,
    pub ns: TestNamespace,
    pub sim: Simulator,
    worker_kubeconfig: PathBuf,
    /// Settings every process gets (flags' environment variables).
    pub env: Vec<(String, String)>,
    children: HashMap<String, Child>,
    /// Each running process's `/metrics` and probes.
    http: HashMap<String, std::net::SocketAddr>,
    /// Each process's log (`<name>.log`): kept out of the test output, where a soak's
    /// thousands of expected warnings would bury a failure; shown when a test fails.
    pub logs: PathBuf,
}

impl Fleet {
    /// A namespace with deploy/'s worker RBAC, the token Secret, a kubeconfig holding the worker
    /// ServiceAccount's token, and the scorecard stand-in watching it.
    pub async fn prepare(
        database_url: &str,
        nats_url: &str,
        topology: Topology,
        env: &[(&str, &str)],
    ) -> Self {
        let turn = ONE_FLEET
            .get_or_init(Default::default)
            .clone()
            .lock_owned()
            .await;
        let admin: Client = kube_support::admin().await;
        let ns = TestNamespace::create(&admin, "e2e").await;
        // A scans namespace as deploy/ makes it, admission policy enforced.
        kube_support::install_scans(&ns.name, &ns.name).await;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("scorecard-github-tokens".into()),
                ..Default::default()
            },
            string_data: Some(
                (0..4)
                    .map(|i| (format!("token-{i}"), "simulated".to_owned()))
                    .collect(),
            ),
            ..Default::default()
        };
        Api::<Secret>::namespaced(admin.clone(), &ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let token = kube_support::service_account_token(&admin, &ns.name, "scorecard-fleet-worker")
            .await
            .unwrap();
        let worker_kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name));
        kube_support::write_token_kubeconfig(&token, &worker_kubeconfig).unwrap();
        let sim = Simulator::start(admin, &ns.name);
        let logs = std::env::temp_dir().join("fleet-logs").join(&ns.name);
        std::fs::create_dir_all(&logs).expect("a directory for the fleet's logs");
        Self {
            logs,
            _turn: turn,
            database_url: database_url.to_owned(),
            direct_database_url: database_url.to_owned(),
            nats_url: nats_url.to_owned(),
            topology,
            ns,
            sim,
            worker_kubeconfig,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            children: HashMap::new(),
            http: HashMap::new(),
        }
    }

    /// Points the services at a transaction pooler in front of the database (and tells them
    /// so); the test's own looks and migrations still go straight to PostgreSQL.
    pub fn through_transaction_pooler(&mut self, url: &str) {
        self.database_url = url.to_owned();
        self.env
            .push(("DATABASE_POOLING".to_owned(), "transaction".to_owned()));
    }

    /// `producer migrate` then `producer import` of `repos`, as an operator would (straight to
    /// PostgreSQL: migrations take a session lock, which a transaction pooler cannot hold).
    pub fn import(&self, repos: &[String]) {
        let file = std::env::temp_dir().join(format!("{}.csv", stack::unique("repos")));
        std::fs::write(&file, format!("repo,metadata\n{}\n", repos.join(",\n"))).unwrap();
        for args in [vec!["migrate"], vec!["import", file.to_str().unwrap()]] {
            let out = Command::new(stack::workspace_binary("producer"))
                .args(&args)
                .env("DATABASE_URL", &self.direct_database_url)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "producer {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_file(file).ok();
    }

    /// Starts `binary` (with `args`) as process `name`.
    pub fn start(&mut self, name: &str, binary: &str, args: &[&str]) {
        let t = self.topology.args();
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], stack::free_port()));
        let mut cmd = Command::new(stack::workspace_binary(binary));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("NATS_URL", &self.nats_url)
            .env("NATS_PREFIX", &t.nats_prefix)
            .env("WORK_ACK_WAIT_SECS", t.work_ack_wait_secs.to_string())
            .env("WORK_MAX_DELIVER", t.work_max_deliver.to_string())
            .env("NATS_STREAM_REPLICAS", t.stream_replicas.to_string())
            .env("HTTP_ADDR", http.to_string())
            .env("KUBECONFIG", &self.worker_kubeconfig)
            .env("WORKER_NAMESPACE", &self.ns.name)
            .env("TOKEN_KEYS", "token-0")
            // The stand-in spends no quota unless a test gives it one (`Simulator::limit`).
            .env("GITHUB_TOKEN_CALLS_PER_WINDOW", "1000000000")
            // A replayed rate-limit failure is the recording's, not the stand-in's quota: a
            // rest of a second, not the production 15 minutes that would stall the test.
            .env("TOKEN_COOLDOWN_SECS", "1")
            .env("LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file(name));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        self.children.insert(name.to_owned(), child);
        self.http.insert(name.to_owned(), http);
    }

    /// Asserts that no copy of `secret` is kept anywhere the fleet writes: any message of its
    /// streams (payloads and headers) or its scan register, any table (`pg_dump`), any
    /// process's log, any running process's `/metrics`.
    pub async fn assert_kept_nowhere(&self, secret: &str, js: &jetstream::Context) {
        for (name, addr) in &self.http {
            if !self.children.contains_key(name) {
                continue;
            }
            let (status, body) = crate::probe::get(*addr, "/metrics")
                .await
                .unwrap_or_else(|| panic!("{name} serves /metrics at {addr}"));
            assert_eq!(status, 200, "{name} /metrics");
            assert!(
                !holds(body.as_bytes(), secret),
                "{name}'s /metrics holds the secret"
            );
        }
        for entry in std::fs::read_dir(&self.logs).expect("the fleet's logs") {
            let path = entry.unwrap().path();
            let log = std::fs::read(&path).unwrap();
            assert!(!holds(&log, secret), "{} holds the secret", path.display());
        }
        let t = &self.topology;
        let mut streams = vec![
            t.work_stream(),
            t.results_stream(),
            t.dead_stream(),
            t.exhausted_stream(),
            format!("KV_{}", t.scans_bucket()),
        ];
        // The workers' credential budgets, when they ran with one.
        let budget = format!("KV_{}", t.budget_bucket());
        if js.get_stream(&budget).await.is_ok() {
            streams.push(budget);
        }
        let read = assert_streams_keep_no(secret, js, &streams).await;
        assert!(
            read > 0,
            "the fleet's streams hold messages to look through"
        );
        assert_tables_keep_no(secret, &self.direct_database_url);
    }

    fn log_file(&self, name: &str) -> Stdio {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .expect("a log file");
        Stdio::from(file)
    }

    /// Process `name`'s `/metrics`.
    pub async fn metrics(&self, name: &str) -> String {
        let addr = self.http[name];
        let (status, body) = crate::probe::get(addr, "/metrics")
            .await
            .unwrap_or_else(|| panic!("{name} serves /metrics at {addr}"));
        assert_eq!(status, 200, "{name} /metrics");
        body
    }

    /// Waits until process `name` says on `/readyz` that it is through its start-up.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) {
        crate::probe::readyz_until(self.http[name], 200, "", timeout).await;
    }

    /// Process `name`'s log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The last lines of every process's log, for a failing test's output.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} (last {lines} lines)\n", file.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// SIGKILL: no drain, no goodbye.
    /// Whether process `name` is still running (a service that gave up has exited).
    pub fn is_running(&mut self, name: &str) -> bool {
        let child = self.children.get_mut(name).expect("a started process");
        child.try_wait().unwrap().is_none()
    }

    pub fn kill(&mut self, name: &str) {
        let mut child = self.children.remove(name).expect("a running process");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and waits for the exit without blocking the runtime: the stand-in runs on it,
    /// and a draining worker waits for the scans the stand-in ends.
    pub async fn terminate(&mut self, name: &str) -> ExitStatus {
        let mut child = self.children.remove(name).expect("a running process");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            let status = self.terminate(&name).await;
            assert!(status.success(), "{name} exited with {status:?} on SIGTERM");
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(20));
        }
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.worker_kubeconfig);
    }
}

/// How long a test waits for its fleet to finish. A scan the stand-in could not end (KWOK
/// lagging under a loaded CI machine) times out after `JOB_DEADLINE_SECS` and is retried after
/// TIMEOUT's 5-minute delay: room for such a round; a healthy run settles in a minute or two.
pub const SETTLE: Duration = Duration::from_secs(900);

/// Settings that make a test fleet finish in seconds.
pub const FAST: &[(&str, &str)] = &[
    ("JOB_DEADLINE_SECS", "60"),
    ("PRODUCER_BACKOFF_CAP_SECS", "1"),
    ("SINK_BATCH_WAIT_MS", "100"),
    ("WORKER_MAX_IN_FLIGHT", "40"),
    ("WORKER_DRAIN_DEADLINE_SECS", "10"),
    ("WORKER_POLL_MS", "200"),
];

/// `n` repositories the stand-in always scores.
pub fn sim_ok(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("github.com/sim-ok-{i}/repo-{i}"))
        .collect()
}

pub async fn scored(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM scores")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Waits until at least `n` repositories have a score.
pub async fn wait_scored(pool: &PgPool, n: i64) {
    for _ in 0..600 {
        if scored(pool).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{n} results never arrived");
}

/// Waits until every repository has a score or a recorded failure and no message is waiting or
/// unacked anywhere; fails after `timeout`.
pub async fn settle(
    pool: &PgPool,
    js: &jetstream::Context,
    topology: &Topology,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = (0, 0);
    loop {
        let (repos, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE r.last_scored_at IS NOT NULL
                 OR EXISTS (SELECT 1 FROM work_failures f WHERE f.repo_id = r.id)) FROM repos r",
        )
        .fetch_one(pool)
        .await
        .unwrap_or((-1, 0));
        if repos == done && repos > 0 && unacked(js, topology).await == Some(0) {
            return;
        }
        if (repos, done) != last {
            eprintln!("settle: {done}/{repos}");
            last = (repos, done);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled after {timeout:?}: {done}/{repos} done"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Messages waiting or unacked on the fleet's consumers (None while NATS is unreachable).
pub async fn unacked(js: &jetstream::Context, topology: &Topology) -> Option<u64> {
    let mut total = 0;
    for (stream, name) in [
        (topology.work_stream(), WORKER_MANUAL),
        (topology.work_stream(), WORKER_DISCOVERY),
        (topology.work_stream(), WORKER_SCHEDULED),
        (topology.results_stream(), SINK),
        (topology.exhausted_stream(), WORKER_EXHAUSTED),
    ] {
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_stream(stream)
            .await
            .ok()?
            .get_consumer(name)
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        total += info.num_pending + info.num_ack_pending as u64;
    }
    Some(total)
}

/// Every message of `subject`. A cluster just through a restart may not have placed the
/// reader's consumer yet (503, no responders): the read starts over until it is.
async fn read_all(
    js: &jetstream::Context,
    stream: String,
    subject: String,
) -> Vec<(String, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match try_read_all(js, &stream, &subject).await {
            Ok(all) => return all,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("reading {subject} again: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("reading {subject}: {e}"),
        }
    }
}

async fn try_read_all(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let reader = js
        .get_stream(stream)
        .await?
        .create_consumer(pull::Config {
            filter_subject: subject.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    loop {
        let mut batch = reader.fetch().max_messages(1000).messages().await?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
            out.push((m.subject.to_string(), m.payload.to_vec()));
            got += 1;
        }
        if got == 0 {
            return Ok(out);
        }
    }
}

/// What the invariant found, for tests to assert more on.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub enqueued: u64,
    pub scored: BTreeSet<String>,
    pub failed: HashMap<String, FailureClass>,
    pub poison: u64,
}

/// The invariant every end-to-end and fault test ends with: every enqueued work item ended as
/// exactly one score or exactly one dead-lettered failure; no work item was scanned twice; the
/// database agrees with the streams; nothing is left unacked.
pub async fn check_invariant(
    pool: &PgPool,
    js: &jetstream::Context,
    topology: &Topology,
    sim: &Simulator,
) -> Outcomes {
    let mut work = js.get_stream(topology.work_stream()).await.unwrap();
    let work_state = work.info().await.unwrap().state.clone();
    assert_eq!(work_state.messages, 0, "work left in the queue");
    let enqueued = work_state.last_sequence;

    let mut out = Outcomes {
        enqueued,
        ..Default::default()
    };
    published_outcomes(js, topology, &mut out).await;
    let dead_ids = dead_lettered(js, topology, &mut out).await;
    let failed_ids: BTreeSet<String> = out.failed.keys().cloned().collect();
    assert_eq!(
        dead_ids, failed_ids,
        "every final failure is dead-lettered, once"
    );
    assert_eq!(
        out.scored.len() as u64 + out.failed.len() as u64 + out.poison,
        enqueued,
        "every enqueued item ends as one score, one failure or one poison letter"
    );

    let history: Vec<String> = sqlx::query_scalar("SELECT work_id FROM score_history")
        .fetch_all(pool)
        .await
        .unwrap();
    let history: BTreeSet<String> = history.into_iter().collect();
    assert_eq!(
        history, out.scored,
        "score_history holds exactly the published results"
    );
    let scanned_twice = sim.scanned_twice();
    assert!(
        scanned_twice.is_empty(),
        "work items scanned twice: {scanned_twice:?}"
    );
    assert_eq!(
        unacked(js, topology).await,
        Some(0),
        "messages left unacked"
    );
    out
}

/// Every result and failure the results stream holds, into `out`: none twice, none both.
async fn published_outcomes(js: &jetstream::Context, topology: &Topology, out: &mut Outcomes) {
    for (_, payload) in read_all(js, topology.results_stream(), topology.results_subject()).await {
        // Poison a test put there itself; the sink dead-letters it.
        let Ok(r) = ScoreResult::decode(payload.as_slice()) else {
            continue;
        };
        assert!(
            out.scored.insert(r.work_id.clone()),
            "work item {} published twice",
            r.work_id
        );
    }
    for (_, payload) in read_all(js, topology.results_stream(), topology.failures_subject()).await {
        let Ok(f) = WorkFailure::decode(payload.as_slice()) else {
            continue;
        };
        let class = FailureClass::try_from(f.class).unwrap();
        assert!(
            out.failed.insert(f.work_id.clone(), class).is_none(),
            "failure {} recorded twice",
            f.work_id
        );
        assert!(
            !out.scored.contains(&f.work_id),
            "work item {} both scored and failed",
            f.work_id
        );
    }
}

/// The work ids of the dead stream's letters (none twice); poison from the work lanes is
/// counted in `out`.
async fn dead_lettered(
    js: &jetstream::Context,
    topology: &Topology,
    out: &mut Outcomes,
) -> BTreeSet<String> {
    let mut dead_ids = BTreeSet::new();
    for (subject, payload) in read_all(js, topology.dead_stream(), topology.dead_subjects()).await {
        let f = WorkFailure::decode(payload.as_slice()).unwrap();
        if subject == topology.dead_subject("POISON") {
            // Only poison from the work lanes was an enqueued item; the sink's is not.
            if f.source_subject == topology.manual_subject()
                || f.source_subject == topology.discovery_subject()
                || f.source_subject == topology.scheduled_subject()
            {
                out.poison += 1;
            }
            continue;
        }
        assert!(
            dead_ids.insert(f.work_id.clone()),
            "{} dead-lettered twice",
            f.work_id
        );
    }
    dead_ids
}

fn holds(bytes: &[u8], secret: &str) -> bool {
    bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
}

/// Asserts that no message of `streams` (payload or header) holds `secret`; the number of
/// messages read.
pub async fn assert_streams_keep_no(
    secret: &str,
    js: &jetstream::Context,
    streams: &[String],
) -> usize {
    let mut read = 0;
    for name in streams {
        let mut stream = js
            .get_stream(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let state = stream.info().await.unwrap().state.clone();
        for sequence in state.first_sequence..=state.last_sequence {
            // Acked work items and superseded records are gone: nothing to hold.
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            read += 1;
            assert!(
                !holds(&message.payload, secret),
                "message {sequence} of {name} ({}) holds the secret",
                message.subject
            );
            for (key, values) in message.headers.iter() {
                for value in values {
                    assert!(
                        !holds(value.as_str().as_bytes(), secret),
                        "header {key} of message {sequence} of {name} holds the secret"
                    );
                }
            }
        }
    }
    read
}

/// Asserts that no table of the database at `database_url` holds `secret` (`pg_dump`).
pub fn assert_tables_keep_no(secret: &str, database_url: &str) {
    let dump = Command::new(crate::pg::tool("pg_dump"))
        .args(["--data-only", "--dbname", database_url])
        .output()
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(!dump.stdout.is_empty());
    assert!(
        !holds(&dump.stdout, secret),
        "a table holds the secret (pg_dump)"
    );
}
