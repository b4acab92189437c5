//! The store under load and under faults: one upstream fetch per blob for any number of
//! concurrent clients, ranges from a fill in progress, upstreams that stall, cut or lie, clients
//! that leave, a failing disk, and the size limit.

mod abandoned;
mod bounded;
mod limits;
mod pins;
mod shaping;
mod tag_records;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::*;

fn blob_url(digest: &str) -> String {
    url(&format!("/v2/p/app/blobs/{digest}"))
}

fn temp_files(proxy: &Proxy) -> usize {
    std::fs::read_dir(proxy.cache_dir().join(hoard::store::TMP_DIR))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != hoard::store::TMP_MARKER)
        .count()
}

const SLOW: Mode = Mode::Slow {
    chunk: 64 << 10,
    delay: Duration::from_millis(25),
};

/// A registry sending at `mode`, hoard with `cache_extra`, and a cold blob of `len` bytes.
async fn cold_blob(mode: Mode, cache_extra: &str, len: usize) -> (Registry, Proxy, Bytes, String) {
    let registry = Registry::start().await;
    registry.set_mode(mode);
    let proxy = Proxy::builder(&registry).cache(cache_extra).start().await;
    let bytes = fresh_blob(len);
    let digest = registry.add_blob(bytes.clone());
    (registry, proxy, bytes, digest)
}

/// A GET of `range` of a blob, answered 206.
async fn get_range(client: &reqwest::Client, digest: &str, range: &str) -> reqwest::Response {
    let response = client
        .get(blob_url(digest))
        .header("range", range)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206, "{range}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_fill_is_shared_by_concurrent_clients() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let proxy = Proxy::builder(&registry).start().await;
    let bytes = fresh_blob(1 << 20); // 16 pieces × 25 ms ≈ 400 ms of fill
    let digest = registry.add_blob(bytes.clone());

    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..20 {
        let client = proxy.client(i % 2 == 0);
        let url = blob_url(&digest);
        clients.push(tokio::spawn(async move {
            // Spread the arrivals over the first part of the fill.
            tokio::time::sleep(Duration::from_millis(5 * i)).await;
            let response = client.get(url).send().await.unwrap();
            let headers_at = start.elapsed();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-length"], "1048576");
            let body = response.bytes().await.unwrap();
            (headers_at, start.elapsed(), body)
        }));
    }
    let mut results = Vec::new();
    for client in clients {
        results.push(client.await.unwrap());
    }
    let first_done = results.iter().map(|r| r.1).min().unwrap();
    for (headers_at, _, body) in &results {
        assert!(*body == bytes, "every client gets the right bytes");
        assert!(
            *headers_at < first_done,
            "headers at {headers_at:?}, before the fill ended at {first_done:?}"
        );
    }
    assert_eq!(
        registry.count("GET", "/blobs/"),
        1,
        "one upstream GET for 20 clients"
    );
    proxy.settled().await;
    assert!(proxy.blob_path(&digest).exists());
    assert_eq!(temp_files(&proxy), 0);
}

#[tokio::test]
async fn ranges_are_answered_from_a_fill_in_progress() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let proxy = Proxy::builder(&registry).start().await;
    let bytes = fresh_blob(1 << 20);
    let digest = registry.add_blob(bytes.clone());
    let client = proxy.client(false);

    let leader = tokio::spawn({
        let request = client.get(blob_url(&digest));
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Already written, arriving later, and the tail.
    for (range, span) in [
        ("bytes=0-9999", 0..10_000),
        ("bytes=600000-700000", 600_000..700_001),
        ("bytes=-1000", (1 << 20) - 1000..1 << 20),
    ] {
        let response = get_range(&client, &digest, range).await;
        assert_eq!(
            response.bytes().await.unwrap(),
            bytes.slice(span),
            "{range}"
        );
    }
    assert_eq!(leader.await.unwrap(), bytes);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn a_range_miss_starts_a_whole_fill_and_is_answered_from_it() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let bytes = fresh_blob(500_000);
    let digest = registry.add_blob(bytes.clone());
    let client = proxy.client(true);

    let response = client
        .get(blob_url(&digest))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-range"], "bytes 100-199/500000");
    assert_eq!(response.bytes().await.unwrap(), bytes.slice(100..200));
    // The whole blob was fetched (without the client's Range) and kept.
    assert!(registry.seen()[0].headers.get("range").is_none());
    let whole = client.get(blob_url(&digest)).send().await.unwrap();
    assert_eq!(whole.bytes().await.unwrap(), bytes);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn a_fill_goes_on_when_its_client_leaves() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let proxy = Proxy::builder(&registry).start().await;
    let bytes = fresh_blob(1 << 20);
    let digest = registry.add_blob(bytes.clone());

    {
        let mut response = proxy
            .client(false)
            .get(blob_url(&digest))
            .send()
            .await
            .unwrap();
        let first = response.chunk().await.unwrap().unwrap();
        assert!(!first.is_empty());
        // The client drops the response here, mid-body.
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.blob_path(&digest).exists() {
        assert!(
            Instant::now() < deadline,
            "the fill did not finish into the store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    registry.set_mode(Mode::Direct);
    let again = proxy
        .client(true)
        .get(blob_url(&digest))
        .send()
        .await
        .unwrap();
    assert_eq!(again.bytes().await.unwrap(), bytes);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn stalled_or_cut_upstreams_fail_cleanly_and_the_next_request_fills_anew() {
    init();
    for mode in [
        Mode::Stall { after: 100_000 },
        Mode::Truncate { after: 100_000 },
    ] {
        let registry = Registry::start().await;
        registry.set_mode(mode);
        let proxy = Proxy::builder(&registry)
            .upstream("read_timeout = \"500ms\"")
            .start()
            .await;
        let bytes = fresh_blob(400_000);
        let digest = registry.add_blob(bytes.clone());
        let client = proxy.client(false);

        // A first client and a follower: both must fail, neither may hang.
        let first = client.get(blob_url(&digest)).send();
        let second = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.get(blob_url(&digest)).send().await
        };
        let (first, second) = tokio::time::timeout(Duration::from_secs(10), async {
            let (a, b) = tokio::join!(first, second);
            let a = match a {
                Ok(r) => r.bytes().await.is_err(),
                Err(_) => true,
            };
            let b = match b {
                Ok(r) if r.status() == 200 => r.bytes().await.is_err(),
                Ok(_) | Err(_) => true,
            };
            (a, b)
        })
        .await
        .expect("clients of a broken fill must not hang");
        assert!(first && second, "{mode:?}: both clients see the failure");
        assert!(!proxy.blob_path(&digest).exists(), "{mode:?}");
        assert_eq!(temp_files(&proxy), 0, "{mode:?}");

        let failed_fills = registry.count("GET", "/blobs/");
        if let Mode::Stall { .. } = mode {
            // The second client joined the stalled fill rather than asking again.
            assert_eq!(failed_fills, 1);
        }
        registry.set_mode(Mode::Direct);
        let again = client.get(blob_url(&digest)).send().await.unwrap();
        assert_eq!(again.bytes().await.unwrap(), bytes, "{mode:?}");
        assert_eq!(
            registry.count("GET", "/blobs/"),
            failed_fills + 1,
            "{mode:?}"
        );
        proxy.settled().await;
        assert!(proxy.blob_path(&digest).exists());
    }
}
