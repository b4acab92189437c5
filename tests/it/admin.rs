//! The admin listener: metrics that move with a hit, a miss and a tunnel; `/readyz`; `/healthz`
//! that fails when the store cannot be written; the status page, rendered by headless Chromium.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn admin_url(proxy: &Proxy, path: &str) -> String {
    format!("http://{}{path}", proxy.server.admin_addr().unwrap())
}

async fn metrics(proxy: &Proxy) -> String {
    proxy.admin("/metrics").await
}

#[tokio::test]
async fn metrics_move_with_a_miss_a_hit_and_a_tunnel() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .tunnels_to_registry()
        .start()
        .await;
    let bytes = fresh_blob(100_000);
    let digest = registry.add_blob(bytes.clone());
    let blob = url(&format!("/v2/p/app/blobs/{digest}"));
    let manifest = Registry::manifest_json(&[(&digest, 100_000)], "metrics");
    registry.add_manifest("p/app", "v1", DOCKER_V2, manifest);
    let client = proxy.client(false);

    let before = metrics(&proxy).await;
    assert_eq!(
        sample(
            &before,
            "hoard_requests_total{cache=\"MISS\",via=\"proxy\"}"
        ),
        0.0
    );

    client
        .get(&blob)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    proxy.settled().await;
    let after_miss = metrics(&proxy).await;
    assert_eq!(
        sample(
            &after_miss,
            "hoard_requests_total{cache=\"MISS\",via=\"proxy\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after_miss,
            "hoard_response_bytes_total{source=\"upstream\",via=\"proxy\"}"
        ),
        100_000.0
    );
    assert_eq!(sample(&after_miss, "hoard_store_entries"), 1.0);
    assert_eq!(
        sample(
            &after_miss,
            "hoard_upstream_requests_total{host=\"registry.test\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(sample(&after_miss, "hoard_leaf_certificates_minted"), 1.0);

    client
        .get(&blob)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    client
        .get(url("/v2/p/app/manifests/v1"))
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let after_hit = metrics(&proxy).await;
    assert_eq!(
        sample(
            &after_hit,
            "hoard_requests_total{cache=\"HIT\",via=\"proxy\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after_hit,
            "hoard_response_bytes_total{source=\"cache\",via=\"proxy\"}"
        ),
        100_000.0
    );
    assert_eq!(
        sample(
            &after_hit,
            "hoard_registry_manifest_gets_total{host=\"registry.test\"}"
        ),
        1.0
    );

    // A tunnel: a fresh client that trusts the fixture, so it is not intercepted.
    let tunnel_client = client_builder_via(&proxy.url(), &registry.ca.pem)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let tunnelled = tunnel_client
        .get(format!("https://127.0.0.1:{}/v2/", registry.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(tunnelled.text().await.unwrap(), "{}");
    drop(tunnel_client);
    let mut tunnels = 0.0;
    for _ in 0..50 {
        tunnels = sample(
            &metrics(&proxy).await,
            "hoard_requests_total{cache=\"TUNNEL\",via=\"proxy\"}",
        );
        if tunnels > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tunnels, 1.0, "the tunnel is counted when it closes");
    let last = metrics(&proxy).await;
    assert!(sample(&last, "hoard_connections_total") >= 2.0);
}

#[tokio::test]
async fn proxy_traffic_counts_under_via_proxy_in_metrics_and_on_the_status_page() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let digest = registry.add_blob(fresh_blob(20_000));
    let manifest = Registry::manifest_json(&[(&digest, 20_000)], "via");
    registry.add_manifest("p/app", "v1", DOCKER_V2, manifest);
    let client = proxy.client(false);
    let get = |path: String| {
        let request = client.get(url(&path)).header("accept", DOCKER_V2);
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    };
    get("/v2/p/app/manifests/v1".into()).await;
    get(format!("/v2/p/app/blobs/{digest}")).await;
    proxy.settled().await;
    get(format!("/v2/p/app/blobs/{digest}")).await;

    // A response is counted when hoard drops its body, a moment after the client has it all.
    let proxy_hits = "hoard_requests_total{cache=\"HIT\",via=\"proxy\"}";
    let mut text = metrics(&proxy).await;
    for _ in 0..50 {
        if sample(&text, proxy_hits) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = metrics(&proxy).await;
    }
    assert_eq!(sample(&text, proxy_hits), 1.0, "{text}");
    let cache_bytes = "hoard_response_bytes_total{source=\"cache\",via=\"proxy\"}";
    assert_eq!(sample(&text, cache_bytes), 20_000.0, "{text}");
    assert!(
        !text.contains("via=\"mirror\""),
        "no mirror traffic: {text}"
    );
    let requests: f64 = text
        .lines()
        .filter(|l| l.starts_with("hoard_requests_total{") && l.contains("via=\"proxy\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(requests >= 3.0, "{text}");

    let page = reqwest::get(admin_url(&proxy, "/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The last hour per listener agrees with the counters; the mirror's row is empty.
    let row = |via: &str, n: f64| format!("<tr id=\"via-{via}\"><td>{via}</td><td>{n}</td>");
    assert!(page.contains(&row("proxy", requests)), "{page}");
    assert!(page.contains(&row("mirror", 0.0)), "{page}");
    let pull = format!("<td>{REGISTRY}/p/app:v1</td><td>MISS</td><td>proxy</td>");
    assert!(
        page.contains(&pull),
        "the recent pull names its listener: {page}"
    );
}

#[tokio::test]
async fn metric_host_labels_name_only_intercepted_hosts() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    registry.set_mode(Mode::Redirect);
    let digest = registry.add_blob(fresh_blob(10_000));
    let response = proxy
        .client(false)
        .get(url(&format!("/v2/p/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();

    let text = metrics(&proxy).await;
    // The registry by name; the CDN hop (any host a client could make hoard fetch) as `other`.
    assert!(
        text.contains(&format!(
            "hoard_upstream_requests_total{{host=\"{REGISTRY}\",status=\"307\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains("hoard_upstream_requests_total{host=\"other\",status=\"200\"}"),
        "{text}"
    );
    assert!(!text.contains(CDN), "{text}");
}

#[tokio::test]
async fn readyz_says_ready_while_hoard_takes_connections() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    // On the admin listener and on the proxy port (what a kubelet probe asks), the same answer.
    let proxy_port = format!("{}/readyz", proxy.url());
    for url in [admin_url(&proxy, "/readyz"), proxy_port] {
        let ready = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{url}");
        assert_eq!(ready.headers()["cache-control"], "no-store", "{url}");
        assert_eq!(ready.text().await.unwrap(), "ready\n", "{url}");
    }
    // Draining (503) is pinned by `shutdown::`, on a process under SIGTERM.
}

#[tokio::test]
async fn healthz_fails_when_the_store_cannot_be_written() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let healthy = reqwest::get(admin_url(&proxy, "/healthz")).await.unwrap();
    assert_eq!(healthy.status(), 200);

    // Root ignores permissions, so take the temp folder away and put a file in its place.
    let tmp = proxy.cache_dir().join(hoard::store::TMP_DIR);
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"not a folder").unwrap();
    let sick = reqwest::get(admin_url(&proxy, "/healthz")).await.unwrap();
    assert_eq!(sick.status(), 503);
    assert!(sick.text().await.unwrap().contains("not writable"));

    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let again = reqwest::get(admin_url(&proxy, "/healthz")).await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn healthz_fails_when_the_ca_key_is_gone_or_replaced() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let key = proxy.dir.path().join("ca/ca.key");
    let original = std::fs::read(&key).unwrap();
    assert_eq!(
        reqwest::get(admin_url(&proxy, "/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    std::fs::remove_file(&key).unwrap();
    let gone = reqwest::get(admin_url(&proxy, "/healthz")).await.unwrap();
    assert_eq!(gone.status(), 503);
    assert!(gone.text().await.unwrap().contains("ca.key"));

    // Another key in its place: readable, but not the one hoard signs with.
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(&key, other).unwrap();
    let replaced = reqwest::get(admin_url(&proxy, "/healthz")).await.unwrap();
    assert_eq!(replaced.status(), 503);
    assert!(replaced.text().await.unwrap().contains("no longer holds"));

    std::fs::write(&key, original).unwrap();
    let again = reqwest::get(admin_url(&proxy, "/healthz")).await.unwrap();
    assert_eq!(again.status(), 200);
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_a_browser() {
    init();
    // Heavy: Chromium takes every core for seconds.
    let _heavy = serial::heavy().await;
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is required in CI (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let bytes = fresh_blob(50_000);
    let digest = registry.add_blob(bytes);
    let manifest = Registry::manifest_json(&[(&digest, 50_000)], "page");
    registry.add_manifest("team/web", "v7", DOCKER_V2, manifest);
    let client = proxy.client(false);
    for _ in 0..2 {
        client
            .get(url("/v2/team/web/manifests/v7"))
            .header("accept", DOCKER_V2)
            .send()
            .await
            .unwrap();
        client
            .get(url(&format!("/v2/team/web/blobs/{digest}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }

    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("status.png");
    let page = admin_url(&proxy, "/");
    let user_data = profile.path().join("profile");
    // Chromium runs on the blocking pool: hoard answers it from this test's runtime.
    let run = move |extra: Vec<String>| {
        let (page, user_data) = (page.clone(), user_data.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1200,900",
                ])
                .arg(format!("--user-data-dir={}", user_data.display()))
                .args(extra)
                .arg(page)
                .output()
                .unwrap()
        })
    };
    let dom = run(vec!["--dump-dom".into()]).await.unwrap();
    let page_dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(page_dom.contains("id=\"hit-ratio\""), "{page_dom}");
    assert!(page_dom.contains("registry.test/team/web:v7"), "{page_dom}");
    assert!(page_dom.contains("<svg"), "the chart is drawn");
    assert!(page_dom.contains("id=\"via-mirror\""), "{page_dom}");
    assert!(
        page_dom.contains("50.0%") || page_dom.contains("hit ratio"),
        "{page_dom}"
    );

    let screenshot = run(vec![format!("--screenshot={}", shot.display())])
        .await
        .unwrap();
    assert!(
        screenshot.status.success(),
        "{}",
        String::from_utf8_lossy(&screenshot.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    if let Ok(keep) = std::env::var("HOARD_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// `GET /readyz` on the admin listener with `host` as the `Host` header: the whole answer.
async fn admin_with_host(proxy: &Proxy, host: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = proxy.server.admin_addr().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /readyz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A web page the operator's browser opens cannot read the admin listener by pointing a name of
/// its own at 127.0.0.1 (DNS rebinding): only the address connected to, a loopback name or a
/// name in `admin.names` is answered.
#[tokio::test]
async fn the_admin_listener_answers_only_its_own_names() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .admin_toml("names = [\"hoard.internal\"]")
        .start()
        .await;
    let addr = proxy.server.admin_addr().unwrap();
    for host in [
        addr.to_string(),
        "localhost".to_owned(),
        "localhost:9128".to_owned(),
        "127.0.0.1:1".to_owned(),
        "[::1]:9128".to_owned(),
        "hoard.internal".to_owned(),
        "HOARD.internal:9128".to_owned(),
    ] {
        let answer = admin_with_host(&proxy, &host).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    for host in ["evil.example", "evil.example:9128", "10.1.2.3:9128"] {
        let answer = admin_with_host(&proxy, host).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
        assert!(answer.contains("admin.names"), "{host}: {answer}");
    }
}

/// What a running hoard serves at `/metrics` is what `docs/metrics.md` lists: each family it
/// names (a counter's samples end in `_total`) has a row there. The page's exact list, every
/// family with its labels, is checked against the code in `telemetry::metrics::exported_tests`.
#[tokio::test]
async fn the_metrics_page_documents_what_a_running_hoard_serves() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let answer = proxy.client(false).get(url("/v2/")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let served = metrics(&proxy).await;
    let families: Vec<&str> = served
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .collect();
    assert!(families.len() >= 15, "{served}");
    for family in families {
        let (name, kind) = family.split_once(' ').unwrap();
        let sample = match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        };
        assert!(
            served.contains(&format!("\n{sample}")),
            "{sample}: {served}"
        );
        assert!(
            docs.contains(&format!("| `{sample}` | {kind} |")),
            "{sample} not in docs"
        );
    }
}
