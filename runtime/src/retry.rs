//! Waiting for a dependency at start-up: attempts with capped, jittered exponential backoff
//! until one succeeds or shutdown is asked for, instead of a crash loop.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// Longest pause between attempts: a service is up within seconds of its dependency, and a
/// dependency that is restarting is not hammered.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

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
        .retry(ExponentialBuilder::default().with_jitter().with_max_delay(BACKOFF_CAP).without_max_times())
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
