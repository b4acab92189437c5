//! h2 on the TLS mirror with a client whose windows the test sets (the `h2` crate's client):
//! hits from memory answered in front of hyper and every other request answered by hyper,
//! streams of both kinds at once on one connection, and the client's flow-control windows
//! kept whoever answers (the client ends the connection if a window is overrun).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::net::TcpStream;

use crate::common::*;

const NAME: &str = "mirror.test";

/// A mirror with TLS by hoard's CA for [`NAME`], and a blob of `len` bytes filled through it
/// (asked twice: the second answer comes from the file, and memory keeps it).
async fn mirror_with_blob(registry: &Registry, len: usize) -> (Proxy, Bytes, String) {
    let blob = fresh_blob(len);
    let digest = registry.add_blob(blob.clone());
    let proxy = Proxy::builder(registry)
        .mirror(&format!("listen = \"127.0.0.1:0\"\nnames = [\"{NAME}\"]"))
        .start()
        .await;
    let ca = reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(NAME, proxy.server.mirror_addr().unwrap())
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let path = format!("/v2/p/app/blobs/{digest}?ns={REGISTRY}");
    let port = proxy.server.mirror_addr().unwrap().port();
    for _ in 0..2 {
        let got = client
            .get(format!("https://{NAME}:{port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap(), blob);
    }
    (proxy, blob, path)
}

/// An h2 connection to the mirror with the given stream and connection windows.
async fn connect(
    proxy: &Proxy,
    stream_window: u32,
    connection_window: u32,
) -> h2::client::SendRequest<Bytes> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der(&proxy.ca_pem)).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(hoard::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(proxy.server.mirror_addr().unwrap())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from(NAME).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .initial_connection_window_size(connection_window)
        .handshake(tls)
        .await
        .unwrap();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            panic!("the h2 connection failed: {err}");
        }
    });
    send
}

fn ca_der(pem: &str) -> rustls_pki_types::CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// One request on `send`: the status, the headers and the whole body.
async fn ask(
    send: &h2::client::SendRequest<Bytes>,
    method: Method,
    path: &str,
    range: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("https://{NAME}{path}"));
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let mut send = send.clone().ready().await.unwrap();
    let (response, _) = send.send_request(request.body(()).unwrap(), true).unwrap();
    let response = response.await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        bytes.extend_from_slice(&chunk);
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    (parts.status, parts.headers, bytes.into())
}

fn hits(metrics: &str) -> f64 {
    sample(
        metrics,
        "hoard_requests_total{cache=\"HIT\",via=\"mirror\"}",
    )
}

#[tokio::test]
async fn hits_from_memory_and_hyper_s_answers_share_one_h2_connection() {
    init();
    let registry = Registry::start().await;
    let (proxy, blob, path) = mirror_with_blob(&registry, 4096).await;
    // Larger than memory keeps (64 KiB): hyper answers it, from the file.
    let big = fresh_blob(300 << 10);
    let big_digest = registry.add_blob(big.clone());
    let big_path = format!("/v2/p/app/blobs/{big_digest}?ns={REGISTRY}");
    let send = connect(&proxy, 1 << 20, 1 << 30).await;
    let (status, _, body) = ask(&send, Method::GET, &big_path, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, big.clone()),
        "the big blob's fill"
    );
    let before = hits(&proxy.admin("/metrics").await);

    // Generous windows, as Go's and nghttp2's clients open with.
    let digest = path
        .split("/blobs/")
        .nth(1)
        .and_then(|p| p.split('?').next())
        .unwrap()
        .to_owned();
    let mut asks = Vec::new();
    for round in 0..8 {
        let send = send.clone();
        let (path, big_path) = (path.clone(), big_path.clone());
        asks.push(tokio::spawn(async move {
            let got = match round % 4 {
                0 => ask(&send, Method::GET, &path, None).await,
                1 => ask(&send, Method::HEAD, &path, None).await,
                2 => ask(&send, Method::GET, &path, Some("bytes=0-9")).await,
                _ => ask(&send, Method::GET, &big_path, None).await,
            };
            (round, got)
        }));
    }
    for asked in asks {
        let (round, (status, headers, body)) = asked.await.unwrap();
        match round % 4 {
            0 => {
                assert_eq!(status, 200);
                assert_eq!(body, blob);
                assert_eq!(headers["docker-content-digest"], digest.as_str());
                assert_eq!(headers["content-length"], "4096");
                assert!(headers.contains_key("date"));
            }
            1 => {
                assert_eq!(status, 200);
                assert_eq!(headers["content-length"], "4096");
                assert!(body.is_empty());
            }
            2 => {
                assert_eq!(status, 206);
                assert_eq!(body, blob[..10]);
            }
            _ => {
                assert_eq!(status, 200);
                assert_eq!(body, big, "the big blob");
            }
        }
    }
    let after = hits(&proxy.admin("/metrics").await);
    assert_eq!(after - before, 8.0, "hits counted");
    assert_eq!(
        registry.count("GET", &digest),
        1,
        "the registry was asked once"
    );
}

#[tokio::test]
async fn an_h2_client_s_small_windows_are_kept() {
    init();
    let registry = Registry::start().await;
    let (proxy, blob, path) = mirror_with_blob(&registry, 40 << 10).await;
    // Large windows (memory answers, in three DATA frames); a stream window smaller than the
    // blob; the connection window h2 starts with and never more; both small.
    for (stream_window, connection_window) in [
        (1 << 20, 1 << 30),
        (1000, 1 << 30),
        (1 << 20, 65_535),
        (1000, 65_535),
    ] {
        let send = connect(&proxy, stream_window, connection_window).await;
        for _ in 0..3 {
            let (status, _, body) = ask(&send, Method::GET, &path, None).await;
            assert_eq!(status, 200, "windows {stream_window}/{connection_window}");
            assert_eq!(body, blob, "windows {stream_window}/{connection_window}");
        }
    }
}
