//! Where the local stack is. Tests read `DATABASE_URL`, `NATS_URL` and `KUBECONFIG` from the
//! environment (`eval "$(dev/stack env)"`), or from the env file `dev/stack up` writes, so a
//! plain `cargo test` works once the stack is up. A missing stack fails the test, never skips it.

use std::path::PathBuf;
use std::sync::OnceLock;

fn stack_env_file() -> PathBuf {
    let dir = std::env::var_os("STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack"));
    dir.join("env")
}

/// Parses `export NAME='value'` lines, as `dev/stack env` prints them.
fn from_env_file(name: &str) -> Option<String> {
    static FILE: OnceLock<String> = OnceLock::new();
    let text = FILE.get_or_init(|| std::fs::read_to_string(stack_env_file()).unwrap_or_default());
    text.lines().find_map(|line| {
        let rest = line
            .strip_prefix("export ")?
            .strip_prefix(name)?
            .strip_prefix('=')?;
        Some(rest.trim_matches('\'').to_owned())
    })
}

/// The value of a stack variable, or a panic that says how to start the stack.
pub fn var(name: &str) -> String {
    std::env::var(name)
        .ok()
        .or_else(|| from_env_file(name))
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set and {} has no value for it: start the local stack with \
                 `dev/stack up` (and `eval \"$(dev/stack env)\"`) before running these tests",
                stack_env_file().display()
            )
        })
}

pub fn database_url() -> String {
    var("DATABASE_URL")
}

/// The URL of another database on the stack's PostgreSQL (same server and credentials).
pub fn database_url_for(database: &str) -> String {
    let base = database_url();
    let server = base.rfind('/').map_or(base.as_str(), |i| &base[..i]);
    format!("{server}/{database}")
}

/// The URL of the database a `#[sqlx::test]` made for the calling test.
pub fn database_url_of(pool: &sqlx::PgPool) -> String {
    database_url_for(
        pool.connect_options()
            .get_database()
            .expect("a named test database"),
    )
}

/// A TCP port free on 127.0.0.1 right now, for a private server a test starts. Taken below
/// the kernel's ephemeral range (Linux: 32768 and up), where no outgoing connection can be
/// given it between this check and the server's own bind (port 0 hands out one of exactly
/// those: a worker once found its port taken that way); each port at most once per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Processes that follow one another start apart, clear of each other's lingering ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port =
            u16::try_from(LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

pub fn nats_url() -> String {
    var("NATS_URL")
}

pub fn kubeconfig() -> PathBuf {
    PathBuf::from(var("KUBECONFIG"))
}

pub fn stack_dir() -> PathBuf {
    PathBuf::from(var("STACK_DIR"))
}

/// A name unique to this test run, for NATS prefixes and Kubernetes namespaces.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A binary of the stack (`nats`, `nats-server`, `kubectl`): on PATH, or where
/// `dev/build-tools` links them.
pub fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("SCORECARD_FLEET_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/scorecard-fleet"))
        });
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(cache.map(|c| c.join("path")))
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH nor in the build cache (dev/stack up builds the stack's \
                 tools, dev/web-tools installs chromium and schemathesis; dev/test runs both)"
            )
        })
}

/// A binary of this workspace, built by `cargo build --workspace --bins` (dev/test runs it)
/// next to the test executables.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (dev/test does)",
        path.display()
    );
    path
}
