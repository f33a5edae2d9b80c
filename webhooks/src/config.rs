//! The webhooks service's command line; every flag has an environment variable.

use std::time::Duration;

use fleet_runtime::config::{DbArgs, HttpArgs, NatsArgs};
use fleet_runtime::outbound::OutboundArgs;
use fleet_runtime::telemetry::LogArgs;
use fleet_runtime::webhook::SigningKeyArgs;

use crate::outcome::Retries;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "webhooks",
    version,
    about = "scorecard-fleet webhooks: score changes to subscribers, signed, at least once"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
    #[command(flatten)]
    pub outbound: OutboundArgs,

    /// Deliveries this replica sends at once, all endpoints together
    #[arg(long, env = "WEBHOOKS_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,

    /// Deliveries this replica sends at once to one endpoint (scheme, host and port); more wait in the stream, so a slow endpoint holds no more than this many of the slots
    #[arg(long, env = "WEBHOOKS_PER_ENDPOINT", default_value_t = 2)]
    pub per_endpoint: usize,

    /// Seconds a connection to an endpoint may take
    #[arg(long, env = "WEBHOOKS_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub connect_timeout_secs: u64,

    /// Seconds a whole delivery (connect, send, status and the capped body) may take; must fit well inside the consumer's 60 s ack wait
    #[arg(long, env = "WEBHOOKS_TIMEOUT_SECS", default_value_t = 15)]
    pub timeout_secs: u64,

    /// Seconds before the first retry of a failed delivery; each later retry waits as long as the delivery has been failing, up to WEBHOOKS_RETRY_CAP_SECS
    #[arg(long, env = "WEBHOOKS_RETRY_BASE_SECS", default_value_t = 10)]
    pub retry_base_secs: u64,

    /// Longest wait between two attempts of a delivery, in seconds
    #[arg(long, env = "WEBHOOKS_RETRY_CAP_SECS", default_value_t = 3600)]
    pub retry_cap_secs: u64,

    /// Seconds a delivery is retried, from when it was queued; then it is dead-lettered (`producer replay --class webhook` sends it again) and its subscription marked failing (at most 6 days: the stream keeps a delivery 7)
    #[arg(long, env = "WEBHOOKS_RETRY_WINDOW_SECS", default_value_t = 86_400)]
    pub retry_window_secs: u64,

    /// Days the delivery log (every attempt, for the subscription's owner) is kept
    #[arg(long, env = "WEBHOOKS_LOG_DAYS", default_value_t = 30)]
    pub log_days: u32,

    /// The api's public base URL, for the links in a delivery's body
    #[arg(long, env = "API_PUBLIC_URL", default_value = "http://localhost:8080")]
    pub api_public_url: String,
}

/// Longest retry window accepted: the webhooks stream keeps a delivery a week, so a window
/// past six days could see one expire unsent.
const MAX_WINDOW: Duration = Duration::from_secs(6 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error(
        "WEBHOOKS_CONNECT_TIMEOUT_SECS + WEBHOOKS_TIMEOUT_SECS ({0} s) must stay under half the \
         consumer's ack wait ({1} s), or a slow delivery would be handed to another replica \
         while it is still being sent"
    )]
    Timeout(u64, u64),
    #[error("WEBHOOKS_RETRY_WINDOW_SECS is over {} days: the stream keeps a delivery 7", MAX_WINDOW.as_secs() / 86_400)]
    Window,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("API_PUBLIC_URL {0:?} is not an http(s) URL")]
    PublicUrl(String),
}

impl Cli {
    /// Refuses settings that cannot work together.
    pub fn validate(&self) -> Result<(), SettingError> {
        let ack_wait = fleet_runtime::topology::WEBHOOKS_ACK_WAIT.as_secs();
        let request = self.connect_timeout_secs + self.timeout_secs;
        if request * 2 > ack_wait {
            return Err(SettingError::Timeout(request, ack_wait));
        }
        if self.retry_window() > MAX_WINDOW {
            return Err(SettingError::Window);
        }
        for (name, value) in [
            ("WEBHOOKS_MAX_IN_FLIGHT", self.max_in_flight as u64),
            ("WEBHOOKS_PER_ENDPOINT", self.per_endpoint as u64),
            ("WEBHOOKS_TIMEOUT_SECS", self.timeout_secs),
            ("WEBHOOKS_CONNECT_TIMEOUT_SECS", self.connect_timeout_secs),
            ("WEBHOOKS_RETRY_BASE_SECS", self.retry_base_secs),
        ] {
            if value == 0 {
                return Err(SettingError::Zero(name));
            }
        }
        match url::Url::parse(&self.api_public_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
            _ => Err(SettingError::PublicUrl(self.api_public_url.clone())),
        }
    }

    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.retry_window_secs)
    }

    pub fn retries(&self) -> Retries {
        Retries {
            base: Duration::from_secs(self.retry_base_secs),
            cap: Duration::from_secs(self.retry_cap_secs.max(self.retry_base_secs)),
            window: self.retry_window(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Cli {
        let mut all = vec!["webhooks", "--database-url", "postgres://x/y"];
        all.extend(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn the_defaults_work_together_and_a_request_longer_than_the_ack_wait_is_refused() {
        parse(&[]).validate().unwrap();
        assert!(matches!(
            parse(&["--timeout-secs", "40"]).validate(),
            Err(SettingError::Timeout(45, 60))
        ));
        assert!(matches!(
            parse(&["--retry-window-secs", "700000"]).validate(),
            Err(SettingError::Window)
        ));
        assert!(matches!(
            parse(&["--per-endpoint", "0"]).validate(),
            Err(SettingError::Zero("WEBHOOKS_PER_ENDPOINT"))
        ));
        assert!(matches!(
            parse(&["--api-public-url", "ftp://x"]).validate(),
            Err(SettingError::PublicUrl(_))
        ));
    }
}
