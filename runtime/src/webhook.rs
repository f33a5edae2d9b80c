//! What the api and the webhooks service share about webhooks: the master signing key, the
//! signing secret of each subscription derived from it, webhook ids, and the test ping.
//!
//! No secret is stored anywhere: a subscription's secret is HMAC-SHA256(master key, its id ‖
//! its random salt), recomputed when needed, so the table holds only the salt and a copy of
//! the database gives nobody a way to sign. Rotating the master key changes every secret.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use fleet_proto::v1::{WebhookDelivery, WebhookKind};
use uuid::Uuid;

use crate::config::Secret;

/// Shortest master key accepted: HMAC-SHA256's own key size, so the derived secrets are as
/// strong as the hash.
pub const MIN_KEY_BYTES: usize = 32;

/// Namespace of derived webhook ids: one event fanned out twice to one subscription is one id.
const WEBHOOK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7e6b_4f0c_2a1d_4c8e_9b35_51a0_0c0e_d1e5);

/// Where the master signing key comes from. Both the api (which shows a new subscription its
/// secret, once) and the webhooks service (which signs) must be given the same key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SigningKeyArgs {
    /// File holding the master webhook signing key (at least 32 bytes; surrounding whitespace is ignored): every subscription's secret is derived from it
    #[arg(long, env = "WEBHOOK_SIGNING_KEY_FILE")]
    pub webhook_signing_key_file: Option<PathBuf>,

    /// The master webhook signing key itself, when no file is mounted (the file is preferred). Never logged
    #[arg(long, env = "WEBHOOK_SIGNING_KEY", hide_env_values = true)]
    pub webhook_signing_key: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("reading the webhook signing key file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook signing key is {0} bytes: it needs at least {MIN_KEY_BYTES}")]
    Short(usize),
    #[error("set WEBHOOK_SIGNING_KEY_FILE or WEBHOOK_SIGNING_KEY, not both")]
    Both,
}

impl SigningKeyArgs {
    /// The key, if one is configured.
    pub fn load(&self) -> Result<Option<MasterKey>, SigningKeyError> {
        let text = match (&self.webhook_signing_key_file, &self.webhook_signing_key) {
            (Some(_), Some(_)) => return Err(SigningKeyError::Both),
            (None, None) => return Ok(None),
            (None, Some(key)) => key.expose().to_owned(),
            (Some(path), None) => {
                std::fs::read_to_string(path).map_err(|source| SigningKeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?
            }
        };
        MasterKey::new(text.trim().as_bytes().to_vec()).map(Some)
    }
}

/// The master signing key; `Debug` prints a placeholder.
#[derive(Clone)]
pub struct MasterKey(Vec<u8>);

impl MasterKey {
    pub fn new(bytes: Vec<u8>) -> Result<Self, SigningKeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(SigningKeyError::Short(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// The signing secret of subscription `id` with salt `salt`.
    pub fn subscription_secret(&self, id: Uuid, salt: &[u8]) -> SubscriptionSecret {
        let mut input = Vec::with_capacity(16 + salt.len());
        input.extend_from_slice(id.as_bytes());
        input.extend_from_slice(salt);
        SubscriptionSecret(hmac_sha256::HMAC::mac(&input, &self.0))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// One subscription's signing key; `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriptionSecret([u8; 32]);

impl SubscriptionSecret {
    /// The raw key the signature is computed with.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// As Standard Webhooks presents a secret (`whsec_<base64>`), for the one time its owner
    /// is shown it.
    pub fn whsec(&self) -> Secret {
        Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        ))
    }
}

impl fmt::Debug for SubscriptionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriptionSecret([redacted])")
    }
}

/// The webhook id of event `event_id` (its Nats-Msg-Id) delivered to `subscription`.
pub fn webhook_id(event_id: &str, subscription: Uuid) -> String {
    let id = Uuid::new_v5(
        &WEBHOOK_ID_NAMESPACE,
        format!("{event_id}/{subscription}").as_bytes(),
    );
    format!("msg_{}", id.simple())
}

/// A test delivery to `subscription`, as the api publishes it (a fresh id each time: two
/// pings are two deliveries).
pub fn ping(subscription: Uuid) -> WebhookDelivery {
    WebhookDelivery {
        webhook_id: format!("msg_{}", Uuid::now_v7().simple()),
        subscription_id: subscription.to_string(),
        kind: WebhookKind::Ping as i32,
        event: None,
        created_at: Some(fleet_proto::timestamp(chrono::Utc::now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    #[test]
    fn a_secret_depends_on_the_key_the_id_and_the_salt_and_prints_nowhere() {
        let id = Uuid::from_u128(1);
        let a = key().subscription_secret(id, b"salt");
        assert_eq!(
            a,
            key().subscription_secret(id, b"salt"),
            "derived, not random"
        );
        assert_ne!(a, key().subscription_secret(Uuid::from_u128(2), b"salt"));
        assert_ne!(a, key().subscription_secret(id, b"pepper"));
        let other = MasterKey::new(vec![7; 32]).unwrap();
        assert_ne!(a, other.subscription_secret(id, b"salt"));
        let whsec = a.whsec();
        assert!(whsec.expose().starts_with("whsec_"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&whsec.expose()["whsec_".len()..])
            .unwrap();
        assert_eq!(decoded, a.bytes());
        for shown in [
            format!("{a:?}"),
            format!("{:?}", key()),
            format!("{whsec:?}"),
        ] {
            assert!(shown.contains("redacted"), "{shown}");
        }
    }

    #[test]
    fn a_short_key_or_two_sources_are_refused() {
        assert!(matches!(
            MasterKey::new(vec![1; 31]),
            Err(SigningKeyError::Short(31))
        ));
        let both = SigningKeyArgs {
            webhook_signing_key_file: Some("/nonexistent".into()),
            webhook_signing_key: Some(Secret::new("x".repeat(40))),
        };
        assert!(matches!(both.load(), Err(SigningKeyError::Both)));
        assert!(SigningKeyArgs::default().load().unwrap().is_none());
        let env = SigningKeyArgs {
            webhook_signing_key: Some(Secret::new(format!("  {}\n", "k".repeat(32)))),
            ..Default::default()
        };
        assert!(env.load().unwrap().is_some(), "trimmed, 32 bytes");
    }

    #[test]
    fn a_webhook_id_is_stable_per_event_and_subscription() {
        let (s1, s2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let id = webhook_id("score-changed-w1", s1);
        assert_eq!(id, webhook_id("score-changed-w1", s1));
        assert_ne!(id, webhook_id("score-changed-w1", s2));
        assert_ne!(id, webhook_id("score-changed-w2", s1));
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        assert_ne!(ping(s1).webhook_id, ping(s1).webhook_id);
    }
}
