//! Safe to run for a team: proxy authentication (throttled, with no user-name probing), the
//! client allow-list, the tunnel guard, private content behind `auth_on_hit = "upstream"`, the
//! name-constrained CA, hostile input answered with a 4xx while hoard goes on serving, and
//! connection bounds that a flood cannot use to lock others out.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::common::*;
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes to the proxy port and returns what came back (up to 8 KiB or 5 s).
async fn raw(proxy: &Proxy, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_some(&mut tcp).await
}

async fn read_some(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
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

#[tokio::test]
async fn proxy_authentication_guards_connect_and_plain_requests() {
    init();
    let registry = Registry::start().await;
    let users = tempfile::tempdir().unwrap();
    let (echo, _server) = echo_server().await;
    let proxy_extra = format!(
        "auth_file = \"{}\"\nallow_private_destinations = true\nforward_ports = [{}]",
        htpasswd(users.path()).display(),
        echo.port()
    );
    let extra = Extra {
        proxy: &proxy_extra,
        ..Extra::default()
    };
    let proxy = Proxy::start_extra(&registry, extra).await;

    let connect = raw(
        &proxy,
        format!("CONNECT {REGISTRY}:443 HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 407"), "{connect}");
    assert!(
        connect.contains("proxy-authenticate: Basic realm=\"hoard\""),
        "{connect}"
    );
    let plain = raw(
        &proxy,
        format!("GET http://{echo}/ HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 407"), "{plain}");
    let wrong = format!(
        "GET http://{echo}/ HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: {}\r\n\r\n",
        hoard::http::basic_header("alice", "looking-glass")
    );
    assert!(
        raw(&proxy, wrong.as_bytes())
            .await
            .starts_with("HTTP/1.1 407")
    );
    // The CA certificate stays reachable without credentials.
    let ca = raw(&proxy, b"GET /ca.crt HTTP/1.1\r\nHost: hoard\r\n\r\n").await;
    assert!(ca.starts_with("HTTP/1.1 200"), "{ca}");
    let setup = raw(&proxy, b"GET /setup/docker HTTP/1.1\r\nHost: hoard\r\n\r\n").await;
    assert!(setup.starts_with("HTTP/1.1 200"), "{setup}");
    assert!(!setup.contains("wonderland"), "no secret in the script");

    let with_user = |url: &str| {
        reqwest::Proxy::all(url)
            .unwrap()
            .basic_auth("alice", "wonderland")
    };
    let client = reqwest::Client::builder()
        .proxy(with_user(&proxy.url()))
        .tls_certs_only([reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let ping = client.get(url("/v2/")).send().await.unwrap();
    assert_eq!(
        ping.status(),
        200,
        "CONNECT with credentials is intercepted"
    );
    let forwarded = client.get(format!("http://{echo}/x")).send().await.unwrap();
    assert_eq!(forwarded.status(), 200);
    let echoed = forwarded.text().await.unwrap();
    assert!(
        !echoed.contains("proxy-authorization"),
        "credentials are not forwarded: {echoed}"
    );
}

#[tokio::test]
async fn the_client_allow_list_refuses_other_addresses() {
    init();
    let registry = Registry::start().await;
    let elsewhere = Proxy::start_extra(
        &registry,
        Extra {
            proxy: "allow_clients = [\"10.0.0.0/8\", \"fd00::/8\"]",
            ..Extra::default()
        },
    )
    .await;
    let refused = raw(
        &elsewhere,
        format!("CONNECT {REGISTRY}:443 HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("127.0.0.1 is not in proxy.allow_clients"),
        "{refused}"
    );

    let here = Proxy::start_extra(
        &registry,
        Extra {
            proxy: "allow_clients = [\"127.0.0.0/8\"]",
            ..Extra::default()
        },
    )
    .await;
    let ping = here.client(false).get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
}

#[tokio::test]
async fn tunnels_and_forwards_to_private_addresses_or_other_ports_are_refused() {
    init();
    let registry = Registry::start().await;
    let (echo, _server) = echo_server().await;
    // The echo server's port is allowed, so the refusal of a forward to it is the guard's.
    let ports = format!("forward_ports = [80, {}]", echo.port());
    let extra = Extra {
        proxy: &ports,
        ..Extra::default()
    };
    let proxy = Proxy::start_extra(&registry, extra).await;

    // A name that resolves to loopback is refused on the resolved address.
    for target in [
        "localhost:443",
        "127.0.0.1:443",
        "[::1]:443",
        "169.254.169.254:443",
    ] {
        let response = raw(
            &proxy,
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 403"), "{target}: {response}");
        assert!(
            response.contains("allow_private_destinations"),
            "{target}: {response}"
        );
    }
    let port = raw(&proxy, b"CONNECT example.com:22 HTTP/1.1\r\n\r\n").await;
    assert!(port.starts_with("HTTP/1.1 403"), "{port}");
    assert!(port.contains("port 22"), "{port}");
    let plain = raw(
        &proxy,
        format!(
            "GET http://localhost:{}/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
            echo.port()
        )
        .as_bytes(),
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 403"), "{plain}");
    assert!(plain.contains("allow_private_destinations"), "{plain}");
    // Plain forwards reach only proxy.forward_ports (80 by default).
    let other_port = raw(
        &proxy,
        b"GET http://example.com:25/ HTTP/1.1\r\nHost: example.com:25\r\n\r\n",
    )
    .await;
    assert!(other_port.starts_with("HTTP/1.1 403"), "{other_port}");
    assert!(other_port.contains("proxy.forward_ports"), "{other_port}");

    // The intercepted registry is the operator's own and may live anywhere (here: loopback).
    let ping = proxy.client(true).get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
}

#[tokio::test]
async fn auth_on_hit_upstream_keeps_private_content_private() {
    init();
    let registry = Registry::start().await;
    registry.require("team/secret", "Bearer good");
    let proxy = Proxy::start(&registry, "auth_on_hit = \"upstream\"").await;
    let layer = fresh_blob(10_000);
    let digest = registry.add_blob(layer.clone());
    let manifest = Registry::manifest_json(&[(&digest, 10_000)], "secret");
    let manifest_digest = registry.add_manifest("team/secret", "v1", DOCKER_V2, manifest.clone());
    let client = proxy.client(false);
    let blob = url(&format!("/v2/team/secret/blobs/{digest}"));
    let by_digest = url(&format!("/v2/team/secret/manifests/{manifest_digest}"));

    // The owner pulls: now both are cached.
    for path in [&by_digest, &blob] {
        let got = client.get(path).bearer_auth("good").send().await.unwrap();
        assert_eq!(got.status(), 200);
    }
    assert_eq!(registry.count("GET", "/blobs/"), 1);

    // Nobody else gets them from the cache.
    for path in [&by_digest, &blob] {
        let anonymous = client.get(path).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
        assert!(anonymous.headers().contains_key("www-authenticate"));
        let wrong = client.get(path).bearer_auth("bad").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    // The owner still does, from the cache: the registry saw HEADs, not another GET.
    let again = client.get(&blob).bearer_auth("good").send().await.unwrap();
    assert_eq!(again.bytes().await.unwrap(), layer);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
    assert!(registry.count("HEAD", "/blobs/") >= 1);

    // The verdict is remembered: no HEAD for a repeat within minutes.
    let heads = registry.count("HEAD", "/blobs/");
    client.get(&blob).bearer_auth("good").send().await.unwrap();
    assert_eq!(registry.count("HEAD", "/blobs/"), heads);

    // Registry down: the owner, accepted before, is still served; a stranger is not.
    registry.set_mode(Mode::Down);
    let offline = client
        .get(&by_digest)
        .bearer_auth("good")
        .send()
        .await
        .unwrap();
    assert_eq!(offline.status(), 200);
    let stranger = client
        .get(&by_digest)
        .bearer_auth("other")
        .send()
        .await
        .unwrap();
    assert!(stranger.status().is_server_error(), "{}", stranger.status());
}

#[tokio::test]
async fn offline_an_object_goes_only_to_credentials_accepted_for_a_repository_it_came_from() {
    init();
    let registry = Registry::start().await;
    registry.require("team/secret", "Bearer good");
    registry.require("team/public", "Bearer pub");
    let proxy = Proxy::start(&registry, "auth_on_hit = \"upstream\"").await;
    let client = proxy.client(false);
    let secret = fresh_blob(10_000);
    let secret_digest = registry.add_blob(secret.clone());
    let manifest = Registry::manifest_json(&[(&secret_digest, 10_000)], "secret");
    let manifest_digest = registry.add_manifest("team/secret", "v1", DOCKER_V2, manifest);
    let public_digest = registry.add_blob(fresh_blob(5_000));
    let get = |path: String, token: &str| client.get(url(&path)).bearer_auth(token).send();

    // The owner pulls the private image; someone else pulls from a repository of their own.
    for path in [
        format!("/v2/team/secret/manifests/{manifest_digest}"),
        format!("/v2/team/secret/blobs/{secret_digest}"),
    ] {
        assert_eq!(get(path, "good").await.unwrap().status(), 200);
    }
    let public = format!("/v2/team/public/blobs/{public_digest}");
    assert_eq!(get(public.clone(), "pub").await.unwrap().status(), 200);
    proxy.settled().await;
    // The origins are written in the background: give them a moment.
    let origins = proxy.cache_dir().join("origins");
    let recorded = |kind: &str, digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        origins.join(kind).join("sha256").join(&hex[..2]).join(hex)
    };
    let files = [
        recorded("blobs", &secret_digest),
        recorded("manifests", &manifest_digest),
        recorded("blobs", &public_digest),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !files.iter().all(|f| f.exists()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    registry.set_mode(Mode::Down);
    // Accepted for team/public, asking for the private objects under team/public's name.
    for path in [
        format!("/v2/team/public/blobs/{secret_digest}"),
        format!("/v2/team/public/manifests/{manifest_digest}"),
    ] {
        let stranger = get(path.clone(), "pub").await.unwrap();
        assert_eq!(stranger.status(), 503, "{path}");
    }
    // Their own object still comes (a remembered verdict), and the owner gets the private one
    // under any name: the registry accepted the owner for a repository it came from.
    assert_eq!(get(public, "pub").await.unwrap().status(), 200);
    let owner = get(format!("/v2/team/mirror/blobs/{secret_digest}"), "good")
        .await
        .unwrap();
    assert_eq!(owner.status(), 200);
    assert_eq!(owner.bytes().await.unwrap(), secret);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(text, "registry.test team/secret\n");

    // An entry whose origins are unknown (stored by an older hoard) waits for the registry.
    std::fs::remove_dir_all(&origins).unwrap();
    let unknown = get(format!("/v2/team/other/blobs/{secret_digest}"), "good")
        .await
        .unwrap();
    assert_eq!(unknown.status(), 503);
}

#[tokio::test]
async fn a_name_constrained_ca_signs_only_the_intercepted_domains() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start_extra(
        &registry,
        Extra {
            ca: "name_constraints = true",
            ..Extra::default()
        },
    )
    .await;
    // hoard's own leaf for the intercepted host verifies.
    let ping = proxy.client(false).get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);

    // Anyone holding the CA key still cannot make a certificate another site would accept.
    let key_pem = std::fs::read_to_string(proxy.dir.path().join("ca/ca.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&proxy.ca_pem, key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(proxy.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let verify = |name: &str| {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        verifier.verify_server_cert(
            leaf.der(),
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
    };
    assert!(verify(REGISTRY).is_ok());
    let forged = verify("bank.example").unwrap_err().to_string();
    assert!(forged.to_lowercase().contains("name"), "{forged}");
    assert!(verify("127.0.0.1").is_err());
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_with_a_reason_and_hoard_keeps_serving() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "").await;
    let bytes = fresh_blob(1000);
    let digest = registry.add_blob(bytes.clone());

    for (path, reason) in [
        ("/v2/a/%2e%2e/%2e%2e/manifests/latest", "dot segments"),
        ("/v2/../../etc/passwd/manifests/x", "dot segments"),
        ("/v2/a/blobs/sha256:../../../etc/passwd", "dot segments"),
        ("/v2/a/blobs/sha256:abc", "invalid digest"),
        (
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            "invalid digest",
        ),
        ("/v2/UPPER/manifests/latest", "invalid repository"),
        ("/v2/a/manifests/-tag", "invalid tag"),
    ] {
        let response = raw_intercepted(
            &proxy,
            format!("GET {path} HTTP/1.1\r\nHost: {REGISTRY}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        assert!(response.contains(reason), "{path}: {response}");
    }
    let range = raw_intercepted(
        &proxy,
        format!(
            "GET /v2/a/blobs/{digest} HTTP/1.1\r\nHost: {REGISTRY}\r\nRange: bytes=oops\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(range.starts_with("HTTP/1.1 416"), "{range}");

    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {REGISTRY}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(80 << 10)
    );
    let too_big = raw(&proxy, huge.as_bytes()).await;
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    let garbage = raw(&proxy, b"\x16\x03\x01\x00\xff garbage\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let no_port = raw(&proxy, b"CONNECT registry.test HTTP/1.1\r\n\r\n").await;
    assert!(no_port.starts_with("HTTP/1.1 400"), "{no_port}");

    // None of it left hoard unable to serve.
    let got = proxy
        .client(true)
        .get(url(&format!("/v2/a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), bytes);
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
    let extra = Extra {
        proxy: proxy_extra,
        ..Extra::default()
    };
    Proxy::start_extra(registry, extra).await
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

/// Connects to `to` from the loopback address `ip` (all of 127/8 is local on Linux), so hoard
/// sees another client.
async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
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

/// A client builder through hoard, trusting only hoard's CA.
fn through(proxy: &Proxy) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap()])
}

/// Whether hoard closed `tcp` within `wait` (EOF or reset), rather than leaving it open.
async fn closed_within(tcp: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(wait, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn every_connection_counts_against_the_limit_and_idle_tunnels_close() {
    init();
    let registry = Registry::start().await;
    let silent = silent_server().await;
    let proxy_extra = format!(
        "max_connections = 20\nidle_timeout = \"1s\"\n{}",
        silent.allowed()
    );
    let proxy = proxy_with(&registry, &proxy_extra).await;
    let addr = proxy.server.local_addr();
    let connect = silent.connect_request();

    let clients: Vec<_> = (0..300)
        .map(|_| {
            let connect = connect.clone();
            tokio::spawn(async move {
                let mut tcp =
                    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                        .await
                        .ok()?
                        .ok()?;
                tcp.write_all(connect.as_bytes()).await.ok()?;
                if !read_some(&mut tcp).await.starts_with("HTTP/1.1 200") {
                    return None;
                }
                let opened = std::time::Instant::now();
                let closed = closed_within(&mut tcp, Duration::from_secs(5)).await;
                Some((closed, opened.elapsed()))
            })
        })
        .collect();
    let mut tunnels = Vec::new();
    for client in clients {
        tunnels.extend(client.await.unwrap());
    }

    let most = silent.most.load(SeqCst);
    assert!(
        most <= 20,
        "{most} tunnels were open at once with max_connections = 20"
    );
    assert!(tunnels.len() >= 20, "only {} tunnels opened", tunnels.len());
    for (closed, after) in &tunnels {
        assert!(*closed, "an idle tunnel was still open after {after:?}");
        assert!(
            *after >= Duration::from_millis(900),
            "closed after {after:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(silent.open.load(SeqCst), 0, "the server side is closed too");
}

#[tokio::test]
async fn intercepted_connections_close_when_idle_even_when_pinged() {
    init();
    let registry = Registry::start().await;
    let proxy = proxy_with(&registry, "idle_timeout = \"1s\"").await;
    let metrics_url = format!("http://{}/metrics", proxy.server.admin_addr().unwrap());
    let open = || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("hoard_connections_open ")?
                    .trim()
                    .parse::<i64>()
                    .ok()
            })
            .unwrap()
    };
    // An h2 client that keeps pinging its idle connection, as hoard's own PINGs would.
    let client = through(&proxy)
        .http2_keep_alive_interval(Duration::from_millis(200))
        .http2_keep_alive_while_idle(true)
        .build()
        .unwrap();
    let ping = client.get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.version(), reqwest::Version::HTTP_2);
    assert_eq!(ping.status(), 200);
    drop(ping);
    assert_eq!(open().await, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an intercepted h2 connection with no request was still open after 5 s (idle_timeout 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And an idle HTTP/1.1 one.
    let h1 = proxy.client(false);
    assert_eq!(h1.get(url("/v2/")).send().await.unwrap().status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "h1 still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_flood_from_one_address_does_not_lock_out_other_clients() {
    init();
    let registry = Registry::start().await;
    // The default connection settings.
    let proxy = Proxy::start(&registry, "").await;
    let bytes = fresh_blob(10_000);
    let digest = registry.add_blob(bytes.clone());
    let addr = proxy.server.local_addr();

    // 1,000 connections that say nothing and 50 that stop halfway through a request head, all
    // from 127.0.0.1.
    // Opened 50 at a time, so that the kernel's SYN queue takes them all.
    let mut flood = Vec::new();
    for batch in (0..1050).collect::<Vec<_>>().chunks(50) {
        let opening: Vec<_> = batch
            .iter()
            .map(|&i| {
                tokio::spawn(async move {
                    let mut tcp =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                            .await
                            .ok()?
                            .ok()?;
                    if i >= 1000 {
                        tcp.write_all(b"GET http://example.com/ HTTP/1.1\r\nHost: exa")
                            .await
                            .ok()?;
                    }
                    Some(tcp)
                })
            })
            .collect();
        for tcp in opening {
            flood.extend(tcp.await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another client is answered within 5 s: a local answer, and a blob through the cache.
    let start = std::time::Instant::now();
    assert!(
        flood.len() > 1024,
        "only {} flood connections opened",
        flood.len()
    );
    let (_other, health) = healthz_from("127.0.0.2", addr).await;
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "another client got {health:?} after {:?} during the flood",
        start.elapsed()
    );
    let client = through(&proxy)
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let got = client
        .get(url(&format!("/v2/a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), bytes);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        start.elapsed()
    );
    eprintln!(
        "{} flood connections open; another client's /healthz and blob took {:?}",
        flood.len(),
        start.elapsed()
    );
    drop(flood);
}

#[tokio::test]
async fn at_the_limit_the_oldest_connection_without_a_request_makes_room() {
    init();
    let registry = Registry::start().await;
    let silent = silent_server().await;
    let proxy_extra = format!("max_connections = 20\n{}", silent.allowed());
    let proxy = proxy_with(&registry, &proxy_extra).await;
    let addr = proxy.server.local_addr();

    // The oldest connection is a tunnel: busy for its whole life, never evicted.
    let mut tunnel = connect_from("127.0.0.3", addr).await;
    tunnel
        .write_all(silent.connect_request().as_bytes())
        .await
        .unwrap();
    assert!(read_some(&mut tunnel).await.starts_with("HTTP/1.1 200"));
    // Then an intercepted CONNECT that never starts its TLS handshake, an idle keep-alive
    // connection, and 17 that never sent a head: 20 in all.
    let mut no_handshake = connect_from("127.0.0.3", addr).await;
    no_handshake
        .write_all(
            format!("CONNECT {REGISTRY}:443 HTTP/1.1\r\nHost: {REGISTRY}:443\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    assert!(
        read_some(&mut no_handshake)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let (mut keep_alive, head) = healthz_from("127.0.0.3", addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut silent_ones = Vec::new();
    for _ in 0..17 {
        silent_ones.push(connect_from("127.0.0.4", addr).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two newcomers: each is answered, and each closes the oldest connection with no request
    // in flight.
    let mut newcomers = Vec::new();
    for (newcomer, oldest) in [
        ("127.0.0.5", &mut no_handshake),
        ("127.0.0.6", &mut keep_alive),
    ] {
        let start = std::time::Instant::now();
        let (tcp, answer) = healthz_from(newcomer, addr).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{answer:?} after {:?}",
            start.elapsed()
        );
        assert!(
            closed_within(oldest, Duration::from_secs(2)).await,
            "the oldest connection with no request in flight was not closed"
        );
        newcomers.push(tcp);
    }
    assert!(
        !closed_within(&mut silent_ones[0], Duration::from_millis(300)).await,
        "a younger idle connection was closed too"
    );
    assert!(
        !closed_within(&mut tunnel, Duration::from_millis(300)).await,
        "the tunnel was closed"
    );
    assert_eq!(silent.open.load(SeqCst), 1);
}

#[tokio::test]
async fn intercepted_connections_count_against_the_limit_after_the_upgrade() {
    init();
    let registry = Registry::start().await;
    let proxy = proxy_with(&registry, "max_connections = 3").await;
    let addr = proxy.server.local_addr();
    // Three intercepted connections, each between requests.
    let mut intercepted = Vec::new();
    for _ in 0..3 {
        let tcp = connect_from("127.0.0.3", addr).await;
        let mut tls = intercepted_over(&proxy, tcp).await;
        tls.write_all(format!("HEAD /v2/ HTTP/1.1\r\nHost: {REGISTRY}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = read_some(&mut tls).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        intercepted.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // They fill the limit: a newcomer gets the place of the oldest.
    let (_newcomer, answer) = healthz_from("127.0.0.5", addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        closed_within(&mut intercepted[0], Duration::from_secs(2)).await,
        "the intercepted connections did not count: none was closed to make room"
    );
    assert!(!closed_within(&mut intercepted[1], Duration::from_millis(300)).await);
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

#[tokio::test]
async fn an_unknown_proxy_user_costs_as_much_as_a_wrong_password() {
    init();
    let registry = Registry::start().await;
    let proxy = proxy_with_alice(&registry, 10).await;
    let timed = |user: &'static str, from: &'static str| {
        let proxy = &proxy;
        async move {
            let mut fastest = Duration::MAX;
            for _ in 0..3 {
                let start = std::time::Instant::now();
                let answer = login(proxy, from, user, "guess").await;
                assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
                fastest = fastest.min(start.elapsed());
            }
            fastest
        }
    };
    let wrong_password = timed("alice", "127.0.0.7").await;
    let unknown_user = timed("mallory", "127.0.0.8").await;
    assert!(
        unknown_user * 2 >= wrong_password,
        "an unknown user is refused in {unknown_user:?}, a wrong password in {wrong_password:?}: \
         user names can be probed"
    );
}

#[tokio::test]
async fn failed_proxy_logins_are_throttled_per_address() {
    init();
    let registry = Registry::start().await;
    let proxy = proxy_with_alice(&registry, 4).await;
    // alice logs in from 127.0.0.9 before a guesser there starts.
    let ok = login(&proxy, "127.0.0.9", "alice", "wonderland").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    for attempt in 0..10 {
        let answer = login(&proxy, "127.0.0.9", "alice", &format!("guess{attempt}")).await;
        assert!(
            answer.starts_with("HTTP/1.1 407"),
            "attempt {attempt}: {answer}"
        );
    }
    let throttled = login(&proxy, "127.0.0.9", "alice", "guess10").await;
    assert!(throttled.starts_with("HTTP/1.1 429"), "{throttled}");
    assert!(throttled.contains("retry-after: "), "{throttled}");
    assert!(
        throttled.contains("too many failed proxy logins"),
        "{throttled}"
    );
    // No new credentials are checked from there now...
    let other = login(&proxy, "127.0.0.9", "mallory", "wonderland").await;
    assert!(other.starts_with("HTTP/1.1 429"), "{other}");
    // ...but credentials verified before still work, and other addresses are not affected.
    let verified = login(&proxy, "127.0.0.9", "alice", "wonderland").await;
    assert!(verified.starts_with("HTTP/1.1 200"), "{verified}");
    let elsewhere = login(&proxy, "127.0.0.10", "alice", "nope").await;
    assert!(elsewhere.starts_with("HTTP/1.1 407"), "{elsewhere}");
}
