//! The webhooks service on the real stack: the real `webhooks` binary, the stack's NATS and a
//! fresh PostgreSQL database per test, subscriptions made through the api role's functions,
//! and a receiver (tests/python/webhook_receiver.py) that checks every signature with the
//! PyPI `standardwebhooks` library. Change events are published as the sink publishes them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use fleet_proto::v1::{CheckChange, FailureClass, ScoreChanged, WorkFailure};
use fleet_runtime::topology::{Topology, TopologyArgs};
use fleet_runtime::webhook::MasterKey;
use fleet_tests::api_server;
use fleet_tests::kube_support::eventually;
use fleet_tests::stack;
use futures::StreamExt as _;
use prost::Message as _;
use sqlx::PgPool;
use uuid::Uuid;

const MASTER_KEY: &str = "test-master-key-for-webhooks-0123456789";

fn master() -> MasterKey {
    MasterKey::new(MASTER_KEY.as_bytes().to_vec()).unwrap()
}

/// The receiver process and the files it answers from and records to.
struct Receiver {
    child: Child,
    port: u16,
    control: PathBuf,
    record: PathBuf,
    paths: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Got {
    path: String,
    webhook_id: Option<String>,
    verified: bool,
    error: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<serde_json::Value>,
}

impl Receiver {
    async fn start() -> Self {
        let port = stack::free_port();
        let dir = std::env::temp_dir().join(stack::unique("webhook-receiver"));
        std::fs::create_dir_all(&dir).unwrap();
        let control = dir.join("control.json");
        let record = dir.join("got.jsonl");
        std::fs::write(&control, "{}").unwrap();
        std::fs::write(&record, "").unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/webhook_receiver.py");
        let child = Command::new(stack::tool("webhook-python"))
            .arg(script)
            .args(["--port", &port.to_string()])
            .arg("--control")
            .arg(&control)
            .arg("--record")
            .arg(&record)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the webhook receiver (dev/web-tools installs webhook-python)");
        let receiver = Self {
            child,
            port,
            control,
            record,
            paths: BTreeMap::new(),
        };
        eventually(
            "the receiver to listen",
            Duration::from_secs(20),
            || async {
                Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ()))
            },
        )
        .await
        .unwrap();
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers `path` with `mode` ("ok", "fail", "hang"), verifying with `secret`.
    fn set(&mut self, path: &str, secret: &str, mode: &str) {
        self.paths.insert(
            path.to_owned(),
            serde_json::json!({"secret": secret, "mode": mode}),
        );
        let tmp = self.control.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.paths).unwrap()).unwrap();
        std::fs::rename(tmp, &self.control).unwrap();
    }

    fn got(&self) -> Vec<Got> {
        std::fs::read_to_string(&self.record)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn got_at(&self, path: &str) -> Vec<Got> {
        self.got().into_iter().filter(|g| g.path == path).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The webhooks binary as a process on this test's database and topology.
struct Service {
    child: Option<Child>,
    env: Vec<(String, String)>,
    log: PathBuf,
    ops: SocketAddr,
}

impl Service {
    async fn start(pool: &PgPool, topology: &Topology, env: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir()
            .join("fleet-logs")
            .join(format!("{}.log", stack::unique("webhooks")));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut all: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), stack::database_url_of(pool)),
            ("NATS_URL".into(), stack::nats_url()),
            ("NATS_PREFIX".into(), topology.args().nats_prefix.clone()),
            ("WEBHOOK_SIGNING_KEY".into(), MASTER_KEY.into()),
            ("WEBHOOK_ALLOW_HTTP".into(), "true".into()),
            ("WEBHOOK_ALLOWED_CIDRS".into(), "127.0.0.1/32".into()),
            ("WEBHOOKS_RETRY_BASE_SECS".into(), "1".into()),
            ("WEBHOOKS_TIMEOUT_SECS".into(), "5".into()),
            ("API_PUBLIC_URL".into(), "https://scores.example".into()),
            ("LOG".into(), "info".into()),
        ];
        for (k, v) in env {
            all.retain(|(name, _)| name != k);
            all.push(((*k).into(), (*v).into()));
        }
        let mut service = Self {
            child: None,
            env: all,
            log,
            ops: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        service.spawn().await;
        service
    }

    async fn spawn(&mut self) {
        self.ops = SocketAddr::from(([127, 0, 0, 1], stack::free_port()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(stack::workspace_binary("webhooks"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HTTP_ADDR", self.ops.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("starting webhooks"));
        fleet_tests::probe::readyz_until(self.ops, 200, "", Duration::from_secs(30)).await;
    }

    /// SIGKILL: no drain.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Deliveries this process has made since it started.
    async fn delivered(&self) -> u64 {
        let (_, text) = fleet_tests::probe::get(self.ops, "/metrics")
            .await
            .expect("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("webhooks_attempts_total{outcome=\"delivered\"} "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- webhooks log\n{}", self.log_text());
        }
        self.kill();
    }
}

async fn nats() -> jetstream::Context {
    jetstream::new(
        async_nats::connect(stack::nats_url())
            .await
            .expect("the stack's NATS (dev/stack up)"),
    )
}

async fn topology(js: &jetstream::Context) -> Topology {
    let topology = Topology::new(TopologyArgs {
        nats_prefix: stack::unique("webhooks"),
        ..Default::default()
    })
    .unwrap();
    topology.ensure(js).await.unwrap();
    topology
}

/// What a subscription asks for.
#[derive(Default, Clone)]
struct Ask<'a> {
    repos: &'a [&'a str],
    owners: &'a [&'a str],
    checks: &'a [&'a str],
    below: Option<f64>,
    check_drops: bool,
    any_change: bool,
}

/// A subscription made as the api makes it (its role, its function); its id and secret.
async fn subscribe(api: &PgPool, url: &str, ask: Ask<'_>) -> (Uuid, String) {
    let texts = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (id, salt): (Uuid, Vec<u8>) = sqlx::query_as(
        "SELECT id, secret_salt FROM create_webhook_subscription($1, $2, $3, $4, $5, $6::numeric, $7, $8)",
    )
    .bind("test-key")
    .bind(url)
    .bind(texts(ask.repos))
    .bind(texts(ask.owners))
    .bind(texts(ask.checks))
    .bind(ask.below)
    .bind(ask.check_drops)
    .bind(ask.any_change)
    .fetch_one(api)
    .await
    .expect("create_webhook_subscription as the api's role");
    let secret = master().subscription_secret(id, &salt).whsec();
    (id, secret.expose().to_owned())
}

async fn api_pool(pool: &PgPool) -> PgPool {
    api_server::ensure_login(pool).await;
    PgPool::connect(&api_server::url_as_login(pool))
        .await
        .unwrap()
}

/// Publishes a change event as the sink does (Nats-Msg-Id `score-changed-<work_id>`).
async fn publish(js: &jetstream::Context, topology: &Topology, event: &ScoreChanged) {
    fleet_runtime::publish::publish_once(
        js,
        topology.score_changed_subject(),
        &format!("score-changed-{}", event.work_id),
        event.encode_to_vec().into(),
    )
    .await
    .unwrap();
}

fn event(
    work_id: &str,
    repo: &str,
    previous: Option<f64>,
    score: f64,
    checks: &[(&str, i32, i32)],
) -> ScoreChanged {
    ScoreChanged {
        repo: repo.into(),
        work_id: work_id.into(),
        previous_score: previous,
        score: Some(score),
        checks: checks
            .iter()
            .map(|(n, was, now)| CheckChange {
                name: (*n).into(),
                previous: Some(*was),
                score: Some(*now),
            })
            .collect(),
        commit: "0123abc".into(),
        scored_at: Some(fleet_proto::timestamp(chrono::Utc::now())),
        first: previous.is_none(),
    }
}

/// The work ids of the events `got` holds, each signature verified.
fn events_of(got: &[Got]) -> BTreeSet<String> {
    for g in got {
        assert!(
            g.verified,
            "a delivery failed verification ({:?}): {g:?}",
            g.error
        );
    }
    got.iter()
        .filter(|g| g.kind.as_deref() == Some("score_changed"))
        .map(|g| {
            let data = g.data.as_ref().unwrap();
            format!(
                "{} {}",
                data["repo"].as_str().unwrap(),
                data["score"].as_f64().unwrap()
            )
        })
        .collect()
}

async fn dead_webhooks(js: &jetstream::Context, topology: &Topology) -> Vec<WorkFailure> {
    let stream = js.get_stream(topology.dead_stream()).await.unwrap();
    let reader = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: topology.dead_subject("WEBHOOK"),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut batch = reader
        .fetch()
        .max_messages(1000)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    while let Some(Ok(m)) = batch.next().await {
        out.push(WorkFailure::decode(m.payload.as_ref()).unwrap());
    }
    out
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn each_filter_delivers_exactly_the_events_it_asks_for(pool: PgPool) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_pool(&pool).await;
    let mut receiver = Receiver::start().await;
    let a = "github.com/acme/anvil";
    let b = "github.com/acme/bolt";
    let c = "github.com/other/cog";
    // (path, what it asks for, the events it must get: "repo score")
    let table: Vec<(&str, Ask, Vec<&str>)> = vec![
        (
            "/repositories",
            Ask {
                repos: &["github.com/acme/anvil"],
                any_change: true,
                ..Default::default()
            },
            vec!["github.com/acme/anvil 6", "github.com/Acme/Anvil 3"],
        ),
        (
            "/owners",
            Ask {
                owners: &["github.com/acme"],
                any_change: true,
                ..Default::default()
            },
            vec![
                "github.com/acme/anvil 6",
                "github.com/Acme/Anvil 3",
                "github.com/acme/bolt 7",
            ],
        ),
        (
            "/below",
            Ask {
                below: Some(5.0),
                ..Default::default()
            },
            vec!["github.com/Acme/Anvil 3"],
        ),
        (
            "/check-drops",
            Ask {
                check_drops: true,
                ..Default::default()
            },
            vec!["github.com/acme/bolt 7", "github.com/other/cog 8"],
        ),
        (
            "/checks",
            Ask {
                check_drops: true,
                checks: &["Code-Review"],
                ..Default::default()
            },
            vec!["github.com/other/cog 8"],
        ),
        (
            "/any-change",
            Ask {
                any_change: true,
                ..Default::default()
            },
            vec![
                "github.com/acme/anvil 6",
                "github.com/Acme/Anvil 3",
                "github.com/acme/bolt 7",
                "github.com/other/cog 8",
            ],
        ),
    ];
    for (path, ask, _) in &table {
        let (_, secret) = subscribe(&api, &receiver.url(path), ask.clone()).await;
        receiver.set(path, &secret, "ok");
    }
    let _service = Service::start(&pool, &topology, &[]).await;
    // anvil goes up (no drop), then down across 5; bolt loses a check; cog loses Code-Review.
    publish(&js, &topology, &event("w1", a, Some(5.5), 6.0, &[])).await;
    publish(
        &js,
        &topology,
        &event(
            "w2",
            &a.replace("acme/anvil", "Acme/Anvil"),
            Some(6.0),
            3.0,
            &[],
        ),
    )
    .await;
    publish(
        &js,
        &topology,
        &event("w3", b, Some(7.0), 7.0, &[("Maintained", 9, 4)]),
    )
    .await;
    publish(
        &js,
        &topology,
        &event("w4", c, Some(8.0), 8.0, &[("Code-Review", 9, 7)]),
    )
    .await;
    // The same event again (a sink republishing it): the events stream keeps one.
    publish(
        &js,
        &topology,
        &event("w4", c, Some(8.0), 8.0, &[("Code-Review", 9, 7)]),
    )
    .await;

    let total: usize = table.iter().map(|(_, _, want)| want.len()).sum();
    eventually("every delivery", Duration::from_secs(60), || async {
        Ok((receiver.got().len() >= total).then_some(()))
    })
    .await
    .unwrap();
    // Room for a stray one to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (path, _, want) in &table {
        let got = receiver.got_at(path);
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(events_of(&got), want, "{path}");
        assert_eq!(
            got.len(),
            want.len(),
            "{path}: one delivery per event: {got:?}"
        );
    }
    let one = &receiver.got_at("/below")[0];
    assert_eq!(
        one.data.as_ref().unwrap()["links"]["project"],
        "https://scores.example/projects/github.com/Acme/Anvil"
    );
    // The owner's log says so too.
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE outcome = 'delivered'")
            .fetch_one(&api)
            .await
            .unwrap();
    assert_eq!(delivered as usize, total);
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_failing_endpoint_is_retried_with_one_webhook_id_then_dead_lettered_marked_failing_and_replayable(
    pool: PgPool,
) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_pool(&pool).await;
    let mut receiver = Receiver::start().await;
    let ask = Ask {
        any_change: true,
        ..Default::default()
    };
    let (id, secret) = subscribe(&api, &receiver.url("/flaky"), ask).await;
    receiver.set("/flaky", &secret, "fail");
    let service = Service::start(&pool, &topology, &[("WEBHOOKS_RETRY_WINDOW_SECS", "6")]).await;
    publish(
        &js,
        &topology,
        &event("w1", "github.com/a/b", Some(5.0), 4.0, &[]),
    )
    .await;

    let dead = eventually("the dead letter", Duration::from_secs(60), || async {
        let dead = dead_webhooks(&js, &topology).await;
        Ok((!dead.is_empty()).then_some(dead))
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].class, FailureClass::Webhook as i32);
    assert!(dead[0].message.contains("HTTP 500"), "{}", dead[0].message);
    let got = receiver.got_at("/flaky");
    assert!(got.len() >= 3, "retried: {} attempts", got.len());
    let ids: BTreeSet<_> = got.iter().map(|g| g.webhook_id.clone().unwrap()).collect();
    assert_eq!(
        ids.len(),
        1,
        "every retry carries the same webhook-id: {ids:?}"
    );
    assert!(got.iter().all(|g| g.verified), "{got:?}");

    // Marked failing as the dead letter's attempt is logged, just after it is published.
    let reason = eventually("the subscription marked failing", Duration::from_secs(10), || async {
        let reason: Option<String> = sqlx::query_scalar(
            "SELECT failing_reason FROM webhook_subscriptions WHERE id = $1 AND failing_since IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&api)
        .await?
        .flatten();
        Ok(reason)
    })
    .await
    .unwrap();
    assert!(reason.contains("retry window"), "{reason}");
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM webhook_deliveries WHERE subscription_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(&api)
    .await
    .unwrap();
    assert_eq!(outcomes.last().map(String::as_str), Some("dead"));
    assert!(
        outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| o == "retrying")
    );

    // The endpoint is mended; an operator replays the dead letter: the same delivery, the same
    // webhook-id, and the subscription is no longer failing.
    receiver.set("/flaky", &secret, "ok");
    let out = Command::new(stack::workspace_binary("producer"))
        .args(["replay", "--class", "webhook"])
        .env("NATS_URL", stack::nats_url())
        .env("NATS_PREFIX", &topology.args().nats_prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "producer replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("redelivered"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eventually("the replayed delivery", Duration::from_secs(30), || async {
        let failing: bool = sqlx::query_scalar(
            "SELECT failing_since IS NOT NULL FROM webhook_subscriptions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&api)
        .await?;
        Ok((!failing).then_some(()))
    })
    .await
    .unwrap();
    let last = receiver.got_at("/flaky").pop().unwrap();
    assert_eq!(last.webhook_id, ids.into_iter().next());
    assert!(
        dead_webhooks(&js, &topology).await.is_empty(),
        "the letter is gone"
    );

    // Every place a delivery, its retries and its dead letter were written holds neither the
    // master key nor the subscription's secret (nor its bare key, without `whsec_`).
    let bare = secret.trim_start_matches("whsec_").to_owned();
    for needle in [MASTER_KEY, secret.as_str(), bare.as_str()] {
        assert_kept_nowhere(
            needle,
            &js,
            &topology,
            &pool,
            &[service.log_text()],
            service.ops,
        )
        .await;
    }
}

