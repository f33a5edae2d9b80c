//! The webhooks service (the release binary) delivering to a receiver in this process: an
//! axum server on K loopback ports that parses each body, notes when it came and answers 204.
//!
//! - Deliveries per second: `WEBHOOKS_BENCH_EVENTS` (5,000) change events published to the
//!   events stream as the sink publishes them, fanned out to `WEBHOOKS_BENCH_SUBSCRIPTIONS` (4)
//!   "any change" subscriptions, each its own endpoint (a port of the receiver), first publish
//!   → last delivery; beside the receiver's own ceiling: a plain keep-alive HTTP/1.1 client
//!   POSTing the bodies the service sent, to the same endpoints, as many at once as the
//!   service may send (`WEBHOOKS_MAX_IN_FLIGHT`, at most `WEBHOOKS_PER_ENDPOINT` per endpoint).
//! - Publish → delivery, p50 and p99: one event every 20 ms for 1,000 events (light load),
//!   one subscription, each event stamped with the instant it was published and each arrival
//!   timed against it; beside a bare relay in the same run: a consumer of the same events
//!   that POSTs each to the receiver at once (what any NATS-fed deliverer must spend).
//!   The service's `webhooks_delivered_after_seconds` is not this: it runs from the fan-out's
//!   queueing of the delivery to the start of the attempt that succeeded.
//!
//! `WEBHOOKS_BENCH_ENV="K=V,K=V"` sets the service's own settings, for exploring. Run with
//! `dev/bench webhooks`, or `cargo build --release --workspace --bins && cargo bench -p
//! fleet-tests --bench webhooks` once `dev/stack up` is up. Prints a table and writes
//! `target/bench-webhooks.json`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fleet_proto::v1::{CheckChange, ScoreChanged};
use fleet_tests::report::{self, Better, Row, number};
use fleet_tests::scratch::{Scratch, Stack};
use fleet_tests::stack;
use futures::StreamExt as _;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

const EVENTS_DEFAULT: usize = 5_000;
const SUBSCRIPTIONS_DEFAULT: usize = 4;
/// The light load of the latency run: slow enough that nothing queues.
const LIGHT_EVENTS: usize = 1_000;
const LIGHT_EVERY: Duration = Duration::from_millis(20);
/// Change events published at once in the throughput run (their acks awaited together).
const PUBLISH_WINDOW: usize = 256;
/// The service's defaults (webhooks/src/config.rs), unless WEBHOOKS_BENCH_ENV sets them.
const MAX_IN_FLIGHT_DEFAULT: usize = 64;
const PER_ENDPOINT_DEFAULT: usize = 2;
/// Longest a run may take to deliver everything before the bench gives up on it.
const DEADLINE: Duration = Duration::from_secs(900);
const MASTER_KEY: &str = "bench-master-key-for-webhooks-0123456789";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let events = env_number("WEBHOOKS_BENCH_EVENTS", EVENTS_DEFAULT)?;
    let subscriptions = env_number("WEBHOOKS_BENCH_SUBSCRIPTIONS", SUBSCRIPTIONS_DEFAULT)?;
    ensure!(
        events > 0 && subscriptions > 0,
        "at least one event and one subscription"
    );
    let settings: Vec<(String, String)> = std::env::var("WEBHOOKS_BENCH_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let setting = |name: &str, default: usize| -> anyhow::Result<usize> {
        settings
            .iter()
            .find(|(k, _)| k == name)
            .map_or(Ok(default), |(_, v)| v.parse().context(name.to_owned()))
    };
    let concurrency = Concurrency {
        max_in_flight: setting("WEBHOOKS_MAX_IN_FLIGHT", MAX_IN_FLIGHT_DEFAULT)?,
        per_endpoint: setting("WEBHOOKS_PER_ENDPOINT", PER_ENDPOINT_DEFAULT)?,
    };
    let stack = Stack::connect().await?;
    let machine = report::host();
    println!("# scorecard-fleet webhooks bench\n");
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!();

    let latency = stack
        .scratch("webhooks-latency", async |s: &Scratch| {
            latency(s, &settings).await
        })
        .await?;
    let throughput = stack
        .scratch("webhooks-throughput", async |s: &Scratch| {
            throughput(s, &settings, events, subscriptions, concurrency).await
        })
        .await?;
    let mut rows = vec![throughput];
    rows.extend(latency);

    let took = started.elapsed();
    println!("{}", report::markdown(&rows));
    for r in &rows {
        println!("- {}: {}", r.what, r.notes);
    }
    let path = report::write_json(
        "webhooks",
        &machine,
        &rows,
        serde_json::json!({
            "events": events,
            "subscriptions": subscriptions,
            "light_events": LIGHT_EVENTS,
            "light_every_ms": LIGHT_EVERY.as_millis() as u64,
            "service_settings": settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        }),
        took,
    )?;
    println!(
        "\nwhole bench: {:.0} s; written to {}",
        took.as_secs_f64(),
        path.display()
    );
    Ok(())
}

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.replace([',', '_'], "").parse().context(name.to_owned()),
        Err(_) => Ok(default),
    }
}

