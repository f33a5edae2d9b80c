//! GitHub's API quota as the scorecard stand-in plays it: each credential has its calls per
//! window (a token `calls_per_window`, an App installation `app_calls_per_window`), the window
//! starting with its first call after a reset (as GitHub's hour does). A scan that needs more
//! than is left spends what is left, waits for the reset, as scorecard's rate-limit transport
//! waits out `X-RateLimit-Reset`, and goes on in the next window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// A personal token's calls per window.
    pub calls_per_window: u32,
    /// A GitHub App installation's (`app:<id>`): GitHub gives an installation 5,000 to 15,000.
    pub app_calls_per_window: u32,
    /// An accelerated hour.
    pub window: Duration,
}

impl Quota {
    /// The calls per window of `credential` (a pool key: `token-0`, `app:<id>`).
    pub fn calls_of(&self, credential: &str) -> u32 {
        if credential.starts_with("app:") {
            self.app_calls_per_window
        } else {
            self.calls_per_window
        }
    }
}

/// One credential's window: when it began, calls spent, scans whose last call fell in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub credential: String,
    pub started: Instant,
    pub calls: u32,
    pub scans: u32,
}

/// What a charge came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Every call fit: the scan goes on.
    Done,
    /// The window ran dry: wait until `reset`, then charge `rest` calls.
    Stall { reset: Instant, rest: u32 },
}

/// Every credential's windows, the current one last.
#[derive(Debug, Default)]
pub struct Ledger {
    windows: HashMap<String, Vec<Window>>,
}

impl Ledger {
    /// Charges `calls` of one scan to `credential` at `now`.
    pub fn charge(&mut self, quota: Quota, credential: &str, calls: u32, now: Instant) -> Charge {
        let windows = self.windows.entry(credential.to_owned()).or_default();
        let expired = windows
            .last()
            .is_none_or(|w| now >= w.started + quota.window);
        if expired {
            windows.push(Window {
                credential: credential.to_owned(),
                started: now,
                calls: 0,
                scans: 0,
            });
        }
        let current = windows.last_mut().expect("a window");
        let limit = quota.calls_of(credential);
        let left = limit.saturating_sub(current.calls);
        if calls <= left {
            current.calls += calls;
            current.scans += 1;
            Charge::Done
        } else {
            current.calls = limit;
            Charge::Stall {
                reset: current.started + quota.window,
                rest: calls - left,
            }
        }
    }

    /// Every window so far, per credential in order.
    pub fn windows(&self) -> Vec<Window> {
        let mut all: Vec<Window> = self.windows.values().flatten().cloned().collect();
        all.sort_by_key(|w| (w.credential.clone(), w.started));
        all
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// API calls a scan of `repo` makes, stable per repository: most repositories are small (30-70
/// calls), some mid-size (60-110), a tenth large (100-200): ~70 on average, as GitHub's
/// numbers for scorecard's scans suggest.
pub fn calls_for(repo: &str) -> u32 {
    let h = fnv(&format!("calls:{}", repo.to_ascii_lowercase()));
    let pick = u32::try_from((h >> 32) % 1000).unwrap_or(0);
    match (h >> 8) % 100 {
        0..=59 => 30 + pick % 41,
        60..=89 => 60 + pick % 51,
        _ => 100 + pick % 101,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: Quota = Quota {
        calls_per_window: 100,
        app_calls_per_window: 300,
        window: Duration::from_secs(60),
    };

    #[test]
    fn a_scan_past_the_quota_waits_for_the_reset_and_spends_the_rest_after_it() {
        let mut ledger = Ledger::default();
        let t = Instant::now();
        assert_eq!(ledger.charge(QUOTA, "token-0", 70, t), Charge::Done);
        let stall = ledger.charge(QUOTA, "token-0", 50, t + Duration::from_secs(10));
        assert_eq!(
            stall,
            Charge::Stall {
                reset: t + QUOTA.window,
                rest: 20
            }
        );
        // Another credential has its own quota, an App installation a larger one.
        assert_eq!(ledger.charge(QUOTA, "token-1", 90, t), Charge::Done);
        assert_eq!(ledger.charge(QUOTA, "app:7", 250, t), Charge::Done);
        assert!(matches!(
            ledger.charge(QUOTA, "app:7", 60, t),
            Charge::Stall { rest: 10, .. }
        ));
        assert_eq!(
            ledger.charge(QUOTA, "token-0", 20, t + QUOTA.window),
            Charge::Done
        );
        let w: Vec<(String, u32, u32)> = ledger
            .windows()
            .into_iter()
            .map(|w| (w.credential, w.calls, w.scans))
            .collect();
        assert_eq!(
            w,
            [
                ("app:7".into(), 300, 1),
                ("token-0".into(), 100, 1),
                ("token-0".into(), 20, 1),
                ("token-1".into(), 90, 1)
            ]
        );
    }

    #[test]
    fn scans_cost_about_seventy_calls_with_a_realistic_spread() {
        let calls: Vec<u32> = (0..10_000)
            .map(|i| calls_for(&format!("github.com/o/r{i}")))
            .collect();
        let mean = f64::from(calls.iter().sum::<u32>()) / calls.len() as f64;
        assert!((66.0..75.0).contains(&mean), "{mean}");
        assert!(calls.iter().any(|&c| c > 150) && calls.iter().any(|&c| c < 40));
    }
}
