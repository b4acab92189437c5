//! Redirects and upstream credentials: `Authorization` never goes elsewhere or over plain HTTP,
//! a redirect target's challenge is not answered with hoard's credentials, token lifetimes are
//! clamped.

use super::*;

#[tokio::test]
async fn redirects_are_followed_without_sending_authorization_elsewhere() {
    init();
    for h2 in [false, true] {
        let registry = Registry::start().await;
        registry.set_mode(Mode::Redirect);
        let proxy = Proxy::builder(&registry).start().await;
        let bytes = fresh_blob(BLOB_SIZE);
        let digest = registry.add_blob(bytes.clone());

        let response = proxy
            .client(h2)
            .get(blob_path("p/app", &digest))
            .bearer_auth("secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "the client sees the bytes, not a redirect"
        );
        assert_eq!(response.bytes().await.unwrap(), bytes);

        let seen = registry.seen();
        let hops: Vec<(&str, &str)> = seen
            .iter()
            .map(|s| (s.host.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(hops.len(), 4, "{hops:?}");
        assert_eq!(hops[0].0, REGISTRY);
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some("Bearer secret-token")
        );
        for hop in &seen[1..] {
            assert_eq!(hop.host, CDN);
            assert_eq!(
                hop.authorization, None,
                "Authorization leaked to {}",
                hop.path
            );
        }
        assert!(hops[3].1.ends_with(&format!("/cdn/b/final-{digest}")));
        proxy.settled().await;
        assert!(proxy.blob_path(&digest).exists());
    }
}

/// hoard's account for the fixture registry, as `[upstream]` TOML.
const HOARDS_CREDENTIALS: &str = "[[upstream.credentials]]\nhost = \"registry.test\"\nusername = \"hoard\"\npassword = \"s3cret\"\n";

#[tokio::test]
async fn a_redirect_targets_challenge_is_never_answered_with_hoards_credentials() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(Mode::RedirectToChallenge);
    let proxy = Proxy::builder(&registry)
        .upstream(HOARDS_CREDENTIALS)
        .start()
        .await;
    let digest = registry.add_blob(fresh_blob(1000));

    // A client without credentials: hoard would lend its own to the registry, but the 401 comes
    // from the CDN host the blob redirects to.
    let response = proxy
        .client(false)
        .get(blob_path("p/app", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the CDN's answer is passed on");

    let seen = registry.seen();
    let to_cdn: Vec<&Seen> = seen.iter().filter(|s| s.host == CDN).collect();
    assert!(!to_cdn.is_empty(), "the redirect was followed: {seen:?}");
    for hop in &to_cdn {
        assert_eq!(
            hop.authorization, None,
            "hoard sent credentials to the CDN host: {} {}",
            hop.method, hop.path
        );
        assert!(
            !hop.path.starts_with("/token"),
            "hoard fetched a token from the realm the CDN named: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_redirect_to_plain_http_never_carries_authorization() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(Mode::RedirectToHttp);
    let bytes = fresh_blob(1000);
    let digest = registry.add_blob(bytes.clone());
    // registry.test resolves to a port that speaks both: TLS goes on to the fixture, plain HTTP
    // (the redirect's hop) is answered here, with what it carried written down.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mux = listener.local_addr().unwrap();
    let plain: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let (heads, upstream, body) = (plain.clone(), registry.addr, bytes.clone());
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let (heads, body) = (heads.clone(), body.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                if first[0] == 0x16 {
                    let mut registry = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut registry).await;
                    return;
                }
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.write_all(&body).await;
            });
        }
    });
    let resolve = format!(
        r#"{{ "{REGISTRY}" = "{mux}", "{CDN}" = "{}" }}"#,
        registry.addr
    );
    let proxy = Proxy::builder(&registry).resolve(&resolve).start().await;

    let response = proxy
        .client(false)
        .get(blob_path("p/app", &digest))
        .bearer_auth("secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), bytes);
    let seen = registry.seen();
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer secret-token"),
        "the registry itself, over TLS, gets the client's credentials"
    );
    let heads = plain.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "one plain-HTTP hop: {heads:?}");
    assert!(
        heads[0].starts_with(&format!("GET /plain/{digest} ")),
        "{}",
        heads[0]
    );
    assert!(
        !heads[0].to_ascii_lowercase().contains("authorization"),
        "Authorization went out over plain HTTP:\n{}",
        heads[0]
    );
    task.abort();
}

#[tokio::test]
async fn huge_or_negative_token_lifetimes_are_clamped_not_a_crash() {
    init();
    for expires_in in ["18446744073709551615", "1e300", "-5", "\"soon\""] {
        let registry = Registry::start().await;
        registry.require("p/private", "Bearer tok");
        registry.serve_token(&format!(r#"{{"token":"tok","expires_in":{expires_in}}}"#));
        let credentials = format!(
            "[[upstream.credentials]]\nhost = \"{REGISTRY}\"\nusername = \"hoard\"\npassword = \"pw\""
        );
        let proxy = Proxy::builder(&registry)
            .upstream(&credentials)
            .start()
            .await;
        let client = proxy.client(false);

        // Two blobs: the first gets the token, the second uses it.
        for _ in 0..2 {
            let bytes = fresh_blob(BLOB_SIZE);
            let digest = registry.add_blob(bytes.clone());
            let response = client
                .get(blob_path("p/private", &digest))
                .send()
                .await
                .unwrap_or_else(|e| panic!("expires_in {expires_in}: {e:?}"));
            assert_eq!(response.status(), 200, "expires_in {expires_in}");
            assert_eq!(response.bytes().await.unwrap(), bytes);
        }
        assert_eq!(
            registry.count("GET", "/token"),
            1,
            "expires_in {expires_in}: the token was kept for the second request"
        );
    }
}