/// How many deliveries the service may send at once, all endpoints and each.
#[derive(Debug, Clone, Copy)]
struct Concurrency {
    max_in_flight: usize,
    per_endpoint: usize,
}

// ---- the receiver ---------------------------------------------------------------------------

/// One request the receiver answered.
struct Arrival {
    path: String,
    repo: String,
    at: Instant,
    body: Bytes,
}

#[derive(serde::Deserialize)]
struct Posted {
    data: PostedData,
}

#[derive(serde::Deserialize)]
struct PostedData {
    repo: String,
}

/// Fast: parses the body for its repository, notes the arrival, answers 204.
#[derive(Default)]
struct Tally {
    got: Mutex<Vec<Arrival>>,
}

impl Tally {
    fn len(&self) -> usize {
        self.got.lock().expect("tally lock").len()
    }

    fn take(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.got.lock().expect("tally lock"))
    }
}

async fn receive(
    State(tally): State<Arc<Tally>>,
    Path(path): Path<String>,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let repo =
        serde_json::from_slice::<Posted>(&body).map_or_else(|_| String::new(), |p| p.data.repo);
    tally.got.lock().expect("tally lock").push(Arrival {
        path,
        repo,
        at,
        body,
    });
    StatusCode::NO_CONTENT
}

/// The receiver: one listener per endpoint, all counting into one tally.
struct Receiver {
    ports: Vec<u16>,
    tally: Arc<Tally>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start(endpoints: usize) -> anyhow::Result<Self> {
        let tally = Arc::new(Tally::default());
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(receive))
            .with_state(tally.clone());
        let mut ports = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..endpoints {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push(listener.local_addr()?.port());
            let app = app.clone();
            servers.push(tokio::spawn(async move {
                axum::serve(listener, app).await.ok();
            }));
        }
        Ok(Self {
            ports,
            tally,
            servers,
        })
    }

    /// Waits until `want` distinct (path, repository) deliveries came, and returns every
    /// arrival (duplicates too).
    async fn wait_for(&self, want: usize, what: &str) -> anyhow::Result<Vec<Arrival>> {
        let deadline = Instant::now() + DEADLINE;
        let mut shown = Instant::now();
        loop {
            let n = self.tally.len();
            if n >= want {
                let got = self.tally.got.lock().expect("tally lock");
                let distinct: HashSet<(&str, &str)> = got
                    .iter()
                    .map(|a| (a.path.as_str(), a.repo.as_str()))
                    .collect();
                if distinct.len() >= want {
                    drop(got);
                    return Ok(self.tally.take());
                }
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: {n} of {want} deliveries after {} s",
                DEADLINE.as_secs()
            );
            if shown.elapsed() > Duration::from_secs(10) {
                eprintln!("{what}: {n} of {want} deliveries so far");
                shown = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

// ---- the plain client (the baselines' sender) ----------------------------------------------

/// One keep-alive HTTP/1.1 connection that POSTs a body and reads the status line, headers
/// and any content of the answer.
struct Connection {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
    port: u16,
}

impl Connection {
    async fn open(port: u16) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Self {
            read: BufReader::new(read),
            write,
            port,
        })
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        let mut request = format!(
            "POST /{path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.write.write_all(&request).await?;
        let mut line = String::new();
        self.read.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("status line {line:?}"))?;
        let mut length = 0;
        loop {
            line.clear();
            self.read.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut skip = vec![0; length];
        self.read.read_exact(&mut skip).await?;
        Ok(status)
    }
}

// ---- the service ---------------------------------------------------------------------------

/// The release `webhooks` binary on a scratch database and topology.
struct Service {
    child: Child,
    ops: SocketAddr,
    log: PathBuf,
}

impl Service {
    async fn start(s: &Scratch, settings: &[(String, String)]) -> anyhow::Result<Self> {
        let ops = SocketAddr::from(([127, 0, 0, 1], stack::free_port()));
        let dir = std::env::temp_dir().join("fleet-logs");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{}.log", stack::unique("bench-webhooks")));
        let t = s.topology.args();
        let db = s.opts.get_database().unwrap_or_default();
        let mut cmd = Command::new(stack::workspace_binary("webhooks"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", stack::database_url_for(db))
            .env(
                "NATS_URL",
                std::env::var("BENCH_NATS_URL").unwrap_or_else(|_| stack::nats_url()),
            )
            .env("NATS_PREFIX", &t.nats_prefix)
            .env("NATS_STREAM_REPLICAS", t.stream_replicas.to_string())
            .env("HTTP_ADDR", ops.to_string())
            .env("WEBHOOK_SIGNING_KEY", MASTER_KEY)
            .env("WEBHOOK_ALLOW_HTTP", "true")
            .env("WEBHOOK_ALLOWED_CIDRS", "127.0.0.1/32")
            .env("API_PUBLIC_URL", "https://scores.example")
            .env("LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in settings {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting webhooks")?;
        // Owned before the wait, so a service that never gets ready is still stopped.
        let service = Self { child, ops, log };
        fleet_tests::probe::readyz_until(ops, 200, "", Duration::from_secs(30)).await;
        Ok(service)
    }

    async fn metrics(&self) -> anyhow::Result<Metrics> {
        let (status, text) = fleet_tests::probe::get(self.ops, "/metrics")
            .await
            .context("webhooks /metrics")?;
        ensure!(status == 200, "webhooks /metrics answered {status}");
        Ok(Metrics(text))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- webhooks log\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// The service's `/metrics` text.
struct Metrics(String);

impl Metrics {
    /// The sum of every series of `name` (any labels).
    fn value(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A histogram's mean in seconds and its bucket bound holding quantile `q`.
    fn histogram(&self, name: &str, q: f64) -> (f64, String) {
        let count = self.value(&format!("{name}_count"));
        let mean = self.value(&format!("{name}_sum")) / count.max(1.0);
        let bucket = format!("{name}_bucket{{le=\"");
        let bound = self
            .0
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&bucket)?;
                let (le, value) = rest.split_once("\"} ")?;
                Some((le.to_owned(), value.parse::<f64>().ok()?))
            })
            .find(|(_, cumulative)| *cumulative >= q * count)
            .map_or_else(|| "?".into(), |(le, _)| le);
        (mean, bound)
    }

    /// Where deliveries spent their time and what happened to them, for the notes.
    fn summary(&self) -> String {
        let (request, _) = self.histogram("webhooks_request_seconds", 0.5);
        let (queued, queued_p50) = self.histogram("webhooks_delivered_after_seconds", 0.5);
        let (_, queued_p99) = self.histogram("webhooks_delivered_after_seconds", 0.99);
        format!(
            "service's /metrics: {} events fanned out, {} deliveries queued, {} attempts, {} \
             handed back busy (endpoint at its share; each comes back after 1 s), HTTP request \
             mean {:.2} ms, queued → successful attempt's start \
             (webhooks_delivered_after_seconds) mean {:.3} s, \
             p50 ≤ {queued_p50} s, p99 ≤ {queued_p99} s by its buckets",
            number(self.value("webhooks_events_total")),
            number(self.value("webhooks_queued_total")),
            number(self.value("webhooks_attempts_total")),
            number(self.value("webhooks_busy_total")),
            request * 1e3,
            queued,
        )
    }
}

// ---- events and subscriptions --------------------------------------------------------------

fn repo_of(label: &str, i: usize) -> String {
    format!("github.com/bench-{label}-o{}/r{i}", i % 100)
}

fn event(label: &str, i: usize) -> ScoreChanged {
    ScoreChanged {
        repo: repo_of(label, i),
        work_id: format!("bench-{label}-{i}"),
        previous_score: Some(5.0),
        score: Some(6.1),
        checks: vec![CheckChange {
            name: "Code-Review".into(),
            previous: Some(4),
            score: Some(8),
        }],
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        scored_at: Some(fleet_proto::timestamp(chrono::Utc::now())),
        first: false,
    }
}

/// Publishes `event` as the sink does: its own Nats-Msg-Id, `score-changed-<work_id>`. The
/// server's ack is the returned future.
async fn send(
    s: &Scratch,
    event: &ScoreChanged,
) -> anyhow::Result<async_nats::jetstream::context::PublishAckFuture> {
    fleet_runtime::publish::send_once(
        &s.js,
        s.topology.score_changed_subject(),
        &format!("score-changed-{}", event.work_id),
        event.encode_to_vec().into(),
    )
    .await
    .context("publishing a change event")
}

/// An "any change" subscription to `url`, made with the api's function.
async fn subscribe(s: &Scratch, url: &str) -> anyhow::Result<()> {
    let none: Vec<String> = Vec::new();
    sqlx::query(
        "SELECT id FROM create_webhook_subscription($1, $2, $3, $4, $5, NULL::numeric, false, true)",
    )
    .bind("bench-key")
    .bind(url)
    .bind(&none)
    .bind(&none)
    .bind(&none)
    .fetch_one(&s.pool)
    .await
    .context("create_webhook_subscription")?;
    Ok(())
}

/// Seconds from each arrival's publish to the arrival, for those on `path` (all when `None`).
fn delays(
    arrivals: &[Arrival],
    published: &HashMap<String, Instant>,
    path: Option<&str>,
) -> Vec<f64> {
    arrivals
        .iter()
        .filter(|a| path.is_none_or(|p| a.path == p))
        .filter_map(|a| Some(a.at.duration_since(*published.get(&a.repo)?).as_secs_f64()))
        .collect()
}

/// p50, p99 and max of `seconds`.
fn percentiles(mut seconds: Vec<f64>) -> (f64, f64, f64) {
    if seconds.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    seconds.sort_by(f64::total_cmp);
    let pct = |p: f64| seconds[((seconds.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.99), seconds[seconds.len() - 1])
}

fn duplicates(arrivals: &[Arrival]) -> usize {
    let distinct: HashSet<(&str, &str)> = arrivals
        .iter()
        .map(|a| (a.path.as_str(), a.repo.as_str()))
        .collect();
    arrivals.len() - distinct.len()
}

// ---- the measurements ----------------------------------------------------------------------

/// Deliveries per second, first publish → last delivery, against the receiver's ceiling.
async fn throughput(
    s: &Scratch,
    settings: &[(String, String)],
    events: usize,
    subscriptions: usize,
    concurrency: Concurrency,
) -> anyhow::Result<Row> {
    let receiver = Receiver::start(subscriptions).await?;
    for (k, port) in receiver.ports.iter().enumerate() {
        subscribe(s, &format!("http://127.0.0.1:{port}/s{k}")).await?;
    }
    let service = Service::start(s, settings).await?;
    let all: Vec<ScoreChanged> = (0..events).map(|i| event("t", i)).collect();
    let mut published = HashMap::with_capacity(events);
    let first = Instant::now();
    for window in all.chunks(PUBLISH_WINDOW) {
        let mut acks = Vec::with_capacity(window.len());
        for e in window {
            published.insert(e.repo.clone(), Instant::now());
            acks.push(send(s, e).await?);
        }
        for ack in acks {
            ack.await.context("a change event's ack")?;
        }
    }
    let publish_took = first.elapsed();
    let want = events * subscriptions;
    let arrivals = receiver.wait_for(want, "throughput").await?;
    let last = arrivals.iter().map(|a| a.at).max().unwrap_or(first);
    let took = last.duration_since(first);
    let rate = want as f64 / took.as_secs_f64();
    let metrics = service.metrics().await?;
    drop(service);
    let (p50, p99, max) = percentiles(delays(&arrivals, &published, None));
    eprintln!(
        "service: {want} deliveries in {:.1} s ({rate:.0}/s); publishing took {:.2} s",
        took.as_secs_f64(),
        publish_took.as_secs_f64()
    );

    // The ceiling: the same bodies to the same endpoints, as many at once as the service may
    // send, from a plain keep-alive client.
    let at_once_per = concurrency
        .per_endpoint
        .min(concurrency.max_in_flight.div_ceil(subscriptions))
        .max(1);
    let mut by_path: HashMap<String, Vec<Bytes>> = HashMap::new();
    for a in &arrivals {
        by_path
            .entry(a.path.clone())
            .or_default()
            .push(a.body.clone());
    }
    let sent = arrivals.len();
    let ceiling_started = Instant::now();
    let mut senders = Vec::new();
    for (k, port) in receiver.ports.iter().enumerate() {
        let path = format!("s{k}");
        let bodies = Arc::new(by_path.remove(&path).unwrap_or_default());
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..at_once_per {
            let (bodies, next, path, port) = (bodies.clone(), next.clone(), path.clone(), *port);
            senders.push(tokio::spawn(async move {
                let mut c = Connection::open(port).await?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let status = c.post(&path, body).await?;
                    ensure!(status == 204, "the receiver answered {status}");
                }
                anyhow::Ok(())
            }));
        }
    }
    for sender in senders {
        sender.await??;
    }
    let ceiling_took = ceiling_started.elapsed();
    let ceiling_got = receiver.tally.take().len();
    let ceiling = ceiling_got as f64 / ceiling_took.as_secs_f64();
    eprintln!(
        "ceiling: {ceiling_got} posts in {:.2} s ({ceiling:.0}/s)",
        ceiling_took.as_secs_f64()
    );

    let at_once = at_once_per * subscriptions;
    Ok(Row {
        what: format!(
            "webhooks deliveries/s to a local receiver ({} events × {subscriptions} \"any change\" \
             subscriptions, each its own endpoint; one release `webhooks`, {} in flight, {} per \
             endpoint; first publish → last delivery)",
            number(events as f64),
            concurrency.max_in_flight,
            concurrency.per_endpoint,
        ),
        unit: "deliveries/s",
        value: rate,
        baseline: ceiling,
        baseline_how: format!(
            "the receiver's ceiling: a plain keep-alive HTTP/1.1 client POSTing the same {} bodies \
             to the same endpoints, {at_once} at once ({at_once_per} per endpoint), {:.2} s",
            number(sent as f64),
            ceiling_took.as_secs_f64()
        ),
        better: Better::Higher,
        target: None,
        notes: format!(
            "{} deliveries in {:.1} s ({} duplicates; publishing the {} events took {:.2} s); \
             publish → delivery under this load p50 {p50:.2} s, p99 {p99:.2} s, max {max:.2} s \
             (queueing); the service reached {:.0}% of the receiver's ceiling; {}",
            number(want as f64),
            took.as_secs_f64(),
            duplicates(&arrivals),
            number(events as f64),
            publish_took.as_secs_f64(),
            100.0 * rate / ceiling,
            metrics.summary(),
        ),
    })
}

/// Publish → delivery at a light load, against a bare relay of the same events.
async fn latency(s: &Scratch, settings: &[(String, String)]) -> anyhow::Result<Vec<Row>> {
    let receiver = Receiver::start(1).await?;
    let port = receiver.ports[0];
    subscribe(s, &format!("http://127.0.0.1:{port}/service")).await?;
    let service = Service::start(s, settings).await?;

    // The relay: a consumer of the events stream that POSTs each event to the receiver.
    let relay_consumer =
        s.js.get_stream(s.topology.events_stream())
            .await?
            .create_consumer(consumer::pull::Config {
                deliver_policy: DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("the relay's consumer: {e}"))?;
    let mut relay_messages = relay_consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("the relay's messages: {e}"))?;
    let relay = tokio::spawn(async move {
        let mut c = Connection::open(port).await?;
        for _ in 0..LIGHT_EVENTS {
            let Some(m) = relay_messages.next().await else {
                break;
            };
            let m = m.map_err(|e| anyhow::anyhow!("the relay's pull: {e}"))?;
            let event = ScoreChanged::decode(m.payload.as_ref())?;
            let body = serde_json::to_vec(&serde_json::json!({
                "type": "score_changed",
                "data": {"repo": event.repo, "score": event.score},
            }))?;
            c.post("relay", &body).await?;
        }
        anyhow::Ok(())
    });

    let mut published = HashMap::with_capacity(LIGHT_EVENTS);
    let mut tick = tokio::time::interval(LIGHT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..LIGHT_EVENTS {
        tick.tick().await;
        let e = event("l", i);
        published.insert(e.repo.clone(), Instant::now());
        send(s, &e).await?.await.context("a change event's ack")?;
    }
    let arrivals = receiver.wait_for(2 * LIGHT_EVENTS, "latency").await?;
    relay.await??;
    let metrics = service.metrics().await?;
    drop(service);
    let (p50, p99, max) = percentiles(delays(&arrivals, &published, Some("service")));
    let (relay_p50, relay_p99, relay_max) =
        percentiles(delays(&arrivals, &published, Some("relay")));
    eprintln!(
        "latency: service p50 {:.1} ms p99 {:.1} ms; relay p50 {:.1} ms p99 {:.1} ms",
        p50 * 1e3,
        p99 * 1e3,
        relay_p50 * 1e3,
        relay_p99 * 1e3
    );
    let how = format!(
        "a bare relay in the same run: a consumer of the same events POSTing each at once, \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        relay_p50 * 1e3,
        relay_p99 * 1e3,
        relay_max * 1e3
    );
    let notes = format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} duplicates); {}",
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3,
        duplicates(&arrivals),
        metrics.summary(),
    );
    Ok(vec![
        Row {
            what: format!(
                "webhooks publish → delivery, p50 (one event every {} ms, {} events, one \
                 subscription; each event timed from its publish to the events stream to its \
                 arrival)",
                LIGHT_EVERY.as_millis(),
                number(LIGHT_EVENTS as f64),
            ),
            unit: "ms",
            value: p50 * 1e3,
            baseline: relay_p50 * 1e3,
            baseline_how: how.clone(),
            better: Better::Lower,
            target: None,
            notes: notes.clone(),
        },
        Row {
            what: "webhooks publish → delivery, p99 (same run)".into(),
            unit: "ms",
            value: p99 * 1e3,
            baseline: relay_p99 * 1e3,
            baseline_how: how,
            better: Better::Lower,
            target: None,
            notes,
        },
    ])
}
