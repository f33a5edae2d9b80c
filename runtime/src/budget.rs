//! A GitHub credential's budget as the fleet shares it: the record each credential has in the
//! budget bucket (workers write it, `sink plan` reads it) and the rules that change it, as
//! pure functions.
//!
//! Each credential is paced: a scan may start on it once every `window / scans_per_window`
//! (a generic cell rate algorithm: the record holds the earliest time the next scan may
//! start). Pacing, not a count per window, because the fleet cannot see when GitHub's hour
//! began for a token: a steady rate spends about the same in any hour, wherever it starts. A
//! start that comes late keeps its place in the schedule for up to a twentieth of the window
//! (replicas see room only when they poll, and a busy node may not let them for seconds):
//! lateness lost at every start adds up to a share of the quota never spent. Idle time longer
//! than that is not saved up: a window starts at most its budget, a twentieth more, and one.
//! A credential idle for a window or more (a new one too) starts afresh, with no burst:
//! GitHub's hour for it begins at its next call.
//!
//! `scans_per_window` starts at the credential's calls per window over the estimated calls per
//! scan and is learned from outcomes: a scan that waited out or failed on a rate limit shrinks
//! it by 5% (once per window: one exhaustion shows in every scan it stalls), a window whose
//! budget was spent without one grows it, up to a quarter above the start (the estimate is a
//! mid-size repository's scan; failed and small scans cost less, and only spending finds out
//! how much). Until a credential's first limit it grows by 2% of the starting value a window,
//! after that by 1%: the first climb finds the limit in a few windows instead of a dozen, and
//! near the limit a small cut and a slow climb keep the fleet close to it (a cut of half
//! would idle a tenth of the quota after every unlucky window) while stalls stay rare.
//! `dev/bench`'s quota bench measures it.

use serde::{Deserialize, Serialize};

/// Which slots a scan takes: people's requests may dip into a reserve scheduled work leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Scheduled,
    Manual,
}

/// What a finished scan says about its credential's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// It waited for the quota to reset ("Rate limit exceeded. Waiting ..."), then went on.
    Waited,
    /// It failed on a rate limit: the credential is dry now.
    RateLimited,
    /// GitHub rejected the credential.
    Revoked,
}

/// Share of a window's budget scheduled work leaves for manual requests: a request finds room
/// on a credential that scheduled work has spent.
pub const MANUAL_RESERVE: f64 = 0.05;
/// The learning rule's steps (see the module's documentation).
pub const SHRINK: f64 = 0.95;
pub const GROW: f64 = 0.01;
/// The growth step until a credential's first limit: its first climb.
pub const PROBE: f64 = 0.02;
/// Share of a window a late start may make up: how much lateness keeps the schedule.
pub const CATCH_UP: f64 = 0.05;
/// How far above the estimate's scans per window learning may grow a budget.
pub const HEADROOM: f64 = 1.25;
/// A window counts as spent when this share of its budget was started.
const SPENT: f64 = 0.9;

/// One credential's quota as the workers are configured for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// GitHub's quota window in ms (an hour; shorter in accelerated tests).
    pub window_ms: i64,
    /// Calls the credential may make per window.
    pub calls_per_window: u32,
    /// Estimated calls one scan makes.
    pub scan_cost: u32,
    /// How long the credential rests after a scan failed on a rate limit (it is dry now).
    pub rest_after_limit_ms: i64,
}

impl Pace {
    /// The scans per window a budget starts at: the quota over the estimated scan cost.
    pub fn ceiling(&self) -> f64 {
        (f64::from(self.calls_per_window) / f64::from(self.scan_cost.max(1))).max(1.0)
    }

    /// The most scans per window learning may grow a budget to.
    pub fn most(&self) -> f64 {
        self.ceiling() * HEADROOM
    }
}

/// One credential's record in the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allowance {
    /// Unix ms before which no scheduled scan may start on it.
    pub next_ms: i64,
    /// Scans per window it is allowed now (learned).
    pub scans_per_window: f64,
    /// Its calls per window and the window's length, as the workers were configured: what
    /// `sink plan` turns into calls per scan.
    pub calls_per_window: u32,
    pub window_secs: u64,
    /// Start (unix ms) of the window `started` and `limited` count for.
    pub window_ms: i64,
    pub started: u32,
    pub limited: bool,
    /// Whether it ever ran into a limit: until then it grows by [`PROBE`].
    #[serde(default)]
    pub seen_limit: bool,
    /// Why GitHub rejected it; set, it is out of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

