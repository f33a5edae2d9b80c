//! The worker against the stack's real API server (as its own ServiceAccount, with deploy/'s
//! Role), its Job controller, KWOK pods playing back recorded scorecard outputs, and NATS.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use fleet_proto::v1::{FailureClass, ScoreResult, WorkFailure, WorkItem, WorkReason};
use fleet_runtime::topology::{
    Topology, TopologyArgs, WORKER_DISCOVERY, WORKER_MANUAL, WORKER_SCHEDULED,
};
use fleet_tests::kube_support::{self, TestNamespace, eventually};
use fleet_tests::proxy::{CutProxy, NatsLosingProxy};
use fleet_tests::sim::Simulator;
use fleet_tests::stack;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use prost::Message;
use tokio_util::sync::CancellationToken;
use worker::budget::Pool;
use worker::consume::{Settings, Worker};
use worker::exhausted::Recorded;
use worker::job::JobSettings;
use worker::metrics::Metrics;
use worker::outcome::Ending;
use worker::runner::RunResult;
use worker::runner::kubernetes::KubeRunner;
use worker::scans::Decision;
use worker::tokens::TokenPool;
use worker::watch::JobWatch;

struct Harness {
    ns: TestNamespace,
    proxy: Option<CutProxy>,
    admin: Client,
    js: jetstream::Context,
    topology: Topology,
    sim: Simulator,
    worker: Arc<Worker>,
    metrics: Metrics,
    shutdown: CancellationToken,
}

fn job_settings(ns: &str, deadline_secs: i64) -> JobSettings {
    kube_support::scan_job_settings(ns, deadline_secs)
}

/// Makes `ns` a scans namespace with deploy/'s worker RBAC and admission policy (the worker's
/// ServiceAccount in `ns` too), and returns a client holding that ServiceAccount's token: every
/// Job these tests create passes the policy.
async fn worker_client(admin: &Client, ns: &str) -> Client {
    kube_support::install_scans(ns, ns).await;
    let token = kube_support::service_account_token(admin, ns, "scorecard-fleet-worker")
        .await
        .unwrap();
    kube_support::as_service_account(token).await
}

fn topology_args(prefix: &str, ack_wait_secs: u64, max_deliver: i64) -> TopologyArgs {
    TopologyArgs {
        nats_prefix: prefix.into(),
        work_ack_wait_secs: ack_wait_secs,
        work_max_deliver: max_deliver,
        ..Default::default()
    }
}

/// What a test varies about its worker.
struct Opts {
    deadline_secs: i64,
    max_deliver: i64,
    ack_wait_secs: u64,
    pending_timeout_secs: u64,
    heartbeat_secs: u64,
    /// The Job watch looks at another namespace: it never reports this worker's Jobs.
    blind_watch: bool,
    /// The Job watch reaches the API server through a proxy the test can cut.
    watch_via_proxy: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            deadline_secs: 600,
            max_deliver: 3,
            ack_wait_secs: 30,
            pending_timeout_secs: 30,
            heartbeat_secs: 1,
            blind_watch: false,
            watch_via_proxy: false,
        }
    }
}

async fn harness(deadline_secs: i64, max_deliver: i64, ack_wait_secs: u64) -> Harness {
    harness_with(Opts {
        deadline_secs,
        max_deliver,
        ack_wait_secs,
        ..Default::default()
    })
    .await
}

