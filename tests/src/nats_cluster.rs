//! A three-server JetStream cluster of a test's own on loopback, from the stack's pinned
//! nats-server, for the fault tests that kill, pause and restart its servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;

struct Node {
    name: String,
    port: u16,
    monitor: u16,
    store: PathBuf,
    child: Option<Child>,
}

pub struct PrivateCluster {
    nodes: Vec<Node>,
    cluster_ports: Vec<u16>,
    dir: PathBuf,
}

impl PrivateCluster {
    /// Starts three servers and waits until JetStream answers on each.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(crate::stack::unique("fleet-nats-cluster"));
        let cluster_ports: Vec<u16> = (0..3).map(|_| crate::stack::free_port()).collect();
        let nodes = (0..3)
            .map(|i| Node {
                name: format!("n{i}"),
                port: crate::stack::free_port(),
                monitor: crate::stack::free_port(),
                store: dir.join(format!("n{i}")),
                child: None,
            })
            .collect();
        let mut cluster = Self {
            nodes,
            cluster_ports,
            dir,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_healthy(i).await;
        }
        cluster.wait_formed().await;
        cluster
    }

    /// Waits until every server names the same metadata leader and the leader sees both
    /// peers current: before that, losing a server can leave the other two unable to elect.
    async fn wait_formed(&self) {
        for _ in 0..600 {
            let mut metas = Vec::new();
            for node in &self.nodes {
                let addr = SocketAddr::from(([127, 0, 0, 1], node.monitor));
                let meta = crate::probe::get(addr, "/jsz")
                    .await
                    .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .map(|jsz| jsz["meta_cluster"].clone())
                    .unwrap_or_default();
                metas.push((node.name.clone(), meta));
            }
            let leader = metas[0].1["leader"].as_str().unwrap_or_default().to_owned();
            let agreed = !leader.is_empty() && metas.iter().all(|(_, m)| m["leader"] == leader);
            let current = metas
                .iter()
                .find(|(name, _)| *name == leader)
                .and_then(|(_, m)| m["replicas"].as_array().cloned())
                .is_some_and(|r| r.iter().filter(|p| p["current"] == true).count() == 2);
            if agreed && current {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the NATS cluster never formed (one metadata leader, both peers current)");
    }

    /// Every server's client URL, comma-separated, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        self.seeds().join(",")
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    /// A JetStream client of the test's own, on every seed.
    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .connect(self.seeds())
            .await
            .expect("connect to the private NATS cluster");
        // A cluster just formed, on a machine busy with other clusters, may take more than the
        // default 5 s to place a stream: the tests' own requests wait longer.
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(30))
            .build(client)
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .cluster_ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
            .collect();
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.store).unwrap();
        // JetStream reserves each stream's max_bytes on every replica's server (see dev/stack).
        let conf = node.store.with_extension("conf");
        std::fs::write(
            &conf,
            format!(
                "jetstream {{\n  store_dir: {:?}\n  max_file_store: 1T\n}}\n",
                node.store
            ),
        )
        .unwrap();
        let child = Command::new(crate::stack::tool("nats-server"))
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-m", &node.monitor.to_string()])
            .args(["--server_name", &node.name, "--cluster_name", "fleet-test"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.cluster_ports[i]),
            ])
            .args(["--routes", &routes.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
    }

    /// Waits until server `i` reports JetStream healthy (it has caught up with its peers).
    pub async fn wait_healthy(&self, i: usize) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].monitor));
        for _ in 0..600 {
            if let Some((200, _)) = crate::probe::get(addr, "/healthz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nats-server {} did not become healthy", self.nodes[i].name);
    }

    /// SIGKILL: the server dies with whatever it had not written.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store, as a restarted pod would.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// SIGTERM and a fresh start: a rolling restart's step.
    pub async fn roll(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            signal(&child, "TERM");
            let _ = child.wait();
        }
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// SIGSTOP: the server is cut off (no answers, no heartbeats) but keeps its sockets, as a
    /// partitioned server looks to its peers and clients.
    pub fn pause(&self, i: usize) {
        signal(
            self.nodes[i].child.as_ref().expect("a running server"),
            "STOP",
        );
    }

    pub fn resume(&self, i: usize) {
        signal(
            self.nodes[i].child.as_ref().expect("a paused server"),
            "CONT",
        );
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no server named {name:?}"))
    }

    /// The server leading `stream`'s replicas.
    pub async fn stream_leader(&self, js: &jetstream::Context, stream: &str) -> usize {
        let info = js
            .get_stream(stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        let leader = info
            .cluster
            .and_then(|c| c.leader)
            .expect("a stream leader");
        self.index(&leader)
    }

    /// The server leading `consumer` of `stream`.
    pub async fn consumer_leader(
        &self,
        js: &jetstream::Context,
        stream: &str,
        consumer: &str,
    ) -> usize {
        let mut c: jetstream::consumer::PullConsumer = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_consumer(consumer)
            .await
            .unwrap();
        let info = c.info().await.unwrap().clone();
        let leader = info
            .cluster
            .and_then(|c| c.leader)
            .expect("a consumer leader");
        self.index(&leader)
    }
}

fn signal(child: &Child, name: &str) {
    assert!(send(child, name), "kill -{name} {}", child.id());
}

fn send(child: &Child, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // A paused server would not die of SIGKILL until resumed.
            if let Some(child) = &self.nodes[i].child {
                send(child, "CONT");
            }
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