impl Allowance {
    pub fn new(pace: &Pace, now_ms: i64) -> Self {
        Self {
            // Free since ever: a new credential ties with every other free one; it has been
            // idle for longer than a window, so it starts without a burst.
            next_ms: 0,
            scans_per_window: pace.ceiling(),
            calls_per_window: pace.calls_per_window,
            window_secs: u64::try_from(pace.window_ms / 1000).unwrap_or(0),
            window_ms: now_ms - now_ms.rem_euclid(pace.window_ms.max(1)),
            started: 0,
            limited: false,
            seen_limit: false,
            revoked: None,
        }
    }

    /// The learned calls one scan costs: the quota over the scans it allows.
    pub fn calls_per_scan(&self) -> f64 {
        f64::from(self.calls_per_window) / self.scans_per_window.max(1.0)
    }

    fn interval_ms(&self, pace: &Pace) -> i64 {
        (pace.window_ms as f64 / self.scans_per_window.max(1.0)).ceil() as i64
    }

    /// Moves to the window `now_ms` is in, learning from the one that ended.
    fn roll(&mut self, pace: &Pace, now_ms: i64) {
        let (ceiling, most) = (pace.ceiling(), pace.most());
        self.calls_per_window = pace.calls_per_window;
        self.window_secs = u64::try_from(pace.window_ms / 1000).unwrap_or(0);
        self.scans_per_window = self.scans_per_window.clamp(1.0, most);
        let window = now_ms - now_ms.rem_euclid(pace.window_ms.max(1));
        if window <= self.window_ms {
            return;
        }
        if !self.limited && f64::from(self.started) >= SPENT * self.scans_per_window.floor() {
            let step = if self.seen_limit { GROW } else { PROBE };
            self.scans_per_window = (self.scans_per_window + step * ceiling).min(most);
        }
        self.window_ms = window;
        self.started = 0;
        self.limited = false;
    }

    /// Starts a scan on it if it has room for `lane`; otherwise how long until it has (never,
    /// for a revoked credential).
    pub fn take(
        &mut self,
        pace: &Pace,
        lane: Lane,
        now_ms: i64,
    ) -> Result<(), Option<std::time::Duration>> {
        if self.revoked.is_some() {
            return Err(None);
        }
        self.roll(pace, now_ms);
        let tolerance = match lane {
            Lane::Scheduled => 0,
            Lane::Manual => (pace.window_ms as f64 * MANUAL_RESERVE) as i64,
        };
        let ahead = self
            .next_ms
            .saturating_sub(now_ms)
            .saturating_sub(tolerance);
        if ahead > 0 {
            return Err(Some(std::time::Duration::from_millis(ahead.unsigned_abs())));
        }
        // A late start keeps its slot's place in the schedule, up to a twentieth of the
        // window behind: replicas see room only when they poll, and lateness lost at every
        // start adds up to a share of the quota never spent. Later than that, the credential
        // was idle: idle time is not saved up into a burst. Idle for a window or more (a new
        // credential too), it starts afresh: GitHub's next hour for it begins at this call,
        // and any burst would spend more than the budget in that hour.
        let interval = self.interval_ms(pace);
        let catch_up = ((pace.window_ms as f64 * CATCH_UP) as i64).max(interval / 2);
        let from = if now_ms.saturating_sub(self.next_ms) >= pace.window_ms {
            now_ms
        } else {
            self.next_ms.max(now_ms.saturating_sub(catch_up))
        };
        self.next_ms = from.saturating_add(interval);
        self.started += 1;
        Ok(())
    }

    /// Gives back a scan taken but not started (its message needed no scan).
    pub fn give_back(&mut self, pace: &Pace) {
        self.next_ms = self.next_ms.saturating_sub(self.interval_ms(pace));
        self.started = self.started.saturating_sub(1);
    }

    /// Learns from what a scan on it said.
    pub fn learn(&mut self, pace: &Pace, signal: Signal, now_ms: i64) {
        match signal {
            Signal::Revoked => {
                self.revoked = Some("GitHub answered \"Bad credentials\"".to_owned());
            }
            Signal::Waited | Signal::RateLimited => {
                self.roll(pace, now_ms);
                if !self.limited {
                    self.scans_per_window = (self.scans_per_window * SHRINK).max(1.0);
                    self.limited = true;
                    self.seen_limit = true;
                }
                if signal == Signal::RateLimited {
                    self.next_ms = self
                        .next_ms
                        .max(now_ms.saturating_add(pace.rest_after_limit_ms));
                }
            }
        }
    }
}

