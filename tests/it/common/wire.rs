//! Raw bytes to hoard's proxy port, for what reqwest would not send: bad heads, bare CONNECTs,
//! requests from a chosen loopback address.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxy::Proxy;

/// Sends `request` to hoard and returns the start of the answer (one read, within 5 s).
pub(crate) async fn raw(proxy: &Proxy, request: &str) -> String {
    let mut tcp = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends `request` to hoard and returns what came back up to the end of the head (at most 8 KiB
/// or 5 s).
pub(crate) async fn raw_head(proxy: &Proxy, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_some(&mut tcp).await
}

/// Sends `request` (which asks for `Connection: close`) to hoard and returns the whole answer.
pub(crate) async fn raw_whole(proxy: &Proxy, request: &str) -> String {
    let mut tcp = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads from `stream` until a head ends, 8 KiB arrived, the peer closed or 5 s passed.
pub(crate) async fn read_some(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut buf = vec![0u8; 8192];
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got < buf.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got += n;
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

/// Connects to `to` from the loopback address `ip` (all of 127/8 is local on Linux), so hoard
/// sees another client.
pub(crate) async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}
