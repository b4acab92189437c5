//! Manifests and tags: stored by digest with their media type, tags revalidated after their TTL,
//! a silent registry holding no one waiting on a tag, cached images served while the registry is
//! down, errors passed on and never cached.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn manifest_by_digest_is_stored_with_its_media_type() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let client = proxy.client(true);
    let manifest = Registry::manifest_json(&[], "by-digest");
    let digest = registry.add_manifest("p/app", "v1", DOCKER_V2, manifest.clone());

    for _ in 0..2 {
        let response = client
            .get(url(&format!("/v2/p/app/manifests/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], DOCKER_V2);
        assert_eq!(response.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(response.bytes().await.unwrap(), manifest);
    }
    let head = client
        .head(url(&format!("/v2/p/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["content-length"],
        manifest.len().to_string().as_str()
    );
    assert_eq!(registry.seen().len(), 1);
}

#[tokio::test]
async fn tags_are_cached_then_revalidated_with_head() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .cache("tag_ttl = \"10m\"")
        .start()
        .await;
    let client = proxy.client(false);
    let v1 = Registry::manifest_json(&[], "one");
    let d1 = registry.add_manifest("p/app", "latest", DOCKER_V2, v1.clone());
    let tag = url("/v2/p/app/manifests/latest");

    let get = |c: &reqwest::Client| c.get(&tag).header("accept", DOCKER_V2).send();
    let first = get(&client).await.unwrap();
    assert_eq!(first.headers()["docker-content-digest"], d1.as_str());
    assert_eq!(first.bytes().await.unwrap(), v1);
    let fresh = get(&client).await.unwrap();
    assert_eq!(fresh.bytes().await.unwrap(), v1);
    assert_eq!(
        registry.count("GET", "/manifests/"),
        1,
        "fresh tag served from cache"
    );
    assert_eq!(registry.count("HEAD", "/manifests/"), 0);

    proxy.server.clock().advance(Duration::from_secs(601));
    let revalidated = get(&client).await.unwrap();
    assert_eq!(revalidated.bytes().await.unwrap(), v1);
    assert_eq!(
        registry.count("HEAD", "/manifests/latest"),
        1,
        "stale tag checked by HEAD"
    );
    assert_eq!(
        registry.count("GET", "/manifests/"),
        1,
        "and not fetched again"
    );

    // The tag moves upstream: after the TTL, the HEAD sees it and the new manifest is fetched
    // by digest.
    let v2 = Registry::manifest_json(&[], "two");
    let d2 = registry.add_manifest("p/app", "latest", DOCKER_V2, v2.clone());
    proxy.server.clock().advance(Duration::from_secs(601));
    let moved = get(&client).await.unwrap();
    assert_eq!(moved.headers()["docker-content-digest"], d2.as_str());
    assert_eq!(moved.bytes().await.unwrap(), v2);
    assert_eq!(registry.count("GET", &format!("/manifests/{d2}")), 1);
    assert_eq!(registry.count("GET", "/manifests/latest"), 1);
}

/// A registry that sends a tag's headers and then nothing holds neither the request asking it nor
/// the ones waiting for that request's answer: the upstream read timeout ends the first, and the
/// one waiting then asks in its turn.
#[tokio::test]
async fn a_silent_upstream_does_not_hold_clients_waiting_on_a_tag() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .upstream("read_timeout = \"1s\"")
        .start()
        .await;
    let client = proxy.client(false);
    let v1 = Registry::manifest_json(&[], "one");
    let d1 = registry.add_manifest("p/app", "latest", DOCKER_V2, v1.clone());
    let tag = url("/v2/p/app/manifests/latest");
    let get = || async {
        let request = client.get(&tag).header("accept", DOCKER_V2).send();
        tokio::time::timeout(Duration::from_secs(15), request)
            .await
            .expect("a client waiting on a silent upstream was held")
            .unwrap()
    };

    registry.set_mode(Mode::StallManifests);
    let (first, second) = tokio::join!(get(), get());
    assert_eq!(first.status(), 504);
    assert_eq!(second.status(), 504);
    assert_eq!(
        registry.count("GET", "/manifests/latest"),
        2,
        "one at a time: the second asked once the first gave up"
    );

    registry.set_mode(Mode::Direct);
    let answered = get().await;
    assert_eq!(answered.headers()["docker-content-digest"], d1.as_str());
    assert_eq!(answered.bytes().await.unwrap(), v1);
}

#[tokio::test]
async fn a_manifest_put_through_hoard_drops_the_cached_tag() {
    init();
    let registry = Registry::start().await;
    // Tags stay fresh far longer than the test: only the PUT can make hoard ask again.
    let proxy = Proxy::builder(&registry)
        .cache("tag_ttl = \"1h\"")
        .start()
        .await;
    let client = proxy.client(false);
    let v1 = Registry::manifest_json(&[], "before");
    let d1 = registry.add_manifest("p/app", "latest", DOCKER_V2, v1);
    let tag = url("/v2/p/app/manifests/latest");
    let get = || client.get(&tag).header("accept", DOCKER_V2).send();
    let first = get().await.unwrap();
    assert_eq!(first.headers()["docker-content-digest"], d1.as_str());

    let v2 = Registry::manifest_json(&[], "after");
    let put = client
        .put(&tag)
        .header("content-type", DOCKER_V2)
        .body(v2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(registry.count("PUT", "/manifests/latest"), 1);

    let next = get().await.unwrap();
    assert_eq!(
        next.headers()["docker-content-digest"],
        sha256(&v2).as_str(),
        "the pull after the push sees the new digest"
    );
    assert_eq!(next.bytes().await.unwrap(), v2);
}

#[tokio::test]
async fn head_stays_head_upstream() {
    init();
    let registry = Registry::start().await;
    // A TTL no loaded machine lets lapse between rounds 0 and 1; the clock moves past it after.
    let proxy = Proxy::builder(&registry)
        .cache("tag_ttl = \"10m\"")
        .start()
        .await;
    let client = proxy.client(true);
    let manifest = Registry::manifest_json(&[], "head");
    let digest = registry.add_manifest("p/app", "v1", DOCKER_V2, manifest.clone());
    let tag = url("/v2/p/app/manifests/v1");

    for round in 0..3 {
        let head = client
            .head(&tag)
            .header("accept", DOCKER_V2)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(
            head.headers()["content-length"],
            manifest.len().to_string().as_str()
        );
        if round == 1 {
            proxy.server.clock().advance(Duration::from_secs(601));
        }
    }
    // First HEAD (unknown tag) and one revalidation after the TTL; the fresh one in between was
    // answered locally. No GET ever.
    assert_eq!(registry.count("HEAD", "/manifests/v1"), 2);
    assert_eq!(registry.count("GET", "/manifests/"), 0);
}

#[tokio::test]
async fn cached_manifest_is_served_only_to_clients_that_accept_its_type() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let client = proxy.client(false);
    let manifest = Registry::manifest_json(&[], "accept");
    registry.add_manifest("p/app", "v1", DOCKER_V2, manifest.clone());
    let tag = url("/v2/p/app/manifests/v1");

    let docker = client
        .get(&tag)
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap();
    assert_eq!(docker.bytes().await.unwrap(), manifest);
    assert_eq!(registry.count("GET", "/manifests/v1"), 1);

    // A client that takes only OCI indexes must not get the cached Docker manifest: hoard asks.
    let oci = client
        .get(&tag)
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(oci.status(), 200);
    assert_eq!(registry.count("GET", "/manifests/v1"), 2);

    // A client accepting several types including the cached one is served from cache.
    let many = client
        .get(&tag)
        .header("accept", format!("{OCI_INDEX}, {DOCKER_V2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(many.bytes().await.unwrap(), manifest);
    assert_eq!(registry.count("GET", "/manifests/v1"), 2);
}

#[tokio::test]
async fn cached_image_pulls_while_the_registry_is_down_rate_limited_or_gone() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .cache("tag_ttl = \"1ms\"")
        .start()
        .await;
    let client = proxy.client(false);
    let layers = [fresh_blob(BLOB_SIZE), fresh_blob(1000)];
    let digests: Vec<String> = layers
        .iter()
        .map(|l| registry.add_blob(l.clone()))
        .collect();
    let manifest =
        Registry::manifest_json(&[(&digests[0], BLOB_SIZE), (&digests[1], 1000)], "offline");
    registry.add_manifest("p/app", "v1", DOCKER_V2, manifest.clone());

    assert_eq!(pull(&client, "p/app", "v1", &digests).await, manifest);
    for mode in [Mode::Down, Mode::RateLimited] {
        registry.set_mode(mode);
        registry.forget();
        assert_eq!(
            pull(&client, "p/app", "v1", &digests).await,
            manifest,
            "{mode:?}"
        );
        // hoard did ask (the tag was stale) but served what it had.
        assert!(registry.count("HEAD", "/manifests/v1") >= 1, "{mode:?}");
        assert_eq!(registry.count("GET", "/blobs/"), 0);
    }
    registry.stop();
    // A new connection: the fixture no longer accepts any.
    let fresh_client = proxy.client(true);
    assert_eq!(pull(&fresh_client, "p/app", "v1", &digests).await, manifest);
    let head = fresh_client
        .head(url("/v2/p/app/manifests/v1"))
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    // What was never cached still fails, with a gateway error rather than a hang.
    let unknown = fresh_client
        .get(url("/v2/p/app/manifests/never-seen"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 502);
}

#[tokio::test]
async fn errors_are_passed_through_and_never_cached() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let client = proxy.client(false);
    let tag = url("/v2/p/app/manifests/later");

    let missing = client.get(&tag).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let manifest = Registry::manifest_json(&[], "later");
    registry.add_manifest("p/app", "later", DOCKER_V2, manifest.clone());
    let found = client.get(&tag).send().await.unwrap();
    assert_eq!(found.status(), 200, "a 404 was not remembered");
    assert_eq!(found.bytes().await.unwrap(), manifest);

    let bytes = fresh_blob(1000);
    let digest = sha256(&bytes);
    let missing = client
        .get(blob_path("p/app", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    registry.add_blob(bytes.clone());
    let found = client
        .get(blob_path("p/app", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(found.bytes().await.unwrap(), bytes);

    registry.make_private("secret/app");
    let denied = client
        .get(url("/v2/secret/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert!(
        denied.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=")
    );
}

/// A tag's answer is cached for everyone, so what asks the registry for it is the tag alone: a
/// client's query string never reaches the registry, whichever request leads.
#[tokio::test]
async fn a_manifest_by_tag_goes_upstream_without_the_clients_query_string() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let client = proxy.client(false);
    let manifest = Registry::manifest_json(&[], "query");
    let digest = registry.add_manifest("p/app", "q1", DOCKER_V2, manifest.clone());

    for method in [reqwest::Method::HEAD, reqwest::Method::GET] {
        let got = client
            .request(method, url("/v2/p/app/manifests/q1?poison=1"))
            .header("accept", DOCKER_V2)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.headers()["docker-content-digest"], digest.as_str());
    }
    let seen = registry.seen();
    assert!(
        seen.iter()
            .filter(|s| s.path.contains("/manifests/"))
            .all(|s| s.query.is_none()),
        "{seen:?}"
    );
    assert!(registry.count("GET", "/manifests/") + registry.count("HEAD", "/manifests/") >= 1);
}
