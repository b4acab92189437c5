//! Safe to run for a team: proxy authentication, the client allow-list, the tunnel guard,
//! private content behind `auth_on_hit = "upstream"`, the name-constrained CA, and hostile input
//! answered with a 4xx while hoard goes on serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
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
    let mut tcp = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
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
    let mut tls = connector
        .connect(ServerName::try_from(REGISTRY).unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    read_some(&mut tls).await
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
        hoard::access::basic_header("alice", "looking-glass")
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
