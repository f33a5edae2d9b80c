//! A repository's latest result (`GET /projects/...`): the public API's answer, the
//! repository's page for a browser, and discovery for a repository never scored.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use fleet_proto::RepoName;
use serde::Deserialize;

use super::{
    App, Failure, PAGE_MAX, Params, RepoPath, Segments, Shared, asked_repo, cached, html_page,
    max_age, set_retry_after, wants_html,
};
use crate::discovery::{self, Client, Standing, Unscored};
use crate::model::{self, ApiError};
use crate::store::Latest;
use crate::{html, store};

/// How long a cache may keep the answer for a repository without a score: briefly while its
/// scan is on the way, so the score shows soon after it lands.
pub(super) fn unscored_max_age(answer: &Unscored) -> u32 {
    if answer.coming() { 15 } else { 60 }
}

/// A repository a GET asked for: its row with a score, or what to answer without one.
pub(super) enum Found {
    Scored(Box<Latest>),
    Unscored(Unscored),
}

/// Looks `repo` up for a GET (`badge`: without scorecard's output), queueing its scan when
/// the fleet has never scored it and discovery may.
pub(super) async fn look_up(
    app: &App,
    repo: &RepoName,
    client: &Client,
    badge: bool,
) -> Result<Found, Failure> {
    let row = app.query(app.lookups.latest(&repo.key(), !badge)).await?;
    let now = Utc::now();
    if let Some(r) = &row {
        app.discovery.note_asked(r, now);
    }
    match discovery::standing(row.as_ref(), now, app.lease) {
        Standing::Scored { rediscover } => {
            if rediscover {
                // Retired, and asked for again: scheduled again, the kept score served now,
                // whether or not the scan could be queued this time.
                if let Err(e) = discover(app, repo, true, client).await {
                    tracing::warn!(%repo, error = %e.message, "bringing back a retired repository failed");
                }
            }
            Ok(Found::Scored(Box::new(row.expect("a scored row"))))
        }
        Standing::Discoverable => Ok(Found::Unscored(
            discover(app, repo, row.is_some(), client).await?,
        )),
        Standing::Unscored(Unscored::Pending { since, .. }) => {
            let waits = app.discovery.waits(app.nats.get(), &app.topology).await;
            let answer = Unscored::Pending {
                since,
                retry: app.discovery.retry(waits),
            };
            app.count_discovery(&answer);
            Ok(Found::Unscored(answer))
        }
        Standing::Unscored(answer) => {
            app.count_discovery(&answer);
            Ok(Found::Unscored(answer))
        }
    }
}

/// Queues one scan of `repo` on the discovery lane if the database's `discover()` says so,
/// publishing inside its transaction; `known`: the repository has a row.
pub(super) async fn discover(
    app: &App,
    repo: &RepoName,
    known: bool,
    client: &Client,
) -> Result<Unscored, Failure> {
    let answer = discover_once(app, repo, known, client).await?;
    app.count_discovery(&answer);
    Ok(answer)
}

