//! `sink plan`: how many GitHub tokens and how much concurrency a fleet needs to keep every
//! repository fresh, and when the whole database will be fresh at today's rate. Arithmetic
//! over the repository count, the scores of the last day and, when the workers keep one, the
//! credential budget they learned (calls per scan, credentials in the pool).

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use fleet_runtime::budget::{Allowance, credential_of};
use futures::StreamExt as _;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    pub repos: u64,
    pub interval_days: u32,
    /// GitHub API calls one scan costs (~70 for a mid-size repository).
    pub calls_per_scan: f64,
    /// A token's hourly quota (5,000 for a personal token or GitHub App installation).
    pub calls_per_token_hour: f64,
    /// Minutes one scan takes, for concurrency.
    pub scan_minutes: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub scans_per_hour: f64,
    pub tokens: u64,
    pub in_flight: u64,
}

pub fn plan(i: &Inputs) -> Plan {
    let hours = f64::from(i.interval_days.max(1)) * 24.0;
    let scans_per_hour = i.repos as f64 / hours;
    let scans_per_token_hour = (i.calls_per_token_hour / i.calls_per_scan.max(1.0))
        .floor()
        .max(1.0);
    Plan {
        scans_per_hour,
        tokens: (scans_per_hour / scans_per_token_hour).ceil() as u64,
        // Little's law: arrivals per minute times minutes each.
        in_flight: (scans_per_hour / 60.0 * i.scan_minutes).ceil() as u64,
    }
}

/// The credential pool as the workers' budget bucket has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Credentials in the pool, and the ones GitHub rejected.
    pub active: Vec<String>,
    pub revoked: Vec<String>,
    /// Mean learned calls per scan over the active credentials; none without one.
    pub calls_per_scan: Option<f64>,
    /// Scans an hour the active credentials allow together now.
    pub scans_per_hour: f64,
}

impl Pool {
    pub fn of(entries: &[(String, Allowance)]) -> Option<Self> {
        let (active, revoked): (Vec<_>, Vec<_>) =
            entries.iter().partition(|(_, a)| a.revoked.is_none());
        if active.is_empty() && revoked.is_empty() {
            return None;
        }
        let n = active.len() as f64;
        Some(Self {
            calls_per_scan: (!active.is_empty())
                .then(|| active.iter().map(|(_, a)| a.calls_per_scan()).sum::<f64>() / n),
            scans_per_hour: active
                .iter()
                .map(|(_, a)| a.scans_per_window * 3600.0 / a.window_secs.max(1) as f64)
                .sum(),
            active: active.iter().map(|(k, _)| k.clone()).collect(),
            revoked: revoked.iter().map(|(k, _)| k.clone()).collect(),
        })
    }
}

/// Every credential's record in the budget bucket `bucket`; empty when there is no bucket.
pub async fn read_pool(
    js: &async_nats::jetstream::Context,
    bucket: &str,
) -> anyhow::Result<Vec<(String, Allowance)>> {
    let Ok(store) = js.get_key_value(bucket).await else {
        return Ok(Vec::new());
    };
    let mut keys = store
        .keys()
        .await
        .map_err(|e| anyhow::anyhow!("listing {bucket}: {e}"))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| anyhow::anyhow!("listing {bucket}: {e}"))?;
        let Some(value) = store
            .get(&key)
            .await
            .map_err(|e| anyhow::anyhow!("reading {bucket} {key}: {e}"))?
        else {
            continue;
        };
        if let Ok(allowance) = serde_json::from_slice::<Allowance>(&value) {
            out.push((credential_of(&key), allowance));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// How far the database is from fresh, and how fast it gets there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub enabled: i64,
    /// Enabled repositories scored within the interval.
    pub fresh: i64,
    /// Scores written in the last 24 hours.
    pub scored_last_day: i64,
}

/// When every enabled repository will be fresh: the backlog over what today's rate scores
/// beyond the repositories that fall due meanwhile. `None`: never, at today's rate.
pub fn fresh_at(p: &Progress, interval_days: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let backlog = (p.enabled - p.fresh).max(0) as f64;
    if backlog == 0.0 {
        return Some(now);
    }
    let due_per_day = p.enabled as f64 / f64::from(interval_days.max(1));
    let gain_per_day = p.scored_last_day as f64 - due_per_day;
    if gain_per_day <= 0.0 {
        return None;
    }
    let secs = (backlog / gain_per_day * 86_400.0).ceil() as i64;
    Some(now + TimeDelta::seconds(secs))
}

