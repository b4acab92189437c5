//! hoard in-process against a fixture registry over real TLS, with reqwest through the proxy in
//! HTTP/1.1 and h2: the registry cache rules, tunnels, plain forwarding and the front door.

use std::time::Duration;

use crate::common::*;

const BLOB_SIZE: usize = 300 << 10;

fn blob_path(repo: &str, digest: &str) -> String {
    url(&format!("/v2/{repo}/blobs/{digest}"))
}

#[tokio::test]
async fn blob_is_filled_once_then_served_from_disk_over_h1_and_h2() {
    init();
    for h2 in [false, true] {
        let registry = Registry::start().await;
        let proxy = Proxy::start(&registry, "").await;
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
    let proxy = Proxy::start(&registry, "").await;
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
async fn redirects_are_followed_without_sending_authorization_elsewhere() {
    init();
    for h2 in [false, true] {
        let registry = Registry::start().await;
        registry.set_mode(Mode::Redirect);
        let proxy = Proxy::start(&registry, "").await;
        let bytes = fresh_blob(BLOB_SIZE);
        let digest = registry.add_blob(bytes.clone());

        let response = proxy
            .client(h2)
            .get(blob_path("p/app", &digest))
            .bearer_auth("secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "the client sees the bytes, not a redirect"
        );
        assert_eq!(response.bytes().await.unwrap(), bytes);

        let seen = registry.seen();
        let hops: Vec<(&str, &str)> = seen
            .iter()
            .map(|s| (s.host.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(hops.len(), 4, "{hops:?}");
        assert_eq!(hops[0].0, REGISTRY);
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some("Bearer secret-token")
        );
        for hop in &seen[1..] {
            assert_eq!(hop.host, CDN);
            assert_eq!(
                hop.authorization, None,
                "Authorization leaked to {}",
                hop.path
            );
        }
        assert!(hops[3].1.ends_with(&format!("/cdn/b/final-{digest}")));
        proxy.settled().await;
        assert!(proxy.blob_path(&digest).exists());
    }
}

/// hoard's account for the fixture registry, as `[upstream]` TOML.
const HOARDS_CREDENTIALS: &str = "[[upstream.credentials]]\nhost = \"registry.test\"\nusername = \"hoard\"\npassword = \"s3cret\"\n";

#[tokio::test]
async fn a_redirect_targets_challenge_is_never_answered_with_hoards_credentials() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(Mode::RedirectToChallenge);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_with(dir, &registry, "", HOARDS_CREDENTIALS).await;
    let digest = registry.add_blob(fresh_blob(1000));

    // A client without credentials: hoard would lend its own to the registry, but the 401 comes
    // from the CDN host the blob redirects to.
    let response = proxy
        .client(false)
        .get(blob_path("p/app", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the CDN's answer is passed on");

    let seen = registry.seen();
    let to_cdn: Vec<&Seen> = seen.iter().filter(|s| s.host == CDN).collect();
    assert!(!to_cdn.is_empty(), "the redirect was followed: {seen:?}");
    for hop in &to_cdn {
        assert_eq!(
            hop.authorization, None,
            "hoard sent credentials to the CDN host: {} {}",
            hop.method, hop.path
        );
        assert!(
            !hop.path.starts_with("/token"),
            "hoard fetched a token from the realm the CDN named: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_redirect_to_plain_http_never_carries_authorization() {
    init();
    let registry = Registry::start().await;
    registry.set_mode(Mode::RedirectToHttp);
    let bytes = fresh_blob(1000);
    let digest = registry.add_blob(bytes.clone());
    // registry.test resolves to a port that speaks both: TLS goes on to the fixture, plain HTTP
    // (the redirect's hop) is answered here, with what it carried written down.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mux = listener.local_addr().unwrap();
    let plain: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let (heads, upstream, body) = (plain.clone(), registry.addr, bytes.clone());
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let (heads, body) = (heads.clone(), body.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                if first[0] == 0x16 {
                    let mut registry = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut registry).await;
                    return;
                }
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.write_all(&body).await;
            });
        }
    });
    let resolve = format!(
        r#"{{ "{REGISTRY}" = "{mux}", "{CDN}" = "{}" }}"#,
        registry.addr
    );
    let proxy = Proxy::start_extra(
        &registry,
        Extra {
            resolve: Some(&resolve),
            ..Extra::default()
        },
    )
    .await;

    let response = proxy
        .client(false)
        .get(blob_path("p/app", &digest))
        .bearer_auth("secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), bytes);
    let seen = registry.seen();
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer secret-token"),
        "the registry itself, over TLS, gets the client's credentials"
    );
    let heads = plain.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "one plain-HTTP hop: {heads:?}");
    assert!(
        heads[0].starts_with(&format!("GET /plain/{digest} ")),
        "{}",
        heads[0]
    );
    assert!(
        !heads[0].to_ascii_lowercase().contains("authorization"),
        "Authorization went out over plain HTTP:\n{}",
        heads[0]
    );
    task.abort();
}

