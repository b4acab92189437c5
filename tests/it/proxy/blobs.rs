//! Blobs: filled once and served from disk, HEAD and ranges, corrupt ones never kept, and a store
//! that survives a restart.

use super::*;

#[tokio::test]
async fn blob_is_filled_once_then_served_from_disk_over_h1_and_h2() {
    init();
    for h2 in [false, true] {
        let registry = Registry::start().await;
        let proxy = Proxy::builder(&registry).start().await;
        let client = proxy.client(h2);
        let bytes = fresh_blob(BLOB_SIZE);
        let digest = registry.add_blob(bytes.clone());

        for round in 0..3 {
            let response = client
                .get(blob_path("p/app", &digest))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "round {round}");
            let want = if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            };
            assert_eq!(response.version(), want);
            assert_eq!(response.headers()["docker-content-digest"], digest.as_str());
            assert_eq!(
                response.headers()["content-length"],
                BLOB_SIZE.to_string().as_str()
            );
            assert_eq!(response.bytes().await.unwrap(), bytes, "round {round}");
        }
        // The same layer through another repository is the same entry.
        let other = client
            .get(blob_path("q/other", &digest))
            .send()
            .await
            .unwrap();
        assert_eq!(other.bytes().await.unwrap(), bytes);

        assert_eq!(registry.count("GET", "/blobs/"), 1, "h2={h2}");
        proxy.settled().await;
        assert_eq!(std::fs::read(proxy.blob_path(&digest)).unwrap(), bytes);
    }
}

#[tokio::test]
async fn stored_blob_answers_head_and_ranges() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let client = proxy.client(false);
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    client
        .get(blob_path("p/app", &digest))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    let head = client
        .head(blob_path("p/app", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        BLOB_SIZE.to_string().as_str()
    );
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());

    let range = client
        .get(blob_path("p/app", &digest))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(
        range.headers()["content-range"],
        format!("bytes 1000-1999/{BLOB_SIZE}").as_str()
    );
    assert_eq!(range.bytes().await.unwrap(), bytes.slice(1000..2000));

    let tail = client
        .get(blob_path("p/app", &digest))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), bytes.slice(BLOB_SIZE - 10..));

    let bad = client
        .get(blob_path("p/app", &digest))
        .header("range", format!("bytes={BLOB_SIZE}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 416);
    assert_eq!(
        bad.headers()["content-range"],
        format!("bytes */{BLOB_SIZE}").as_str()
    );
    // Only the first fill went upstream; HEAD and ranges came from disk.
    assert_eq!(registry.seen().len(), 1);
}

#[tokio::test]
async fn corrupt_blob_is_cut_short_and_never_kept() {
    init();
    for h2 in [false, true] {
        let registry = Registry::start().await;
        let proxy = Proxy::builder(&registry).start().await;
        let bytes = fresh_blob(BLOB_SIZE);
        let digest = registry.add_blob(bytes.clone());
        registry.corrupt(&digest);

        let client = proxy.client(h2);
        for _ in 0..2 {
            let response = client
                .get(blob_path("p/app", &digest))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body = response.bytes().await;
            assert!(
                body.is_err(),
                "a corrupt blob must not arrive complete (h2={h2})"
            );
        }
        assert!(!proxy.blob_path(&digest).exists());
        assert_eq!(
            std::fs::read_dir(proxy.cache_dir().join(hoard::store::TMP_DIR))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != hoard::store::TMP_MARKER)
                .count(),
            0,
            "no temp file left behind"
        );
        // Nothing was kept, so the second request went upstream again.
        assert_eq!(registry.count("GET", "/blobs/"), 2);
    }
}

#[tokio::test]
async fn the_store_survives_a_restart() {
    init();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let manifest = Registry::manifest_json(&[(&digest, BLOB_SIZE)], "restart");
    registry.add_manifest("p/app", "v1", DOCKER_V2, manifest.clone());

    let proxy = Proxy::builder(&registry).dir(dir).start().await;
    let first_ca = proxy.ca_pem.clone();
    pull(
        &proxy.client(false),
        "p/app",
        "v1",
        std::slice::from_ref(&digest),
    )
    .await;
    let Proxy { server, dir, .. } = proxy;
    // A stop as on SIGTERM: the fills the pull started reach the store first.
    server.shutdown(std::time::Duration::from_secs(10)).await;

    registry.stop();
    let proxy = Proxy::builder(&registry).dir(dir).start().await;
    assert_eq!(proxy.ca_pem, first_ca, "the CA is loaded, not made again");
    let got = pull(
        &proxy.client(true),
        "p/app",
        "v1",
        std::slice::from_ref(&digest),
    )
    .await;
    assert_eq!(got, manifest);
}
