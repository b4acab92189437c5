//! Upstream shaping: `upstream.max_rate` paces cold fills (here through the registry's CDN
//! redirects) while hits go at full speed, and a registry's `max_fills` makes a fill past it wait
//! for a slot instead of being refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// The value of the first series of `family` in hoard's metrics.
async fn series(proxy: &Proxy, family: &str) -> f64 {
    let metrics = proxy.admin("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&format!("{family}{{host=\"{REGISTRY}\"}}")))
        .unwrap_or_else(|| panic!("no {family} in\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_fills_share_max_rate_while_a_hit_is_served() {
    init();
    let registry = Registry::start().await;
    // 8 Mbit/s is 1 MB/s: the four fills below take about 2 s.
    let proxy = Proxy::builder(&registry)
        .upstream("max_rate = \"8Mbit\"")
        .start()
        .await;
    let client = proxy.client(false);
    let hot = fresh_blob(200_000);
    let hot_digest = registry.add_blob(hot.clone());
    let got = client.get(blob_url(&hot_digest)).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), hot);
    proxy.settled().await;

    registry.set_mode(Mode::Redirect);
    let cold: Vec<(Bytes, String)> = (0..4)
        .map(|_| {
            let bytes = fresh_blob(512 << 10);
            let digest = registry.add_blob(bytes.clone());
            (bytes, digest)
        })
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let fills: Vec<_> = cold
        .iter()
        .map(|(bytes, digest)| {
            let (client, done) = (client.clone(), done.clone());
            let (bytes, url) = (bytes.clone(), blob_url(digest));
            tokio::spawn(async move {
                let got = client.get(url).send().await.unwrap();
                assert_eq!(got.status(), 200);
                assert_eq!(got.bytes().await.unwrap(), bytes);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    // Once every fill has reached the CDN, the hit goes, and comes back whole while none of
    // the fills has.
    while cold
        .iter()
        .any(|(_, digest)| registry.count("GET", &format!("final-{digest}")) == 0)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = client.get(blob_url(&hot_digest)).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), hot);
    assert_eq!(done.load(Ordering::SeqCst), 0, "the hit came first");
    assert_eq!(
        registry.count("GET", &hot_digest),
        1,
        "a hit: not asked again"
    );
    for fill in fills {
        fill.await.unwrap();
    }
    proxy.settled().await;
    for (_, digest) in &cold {
        assert!(proxy.blob_path(digest).exists(), "kept");
        assert_eq!(registry.count("GET", &format!("final-{digest}")), 1);
    }
    let throttled = series(&proxy, "hoard_upstream_throttled_seconds_total").await;
    assert!(throttled > 0.0, "{throttled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_registrys_max_fills_a_fill_waits_for_a_slot() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(SLOW);
    let proxy = Proxy::builder(&registry)
        .upstream(&format!(
            "[[upstream.limits]]\nhost = \"{REGISTRY}\"\nmax_fills = 1"
        ))
        .start()
        .await;
    let first = fresh_blob(1 << 20); // 16 pieces × 25 ms ≈ 400 ms
    let first_digest = registry.add_blob(first.clone());
    let second = fresh_blob(100_000);
    let second_digest = registry.add_blob(second.clone());
    let client = proxy.client(false);
    let running = client.get(blob_url(&first_digest)).send().await.unwrap();
    let waiting = tokio::spawn({
        let (client, url) = (client.clone(), blob_url(&second_digest));
        async move { client.get(url).send().await.unwrap() }
    });
    assert_eq!(running.bytes().await.unwrap(), first);
    let waited = waiting.await.unwrap();
    assert_eq!(waited.status(), 200);
    assert_eq!(waited.bytes().await.unwrap(), second);
    proxy.settled().await;
    assert!(proxy.blob_path(&first_digest).exists());
    assert!(
        proxy.blob_path(&second_digest).exists(),
        "a fill, not a bypass"
    );
    assert_eq!(registry.count("GET", &second_digest), 1);
    let wait = series(&proxy, "hoard_upstream_fill_wait_seconds_total").await;
    assert!(wait > 0.0, "{wait}");
}
