//! The fleet-wide GitHub budget: what every worker replica may still start on each credential,
//! shared through a JetStream key-value bucket with compare-and-set (no service of its own).
//!
//! Each credential is paced: a scan may start on it once every `window / scans_per_window`
//! (a generic cell rate algorithm: the entry holds the earliest time the next scan may start).
//! Pacing, not a count per window, because the fleet cannot see when GitHub's hour began for
//! a token: a steady rate spends about the same in any hour, wherever it starts.
//!
//! `scans_per_window` starts at the credential's calls per window ÷ `SCAN_COST_CALLS` and is
//! learned from outcomes: a scan that waited out or failed on a rate limit shrinks it by 5%
//! (once per window: one exhaustion shows in every scan it stalls), a window whose budget was
//! spent without one grows it back by 1% of the starting value, never above it. Slow growth and
//! a small cut keep the fleet near the limit (a cut of half would idle a tenth of the quota
//! after every unlucky window) while stalls stay rare; `dev/bench`'s quota bench measures it.
//!
//! A credential GitHub rejects ("Bad credentials") is marked revoked in the bucket: no replica
//! uses it until an operator replaces it and deletes its key (README's runbook).

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::job::Credential;
use crate::metrics::{CredentialLabel, Metrics};
use crate::tokens::TokenPool;

/// Which slots a scan takes: people's requests may dip into a reserve scheduled work leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Scheduled,
    Manual,
}

/// Share of a window's budget scheduled work leaves for manual requests: a request finds room
/// on a credential that scheduled work has spent.
const MANUAL_RESERVE: f64 = 0.05;
/// The learning rule's steps (see the module's documentation).
const SHRINK: f64 = 0.95;
const GROW: f64 = 0.01;
/// A window counts as spent when this share of its budget was started.
const SPENT: f64 = 0.9;
/// How long a wait for room sleeps at most before looking again: other replicas give slots
/// back, and an operator may restore a credential.
const RECHECK: Duration = Duration::from_secs(5);
/// Compare-and-set attempts before a take starts over from fresh reads.
const CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// GitHub's quota window (an hour; shorter in the local stack's accelerated tests).
    pub window: Duration,
    /// Calls a personal token may make per window.
    pub token_calls: u32,
    /// Calls a GitHub App installation may make per window.
    pub app_calls: u32,
    /// Estimated calls one scan makes.
    pub scan_cost: u32,
    /// How long a credential rests after a scan failed on a rate limit (it is dry now).
    pub rest_after_limit: Duration,
}

