//! `hoard warm`: pulls through hoard so later pulls are hits, following an index to a platform.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pulls_through_hoard_so_later_pulls_are_hits() {
    let s = Setup::new().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(300 << 10), &fresh_blob(5000)]);

    let warm = s.hoard(&["warm", &app.name()]).await;
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);
    assert_eq!(
        warm.stdout,
        format!(
            "warmed {} {} (3 blobs, 304.88 KiB)\n",
            app.name(),
            app.digest
        )
    );
    assert_eq!(warm.stderr, "");
    assert_eq!(s.registry.count("GET", "/blobs/"), 3);

    s.registry.forget();
    s.pull(&app).await;
    assert_eq!(s.registry.count("GET", "/blobs/"), 0);
    assert_eq!(s.registry.count("GET", "/manifests/"), 0);

    let unknown = s.hoard(&["warm", &format!("{REGISTRY}/p/app:nope")]).await;
    assert_eq!(unknown.code, Some(1));
    assert_eq!(unknown.stderr.lines().count(), 1, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("404"), "{}", unknown.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_follows_an_index_to_the_requested_platform() {
    let s = Setup::new().await;
    let amd64 = s.image("p/multi", "amd64-only", &[&fresh_blob(6000)]);
    let arm64 = s.image("p/multi", "arm64-only", &[&fresh_blob(8000)]);
    let index_digest = s.index("p/multi", "v1", &amd64, &arm64);
    let name = format!("{REGISTRY}/p/multi:v1");

    let warm = s.hoard(&["warm", &name, "--platform", "linux/arm64"]).await;
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);
    assert!(
        warm.stdout
            .starts_with(&format!("warmed {name} {index_digest} (2 blobs, ")),
        "{}",
        warm.stdout
    );
    assert_eq!(s.registry.count("GET", &arm64.digest), 1);
    assert_eq!(s.registry.count("GET", &arm64.blobs[1]), 1);
    assert_eq!(s.registry.count("GET", &amd64.digest), 0);
    assert_eq!(s.registry.count("GET", &amd64.blobs[1]), 0);

    // The index is sized by the platform manifests that are stored.
    let ls = s.hoard(&["cache", "ls", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    assert_eq!(rows[0]["digest"], index_digest.as_str());
    assert_eq!(rows[0]["media_type"], OCI_INDEX);
    assert_eq!(rows[0]["size"], arm64.size);

    let missing = s
        .hoard(&["warm", &name, "--platform", "windows/amd64"])
        .await;
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains(
            "no manifest for windows/amd64 in the index (it has: linux/amd64, linux/arm64/v8)"
        ),
        "{}",
        missing.stderr
    );

    // The default platform is linux/amd64.
    let warm = s.hoard(&["warm", &name]).await;
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);
    assert_eq!(s.registry.count("GET", &amd64.blobs[1]), 1);
}

/// A pull that fails in hoard says why, with hoard's own reason from the answer's body, not only
/// its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_prints_the_reason_hoard_gave_for_a_failure() {
    init();
    let registry = Registry::start().await;
    let closed = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::builder(&registry)
        .intercept(r#"["down.test"]"#)
        .resolve(&format!(r#"{{ "down.test" = "{closed}" }}"#))
        .start()
        .await;
    let config = write_config(proxy.dir.path(), &proxy.server.local_addr().to_string());
    let args = [
        "warm",
        "down.test/p/app:v1",
        "--config",
        config.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let warm = tokio::task::spawn_blocking(move || run(&args))
        .await
        .unwrap();
    assert_eq!(warm.code, Some(1), "{}", warm.stderr);
    assert!(
        warm.stderr.contains(
            "hoard: warm down.test/p/app:v1: https://down.test/v2/p/app/manifests/v1: hoard \
             answered 502 Bad Gateway: cannot connect to down.test:443 (hoard's log says why)"
        ),
        "{}",
        warm.stderr
    );
    assert!(!warm.stderr.contains("127.0.0.1"), "{}", warm.stderr);
}
