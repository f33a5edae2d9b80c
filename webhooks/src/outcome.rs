//! What each ending of a delivery attempt leads to, in one table: delivered, retried after a
//! delay, or dead-lettered. Pure, so the whole policy is tested without a network.
//!
//! Any 2xx is delivered. Any other answer, or none, is retried with the same webhook-id, each
//! wait as long as the delivery has been failing ([`Retries::delay`]), until the retry window
//! runs out; then it is dead. An address the outbound policy refuses is dead at once. A dead
//! delivery goes to the dead stream and marks its subscription failing until one succeeds.

use std::time::Duration;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered: its status, and the start of what it said (for the log).
    Status { code: u16, said: String },
    /// No answer: a timeout, a refused connection, a TLS or protocol error (the text is short
    /// and names no URL).
    Failed(String),
    /// The address is one a webhook must not reach (SSRF): no retry will change that soon.
    Refused(String),
}

/// What the service does with the delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Delivered,
    Retry { after: Duration },
    Dead { reason: String },
}

impl Ending {
    /// The delivery log's `outcome`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Ending::Delivered => "delivered",
            Ending::Retry { .. } => "retrying",
            Ending::Dead { .. } => "dead",
        }
    }
}

/// The retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Wait before the first retry.
    pub base: Duration,
    /// Longest wait between two attempts.
    pub cap: Duration,
    /// How long, from when the delivery was queued, it is retried at all.
    pub window: Duration,
}

impl Retries {
    /// The wait before the next attempt of a delivery failing for `age`: as long as it has
    /// been failing (so attempts come at about base, 2·base, 4·base...), within [base, cap],
    /// and never past the window's end (the last attempt is made at the end). Counted in
    /// time, not deliveries: a delivery handed back because its endpoint was busy has not
    /// failed.
    pub fn delay(&self, age: Duration) -> Duration {
        let exponential = age.clamp(self.base, self.cap.max(self.base));
        exponential.min(self.window.saturating_sub(age))
    }
}

/// The ending of `attempt` of a delivery queued `age` ago.
pub fn decide(attempt: &Attempt, age: Duration, retries: &Retries) -> Ending {
    match attempt {
        Attempt::Status { code, .. } if (200..300).contains(code) => Ending::Delivered,
        Attempt::Refused(why) => Ending::Dead {
            reason: format!("refused: {why}"),
        },
        failed if age >= retries.window => Ending::Dead {
            reason: format!(
                "no success within the retry window of {}s; last: {}",
                retries.window.as_secs(),
                describe(failed)
            ),
        },
        _ => Ending::Retry {
            after: retries.delay(age),
        },
    }
}

/// An attempt in a few words, for the log and the subscription's failing reason.
pub fn describe(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Status { code, said } if said.is_empty() => format!("HTTP {code}"),
        Attempt::Status { code, said } => format!("HTTP {code}: {said}"),
        Attempt::Failed(why) | Attempt::Refused(why) => why.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn status(code: u16) -> Attempt {
        Attempt::Status {
            code,
            said: String::new(),
        }
    }

    fn retries() -> Retries {
        Retries {
            base: S(10),
            cap: S(3600),
            window: S(86_400),
        }
    }

    #[test]
    fn each_ending_of_an_attempt_has_one_outcome() {
        let r = retries();
        for (attempt, age, want) in [
            (status(200), S(0), Ending::Delivered),
            (status(204), S(90_000), Ending::Delivered),
            (status(500), S(0), Ending::Retry { after: S(10) }),
            (status(301), S(0), Ending::Retry { after: S(10) }),
            (status(404), S(100), Ending::Retry { after: S(100) }),
            (
                Attempt::Failed("timed out".into()),
                S(20_000),
                Ending::Retry { after: S(3600) },
            ),
            (
                Attempt::Failed("timed out".into()),
                S(86_000),
                Ending::Retry { after: S(400) },
            ),
        ] {
            assert_eq!(decide(&attempt, age, &r), want, "{attempt:?} at {age:?}");
        }
        let dead = decide(&status(503), S(86_400), &r);
        assert!(
            matches!(&dead, Ending::Dead { reason } if reason.ends_with("last: HTTP 503")),
            "{dead:?}"
        );
        let refused = decide(&Attempt::Refused("127.0.0.1 is loopback".into()), S(0), &r);
        assert_eq!(
            refused,
            Ending::Dead {
                reason: "refused: 127.0.0.1 is loopback".into()
            }
        );
        assert_eq!(refused.outcome(), "dead");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_and_end_with_the_window() {
        let r = retries();
        let mut age = S(0);
        let mut attempts = 0;
        while let Ending::Retry { after } = decide(&status(500), age, &r) {
            assert!(
                after >= S(10) || age + after == r.window,
                "{after:?} at {age:?}"
            );
            assert!(after <= S(3600));
            age += after;
            attempts += 1;
        }
        assert_eq!(age, r.window, "the last attempt is at the window's end");
        // 10 s doubling to an hour (9 attempts), then hourly for the rest of the day.
        assert!((25..=35).contains(&attempts), "{attempts}");
    }
}