/// Asserts that `secret` is in no message (payload or header) of the events, deliveries and
/// dead streams, no table (`pg_dump`), none of `logs` and not in the service's `/metrics`.
async fn assert_kept_nowhere(
    secret: &str,
    js: &jetstream::Context,
    topology: &Topology,
    pool: &PgPool,
    logs: &[String],
    ops: SocketAddr,
) {
    let holds = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    let streams = [
        topology.events_stream(),
        topology.webhooks_stream(),
        topology.dead_stream(),
    ];
    let read = fleet_tests::fleet::assert_streams_keep_no(secret, js, &streams).await;
    assert!(read > 0, "the streams hold messages to look through");
    fleet_tests::fleet::assert_tables_keep_no(secret, &stack::database_url_of(pool));
    for log in logs {
        assert!(
            !log.is_empty() && !holds(log.as_bytes()),
            "a log holds a secret"
        );
    }
    let (status, metrics) = fleet_tests::probe::get(ops, "/metrics")
        .await
        .expect("/metrics");
    assert_eq!(status, 200);
    assert!(!holds(metrics.as_bytes()), "/metrics holds a secret");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn inside_addresses_are_refused_after_resolution_and_as_literals(pool: PgPool) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_pool(&pool).await;
    let mut receiver = Receiver::start().await;
    let port = receiver.port;
    // Written straight into the table, as if the api's check had been passed by (it refuses
    // the literals; the names only the deliverer can judge, after resolving them).
    let urls = [
        format!("http://localhost:{port}/by-name"),
        format!("http://[::ffff:127.0.0.1]:{port}/mapped"),
        format!("http://127.0.0.2:{port}/loopback"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[fd00:ec2::254]/metadata".to_owned(),
        "http://10.0.0.1/private".to_owned(),
    ];
    let mut ids = Vec::new();
    for url in &urls {
        let ask = Ask {
            any_change: true,
            ..Default::default()
        };
        let (id, secret) = subscribe(&api, url, ask).await;
        receiver.set(url::Url::parse(url).unwrap().path(), &secret, "ok");
        ids.push(id);
    }
    // No address allowed: not even the receiver's.
    let _service = Service::start(&pool, &topology, &[("WEBHOOK_ALLOWED_CIDRS", "")]).await;
    publish(
        &js,
        &topology,
        &event("w1", "github.com/a/b", Some(5.0), 4.0, &[]),
    )
    .await;
    let reasons = eventually(
        "every subscription refused",
        Duration::from_secs(60),
        || async {
            let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT id, failing_reason FROM webhook_subscriptions WHERE failing_since IS NOT NULL",
        )
        .fetch_all(&api)
        .await?;
            Ok((rows.len() == ids.len()).then_some(rows))
        },
    )
    .await
    .unwrap();
    for (id, reason) in &reasons {
        let reason = reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("refused: "), "{id}: {reason}");
    }
    let text: String = reasons
        .iter()
        .map(|(_, r)| r.clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    for range in ["loopback", "the cloud metadata service", "private"] {
        assert!(text.contains(range), "{range} in {text}");
    }
    assert!(receiver.got().is_empty(), "nothing reached the receiver");
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_hanging_endpoint_does_not_delay_another_endpoints_deliveries(pool: PgPool) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_pool(&pool).await;
    let mut hanging = Receiver::start().await;
    let mut healthy = Receiver::start().await;
    let ask = Ask {
        any_change: true,
        ..Default::default()
    };
    let (_, secret) = subscribe(&api, &hanging.url("/hang"), ask.clone()).await;
    hanging.set("/hang", &secret, "hang");
    let (_, secret) = subscribe(&api, &healthy.url("/fine"), ask).await;
    healthy.set("/fine", &secret, "ok");
    let _service = Service::start(
        &pool,
        &topology,
        &[
            ("WEBHOOKS_MAX_IN_FLIGHT", "4"),
            ("WEBHOOKS_PER_ENDPOINT", "2"),
        ],
    )
    .await;
    let n = 30;
    let started = tokio::time::Instant::now();
    for i in 0..n {
        let e = event(
            &format!("w{i}"),
            "github.com/a/b",
            Some(5.0),
            f64::from(i),
            &[],
        );
        publish(&js, &topology, &e).await;
    }
    // Each hanging request holds its slot for the whole 5 s timeout: were the hanging
    // endpoint's deliveries to fill the 4 slots, 30 healthy ones would take over 30 s.
    eventually(
        "the healthy endpoint's deliveries",
        Duration::from_secs(60),
        || async { Ok((healthy.got_at("/fine").len() >= n as usize).then_some(())) },
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(events_of(&healthy.got_at("/fine")).len(), n as usize);
    assert!(
        !hanging.got_at("/hang").is_empty(),
        "the hanging endpoint was being called meanwhile"
    );
    // Each hanging request was given up at the response timeout (5 s), to be tried again.
    let timed_out = eventually(
        "a hanging request given up",
        Duration::from_secs(30),
        || async {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT d.outcome, coalesce(d.error, '') FROM webhook_deliveries d
                 JOIN webhook_subscriptions s ON s.id = d.subscription_id
                 WHERE s.url LIKE '%/hang'",
            )
            .fetch_all(&pool)
            .await?;
            Ok((!rows.is_empty()).then_some(rows))
        },
    )
    .await
    .unwrap();
    assert!(
        timed_out
            .iter()
            .all(|(outcome, error)| outcome == "retrying" && error.contains("timed out")),
        "{timed_out:?}"
    );
}

