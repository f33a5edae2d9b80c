//! Connecting to NATS. Start-up waits (with capped, jittered backoff) for a server that is not
//! up yet instead of crash-looping, and logs only the redacted URL.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{NatsArgs, redact_url};
use crate::http::Readiness;

/// The readiness dependency of the NATS connection.
pub const NATS: &str = "nats";

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
            // A server that stops answering (partitioned, frozen) while its TCP connection
            // stays up is noticed after two missed pings: 20 s, not the default 4 minutes, so
            // the client moves to another server of the cluster.
            .ping_interval(std::time::Duration::from_secs(10))
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
            .connect(seeds(args.nats_url.expose()))
            .await
            .with_context(|| format!("connecting to NATS at {shown}"))
    };
    crate::retry::until_ready(&format!("NATS at {shown}"), shutdown, attempt).await
}

/// The seed URLs of a comma-separated list: the client tries them in turn and then learns the
/// rest of the cluster from the server it reached.
pub fn seeds(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// How often the connection's state is looked at for `/readyz`.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps `readiness` true to the NATS connection until `stop`: not ready while the client is
/// disconnected (it reconnects on its own; this only makes the outage visible).
pub fn watch_connection(client: async_nats::Client, readiness: Readiness, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut since: Option<std::time::Instant> = None;
        loop {
            match client.connection_state() {
                async_nats::connection::State::Connected => {
                    since = None;
                    readiness.recovered(NATS);
                }
                state => {
                    let since = *since.get_or_insert_with(std::time::Instant::now);
                    readiness.failing(NATS, format!("{state} for {}s", since.elapsed().as_secs()));
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_seed_list_is_split_and_trimmed() {
        assert_eq!(
            super::seeds("nats://a:4222, nats://b:4222,,nats://c:4222"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert_eq!(super::seeds("nats://a:4222"), ["nats://a:4222"]);
    }
}
