//! A service's `/readyz`, read over a real socket the way a kubelet probe reads it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status code and body of `GET path`, or `None` if nothing answers.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits until `/readyz` answers `status` with a body containing `says`; panics with the last
/// answer after `timeout`.
pub async fn readyz_until(addr: SocketAddr, status: u16, says: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = get(addr, "/readyz").await;
        if let Some((code, body)) = &last
            && *code == status
            && body.contains(says)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/readyz of {addr} did not answer {status} {says:?} within {timeout:?}; last: {last:?}");
}
