//! How the binaries end, with nothing they depend on reachable: a stop asked for while a
//! dependency is still out of reach is a clean exit (a rolling deploy or scale-in of a waiting
//! replica is not a crash), and a user's error is one clear message, never a backtrace.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_tests::stack;

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn every_service_stopped_while_waiting_for_its_dependencies_exits_cleanly() {
    let nats = format!("nats://127.0.0.1:{}", dead_port());
    let db = format!("postgres://fleet:secret@127.0.0.1:{}/fleet", dead_port());
    for (binary, args) in [
        ("worker", &[][..]),
        ("producer", &["run"][..]),
        ("sink", &["run"][..]),
        ("api", &["run"][..]),
    ] {
        let log = std::env::temp_dir().join(stack::unique(&format!("{binary}-waiting")));
        let mut child = Command::new(stack::workspace_binary(binary))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_BACKTRACE", "1")
            .env("NATS_URL", &nats)
            .env("DATABASE_URL", &db)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let waiting = wait_for_line(&log, "not reachable", Duration::from_secs(30));
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = child.wait().unwrap();
        let output = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert!(waiting, "{binary} never said what it waits for:\n{output}");
        assert!(
            status.success(),
            "{binary} {args:?} stopped while waiting exited with {status}:\n{output}"
        );
        assert!(
            output.contains("shut down while waiting for"),
            "{binary}: {output}"
        );
        assert!(
            !output.contains("secret"),
            "{binary} logged the password: {output}"
        );
    }
}

#[test]
fn a_user_error_is_one_message_without_a_backtrace() {
    let file = std::env::temp_dir().join(stack::unique("not-text"));
    std::fs::write(&file, b"github.com/ossf/scorecard\n\0\0").unwrap();
    let out = Command::new(stack::workspace_binary("producer"))
        .args(["import", file.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "1")
        .env(
            "DATABASE_URL",
            format!("postgres://fleet@127.0.0.1:{}/fleet", dead_port()),
        )
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, no backtrace:\n{stderr}");
    assert!(
        lines[0].starts_with("Error: ") && lines[0].contains("NUL byte"),
        "{stderr}"
    );
}

/// Whether `log` has a line containing `needle` within `patience`.
fn wait_for_line(log: &Path, needle: &str, patience: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < patience {
        if std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