#[tokio::test]
async fn corrupt_blob_is_cut_short_and_never_kept() {
    init();
    for h2 in [false, true] {
        let registry = Registry::start().await;
        let proxy = Proxy::start(&registry, "").await;
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
async fn manifest_by_digest_is_stored_with_its_media_type() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "").await;
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
    let proxy = Proxy::start(&registry, "tag_ttl = \"300ms\"").await;
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

    tokio::time::sleep(Duration::from_millis(400)).await;
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
    tokio::time::sleep(Duration::from_millis(400)).await;
    let moved = get(&client).await.unwrap();
    assert_eq!(moved.headers()["docker-content-digest"], d2.as_str());
    assert_eq!(moved.bytes().await.unwrap(), v2);
    assert_eq!(registry.count("GET", &format!("/manifests/{d2}")), 1);
    assert_eq!(registry.count("GET", "/manifests/latest"), 1);
}

#[tokio::test]
async fn a_manifest_put_through_hoard_drops_the_cached_tag() {
    init();
    let registry = Registry::start().await;
    // Tags stay fresh far longer than the test: only the PUT can make hoard ask again.
    let proxy = Proxy::start(&registry, "tag_ttl = \"1h\"").await;
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
    // A TTL long enough that a loaded machine does not let it lapse between rounds 0 and 1.
    let proxy = Proxy::start(&registry, "tag_ttl = \"1s\"").await;
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
            tokio::time::sleep(Duration::from_millis(1100)).await;
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
    let proxy = Proxy::start(&registry, "").await;
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

/// Pulls a whole image (tag, then its blobs) and returns the manifest bytes.
async fn pull(client: &reqwest::Client, repo: &str, tag: &str, blobs: &[String]) -> bytes::Bytes {
    let ping = client.get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
    let manifest = client
        .get(url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    let manifest = manifest.bytes().await.unwrap();
    for digest in blobs {
        let blob = client.get(blob_path(repo, digest)).send().await.unwrap();
        assert_eq!(blob.status(), 200);
        assert_eq!(crate::common::sha256(&blob.bytes().await.unwrap()), *digest);
    }
    manifest
}

#[tokio::test]
async fn cached_image_pulls_while_the_registry_is_down_rate_limited_or_gone() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "tag_ttl = \"1ms\"").await;
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
    let proxy = Proxy::start(&registry, "").await;
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

#[tokio::test]
async fn other_registry_calls_are_forwarded_with_their_bodies() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "").await;
    for h2 in [false, true] {
        let client = proxy.client(h2);
        let upload = client
            .post(url("/v2/p/app/blobs/uploads/"))
            .body(vec![7u8; 12345])
            .send()
            .await
            .unwrap();
        assert_eq!(upload.status(), 202);
        assert_eq!(upload.text().await.unwrap(), "upload to p/app: 12345");
        let tags = client.get(url("/v2/p/app/tags/list")).send().await.unwrap();
        assert_eq!(tags.text().await.unwrap(), r#"{"tags":["latest"]}"#);
    }
    assert_eq!(registry.count("POST", "/blobs/uploads/"), 2);
    assert_eq!(registry.count("GET", "/tags/list"), 2);
}

