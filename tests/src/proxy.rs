//! A TCP proxy a test can cut: every open connection dropped and new ones refused until it is
//! restored. Put in front of the API server, it is a watch outage as a network sees it (TLS
//! passes through untouched).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Listens on a free loopback port and hands each client, with a connection of its own to
/// `upstream`, to `relay`.
async fn relay_each<R, F>(upstream: SocketAddr, relay: R) -> (SocketAddr, JoinHandle<()>)
where
    R: Fn(TcpStream, TcpStream) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    let task = tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let relay = relay.clone();
            tokio::spawn(async move {
                if let Ok(outbound) = TcpStream::connect(upstream).await {
                    relay(inbound, outbound).await;
                }
            });
        }
    });
    (addr, task)
}

/// Relays one client: the server's bytes back as they come, the client's through `pass`,
/// which sees each chunk read and returns the bytes to forward.
async fn relay_requests<P>(inbound: TcpStream, outbound: TcpStream, mut pass: P)
where
    P: FnMut(&[u8]) -> Vec<u8>,
{
    let (mut client_rx, mut client_tx) = inbound.into_split();
    let (mut server_rx, mut server_tx) = outbound.into_split();
    let replies = tokio::io::copy(&mut server_rx, &mut client_tx);
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_rx.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            server_tx.write_all(&pass(&buf[..n])).await?;
        }
    };
    let _ = tokio::join!(replies, requests);
}

pub struct CutProxy {
    pub addr: SocketAddr,
    /// Cancelled to cut; replaced by a fresh token on restore.
    epoch: Arc<Mutex<Option<CancellationToken>>>,
    task: JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let epoch = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let current = epoch.clone();
        let (addr, task) = relay_each(upstream, move |mut inbound, mut outbound| {
            let token = current.lock().unwrap().clone();
            async move {
                // Cut: the connection is closed at once, as a refused one would be.
                let Some(token) = token else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = token.cancelled() => {}
                }
            }
        })
        .await;
        Self { addr, epoch, task }
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        if let Some(token) = self.epoch.lock().unwrap().take() {
            token.cancel();
        }
    }

    pub fn restore(&self) {
        self.epoch
            .lock()
            .unwrap()
            .get_or_insert_with(CancellationToken::new);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// A TCP proxy in front of PostgreSQL that counts the round trips its clients ask for: their
/// Sync messages (a statement run with the extended protocol ends in one; so does sqlx's ping).
pub struct PgSyncCounter {
    pub addr: SocketAddr,
    syncs: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl PgSyncCounter {
    pub async fn start(upstream: SocketAddr) -> Self {
        let syncs = Arc::new(AtomicU64::new(0));
        let counted = syncs.clone();
        let (addr, task) = relay_each(upstream, move |inbound, outbound| {
            let counted = counted.clone();
            let mut frames = FrontendFrames::default();
            relay_requests(inbound, outbound, move |bytes| {
                counted.fetch_add(frames.push(bytes), Ordering::SeqCst);
                bytes.to_vec()
            })
        })
        .await;
        Self { addr, syncs, task }
    }

    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
}

impl Drop for PgSyncCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client's side of PostgreSQL's wire protocol, split into messages: untyped ones (an
/// SSL request, then the startup message) until the startup message, typed ones after it.
#[derive(Default)]
struct FrontendFrames {
    pending: Vec<u8>,
    started: bool,
}

impl FrontendFrames {
    /// Takes the next bytes from the client; returns how many Sync messages they completed.
    fn push(&mut self, bytes: &[u8]) -> u64 {
        const PROTOCOL_3: u32 = 196_608;
        self.pending.extend_from_slice(bytes);
        let mut syncs = 0;
        loop {
            let head = usize::from(self.started);
            let Some(len) = self.pending.get(head..head + 4) else {
                return syncs;
            };
            let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
            if self.pending.len() < head + len {
                return syncs;
            }
            if self.started {
                syncs += u64::from(self.pending[0] == b'S');
            } else if self
                .pending
                .get(4..8)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
                == Some(PROTOCOL_3)
            {
                self.started = true;
            }
            self.pending.drain(..head + len);
        }
    }
}

/// A TCP proxy in front of nats-server that loses the first request published to each of
/// the given subjects whose payload matches, as a request is lost when the server restarts
/// under it: the server never sees it, so nothing ever answers it. Everything else passes.
pub struct NatsLosingProxy {
    pub addr: SocketAddr,
    lost: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl NatsLosingProxy {
    pub async fn start(upstream: SocketAddr, subjects: Vec<String>, payload_has: &str) -> Self {
        let lost = Arc::new(Mutex::new(Vec::new()));
        let to_lose = Arc::new(Mutex::new(subjects));
        let payload_has = payload_has.to_owned();
        let record = lost.clone();
        let (addr, task) = relay_each(upstream, move |inbound, outbound| {
            let (record, to_lose, payload_has) =
                (record.clone(), to_lose.clone(), payload_has.clone());
            let mut ops = ClientOps::default();
            relay_requests(inbound, outbound, move |bytes| {
                let mut passed = Vec::new();
                for op in ops.push(bytes) {
                    if let Some(subject) = op.subject() {
                        let mut to_lose = to_lose.lock().unwrap();
                        let found = to_lose.iter().position(|s| s == subject);
                        if let Some(i) = found.filter(|_| op.payload_has(&payload_has)) {
                            record.lock().unwrap().push(to_lose.remove(i));
                            continue;
                        }
                    }
                    passed.extend_from_slice(&op.bytes);
                }
                passed
            })
        })
        .await;
        Self { addr, lost, task }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The subjects whose request was lost so far, in order.
    pub fn lost(&self) -> Vec<String> {
        self.lost.lock().unwrap().clone()
    }
}

impl Drop for NatsLosingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One operation of a NATS client: its control line and, for a publish, its payload.
struct ClientOp {
    bytes: Vec<u8>,
    /// Where the control line ends (after its CRLF).
    line_end: usize,
}

impl ClientOp {
    fn control(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.line_end - 2]).unwrap_or("")
    }

    /// The subject of a publish (`PUB` or `HPUB`).
    fn subject(&self) -> Option<&str> {
        let mut words = self.control().split_ascii_whitespace();
        match words.next()?.to_ascii_uppercase().as_str() {
            "PUB" | "HPUB" => words.next(),
            _ => None,
        }
    }

    fn payload_has(&self, text: &str) -> bool {
        let payload = &self.bytes[self.line_end..];
        payload.windows(text.len()).any(|w| w == text.as_bytes())
    }
}

/// The client's side of the NATS protocol, split into operations.
#[derive(Default)]
struct ClientOps {
    pending: Vec<u8>,
}

impl ClientOps {
    /// Takes the next bytes from the client; returns the operations they completed.
    fn push(&mut self, bytes: &[u8]) -> Vec<ClientOp> {
        self.pending.extend_from_slice(bytes);
        let mut ops = Vec::new();
        loop {
            let Some(line) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return ops;
            };
            let line_end = line + 2;
            let control = String::from_utf8_lossy(&self.pending[..line]).into_owned();
            let mut words = control.split_ascii_whitespace();
            // A publish's last word is its size (headers and payload for HPUB), which its
            // bytes and their CRLF follow.
            let size = match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("PUB" | "HPUB") => words.last().and_then(|w| w.parse::<usize>().ok()),
                _ => None,
            };
            let end = size.map_or(line_end, |size| line_end + size + 2);
            if self.pending.len() < end {
                return ops;
            }
            ops.push(ClientOp {
                bytes: self.pending.drain(..end).collect(),
                line_end,
            });
        }
    }
}
