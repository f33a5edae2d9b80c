//! `sink plan`: how many GitHub tokens and how much concurrency a fleet needs to keep every
//! repository fresh. Pure arithmetic, from the repository count in the database.

use std::fmt::Write as _;

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

pub fn render(i: &Inputs, p: &Plan, in_flight_per_worker: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "repositories          {}", i.repos);
    let _ = writeln!(out, "interval              {} days", i.interval_days);
    let _ = writeln!(
        out,
        "scans needed          {:.0}/hour ({:.1}/s)",
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
