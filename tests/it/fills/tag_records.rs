//! Tag records count toward `cache.max_size` like blobs and manifests: a fill evicts the least
//! recently used of them, and the store's bytes, as hoard reports them, stay within the limit.

use super::*;

const LIMIT: u64 = 64 << 10;

fn tag_path(proxy: &Proxy, tag: &str) -> std::path::PathBuf {
    proxy
        .cache_dir()
        .join("tags")
        .join(REGISTRY)
        .join("p/app/_tags")
        .join(tag)
}

/// Bytes of blobs, manifests and tag records on disk.
fn stored_bytes(proxy: &Proxy) -> u64 {
    ["blobs", "manifests", "tags"]
        .iter()
        .map(|d| disk_usage(&proxy.cache_dir().join(d)))
        .sum()
}

async fn get_tag(client: &reqwest::Client, proxy: &Proxy, tag: &str) {
    let response = client
        .get(url(&format!("/v2/p/app/manifests/{tag}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{tag}");
    response.bytes().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tag_path(proxy, tag).exists() {
        assert!(Instant::now() < deadline, "the tag {tag} was not recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_evicts_the_least_recently_used_tag_records_and_usage_stays_within_max_size() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .cache("max_size = \"64KiB\"\nmax_blob_size = \"64KiB\"\nmin_free = \"0\"")
        .start()
        .await;
    let client = proxy.client(false);
    // One manifest under 30 tags: 30 tag records of the same size.
    let manifest = Registry::manifest_json(&[], "tag records");
    let tags: Vec<String> = (0..30).map(|n| format!("t{n:02}")).collect();
    for tag in &tags {
        registry.add_manifest("p/app", tag, DOCKER_V2, manifest.clone());
    }
    for tag in &tags {
        get_tag(&client, &proxy, tag).await;
    }
    // t00 was recorded first, and is read again last: the least recently used is t01.
    get_tag(&client, &proxy, "t00").await;
    let record = std::fs::metadata(tag_path(&proxy, "t01")).unwrap().len();
    let before = stored_bytes(&proxy);
    let metrics = proxy.admin("/metrics").await;
    assert_eq!(sample(&metrics, "hoard_store_bytes"), before as f64);
    assert_eq!(sample(&metrics, "hoard_store_entries"), 31.0);

    // A blob that fits only once 2.5 records' worth is freed: three records go.
    let len = LIMIT - before + 2 * record + record / 2;
    let bytes = fresh_blob(usize::try_from(len).unwrap());
    let digest = registry.add_blob(bytes.clone());
    let got = client.get(blob_url(&digest)).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), bytes);
    proxy.settled().await;

    assert!(proxy.blob_path(&digest).exists(), "the blob was kept");
    for tag in ["t01", "t02", "t03"] {
        assert!(!tag_path(&proxy, tag).exists(), "{tag} went");
    }
    for tag in tags
        .iter()
        .filter(|t| !["t01", "t02", "t03"].contains(&t.as_str()))
    {
        assert!(tag_path(&proxy, tag).exists(), "{tag} stayed");
    }
    let after = stored_bytes(&proxy);
    assert!(after <= LIMIT, "{after} bytes stored, over {LIMIT}");
    let metrics = proxy.admin("/metrics").await;
    assert_eq!(sample(&metrics, "hoard_store_bytes"), after as f64);
    assert_eq!(sample(&metrics, "hoard_store_evictions"), 3.0);
    assert_eq!(
        registry.count("GET", "/manifests/t00"),
        1,
        "t00 was read from the store"
    );
}
