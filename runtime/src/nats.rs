//! Connecting to NATS. Start-up waits (with capped, jittered backoff) for a server that is not
//! up yet instead of crash-looping, and logs only the redacted URL.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{NatsArgs, redact_url};

/// Connects, retrying until it works or `shutdown` fires. `name` shows in `nats server report`.
pub async fn connect(
    args: &NatsArgs,
    name: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<async_nats::Client> {
    let shown = redact_url(args.nats_url.expose());
    let attempt = || async {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            // Reconnects after a successful start are the client's job, forever: the fleet is
            // useless without NATS, and each service keeps its in-flight state meanwhile.
            .max_reconnects(None)
            .event_callback(|event| async move {
                tracing::info!(%event, "nats connection event");
            });
        if let Some(path) = &args.nats_creds {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS credentials file {}", path.display()))?;
        }
        if let Some(token) = &args.nats_token {
            options = options.token(token.expose().to_owned());
        }
        options
            .connect(args.nats_url.expose())
            .await
            .with_context(|| format!("connecting to NATS at {shown}"))
    };
    crate::retry::until_ready(&format!("NATS at {shown}"), shutdown, attempt).await
}
