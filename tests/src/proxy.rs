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
            async move {
                let (mut client_rx, mut client_tx) = inbound.into_split();
                let (mut server_rx, mut server_tx) = outbound.into_split();
                let replies = tokio::io::copy(&mut server_rx, &mut client_tx);
                let requests = async {
                    let mut frames = FrontendFrames::default();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = client_rx.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        counted.fetch_add(frames.push(&buf[..n]), Ordering::SeqCst);
                        server_tx.write_all(&buf[..n]).await?;
                    }
                };
                let _ = tokio::join!(replies, requests);
            }
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
