//! Command-line and environment configuration shared by every binary.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A value that must never reach a log line, an error message or a panic: `Debug` and
/// `Display` print a placeholder, and only [`Secret::expose`] reads it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A URL (or a comma-separated list of them, as `NATS_URL` takes) with every `user:password@`
/// and `password=` parameter replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("[redacted]@{}", &rest[at + 1..]),
        None => rest.to_owned(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=[redacted]")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL (postgres://user:password@host/db). Never logged.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// Connections in the pool; the sink writes one batch per connection at a time.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// Longest one statement may run, in milliseconds (0: no limit); a batch or claim that hits it fails and is retried, an api request whose statement takes longer is a 503 and the statement is cancelled in the database
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub database_statement_timeout_ms: u64,

    /// Longest a statement waits for a lock, in milliseconds (0: no limit); a manual UPDATE holding rows shows as lock_timeout errors, not a silent stall
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT_MS", default_value_t = 5_000)]
    pub database_lock_timeout_ms: u64,

    /// How DATABASE_URL reaches PostgreSQL: `session` (directly, or a pooler in session mode) or `transaction` (PgBouncer in transaction pooling mode, where consecutive transactions may land on different server connections)
    #[arg(long, env = "DATABASE_POOLING", value_enum, default_value_t = crate::db::Pooling::Session)]
    pub database_pooling: crate::db::Pooling,
}

impl DbArgs {
    pub fn timeouts(&self) -> crate::db::Timeouts {
        crate::db::Timeouts {
            statement: std::time::Duration::from_millis(self.database_statement_timeout_ms),
            lock: std::time::Duration::from_millis(self.database_lock_timeout_ms),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated. Credentials in the URL are never logged.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: Secret,

    /// NATS credentials file (JWT + nkey seed), for servers that require one.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// NATS auth token, for servers configured with one. Never logged.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,

    #[command(flatten)]
    pub topology: crate::topology::TopologyArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("postgres://fleet:s3cret@db:5432/fleet?sslmode=require"),
            "postgres://[redacted]@db:5432/fleet?sslmode=require"
        );
        assert_eq!(
            redact_url("nats://tok@n1:4222"),
            "nats://[redacted]@n1:4222"
        );
        assert_eq!(redact_url("nats://n1:4222"), "nats://n1:4222");
        assert_eq!(
            redact_url("postgres:///fleet?host=/run"),
            "postgres:///fleet?host=/run"
        );
        assert_eq!(
            redact_url("nats://a:pw1@n1:4222,nats://b:pw2@n2:4222,n3:4222"),
            "nats://[redacted]@n1:4222,nats://[redacted]@n2:4222,n3:4222"
        );
        assert_eq!(
            redact_url("postgres://db/fleet?user=fleet&password=s3cret&sslmode=require"),
            "postgres://db/fleet?user=fleet&password=[redacted]&sslmode=require"
        );
    }
}
