//! Parent proxies written for the tests: HTTP CONNECT with Basic credentials, and SOCKS5.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{PASSWORD, USER};

/// A parent proxy written for the test: it records the target of every CONNECT and sends every
/// tunnel to one address, as a parent that resolves the names itself would.
pub(super) struct FakeParent {
    pub(super) addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeParent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Targets = Arc<Mutex<Vec<String>>>;

impl FakeParent {
    async fn start<F, Fut>(serve: F) -> FakeParent
    where
        F: Fn(TcpStream, Targets) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let targets = Targets::default();
        let seen = targets.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, seen.clone()));
            }
        });
        FakeParent {
            addr,
            targets,
            task,
        }
    }

    /// An HTTP CONNECT proxy that answers 407 unless it gets `user:password` by Basic auth.
    pub(super) async fn http(
        to: SocketAddr,
        user: &'static str,
        password: &'static str,
    ) -> FakeParent {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let expected = Arc::new(expected);
        FakeParent::start(move |tcp, targets| {
            let expected = expected.clone();
            async move {
                let mut client = BufReader::new(tcp);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    client.read_line(&mut line).await.ok()?;
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    head.push(line.trim_end().to_owned());
                }
                let target = head.first()?.strip_prefix("CONNECT ")?.split(' ').next()?;
                targets.lock().unwrap().push(target.to_owned());
                let authorized = head.iter().any(|line| {
                    line.split_once(':').is_some_and(|(name, value)| {
                        name.eq_ignore_ascii_case("proxy-authorization")
                            && value.trim() == expected.as_str()
                    })
                });
                if !authorized {
                    let refusal = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                                   Proxy-Authenticate: Basic realm=\"test\"\r\n\
                                   Content-Length: 0\r\n\r\n";
                    client.get_mut().write_all(refusal.as_bytes()).await.ok()?;
                    return None;
                }
                let mut server = TcpStream::connect(to).await.ok()?;
                let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
                client.get_mut().write_all(established).await.ok()?;
                tokio::io::copy_bidirectional(&mut client, &mut server)
                    .await
                    .ok()?;
                Some(())
            }
        })
        .await
    }

    /// A SOCKS5 server (RFC 1928) that wants `user:password` (RFC 1929) and records what the
    /// CONNECT named: `name:port` for a domain name, `address ip:port` for an address.
    pub(super) async fn socks5(to: SocketAddr) -> FakeParent {
        FakeParent::start(move |mut client, targets| async move {
            let [version, methods] = read_array::<2>(&mut client).await?;
            let mut offered = vec![0; usize::from(methods)];
            client.read_exact(&mut offered).await.ok()?;
            if version != 5 || !offered.contains(&2) {
                client.write_all(&[5, 0xff]).await.ok()?;
                return None;
            }
            client.write_all(&[5, 2]).await.ok()?;
            let [_, user_len] = read_array::<2>(&mut client).await?;
            let user = read_string(&mut client, user_len).await?;
            let password_len = client.read_u8().await.ok()?;
            let password = read_string(&mut client, password_len).await?;
            if (user.as_str(), password.as_str()) != (USER, PASSWORD) {
                client.write_all(&[1, 1]).await.ok()?;
                return None;
            }
            client.write_all(&[1, 0]).await.ok()?;
            let [_, command, _, address_type] = read_array::<4>(&mut client).await?;
            let host = match address_type {
                3 => {
                    let len = client.read_u8().await.ok()?;
                    read_string(&mut client, len).await?
                }
                1 => format!("address {:?}", read_array::<4>(&mut client).await?),
                _ => format!("address type {address_type}"),
            };
            let port = client.read_u16().await.ok()?;
            targets.lock().unwrap().push(format!("{host}:{port}"));
            if command != 1 || address_type != 3 {
                client
                    .write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0])
                    .await
                    .ok()?;
                return None;
            }
            let mut server = TcpStream::connect(to).await.ok()?;
            client
                .write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                .await
                .ok()?;
            tokio::io::copy_bidirectional(&mut client, &mut server)
                .await
                .ok()?;
            Some(())
        })
        .await
    }

    pub(super) fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }

    pub(super) fn http_url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }
}

async fn read_array<const N: usize>(stream: &mut TcpStream) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    stream.read_exact(&mut bytes).await.ok()?;
    Some(bytes)
}

async fn read_string(stream: &mut TcpStream, len: u8) -> Option<String> {
    let mut bytes = vec![0; usize::from(len)];
    stream.read_exact(&mut bytes).await.ok()?;
    String::from_utf8(bytes).ok()
}