/// Two replicas share the events and the deliveries; one is SIGKILLed mid-stream and comes
/// back later. Every subscription still gets every event, duplicates only with the same id.
#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn a_replica_killed_mid_stream_still_leaves_every_event_delivered_to_every_subscription(
    pool: PgPool,
) {
    let js = nats().await;
    let topology = topology(&js).await;
    let api = api_pool(&pool).await;
    let mut receiver = Receiver::start().await;
    let paths = ["/one", "/two", "/three"];
    for path in paths {
        let ask = Ask {
            any_change: true,
            ..Default::default()
        };
        let (_, secret) = subscribe(&api, &receiver.url(path), ask).await;
        receiver.set(path, &secret, "ok");
    }
    let mut killed = Service::start(&pool, &topology, &[]).await;
    let other = Service::start(&pool, &topology, &[]).await;
    let n = 200;
    for i in 0..n {
        let e = event(
            &format!("w{i}"),
            &format!("github.com/o/r{i}"),
            None,
            5.0,
            &[],
        );
        publish(&js, &topology, &e).await;
    }
    eventually(
        "some deliveries by each replica",
        Duration::from_secs(60),
        || async {
            let (a, b) = (killed.delivered().await, other.delivered().await);
            Ok((a > 0 && b > 0 && receiver.got().len() >= 30).then_some(()))
        },
    )
    .await
    .unwrap();
    killed.kill();
    let at_kill = receiver.got().len();
    assert!(at_kill < 3 * n, "killed mid-stream ({at_kill} delivered)");
    eventually(
        "the other replica to deliver on",
        Duration::from_secs(60),
        || async { Ok((receiver.got().len() > at_kill).then_some(())) },
    )
    .await
    .unwrap();
    killed.spawn().await;
    eventually(
        "every event at every subscription",
        Duration::from_secs(120),
        || async {
            Ok(paths
                .iter()
                .all(|p| events_of(&receiver.got_at(p)).len() == n)
                .then_some(()))
        },
    )
    .await
    .unwrap();
    for path in paths {
        // Duplicates only with the same id: one event per webhook id.
        let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for g in receiver.got_at(path) {
            let event = events_of(std::slice::from_ref(&g))
                .into_iter()
                .next()
                .unwrap();
            by_id
                .entry(g.webhook_id.unwrap())
                .or_default()
                .insert(event);
        }
        assert_eq!(by_id.len(), n, "{path}: one webhook id per event");
        assert!(by_id.values().all(|events| events.len() == 1), "{path}");
    }
}

