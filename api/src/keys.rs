//! Who may ask for scans: bearer keys from a mounted Secret, compared in constant time, each
//! with a request budget (a token bucket per key, per replica).
//!
//! The file holds `NAME:KEY` lines, each key at least 16 characters; only names reach logs and
//! metrics. It is read once at start-up, so a change needs a restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleet_runtime::config::Secret;
use subtle::ConstantTimeEq as _;

/// The scan-request keys, by the name that shows in logs and metrics (never the key).
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<(String, Secret)>,
}

impl Keys {
    /// Reads `NAME:KEY` lines; blank lines and `#` comments are skipped. The error names the
    /// line, never its content.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the API keys file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the API keys file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut keys: Vec<(String, Secret)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, key)) = line.split_once(':') else {
                anyhow::bail!("line {}: expected NAME:KEY", n + 1);
            };
            let (name, key) = (name.trim(), key.trim());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                anyhow::bail!(
                    "line {}: a key's name is letters, digits, '-', '_' or '.'",
                    n + 1
                );
            }
            if key.len() < 16 {
                anyhow::bail!("line {}: key {name:?} is shorter than 16 characters", n + 1);
            }
            if keys.iter().any(|(other, _)| other == name) {
                anyhow::bail!("line {}: key name {name:?} is used twice", n + 1);
            }
            keys.push((name.to_owned(), Secret::new(key)));
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The name of the key `presented` is, comparing with every key in constant time so the
    /// answer's timing says nothing about how close a guess was.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.expose().as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Per key: `per_minute` requests, refilled evenly, with a burst of the same size.
#[derive(Debug)]
pub struct RateLimit {
    /// The bucket's size: requests a burst may make.
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Past this many buckets, full ones are dropped: a full bucket is what a new one would be,
/// so keys seen once (client addresses) do not pile up.
const PRUNE_AT: usize = 10_000;

impl RateLimit {
    pub fn new(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_second: capacity / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_hour(per_hour: u32) -> Self {
        let capacity = f64::from(per_hour.max(1));
        Self {
            capacity,
            per_second: capacity / 3_600.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` has a request left, without taking it; else how long until it has.
    pub fn peek(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().expect("rate limit lock");
        let Some(bucket) = buckets.get(key) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        let tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }

    /// Takes one request from `key`'s budget, or says how long until one is there.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let (capacity, per_second) = (self.capacity, self.per_second);
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < capacity
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_and_checked() {
        let keys = Keys::parse("# ops\nci:0123456789abcdef0123\n\nalice: fedcba9876543210fedc \n")
            .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check("0123456789abcdef0123"), Some("ci"));
        assert_eq!(keys.check("fedcba9876543210fedc"), Some("alice"));
        assert_eq!(keys.check("0123456789abcdef012"), None);
        assert_eq!(keys.check(""), None);
    }

    #[test]
    fn bad_files_name_the_line_not_the_key() {
        for (text, says) in [
            ("just-a-key-without-name", "line 1: expected NAME:KEY"),
            ("a:short", "line 1: key \"a\" is shorter than 16 characters"),
            (
                "a:0123456789abcdef\na:0123456789abcdeg",
                "line 2: key name \"a\" is used twice",
            ),
            ("a b:0123456789abcdef", "line 1: a key's name"),
        ] {
            let e = Keys::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains("0123456789abcdef"), "the key leaked: {e}");
        }
    }

    #[test]
    fn the_budget_refills_evenly() {
        let limit = RateLimit::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            limit.take("ci", t0).unwrap();
        }
        let wait = limit.take("ci", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        // Other keys have budgets of their own.
        limit.take("alice", t0).unwrap();
        limit.take("ci", t0 + Duration::from_millis(1_001)).unwrap();
        assert!(limit.take("ci", t0 + Duration::from_millis(1_002)).is_err());
    }

    #[test]
    fn keys_seen_once_do_not_pile_up() {
        let limit = RateLimit::per_hour(10);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            limit.take(&format!("client-{i}"), t0).unwrap();
        }
        // An hour on, every bucket is full again and is dropped to make room.
        limit.take("late", t0 + Duration::from_secs(3_600)).unwrap();
        assert_eq!(limit.buckets.lock().unwrap().len(), 1);
        for _ in 0..9 {
            limit.take("late", t0 + Duration::from_secs(3_600)).unwrap();
        }
        let late = t0 + Duration::from_secs(3_600);
        let peeked = limit.peek("late", late).unwrap_err();
        let wait = limit.take("late", late).unwrap_err();
        assert!((wait.as_secs_f64() - 360.0).abs() < 1.0, "{wait:?}");
        assert_eq!(peeked, wait, "peeking takes nothing");
        assert!(limit.peek("never-seen", late).is_ok());
    }
}
