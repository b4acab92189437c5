//! `cache.pin`: the images a pin pattern matches stay in the store whatever else goes through.

use super::*;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

async fn pull(client: &reqwest::Client, path: &str) -> Bytes {
    let response = client.get(url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.unwrap()
}

fn tag_path(proxy: &Proxy, tag: &str) -> std::path::PathBuf {
    proxy
        .cache_dir()
        .join("tags")
        .join(REGISTRY)
        .join("p/keep/_tags")
        .join(tag)
}

fn manifest_path(proxy: &Proxy, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    proxy
        .cache_dir()
        .join("manifests/sha256")
        .join(&hex[..2])
        .join(hex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_image_survives_a_flood_and_an_unpinned_one_goes() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .cache("max_size = \"1MiB\"\nmin_free = \"0\"\npin = [\"registry.test/p/keep:v*\"]")
        .start()
        .await;
    let client = proxy.client(false);
    let config = registry.add_blob(Bytes::from_static(b"{}"));

    // Pinned: `p/keep:v1`, an index whose one platform manifest is pulled by digest only.
    let layer = registry.add_blob(fresh_blob(200_000));
    let child = Registry::manifest_json(&[(&layer, 200_000)], "pinned");
    let child = registry.add_manifest("p/keep", "child", DOCKER_V2, child);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{DOCKER_V2}","size":1,"digest":"{child}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
    );
    let index = registry.add_manifest("p/keep", "v1", OCI_INDEX, index.into());
    // Not pinned: `p/keep:latest` (the tag does not match `v*`).
    let loose = registry.add_image("p/keep", "latest", 1, 200_000, "loose");

    pull(&client, "/v2/p/keep/manifests/v1").await;
    pull(&client, &format!("/v2/p/keep/manifests/{child}")).await;
    for digest in [&layer, &config] {
        pull(&client, &format!("/v2/p/keep/blobs/{digest}")).await;
    }
    pull(&client, "/v2/p/keep/manifests/latest").await;
    pull(&client, &format!("/v2/p/keep/blobs/{}", loose.digests[0])).await;
    proxy.settled().await;
    proxy.server.reconcile().await;

    // 2.4 MB of other blobs through a 1 MiB store.
    for _ in 0..12 {
        let digest = registry.add_blob(fresh_blob(200_000));
        pull(&client, &format!("/v2/p/other/blobs/{digest}")).await;
        proxy.settled().await;
    }
    assert!(
        !proxy.blob_path(&loose.digests[0]).exists(),
        "the unpinned layer went"
    );
    assert!(
        !tag_path(&proxy, "latest").exists(),
        "and the unpinned tag record, least recently used like the rest"
    );
    assert!(
        tag_path(&proxy, "v1").exists(),
        "the pinned tag record stayed"
    );
    for digest in [&layer, &config] {
        assert!(
            proxy.blob_path(digest).exists(),
            "pinned blob {digest} kept"
        );
    }
    for digest in [&index, &child] {
        assert!(
            manifest_path(&proxy, digest).exists(),
            "pinned manifest {digest} kept"
        );
    }
    // What hoard counts is what is on disk, tag records included, within the limit.
    let stored: u64 = ["blobs", "manifests", "tags"]
        .iter()
        .map(|d| disk_usage(&proxy.cache_dir().join(d)))
        .sum();
    assert!(stored <= 1 << 20, "{stored} bytes stored");
    let metrics = proxy.admin("/metrics").await;
    assert_eq!(sample(&metrics, "hoard_store_bytes"), stored as f64);
    let got = pull(&client, &format!("/v2/p/keep/blobs/{layer}")).await;
    assert_eq!(got.len(), 200_000);
    assert_eq!(registry.count("GET", &layer), 1, "served from the cache");
}
