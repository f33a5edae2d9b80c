//! The HTTP client deliveries go out through, and one POST's ending as an [`Attempt`].
//!
//! The client resolves names itself and drops every address the outbound policy refuses, so
//! the connection goes to an address that was checked (no window between a check and a
//! second lookup for a rebinding name to exploit). Literal addresses never reach a resolver:
//! [`Policy::check_url`] judges them before each send. No redirect is followed, no proxy
//! from the environment is used, and at most [`BODY_CAP`] bytes of an answer are read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleet_runtime::outbound::{Policy, Refused};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::outcome::Attempt;

/// Most bytes of an answer read: enough for any acknowledgement, too little for an endpoint
/// to make the service buffer a download.
pub const BODY_CAP: usize = 64 * 1024;

/// Most characters of an answer's body kept in the delivery log, for its owner to see why.
const LOGGED_BODY: usize = 200;

/// Resolves with the system resolver and keeps only the addresses the policy allows.
struct Filtering {
    policy: Arc<Policy>,
}

impl Resolve for Filtering {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_addr(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or(Refused::Unresolved(host));
                return Err(Box::new(why) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Sends deliveries under the outbound policy.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: Arc<Policy>,
}

impl Client {
    pub fn new(policy: Policy, connect: Duration, total: Duration) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(Filtering {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect)
            .timeout(total)
            .user_agent(concat!(
                "scorecard-fleet-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| anyhow::anyhow!("building the webhooks HTTP client: {e}"))?;
        Ok(Self { http, policy })
    }

    /// POSTs `body` to `url` with `headers`; never an error, always an ending.
    pub async fn post(&self, url: &str, headers: http::HeaderMap, body: Vec<u8>) -> Attempt {
        let url = match self.policy.check_url(url) {
            Ok(url) => url,
            Err(why) => return Attempt::Refused(why.to_string()),
        };
        let sent = self
            .http
            .post(url)
            .headers(headers)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return failed(e),
        };
        let status = response.status().as_u16();
        // Read (and drop) a capped part of the answer, so the connection can be reused and
        // a failing endpoint's reason shown; a slow body is bounded by the total timeout.
        let mut kept = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = BODY_CAP.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if kept.len() >= BODY_CAP {
                break;
            }
        }
        Attempt::Status {
            code: status,
            said: short(&String::from_utf8_lossy(&kept), LOGGED_BODY),
        }
    }
}

/// A failed request as a short reason: the kind, and the cause chain without the URL (a URL
/// may hold a token in its path).
fn failed(e: reqwest::Error) -> Attempt {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Attempt::Refused(refused.to_string());
        }
        source = cause.source();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut causes = Vec::new();
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let text = if causes.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", causes.join(": "))
    };
    Attempt::Failed(short(&text, LOGGED_BODY))
}

/// At most `max` characters of `text`, on one line.
fn short(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    one_line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_runtime::outbound::OutboundArgs;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A client that may reach this machine's endpoints, as the tests' policy allows.
    fn local_client(total: Duration) -> Client {
        fleet_runtime::tls::install_crypto_provider();
        let policy = Policy::new(&OutboundArgs {
            webhook_allow_http: true,
            webhook_allowed_cidrs: vec!["127.0.0.1/32".into()],
        })
        .unwrap();
        Client::new(policy, Duration::from_secs(2), total).unwrap()
    }

    /// An endpoint that reads one request and then answers with `answer`, which gets the
    /// connection and returns what it is to report.
    async fn endpoint<F, Fut, T>(answer: F) -> (String, tokio::task::JoinHandle<T>)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send,
        T: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            answer(conn).await
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_redirect_is_answered_as_it_is_and_never_followed() {
        // Where the redirect points: an address a check before the send would have allowed,
        // so only not following it keeps the delivery from going there.
        let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let location = format!("http://{}/internal", elsewhere.local_addr().unwrap());
        let (url, served) = endpoint(move |mut conn| async move {
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
        })
        .await;
        let attempt = local_client(Duration::from_secs(5))
            .post(&url, http::HeaderMap::new(), b"{}".to_vec())
            .await;
        served.await.unwrap();
        assert!(
            matches!(attempt, Attempt::Status { code: 307, .. }),
            "{attempt:?}"
        );
        let followed = tokio::time::timeout(Duration::from_millis(500), elsewhere.accept()).await;
        assert!(followed.is_err(), "the redirect was followed");
    }

    #[tokio::test]
    async fn an_endless_answer_is_read_only_to_the_cap() {
        // The endpoint writes until the client hangs up, and says how much it wrote.
        let (url, served) = endpoint(|mut conn| async move {
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                .await
                .unwrap();
            let chunk = vec![b'a'; 64 * 1024];
            let mut written = 0usize;
            while conn.write_all(&chunk).await.is_ok() {
                written += chunk.len();
            }
            written
        })
        .await;
        // Reading on for the whole of this timeout would take gigabytes on loopback.
        let attempt = local_client(Duration::from_secs(10))
            .post(&url, http::HeaderMap::new(), b"{}".to_vec())
            .await;
        let Attempt::Status { code: 200, said } = attempt else {
            panic!("{attempt:?}")
        };
        assert_eq!(said, "a".repeat(LOGGED_BODY));
        let written = tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the client hung up once it had read its cap")
            .unwrap();
        // The cap, plus what the two sockets' buffers hold on the way.
        assert!(
            written < 32 * 1024 * 1024,
            "the endpoint wrote {written} bytes before the client hung up"
        );
    }

    #[test]
    fn a_shown_reason_is_one_short_line() {
        assert_eq!(short("a\nb\tc", 10), "a b c");
        assert_eq!(short(&"x".repeat(500), 200).len(), 200);
    }
}