impl Settings {
    /// The most scans per window `key` is allowed: its quota over the estimated scan cost.
    pub fn ceiling(&self, key: &str) -> f64 {
        let calls = match Credential::of(key) {
            Credential::App(_) => self.app_calls,
            Credential::Token(_) => self.token_calls,
        };
        (f64::from(calls) / f64::from(self.scan_cost.max(1))).max(1.0)
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// One credential's entry in the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allowance {
    /// Unix ms before which no scheduled scan may start on it.
    pub next_ms: i64,
    /// Scans per window it is allowed now (learned).
    pub scans_per_window: f64,
    /// Start (unix ms) of the window `started` and `limited` count for.
    pub window_ms: i64,
    pub started: u32,
    pub limited: bool,
    /// Why GitHub rejected it; set, it is out of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
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

impl Allowance {
    pub fn new(settings: &Settings, key: &str, now_ms: i64) -> Self {
        Self {
            // Free since ever: a new credential ties with every other free one.
            next_ms: 0,
            scans_per_window: settings.ceiling(key),
            window_ms: now_ms - now_ms.rem_euclid(settings.window_ms()),
            started: 0,
            limited: false,
            revoked: None,
        }
    }

    fn interval_ms(&self, settings: &Settings) -> i64 {
        (settings.window_ms() as f64 / self.scans_per_window.max(1.0)).ceil() as i64
    }

    /// Moves to the window `now_ms` is in, learning from the one that ended.
    fn roll(&mut self, settings: &Settings, key: &str, now_ms: i64) {
        let ceiling = settings.ceiling(key);
        self.scans_per_window = self.scans_per_window.clamp(1.0, ceiling);
        let window = now_ms - now_ms.rem_euclid(settings.window_ms());
        if window <= self.window_ms {
            return;
        }
        if !self.limited && f64::from(self.started) >= SPENT * self.scans_per_window.floor() {
            self.scans_per_window = (self.scans_per_window + GROW * ceiling).min(ceiling);
        }
        self.window_ms = window;
        self.started = 0;
        self.limited = false;
    }

    /// Starts a scan on it if it has room for `lane`; otherwise how long until it has.
    pub fn take(
        &mut self,
        settings: &Settings,
        key: &str,
        lane: Lane,
        now_ms: i64,
    ) -> Result<(), Option<Duration>> {
        if self.revoked.is_some() {
            return Err(None);
        }
        self.roll(settings, key, now_ms);
        let ahead = self.next_ms - now_ms - self.tolerance_ms(settings, lane);
        if ahead > 0 {
            return Err(Some(Duration::from_millis(ahead.unsigned_abs())));
        }
        self.next_ms = self.next_ms.max(now_ms) + self.interval_ms(settings);
        self.started += 1;
        Ok(())
    }

    fn tolerance_ms(&self, settings: &Settings, lane: Lane) -> i64 {
        match lane {
            Lane::Scheduled => 0,
            Lane::Manual => (settings.window_ms() as f64 * MANUAL_RESERVE) as i64,
        }
    }

    /// Gives back a scan taken but not started (its message needed no scan).
    pub fn give_back(&mut self, settings: &Settings) {
        self.next_ms -= self.interval_ms(settings);
        self.started = self.started.saturating_sub(1);
    }

    /// Learns from what a scan on it said.
    pub fn learn(&mut self, settings: &Settings, key: &str, signal: Signal, now_ms: i64) {
        match signal {
            Signal::Revoked => {
                self.revoked = Some("GitHub answered \"Bad credentials\"".to_owned());
            }
            Signal::Waited | Signal::RateLimited => {
                self.roll(settings, key, now_ms);
                if !self.limited {
                    self.scans_per_window = (self.scans_per_window * SHRINK).max(1.0);
                    self.limited = true;
                }
                if signal == Signal::RateLimited {
                    let rest = i64::try_from(settings.rest_after_limit.as_millis()).unwrap_or(0);
                    self.next_ms = self.next_ms.max(now_ms + rest);
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The bucket key of a credential: `app:<id>` becomes `app=<id>` (key-value keys take no `:`,
/// and a Secret key no `=`, so the two never meet).
pub fn bucket_key(key: &str) -> String {
    key.replace(':', "=")
}

/// The credentials of a fleet and the rule that hands them out.
pub enum Pool {
    /// The fleet-wide budget (the default).
    Budget(Box<Budget>),
    /// Each replica on its own: round-robin, a rest after a rate limit (the baseline).
    RoundRobin(TokenPool),
    /// The process runner: scorecard uses its own `GITHUB_AUTH_TOKEN`.
    Unmanaged,
}

/// A credential taken for a scan: [`Pool::give_back`] it if the scan does not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: Option<String>,
}

impl Pool {
    /// A credential with room for a scan of `lane`, waiting (no message held) until one has
    /// room; `None` once `shutdown` comes first.
    pub async fn take(&self, lane: Lane, shutdown: &CancellationToken) -> Option<Lease> {
        match self {
            Pool::Budget(budget) => budget
                .take(lane, shutdown)
                .await
                .map(|key| Lease { key: Some(key) }),
            Pool::RoundRobin(tokens) => Some(Lease {
                key: Some(tokens.pick()),
            }),
            Pool::Unmanaged => Some(Lease { key: None }),
        }
    }

    pub async fn give_back(&self, lease: &Lease) {
        if let (Pool::Budget(budget), Some(key)) = (self, &lease.key) {
            budget.give_back(key).await;
        }
    }

    /// What a finished scan on `key` said about its quota.
    pub async fn learn(&self, key: &str, signal: Signal) {
        match self {
            Pool::Budget(budget) => budget.learn(key, signal).await,
            Pool::RoundRobin(tokens) if signal == Signal::RateLimited => tokens.cool(key),
            _ => {}
        }
    }
}

/// The shared budget of the credentials `keys`.
pub struct Budget {
    store: kv::Store,
    keys: Vec<String>,
    settings: Settings,
    metrics: Metrics,
}

impl Budget {
    pub fn new(store: kv::Store, keys: Vec<String>, settings: Settings, metrics: Metrics) -> Self {
        Self {
            store,
            keys,
            settings,
            metrics,
        }
    }

    /// Each credential's entry with its revision (0: no entry yet).
    async fn read(&self, key: &str) -> Result<(Allowance, u64), String> {
        let now = now_ms();
        match self.store.entry(bucket_key(key)).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                let allowance = serde_json::from_slice(&entry.value).unwrap_or_else(|e| {
                    tracing::warn!(credential = key, error = %e, "unreadable budget entry; starting it afresh");
                    Allowance::new(&self.settings, key, now)
                });
                Ok((allowance, entry.revision))
            }
            Ok(Some(entry)) => Ok((Allowance::new(&self.settings, key, now), entry.revision)),
            Ok(None) => Ok((Allowance::new(&self.settings, key, now), 0)),
            Err(e) => Err(format!("reading the budget of {key}: {e}")),
        }
    }

    /// Writes `allowance` if the entry is still at `revision`; `false` if another replica
    /// wrote first.
    async fn write(&self, key: &str, allowance: &Allowance, revision: u64) -> Result<bool, String> {
        let value = serde_json::to_vec(allowance).expect("an allowance serializes");
        let written = if revision == 0 {
            self.store
                .create(bucket_key(key), value.into())
                .await
                .map_err(|e| e.to_string())
        } else {
            self.store
                .update(bucket_key(key), value.into(), revision)
                .await
                .map_err(|e| e.to_string())
        };
        match written {
            Ok(_) => {
                self.metrics
                    .budget_scans_per_window
                    .get_or_create(&CredentialLabel {
                        credential: key.to_owned(),
                    })
                    .set(allowance.scans_per_window);
                Ok(true)
            }
            // A create that found a key, or an update that found a newer revision.
            Err(e) if e.contains("wrong last sequence") || e.contains("already exists") => {
                Ok(false)
            }
            Err(e) => Err(format!("writing the budget of {key}: {e}")),
        }
    }

    /// Applies `change` to `key`'s entry with compare-and-set; what `change` returned, or an
    /// error once NATS keeps failing or other replicas keep winning.
    async fn update<T>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut Allowance, i64) -> T,
    ) -> Result<T, String> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut allowance, revision) = self.read(key).await?;
            let before = allowance.clone();
            let out = change(&mut allowance, now_ms());
            if allowance == before || self.write(key, &allowance, revision).await? {
                return Ok(out);
            }
        }
        Err(format!(
            "the budget of {key} kept changing under {CAS_ATTEMPTS} attempts"
        ))
    }