pub(super) async fn discover_once(
    app: &App,
    repo: &RepoName,
    known: bool,
    client: &Client,
) -> Result<Unscored, Failure> {
    if !app.discovery.settings.enabled {
        return Ok(if known {
            Unscored::NotScheduled
        } else {
            Unscored::Unknown
        });
    }
    // A client past its allowance never reaches the database's lock.
    if let Err(wait) = app.discovery.client_has_room(client.0) {
        return Ok(Unscored::ClientLimited { retry: wait });
    }
    let Some(js) = app.nats.get() else {
        return Err(busy("NATS is not connected yet; try again shortly"));
    };
    // Discoveries hold a connection and the fleet-wide lock while they publish: a few at a time
    // per replica, so a stalled NATS never takes the pool the reads need.
    let Ok(_turn) = tokio::time::timeout(DISCOVERY_WAIT, app.discovery.turns.acquire()).await
    else {
        return Err(busy(
            "many new repositories are being queued right now; try again shortly",
        ));
    };
    let decided = async {
        let mut tx = fleet_runtime::db::begin(&app.db.pool, DISCOVERY_TIMEOUTS).await?;
        let (outcome, retry_secs, checked): (String, i32, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT outcome, retry_secs, checked
                     FROM discover($1, $2, $3, $4::interval, $5, $6)",
        )
        .persistent(false)
        .bind(repo.key())
        .bind(repo.owner())
        .bind(repo.name())
        .bind(fleet_runtime::db::interval_text(app.lease))
        .bind(i32::try_from(app.discovery.settings.per_hour).unwrap_or(i32::MAX))
        .bind(discovery::DISCOVERED_PRIORITY)
        .fetch_one(&mut *tx)
        .await?;
        Ok::<_, sqlx::Error>((tx, outcome, retry_secs, checked))
    }
    .await;
    let (tx, outcome, retry_secs, checked) = match decided {
        Ok(decided) => {
            app.db_health.succeeded();
            decided
        }
        // Another discovery held the lock too long: busy, not a database outage.
        Err(e)
            if matches!(
                fleet_runtime::db::ErrorKind::of(&e),
                fleet_runtime::db::ErrorKind::LockTimeout
                    | fleet_runtime::db::ErrorKind::StatementTimeout
            ) =>
        {
            tracing::warn!(%repo, error = %fleet_runtime::db::describe(&e), "a discovery timed out");
            return Err(busy(
                "many new repositories are being queued right now; try again shortly",
            ));
        }
        Err(e) => return Err(app.db_error(&e)),
    };
    let retry = |waits| app.discovery.retry(waits);
    match outcome.as_str() {
        "queued" => {
            // Only a scan this request queues counts against its client: concurrent GETs of
            // one new repository cost one.
            if let Err(wait) = app.discovery.take_client(client.0) {
                drop(tx);
                return Ok(Unscored::ClientLimited { retry: wait });
            }
            let item = discovery::work_item(repo);
            // One attempt, bounded: the lock is held meanwhile, and the client asks again.
            let published = tokio::time::timeout(
                DISCOVERY_WAIT,
                fleet_runtime::publish::publish_item(js, app.topology.discovery_subject(), &item),
            )
            .await;
            if !matches!(published, Ok(Ok(()))) {
                // Dropping the transaction rolls it back: nothing says a scan is queued.
                drop(tx);
                let why = match published {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {DISCOVERY_WAIT:?}"),
                };
                tracing::warn!(%repo, error = %why, "publishing a discovery failed");
                return Err(busy(&format!(
                    "{repo} has not been scored yet, and its scan could not be queued; try again shortly"
                )));
            }
            app.query(tx.commit()).await?;
            tracing::info!(%repo, work_id = %item.id, "discovered: scan queued");
            let waits = app.discovery.waits(Some(js), &app.topology).await;
            Ok(Unscored::Queued {
                retry: retry(waits),
            })
        }
        other => {
            app.query(tx.commit()).await?;
            Ok(match other {
                "pending" => {
                    let waits = app.discovery.waits(Some(js), &app.topology).await;
                    Unscored::Pending {
                        since: None,
                        retry: retry(waits),
                    }
                }
                "missing" => Unscored::Missing { checked },
                "budget" => Unscored::OverBudget {
                    retry: Duration::from_secs(u64::try_from(retry_secs).unwrap_or(1)),
                },
                _ => Unscored::NotScheduled,
            })
        }
    }
}

/// How long a discovery waits for its turn, and for NATS to store its work item.
pub(super) const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// A discovery gives up on the fleet-wide lock rather than queue behind a stalled holder.
pub(super) const DISCOVERY_TIMEOUTS: fleet_runtime::db::Timeouts = fleet_runtime::db::Timeouts {
    statement: Duration::from_secs(5),
    lock: Duration::from_secs(3),
};

/// A 503 to try again shortly.
pub(super) fn busy(message: &str) -> Failure {
    Failure::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(5)
}

#[derive(Debug, Deserialize)]
pub struct ProjectQuery {
    commit: Option<String>,
}

