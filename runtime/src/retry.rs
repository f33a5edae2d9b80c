//! Every retry loop's pauses, as named policies, and waiting for a dependency at start-up:
//! attempts until one succeeds or shutdown is asked for, instead of a crash loop.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// Pauses that start at `first`, double up to `cap` and go on for ever, each jittered (every
/// pause, the first included) so replicas that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap }
    }

    pub fn builder(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.cap)
            .with_jitter()
            .without_max_times()
    }

    /// A fresh sequence of pauses; it never ends.
    pub fn pauses(self) -> ExponentialBackoff {
        self.builder().build()
    }
}

/// A dependency at start-up: a service is up within seconds of its dependency, and one that
/// is restarting is not hammered.
pub const START_UP: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// A worker's pull that failed: NATS is usually back within seconds.
pub const PULL: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// The Job watch reconnecting. Its cap is also how often errors keep coming during an
/// outage, which the watch uses to tell a quiet recovery from a continuing outage.
pub const JOB_WATCH: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
/// The sink's fetch and write: a batch held in memory is written as soon as PostgreSQL is back.
pub const SINK_WRITE: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// The producer's claim after a database error, up to its configured cap.
pub const fn producer_claim(cap: Duration) -> Backoff {
    Backoff::new(Duration::from_millis(250), cap)
}

/// Shutdown was asked for before the dependency was reached. Nothing was started, so this is
/// a clean stop, not a failure: [`crate::exit`] ends the process with success.
#[derive(Debug, thiserror::Error)]
#[error("shut down while waiting for {0}")]
pub struct StoppedWaiting(String);

/// Runs `attempt` until it succeeds; `what` names the dependency in logs and in the error
/// returned on shutdown (it must hold no secret).
pub async fn until_ready<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    while_transient(what, shutdown, attempt, |_| true).await
}

/// Like [`until_ready`], but an error `transient` does not accept is returned at once: a
/// setting that is wrong stays wrong, and retrying it only hides it in the logs.
pub async fn while_transient<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    attempt: F,
    transient: impl FnMut(&E) -> bool,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error> + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let retrying = attempt
        .retry(START_UP.builder())
        .when(transient)
        .notify(|e, after| tracing::warn!(error = %format!("{e:#}"), retry_in = ?after, "{what} not reachable"));
    tokio::select! {
        ready = retrying => ready.map_err(Into::into),
        () = shutdown.cancelled() => Err(StoppedWaiting(what.to_owned()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_until_ready() {
        let tries = AtomicU32::new(0);
        let got = until_ready("thing", &CancellationToken::new(), || async {
            if tries.fetch_add(1, Ordering::Relaxed) < 3 {
                anyhow::bail!("not yet")
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((got, tries.load(Ordering::Relaxed)), (7, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_error_is_returned_at_once() {
        let tries = AtomicU32::new(0);
        let err = while_transient(
            "thing",
            &CancellationToken::new(),
            || async {
                let n = tries.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(anyhow::Error::msg(if n == 0 {
                    "timed out"
                } else {
                    "mismatch"
                }))
            },
            |e| e.to_string() == "timed out",
        )
        .await
        .unwrap_err();
        assert_eq!(
            (err.to_string(), tries.load(Ordering::Relaxed)),
            ("mismatch".to_owned(), 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_on_shutdown() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let err = until_ready::<(), _, _>("PostgreSQL at db:5432", &shutdown, || async {
            anyhow::bail!("down")
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "shut down while waiting for PostgreSQL at db:5432"
        );
        assert!(err.is::<StoppedWaiting>());
    }
}