    async fn take(&self, lane: Lane, shutdown: &CancellationToken) -> Option<String> {
        let mut waited = false;
        loop {
            match self.try_take(lane).await {
                Ok(key) => return Some(key),
                Err(pause) => {
                    if !waited {
                        self.metrics.budget_waits.inc();
                        waited = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// One round over the credentials, the soonest free and least spent this window first (so
    /// all are spent evenly): the key taken, or how long to wait.
    async fn try_take(&self, lane: Lane) -> Result<String, Duration> {
        let now = now_ms();
        let mut entries = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            match self.read(key).await {
                Ok((allowance, _)) if allowance.revoked.is_none() => {
                    let spent = f64::from(allowance.started) / allowance.scans_per_window.max(1.0);
                    entries.push((allowance.next_ms.max(now), spent, key));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "budget unreadable"),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut soonest = RECHECK;
        for (_, _, key) in entries {
            let taken = self
                .update(key, |a, now| a.take(&self.settings, key, lane, now))
                .await;
            match taken {
                Ok(Ok(())) => return Ok(key.clone()),
                Ok(Err(Some(wait))) => soonest = soonest.min(wait),
                Ok(Err(None)) => {}
                Err(e) => tracing::warn!(error = %e, "budget unwritable"),
            }
        }
        Err(soonest.max(Duration::from_millis(10)))
    }

    async fn give_back(&self, key: &str) {
        if let Err(e) = self.update(key, |a, _| a.give_back(&self.settings)).await {
            tracing::warn!(error = %e, "could not give a scan back to the budget");
        }
    }

    async fn learn(&self, key: &str, signal: Signal) {
        if !self.keys.iter().any(|k| k == key) {
            return;
        }
        let label = CredentialLabel {
            credential: key.to_owned(),
        };
        match signal {
            Signal::Revoked => {
                self.metrics
                    .credentials_revoked
                    .get_or_create(&label)
                    .set(1);
                tracing::error!(
                    credential = key,
                    "GitHub rejected this credential (Bad credentials): it is out of the pool \
                     for every worker until it is replaced and its budget key deleted"
                );
            }
            Signal::Waited => {
                self.metrics.scans_stalled.get_or_create(&label).inc();
                tracing::warn!(
                    credential = key,
                    "a scan waited out this credential's rate limit; its budget shrinks"
                );
            }
            Signal::RateLimited => {
                tracing::warn!(credential = key, rest = ?self.settings.rest_after_limit, "a scan failed on this credential's rate limit; it rests and its budget shrinks");
            }
        }
        if let Err(e) = self
            .update(key, |a, now| a.learn(&self.settings, key, signal, now))
            .await
        {
            tracing::warn!(error = %e, "could not record what a scan said about its credential");
        }
    }

    /// Every credential's entry, for `/metrics` at start-up and for tests.
    pub async fn snapshot(&self) -> Result<Vec<(String, Allowance)>, String> {
        let mut out = Vec::new();
        for key in &self.keys {
            let (allowance, _) = self.read(key).await?;
            if allowance.revoked.is_some() {
                self.metrics
                    .credentials_revoked
                    .get_or_create(&CredentialLabel {
                        credential: key.clone(),
                    })
                    .set(1);
            }
            out.push((key.clone(), allowance));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn settings() -> Settings {
        Settings {
            window: Duration::from_secs(3600),
            token_calls: 5000,
            app_calls: 15000,
            scan_cost: 70,
            rest_after_limit: Duration::from_secs(900),
        }
    }

    /// Takes scheduled scans at `now` until it has no room; how many it took.
    fn take_all(a: &mut Allowance, now: i64) -> u32 {
        let mut n = 0;
        while a.take(&settings(), "token", Lane::Scheduled, now).is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn the_ceiling_is_the_quota_over_the_scan_cost() {
        assert_eq!(settings().ceiling("token-0").floor(), 71.0);
        assert_eq!(settings().ceiling("app:42").floor(), 214.0);
    }

    #[test]
    fn scans_are_paced_through_the_window() {
        let s = settings();
        let mut a = Allowance::new(&s, "token", 10 * HOUR);
        assert_eq!(take_all(&mut a, 10 * HOUR), 1);
        let wait = a
            .take(&s, "token", Lane::Scheduled, 10 * HOUR)
            .unwrap_err()
            .unwrap();
        assert_eq!(wait.as_millis(), 50_400, "an hour over 71.4 scans");
        // Over an hour, one scan every interval: the budget, no more.
        let mut started = 0;
        let mut now = 10 * HOUR;
        while now < 11 * HOUR {
            started += take_all(&mut a, now);
            now += 1000;
        }
        assert!((70..=72).contains(&started), "{started}");
    }

    #[test]
    fn manual_requests_find_room_scheduled_work_left() {
        let s = settings();
        let mut a = Allowance::new(&s, "token", HOUR);
        take_all(&mut a, HOUR);
        assert!(a.take(&s, "token", Lane::Scheduled, HOUR).is_err());
        let mut manual = 0;
        while a.take(&s, "token", Lane::Manual, HOUR).is_ok() {
            manual += 1;
        }
        // 5% of the hour is three minutes: three or four scans at ~51 s each.
        assert!((3..=4).contains(&manual), "{manual}");
    }

    #[test]
    fn a_limit_shrinks_the_budget_once_per_window_and_full_windows_grow_it_back() {
        let s = settings();
        let mut a = Allowance::new(&s, "token", 5 * HOUR);
        let ceiling = s.ceiling("token");
        a.learn(&s, "token", Signal::Waited, 5 * HOUR + 10);
        a.learn(&s, "token", Signal::Waited, 5 * HOUR + 20);
        assert!((a.scans_per_window - ceiling * SHRINK).abs() < 1e-9);
        // A window whose budget went unspent says nothing: no growth.
        a.take(&s, "token", Lane::Scheduled, 6 * HOUR).unwrap();
        a.take(&s, "token", Lane::Scheduled, 7 * HOUR).unwrap();
        assert!((a.scans_per_window - ceiling * SHRINK).abs() < 1e-9);
        // A spent window without a limit grows it by 1% of the ceiling, never above it.
        a.started = 70;
        a.take(&s, "token", Lane::Scheduled, 8 * HOUR).unwrap();
        assert!((a.scans_per_window - ceiling * (SHRINK + GROW)).abs() < 1e-9);
        for w in 9..20 {
            a.started = 80;
            a.take(&s, "token", Lane::Scheduled, w * HOUR).unwrap();
        }
        assert_eq!(a.scans_per_window, ceiling);
    }

    #[test]
    fn a_rate_limit_failure_rests_the_credential() {
        let s = settings();
        let mut a = Allowance::new(&s, "token", HOUR);
        a.learn(&s, "token", Signal::RateLimited, HOUR);
        let wait = a
            .take(&s, "token", Lane::Scheduled, HOUR)
            .unwrap_err()
            .unwrap();
        assert_eq!(wait, Duration::from_secs(900));
    }

    #[test]
    fn a_revoked_credential_never_has_room() {
        let s = settings();
        let mut a = Allowance::new(&s, "token", HOUR);
        a.learn(&s, "token", Signal::Revoked, HOUR);
        assert_eq!(a.take(&s, "token", Lane::Manual, 100 * HOUR), Err(None));
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("Bad credentials"), "{json}");
    }

    #[test]
    fn a_given_back_scan_is_room_again() {
        let s = settings();
        let mut a = Allowance::new(&s, "token", HOUR);
        take_all(&mut a, HOUR);
        a.give_back(&s);
        assert_eq!(take_all(&mut a, HOUR), 1);
    }

    #[test]
    fn a_lowered_ceiling_caps_a_learned_budget() {
        let mut s = settings();
        let mut a = Allowance::new(&s, "token", HOUR);
        s.scan_cost = 100;
        a.take(&s, "token", Lane::Scheduled, HOUR).unwrap();
        assert_eq!(a.scans_per_window, 50.0);
    }

    #[test]
    fn app_keys_become_bucket_keys_no_secret_key_can_be() {
        assert_eq!(bucket_key("app:42"), "app=42");
        assert_eq!(bucket_key("token-0"), "token-0");
    }
}
