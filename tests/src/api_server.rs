//! The api binary as a running process on loopback, for the api's tests and benchmark.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{probe, stack};

/// The login the api's tests connect as: a member of `scorecard_api`, the read-only role
/// migration 0005 creates, and nothing else.
pub const LOGIN: &str = "fleet_api_test";
pub const PASSWORD: &str = "fleet-api-test-password";

/// Creates [`LOGIN`] on the stack's server if it is missing (roles are server-wide, so every
/// test database shares it).
pub async fn ensure_login(pool: &sqlx::PgPool) {
    let made = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN
             CREATE ROLE {LOGIN} LOGIN PASSWORD '{PASSWORD}' IN ROLE scorecard_api;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    )))
    .execute(pool)
    .await;
    made.expect("creating the api's test login");
}

/// The URL of `pool`'s database as [`LOGIN`].
pub fn url_as_login(pool: &sqlx::PgPool) -> String {
    let url = stack::database_url_of(pool);
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{LOGIN}:{PASSWORD}@{host}")
}

pub struct ApiServer {
    child: Child,
    pub addr: SocketAddr,
    pub ops: SocketAddr,
    pub log: PathBuf,
}

impl ApiServer {
    /// Starts the api on `database_url` with `env` on top of the defaults, and waits until it
    /// is ready.
    pub async fn start(database_url: &str, env: &[(&str, String)]) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], stack::free_port()));
        let ops = SocketAddr::from(([127, 0, 0, 1], stack::free_port()));
        let dir = std::env::temp_dir().join("fleet-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}.log", stack::unique("api")));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(stack::workspace_binary("api"));
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("NATS_URL", stack::nats_url())
            .env("API_ADDR", addr.to_string())
            .env("HTTP_ADDR", ops.to_string())
            .env("LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting the api");
        let server = Self {
            child,
            addr,
            ops,
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while probe::get(ops, "/readyz").await.map(|(s, _)| s) != Some(200) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the api did not become ready; its log:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> probe::Answer {
        probe::request(self.addr, "GET", path, headers).await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)]) -> probe::Answer {
        probe::request(self.addr, "POST", path, headers).await
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
