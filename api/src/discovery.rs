//! Discovery: a GET of the score, page or badge of a repository the fleet has never scored
//! queues one scan of it, on the work stream's discovery lane (after people's scan requests,
//! before scheduled work). The database's `discover()` decides and records each one under a
//! lock, so concurrent GETs queue one scan; the work item is published inside that
//! transaction, so a failed publish records nothing.
//!
//! Guarded so a crawler cannot spend the fleet's GitHub quota: a fleet-wide budget of
//! discoveries an hour, a limit per client address, and names GitHub does not have are
//! answered from the repository's row (the sink records them) until that memory runs out.
//!
//! A known repository's GET, or one whose scan is queued or running, never takes the lock: it
//! is answered from the row it already fetched ([`standing`]). A discovery holds the lock only
//! while it decides and publishes, two at a time per replica, with a short lock timeout and one
//! bounded publish attempt (`routes/project.rs`); a timeout is a 503 "try again shortly", so a
//! stalled NATS never takes the connections reads need.
//!
//! A discovered repository is scheduled at [`DISCOVERED_PRIORITY`], below every list's tier.
//! Each GET of it is noted at most daily, in batches; the producer retires one nobody asks for.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use fleet_proto::RepoName;
use fleet_proto::v1::WorkReason;
use fleet_runtime::topology::{Topology, WORKER_DISCOVERY, WORKER_MANUAL};

use crate::keys::RateLimit;
use crate::store::Latest;

/// The priority a discovered repository is scheduled at: below every tier a list gives (0..10).
pub const DISCOVERED_PRIORITY: i32 = -1;

/// How often a discovered repository's "asked for" time is refreshed, at most.
const ASKED_EVERY: TimeDelta = TimeDelta::days(1);

/// How long a lane's measured wait is reused: it costs a few requests to NATS.
const WAIT_FOR: Duration = Duration::from_secs(5);

/// How long a measurement of the lanes may take before the last one is used instead.
const MEASURE_WITHIN: Duration = Duration::from_secs(1);

/// Discoveries deciding and publishing at once per replica.
const DISCOVERY_TURNS: usize = 2;

/// The allowance a client address draws on: an IPv6 host is given a whole /64, so it counts
/// as one client.
fn client_key(client: IpAddr) -> String {
    match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Off: an unknown repository is a plain 404, as before.
    pub enabled: bool,
    /// Discoveries the whole fleet queues an hour.
    pub per_hour: u32,
    /// Discoveries one client address may queue an hour (on each api replica).
    pub per_client_per_hour: u32,
    /// The header a trusted proxy puts the client's address in; its last entry is the one
    /// that proxy added. Without it, the connection's peer address.
    pub client_header: Option<HeaderName>,
    /// What a scan usually takes, added to a lane's wait for `Retry-After`.
    pub expected_scan: Duration,
}

pub struct Discovery {
    pub settings: Settings,
    clients: RateLimit,
    /// Discoveries deciding and publishing at once on this replica (each holds a connection).
    pub turns: tokio::sync::Semaphore,
    /// One measurement of the lanes at a time; the others use the last one.
    measuring: tokio::sync::Mutex<()>,
    /// Discovered repositories asked for whose row says so more than a day ago: written in
    /// batches by [`Discovery::flush_asked`], each at most once an hour per replica.
    asked: Mutex<Asked>,
    waits: Mutex<Option<(Instant, Waits)>>,
}

#[derive(Default)]
struct Asked {
    todo: HashSet<i64>,
    done: HashSet<i64>,
    done_since: Option<Instant>,
}

/// Each person-facing lane's queue; `None` where it could not be measured (NATS not connected
/// yet, or not answering).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    pub manual: Option<LaneWait>,
    pub discovery: Option<LaneWait>,
}

/// Items waiting in a lane for a worker, and how long the oldest of them has waited so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneWait {
    pub waiting: u64,
    pub oldest: Duration,
}

/// Where a repository stands, for a GET that found no score.
#[derive(Debug, Clone, PartialEq)]
pub enum Unscored {
    /// This request queued its scan.
    Queued { retry: Duration },
    /// A scan is queued or running already (since when, if known).
    Pending {
        since: Option<DateTime<Utc>>,
        retry: Duration,
    },
    /// GitHub had no such public repository when last checked.
    Missing { checked: Option<DateTime<Utc>> },
    /// Its latest attempt failed; the schedule tries again.
    Failed {
        at: Option<DateTime<Utc>>,
        next_due: DateTime<Utc>,
    },
    /// The fleet-wide discovery budget is spent for now.
    OverBudget { retry: Duration },
    /// This client has queued its share of discoveries for now.
    ClientLimited { retry: Duration },
    /// Disabled by an operator, or never scored with discovery off.
    NotScheduled,
    /// Not known, and discovery is off.
    Unknown,
}