/// The lines about the pool and about freshness that `render` does not know.
pub fn render_progress(
    pool: Option<&Pool>,
    p: &Progress,
    interval_days: u32,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::new();
    match pool {
        Some(pool) => {
            let _ = writeln!(
                out,
                "credentials           {} in the pool{}: {:.0} scans/hour at their learned budget",
                pool.active.len(),
                if pool.revoked.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", {} rejected by GitHub ({})",
                        pool.revoked.len(),
                        pool.revoked.join(", ")
                    )
                },
                pool.scans_per_hour
            );
        }
        None => {
            let _ = writeln!(
                out,
                "credentials           unknown (no budget bucket: the workers run without one, or none ran yet)"
            );
        }
    }
    let _ = writeln!(
        out,
        "today's rate          {} scores in the last 24 hours; {} of {} enabled repositories fresh",
        p.scored_last_day, p.fresh, p.enabled
    );
    let due = p.enabled as f64 / f64::from(interval_days.max(1));
    let line = match fresh_at(p, interval_days, now) {
        Some(t) if t == now => "now".to_owned(),
        Some(t) => format!(
            "{} (in {:.1} days at today's rate)",
            t.format("%Y-%m-%d %H:%M UTC"),
            (t - now).num_minutes() as f64 / 1440.0
        ),
        None => format!(
            "never at today's rate: {due:.0} repositories fall due a day, {} were scored",
            p.scored_last_day
        ),
    };
    let _ = writeln!(out, "all fresh             {line}");
    out
}

/// The flags of `sink plan` that are not connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flags {
    pub calls_per_scan: f64,
    pub calls_per_token_hour: f64,
    pub scan_minutes: f64,
    pub in_flight_per_worker: u64,
}

/// How long `sink plan` tries to reach NATS for the budget before planning without it.
const NATS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// `sink plan`: reads the database and the workers' budget, prints the plan.
pub async fn command(
    db: &fleet_runtime::config::DbArgs,
    schedule: &crate::config::ScheduleArgs,
    nats: &fleet_runtime::config::NatsArgs,
    flags: Flags,
) -> anyhow::Result<String> {
    let pg = fleet_runtime::db::connect_once(db).await?;
    fleet_runtime::db::check_schema(&pg).await?;
    let interval = schedule.schedule().interval;
    let status = fleet_runtime::status::status(
        &fleet_runtime::db::Db::new(pg.clone(), db.database_pooling),
        interval,
    )
    .await?;
    let scored_last_day: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM score_raw WHERE scored_at > now() - interval '1 day'",
    )
    .persistent(false)
    .fetch_one(&pg)
    .await?;
    let patience = tokio_util::sync::CancellationToken::new();
    let _give_up = {
        let patience = patience.clone();
        tokio::spawn(async move {
            tokio::time::sleep(NATS_PATIENCE).await;
            patience.cancel();
        })
    };
    let topology = fleet_runtime::topology::Topology::new(nats.topology.clone())?;
    let (pool, note) =
        match fleet_runtime::nats::connect(nats, "scorecard-fleet-plan", &patience).await {
            Ok(client) => {
                let js = async_nats::jetstream::new(client);
                (
                    Pool::of(&read_pool(&js, &topology.budget_bucket()).await?),
                    None,
                )
            }
            Err(e) => (None, Some(format!("(the budget was not read: {e:#})\n"))),
        };
    let inputs = Inputs {
        repos: u64::try_from(status.enabled).unwrap_or(0),
        interval_days: schedule.interval_days,
        calls_per_scan: pool
            .as_ref()
            .and_then(|p| p.calls_per_scan)
            .unwrap_or(flags.calls_per_scan),
        calls_per_token_hour: flags.calls_per_token_hour,
        scan_minutes: flags.scan_minutes,
    };
    let progress = Progress {
        enabled: status.enabled,
        fresh: status.fresh,
        scored_last_day,
    };
    let mut out = render(&inputs, &plan(&inputs), flags.in_flight_per_worker);
    out.push_str(&render_progress(
        pool.as_ref(),
        &progress,
        schedule.interval_days,
        Utc::now(),
    ));
    if let Some(note) = note {
        out.push_str(&note);
    }
    Ok(out)
}