/// The latest result of a repository (or the one of `?commit=`), as the public API serves it.
/// A repository the fleet has never scored gets its scan queued (discovery) and a 404 that
/// says so, with `Retry-After`.
#[utoipa::path(
    get,
    path = "/projects/{platform}/{org}/{repo}",
    params(
        RepoPath,
        ("commit" = Option<String>, Query, pattern = r"^[0-9a-fA-F]{40}$", description = "40 hex digits: the result for that commit, if kept"),
    ),
    responses(
        (status = 200, description = "scorecard's JSON v2 (an HTML view for browsers); Last-Modified is the scan's date",
            content((model::ScorecardResult = "application/json"), (String = "text/html"))),
        (status = 304, description = "Not modified (If-None-Match, or If-Modified-Since)"),
        (status = 400, description = "Invalid commit", body = ApiError),
        (status = 404, description = "Not a repository name; not scored yet (its scan queued, or refused for now: Retry-After); or no such repository on GitHub", body = ApiError),
        (status = 503, description = "The database or NATS is unavailable", body = ApiError),
    )
)]
pub async fn project(
    State(app): State<Shared>,
    path: Result<Segments<RepoPath>, Failure>,
    Params(query): Params<ProjectQuery>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let repo = asked_repo(path)?;
    let commit = query.commit.map(|c| commit_hex(&c)).transpose()?;
    let page = wants_html(&headers) && commit.is_none();
    let latest = match look_up(&app, &repo, &client, false).await? {
        Found::Scored(latest) => latest,
        Found::Unscored(answer) if page => return Ok(unscored_page(&repo, &answer)),
        Found::Unscored(answer) => return Err(Failure::unscored(&repo, &answer)),
    };
    if page {
        return repo_page(&app, &latest).await;
    }
    let latest = *latest;
    let (Some(work_id), Some(raw)) = (latest.work_id, latest.raw_json) else {
        return Err(Failure::unscored(&repo, &Unscored::NotScheduled));
    };
    let (work_id, raw, modified) = match &commit {
        Some(c) if latest.commit_sha.as_deref() != Some(c.as_str()) => {
            let (work_id, raw) = app
                .query(store::at_commit(&app.db, latest.repo_id, c))
                .await?
                .ok_or_else(|| {
                    Failure::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{repo} has no result for commit {c} (results are kept {} days)",
                            app.raw_history_days
                        ),
                    )
                })?;
            (work_id, raw, None)
        }
        // Moved, not copied: the hot path's one large value.
        _ => (work_id, raw, latest.scored_at),
    };
    Ok(cached(
        &app,
        &headers,
        format!("\"{work_id}\""),
        modified,
        "application/json",
        raw,
    ))
}

pub(super) fn commit_hex(commit: &str) -> Result<String, Failure> {
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(commit.to_ascii_lowercase())
    } else {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("commit {commit:?} is not a commit id: expected 40 hexadecimal digits"),
        ))
    }
}

pub(super) fn unknown(repo: &RepoName) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!("{repo} is not known to this service"),
    )
}

/// The page of a repository without a score; it refreshes itself while its scan is on the way.
pub(super) fn unscored_page(repo: &RepoName, answer: &Unscored) -> Response {
    let mut page = html_page(html::unscored(repo, answer));
    *page.status_mut() = answer.status();
    page.headers_mut()
        .insert(header::CACHE_CONTROL, max_age(unscored_max_age(answer)));
    if let Some(after) = answer.retry_after() {
        set_retry_after(page.headers_mut(), after);
    }
    page
}

pub(super) async fn repo_page(app: &App, latest: &Latest) -> Result<Response, Failure> {
    let checks = app.query(store::checks(&app.db, latest.repo_id)).await?;
    let scans = app
        .query(store::history(&app.db, latest.repo_id, None, PAGE_MAX))
        .await?;
    let failure = app.query(store::failure(&app.db, latest.repo_id)).await?;
    Ok(html_page(html::repo(
        latest,
        &checks,
        &scans,
        failure.as_ref(),
        app.interval,
        Utc::now(),
    )))
}

impl App {
    /// A GET of a repository without a score, by how it was answered.
    pub(super) fn count_discovery(&self, answer: &Unscored) {
        let label = match answer {
            Unscored::Queued { .. } => "queued",
            Unscored::Pending { .. } => "pending",
            Unscored::Missing { .. } => "missing",
            Unscored::Failed { .. } => "failed",
            Unscored::OverBudget { .. } => "over_budget",
            Unscored::ClientLimited { .. } => "client_limited",
            Unscored::NotScheduled => "not_scheduled",
            Unscored::Unknown => "unknown",
        };
        self.metrics
            .discovery
            .get_or_create(&crate::metrics::DiscoveryLabel::new(label))
            .inc();
    }
}