/// What a GET does with a repository, from its row (`None`: no row).
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// It has a score; `rediscover` when it was retired (asking brings it back).
    Scored { rediscover: bool },
    /// A GET may queue its scan: unknown, retired, never tried, or its "missing" memory ran out.
    Discoverable,
    /// Answered without queueing anything.
    Unscored(Unscored),
}

/// The same rules as the database's `discover()`, read from the row the GET already fetched:
/// a known repository's GET never takes the discovery lock.
pub fn standing(row: Option<&Latest>, now: DateTime<Utc>, lease: TimeDelta) -> Standing {
    let Some(r) = row else {
        return Standing::Discoverable;
    };
    if r.work_id.is_some() {
        return Standing::Scored {
            rediscover: r.retired_at.is_some(),
        };
    }
    let outcome = r.failed_at.max(r.scored_at);
    if let Some(enqueued) = r.last_enqueued_at
        && enqueued > now - lease
        && outcome.is_none_or(|o| o < enqueued)
    {
        return Standing::Unscored(Unscored::Pending {
            since: Some(enqueued),
            retry: Duration::ZERO,
        });
    }
    if r.missing_until.is_some_and(|until| until > now) {
        return Standing::Unscored(Unscored::Missing {
            checked: r.missing_checked_at,
        });
    }
    if r.retired_at.is_some() {
        return Standing::Discoverable;
    }
    if !r.enabled {
        return Standing::Unscored(Unscored::NotScheduled);
    }
    // A failure the "missing" memory does not explain (none recorded, or a later one): the
    // schedule retries it with its own backoff.
    if r.failed_at.is_some() && (r.missing_until.is_none() || r.failed_at > r.missing_checked_at) {
        return Standing::Unscored(Unscored::Failed {
            at: r.failed_at,
            next_due: r.next_due_at,
        });
    }
    Standing::Discoverable
}

impl Unscored {
    /// Always a 404, refusals included, as the public API answers a repository without a
    /// result: its clients keep working, and `Retry-After` says when to come back.
    pub fn status(&self) -> StatusCode {
        StatusCode::NOT_FOUND
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Queued { retry }
            | Self::Pending { retry, .. }
            | Self::OverBudget { retry }
            | Self::ClientLimited { retry } => Some(*retry),
            _ => None,
        }
    }

    /// The scan is on its way: the page refreshes itself and caches keep the answer briefly.
    pub fn coming(&self) -> bool {
        matches!(self, Self::Queued { .. } | Self::Pending { .. })
    }

    /// A sentence for a person.
    pub fn message(&self, repo: &RepoName) -> String {
        match self {
            Self::Queued { retry } => format!(
                "{repo} has not been scored yet; its scan is queued now (check again in about {})",
                human_duration(*retry)
            ),
            Self::Pending { since, retry } => format!(
                "{repo} has not been scored yet; its scan was queued {} (check again in about {})",
                since.map_or_else(|| "already".to_owned(), |t| format!("at {}", human_time(t))),
                human_duration(*retry)
            ),
            Self::Missing { checked } => format!(
                "no such public repository on GitHub: {repo}{}",
                checked.map_or_else(String::new, |t| format!(
                    " (checked {})",
                    t.format("%Y-%m-%d")
                ))
            ),
            Self::Failed { at, next_due } => format!(
                "{repo} has not been scored yet: its latest scan failed{}; the next attempt is due {}",
                at.map_or_else(String::new, |t| format!(" at {}", human_time(t))),
                human_time(*next_due)
            ),
            Self::OverBudget { retry } => format!(
                "{repo} has not been scored yet and was not queued: this service has queued as many new repositories as it may this hour; try again in {}",
                human_duration(*retry)
            ),
            Self::ClientLimited { retry } => format!(
                "{repo} has not been scored yet and was not queued: this address has asked for many new repositories; try again in {}",
                human_duration(*retry)
            ),
            Self::NotScheduled => format!("{repo} has not been scored yet"),
            Self::Unknown => format!("{repo} is not known to this service"),
        }
    }

    /// The badge's right half.
    pub fn badge_value(&self) -> &'static str {
        match self {
            Self::Queued { .. } | Self::Pending { .. } => "pending",
            Self::Missing { .. } => "repo not found",
            Self::Failed { .. } | Self::NotScheduled => "not scored yet",
            Self::OverBudget { .. } | Self::ClientLimited { .. } => "try later",
            Self::Unknown => "unknown",
        }
    }
}

/// A date and time a person reads at a glance: `2026-12-06 15:06 UTC`.
pub fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `45 s`, `3 min`, `2 h`, `5 days`: seconds and minutes rounded up (a wait is not
/// promised short), hours and days down (an age is not made older).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{} s", s.max(1)),
        120..=7_199 => format!("{} min", s.div_ceil(60)),
        7_200..=172_799 => format!("{} h", s / 3_600),
        _ => format!("{} days", s / 86_400),
    }
}

