use std::sync::Mutex;

use http_body_util::Full;

use super::*;
use crate::config::HostLimit;

/// 1000 bytes per second, holding at most 1000.
fn slow() -> Arc<Bucket> {
    Arc::new(Bucket::with_burst(1000, 1000.0))
}

#[tokio::test(start_paused = true)]
async fn a_bucket_lets_its_burst_through_then_paces_at_its_rate() {
    let bucket = slow();
    let start = Instant::now();
    assert_eq!(bucket.take(1000).await, Duration::ZERO, "a full bucket");
    assert_eq!(bucket.take(500).await, Duration::from_millis(500));
    assert_eq!(
        bucket.take(2000).await,
        Duration::from_secs(2),
        "beyond the burst"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
    // Idle time refills it, up to the burst only.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(bucket.take(1000).await, Duration::ZERO);
    assert_eq!(bucket.take(100).await, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn concurrent_takers_share_the_rate_in_turns() {
    let bucket = slow();
    bucket.take(1000).await; // empty
    let order = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let takers: Vec<_> = (0..3)
        .map(|who| {
            let (bucket, order) = (bucket.clone(), order.clone());
            tokio::spawn(async move {
                for _ in 0..4 {
                    bucket.take(250).await;
                    order.lock().unwrap_or_else(|e| e.into_inner()).push(who);
                }
                Instant::now()
            })
        })
        .collect();
    let mut ends = Vec::new();
    for taker in takers {
        ends.push(taker.await.unwrap_or(start));
    }
    // 3 × 4 × 250 bytes at 1000 bytes/s, whoever takes them.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let order = order.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(order, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2], "in turns");
    // Nobody starves: each finishes within one round (0.75 s) of the end.
    for end in ends {
        assert!(end.duration_since(start) >= Duration::from_millis(2250));
    }
}

#[tokio::test(start_paused = true)]
async fn a_paced_body_passes_every_byte_in_quanta_at_the_rate() {
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let body = Full::new(Bytes::from(data.clone()))
        .map_err(|never| match never {})
        .boxed();
    let waits = Arc::new(Mutex::new(Duration::ZERO));
    let heard = waits.clone();
    let host = Arc::new(Bucket::with_burst(50_000, QUANTUM as f64));
    let global = Arc::new(Bucket::with_burst(100_000, QUANTUM as f64));
    let start = Instant::now();
    let mut body = paced(
        body,
        vec![host, global],
        move |waited| *heard.lock().unwrap_or_else(|e| e.into_inner()) += waited,
        (),
    );
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map(|f| f.into_data()) else {
            panic!("the body failed");
        };
        let data = data.unwrap_or_default();
        assert!(data.len() <= QUANTUM);
        got.extend_from_slice(&data);
    }
    assert_eq!(got, data);
    // The slower bucket sets the pace: what its first full bucket does not hold, at 50 000
    // bytes per second (1.67 s); the faster one refills meanwhile.
    let elapsed = start.elapsed();
    let expected = Duration::from_secs_f64((100_000 - QUANTUM) as f64 / 50_000.0);
    assert!(elapsed >= expected, "{elapsed:?}");
    assert!(
        elapsed <= expected + Duration::from_millis(20),
        "{elapsed:?}"
    );
    let waited = *waits.lock().unwrap_or_else(|e| e.into_inner());
    assert!(waited >= expected, "{waited:?}");
}

#[test]
fn buckets_follow_the_config() {
    let shaper = Shaper::default();
    let mut shaping = Shaping {
        max_rate: Some(5_000_000),
        limits: vec![HostLimit {
            host: "gcr.io".into(),
            max_rate: Some(1_000_000),
            max_fills: None,
        }],
    };
    assert_eq!(
        shaper.buckets(&shaping, "quay.io").len(),
        1,
        "the global one"
    );
    let gcr = shaper.buckets(&shaping, "gcr.io");
    assert_eq!(
        gcr.iter().map(|b| b.rate).collect::<Vec<_>>(),
        [1_000_000, 5_000_000]
    );
    let again = shaper.buckets(&shaping, "gcr.io");
    assert!(Arc::ptr_eq(&gcr[0], &again[0]), "kept across requests");
    shaping.max_rate = Some(1_000);
    assert_eq!(
        shaper.buckets(&shaping, "quay.io")[0].rate,
        1_000,
        "a reload's rate"
    );
    assert!(shaper.buckets(&Shaping::default(), "gcr.io").is_empty());
}
