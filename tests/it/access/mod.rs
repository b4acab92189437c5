//! Safe to run for a team: proxy authentication (throttled, with no user-name probing), the
//! client allow-list, the tunnel guard, private content behind `auth_on_hit = "upstream"`, the
//! name-constrained CA, hostile input answered with a 4xx while hoard goes on serving, and
//! connection bounds that a flood cannot use to lock others out, and idle keep-alive connections.

mod auth;
mod azure;
mod grants;
mod guard;
mod keepalive;
mod lending;
mod limits;
mod sources;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Opens a tunnel to the intercepted registry through hoard, does TLS trusting hoard's CA,
/// sends `request` as it is and returns the response head.
async fn raw_intercepted(proxy: &Proxy, request: &[u8]) -> String {
    let tcp = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    let mut tls = intercepted_over(proxy, tcp).await;
    tls.write_all(request).await.unwrap();
    read_some(&mut tls).await
}

/// Sends a CONNECT to the intercepted registry over `tcp` and does TLS trusting hoard's CA.
async fn intercepted_over(
    proxy: &Proxy,
    mut tcp: TcpStream,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tcp.write_all(
        format!("CONNECT {REGISTRY}:443 HTTP/1.1\r\nHost: {REGISTRY}:443\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let head = read_some(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(proxy.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from(REGISTRY).unwrap(), tcp)
        .await
        .unwrap()
}

fn htpasswd(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    std::fs::write(&path, format!("# users\nalice:{hash}\n")).unwrap();
    path
}

/// A TCP server that accepts connections and never says a word. It counts the connections open
/// now and the most that were open at once.
struct Silent {
    addr: std::net::SocketAddr,
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Silent {
    /// `[proxy]` lines that let tunnels reach it.
    fn allowed(&self) -> String {
        format!(
            "allow_private_destinations = true\nconnect_ports = [443, {}]",
            self.addr.port()
        )
    }

    /// A CONNECT to it.
    fn connect_request(&self) -> String {
        format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", self.addr)
    }
}

/// hoard with these lines in its `[proxy]` section.
async fn proxy_with(registry: &Registry, proxy_extra: &str) -> Proxy {
    Proxy::builder(registry).proxy(proxy_extra).start().await
}

async fn silent_server() -> Silent {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let task = tokio::spawn({
        let (open, most) = (open.clone(), most.clone());
        async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let now = open.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                let open = open.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                    open.fetch_sub(1, SeqCst);
                });
            }
        }
    });
    Silent {
        addr,
        open,
        most,
        _task: task,
    }
}

/// Asks hoard for `/healthz` from loopback address `ip`; the connection and the answer's head.
async fn healthz_from(ip: &str, proxy: std::net::SocketAddr) -> (TcpStream, String) {
    let mut tcp = connect_from(ip, proxy).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: hoard\r\n\r\n")
        .await
        .unwrap();
    let head = read_some(&mut tcp).await;
    (tcp, head)
}

/// Whether hoard closed `tcp` within `wait` (EOF or reset), rather than leaving it open.
async fn closed_within(tcp: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(wait, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// hoard with the htpasswd user alice (password `wonderland`, bcrypt cost `cost`).
async fn proxy_with_alice(registry: &Registry, cost: u32) -> Proxy {
    let users = tempfile::tempdir().unwrap();
    let path = users.path().join("htpasswd");
    let hash = bcrypt::hash("wonderland", cost).unwrap();
    std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
    // The file is read at start; the folder can go.
    proxy_with(registry, &format!("auth_file = \"{}\"", path.display())).await
}

/// Sends a CONNECT with these credentials from loopback address `from`; the answer's head.
async fn login(proxy: &Proxy, from: &str, user: &str, password: &str) -> String {
    let mut tcp = connect_from(from, proxy.server.local_addr()).await;
    let request = format!(
        "CONNECT {REGISTRY}:443 HTTP/1.1\r\nHost: {REGISTRY}:443\r\nProxy-Authorization: {}\r\n\r\n",
        hoard::http::basic_header(user, password)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_some(&mut tcp).await
}

/// `proxy.auth_file` with alice and bob (password "wonderland"), and `proxy.groups_file` with
/// the group `ops` of alice, as `[proxy]` lines.
pub(crate) fn users_and_groups(dir: &std::path::Path) -> String {
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    let users = dir.join("htpasswd");
    std::fs::write(&users, format!("alice:{hash}\nbob:{hash}\n")).unwrap();
    let groups = dir.join("groups");
    std::fs::write(&groups, "ops: alice\n").unwrap();
    format!(
        "auth_file = \"{}\"\ngroups_file = \"{}\"",
        users.display(),
        groups.display()
    )
}

/// A client of the proxy port logged in as `user`.
pub(crate) fn proxy_client(proxy: &Proxy, user: &str) -> reqwest::Client {
    let login = reqwest::Proxy::all(proxy.url())
        .unwrap()
        .basic_auth(user, "wonderland");
    reqwest::Client::builder()
        .proxy(login)
        .tls_certs_only([reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

/// Blobs of the credential tests are small: the tests are about who gets them.
const BLOB_SIZE: usize = 64 << 10;

/// The URL of a blob on the intercepted registry.
fn blob_path(repo: &str, digest: &str) -> String {
    format!("https://{REGISTRY}/v2/{repo}/blobs/{digest}")
}

/// Starts hoard as a process on `config` through `script` (which sets its environment).
async fn start_process(
    config: ProxyBuilder<'_>,
    dir: &std::path::Path,
    script: &str,
) -> HoardProcess {
    let port = free_port();
    let path = config.write_config(dir, &format!("127.0.0.1:{port}"));
    let mut hoard = HoardProcess::spawn(&path, port, Some(script));
    hoard.wait_logged("hoard listening").await;
    hoard
}

/// Pulls a new blob of the private `repo` through `client`: 200, whole.
async fn pulls_private_blob(client: &reqwest::Client, registry: &Registry, repo: &str) {
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let got = client.get(blob_path(repo, &digest)).send().await.unwrap();
    assert_eq!(got.status(), 200, "{repo}");
    assert_eq!(got.bytes().await.unwrap(), bytes);
}

/// A stand-in for a cloud's metadata service on loopback: answers a request whose head
/// (lowercased) `asks` says is a token request with 200 and the next of `bodies` (the last over
/// and over), anything else with 403, counting the token answers.
async fn metadata_server(
    asks: fn(&str) -> bool,
    bodies: Vec<String>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let n = tcp.read(&mut head).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
            let answer = match asks(&head) {
                true => {
                    let n = count.fetch_add(1, SeqCst);
                    let body = &bodies[n.min(bodies.len() - 1)];
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                false => "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned(),
            };
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
    });
    (addr, asked)
}