/// The bucket key of a credential: `app:<id>` becomes `app=<id>` (key-value keys take no `:`,
/// and a Secret key no `=`, so the two never meet).
pub fn bucket_key(key: &str) -> String {
    key.replace(':', "=")
}

/// The credential of a bucket key.
pub fn credential_of(bucket_key: &str) -> String {
    bucket_key.replace('=', ":")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const HOUR: i64 = 3_600_000;
    const PACE: Pace = Pace {
        window_ms: HOUR,
        calls_per_window: 5000,
        scan_cost: 70,
        rest_after_limit_ms: 900_000,
    };

    /// Takes scheduled scans at `now` until it has no room; how many it took.
    fn take_all(a: &mut Allowance, now: i64) -> u32 {
        let mut n = 0;
        while a.take(&PACE, Lane::Scheduled, now).is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn the_ceiling_is_the_quota_over_the_scan_cost() {
        assert_eq!(PACE.ceiling().floor(), 71.0);
        let app = Pace {
            calls_per_window: 15000,
            ..PACE
        };
        assert_eq!(app.ceiling().floor(), 214.0);
        assert!((Allowance::new(&PACE, HOUR).calls_per_scan() - 70.0).abs() < 1e-9);
    }

    #[test]
    fn scans_are_paced_through_the_window() {
        let mut a = Allowance::new(&PACE, 10 * HOUR);
        // A new credential starts afresh: one scan at once, not a burst that would overspend
        // the hour GitHub starts at its first call.
        let mut started = take_all(&mut a, 10 * HOUR);
        assert_eq!(started, 1);
        let wait = a
            .take(&PACE, Lane::Scheduled, 10 * HOUR)
            .unwrap_err()
            .unwrap();
        assert_eq!(wait.as_millis(), 50_400, "an hour over 71.4 scans");
        // Over the rest of the hour, one scan every interval: the budget, no more.
        let mut now = 10 * HOUR + 1000;
        while now < 11 * HOUR {
            started += take_all(&mut a, now);
            now += 1000;
        }
        assert!((71..=72).contains(&started), "{started}");
    }

    #[test]
    fn a_late_start_loses_no_quota_and_idle_time_is_saved_up_only_to_a_twentieth() {
        let mut a = Allowance::new(&PACE, HOUR);
        a.take(&PACE, Lane::Scheduled, HOUR).unwrap();
        // Every start 10 s after its slot (a fifth of the interval): ten hours still start
        // ten hours' budget.
        let mut started = 1;
        while a.next_ms < 11 * HOUR {
            a.take(&PACE, Lane::Scheduled, a.next_ms + 10_000).unwrap();
            started += 1;
        }
        assert!(started >= 10 * 71, "{started}");
        // Idle for most of an hour, three minutes' worth starts at once (and one), not the
        // hour's.
        let interval = a.interval_ms(&PACE);
        let catch_up = (HOUR as f64 * CATCH_UP) as i64;
        let idle_from = a.next_ms;
        assert_eq!(
            i64::from(take_all(&mut a, idle_from + HOUR - 1)),
            catch_up / interval + 1
        );
        // Idle for an hour or more, GitHub's hour restarts at the next call: one scan, and
        // the schedule goes on from it.
        let idle_from = a.next_ms;
        assert_eq!(take_all(&mut a, idle_from + HOUR), 1);
        assert_eq!(a.next_ms, idle_from + HOUR + a.interval_ms(&PACE));
    }

    #[test]
    fn a_replica_held_up_for_seconds_in_a_short_window_still_spends_the_budget() {
        // An accelerated minute: a scan every 0.84 s, and the replica that asks is held up for
        // 2 s (a busy node) in the middle of each window, then asks every 0.1 s again.
        let pace = Pace {
            window_ms: 60_000,
            ..PACE
        };
        let mut a = Allowance::new(&pace, 0);
        let mut now = 0;
        for window in 0..10 {
            let budget = a.scans_per_window;
            let mut started = 0;
            while now < (window + 1) * 60_000 {
                if now % 60_000 == 30_000 {
                    now += 2_000;
                }
                while a.take(&pace, Lane::Scheduled, now).is_ok() {
                    started += 1;
                }
                now += 100;
            }
            assert!(
                f64::from(started) >= budget.floor() - 1.0,
                "window {window}: {started} scans on a budget of {budget:.1}"
            );
        }
    }

    #[test]
    fn until_its_first_limit_a_credential_climbs_faster() {
        let mut a = Allowance::new(&PACE, HOUR);
        let ceiling = PACE.ceiling();
        a.started = 71;
        a.take(&PACE, Lane::Scheduled, 2 * HOUR).unwrap();
        assert!((a.scans_per_window - ceiling * (1.0 + PROBE)).abs() < 1e-9);
        a.learn(&PACE, Signal::Waited, 2 * HOUR + 10);
        assert!(a.seen_limit);
        let cut = a.scans_per_window;
        a.take(&PACE, Lane::Scheduled, 3 * HOUR).unwrap();
        a.started = 71;
        a.take(&PACE, Lane::Scheduled, 4 * HOUR).unwrap();
        assert!((a.scans_per_window - (cut + ceiling * GROW)).abs() < 1e-9);
        // A record written before `seen_limit` existed reads as one still climbing.
        let mut json = serde_json::to_value(Allowance::new(&PACE, HOUR)).unwrap();
        json.as_object_mut().unwrap().remove("seen_limit");
        let old: Allowance = serde_json::from_value(json).unwrap();
        assert!(!old.seen_limit);
    }

    #[test]
    fn manual_requests_find_room_scheduled_work_left() {
        let mut a = Allowance::new(&PACE, HOUR);
        take_all(&mut a, HOUR);
        assert!(a.take(&PACE, Lane::Scheduled, HOUR).is_err());
        let mut manual = 0;
        while a.take(&PACE, Lane::Manual, HOUR).is_ok() {
            manual += 1;
        }
        // 5% of the hour is three minutes: three or four scans at ~50 s each, as the
        // scheduled slots left them.
        assert!((3..=4).contains(&manual), "{manual}");
    }

    #[test]
    fn a_limit_shrinks_the_budget_once_per_window_and_full_windows_grow_it_back() {
        let mut a = Allowance::new(&PACE, 5 * HOUR);
        let ceiling = PACE.ceiling();
        a.learn(&PACE, Signal::Waited, 5 * HOUR + 10);
        a.learn(&PACE, Signal::Waited, 5 * HOUR + 20);
        assert!((a.scans_per_window - ceiling * SHRINK).abs() < 1e-9);
        // A window whose budget went unspent says nothing: no growth.
        a.take(&PACE, Lane::Scheduled, 6 * HOUR).unwrap();
        a.take(&PACE, Lane::Scheduled, 7 * HOUR).unwrap();
        assert!((a.scans_per_window - ceiling * SHRINK).abs() < 1e-9);
        // A spent window without a limit grows it by 1% of the ceiling, up to the headroom.
        a.started = 70;
        a.take(&PACE, Lane::Scheduled, 8 * HOUR).unwrap();
        assert!((a.scans_per_window - ceiling * (SHRINK + GROW)).abs() < 1e-9);
        for w in 9..60 {
            a.started = 90;
            a.take(&PACE, Lane::Scheduled, w * HOUR).unwrap();
        }
        assert_eq!(a.scans_per_window, PACE.most());
        assert!((PACE.most() - ceiling * 1.25).abs() < 1e-9);
    }

    #[test]
    fn a_rate_limit_failure_rests_the_credential() {
        let mut a = Allowance::new(&PACE, HOUR);
        a.learn(&PACE, Signal::RateLimited, HOUR);
        let wait = a.take(&PACE, Lane::Scheduled, HOUR).unwrap_err().unwrap();
        assert_eq!(wait, Duration::from_secs(900));
    }

    #[test]
    fn a_revoked_credential_never_has_room() {
        let mut a = Allowance::new(&PACE, HOUR);
        a.learn(&PACE, Signal::Revoked, HOUR);
        assert_eq!(a.take(&PACE, Lane::Manual, 100 * HOUR), Err(None));
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("Bad credentials"), "{json}");
    }

    #[test]
    fn a_given_back_scan_is_room_again() {
        let mut a = Allowance::new(&PACE, HOUR);
        take_all(&mut a, HOUR);
        a.give_back(&PACE);
        assert_eq!(take_all(&mut a, HOUR), 1);
    }

    #[test]
    fn a_lowered_ceiling_caps_a_learned_budget() {
        let mut a = Allowance::new(&PACE, HOUR);
        let costlier = Pace {
            scan_cost: 100,
            ..PACE
        };
        a.take(&costlier, Lane::Scheduled, HOUR).unwrap();
        assert_eq!(a.scans_per_window, 50.0 * HEADROOM);
    }

    #[test]
    fn app_keys_become_bucket_keys_no_secret_key_can_be() {
        assert_eq!(bucket_key("app:42"), "app=42");
        assert_eq!(bucket_key("token-0"), "token-0");
        assert_eq!(credential_of("app=42"), "app:42");
    }
}
