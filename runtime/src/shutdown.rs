//! Turns SIGTERM/SIGINT into a cancellation every task watches. The first signal asks for a
//! drain; a second one means the operator is done waiting, so the process exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status for an aborted drain: 128 + SIGINT, what shells report for Ctrl-C.
const ABORT_STATUS: i32 = 130;

/// Runs `service` until SIGTERM or SIGINT asks it to drain (see [`on_signal`]).
pub async fn run_until_signal<Fut>(
    service: impl FnOnce(CancellationToken) -> Fut,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let shutdown = on_signal().map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
    service(shutdown).await
}

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested: draining (signal again to abort)");
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: aborting without draining");
        std::process::exit(ABORT_STATUS);
    });
    Ok(token)
}
