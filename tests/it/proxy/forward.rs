//! What is not cached: other registry calls forwarded with their bodies, tunnels to other hosts,
//! plain HTTP without hop-by-hop headers, and the front door's own answers.

use super::*;

#[tokio::test]
async fn other_registry_calls_are_forwarded_with_their_bodies() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    for h2 in [false, true] {
        let client = proxy.client(h2);
        let upload = client
            .post(url("/v2/p/app/blobs/uploads/"))
            .body(vec![7u8; 12345])
            .send()
            .await
            .unwrap();
        assert_eq!(upload.status(), 202);
        assert_eq!(upload.text().await.unwrap(), "upload to p/app: 12345");
        let tags = client.get(url("/v2/p/app/tags/list")).send().await.unwrap();
        assert_eq!(tags.text().await.unwrap(), r#"{"tags":["latest"]}"#);
    }
    assert_eq!(registry.count("POST", "/blobs/uploads/"), 2);
    assert_eq!(registry.count("GET", "/tags/list"), 2);
}

#[tokio::test]
async fn connect_to_other_hosts_is_a_byte_for_byte_tunnel() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .tunnels_to_registry()
        .start()
        .await;
    // Trusting only the fixture's CA: this works only if hoard did not intercept.
    let client = client_via(&proxy.url(), &registry.ca.pem, true);
    let response = client
        .get(format!("https://127.0.0.1:{}/v2/", registry.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{}");

    // And an intercepted host is not tunnelled: the fixture's CA alone does not verify hoard's leaf.
    let intercepted = client.get(url("/v2/")).send().await;
    assert!(intercepted.is_err());
}

#[tokio::test]
async fn plain_http_is_forwarded_without_hop_by_hop_headers() {
    init();
    let registry = Registry::start().await;
    let (addr, _server) = echo_server().await;
    let ports = format!(
        "allow_private_destinations = true\nforward_ports = [{}]",
        addr.port()
    );
    let proxy = Proxy::builder(&registry).proxy(&ports).start().await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!("http://{addr}/some/path?q=1"))
        .header("connection", "x-private")
        .header("x-private", "do not forward")
        .header("x-kept", "yes")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("x-secret").is_none(),
        "response hop-by-hop removed"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("POST /some/path?q=1\n"), "{text}");
    assert!(text.contains("x-kept: yes"), "{text}");
    assert!(text.contains("body: 5"), "{text}");
    assert!(!text.contains("x-private"), "{text}");
    assert!(!text.contains("proxy-authorization"), "{text}");
}

#[tokio::test]
async fn front_door_serves_the_ca_and_explains_bad_requests() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;

    let ca = reqwest::get(format!("{}/ca.crt", proxy.url()))
        .await
        .unwrap();
    assert_eq!(ca.status(), 200);
    assert_eq!(ca.text().await.unwrap(), proxy.ca_pem);
    let key = proxy.dir.path().join("ca/ca.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let no_port = raw(
        &proxy,
        "CONNECT registry.test HTTP/1.1\r\nHost: registry.test\r\n\r\n",
    )
    .await;
    assert!(no_port.starts_with("HTTP/1.1 400"), "{no_port}");
    assert!(no_port.contains("CONNECT needs host:port"), "{no_port}");

    let origin = raw(&proxy, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(origin.starts_with("HTTP/1.1 400"), "{origin}");
    assert!(origin.contains("hoard is a proxy"), "{origin}");

    let garbage = raw(&proxy, "NOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");

    // Still serving after all that.
    let again = reqwest::get(format!("{}/ca.crt", proxy.url()))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

/// An upstream that cannot be reached is named in the 502 as the client asked for it, port
/// included, on every path: an intercepted registry, a tunnel, a plain forward. The address it
/// resolved to and the system's error are in hoard's log only.
#[tokio::test]
async fn an_unreachable_upstream_is_named_as_host_and_port_the_client_asked_for() {
    init();
    let registry = Registry::start().await;
    let closed = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::builder(&registry)
        .intercept(r#"["down.test"]"#)
        .resolve(&format!(
            r#"{{ "down.test" = "{closed}", "gone.test" = "{closed}" }}"#
        ))
        .start()
        .await;
    let unexposed = |answer: &str| !answer.contains("127.0.0.1") && !answer.contains("os error");

    let intercepted = proxy
        .client(false)
        .get("https://down.test/v2/p/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(intercepted.status(), 502);
    let body = intercepted.text().await.unwrap();
    assert!(body.contains("cannot connect to down.test:443"), "{body}");
    assert!(unexposed(&body), "{body}");

    for (request, named) in [
        (
            "CONNECT gone.test:443 HTTP/1.1\r\nHost: gone.test:443\r\n\r\n",
            "cannot connect to gone.test:443",
        ),
        (
            "GET http://gone.test/x HTTP/1.1\r\nHost: gone.test\r\n\r\n",
            "cannot connect to gone.test:80",
        ),
    ] {
        let answer = raw(&proxy, request).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(answer.contains(named), "{answer}");
        assert!(unexposed(&answer), "{answer}");
    }
}