pub fn render(i: &Inputs, p: &Plan, in_flight_per_worker: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "repositories          {}", i.repos);
    let _ = writeln!(out, "interval              {} days", i.interval_days);
    let _ = writeln!(
        out,
        "scans needed          {:.0}/hour ({:.2}/s)",
        p.scans_per_hour,
        p.scans_per_hour / 3600.0
    );
    let _ = writeln!(
        out,
        "GitHub tokens         {} (at {:.0} calls a scan and {:.0} calls a token-hour: {:.0} scans a token-hour)",
        p.tokens,
        i.calls_per_scan,
        i.calls_per_token_hour,
        (i.calls_per_token_hour / i.calls_per_scan).floor()
    );
    let _ = writeln!(
        out,
        "scans in flight       {} (at {} min a scan)",
        p.in_flight, i.scan_minutes
    );
    let workers = p.in_flight.div_ceil(in_flight_per_worker.max(1));
    let _ = writeln!(
        out,
        "worker replicas       {workers} at WORKER_MAX_IN_FLIGHT={in_flight_per_worker}; set WORK_MAX_ACK_PENDING >= {}",
        workers * in_flight_per_worker
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_repos_every_two_weeks() {
        let i = Inputs {
            repos: 1_000_000,
            interval_days: 14,
            calls_per_scan: 70.0,
            calls_per_token_hour: 5000.0,
            scan_minutes: 3.0,
        };
        let p = plan(&i);
        assert!((p.scans_per_hour - 2976.19).abs() < 0.01);
        // 71 scans a token-hour: 2977 / 71 = 41.9 -> 42 tokens.
        assert_eq!(p.tokens, 42);
        assert_eq!(p.in_flight, 149);
        let text = render(&i, &p, 50);
        assert!(
            text.contains("worker replicas       3 at WORKER_MAX_IN_FLIGHT=50"),
            "{text}"
        );
    }

    fn allowance(spw: f64, revoked: bool) -> Allowance {
        Allowance {
            next_ms: 0,
            scans_per_window: spw,
            calls_per_window: 5000,
            window_secs: 3600,
            window_ms: 0,
            started: 0,
            limited: false,
            seen_limit: false,
            revoked: revoked.then(|| "Bad credentials".to_owned()),
        }
    }

    #[test]
    fn the_pool_is_what_the_workers_learned() {
        let entries = vec![
            ("app:7".to_owned(), allowance(50.0, false)),
            ("token-0".to_owned(), allowance(62.5, false)),
            ("token-1".to_owned(), allowance(71.0, true)),
        ];
        let pool = Pool::of(&entries).unwrap();
        assert_eq!(pool.active, ["app:7", "token-0"]);
        assert_eq!(pool.revoked, ["token-1"]);
        // 100 and 80 calls a scan; 112.5 scans an hour together.
        assert!((pool.calls_per_scan.unwrap() - 90.0).abs() < 1e-9);
        assert!((pool.scans_per_hour - 112.5).abs() < 1e-9);
        assert_eq!(Pool::of(&[]), None);
        // With every credential rejected nothing was learned: the flag's estimate stands.
        let all_revoked = Pool::of(&entries[2..]).unwrap();
        assert_eq!(all_revoked.calls_per_scan, None);
        assert_eq!(all_revoked.scans_per_hour, 0.0);
    }

    #[test]
    fn the_database_is_fresh_when_the_rate_beats_what_falls_due() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 14,000 repositories every 14 days: 1,000 fall due a day; 3,000 scored a day gains
        // 2,000 a day on a backlog of 4,000.
        let p = Progress {
            enabled: 14_000,
            fresh: 10_000,
            scored_last_day: 3_000,
        };
        assert_eq!(fresh_at(&p, 14, now), Some(now + TimeDelta::days(2)));
        let slow = Progress {
            scored_last_day: 900,
            ..p
        };
        assert_eq!(fresh_at(&slow, 14, now), None);
        let text = render_progress(None, &slow, 14, now);
        assert!(
            text.contains("never at today's rate: 1000 repositories fall due a day"),
            "{text}"
        );
        let done = Progress { fresh: 14_000, ..p };
        assert_eq!(fresh_at(&done, 14, now), Some(now));
    }

    #[test]
    fn an_empty_database_needs_nothing() {
        let i = Inputs {
            repos: 0,
            interval_days: 14,
            calls_per_scan: 70.0,
            calls_per_token_hour: 5000.0,
            scan_minutes: 3.0,
        };
        assert_eq!(
            plan(&i),
            Plan {
                scans_per_hour: 0.0,
                tokens: 0,
                in_flight: 0
            }
        );
    }
}
