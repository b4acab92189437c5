//! hoard behind a parent proxy (`upstream.proxy`): an HTTP CONNECT parent with credentials, a
//! SOCKS5 parent and a second hoard, each written or started here on loopback. The child hoard
//! has no `upstream.resolve` entry for the fixture registry, so the parent is its only way there.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::*;
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BLOB_SIZE: usize = 64 << 10;

/// The credentials the test parents want: a space in the password, percent-encoded in the URL.
const USER: &str = "user";
const PASSWORD: &str = "pa ss";
const PASSWORD_IN_URL: &str = "pa%20ss";

/// A parent proxy written for the test: it records the target of every CONNECT and sends every
/// tunnel to one address, as a parent that resolves the names itself would.
struct FakeParent {
    addr: SocketAddr,
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
    async fn http(to: SocketAddr, user: &'static str, password: &'static str) -> FakeParent {
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
    async fn socks5(to: SocketAddr) -> FakeParent {
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

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }

    fn http_url(&self, user: &str, password: &str) -> String {
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

/// A hoard whose only way to the fixture registry is `parent` (a proxy URL), with `proxy` lines
/// in its `[proxy]` section.
async fn child(registry: &Registry, parent: &str, proxy: &str) -> Proxy {
    let upstream = format!("proxy = \"{parent}\"");
    Proxy::start_extra(
        registry,
        Extra {
            proxy,
            upstream: &upstream,
            resolve: Some("{}"),
            ..Extra::default()
        },
    )
    .await
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, bytes::Bytes) {
    let response = client
        .get(url)
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap())
}

fn blob_url(digest: &str) -> String {
    url(&format!("/v2/lib/app/blobs/{digest}"))
}

/// A client that sends plain `http://` requests through `hoard`.
fn forwarder(hoard: &Proxy) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(hoard.url()).unwrap())
        .build()
        .unwrap()
}

/// The fixture registry, an HTTP CONNECT parent in front of it, and a child hoard behind that.
async fn behind_a_connect_parent() -> (Registry, FakeParent, Proxy) {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::http(registry.addr, USER, PASSWORD).await;
    let hoard = child(&registry, &parent.http_url(USER, PASSWORD_IN_URL), "").await;
    (registry, parent, hoard)
}

