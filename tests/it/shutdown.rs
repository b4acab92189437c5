//! SIGTERM on a hoard process with every listener open (the proxy, the mirror, the fleet's peer
//! endpoint): all of them stop accepting at once, the transfer in flight on each finishes whole,
//! the admin listener answers until the end with `/readyz` at 503 (the proxy port's `/readyz`
//! said 200 before, and takes no connection after), and hoard exits with success.
//! A `Server` dropped stops every listener, the admin one too.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

const SECRET: &str = "a-fleet-secret-for-the-shutdown-test-01234";

/// 2 MiB at 64 KiB per 40 ms: each transfer takes over a second, long past the checks.
const SLOW: Mode = Mode::Slow {
    chunk: 64 << 10,
    delay: Duration::from_millis(40),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_listener_at_once_and_lets_each_transfer_finish() {
    init();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let [proxy, mirror, peer, admin] = [(); 4].map(|()| free_port());
    let me = format!("127.0.0.1:{peer}");
    let fleet = format!(
        "peers = [\"{me}\"]\nself = \"{me}\"\nlisten = \"{me}\"\nsecret_file = \"{}\"",
        secret.display()
    );
    let config = Proxy::builder(&registry)
        .proxy("shutdown_grace = \"10s\"")
        .mirror(&format!("listen = \"127.0.0.1:{mirror}\""))
        .fleet(&fleet)
        .admin(&format!("127.0.0.1:{admin}"));
    let path = config.write_config(dir.path(), &format!("127.0.0.1:{proxy}"));
    let mut hoard = HoardProcess::spawn(&path, proxy, None);
    hoard.wait_logged("fleet peer endpoint listening").await;
    hoard.wait_healthy().await;
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    for port in [proxy, admin] {
        let ready = plain
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "/readyz on port {port} before SIGTERM");
    }

    registry.set_mode(SLOW);
    let blobs: Vec<_> = (0..3)
        .map(|_| {
            let bytes = fresh_blob(2 << 20);
            (registry.add_blob(bytes.clone()), bytes)
        })
        .collect();
    let through_proxy = hoard
        .client()
        .get(url(&format!("/v2/p/app/blobs/{}", blobs[0].0)));
    let through_mirror = plain.get(format!(
        "http://127.0.0.1:{mirror}/v2/p/app/blobs/{}?ns={REGISTRY}",
        blobs[1].0
    ));
    let peer_path = format!("/v2/p/app/blobs/{}?ns={REGISTRY}", blobs[2].0);
    let from_a_peer = plain
        .get(format!("http://{me}{peer_path}"))
        .header("hoard-fleet-mode", "mirror")
        .header(
            "hoard-fleet-signature",
            signature(SECRET.as_bytes(), "GET", &peer_path, "mirror", now()),
        );
    let transfers: Vec<_> = [through_proxy, through_mirror, from_a_peer]
        .into_iter()
        .map(|request| {
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap()
            })
        })
        .collect();
    // Every transfer under way: the registry is sending each blob.
    let deadline = Instant::now() + Duration::from_secs(10);
    while blobs
        .iter()
        .any(|(digest, _)| registry.count("GET", digest) == 0)
    {
        assert!(Instant::now() < deadline, "the transfers did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    hoard.signal("TERM");
    let stopped = Instant::now();
    for port in [proxy, mirror, peer] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(
                stopped.elapsed() < Duration::from_secs(1),
                "port {port} still accepts 1 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Draining: the proxy port takes no connection (a kubelet's readiness probe there fails),
    // and the admin listener still answers, saying hoard is not ready.
    let ready = plain
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.text().await.unwrap(), "draining\n");
    let metrics = plain
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("hoard_"));
    assert!(
        transfers.iter().any(|t| !t.is_finished()),
        "the checks ran while transfers were in flight"
    );

    for (transfer, (digest, bytes)) in transfers.into_iter().zip(&blobs) {
        let got = transfer.await.unwrap();
        assert!(got == *bytes, "the transfer of {digest} finished whole");
    }
    hoard.wait_drained_exit().await;
}

#[tokio::test]
async fn a_dropped_server_stops_every_listener() {
    init();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let me = format!("127.0.0.1:{}", free_port());
    let fleet = format!(
        "peers = [\"{me}\"]\nself = \"{me}\"\nlisten = \"{me}\"\nsecret_file = \"{}\"",
        secret.display()
    );
    let proxy = Proxy::builder(&registry)
        .mirror("listen = \"127.0.0.1:0\"")
        .fleet(&fleet)
        .start()
        .await;
    let server = &proxy.server;
    let addrs = [
        Some(server.local_addr()),
        server.mirror_addr(),
        server.fleet_addr(),
        server.admin_addr(),
    ]
    .map(Option::unwrap);
    for addr in addrs {
        TcpStream::connect(addr).unwrap();
    }
    drop(proxy);
    let dropped = Instant::now();
    for addr in addrs {
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(
                dropped.elapsed() < Duration::from_secs(1),
                "{addr} still accepts 1 s after the server was dropped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
