//! A hierarchy of hoards: an edge hoard (a branch office, a CI site) whose `upstream.proxy` is a
//! regional hoard that intercepts too, and which trusts the regional's CA (`extra_ca_files`).
//! Both levels keep what passes through them.

use super::{blob_url, get};
use crate::common::*;

const BLOB_SIZE: usize = 96 << 10;

/// An edge hoard whose only way to the registry is `regional`, trusting its CA.
async fn edge_of(registry: &Registry, regional: &Proxy) -> Proxy {
    Proxy::builder(registry)
        .upstream(&format!("proxy = \"{}\"", regional.url()))
        .upstream_ca(&regional.ca_pem)
        .resolve("{}")
        .start()
        .await
}

#[tokio::test]
async fn an_edge_behind_an_intercepting_regional_hoard_caches_at_both_levels() {
    init();
    let registry = Registry::start().await;
    let regional = Proxy::builder(&registry).start().await;
    let edge = edge_of(&registry, &regional).await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());
    let manifest = Registry::manifest_json(&[(&digest, BLOB_SIZE)], "hierarchy");
    registry.add_manifest("lib/app", "v1", DOCKER_V2, manifest.clone());
    let tag = url("/v2/lib/app/manifests/v1");

    let client = edge.client(false);
    assert_eq!(get(&client, &tag).await, (200, manifest.clone()));
    assert_eq!(get(&client, &blob_url(&digest)).await, (200, blob.clone()));
    edge.settled().await;
    regional.settled().await;
    assert_eq!(registry.count("GET", &digest), 1);
    assert_eq!(
        std::fs::read(edge.blob_path(&digest)).unwrap(),
        blob,
        "the edge keeps it"
    );
    assert_eq!(
        std::fs::read(regional.blob_path(&digest)).unwrap(),
        blob,
        "the regional keeps it"
    );

    // A second edge, on a fresh disk: the regional's copy, nothing new from the registry.
    let second = edge_of(&registry, &regional).await;
    let client2 = second.client(true);
    assert_eq!(get(&client2, &blob_url(&digest)).await, (200, blob.clone()));
    assert_eq!(registry.count("GET", &digest), 1, "a hit at the regional");
    second.settled().await;
    assert_eq!(std::fs::read(second.blob_path(&digest)).unwrap(), blob);

    // The registry goes down and the tags go stale at both levels: the regional serves its
    // stale tag to the edge, the edge serves the image.
    registry.set_mode(Mode::Down);
    let day = std::time::Duration::from_secs(86_400);
    for level in [&edge, &regional, &second] {
        level.server.clock().advance(day);
    }
    assert_eq!(get(&client, &tag).await, (200, manifest.clone()));
    assert_eq!(get(&client, &blob_url(&digest)).await, (200, blob.clone()));
    // And a third edge that never saw the image gets it all from the regional.
    let third = edge_of(&registry, &regional).await;
    let client3 = third.client(false);
    assert_eq!(get(&client3, &tag).await, (200, manifest));
    assert_eq!(get(&client3, &blob_url(&digest)).await, (200, blob));
    assert_eq!(registry.count("GET", &digest), 1);
}

#[tokio::test]
async fn an_edge_that_does_not_trust_the_regional_ca_gets_a_502_and_keeps_nothing() {
    init();
    let registry = Registry::start().await;
    let regional = Proxy::builder(&registry).start().await;
    let edge = Proxy::builder(&registry)
        .upstream(&format!("proxy = \"{}\"", regional.url()))
        .resolve("{}")
        .start()
        .await;
    let digest = registry.add_blob(fresh_blob(BLOB_SIZE));
    let (status, _) = get(&edge.client(false), &blob_url(&digest)).await;
    assert_eq!(status, 502, "the regional's leaf is not trusted");
    edge.settled().await;
    assert!(!edge.blob_path(&digest).exists());
    assert_eq!(registry.count("GET", &digest), 0, "nothing was fetched");
}
