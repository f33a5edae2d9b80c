//! How a binary ends. A user's error (a bad flag value, a file that is not text, an unmigrated
//! database) prints as one message with its causes, never a backtrace: those are for bugs, and
//! a panic still prints one. A shutdown asked for while a dependency was still out of reach is a
//! clean stop: a rolling deploy or scale-in is not a crash.

use std::process::ExitCode;

use crate::retry::StoppedWaiting;

/// The process's exit status for what `main` ran.
pub fn status(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.chain().any(|cause| cause.is::<StoppedWaiting>()) => {
            tracing::info!("{e:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[tokio::test(start_paused = true)]
    async fn a_stop_while_waiting_is_a_success_even_under_context() {
        let shutdown = tokio_util::sync::CancellationToken::new();
        shutdown.cancel();
        let stopped = crate::retry::until_ready::<(), _, _>("NATS", &shutdown, || async {
            anyhow::bail!("down")
        })
        .await
        .context("starting the worker");
        assert_eq!(status(stopped), ExitCode::SUCCESS);
        assert_eq!(status(Err(anyhow::anyhow!("bad flag"))), ExitCode::FAILURE);
        assert_eq!(status(Ok(())), ExitCode::SUCCESS);
    }
}
