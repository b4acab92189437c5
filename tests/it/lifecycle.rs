//! hoard as a process under signals: SIGHUP reloads the config without dropping a transfer,
//! a bad reload is refused, SIGTERM lets transfers in progress finish.

use std::time::{Duration, Instant};

use crate::common::*;

/// hoard as a process on a config written into a folder of its own, which goes after the process.
struct Hoard {
    process: HoardProcess,
    _dir: tempfile::TempDir,
}

impl Hoard {
    async fn start(registry: &Registry) -> Hoard {
        // A CA limited to the first intercept list could not sign for a host a reload adds.
        let config = Proxy::builder(registry)
            .proxy("shutdown_grace = \"10s\"")
            .ca("name_constraints = false");
        Hoard::start_with("127.0.0.1", config).await
    }

    /// Starts hoard on `ip` and a free port with `config`, and waits for its own word that it
    /// listens: a connection that succeeds could reach another listener on a reused port, or
    /// connect to itself while nothing listens yet, and a signal sent before hoard installs its
    /// handlers would kill it.
    async fn start_with(ip: &str, config: ProxyBuilder<'_>) -> Hoard {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = config.write_config(dir.path(), &format!("{ip}:{port}"));
        let mut process = HoardProcess::spawn(&path, port, None);
        process.wait_logged("hoard listening").await;
        Hoard { process, _dir: dir }
    }
}

impl std::ops::Deref for Hoard {
    type Target = HoardProcess;

    fn deref(&self) -> &HoardProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Hoard {
    fn deref_mut(&mut self) -> &mut HoardProcess {
        &mut self.process
    }
}

const SLOW: Mode = Mode::Slow {
    chunk: 64 << 10,
    delay: Duration::from_millis(40),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_an_intercepted_host_without_dropping_a_transfer() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let hoard = Hoard::start(&registry).await;
    let client = hoard.client();
    let bytes = fresh_blob(1 << 20); // 16 pieces × 40 ms
    let digest = registry.add_blob(bytes.clone());

    // cdn.test is reachable (upstream.resolve) but not intercepted: hoard's CA does not fit.
    let other = format!("https://{CDN}/v2/");
    assert!(client.get(&other).send().await.is_err());

    let transfer = tokio::spawn({
        let request = client.get(url(&format!("/v2/p/app/blobs/{digest}")));
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let text = std::fs::read_to_string(&hoard.config).unwrap();
    let wider = text.replace(
        &format!("hosts = [\"{REGISTRY}\"]"),
        &format!("hosts = [\"{REGISTRY}\", \"{CDN}\"]"),
    );
    assert_ne!(text, wider);
    std::fs::write(&hoard.config, wider).unwrap();
    hoard.signal("HUP");

    assert_eq!(
        transfer.await.unwrap(),
        bytes,
        "the transfer in progress survived"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hoard.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", hoard.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now intercepted: TLS with hoard's leaf works (the fixture's CDN has no /v2/: 404).
    let fresh = hoard.client();
    let response = fresh.get(&other).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_and_the_old_config_stays() {
    init();
    let registry = Registry::start().await;
    let hoard = Hoard::start(&registry).await;
    let good = std::fs::read_to_string(&hoard.config).unwrap();
    std::fs::write(&hoard.config, format!("{good}\n[cache]\nmax_sise = 1\n")).unwrap();
    hoard.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hoard.log().contains("reload refused") {
        assert!(Instant::now() < deadline, "{}", hoard.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ping = hoard.client().get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200, "still serving with the old config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_names_the_settings_it_cannot_apply() {
    init();
    let registry = Registry::start().await;
    let hoard = Hoard::start(&registry).await;
    let text = std::fs::read_to_string(&hoard.config).unwrap();
    let changed = text
        .replace(
            "[cache]\n",
            "[cache]\nmax_size = \"1GiB\"\nmin_free = \"2GiB\"\n",
        )
        .replace(
            "[proxy]\n",
            "[proxy]\nmax_connections = 77\nmax_connections_per_client = 7\n",
        )
        .replace("name_constraints = false", "name_constraints = true")
        + "[log]\nlevel = \"debug\"\n";
    std::fs::write(&hoard.config, changed).unwrap();
    hoard.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hoard.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", hoard.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = hoard.log();
    for key in [
        "cache.max_size",
        "cache.min_free",
        "proxy.max_connections",
        "proxy.max_connections_per_client",
        "log.level",
        "ca.name_constraints",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("key=\"{key}\""))),
            "no warning names {key}: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_make_a_wide_listener_an_open_proxy() {
    init();
    let registry = Registry::start().await;
    // Bound to every address, but only loopback clients are allowed.
    let hoard = Hoard::start_with(
        "0.0.0.0",
        Proxy::builder(&registry).proxy("allow_clients = [\"127.0.0.0/8\"]"),
    )
    .await;
    // The file now claims loopback and drops the allow-list: fine for a loopback listener,
    // an open proxy on the one that is bound.
    let text = std::fs::read_to_string(&hoard.config).unwrap();
    let open = text
        .replace(
            &format!("0.0.0.0:{}", hoard.port),
            &format!("127.0.0.1:{}", hoard.port),
        )
        .replace("allow_clients = [\"127.0.0.0/8\"]", "");
    assert_ne!(text, open);
    std::fs::write(&hoard.config, open).unwrap();
    hoard.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hoard.log().contains("reload refused") {
        assert!(
            !hoard.log().contains("configuration reloaded"),
            "{}",
            hoard.log()
        );
        assert!(Instant::now() < deadline, "{}", hoard.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hoard.log().contains("open proxy"), "{}", hoard.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_transfers_in_progress_finish() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let mut hoard = Hoard::start(&registry).await;
    let bytes = fresh_blob(1 << 20);
    let digest = registry.add_blob(bytes.clone());
    let transfer = tokio::spawn({
        let request = hoard
            .client()
            .get(url(&format!("/v2/p/app/blobs/{digest}")));
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    hoard.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", hoard.port)).is_err(),
        "no new connections once stopping"
    );
    assert_eq!(transfer.await.unwrap(), bytes, "the transfer finished");
    hoard.wait_drained_exit().await;
}
