//! The fleet-wide GitHub budget: what every worker replica may still start on each credential,
//! shared through a JetStream key-value bucket with compare-and-set (no service of its own).
//! The record and its rules are [`fleet_runtime::budget`]'s; here they meet NATS.
//!
//! A credential GitHub rejects ("Bad credentials") is marked revoked in the bucket: no replica
//! uses it until an operator replaces it and deletes its key (the runbook,
//! `docs/src/runbook.md`).

use std::time::Duration;

use async_nats::jetstream::kv;
use fleet_runtime::budget::{Allowance, Lane, Pace, Signal, bucket_key};
use tokio_util::sync::CancellationToken;

use crate::job::Credential;
use crate::metrics::{CredentialLabel, Metrics};
use crate::tokens::TokenPool;

/// How long a wait for room sleeps at most before looking again: other replicas give slots
/// back, and an operator may restore a credential.
const RECHECK: Duration = Duration::from_secs(5);
/// Compare-and-set attempts before a take starts over from fresh reads.
const CAS_ATTEMPTS: usize = 8;
/// How long a take whose every write lost to other replicas waits before it tries again.
const CONTENDED_PAUSE: Duration = Duration::from_millis(5);

/// Why a change to a credential's record was not written.
#[derive(Debug)]
enum Unwritten {
    Nats(String),
    /// Other replicas wrote first, every time.
    Contended,
}

impl std::fmt::Display for Unwritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unwritten::Nats(e) => f.write_str(e),
            Unwritten::Contended => f.write_str("other replicas kept changing it"),
        }
    }
}

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
    /// The quota of credential `key`.
    pub fn pace(&self, key: &str) -> Pace {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Pace {
            window_ms: ms(self.window).max(1),
            calls_per_window: match Credential::of(key) {
                Credential::App(_) => self.app_calls,
                Credential::Token(_) => self.token_calls,
            },
            scan_cost: self.scan_cost,
            rest_after_limit_ms: ms(self.rest_after_limit),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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

impl Lease {
    /// No credential: for a message that starts no scan, or one that re-attaches to the Job
    /// an earlier delivery started.
    pub fn none() -> Self {
        Self { key: None }
    }
}

impl Pool {
    /// A credential with room for a scan of `lane`, waiting until one has room; `None` once
    /// `shutdown` comes first.
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
                    Allowance::new(&self.settings.pace(key), now)
                });
                Ok((allowance, entry.revision))
            }
            Ok(Some(entry)) => Ok((
                Allowance::new(&self.settings.pace(key), now),
                entry.revision,
            )),
            Ok(None) => Ok((Allowance::new(&self.settings.pace(key), now), 0)),
            Err(e) => Err(format!("reading the budget of {key}: {e}")),
        }
    }

    /// Writes `allowance` if the entry is still at `revision`; `false` if another replica
    /// wrote first.
    async fn write(&self, key: &str, allowance: &Allowance, revision: u64) -> Result<bool, String> {
        let value = serde_json::to_vec(allowance).expect("an allowance serializes");
        // A create that found a key, or an update that found a newer revision: lost the race.
        let won = if revision == 0 {
            match self.store.create(bucket_key(key), value.into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        } else {
            match self
                .store
                .update(bucket_key(key), value.into(), revision)
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        }
        .map_err(|e| format!("writing the budget of {key}: {e}"))?;
        if won {
            self.metrics
                .budget_scans_per_window
                .get_or_create(&CredentialLabel {
                    credential: key.to_owned(),
                })
                .set(allowance.scans_per_window);
        }
        Ok(won)
    }

    /// Applies `change` to `key`'s entry with compare-and-set; what `change` returned, or why
    /// not: NATS failed, or other replicas kept writing first.
    async fn update<T>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut Allowance, i64) -> T,
    ) -> Result<T, Unwritten> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut allowance, revision) = self.read(key).await.map_err(Unwritten::Nats)?;
            let before = allowance.clone();
            let out = change(&mut allowance, now_ms());
            if allowance == before
                || self
                    .write(key, &allowance, revision)
                    .await
                    .map_err(Unwritten::Nats)?
            {
                return Ok(out);
            }
        }
        Err(Unwritten::Contended)
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
                    // Up to a tenth more, so replicas waiting on one credential do not all
                    // try it in the same millisecond.
                    let jitter = pause.mul_f64(fastrand::f64() / 10.0);
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(pause + jitter) => {}
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
                .update(key, |a, now| a.take(&self.settings.pace(key), lane, now))
                .await;
            match taken {
                Ok(Ok(())) => return Ok(key.clone()),
                Ok(Err(Some(wait))) => soonest = soonest.min(wait),
                Ok(Err(None)) => {}
                // Busy, not spent: look again at once.
                Err(Unwritten::Contended) => soonest = soonest.min(CONTENDED_PAUSE),
                Err(Unwritten::Nats(e)) => tracing::warn!(error = %e, "budget unwritable"),
            }
        }
        Err(soonest.max(Duration::from_millis(1)))
    }

    async fn give_back(&self, key: &str) {
        if let Err(e) = self
            .update(key, |a, _| a.give_back(&self.settings.pace(key)))
            .await
        {
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
            .update(key, |a, now| a.learn(&self.settings.pace(key), signal, now))
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

    #[test]
    fn tokens_and_installations_have_their_own_quota() {
        let s = Settings {
            window: Duration::from_secs(3600),
            token_calls: 5000,
            app_calls: 15000,
            scan_cost: 70,
            rest_after_limit: Duration::from_secs(900),
        };
        assert_eq!(s.pace("token-0").calls_per_window, 5000);
        assert_eq!(s.pace("app:42").calls_per_window, 15000);
        assert_eq!(s.pace("app:42").window_ms, 3_600_000);
    }
}
