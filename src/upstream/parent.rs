//! Dialling through the parent proxy (`upstream.proxy`), for a hoard behind a corporate proxy or
//! one abroad: upstream connections go through it with HTTP CONNECT or SOCKS5, so TLS to the
//! registry stays end to end and the parent sees host names and encrypted bytes only.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

use crate::http::basic_header;
use crate::net::{Parent, Protocol, authority};

/// Largest CONNECT response head hoard reads from an HTTP parent. Squid and its kind send a
/// status line and a few headers (~200 bytes); 16 KiB leaves room for a chatty one and still
/// bounds what a broken parent can make hoard hold.
const MAX_HEAD: usize = 16 << 10;

impl Parent {
    /// Opens a stream to `host:port` through the parent: once this returns, the bytes on it are
    /// the destination's. `timeout` bounds the whole dial, the parent's own connect included.
    pub(crate) async fn dial(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        // The name goes into a request line: nothing that could end it.
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name"),
            ));
        }
        let dial = async {
            let stream = self.connect().await?;
            match self.protocol {
                Protocol::HttpConnect => self.http_connect(stream, host, port).await,
                Protocol::Socks5 => self.socks5_connect(stream, host, port).await,
            }
        };
        match tokio::time::timeout(timeout, dial).await {
            Ok(result) => result,
            Err(_) => Err(self.error(
                io::ErrorKind::TimedOut,
                format!("no connection to {host}:{port} within {timeout:?}"),
            )),
        }
    }

    /// The TCP connection to the parent itself. Made here rather than by tokio-socks, which
    /// would resolve the parent's name with a blocking call on a runtime thread.
    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.error(e.kind(), format!("cannot connect: {e}")))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn http_connect(
        &self,
        mut stream: TcpStream,
        host: &str,
        port: u16,
    ) -> io::Result<TcpStream> {
        let target = authority(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.credentials {
            request.push_str("Proxy-Authorization: ");
            request.push_str(&basic_header(user, password));
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let head = read_head(&mut stream)
            .await
            .map_err(|e| self.error(e.kind(), format!("CONNECT {target}: {e}")))?;
        match status_line(&head) {
            Some((200..=299, _)) => Ok(stream),
            Some((status, reason)) => Err(self.error(
                io::ErrorKind::ConnectionRefused,
                format!("answered {status} {reason} to CONNECT {target}"),
            )),
            None => Err(self.error(
                io::ErrorKind::InvalidData,
                format!("answered CONNECT {target} with something other than HTTP"),
            )),
        }
    }

    async fn socks5_connect(
        &self,
        stream: TcpStream,
        host: &str,
        port: u16,
    ) -> io::Result<TcpStream> {
        // A name stays a name (ATYP 3) for the parent to resolve; a literal address goes as one.
        let target = (host, port);
        let result = match &self.credentials {
            Some((user, password)) => {
                Socks5Stream::connect_with_password_and_socket(stream, target, user, password).await
            }
            None => Socks5Stream::connect_with_socket(stream, target).await,
        };
        result.map(Socks5Stream::into_inner).map_err(|e| {
            let kind = match &e {
                tokio_socks::Error::Io(io) => io.kind(),
                _ => io::ErrorKind::ConnectionRefused,
            };
            self.error(
                kind,
                format!("SOCKS5 CONNECT {}: {e}", authority(host, port)),
            )
        })
    }

    /// An error that names the parent, so a log line says which hop failed.
    fn error(&self, kind: io::ErrorKind, message: String) -> io::Error {
        io::Error::new(kind, format!("parent proxy {self}: {message}"))
    }
}

/// Reads an HTTP response head up to its blank line and not one byte further: what follows is
/// the destination's (a parent sends nothing more before the client speaks, but it may). Bytes
/// are peeked first and consumed only up to the end of the head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = vec![0; 2048];
    loop {
        let peeked = stream.peek(&mut buf).await?;
        if peeked == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before a response",
            ));
        }
        let before = head.len();
        head.extend_from_slice(buf.get(..peeked).unwrap_or_default());
        // The blank line may straddle two reads.
        let from = before.saturating_sub(3);
        let end = head
            .get(from..)
            .and_then(|tail| tail.windows(4).position(|w| w == b"\r\n\r\n"))
            .map(|at| from + at + 4);
        let take = end.map_or(peeked, |end| end - before);
        stream
            .read_exact(buf.get_mut(..take).unwrap_or_default())
            .await?;
        if let Some(end) = end {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response head over {MAX_HEAD} bytes"),
            ));
        }
    }
}

/// The status code and reason of `HTTP/1.x NNN reason`.
fn status_line(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // A reason is for a log line: printable and short.
    let reason: String = parts
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    Some((code.parse().ok()?, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connect_head_is_read_to_its_blank_line_and_no_further() {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        tokio::spawn(async move {
            if let Ok((mut peer, _)) = listener.accept().await {
                // The head in two pieces that split the blank line, then the destination's bytes.
                let _ = peer.write_all(b"HTTP/1.1 200 OK\r\nX: y\r\n\r").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = peer.write_all(b"\nhello").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return;
        };
        let head = read_head(&mut stream).await.unwrap_or_default();
        assert_eq!(head, b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n");
        assert_eq!(status_line(&head), Some((200, "OK".to_owned())));
        let mut rest = [0; 5];
        assert!(stream.read_exact(&mut rest).await.is_ok());
        assert_eq!(&rest, b"hello");
    }
}
