//! Connection bounds: every connection counts, idle ones close, the oldest idle one makes room,
//! and a flood from one address cannot lock others out.

use super::*;

#[tokio::test]
async fn every_connection_counts_against_the_limit_and_idle_tunnels_close() {
    init();
    // Heavy: 300 connections timed against a 1 s idle timeout.
    let _heavy = serial::heavy().await;
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
    let client = proxy
        .client_builder()
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
    // Heavy: 1,050 connections, and another client must be served within 5 s.
    let _heavy = serial::heavy().await;
    let registry = Registry::start().await;
    // The default connection settings.
    let proxy = Proxy::builder(&registry).start().await;
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
    let client = proxy
        .client_builder()
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
