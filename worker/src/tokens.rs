//! Round-robin over the credential keys (tokens and App installations, as
//! [`crate::job::Credential`] keys); a credential whose scan hit a rate limit cools down
//! before it is handed out again. The view is per worker process: each replica learns of a
//! rate limit only when one of its own scans meets it. `CREDENTIAL_BUDGET=off`, the budget's
//! baseline (see [`crate::budget`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenPool {
    keys: Vec<String>,
    next: AtomicUsize,
    cooldown: Duration,
    cooling: Mutex<HashMap<String, Instant>>,
}

impl TokenPool {
    /// `keys` must not be empty (the config parser ensures it).
    pub fn new(keys: Vec<String>, cooldown: Duration) -> Self {
        assert!(!keys.is_empty(), "a token pool needs at least one key");
        Self {
            keys,
            next: AtomicUsize::new(0),
            cooldown,
            cooling: Mutex::new(HashMap::new()),
        }
    }

    /// The next key not cooling down; when all are, the one that recovers first.
    pub fn pick(&self) -> String {
        self.pick_at(Instant::now())
    }

    fn pick_at(&self, now: Instant) -> String {
        let mut cooling = self.cooling.lock().expect("token pool lock");
        cooling.retain(|_, until| *until > now);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.keys.len() {
            let key = &self.keys[(start + i) % self.keys.len()];
            if !cooling.contains_key(key) {
                return key.clone();
            }
        }
        cooling
            .iter()
            .min_by_key(|(_, until)| **until)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| self.keys[start % self.keys.len()].clone())
    }

    /// `key` met a rate limit: skip it for the cooldown.
    pub fn cool(&self, key: &str) {
        self.cool_at(key, Instant::now());
    }

    fn cool_at(&self, key: &str, now: Instant) {
        if self.keys.iter().any(|k| k == key) {
            tracing::warn!(token_key = key, cooldown = ?self.cooldown, "token hit a rate limit; cooling it down");
            self.cooling
                .lock()
                .expect("token pool lock")
                .insert(key.to_owned(), now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> TokenPool {
        TokenPool::new(
            vec!["a".into(), "b".into(), "c".into()],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn round_robin() {
        let p = pool();
        let picks: Vec<String> = (0..6).map(|_| p.pick()).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_rate_limited_key_cools_down_then_returns() {
        let p = pool();
        let t = Instant::now();
        p.cool_at("b", t);
        let picks: Vec<String> = (0..4).map(|_| p.pick_at(t)).collect();
        assert!(!picks.contains(&"b".to_owned()), "{picks:?}");
        let later = t + Duration::from_secs(61);
        let picks: Vec<String> = (0..3).map(|_| p.pick_at(later)).collect();
        assert!(picks.contains(&"b".to_owned()), "{picks:?}");
    }

    #[test]
    fn when_all_cool_the_first_to_recover_is_used() {
        let p = pool();
        let t = Instant::now();
        p.cool_at("a", t + Duration::from_secs(5));
        p.cool_at("b", t);
        p.cool_at("c", t + Duration::from_secs(9));
        assert_eq!(p.pick_at(t), "b");
        p.cool_at("unknown", t);
        assert_eq!(p.cooling.lock().unwrap().len(), 3);
    }
}