impl Discovery {
    pub fn new(settings: Settings) -> Self {
        Self {
            clients: RateLimit::per_hour(settings.per_client_per_hour),
            turns: tokio::sync::Semaphore::new(DISCOVERY_TURNS),
            measuring: tokio::sync::Mutex::new(()),
            settings,
            asked: Mutex::default(),
            waits: Mutex::new(None),
        }
    }

    /// Takes one discovery from `client`'s allowance, or says how long until one is there.
    pub fn take_client(&self, client: IpAddr) -> Result<(), Duration> {
        self.clients.take(&client_key(client), Instant::now())
    }

    /// Whether `client` may queue a discovery now, taking nothing.
    pub fn client_has_room(&self, client: IpAddr) -> Result<(), Duration> {
        self.clients.peek(&client_key(client), Instant::now())
    }

    /// Notes a GET of `row`: a discovered repository asked for keeps its schedule.
    pub fn note_asked(&self, row: &Latest, now: DateTime<Utc>) {
        if !row.discovered || row.last_asked_at.is_some_and(|t| t > now - ASKED_EVERY) {
            return;
        }
        let mut asked = self.asked.lock().expect("asked lock");
        if !asked.done.contains(&row.repo_id) {
            asked.todo.insert(row.repo_id);
        }
    }

    /// The repositories noted since the last call, marked done for an hour on this replica.
    pub fn take_asked(&self) -> Vec<i64> {
        let mut asked = self.asked.lock().expect("asked lock");
        if asked
            .done_since
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3_600))
        {
            asked.done.clear();
            asked.done_since = Some(Instant::now());
        }
        let todo: Vec<i64> = asked.todo.drain().collect();
        asked.done.extend(todo.iter().copied());
        todo
    }

    /// The lanes' waits, measured at most every few seconds.
    pub async fn waits(
        &self,
        js: Option<&async_nats::jetstream::Context>,
        topology: &Topology,
    ) -> Waits {
        let last = *self.waits.lock().expect("waits lock");
        if let Some((at, waits)) = last
            && at.elapsed() < WAIT_FOR
        {
            return waits;
        }
        let Some(js) = js else {
            return Waits::default();
        };
        // Another request is measuring: the last measurement serves meanwhile.
        let Ok(_measuring) = self.measuring.try_lock() else {
            return last.map(|(_, w)| w).unwrap_or_default();
        };
        let measure = |consumer: &'static str, subject: String| async move {
            match tokio::time::timeout(MEASURE_WITHIN, lane_wait(js, topology, consumer, &subject))
                .await
            {
                Ok(Ok(wait)) => Some(wait),
                Ok(Err(e)) => {
                    tracing::debug!(error = %format!("{e:#}"), consumer, "measuring a lane's wait failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(consumer, "measuring a lane's wait took too long");
                    None
                }
            }
        };
        let waits = Waits {
            manual: measure(WORKER_MANUAL, topology.manual_subject()).await,
            discovery: measure(WORKER_DISCOVERY, topology.discovery_subject()).await,
        };
        *self.waits.lock().expect("waits lock") = Some((Instant::now(), waits));
        waits
    }

    /// How long to tell a client to come back after: the discovery lane's wait and a scan.
    pub fn retry(&self, waits: Waits) -> Duration {
        waits.discovery.unwrap_or_default().oldest + self.settings.expected_scan
    }
}

/// The items waiting in `consumer`'s lane and how long the oldest has waited (the next
/// message after the last one delivered, by its subject).
async fn lane_wait(
    js: &async_nats::jetstream::Context,
    topology: &Topology,
    consumer: &str,
    subject: &str,
) -> anyhow::Result<LaneWait> {
    let stream = js.get_stream_no_info(topology.work_stream()).await?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(consumer)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = consumer.info().await?;
    if info.num_pending == 0 {
        return Ok(LaneWait::default());
    }
    let next = stream
        .raw_message_builder()
        .sequence(info.delivered.stream_sequence + 1)
        .next_by_subject(subject)
        .send()
        .await?;
    let waited = time::OffsetDateTime::now_utc() - next.time;
    Ok(LaneWait {
        waiting: info.num_pending,
        oldest: Duration::try_from(waited).unwrap_or_default(),
    })
}

/// The work item a discovery publishes.
pub fn work_item(repo: &RepoName) -> fleet_proto::v1::WorkItem {
    fleet_runtime::publish::work_item(repo, WorkReason::Discovery, DISCOVERED_PRIORITY)
}

/// The address a request came from: the trusted proxy's header if one is configured and
/// present, else the connection's peer.
pub struct Client(pub IpAddr);