async fn harness_with(opts: Opts) -> Harness {
    let Opts {
        deadline_secs,
        max_deliver,
        ack_wait_secs,
        pending_timeout_secs,
        heartbeat_secs,
        blind_watch,
        watch_via_proxy,
    } = opts;
    let admin = kube_support::admin().await;
    let ns = TestNamespace::create(&admin, "worker").await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("scorecard-github-tokens".into()),
            ..Default::default()
        },
        string_data: Some([("token-0".to_owned(), "not-a-real-token".to_owned())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let client = worker_client(&admin, &ns.name).await;
    // The scan ServiceAccount exists once the RBAC file is applied; the pods need it.
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .get("scorecard-scan")
        .await
        .unwrap();

    let js = jetstream::new(async_nats::connect(stack::nats_url()).await.expect("NATS"));
    let topology = Topology::new(topology_args(
        &stack::unique("wrk"),
        ack_wait_secs,
        max_deliver,
    ))
    .unwrap();
    topology.ensure(&js).await.unwrap();
    let shutdown = CancellationToken::new();
    let metrics = Metrics::default();
    let proxy = if watch_via_proxy {
        Some(CutProxy::start(kube_support::apiserver_addr()).await)
    } else {
        None
    };
    let watch = if blind_watch {
        JobWatch::start(admin.clone(), "default", metrics.clone(), shutdown.clone())
    } else if let Some(proxy) = &proxy {
        let token = kube_support::service_account_token(&admin, &ns.name, "scorecard-fleet-worker")
            .await
            .unwrap();
        let through = kube_support::as_service_account_via(token, Some(proxy.addr)).await;
        JobWatch::start(through, &ns.name, metrics.clone(), shutdown.clone())
    } else {
        JobWatch::start(client.clone(), &ns.name, metrics.clone(), shutdown.clone())
    };
    watch.synced().await;
    let runner = KubeRunner::new(
        client,
        job_settings(&ns.name, deadline_secs),
        watch,
        Duration::from_secs(pending_timeout_secs),
        4 << 20,
        metrics.clone(),
    );
    let worker = Arc::new(
        Worker::open(
            js.clone(),
            topology.clone(),
            Arc::new(runner),
            Arc::new(Pool::RoundRobin(TokenPool::new(
                vec!["token-0".into()],
                Duration::from_secs(60),
            ))),
            metrics.clone(),
            Settings {
                max_in_flight: 10,
                manual_in_flight: 0,
                heartbeat: Duration::from_secs(heartbeat_secs),
                drain_deadline: Duration::from_secs(5),
                max_deliver: u64::try_from(max_deliver).unwrap(),
                poll: Duration::from_millis(200),
                quota_window: Duration::from_secs(3600),
            },
            Duration::from_secs(u64::try_from(deadline_secs).unwrap()),
        )
        .await
        .unwrap(),
    );
    let sim = Simulator::start(admin.clone(), &ns.name);
    Harness {
        ns,
        proxy,
        admin,
        js,
        topology,
        sim,
        worker,
        metrics,
        shutdown,
    }
}

fn item(repo: &str) -> WorkItem {
    WorkItem {
        id: uuid::Uuid::now_v7().to_string(),
        repo: repo.into(),
        reason: WorkReason::Scheduled as i32,
        ..Default::default()
    }
}

impl Harness {
    async fn enqueue(&self, item: &WorkItem) {
        self.publish(self.topology.scheduled_subject(), item).await;
    }

    /// As the api publishes a GET of a repository the fleet never scored.
    async fn enqueue_discovery(&self, item: &WorkItem) {
        self.publish(self.topology.discovery_subject(), item).await;
    }

    async fn publish(&self, subject: String, item: &WorkItem) {
        self.js
            .publish(subject, item.encode_to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Pulls the next message and runs it to its end: the worker's step function.
    async fn step(&self) -> Ending {
        let message = tokio::time::timeout(Duration::from_secs(20), self.worker.next_message())
            .await
            .expect("a work message");
        tokio::time::timeout(
            Duration::from_secs(90),
            self.worker.handle(message, &CancellationToken::new()),
        )
        .await
        .expect("the item is handled")
    }

    async fn subjects(&self, subject: String) -> Vec<Vec<u8>> {
        let stream = if subject.contains(".dead.") {
            self.topology.dead_stream()
        } else {
            self.topology.results_stream()
        };
        let reader: PullConsumer = self
            .js
            .get_stream(stream)
            .await
            .unwrap()
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: subject,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut batch = reader.fetch().max_messages(100).messages().await.unwrap();
        while let Some(m) = batch.next().await {
            out.push(m.unwrap().payload.to_vec());
        }
        out
    }

    async fn results(&self) -> Vec<ScoreResult> {
        self.subjects(self.topology.results_subject())
            .await
            .iter()
            .map(|p| ScoreResult::decode(p.as_slice()).unwrap())
            .collect()
    }

    /// Waits up to 30 s for `repo`'s scan to be running (held by the stand-in).
    async fn scan_started(&self, repo: &str) {
        eventually("the scan to start", Duration::from_secs(30), || async {
            Ok(self.sim.holding(repo).then_some(()))
        })
        .await
        .unwrap();
    }

    /// Waits up to a minute for `work`'s result to be published.
    async fn result_of(&self, work: &WorkItem, what: &str) {
        eventually(what, Duration::from_secs(60), || async {
            Ok(self
                .results()
                .await
                .iter()
                .any(|r| r.work_id == work.id)
                .then_some(()))
        })
        .await
        .unwrap();
    }

    async fn jobs(&self) -> Vec<Job> {
        Api::<Job>::namespaced(self.admin.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn work_left(&self) -> (u64, usize) {
        let mut c = self.worker.scheduled.clone();
        let info = c.info().await.unwrap();
        (info.num_pending, info.num_ack_pending)
    }

    async fn no_jobs_left(&self) {
        eventually("the Job to be deleted", Duration::from_secs(20), || async {
            Ok(self.jobs().await.is_empty().then_some(()))
        })
        .await
        .unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn a_scan_becomes_a_published_result_and_its_job_is_removed() {
    let h = harness(600, 3, 30).await;
    let work = item("github.com/sim-ok/happy");
    h.enqueue(&work).await;
    let Ending::Scored(result) = h.step().await else {
        panic!("expected a result")
    };
    assert_eq!(result.work_id, work.id);
    assert_eq!(result.repo, "github.com/sim-ok/happy");
    assert_eq!(result.exit_code, 0);
    assert!(!result.checks.is_empty() && result.job_name.starts_with("sc-"));
    assert_eq!(
        h.results().await,
        vec![*result],
        "published once, to scorecard.results"
    );
    assert_eq!(h.work_left().await, (0, 0), "acked");
    h.no_jobs_left().await;
    assert_eq!(h.sim.pods_for("github.com/sim-ok/happy"), 1);
    assert_eq!(h.metrics.started.get(), 1);
}

#[tokio::test]
async fn exit_1_with_json_is_a_result() {
    let h = harness(600, 3, 30).await;
    h.enqueue(&item("github.com/sim-exit1/partial")).await;
    let Ending::Scored(result) = h.step().await else {
        panic!("expected a result")
    };
    assert_eq!(result.exit_code, 1);
    assert!(result.score.is_some());
}

/// A result pretty-printed over thousands of lines (a large repository's details) is read
/// whole from the pod's log, not lost to a tail of the log too short to hold it.
#[tokio::test]
async fn a_large_pretty_printed_result_is_read_whole_from_the_log() {
    let h = harness(600, 3, 30).await;
    h.enqueue(&item("github.com/sim-pretty/large")).await;
    let ending = h.step().await;
    let Ending::Scored(result) = ending else {
        panic!("expected a result, got {ending:?}")
    };
    let pinned = result
        .checks
        .iter()
        .find(|c| c.name == "Pinned-Dependencies")
        .expect("the Pinned-Dependencies check");
    assert_eq!(pinned.details.len(), fleet_tests::sim::PRETTY_DETAILS);
    assert_eq!(result.checks.len(), 18, "every check of the fixture");
}

#[tokio::test]
async fn exit_0_without_json_is_a_scan_failure_dead_lettered_with_its_reason() {
    let h = harness(600, 3, 30).await;
    let work = item("github.com/sim-skip/gone");
    h.enqueue(&work).await;
    let Ending::Dead(failure) = h.step().await else {
        panic!("expected a dead letter")
    };
    assert_eq!(failure.class, FailureClass::ScanFailed as i32);
    assert!(
        failure
            .message
            .starts_with("Skipping github.com/sim-skip/gone: repo unreachable"),
        "{}",
        failure.message
    );
    assert_eq!(failure.item.as_ref().unwrap().id, work.id);
    let recorded: Vec<WorkFailure> = h
        .subjects(h.topology.failures_subject())
        .await
        .iter()
        .map(|p| WorkFailure::decode(p.as_slice()).unwrap())
        .collect();
    assert_eq!(recorded, vec![*failure.clone()], "the sink gets it");
    assert_eq!(
        h.subjects(h.topology.dead_subject("SCAN_FAILED"))
            .await
            .len(),
        1,
        "and the dead stream"
    );
    assert_eq!(h.work_left().await, (0, 0), "terminated");
    h.no_jobs_left().await;
}

#[tokio::test]
async fn a_job_past_its_deadline_is_a_timeout_handed_back_for_a_fresh_job() {
    let h = harness(2, 2, 30).await;
    h.enqueue(&item("github.com/sim-hang/slow")).await;
    let first = h.step().await;
    assert!(
        matches!(&first, Ending::Retry { after, failure } if failure.class == FailureClass::Timeout as i32 && *after == Duration::from_secs(300)),
        "{first:?}"
    );
    assert_eq!(
        h.work_left().await.1,
        1,
        "handed back with a delay, not acked"
    );
    h.no_jobs_left().await;
    let label = worker::metrics::ClassLabel {
        class: "TIMEOUT".into(),
    };
    assert_eq!(h.metrics.retried.get_or_create(&label).get(), 1);
}

#[tokio::test]
async fn a_timeout_on_the_last_delivery_is_dead_lettered() {
    let h = harness(2, 1, 30).await;
    h.enqueue(&item("github.com/sim-hang/slower")).await;
    let Ending::Dead(failure) = h.step().await else {
        panic!("expected a dead letter")
    };
    assert_eq!(failure.class, FailureClass::Timeout as i32);
    assert_eq!(failure.attempts, 1);
    assert_eq!(
        h.subjects(h.topology.dead_subject("TIMEOUT")).await.len(),
        1
    );
    assert_eq!(h.work_left().await, (0, 0));
    h.no_jobs_left().await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_hand_written_requests_work() {
    let h = harness(600, 3, 30).await;
    h.js.publish(
        h.topology.manual_subject(),
        b"\xff\x00garbage".as_slice().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    h.js.publish(
        h.topology.manual_subject(),
        br#"{"repo":"github.com/-bad/name"}"#.as_slice().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // The stock nats CLI, as a person would use it.
    let out = Command::new(stack::tool("nats"))
        .args([
            "--server",
            &stack::nats_url(),
            "pub",
            &h.topology.manual_subject(),
            r#"{"repo":"github.com/sim-ok/by-hand"}"#,
        ])
        .output()
        .expect("run nats");
    assert!(
        out.status.success(),
        "nats pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let first = h.step().await;
    assert!(
        matches!(&first, Ending::Poison(f) if f.message.contains("undecodable work item")),
        "{first:?}"
    );
    let second = h.step().await;
    assert!(
        matches!(&second, Ending::Poison(f) if f.message.contains("cannot start with '-'")),
        "{second:?}"
    );
    let Ending::Scored(result) = h.step().await else {
        panic!("the hand-written request is scored")
    };
    assert_eq!(result.repo, "github.com/sim-ok/by-hand");
    assert_eq!(result.reason, WorkReason::Manual as i32);
    let dead = h.subjects(h.topology.dead_subject("POISON")).await;
    assert_eq!(dead.len(), 2);
    let letter = WorkFailure::decode(dead[0].as_slice()).unwrap();
    assert_eq!(letter.source_payload, b"\xff\x00garbage");
    let mut manual = h.worker.manual.clone();
    assert_eq!(manual.info().await.unwrap().num_ack_pending, 0);
}

#[tokio::test]
async fn manual_requests_are_pulled_before_scheduled_work() {
    let h = harness(600, 3, 30).await;
    for i in 0..3 {
        h.enqueue(&item(&format!("github.com/sim-ok/scheduled-{i}")))
            .await;
    }
    h.js.publish(
        h.topology.manual_subject(),
        b"github.com/sim-ok/urgent".as_slice().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // The server tells a consumer of a stored message a moment after acking its publish: the
    // request waits in the manual lane once that consumer counts it.
    eventually(
        "the request to wait in its lane",
        Duration::from_secs(10),
        || async {
            let mut manual = h.worker.manual.clone();
            Ok((manual.info().await?.num_pending == 1).then_some(()))
        },
    )
    .await
    .unwrap();
    let Ending::Scored(first) = h.step().await else {
        panic!("expected a result")
    };
    assert_eq!(first.repo, "github.com/sim-ok/urgent");
}

/// Every ordinary slot busy with a scan that does not end, and scheduled work waiting behind
/// it: a person's request still starts at once, in the slot reserved for the manual lane.
#[tokio::test]
async fn a_manual_request_starts_at_once_while_every_ordinary_slot_is_busy() {
    let h = harness(600, 3, 30).await;
    let busy = "github.com/sim-hold/every-slot";
    let worker = KillOnDrop(spawn_worker_with(
        &h,
        30,
        3,
        5,
        &[
            ("WORKER_MAX_IN_FLIGHT", "1"),
            ("WORKER_MANUAL_IN_FLIGHT", "1"),
        ],
    ));
    h.enqueue(&item(busy)).await;
    h.scan_started(busy).await;
    h.enqueue(&item("github.com/sim-ok/waiting-behind")).await;
    h.js.publish(
        h.topology.manual_subject(),
        b"github.com/sim-ok/asked-now".as_slice().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    eventually("the request's result", Duration::from_secs(30), || async {
        let results = h.results().await;
        Ok(results
            .iter()
            .any(|r| r.repo == "github.com/sim-ok/asked-now")
            .then_some(()))
    })
    .await
    .unwrap();
    assert!(h.sim.holding(busy), "the ordinary slot is still busy");
    let published: Vec<String> = h.results().await.into_iter().map(|r| r.repo).collect();
    assert_eq!(
        published,
        ["github.com/sim-ok/asked-now"],
        "scheduled work still waits"
    );
    h.sim.release(busy).await.unwrap();
    eventually("the scheduled work", Duration::from_secs(60), || async {
        Ok((h.results().await.len() == 3).then_some(()))
    })
    .await
    .unwrap();
    sigterm(&worker.0);
}

/// One ordinary slot, busy, and a scheduled item, a discovery and a person's request queued
/// behind it in that order: once the slot is free they run request first, then the discovery,
/// then the scheduled item. Each runs alone in the one slot, so the order the results are
/// published in is the order they were pulled in.
#[tokio::test]
async fn a_request_runs_before_a_discovery_and_a_discovery_before_scheduled_work() {
    let h = harness(600, 3, 30).await;
    let busy = "github.com/sim-hold/the-only-slot";
    let worker = KillOnDrop(spawn_worker_with(
        &h,
        30,
        3,
        5,
        &[
            ("WORKER_MAX_IN_FLIGHT", "1"),
            ("WORKER_MANUAL_IN_FLIGHT", "0"),
        ],
    ));
    h.enqueue(&item(busy)).await;
    h.scan_started(busy).await;
    let scheduled = item("github.com/sim-ok/due");
    let mut discovery = item("github.com/sim-ok/never-scored");
    discovery.reason = WorkReason::Discovery as i32;
    let mut manual = item("github.com/sim-ok/asked-for");
    manual.reason = WorkReason::Manual as i32;
    h.enqueue(&scheduled).await;
    h.enqueue_discovery(&discovery).await;
    h.publish(h.topology.manual_subject(), &manual).await;
    h.sim.release(busy).await.unwrap();
    eventually("every result", Duration::from_secs(60), || async {
        Ok((h.results().await.len() == 4).then_some(()))
    })
    .await
    .unwrap();
    let published: Vec<String> = h.results().await.into_iter().map(|r| r.repo).collect();
    assert_eq!(
        published,
        [
            busy,
            manual.repo.as_str(),
            discovery.repo.as_str(),
            scheduled.repo.as_str()
        ],
        "the request, then the discovery, then the scheduled item"
    );
    sigterm(&worker.0);
}

/// With scheduled work waiting and the manual and discovery lanes empty, a worker fills every free slot at
/// once, asking the server for about one message per pull: no pull waits out its poll. The poll
/// is an hour here, so a pull that waited for it would leave the slots empty for the test's
/// whole life, and the count of pull requests the server saw is exact, whatever the machine's
/// speed.
#[tokio::test]
async fn a_worker_fills_its_free_slots_from_waiting_work_without_waiting_out_a_poll() {
    const SLOTS: usize = 12;
    let h = harness(600, 3, 30).await;
    let nats = async_nats::connect(stack::nats_url()).await.unwrap();
    let mut pulls = nats
        .subscribe(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.>",
            h.topology.work_stream()
        ))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let repos: Vec<String> = (0..SLOTS)
        .map(|i| format!("github.com/sim-hold/slot-{i}"))
        .collect();
    for repo in &repos {
        h.enqueue(&item(repo)).await;
    }
    let worker = KillOnDrop(spawn_worker_with(
        &h,
        30,
        3,
        5,
        &[
            ("WORKER_MAX_IN_FLIGHT", &SLOTS.to_string()),
            ("WORKER_MANUAL_IN_FLIGHT", "0"),
            ("WORKER_POLL_MS", "3600000"),
        ],
    ));
    eventually(
        "every slot to hold a running scan",
        Duration::from_secs(60),
        || async { Ok(repos.iter().all(|r| h.sim.holding(r)).then_some(())) },
    )
    .await
    .unwrap();
    sigterm(&worker.0);
    let mut asked = 0;
    let mut held = Vec::new();
    while let Ok(Some(pull)) = tokio::time::timeout(Duration::from_millis(500), pulls.next()).await
    {
        asked += 1;
        let consumer = pull.subject.rsplit('.').next().unwrap_or_default();
        let request: serde_json::Value = serde_json::from_slice(&pull.payload).unwrap();
        if [WORKER_MANUAL, WORKER_DISCOVERY].contains(&consumer)
            && (request["no_wait"] != true || request.get("expires").is_some())
        {
            held.push(format!("{consumer}: {request}"));
        }
    }
    // Each slot asks the manual and discovery lanes (empty: answered at once) and then the
    // scheduled lane, and the free loop asks once more for the next slot's message.
    assert!(
        asked <= 3 * SLOTS + 6,
        "{asked} pull requests for {SLOTS} messages"
    );
    // The server holds a pull with an expiry until it expires whenever the lane is empty, and
    // each scheduled item would wait that long behind it, however short it is.
    assert!(
        held.is_empty(),
        "the lanes ahead of the scheduled one were asked with a wait: {held:?}"
    );
    for repo in &repos {
        h.sim.release(repo).await.unwrap();
    }
}

/// A pull request lost on its way gets no answer, as one does when the server restarts under
/// it. The worker gives up such a pull and asks again, so waiting work still starts. Here the
/// first no-wait pull of the manual lane and the first of the discovery lane are lost (the
/// lanes the ordinary slots ask without waiting), and a scheduled item waits behind them.
#[tokio::test]
async fn a_lost_pull_is_given_up_and_waiting_work_still_starts() {
    let h = harness(600, 3, 30).await;
    let stream = h.topology.work_stream();
    let nats: std::net::SocketAddr = stack::nats_url()
        .trim_start_matches("nats://")
        .parse()
        .unwrap();
    let to_lose: Vec<String> = [WORKER_MANUAL, WORKER_DISCOVERY]
        .iter()
        .map(|c| format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{c}"))
        .collect();
    let proxy = NatsLosingProxy::start(nats, to_lose.clone(), r#""no_wait":true"#).await;
    let _worker = KillOnDrop(spawn_worker_with(
        &h,
        30,
        3,
        5,
        &[("NATS_URL", &proxy.url()), ("WORKER_MANUAL_IN_FLIGHT", "0")],
    ));
    eventually("a pull to be lost", Duration::from_secs(30), || async {
        Ok((!proxy.lost().is_empty()).then_some(()))
    })
    .await
    .unwrap();
    let work = item("github.com/sim-ok/after-a-lost-pull");
    h.enqueue(&work).await;
    h.result_of(&work, "the waiting item's result").await;
    assert_eq!(proxy.lost(), to_lose, "both lanes lost a pull");
}

/// A worker process that does not outlive its test, whether the test passes or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(h: &Harness, ack_wait_secs: u64, max_deliver: i64, drain_secs: u64) -> Child {
    spawn_worker_with(h, ack_wait_secs, max_deliver, drain_secs, &[])
}

fn spawn_worker_with(
    h: &Harness,
    ack_wait_secs: u64,
    max_deliver: i64,
    drain_secs: u64,
    env: &[(&str, &str)],
) -> Child {
    Command::new(stack::workspace_binary("worker"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NATS_URL", stack::nats_url())
        .env("NATS_PREFIX", h.topology.args().nats_prefix.clone())
        .env("WORK_ACK_WAIT_SECS", ack_wait_secs.to_string())
        .env("WORK_MAX_DELIVER", max_deliver.to_string())
        .env("KUBECONFIG", stack::kubeconfig())
        .env("WORKER_NAMESPACE", &h.ns.name)
        .env("TOKEN_KEYS", "token-0")
        // The stand-in spends no GitHub quota: a budget no test here can spend.
        .env("GITHUB_TOKEN_CALLS_PER_WINDOW", "1000000000")
        // A replayed rate-limit failure is the recording's, not the stand-in's quota.
        .env("TOKEN_COOLDOWN_SECS", "1")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("WORKER_DRAIN_DEADLINE_SECS", drain_secs.to_string())
        .env("WORKER_POLL_MS", "200")
        .env("LOG", "warn")
        // Last, so a test's own settings win over the defaults above.
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the worker binary")
}

async fn job_uids(h: &Harness) -> Vec<String> {
    h.jobs()
        .await
        .into_iter()
        .filter_map(|j| j.metadata.uid)
        .collect()
}

/// A worker killed mid-scan: another picks the item up and adopts the very same Job. Exactly
/// one Job and one pod ever existed for the work item, and exactly one result was published.
#[tokio::test]
async fn a_killed_worker_is_replaced_and_the_same_job_is_adopted() {
    let h = harness(600, 3, 3).await;
    let repo = "github.com/sim-hold/crash";
    let work = item(repo);
    let mut first = spawn_worker(&h, 3, 3, 5);
    h.enqueue(&work).await;
    h.scan_started(repo).await;
    let uids = job_uids(&h).await;
    assert_eq!(uids.len(), 1);
    first.kill().unwrap();
    first.wait().unwrap();

    // The in-process worker gets the redelivery once the 3 s ack wait runs out.
    let handled = tokio::spawn({
        let worker = h.worker.clone();
        async move {
            let message = worker.next_message().await;
            worker.handle(message, &CancellationToken::new()).await
        }
    });
    eventually(
        "the item to be adopted",
        Duration::from_secs(30),
        || async { Ok((h.metrics.adopted.get() == 1).then_some(())) },
    )
    .await
    .unwrap();
    assert_eq!(job_uids(&h).await, uids, "the same Job, not a new one");
    h.sim.release(repo).await.unwrap();
    let Ending::Scored(result) = handled.await.unwrap() else {
        panic!("expected a result")
    };
    assert_eq!(result.work_id, work.id);
    assert_eq!(
        h.metrics.started.get(),
        0,
        "the second worker started no Job"
    );
    assert_eq!(h.sim.pods_for(repo), 1, "scanned once");
    assert_eq!(h.results().await.len(), 1, "one result");
    assert_eq!(h.work_left().await, (0, 0));
}

/// A worker killed mid-scan on a credential with no room left for an hour: its replacement,
/// on the same fleet-wide budget, adopts the running Job as soon as the ack wait runs out,
/// because re-attaching spends no GitHub quota; fresh work still waits for the credential.
#[tokio::test]
async fn a_redelivered_scan_is_adopted_without_waiting_for_github_quota() {
    let h = harness(600, 3, 3).await;
    // One scan per half hour on the only credential: the first starts at once, the next not
    // within this test.
    let budget = [
        ("GITHUB_TOKEN_CALLS_PER_WINDOW", "140"),
        ("SCAN_COST_CALLS", "70"),
        ("GITHUB_WINDOW_SECS", "3600"),
        ("WORKER_MANUAL_IN_FLIGHT", "0"),
    ];
    let repo = "github.com/sim-hold/adopt-on-a-dry-budget";
    let work = item(repo);
    let first = KillOnDrop(spawn_worker_with(&h, 3, 3, 5, &budget));
    h.enqueue(&work).await;
    h.scan_started(repo).await;
    let uids = job_uids(&h).await;
    assert_eq!(uids.len(), 1);
    drop(first);
    let fresh = "github.com/sim-ok/waits-for-quota";
    h.enqueue(&item(fresh)).await;
    let _second = KillOnDrop(spawn_worker_with(&h, 3, 3, 5, &budget));
    h.sim.release(repo).await.unwrap();
    h.result_of(&work, "the adopted scan's result").await;
    assert_eq!(
        h.sim.pods_for(repo),
        1,
        "scanned once, in the Job it adopted"
    );
    assert_eq!(h.sim.pods_for(fresh), 0, "fresh work still waits for quota");
    assert_eq!(h.results().await.len(), 1);
}

/// A worker killed while its scan runs leaves the item to a redelivery, and the scan ends
/// with no worker watching. The redelivery goes ahead of every item waiting in its lane: a
/// worker with one slot, behind a backlog of scans that never end, adopts the finished Job
/// first. So a redelivery waits for one free slot at most, never for the backlog, and a Job
/// TTL that outlives that wait (checked at the worker's start) never loses a finished scan.
#[tokio::test]
async fn a_redelivery_goes_ahead_of_the_backlog_and_reads_its_finished_job() {
    let h = harness(600, 3, 3).await;
    let one_lane = [
        ("WORKER_MANUAL_IN_FLIGHT", "0"),
        ("WORKER_MAX_IN_FLIGHT", "1"),
    ];
    let repo = "github.com/sim-hold/finished-while-orphaned";
    let work = item(repo);
    let first = KillOnDrop(spawn_worker_with(&h, 3, 3, 5, &one_lane));
    h.enqueue(&work).await;
    h.scan_started(repo).await;
    drop(first);
    h.sim.release(repo).await.unwrap();
    eventually("its Job to finish", Duration::from_secs(30), || async {
        Ok(h.jobs()
            .await
            .iter()
            .any(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1))
            .then_some(()))
    })
    .await
    .unwrap();
    let backlog: Vec<String> = (0..20)
        .map(|i| format!("github.com/sim-hold/backlog-{i}"))
        .collect();
    for repo in &backlog {
        h.enqueue(&item(repo)).await;
    }
    // Past the 3 s ack wait: the redelivery is due before the next worker's first pull.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _second = KillOnDrop(spawn_worker_with(&h, 3, 3, 5, &one_lane));
    h.result_of(&work, "the finished scan's result").await;
    assert_eq!(
        h.sim.pods_for(repo),
        1,
        "read from its Job, not scanned again"
    );
    let started = backlog.iter().filter(|r| h.sim.pods_for(r) > 0).count();
    assert!(started <= 1, "{started} backlog scans in one slot");
}

/// SIGTERM: the worker stops pulling, and leaves a scan that outlives the drain deadline
/// running and unacked for the next delivery.
#[tokio::test]
async fn sigterm_drains_within_the_deadline_and_leaves_unfinished_scans_to_the_next_delivery() {
    let h = harness(600, 3, 30).await;
    let repo = "github.com/sim-hold/drain";
    let mut child = spawn_worker(&h, 30, 3, 2);
    h.enqueue(&item(repo)).await;
    h.scan_started(repo).await;
    let started = std::time::Instant::now();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "a drain is a clean exit: {status:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "drained in {took:?}, deadline 2 s"
    );
    assert_eq!(h.work_left().await.1, 1, "the unfinished item is not acked");
    assert_eq!(h.jobs().await.len(), 1, "its Job keeps running");
    assert!(h.results().await.is_empty());
}

fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// SIGTERM with scans running that end inside the deadline: the draining worker still hears
/// that their Jobs ended, publishes their results and acks them, and exits as soon as the last
/// one is done rather than at the deadline.
#[tokio::test]
async fn sigterm_finishes_scans_that_end_during_the_drain_and_exits_when_the_last_is_done() {
    let h = harness(600, 3, 30).await;
    let repos: Vec<String> = (0..3)
        .map(|i| format!("github.com/sim-hold/drain-finish-{i}"))
        .collect();
    let mut child = spawn_worker(&h, 30, 3, 40);
    for repo in &repos {
        h.enqueue(&item(repo)).await;
    }
    eventually("the scans to start", Duration::from_secs(60), || async {
        Ok(repos.iter().all(|r| h.sim.holding(r)).then_some(()))
    })
    .await
    .unwrap();
    sigterm(&child);
    // The drain has begun; now the scans end, well inside the 40 s deadline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let released = std::time::Instant::now();
    for repo in &repos {
        h.sim.release(repo).await.unwrap();
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = released.elapsed();
    assert!(status.success(), "a drain is a clean exit: {status:?}");
    assert!(
        took < Duration::from_secs(25),
        "exited {took:?} after the last scan ended; the deadline was 40 s"
    );
    let mut published: Vec<String> = h.results().await.into_iter().map(|r| r.repo).collect();
    published.sort();
    assert_eq!(
        published, repos,
        "every scan's result, published by the draining worker"
    );
    assert_eq!(
        h.work_left().await,
        (0, 0),
        "all acked: nothing will be redelivered"
    );
    h.no_jobs_left().await;
    for repo in &repos {
        assert_eq!(h.sim.pods_for(repo), 1, "{repo} scanned once");
    }
}

impl Harness {
    /// The worker's recorder of exhausted items, for one advisory (JetStream publishes it once
    /// the last delivery's ack wait runs out, or at once after a hand-back).
    async fn record_next_exhausted(&self) -> Recorded {
        let advisory = eventually(
            "a max-deliveries advisory",
            Duration::from_secs(60),
            || async {
                let mut batch = self
                    .worker
                    .exhausted
                    .fetch()
                    .max_messages(1)
                    .messages()
                    .await?;
                batch
                    .next()
                    .await
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{e}"))
            },
        )
        .await
        .unwrap();
        self.worker
            .record_one(&advisory)
            .await
            .expect("the exhausted item is recorded")
    }

    async fn failures(&self) -> Vec<WorkFailure> {
        self.subjects(self.topology.failures_subject())
            .await
            .iter()
            .map(|p| WorkFailure::decode(p.as_slice()).unwrap())
            .collect()
    }

    async fn dead(&self, class: &str) -> Vec<WorkFailure> {
        self.subjects(self.topology.dead_subject(class))
            .await
            .iter()
            .map(|p| WorkFailure::decode(p.as_slice()).unwrap())
            .collect()
    }

    /// Messages stored in the work stream (a work queue: what no worker has finished).
    async fn work_stored(&self) -> u64 {
        let mut stream = self
            .js
            .get_stream(self.topology.work_stream())
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }

    async fn held(&self, repo: &str) {
        eventually("the scan to start", Duration::from_secs(60), || async {
            Ok(self.sim.holding(repo).then_some(()))
        })
        .await
        .unwrap();
    }

    /// Runs the next message in the background, as the worker's loop would.
    fn step_in_background(&self) -> tokio::task::JoinHandle<Ending> {
        let worker = self.worker.clone();
        tokio::spawn(async move {
            let message = worker.next_message().await;
            worker.handle(message, &CancellationToken::new()).await
        })
    }

    /// Asserts the one way an exhausted item ends: one EXHAUSTED failure for the sink, the
    /// same in the dead stream, nothing left in the work stream, its Job removed.
    async fn assert_exhausted_once(&self, work: &WorkItem, recorded: Recorded) {
        let Recorded::DeadLettered(failure) = recorded else {
            panic!("expected a dead letter, got {recorded:?}")
        };
        assert_eq!(failure.class, FailureClass::Exhausted as i32);
        assert_eq!(failure.work_id, work.id);
        assert_eq!(
            failure.item.as_ref().unwrap(),
            work,
            "the whole item, for a replay"
        );
        assert_eq!(
            self.failures().await,
            vec![*failure.clone()],
            "one failure for the sink"
        );
        assert_eq!(
            self.dead("EXHAUSTED").await,
            vec![*failure],
            "one dead letter"
        );
        assert!(self.results().await.is_empty(), "no result");
        assert_eq!(
            self.work_stored().await,
            0,
            "nothing left in the work stream"
        );
        assert_eq!(self.work_left().await, (0, 0));
        self.no_jobs_left().await;
        assert_eq!(self.metrics.exhausted.get(), 1);
    }
}

/// The last delivery ends with a crashed worker: JetStream stops redelivering, and the item
/// still ends as one dead letter instead of waiting in the work stream for ever.
#[tokio::test]
async fn a_worker_killed_on_the_last_delivery_leaves_one_exhausted_dead_letter() {
    let h = harness(600, 1, 3).await;
    let work = item("github.com/sim-hold/killed-last");
    let mut first = spawn_worker(&h, 3, 1, 5);
    h.enqueue(&work).await;
    h.held(&work.repo).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let recorded = h.record_next_exhausted().await;
    h.assert_exhausted_once(&work, recorded).await;
    assert_eq!(h.sim.pods_for(&work.repo), 1);
}

/// The last delivery is abandoned at the drain deadline.
#[tokio::test]
async fn a_scan_abandoned_at_the_drain_deadline_on_its_last_delivery_is_dead_lettered_once() {
    let h = harness(600, 1, 3).await;
    let work = item("github.com/sim-hold/abandoned-last");
    let mut child = spawn_worker(&h, 3, 1, 1);
    h.enqueue(&work).await;
    h.held(&work.repo).await;
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let recorded = h.record_next_exhausted().await;
    h.assert_exhausted_once(&work, recorded).await;
}

/// The last delivery's worker lost its heartbeats (stalled, partitioned) and comes back after
/// the item was recorded as exhausted: its late outcome is dropped, not published beside it.
#[tokio::test]
async fn a_worker_that_lost_its_heartbeats_on_the_last_delivery_does_not_add_a_second_outcome() {
    let h = harness_with(Opts {
        max_deliver: 1,
        ack_wait_secs: 3,
        // Heartbeats far apart from the ack wait: as if they were lost.
        heartbeat_secs: 600,
        ..Default::default()
    })
    .await;
    let work = item("github.com/sim-hold/lost-heartbeats");
    h.enqueue(&work).await;
    let stalled = h.step_in_background();
    h.held(&work.repo).await;
    let recorded = h.record_next_exhausted().await;
    let late = tokio::time::timeout(Duration::from_secs(60), stalled)
        .await
        .expect("the stalled delivery ends once its Job is gone")
        .unwrap();
    assert!(matches!(late, Ending::AlreadyDone(_)), "{late:?}");
    h.assert_exhausted_once(&work, recorded).await;
}

/// The last delivery hands the item back because its result could not be published: the
/// recorder of exhausted items finds the ended Job and publishes its result, once.
#[tokio::test]
async fn an_item_handed_back_on_its_last_delivery_still_ends_as_its_one_result() {
    let h = harness(600, 1, 30).await;
    let work = item("github.com/sim-hold/handed-back-last");
    h.enqueue(&work).await;
    let running = h.step_in_background();
    h.held(&work.repo).await;
    // The results stream is gone when the scan ends: the publish fails.
    h.js.delete_stream(h.topology.results_stream())
        .await
        .unwrap();
    h.sim.release(&work.repo).await.unwrap();
    let handled = running.await.unwrap();
    assert!(matches!(handled, Ending::HandBack { .. }), "{handled:?}");
    assert_eq!(h.metrics.handed_back.get(), 1);
    h.topology.ensure(&h.js).await.unwrap();
    let Recorded::Published(result) = h.record_next_exhausted().await else {
        panic!("the ended Job's result is recorded")
    };
    assert_eq!(result.work_id, work.id);
    assert_eq!(h.results().await, vec![*result], "published once");
    assert!(h.failures().await.is_empty());
    assert_eq!(h.work_stored().await, 0, "nothing left in the work stream");
    assert_eq!(h.work_left().await, (0, 0));
    h.no_jobs_left().await;
    assert_eq!(h.sim.pods_for(&work.repo), 1, "scanned once");
    assert_eq!(h.metrics.exhausted.get(), 1);
}

/// The result is published but the ack fails: the Job stays, and the redelivery finds the
/// outcome already published instead of scanning again.
#[tokio::test]
async fn a_failed_ack_after_publishing_keeps_the_job_and_the_redelivery_scans_nothing() {
    let h = harness(600, 3, 5).await;
    let work = item("github.com/sim-hold/ack-fails");
    h.enqueue(&work).await;
    let running = h.step_in_background();
    h.held(&work.repo).await;
    // With its consumer gone, the ack of the delivery in hand has nobody to answer it.
    h.js.get_stream(h.topology.work_stream())
        .await
        .unwrap()
        .delete_consumer(WORKER_SCHEDULED)
        .await
        .unwrap();
    h.sim.release(&work.repo).await.unwrap();
    let Ending::Scored(result) = running.await.unwrap() else {
        panic!("the result is published")
    };
    assert_eq!(h.metrics.ack_failures.get(), 1);
    assert_eq!(
        h.jobs().await.len(),
        1,
        "the Job is kept for the redelivery"
    );

    // The consumer comes back and delivers the item again.
    h.topology.ensure(&h.js).await.unwrap();
    let again = h.step().await;
    assert!(matches!(again, Ending::AlreadyDone(_)), "{again:?}");
    assert_eq!(h.results().await, vec![*result], "published once");
    assert_eq!(h.sim.pods_for(&work.repo), 1, "scanned once");
    assert_eq!(h.work_left().await, (0, 0));
    h.no_jobs_left().await;
}

/// Two deliveries of one item at once: a redelivery came while the first still ran (its
/// heartbeats lost to a partition). The second claims the scan in the register and is slow to
/// create its Job; the first finishes. It must leave the Job, or the second's create would
/// start a second scan of the same item.
#[tokio::test]
async fn a_delivery_that_claimed_a_running_scan_finds_its_job_not_a_fresh_scan() {
    let h = harness(600, 3, 30).await;
    let work = item("github.com/sim-hold/claimed-twice");
    h.enqueue(&work).await;
    let first = h.step_in_background();
    h.held(&work.repo).await;
    // The second delivery's first step: not done yet, so it claims the scan.
    assert_eq!(
        h.worker
            .register
            .begin(&work, chrono::Utc::now())
            .await
            .unwrap(),
        Decision::Scan
    );
    h.sim.release(&work.repo).await.unwrap();
    let Ending::Scored(result) = first.await.unwrap() else {
        panic!("the result is published")
    };
    assert_eq!(h.jobs().await.len(), 1, "the Job is left for the claimant");
    // Its second step, late. A fresh Job would be held by the stand-in: the timeout says so.
    let run = tokio::time::timeout(
        Duration::from_secs(30),
        h.worker.runner.run(&work, Some("token-0")),
    )
    .await
    .expect("the ended Job is adopted, not a second scan started");
    let RunResult::Ended { adopted, .. } = run else {
        panic!("the ended scan is read: {run:?}")
    };
    assert!(adopted, "adopted the first delivery's Job");
    assert_eq!(h.sim.pods_for(&work.repo), 1, "scanned once");
    assert_eq!(h.results().await, vec![*result], "published once");
}

/// The result is published and acked, but the scan register cannot record it (NATS trouble):
/// the Job stays, so a redelivery under way finds the ended scan instead of starting a new one.
#[tokio::test]
async fn an_outcome_the_register_could_not_record_keeps_its_job() {
    let h = harness(600, 3, 30).await;
    let work = item("github.com/sim-hold/unrecorded");
    h.enqueue(&work).await;
    let running = h.step_in_background();
    h.held(&work.repo).await;
    h.js.delete_key_value(h.topology.scans_bucket())
        .await
        .unwrap();
    h.sim.release(&work.repo).await.unwrap();
    assert!(matches!(running.await.unwrap(), Ending::Scored(_)));
    assert_eq!(h.work_left().await, (0, 0), "acked");
    assert_eq!(h.jobs().await.len(), 1, "the Job is kept");
}

/// A retry whose Job could not be deleted: the next delivery does not re-read the failed run
/// (which would spend every delivery on it) but starts a fresh one, with its own pod.
#[tokio::test]
async fn a_job_left_behind_by_a_failed_cleanup_is_replaced_by_a_fresh_attempt() {
    let h = harness(600, 3, 30).await;
    let roles: Api<Role> = Api::namespaced(h.admin.clone(), &h.ns.name);
    let take_delete = serde_json::json!({"rules": [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]});
    roles
        .patch(
            "scorecard-fleet-worker",
            &PatchParams::default(),
            &Patch::Merge(&take_delete),
        )
        .await
        .unwrap();
    let work = item("github.com/sim-flaky/left-behind");
    h.enqueue(&work).await;
    let first = h.step().await;
    assert!(
        matches!(
            &first,
            Ending::Retry { failure, .. } if failure.class == FailureClass::PodFailed as i32
        ),
        "{first:?}"
    );
    assert_eq!(h.jobs().await.len(), 1, "its delete was refused");
    // deploy/'s Role again; the item comes back after its 30 s retry delay.
    worker_client(&h.admin, &h.ns.name).await;
    let message = tokio::time::timeout(Duration::from_secs(60), h.worker.next_message())
        .await
        .expect("the redelivery");
    let second = tokio::time::timeout(
        Duration::from_secs(90),
        h.worker.handle(message, &CancellationToken::new()),
    )
    .await
    .unwrap();
    let Ending::Scored(result) = second else {
        panic!("the fresh attempt succeeds: {second:?}")
    };
    assert_eq!(result.work_id, work.id);
    assert_eq!(h.metrics.fresh_attempts.get(), 1);
    assert_eq!(
        h.sim.pods_for(&work.repo),
        2,
        "the failed run and a fresh one"
    );
    // Two deliveries claimed the scan: the ended Job stays for its TTL, for either to find.
    assert_eq!(h.metrics.jobs_kept.get(), 1);
    let left = h.jobs().await;
    assert_eq!(left.len(), 1);
    assert!(
        left[0].status.as_ref().and_then(|s| s.succeeded) == Some(1),
        "the Job left is the fresh attempt, ended"
    );
}

/// The watch never reports the Job (here it watches another namespace): the wait still ends,
/// once the Job is past its deadline plus the pending timeout, by asking the API server.
#[tokio::test]
async fn a_job_the_watch_never_reports_is_settled_by_a_direct_get() {
    let h = harness_with(Opts {
        deadline_secs: 3,
        pending_timeout_secs: 2,
        blind_watch: true,
        ..Default::default()
    })
    .await;
    let work = item("github.com/sim-ok/unwatched");
    h.enqueue(&work).await;
    let Ending::Scored(result) = h.step().await else {
        panic!("the result is read after a direct GET")
    };
    assert_eq!(result.work_id, work.id);
    h.no_jobs_left().await;
}

/// A quota refuses the Job's pod: an INFRA failure naming the quota within the pending
/// timeout, not a TIMEOUT an hour later.
#[tokio::test]
async fn a_pod_refused_by_a_quota_is_an_infra_failure_with_the_reason() {
    let h = harness_with(Opts {
        max_deliver: 1,
        pending_timeout_secs: 3,
        ..Default::default()
    })
    .await;
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }))
    .unwrap();
    Api::<ResourceQuota>::namespaced(h.admin.clone(), &h.ns.name)
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    // Admission enforces a quota once its controller has counted what it covers.
    eventually(
        "the quota to be counted",
        Duration::from_secs(30),
        || async {
            let q = Api::<ResourceQuota>::namespaced(h.admin.clone(), &h.ns.name)
                .get("no-pods")
                .await?;
            Ok(q.status.and_then(|s| s.hard).map(|_| ()))
        },
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    h.enqueue(&item("github.com/sim-ok/over-quota")).await;
    let handled = h.step().await;
    let Ending::Dead(failure) = handled else {
        panic!("expected a dead letter: {handled:?}")
    };
    assert_eq!(
        failure.class,
        FailureClass::Infra as i32,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("no pod was created") && failure.message.contains("quota"),
        "{}",
        failure.message
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(h.sim.pods_for("github.com/sim-ok/over-quota"), 0);
}

/// A person asks for a scan (`nats pub`) and the producer's claim of the same repository
/// follows while it runs: one scan answers both.
#[tokio::test]
async fn a_scheduled_item_for_a_repository_being_scanned_on_request_is_covered_not_scanned() {
    let h = harness(600, 3, 30).await;
    let repo = "github.com/sim-hold/asked-for";
    h.js.publish(
        h.topology.manual_subject(),
        format!(r#"{{"repo":"{repo}"}}"#).into_bytes().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let manual = h.step_in_background();
    h.held(repo).await;
    let scheduled = item(repo);
    h.enqueue(&scheduled).await;
    let Ending::Covered { by } = h.step().await else {
        panic!("the scheduled item is covered")
    };
    h.sim.release(repo).await.unwrap();
    let Ending::Scored(result) = manual.await.unwrap() else {
        panic!("the request is scored")
    };
    assert_eq!(by, result.work_id, "covered by the request's scan");
    assert_eq!(h.sim.pods_for(repo), 1, "one scan");
    assert_eq!(h.results().await.len(), 1);
    assert_eq!(h.work_left().await, (0, 0));
    assert_eq!(h.metrics.covered.get(), 1);

    // A request made after that scan began is a new question: it is scanned.
    h.js.publish(
        h.topology.manual_subject(),
        format!(r#"{{"repo":"{repo}"}}"#).into_bytes().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let again = h.step_in_background();
    h.held(repo).await;
    h.sim.release(repo).await.unwrap();
    assert!(matches!(again.await.unwrap(), Ending::Scored(_)));
    assert_eq!(h.sim.pods_for(repo), 2);
}

/// A full work stream refuses more work with a clear error instead of growing without bound.
#[tokio::test]
async fn a_full_work_stream_refuses_new_items_with_a_clear_error() {
    let js = jetstream::new(async_nats::connect(stack::nats_url()).await.expect("NATS"));
    let topology = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("full"),
        work_max_messages: 2,
        ..Default::default()
    })
    .unwrap();
    topology.ensure(&js).await.unwrap();
    for i in 0..2 {
        js.publish(
            topology.scheduled_subject(),
            format!("github.com/a/b{i}").into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let refused = js
        .publish(topology.scheduled_subject(), "github.com/a/b2".into())
        .await
        .unwrap()
        .await
        .expect_err("the third item is refused");
    assert!(
        refused.to_string().contains("maximum messages exceeded"),
        "{refused}"
    );
    // The stock CLI says the same to a person.
    let out = Command::new(stack::tool("nats"))
        .args(["--server", &stack::nats_url(), "pub", "--jetstream"])
        .arg(topology.manual_subject())
        .arg("github.com/a/b3")
        .output()
        .expect("run nats");
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("maximum messages exceeded"), "{said}");
}

/// The API server's watch is cut mid-scan (every connection of the watch dropped, new ones
/// refused) and the Job ends during the outage: once the watch is back it hears of the end and
/// the result is published, from the one scan.
#[tokio::test]
async fn a_watch_outage_mid_scan_is_ridden_out() {
    let h = harness_with(Opts {
        watch_via_proxy: true,
        ..Default::default()
    })
    .await;
    let proxy = h.proxy.as_ref().unwrap();
    let work = item("github.com/sim-hold/watch-cut");
    h.enqueue(&work).await;
    let running = h.step_in_background();
    h.held(&work.repo).await;
    proxy.cut();
    h.sim.release(&work.repo).await.unwrap();
    eventually("the Job to end", Duration::from_secs(30), || async {
        let ended = h.jobs().await.iter().any(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.succeeded)
                .is_some_and(|n| n > 0)
        });
        Ok(ended.then_some(()))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !running.is_finished(),
        "nothing can have told the worker yet"
    );
    proxy.restore();
    let handled = tokio::time::timeout(Duration::from_secs(90), running)
        .await
        .expect("the watch comes back and reports the end")
        .unwrap();
    let Ending::Scored(result) = handled else {
        panic!("expected a result: {handled:?}")
    };
    assert_eq!(result.work_id, work.id);
    assert!(h.metrics.watch_restarts.get() >= 1, "the outage was seen");
    assert_eq!(h.sim.pods_for(&work.repo), 1);
    assert_eq!(h.results().await.len(), 1);
    h.no_jobs_left().await;
}

/// The same work item delivered again long after its outcome was published (a `producer
/// replay` repeated after a crash publishes the same replay id, past the server's two-minute
/// duplicate window): acked, and not scanned again.
#[tokio::test]
async fn an_item_delivered_again_after_its_outcome_is_published_is_not_scanned_again() {
    let h = harness(600, 3, 30).await;
    let mut replayed = item("github.com/sim-ok/replayed-twice");
    replayed.reason = WorkReason::Replay as i32;
    // No Nats-Msg-Id: as if the duplicate window had passed between the two publishes.
    h.enqueue(&replayed).await;
    let Ending::Scored(result) = h.step().await else {
        panic!("the replay is scored")
    };
    h.enqueue(&replayed).await;
    let again = h.step().await;
    assert!(matches!(again, Ending::AlreadyDone(_)), "{again:?}");
    assert_eq!(h.results().await, vec![*result]);
    assert_eq!(h.sim.pods_for(&replayed.repo), 1, "scanned once");
    assert_eq!(h.work_left().await, (0, 0));
    assert_eq!(h.metrics.already_done.get(), 1);
}

/// A scan prints its GitHub token (in a URL's credentials, a query parameter, an
/// Authorization header, plain): no copy of it reaches the failure, either stream or the
/// message in hand; each place it was says what was removed.
#[tokio::test]
async fn a_token_a_scan_prints_is_kept_nowhere() {
    let h = harness(600, 1, 30).await;
    let work = item("github.com/sim-leak/prints-its-token");
    h.enqueue(&work).await;
    let Ending::Dead(failure) = h.step().await else {
        panic!("expected a dead letter")
    };
    assert_eq!(failure.class, FailureClass::PodFailed as i32);
    let leaked = fleet_tests::sim::LEAKED_TOKEN;
    assert!(!format!("{failure:?}").contains(leaked), "{failure:?}");
    assert_eq!(
        failure.log_tail.matches("[redacted: ").count(),
        4,
        "{}",
        failure.log_tail
    );
    let failures = h.subjects(h.topology.failures_subject()).await;
    let dead = h.subjects(h.topology.dead_subject("POD_FAILED")).await;
    assert_eq!((failures.len(), dead.len()), (1, 1));
    for payload in failures.iter().chain(&dead) {
        let bytes = leaked.as_bytes();
        assert!(
            !payload.windows(bytes.len()).any(|w| w == bytes),
            "a stream holds the token"
        );
    }
}

/// `/readyz` of a running worker says 503 and names the dependency while its NATS connection
/// is cut, and while its Job watch has been failing past the threshold; 200 once each is back.
#[tokio::test]
async fn readyz_names_nats_or_the_job_watch_while_it_is_cut() {
    use clap::Parser as _;
    use fleet_tests::probe::readyz_until;
    let admin = kube_support::admin().await;
    let ns = TestNamespace::create(&admin, "ready").await;
    let nats_addr: std::net::SocketAddr = stack::nats_url()
        .trim_start_matches("nats://")
        .parse()
        .expect("the stack's NATS as host:port");
    let nats_proxy = CutProxy::start(nats_addr).await;
    let api_proxy = CutProxy::start(kube_support::apiserver_addr()).await;
    let kubeconfig = std::env::temp_dir().join(stack::unique("ready-kubeconfig"));
    kube_support::write_kubeconfig_via(api_proxy.addr, &kubeconfig).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", stack::free_port()).parse().unwrap();
    let cli = worker::config::Cli::try_parse_from([
        "worker",
        "--nats-url",
        &format!("nats://{}", nats_proxy.addr),
        "--nats-prefix",
        &stack::unique("ready"),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--http-addr",
        &addr.to_string(),
        "--watch-unready-secs",
        "3",
    ])
    .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker::run(cli, shutdown.clone()));
    let wait = Duration::from_secs(30);
    readyz_until(addr, 200, "ready", wait).await;

    nats_proxy.cut();
    readyz_until(addr, 503, "nats: disconnected", wait).await;
    nats_proxy.restore();
    readyz_until(addr, 200, "ready", wait).await;

    api_proxy.cut();
    readyz_until(addr, 503, "kubernetes: the Job watch has failed", wait).await;
    api_proxy.restore();
    // A resumed watch brings no event: it is known healthy once its errors have stopped.
    readyz_until(addr, 200, "ready", Duration::from_secs(90)).await;

    shutdown.cancel();
    running.await.unwrap().unwrap();
    let _ = std::fs::remove_file(kubeconfig);
}

/// A worker whose Jobs the scans' admission policy would deny, every one, does not start: the
/// error names the setting and both values, or, for what the parameters bound rather than name
/// (a CPU limit over `maxCpu`), the policy's rule, from a dry run of the worker's own Job. With
/// matching settings it starts (and is ready).
#[tokio::test]
async fn a_worker_at_odds_with_the_admission_policy_does_not_start() {
    use clap::Parser as _;
    let admin = kube_support::admin().await;
    let ns = TestNamespace::create(&admin, "drift").await;
    kube_support::install_scans(&ns.name, &ns.name).await;
    let token = kube_support::service_account_token(&admin, &ns.name, "scorecard-fleet-worker")
        .await
        .unwrap();
    let kubeconfig = std::env::temp_dir().join(stack::unique("drift-kubeconfig"));
    kube_support::write_token_kubeconfig(&token, &kubeconfig).unwrap();
    let prefix = stack::unique("drift");
    let cli = |settings: &[&str]| {
        let common = [
            "worker",
            "--nats-url",
            &stack::nats_url(),
            "--nats-prefix",
            &prefix,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            &ns.name,
            "--http-addr",
            "127.0.0.1:0",
        ];
        worker::config::Cli::try_parse_from(common.iter().chain(settings)).unwrap()
    };
    // The start-up error of a worker with `settings`; one still running after a minute fails.
    let refusal = |settings: &[&str]| {
        let run = worker::run(cli(settings), CancellationToken::new());
        let described = format!("{settings:?}");
        async move {
            match tokio::time::timeout(Duration::from_secs(60), run).await {
                Ok(ended) => format!(
                    "{:#}",
                    ended.expect_err("a worker whose every Job would be denied does not start")
                ),
                Err(_) => panic!("a worker with {described} is still running after a minute"),
            }
        }
    };
    let message = refusal(&["--image", "ghcr.io/ossf/scorecard:latest"]).await;
    assert!(
        message.contains("SCORECARD_IMAGE")
            && message.contains("ghcr.io/ossf/scorecard:latest")
            && message.contains("ghcr.io/ossf/scorecard:v5.3.0"),
        "{message}"
    );
    // SCAN_CPU_LIMIT over the parameters' maxCpu (2): the dry run meets the policy's rule.
    let message = refusal(&["--cpu-limit", "8"]).await;
    assert!(
        message.contains("scorecard-fleet-scans (resources)") && message.contains("at most 2 CPU"),
        "{message}"
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker::run(
        cli(&["--image", "ghcr.io/ossf/scorecard:v5.3.0"]),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!running.is_finished(), "the matching worker runs");
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let _ = std::fs::remove_file(kubeconfig);
}
