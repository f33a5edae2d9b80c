//! A TCP proxy a test can cut: every open connection dropped and new ones refused until it is
//! restored. Put in front of the API server, it is a watch outage as a network sees it (TLS
//! passes through untouched).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct CutProxy {
    pub addr: SocketAddr,
    /// Cancelled to cut; replaced by a fresh token on restore.
    epoch: Arc<Mutex<Option<CancellationToken>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let epoch = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let current = epoch.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                // Cut: the connection is closed at once, as a refused one would be.
                let Some(token) = current.lock().unwrap().clone() else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
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
    syncs: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PgSyncCounter {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let syncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = syncs.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = inbound.into_split();
                    let (mut server_rx, mut server_tx) = outbound.into_split();
                    let replies = tokio::io::copy(&mut server_rx, &mut client_tx);
                    let requests = async {
                        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                        let mut frames = FrontendFrames::default();
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = client_rx.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            let syncs = frames.push(&buf[..n]);
                            counted.fetch_add(syncs, std::sync::atomic::Ordering::SeqCst);
                            server_tx.write_all(&buf[..n]).await?;
                        }
                    };
                    let _ = tokio::join!(replies, requests);
                });
            }
        });
        Self { addr, syncs, task }
    }

    pub fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::SeqCst)
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
