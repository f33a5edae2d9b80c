//! What the api answers, as types: the OpenAPI document is generated from them, so the
//! contract test checks every response against the code's own description.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// scorecard's JSON v2, as the public Scorecard API serves it (the stored output, verbatim).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScorecardResult {
    /// When scorecard ran.
    pub date: String,
    pub repo: RepoRef,
    pub scorecard: ScorecardRef,
    /// The aggregate score, 0..10; -1 when inconclusive.
    pub score: f64,
    pub checks: Vec<CheckResult>,
    pub metadata: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RepoRef {
    /// `github.com/OWNER/NAME`.
    pub name: String,
    /// The commit scanned.
    pub commit: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScorecardRef {
    pub version: String,
    pub commit: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub name: String,
    /// 0..10; -1 when inconclusive.
    pub score: i64,
    pub reason: String,
    pub details: Option<Vec<String>>,
    pub documentation: Documentation,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Documentation {
    pub url: String,
    pub short: String,
}

/// Every error: the HTTP status again and a sentence for a person.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

/// One page of a repository's scans, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    pub repo: String,
    pub scans: Vec<HistoryScan>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryScan {
    pub date: String,
    pub work_id: String,
    pub commit: String,
    /// 0..10; null when inconclusive.
    pub score: Option<f64>,
    pub scorecard_version: String,
    /// Each check's score; null when inconclusive.
    pub checks: BTreeMap<String, Option<i64>>,
}

/// One page of repositories by one check's score, lowest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ranking {
    pub check: String,
    pub repos: Vec<RankedRepo>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RankedRepo {
    pub repo: String,
    pub score: i64,
    pub reason: String,
}

/// The fleet at a glance, as `sink status` prints it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    pub repos: i64,
    pub enabled: i64,
    /// Scored within the interval.
    pub fresh: i64,
    /// `fresh` over all repositories, 0..1.
    pub fresh_ratio: f64,
    pub interval_days: u32,
    pub due_now: i64,
    pub in_flight: i64,
    pub never_scored: i64,
    /// The due time of the longest-waiting due repository.
    pub oldest_overdue: Option<String>,
    /// Repositories whose latest attempt failed, by failure class.
    pub failures_by_class: BTreeMap<String, i64>,
    /// When these numbers were counted (they are cached for a short while).
    pub counted_at: String,
    /// The repository counts are estimated from a sample of the table (above 250,000
    /// repositories); the failures are counted.
    pub estimated: bool,
    /// The queues of the lanes people wait on, measured when asked (every 5 s at most), not
    /// cached with the counts; null where NATS could not be asked.
    pub lanes: Lanes,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lanes {
    /// Scan requests (`POST .../scan`, `producer enqueue`).
    pub manual: Option<LaneQueue>,
    /// GETs of repositories never scored.
    pub discovery: Option<LaneQueue>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LaneQueue {
    /// Items waiting for a worker.
    pub waiting: u64,
    /// How long the oldest of them has waited so far (0: none waits).
    pub oldest_wait_seconds: u64,
}

/// A scan request, queued on the manual lane.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanAccepted {
    pub work_id: String,
    pub repo: String,
}