#[tokio::test]
async fn connect_to_other_hosts_is_a_byte_for_byte_tunnel() {
    init();
    let registry = Registry::start().await;
    let ports = format!(
        "connect_ports = [443, {}]\nallow_private_destinations = true",
        registry.addr.port()
    );
    let extra = Extra {
        proxy: &ports,
        ..Extra::default()
    };
    let proxy = Proxy::start_extra(&registry, extra).await;
    // Trusting only the fixture's CA: this works only if hoard did not intercept.
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(registry.ca.pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let response = client
        .get(format!("https://127.0.0.1:{}/v2/", registry.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{}");

    // And an intercepted host is not tunnelled: the fixture's CA alone does not verify hoard's leaf.
    let intercepted = client.get(url("/v2/")).send().await;
    assert!(intercepted.is_err());
}

#[tokio::test]
async fn plain_http_is_forwarded_without_hop_by_hop_headers() {
    init();
    let registry = Registry::start().await;
    let (addr, _server) = echo_server().await;
    let ports = format!(
        "allow_private_destinations = true\nforward_ports = [{}]",
        addr.port()
    );
    let extra = Extra {
        proxy: &ports,
        ..Extra::default()
    };
    let proxy = Proxy::start_extra(&registry, extra).await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!("http://{addr}/some/path?q=1"))
        .header("connection", "x-private")
        .header("x-private", "do not forward")
        .header("x-kept", "yes")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("x-secret").is_none(),
        "response hop-by-hop removed"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("POST /some/path?q=1\n"), "{text}");
    assert!(text.contains("x-kept: yes"), "{text}");
    assert!(text.contains("body: 5"), "{text}");
    assert!(!text.contains("x-private"), "{text}");
    assert!(!text.contains("proxy-authorization"), "{text}");
}

#[tokio::test]
async fn front_door_serves_the_ca_and_explains_bad_requests() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::start(&registry, "").await;

    let ca = reqwest::get(format!("{}/ca.crt", proxy.url()))
        .await
        .unwrap();
    assert_eq!(ca.status(), 200);
    assert_eq!(ca.text().await.unwrap(), proxy.ca_pem);
    let key = proxy.dir.path().join("ca/ca.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let no_port = raw(
        &proxy,
        "CONNECT registry.test HTTP/1.1\r\nHost: registry.test\r\n\r\n",
    )
    .await;
    assert!(no_port.starts_with("HTTP/1.1 400"), "{no_port}");
    assert!(no_port.contains("CONNECT needs host:port"), "{no_port}");

    let origin = raw(&proxy, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(origin.starts_with("HTTP/1.1 400"), "{origin}");
    assert!(origin.contains("hoard is a proxy"), "{origin}");

    let garbage = raw(&proxy, "NOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");

    // Still serving after all that.
    let again = reqwest::get(format!("{}/ca.crt", proxy.url()))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
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

    let proxy = Proxy::start_in(dir, &registry, "").await;
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
    let proxy = Proxy::start_in(dir, &registry, "").await;
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

#[tokio::test]
async fn huge_or_negative_token_lifetimes_are_clamped_not_a_crash() {
    init();
    for expires_in in ["18446744073709551615", "1e300", "-5", "\"soon\""] {
        let registry = Registry::start().await;
        registry.require("p/private", "Bearer tok");
        registry.serve_token(&format!(r#"{{"token":"tok","expires_in":{expires_in}}}"#));
        let dir = tempfile::tempdir().unwrap();
        let credentials = format!(
            "[[upstream.credentials]]\nhost = \"{REGISTRY}\"\nusername = \"hoard\"\npassword = \"pw\""
        );
        let proxy = Proxy::start_with(dir, &registry, "", &credentials).await;
        let client = proxy.client(false);

        // Two blobs: the first gets the token, the second uses it.
        for _ in 0..2 {
            let bytes = fresh_blob(BLOB_SIZE);
            let digest = registry.add_blob(bytes.clone());
            let response = client
                .get(blob_path("p/private", &digest))
                .send()
                .await
                .unwrap_or_else(|e| panic!("expires_in {expires_in}: {e:?}"));
            assert_eq!(response.status(), 200, "expires_in {expires_in}");
            assert_eq!(response.bytes().await.unwrap(), bytes);
        }
        assert_eq!(
            registry.count("GET", "/token"),
            1,
            "expires_in {expires_in}: the token was kept for the second request"
        );
    }
}