impl Client {
    pub fn of(headers: &HeaderMap, peer: Option<SocketAddr>, header: Option<&HeaderName>) -> Self {
        let forwarded = header
            .and_then(|h| headers.get_all(h).iter().next_back())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        Self(
            forwarded
                .or_else(|| peer.map(|p| p.ip()))
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        )
    }
}

impl FromRequestParts<std::sync::Arc<crate::routes::App>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &std::sync::Arc<crate::routes::App>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Self::of(
            &parts.headers,
            peer,
            app.discovery.settings.client_header.as_ref(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Latest {
        let now = Utc::now();
        Latest {
            repo_id: 1,
            repo: "github.com/o/n".into(),
            work_id: None,
            score: None,
            commit_sha: None,
            scorecard_version: None,
            scored_at: None,
            raw_json: None,
            enabled: true,
            discovered: true,
            last_asked_at: None,
            retired_at: None,
            last_enqueued_at: None,
            next_due_at: now,
            missing_checked_at: None,
            missing_until: None,
            failed_at: None,
        }
    }

    #[test]
    fn a_repository_never_tried_or_unknown_is_discoverable() {
        let now = Utc::now();
        let lease = TimeDelta::days(1);
        assert_eq!(standing(None, now, lease), Standing::Discoverable);
        assert_eq!(standing(Some(&row()), now, lease), Standing::Discoverable);
    }

    #[test]
    fn a_scan_queued_within_the_lease_is_pending_until_something_comes_back() {
        let now = Utc::now();
        let lease = TimeDelta::days(1);
        let mut r = row();
        r.last_enqueued_at = Some(now - TimeDelta::minutes(5));
        assert!(matches!(
            standing(Some(&r), now, lease),
            Standing::Unscored(Unscored::Pending { .. })
        ));
        r.failed_at = Some(now - TimeDelta::minutes(1));
        assert!(matches!(
            standing(Some(&r), now, lease),
            Standing::Unscored(Unscored::Failed { .. })
        ));
        r.failed_at = None;
        r.last_enqueued_at = Some(now - TimeDelta::days(2));
        assert_eq!(standing(Some(&r), now, lease), Standing::Discoverable);
    }

    #[test]
    fn a_missing_repository_is_remembered_until_its_memory_runs_out() {
        let now = Utc::now();
        let lease = TimeDelta::days(1);
        let mut r = row();
        r.failed_at = Some(now - TimeDelta::days(1));
        r.missing_checked_at = r.failed_at;
        r.missing_until = Some(now + TimeDelta::days(6));
        assert_eq!(
            standing(Some(&r), now, lease),
            Standing::Unscored(Unscored::Missing {
                checked: r.missing_checked_at
            })
        );
        r.missing_until = Some(now - TimeDelta::seconds(1));
        assert_eq!(standing(Some(&r), now, lease), Standing::Discoverable);
        // A later failure of another kind is the schedule's to retry, not every GET's.
        r.failed_at = Some(now - TimeDelta::hours(1));
        assert!(matches!(
            standing(Some(&r), now, lease),
            Standing::Unscored(Unscored::Failed { .. })
        ));
    }

    #[test]
    fn retired_repositories_come_back_and_disabled_ones_do_not() {
        let now = Utc::now();
        let lease = TimeDelta::days(1);
        let mut r = row();
        r.enabled = false;
        assert_eq!(
            standing(Some(&r), now, lease),
            Standing::Unscored(Unscored::NotScheduled)
        );
        r.retired_at = Some(now - TimeDelta::days(3));
        assert_eq!(standing(Some(&r), now, lease), Standing::Discoverable);
        r.work_id = Some("w".into());
        assert_eq!(
            standing(Some(&r), now, lease),
            Standing::Scored { rediscover: true }
        );
    }

    #[test]
    fn the_client_is_the_proxys_last_entry_when_a_header_is_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trusted = HeaderName::from_static("x-forwarded-for");
        assert_eq!(
            Client::of(&headers, Some(peer), Some(&trusted)).0,
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Not trusted: whatever a client writes in it is ignored.
        assert_eq!(Client::of(&headers, Some(peer), None).0, peer.ip());
        assert_eq!(
            Client::of(&HeaderMap::new(), Some(peer), Some(&trusted)).0,
            peer.ip()
        );
    }

    #[test]
    fn an_ipv6_host_counts_as_one_client_and_a_mapped_ipv4_as_itself() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert_eq!(client_key(mapped), "198.51.100.7");
    }

    #[test]
    fn durations_and_times_read_at_a_glance() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 min");
        assert_eq!(human_duration(Duration::from_secs(10_800)), "3 h");
        let t = DateTime::parse_from_rfc3339("2026-12-06T15:06:47.783306195+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(human_time(t), "2026-12-06 15:06 UTC");
    }
}
