//! Several byte ranges in one request (`Range: bytes=0-99,4096-8191`), as lazy-pulling
//! snapshotters send them: `206 multipart/byteranges` on a hit and from a fill in progress,
//! overlapping ranges merged, past 16 ranges the whole blob, unsatisfiable ones dropped.

use std::time::Duration;

use super::*;

const LEN: usize = 1 << 20;

/// 64 KiB every 25 ms: a 1 MiB fill takes about 400 ms, so requests made meanwhile follow it.
const SLOW: Mode = Mode::Slow {
    chunk: 64 << 10,
    delay: Duration::from_millis(25),
};

async fn get(client: &reqwest::Client, digest: &str, range: &str) -> reqwest::Response {
    client
        .get(blob_path("p/app", digest))
        .header("range", range)
        .send()
        .await
        .unwrap()
}

/// A registry sending at `mode`, hoard, and a cold blob of [`LEN`] bytes.
async fn cold_blob(mode: Mode) -> (Registry, Proxy, bytes::Bytes, String) {
    init();
    let registry = Registry::start().await;
    registry.set_mode(mode);
    let proxy = Proxy::builder(&registry).start().await;
    let blob = fresh_blob(LEN);
    let digest = registry.add_blob(blob.clone());
    (registry, proxy, blob, digest)
}

/// [`cold_blob`] fetched whole into the cache.
async fn cached_blob() -> (Registry, Proxy, bytes::Bytes, String) {
    let (registry, proxy, blob, digest) = cold_blob(Mode::Direct).await;
    let whole = proxy.client(false).get(blob_path("p/app", &digest)).send();
    assert_eq!(whole.await.unwrap().bytes().await.unwrap(), blob);
    proxy.settled().await;
    (registry, proxy, blob, digest)
}

#[tokio::test]
async fn several_ranges_of_a_cached_blob_come_as_multipart_byteranges() {
    let (registry, proxy, blob, digest) = cached_blob().await;

    for h2 in [false, true] {
        let client = proxy.client(h2);
        let asked = get(&client, &digest, "bytes=0-99,4096-8191,-100").await;
        assert_byteranges(asked, &blob, &[0..100, 4096..8192, LEN - 100..LEN]).await;
        // Out of order, overlapping and adjacent: ascending and merged.
        let asked = get(&client, &digest, "bytes=1000-1099,0-99,50-199,1100-1199").await;
        assert_byteranges(asked, &blob, &[0..200, 1000..1200]).await;
    }
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn ranges_merged_into_one_many_ranges_and_unsatisfiable_ones() {
    let (registry, proxy, blob, digest) = cached_blob().await;
    let client = proxy.client(true);

    // Merged into one range: an ordinary single-range answer.
    let asked = get(&client, &digest, "bytes=0-99,100-199,50-60").await;
    assert_eq!(asked.status(), 206);
    assert_eq!(asked.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        asked.headers()["content-range"],
        format!("bytes 0-199/{LEN}")
    );
    assert_eq!(asked.bytes().await.unwrap(), blob.slice(0..200));

    // 16 ranges are answered part by part; 17 get the whole blob.
    let spans: Vec<_> = (0..16).map(|i| i * 1000..i * 1000 + 10).collect();
    let header = |n: usize| {
        let specs: Vec<_> = (0..n)
            .map(|i| format!("{}-{}", i * 1000, i * 1000 + 9))
            .collect();
        format!("bytes={}", specs.join(","))
    };
    assert_byteranges(get(&client, &digest, &header(16)).await, &blob, &spans).await;
    let asked = get(&client, &digest, &header(17)).await;
    assert_eq!(asked.status(), 200);
    assert!(asked.headers().get("content-range").is_none());
    assert_eq!(asked.bytes().await.unwrap(), blob);

    // Unsatisfiable parts are dropped; none left is a 416 naming the length.
    let far = format!("bytes=0-9,{LEN}-,-0,{}-{}", LEN - 10, LEN + 10);
    assert_byteranges(
        get(&client, &digest, &far).await,
        &blob,
        &[0..10, LEN - 10..LEN],
    )
    .await;
    let none = get(&client, &digest, &format!("bytes={LEN}-,-0")).await;
    assert_eq!(none.status(), 416);
    assert_eq!(none.headers()["content-range"], format!("bytes */{LEN}"));
    // Bad syntax anywhere is a 416, as for a single range.
    let bad = get(&client, &digest, "bytes=0-9,x-1").await;
    assert_eq!(bad.status(), 416);
    assert_eq!(
        registry.count("GET", "/blobs/"),
        1,
        "every answer from the cache"
    );
}

#[tokio::test]
async fn several_ranges_are_answered_from_a_fill_in_progress() {
    let (registry, proxy, blob, digest) = cold_blob(SLOW).await;
    let client = proxy.client(false);

    let leader = tokio::spawn({
        let request = client.get(blob_path("p/app", &digest));
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Already written, arriving later, and the tail: each part sent as the fill reaches it.
    let asked = get(&client, &digest, "bytes=0-9999,600000-700000,-1000").await;
    assert_byteranges(
        asked,
        &blob,
        &[0..10_000, 600_000..700_001, LEN - 1000..LEN],
    )
    .await;
    assert_eq!(leader.await.unwrap(), blob);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn several_ranges_near_the_start_of_a_cold_blob_start_its_fill() {
    let (registry, proxy, blob, digest) = cold_blob(SLOW).await;
    let client = proxy.client(true);

    let asked = get(&client, &digest, "bytes=100-199,500000-500099").await;
    assert_byteranges(asked, &blob, &[100..200, 500_000..500_100]).await;
    // The whole blob was fetched (without the client's Range) and kept.
    assert!(registry.seen()[0].headers.get("range").is_none());
    proxy.settled().await;
    registry.set_mode(Mode::Direct);
    let whole = client
        .get(blob_path("p/app", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.bytes().await.unwrap(), blob);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}