#[tokio::test]
async fn pulls_go_through_an_http_connect_parent_with_credentials() {
    let (registry, parent, hoard) = behind_a_connect_parent().await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());
    let manifest = Registry::manifest_json(&[(&digest, BLOB_SIZE)], "parent");
    registry.add_manifest("lib/app", "v1", DOCKER_V2, manifest.clone());

    let client = hoard.client(false);
    let (status, body) = get(&client, &url("/v2/lib/app/manifests/v1")).await;
    assert_eq!((status, body), (200, manifest));
    let (status, body) = get(&client, &blob_url(&digest)).await;
    assert_eq!(status, 200);
    assert_eq!(body, blob, "the blob arrived intact");

    let targets = parent.targets();
    assert!(!targets.is_empty(), "the parent saw no CONNECT");
    assert!(
        targets.iter().all(|t| t == "registry.test:443"),
        "{targets:?}"
    );
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn wrong_parent_credentials_are_a_bad_gateway_that_names_the_407() {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::http(registry.addr, USER, PASSWORD).await;
    let hoard = child(&registry, &parent.http_url(USER, "wrong"), "").await;
    let digest = registry.add_blob(fresh_blob(BLOB_SIZE));

    let response = hoard
        .client(false)
        .get(blob_url(&digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let reason = response.text().await.unwrap();
    assert!(reason.contains("407"), "{reason}");
    assert!(reason.contains(&parent.addr.to_string()), "{reason}");
    assert!(
        !reason.contains("wrong"),
        "the password is not shown: {reason}"
    );
    assert_eq!(parent.targets(), ["registry.test:443"]);
    assert!(registry.seen().is_empty(), "nothing reached the registry");
}

#[tokio::test]
async fn a_second_hoard_as_parent_tunnels_and_the_child_keeps_the_blob() {
    init();
    let registry = Registry::start().await;
    // The parent intercepts nothing and tunnels registry.test to the fixture (its resolve entry).
    let parent = Proxy::start_extra(
        &registry,
        Extra {
            intercept: Some("[]"),
            ..Extra::default()
        },
    )
    .await;
    let hoard = child(&registry, &parent.url(), "").await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());
    let client = hoard.client(false);

    let (status, body) = get(&client, &blob_url(&digest)).await;
    assert_eq!((status, body), (200, blob.clone()));
    hoard.settled().await;
    assert_eq!(std::fs::read(hoard.blob_path(&digest)).unwrap(), blob);
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        parent.server.admin_addr().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let connections = metrics.lines().find_map(|l| {
        l.strip_prefix("hoard_connections_total ")?
            .parse::<f64>()
            .ok()
    });
    assert!(
        connections.is_some_and(|n| n >= 1.0),
        "the parent served the child: {metrics}"
    );

    // With the parent and the registry gone, the blob comes from the child's store.
    drop(parent);
    registry.stop();
    let (status, body) = get(&client, &blob_url(&digest)).await;
    assert_eq!((status, body), (200, blob));
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn a_socks5_parent_gets_the_host_name_and_credentials() {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::socks5(registry.addr).await;
    let url_of_parent = format!("socks5h://{USER}:{PASSWORD_IN_URL}@{}", parent.addr);
    let hoard = child(&registry, &url_of_parent, "").await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());

    let (status, body) = get(&hoard.client(false), &blob_url(&digest)).await;
    assert_eq!(status, 200);
    assert_eq!(body, blob, "the blob arrived intact");
    assert_eq!(
        parent.targets(),
        ["registry.test:443"],
        "a name, not an address"
    );
}

#[tokio::test]
async fn no_proxy_destinations_skip_the_parent() {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::http(registry.addr, USER, PASSWORD).await;
    // The registry by its address (no_proxy) and by its name (through the parent).
    let port = registry.addr.port();
    let hoard = Proxy::start_extra(
        &registry,
        Extra {
            proxy: &format!("connect_ports = [443, {port}]"),
            intercept: Some(r#"["registry.test", "127.0.0.1"]"#),
            resolve: Some("{}"),
            upstream: &format!(
                "proxy = \"{}\"\nno_proxy = [\".example\", \"127.0.0.1\"]",
                parent.http_url(USER, PASSWORD_IN_URL)
            ),
            ..Extra::default()
        },
    )
    .await;
    let client = hoard.client(false);
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());

    let direct = format!("https://127.0.0.1:{port}/v2/lib/app/blobs/{digest}");
    let (status, body) = get(&client, &direct).await;
    assert_eq!((status, body), (200, blob.clone()));
    assert!(parent.targets().is_empty(), "{:?}", parent.targets());

    let other = fresh_blob(BLOB_SIZE);
    let other_digest = registry.add_blob(other.clone());
    let (status, body) = get(&client, &blob_url(&other_digest)).await;
    assert_eq!((status, body), (200, other));
    assert_eq!(parent.targets(), ["registry.test:443"]);
}

#[tokio::test]
async fn tunnels_go_through_the_parent_too() {
    let (registry, parent, hoard) = behind_a_connect_parent().await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());

    // cdn.test is not intercepted: the client's TLS goes through hoard and the parent untouched,
    // and the client checks the registry's own certificate.
    let client = client_via(&hoard.url(), &registry.ca.pem, false);
    let response = client
        .get(format!("https://{CDN}/cdn/b/final-{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), blob);
    assert_eq!(parent.targets(), [format!("{CDN}:443")]);
    assert_eq!(registry.seen().len(), 1);
    assert_eq!(registry.seen()[0].host, CDN);
}

#[tokio::test]
async fn private_addresses_are_refused_before_the_parent_unless_allowed() {
    init();
    let registry = Registry::start().await;
    let (echo, _echo_task) = echo_server().await;
    let parent = FakeParent::http(echo, USER, PASSWORD).await;
    let parent_url = parent.http_url(USER, PASSWORD_IN_URL);
    let echo_url = format!("http://{echo}/through-the-parent");

    let ports = format!("forward_ports = [{}]", echo.port());
    let guarded = child(&registry, &parent_url, &ports).await;
    let connect = raw(
        &guarded,
        "CONNECT 10.1.2.3:443 HTTP/1.1\r\nHost: 10.1.2.3:443\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 403"), "{connect}");
    let refused = forwarder(&guarded).get(&echo_url).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(parent.targets().is_empty(), "{:?}", parent.targets());

    // Allowed, a plain forward goes through the parent as a CONNECT too.
    let open = child(
        &registry,
        &parent_url,
        &format!("allow_private_destinations = true\n{ports}"),
    )
    .await;
    let response = forwarder(&open).get(&echo_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("GET /through-the-parent"), "{text}");
    assert_eq!(parent.targets(), [echo.to_string()]);
}

#[tokio::test]
async fn names_the_parent_would_resolve_inside_its_network_are_refused() {
    init();
    let registry = Registry::start().await;
    let (echo, _echo_task) = echo_server().await;
    let parent = FakeParent::http(echo, USER, PASSWORD).await;
    let parent_url = parent.http_url(USER, PASSWORD_IN_URL);
    let guarded = child(&registry, &parent_url, "").await;
    for host in [
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "10.0.0.1.",
        "localhost",
        "metadata",
        "db.localhost",
        "198.18.0.1",
        "[fec0::1]",
    ] {
        let connect = raw(
            &guarded,
            &format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n"),
        )
        .await;
        assert!(connect.starts_with("HTTP/1.1 403"), "{host}: {connect}");
    }
    let forward = forwarder(&guarded)
        .get("http://metadata/computeMetadata/v1/")
        .send()
        .await
        .unwrap();
    assert_eq!(forward.status(), 403);
    assert!(parent.targets().is_empty(), "{:?}", parent.targets());
}

#[tokio::test]
async fn a_reload_switches_the_parent() {
    let (registry, first, hoard) = behind_a_connect_parent().await;
    let second = FakeParent::http(registry.addr, USER, PASSWORD).await;
    let client = hoard.client(false);
    let one = registry.add_blob(fresh_blob(BLOB_SIZE));
    assert_eq!(get(&client, &blob_url(&one)).await.0, 200);
    assert_eq!(first.targets().len(), 1);

    let upstream = format!("proxy = \"{}\"", second.http_url(USER, PASSWORD_IN_URL));
    let extra = Extra {
        upstream: &upstream,
        resolve: Some("{}"),
        ..Extra::default()
    };
    let path = Proxy::write_config_with(hoard.dir.path(), &registry, "127.0.0.1:0", &extra);
    let config = hoard::Config::load(Some(&path), Default::default()).unwrap();
    hoard.server.reload(config).unwrap();

    let two = registry.add_blob(fresh_blob(BLOB_SIZE));
    assert_eq!(get(&client, &blob_url(&two)).await.0, 200);
    assert_eq!(first.targets().len(), 1, "the first parent is out");
    assert_eq!(second.targets(), ["registry.test:443"]);
}

#[test]
fn bad_parent_urls_stop_hoard_with_one_line_naming_the_key() {
    for (proxy, shown) in [
        ("ftp://x", "ftp://x"),
        ("http://", "http://"),
        ("http://alice:s3cret@:3128", "***@"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, format!("[upstream]\nproxy = \"{proxy}\"\n")).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hoard"))
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("upstream.proxy"), "{stderr}");
        assert!(stderr.contains(shown), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}
