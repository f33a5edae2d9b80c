//! A nats-server of a test's own (the binary `dev/stack` built), for tests that stop NATS.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    crate::stack::tool("nats-server")
}

impl PrivateNats {
    pub fn start() -> Self {
        let port = crate::stack::free_port();
        let dir = std::env::temp_dir().join(crate::stack::unique("fleet-nats"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = Self {
            port,
            dir,
            child: None,
        };
        nats.resume();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store, as a restarted server would.
    pub fn resume(&mut self) {
        let child = Command::new(binary())
            .args([
                "--jetstream",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .arg("--store_dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