// ---- Subscriptions through the api: the routes an API-key holder manages them with.

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef01";

/// An api on `pool` with keys for alice and bob and `env` on top of the webhook defaults the
/// tests need (the signing key, http and 127.0.0.1 allowed).
async fn api_with_webhooks(
    pool: &PgPool,
    topology: &Topology,
    env: &[(&str, &str)],
) -> api_server::ApiServer {
    api_server::ensure_login(pool).await;
    let keys = std::env::temp_dir().join(stack::unique("webhook-api-keys"));
    std::fs::write(&keys, format!("alice:{ALICE}\nbob:{BOB}\n")).unwrap();
    let mut all: Vec<(&str, String)> = vec![
        ("NATS_PREFIX", topology.args().nats_prefix.clone()),
        ("API_KEYS_FILE", keys.display().to_string()),
        ("WEBHOOK_SIGNING_KEY", MASTER_KEY.into()),
        ("WEBHOOK_ALLOW_HTTP", "true".into()),
        ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.1/32".into()),
    ];
    for (k, v) in env {
        all.retain(|(name, _)| name != k);
        // Empty: unset.
        if !v.is_empty() {
            all.push((k, (*v).into()));
        }
    }
    api_server::ApiServer::start(&api_server::url_as_login(pool), &all).await
}

