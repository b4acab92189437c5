//! The destination guard in front of a parent: private addresses and names the parent would
//! resolve inside its own network are refused before they reach it; bad parent URLs stop hoard.

use super::*;

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

#[test]
fn bad_parent_urls_stop_hoard_with_one_line_naming_the_key() {
    for (proxy, shown) in [
        ("ftp://x", "ftp://x"),
        ("http://", "http://"),
        ("http://alice:s3cret@:3128", "***@"),
    ] {
        let output = serve_with(&format!("[upstream]\nproxy = \"{proxy}\"\n"));
        assert_config_error(&output, "upstream.proxy");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(shown), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}