/// One request to the api with an optional bearer key and JSON body: status and JSON answer
/// (`null` for an empty one).
async fn call(
    api: &api_server::ApiServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(key) = key {
        request.push_str(&format!("authorization: Bearer {key}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let mut stream = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, text) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap();
    let json = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text}"))
    };
    (status, json)
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn an_owner_manages_subscriptions_through_the_api_and_the_secret_shown_once_verifies_deliveries(
    pool: PgPool,
) {
    let js = nats().await;
    let topology = topology(&js).await;
    let mut receiver = Receiver::start().await;
    let api = api_with_webhooks(&pool, &topology, &[]).await;
    let _service = Service::start(&pool, &topology, &[]).await;

    // Without a key, or with a wrong one: 401, as a scan request answers.
    for key in [None, Some("not-a-key-0123456789abcdef")] {
        let (status, body) = call(&api, "GET", "/webhooks", key, None).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("Bearer"),
            "{body}"
        );
        let (status, _) = call(
            &api,
            "POST",
            "/webhooks",
            key,
            Some(serde_json::json!({"url": receiver.url("/x"), "any_change": true})),
        )
        .await;
        assert_eq!(status, 401);
    }

    let (status, made) = call(
        &api,
        "POST",
        "/webhooks",
        Some(ALICE),
        Some(serde_json::json!({
            "url": receiver.url("/anvil"),
            "repos": ["github.com/Acme/Anvil"],
            "checks": ["code-review"],
            "check_drops": true,
            "below": 5,
            "any_change": true,
        })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{made}");
    assert_eq!(made["repos"], serde_json::json!(["github.com/acme/anvil"]));
    assert_eq!(
        made["checks"],
        serde_json::json!(["Code-Review"]),
        "as scorecard spells it"
    );
    assert_eq!(made["below"], 5.0);
    assert_eq!(made["url"], receiver.url("/anvil"));
    receiver.set("/anvil", &secret, "ok");
    // A marker subscription that lives on, to tell when a deleted one would have had its turn.
    let (status, marker) = call(
        &api,
        "POST",
        "/webhooks",
        Some(ALICE),
        Some(serde_json::json!({"url": receiver.url("/marker"), "any_change": true})),
    )
    .await;
    assert_eq!(status, 201, "{marker}");
    receiver.set("/marker", marker["secret"].as_str().unwrap(), "ok");

    // The secret is never shown again: not by id, not in the list.
    let (status, one) = call(&api, "GET", &format!("/webhooks/{id}"), Some(ALICE), None).await;
    assert_eq!(status, 200, "{one}");
    assert!(one.get("secret").is_none(), "{one}");
    assert_eq!(one["id"], id.as_str());
    assert!(one["failing_since"].is_null());
    let (status, list) = call(&api, "GET", "/webhooks", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    let listed = list["webhooks"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(listed.iter().all(|w| w.get("secret").is_none()), "{list}");
    assert!(!list.to_string().contains(&secret["whsec_".len()..]));

    // Another key's owner neither sees it nor reaches it.
    let (status, theirs) = call(&api, "GET", "/webhooks", Some(BOB), None).await;
    assert_eq!(
        (status, theirs["webhooks"].as_array().unwrap().len()),
        (200, 0)
    );
    for (method, path) in [
        ("GET", format!("/webhooks/{id}")),
        ("DELETE", format!("/webhooks/{id}")),
        ("POST", format!("/webhooks/{id}/ping")),
        ("GET", format!("/webhooks/{id}/deliveries")),
    ] {
        let (status, body) = call(&api, method, &path, Some(BOB), None).await;
        assert_eq!(status, 404, "{method} {path} as bob: {body}");
    }

    // A ping arrives signed with the secret shown at creation.
    let (status, ping) = call(
        &api,
        "POST",
        &format!("/webhooks/{id}/ping"),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(status, 202, "{ping}");
    let ping_id = ping["webhook_id"].as_str().unwrap().to_owned();
    eventually("the ping", Duration::from_secs(30), || async {
        Ok(receiver
            .got_at("/anvil")
            .into_iter()
            .find(|g| g.webhook_id.as_deref() == Some(ping_id.as_str())))
    })
    .await
    .map(|g| {
        assert!(g.verified, "{g:?}");
        assert_eq!(g.kind.as_deref(), Some("ping"));
    })
    .unwrap();

    // So does a change.
    publish(
        &js,
        &topology,
        &event("w1", "github.com/acme/anvil", Some(6.0), 4.0, &[]),
    )
    .await;
    eventually("the change", Duration::from_secs(30), || async {
        Ok((!events_of(&receiver.got_at("/anvil")).is_empty()).then_some(()))
    })
    .await
    .unwrap();

    // The owner reads the log, newest first, a page at a time.
    let log = eventually(
        "both attempts in the log",
        Duration::from_secs(30),
        || async {
            let (status, log) = call(
                &api,
                "GET",
                &format!("/webhooks/{id}/deliveries"),
                Some(ALICE),
                None,
            )
            .await;
            assert_eq!(status, 200, "{log}");
            Ok((log["deliveries"].as_array().unwrap().len() == 2).then_some(log))
        },
    )
    .await
    .unwrap();
    let rows = log["deliveries"].as_array().unwrap();
    assert_eq!(rows[0]["kind"], "score_changed", "newest first: {log}");
    assert_eq!(rows[1]["kind"], "ping");
    assert_eq!(rows[1]["webhook_id"], ping_id.as_str());
    assert!(rows.iter().all(|r| r["outcome"] == "delivered"), "{log}");
    let (_, first) = call(
        &api,
        "GET",
        &format!("/webhooks/{id}/deliveries?limit=1"),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(first["deliveries"].as_array().unwrap().len(), 1);
    let next = first["next"].as_str().unwrap();
    let (status, second) = call(
        &api,
        "GET",
        &format!("/webhooks/{id}/deliveries?limit=1&before={next}"),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["deliveries"][0]["webhook_id"], ping_id.as_str());
    assert!(second["next"].is_null(), "{second}");

    // Deleted: gone for its owner, and no further deliveries.
    let (status, body) = call(
        &api,
        "DELETE",
        &format!("/webhooks/{id}"),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = call(&api, "GET", &format!("/webhooks/{id}"), Some(ALICE), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &api,
        "DELETE",
        &format!("/webhooks/{id}"),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let before = receiver.got_at("/anvil").len();
    publish(
        &js,
        &topology,
        &event("w2", "github.com/acme/anvil", Some(4.0), 3.0, &[]),
    )
    .await;
    eventually(
        "the marker's delivery of the later change",
        Duration::from_secs(30),
        || async {
            Ok(
                (events_of(&receiver.got_at("/marker")).contains("github.com/acme/anvil 3"))
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.got_at("/anvil").len(),
        before,
        "nothing after the delete"
    );
    assert!(
        !api.log_text().contains("/anvil"),
        "the api logged a subscription's URL"
    );
    // The api made and showed the secret: it keeps it in no log, metric, stream or table.
    let bare = secret.trim_start_matches("whsec_").to_owned();
    for needle in [secret.as_str(), bare.as_str()] {
        assert_kept_nowhere(
            needle,
            &js,
            &topology,
            &pool,
            &[api.log_text(), _service.log_text()],
            api.ops,
        )
        .await;
    }
}

#[sqlx::test(migrator = "fleet_runtime::db::MIGRATOR")]
async fn each_refused_subscription_is_a_400_that_says_why(pool: PgPool) {
    let js = nats().await;
    let topology = topology(&js).await;
    // As production runs: https only, no inside address allowed; one subscription per owner.
    let api = api_with_webhooks(
        &pool,
        &topology,
        &[
            ("WEBHOOK_ALLOW_HTTP", "false"),
            ("WEBHOOK_ALLOWED_CIDRS", ""),
            ("API_WEBHOOKS_PER_OWNER", "1"),
        ],
    )
    .await;
    let ok = || serde_json::json!({"url": "https://1.1.1.1/hook", "any_change": true});
    let with = |field: &str, value: serde_json::Value| {
        let mut body = ok();
        body[field] = value;
        body
    };
    let mut no_trigger = ok();
    no_trigger.as_object_mut().unwrap().remove("any_change");
    for (body, says) in [
        (with("url", "http://1.1.1.1/hook".into()), "https only"),
        (
            with("url", "https://127.0.0.1/hook".into()),
            "127.0.0.1 is loopback",
        ),
        (
            with("url", "https://[::ffff:169.254.169.254]/".into()),
            "the cloud metadata service",
        ),
        (with("url", "https://10.1.2.3/".into()), "private"),
        (with("url", "https://169.254.1.1/".into()), "link-local"),
        (with("url", "https://[fe80::1]/".into()), "link-local"),
        (
            with("url", "https://localhost:8443/hook".into()),
            "every address",
        ),
        (with("url", "not a url".into()), "not a URL"),
        (
            with(
                "repos",
                serde_json::json!(["github.com/ok/fine", "github.com/-bad-/x"]),
            ),
            "github.com/-bad-/x",
        ),
        (
            with("repos", serde_json::json!(["gitlab.com/a/b"])),
            "only github.com",
        ),
        (
            with("owners", serde_json::json!(["github.com/a/b"])),
            "github.com/a/b",
        ),
        (
            with("checks", serde_json::json!(["Code-Reviw"])),
            "Code-Reviw",
        ),
        (with("below", serde_json::json!(11)), "below"),
        // Checks narrow check_drops: with other triggers alone they would narrow nothing.
        (
            with("checks", serde_json::json!(["Code-Review"])),
            "checks narrow check_drops",
        ),
        (no_trigger, "at least one trigger"),
        (with("check_drop", true.into()), "check_drop"),
    ] {
        let (status, answer) =
            call(&api, "POST", "/webhooks", Some(ALICE), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message:?} lacks {says:?}");
        assert!(
            !message.contains("/hook"),
            "the URL's path is not echoed: {message}"
        );
    }
    // The cap on subscriptions per owner.
    let (status, answer) = call(&api, "POST", "/webhooks", Some(ALICE), Some(ok())).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = call(&api, "POST", "/webhooks", Some(ALICE), Some(ok())).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("API_WEBHOOKS_PER_OWNER"),
        "{answer}"
    );
    let (status, answer) = call(&api, "POST", "/webhooks", Some(BOB), Some(ok())).await;
    assert_eq!(status, 201, "another owner has a cap of its own: {answer}");
    let (status, answer) = call(&api, "GET", "/webhooks/not-an-id", Some(ALICE), None).await;
    assert_eq!(status, 400, "{answer}");

    // Without a signing key the api serves everything but webhooks.
    let off = api_with_webhooks(&pool, &topology, &[("WEBHOOK_SIGNING_KEY", "")]).await;
    let (status, answer) = call(&off, "POST", "/webhooks", Some(ALICE), Some(ok())).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("webhooks are not configured")
    );
    let (status, _) = call(&off, "GET", "/status", None, None).await;
    assert_eq!(status, 200);
    assert!(off.log_text().contains("webhooks are not configured"));
}
