//! The registry-mirror listener against the fixture registry: the proxy's store served both
//! ways, each way a client names the registry (containerd's `ns`, a podman path prefix, dockerd's
//! default), hoard's own anonymous login upstream, logins and TLS on the mirror, and bad input
//! refused before anything is fetched.

use crate::common::*;

const BLOB_SIZE: usize = 200 << 10;
const LISTEN: &str = "listen = \"127.0.0.1:0\"";

/// A client that talks to the mirror straight, as a registry client does.
fn direct() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(url: &str) -> reqwest::Response {
    direct().get(url).send().await.unwrap()
}

/// `GET path` sent as written (reqwest would resolve `..`), and the whole answer.
async fn raw_get(proxy: &Proxy, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = proxy.server.mirror_addr().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_blob_fetched_through_either_port_is_a_hit_through_the_other() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).mirror(LISTEN).start().await;
    let mirror = proxy.mirror_url();
    let (first, second) = (fresh_blob(BLOB_SIZE), fresh_blob(BLOB_SIZE));
    let (by_proxy, by_mirror) = (
        registry.add_blob(first.clone()),
        registry.add_blob(second.clone()),
    );

    let got = proxy
        .client(false)
        .get(url(&format!("/v2/p/app/blobs/{by_proxy}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), first);
    proxy.settled().await;
    let got = get(&format!("{mirror}/v2/p/app/blobs/{by_proxy}?ns={REGISTRY}")).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["docker-content-digest"], by_proxy.as_str());
    assert_eq!(got.bytes().await.unwrap(), first);

    let got = get(&format!(
        "{mirror}/v2/p/app/blobs/{by_mirror}?ns={REGISTRY}"
    ))
    .await;
    assert_eq!(got.bytes().await.unwrap(), second);
    proxy.settled().await;
    let got = proxy
        .client(true)
        .get(url(&format!("/v2/q/other/blobs/{by_mirror}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), second);

    assert_eq!(registry.count("GET", &by_proxy), 1, "one upstream GET each");
    assert_eq!(
        registry.count("GET", &by_mirror),
        1,
        "one upstream GET each"
    );
    assert_eq!(std::fs::read(proxy.blob_path(&by_mirror)).unwrap(), second);

    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        proxy.server.admin_addr().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for (cache, via) in [("MISS", "mirror"), ("HIT", "mirror"), ("HIT", "proxy")] {
        let series = format!("hoard_requests_total{{cache=\"{cache}\",via=\"{via}\"}} 1");
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn several_ranges_through_the_mirror_come_as_multipart_byteranges() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).mirror(LISTEN).start().await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());
    let url = format!(
        "{}/v2/p/app/blobs/{digest}?ns={REGISTRY}",
        proxy.mirror_url()
    );

    // Near the start of a cold blob: its fill starts and answers the parts.
    let ranges = |range: &str| direct().get(&url).header("range", range).send();
    let cold = ranges("bytes=0-99,150000-150099").await.unwrap();
    assert_byteranges(cold, &blob, &[0..100, 150_000..150_100]).await;
    proxy.settled().await;
    let hit = ranges("bytes=-10,10-19,0-9").await.unwrap();
    assert_byteranges(hit, &blob, &[0..20, BLOB_SIZE - 10..BLOB_SIZE]).await;
    assert_eq!(registry.count("GET", &digest), 1);
}

#[tokio::test]
async fn each_client_names_the_registry_its_own_way() {
    init();
    let registry = Registry::start().await;
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let manifest = Registry::manifest_json(&[(&digest, BLOB_SIZE)], "mirror");
    let manifest_digest = registry.add_manifest("team/app", "v1", DOCKER_V2, manifest.clone());
    // dockerd names no registry: the default one.
    let proxy = Proxy::builder(&registry)
        .mirror(&format!("{LISTEN}\ndefault_registry = \"{REGISTRY}\""))
        .start()
        .await;
    let mirror = proxy.mirror_url();

    let ping = get(&format!("{mirror}/v2/")).await;
    assert_eq!(ping.status(), 200);
    assert_eq!(
        ping.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    for path in [
        format!("/v2/team/app/manifests/v1?ns={REGISTRY}"),
        format!("/v2/{REGISTRY}/team/app/manifests/v1"),
        "/v2/team/app/manifests/v1".to_owned(),
    ] {
        let got = direct()
            .get(format!("{mirror}{path}"))
            .header("accept", DOCKER_V2)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{path}");
        assert_eq!(
            got.headers()["docker-content-digest"],
            manifest_digest.as_str()
        );
        assert_eq!(got.bytes().await.unwrap(), manifest, "{path}");
    }
    let got = get(&format!("{mirror}/v2/{REGISTRY}/team/app/blobs/{digest}")).await;
    assert_eq!(got.bytes().await.unwrap(), bytes);
    let tags = get(&format!("{mirror}/v2/team/app/tags/list?ns={REGISTRY}")).await;
    assert_eq!(tags.status(), 200);
    assert!(tags.text().await.unwrap().contains("tags"));
    // The status page names the image as the registry knows it, whichever way it was asked.
    let page = reqwest::get(format!("http://{}/", proxy.server.admin_addr().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("{REGISTRY}/team/app:v1")), "{page}");
    assert!(!page.contains(&format!("{REGISTRY}/{REGISTRY}")), "{page}");
    // No ns, no prefix, no client login ever reached the registry.
    assert!(
        registry
            .seen()
            .iter()
            .all(|s| !s.path.contains("ns=") && s.path.starts_with("/v2/team/app/")),
        "{:?}",
        registry.seen()
    );
}

#[tokio::test]
async fn hoard_logs_in_upstream_itself_and_never_passes_the_clients_authorization() {
    init();
    let registry = Registry::start().await;
    registry.require("team/app", "Bearer tok");
    registry.serve_token(r#"{"token":"tok","expires_in":300}"#);
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let proxy = Proxy::builder(&registry).mirror(LISTEN).start().await;
    let mirror = proxy.mirror_url();

    let got = direct()
        .get(format!("{mirror}/v2/team/app/blobs/{digest}?ns={REGISTRY}"))
        .header("authorization", "Basic bWlycm9yOnNlY3JldA==")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), bytes);
    let tags = get(&format!("{mirror}/v2/team/app/tags/list?ns={REGISTRY}")).await;
    assert_eq!(
        tags.status(),
        200,
        "the tag list goes with hoard's token too"
    );

    let seen = registry.seen();
    let token_requests: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/token"))
        .collect();
    assert_eq!(token_requests.len(), 1, "one anonymous token: {seen:?}");
    assert_eq!(token_requests[0].authorization, None, "asked anonymously");
    for s in &seen {
        assert_ne!(
            s.authorization.as_deref(),
            Some("Basic bWlycm9yOnNlY3JldA=="),
            "the client's Authorization went upstream: {s:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.path.contains("/blobs/") && s.authorization.as_deref() == Some("Bearer tok"))
    );
}

#[tokio::test]
async fn bad_mirror_requests_get_a_reason_and_fetch_nothing() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).mirror(LISTEN).start().await;
    let mirror = proxy.mirror_url();
    let digest = format!("sha256:{}", "a".repeat(64));
    for (path, status, reason) in [
        (
            format!("/v2/p/app/blobs/{digest}?ns=other.test"),
            403,
            "registry other.test is not served by this mirror",
        ),
        (
            format!("/v2/other.test/p/app/blobs/{digest}"),
            403,
            "not served by this mirror",
        ),
        (
            format!("/v2/p/app/blobs/{digest}?ns=a%2Fb"),
            400,
            "not a registry host",
        ),
        (
            format!("/v2/{REGISTRY}/../../p/app/blobs/{digest}"),
            400,
            "is not a repository name",
        ),
        (
            format!("/v2/p/app/blobs/sha256:abc?ns={REGISTRY}"),
            400,
            "invalid digest",
        ),
        (
            format!("/v2/p/app/manifests/bad%2Ftag?ns={REGISTRY}"),
            400,
            "percent-encoding",
        ),
        (
            format!("/v2/_catalog?ns={REGISTRY}"),
            400,
            "not a registry call",
        ),
        ("/ca.crt".to_owned(), 404, "under /v2/"),
    ] {
        let answer = raw_get(&proxy, &path).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {answer}"
        );
        assert!(answer.contains(reason), "{path}: {answer}");
    }
    let pushed = direct()
        .post(format!("{mirror}/v2/p/app/blobs/uploads/?ns={REGISTRY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 405);
    assert_eq!(pushed.headers()["allow"], "GET, HEAD");
    assert!(registry.seen().is_empty(), "{:?}", registry.seen());
}

#[tokio::test]
async fn a_mirror_with_logins_asks_for_one_and_keeps_it_from_the_registry() {
    init();
    let registry = Registry::start().await;
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let proxy = Proxy::builder(&registry)
        .proxy(&format!("auth_file = \"{}\"", users.display()))
        .mirror(LISTEN)
        .start()
        .await;
    let blob = format!(
        "{}/v2/p/app/blobs/{digest}?ns={REGISTRY}",
        proxy.mirror_url()
    );

    let anonymous = get(&blob).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"hoard\""
    );
    let wrong = direct()
        .get(&blob)
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(registry.seen().is_empty());

    let alice = direct()
        .get(&blob)
        .basic_auth("alice", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(alice.status(), 200);
    assert_eq!(alice.bytes().await.unwrap(), bytes);
    assert!(
        registry.seen().iter().all(|s| s.authorization.is_none()),
        "alice's login went upstream: {:?}",
        registry.seen()
    );
}

#[tokio::test]
async fn a_tls_mirror_serves_h1_and_h2_with_a_certificate_from_hoards_ca_or_the_operators() {
    init();
    let registry = Registry::start().await;
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let operator_ca = TestCa::new();
    let (cert, key) = operator_ca.server_pem(&["mirror.test"]);
    let files = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (files.path().join("m.crt"), files.path().join("m.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let operators = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    for (tls, minted) in [
        ("names = [\"mirror.test\"]", true),
        (operators.as_str(), false),
    ] {
        let proxy = Proxy::builder(&registry)
            .mirror(&format!("{LISTEN}\n{tls}"))
            .start()
            .await;
        let trusted = if minted {
            &proxy.ca_pem
        } else {
            &operator_ca.pem
        };
        let ca = reqwest::Certificate::from_pem(trusted.as_bytes()).unwrap();
        let addr = proxy.server.mirror_addr().unwrap();
        let blob = format!(
            "https://mirror.test:{}/v2/p/app/blobs/{digest}?ns={REGISTRY}",
            addr.port()
        );
        for h2 in [false, true] {
            let builder = reqwest::Client::builder()
                .no_proxy()
                .resolve("mirror.test", addr)
                .tls_certs_only([ca.clone()]);
            let client = if h2 { builder } else { builder.http1_only() };
            let got = client.build().unwrap().get(&blob).send().await.unwrap();
            assert_eq!(got.status(), 200, "{tls}");
            let want = if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            };
            assert_eq!(got.version(), want);
            assert_eq!(got.bytes().await.unwrap(), bytes, "{tls}");
        }
        // Plain HTTP on a TLS mirror is not served.
        let plain = direct().get(format!("http://{addr}/v2/")).send().await;
        assert!(plain.is_err(), "{tls}: {plain:?}");
    }
}

#[tokio::test]
async fn referrers_are_cached_like_a_tag_and_served_stale_when_the_registry_is_down() {
    init();
    let registry = Registry::start().await;
    let subject = format!("sha256:{}", "b".repeat(64));
    let index = |marker: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{{"m":"{marker}"}}}}"#
        )
    };
    registry.set_referrers("p/app", &subject, &index("one"));
    let proxy = Proxy::builder(&registry).mirror(LISTEN).start().await;
    let referrers = format!(
        "{}/v2/p/app/referrers/{subject}?ns={REGISTRY}",
        proxy.mirror_url()
    );
    let body = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/vnd.oci.image.index.v1+json"
        );
        response.text().await.unwrap()
    };
    let asked = || registry.count("GET", "/referrers/");

    assert_eq!(body(get(&referrers).await).await, index("one"));
    assert_eq!(body(get(&referrers).await).await, index("one"));
    assert_eq!(asked(), 1, "the second answer came from the cache");

    registry.set_referrers("p/app", &subject, &index("two"));
    proxy
        .server
        .clock()
        .advance(std::time::Duration::from_secs(601));
    assert_eq!(
        body(get(&referrers).await).await,
        index("two"),
        "stale: asked again"
    );
    assert_eq!(asked(), 2);

    registry.set_mode(Mode::Down);
    proxy
        .server
        .clock()
        .advance(std::time::Duration::from_secs(601));
    assert_eq!(
        body(get(&referrers).await).await,
        index("two"),
        "served stale"
    );
    assert_eq!(asked(), 3);

    registry.set_mode(Mode::Direct);
    let filtered = format!("{referrers}&artifactType=application%2Fspdx%2Bjson");
    for _ in 0..2 {
        body(get(&filtered).await).await;
    }
    assert_eq!(asked(), 5, "a filtered list is not cached");
}

#[tokio::test]
async fn a_cached_image_comes_through_the_mirror_while_the_registry_rate_limits() {
    init();
    let registry = Registry::start().await;
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let manifest = Registry::manifest_json(&[(&digest, BLOB_SIZE)], "limited");
    registry.add_manifest("p/app", "v1", DOCKER_V2, manifest.clone());
    let proxy = Proxy::builder(&registry).mirror(LISTEN).start().await;
    let mirror = proxy.mirror_url();
    let pull = || async {
        let tag = direct()
            .get(format!("{mirror}/v2/p/app/manifests/v1?ns={REGISTRY}"))
            .header("accept", DOCKER_V2)
            .send()
            .await
            .unwrap();
        assert_eq!(tag.status(), 200);
        assert_eq!(tag.bytes().await.unwrap(), manifest);
        let blob = get(&format!("{mirror}/v2/p/app/blobs/{digest}?ns={REGISTRY}")).await;
        assert_eq!(blob.status(), 200);
        assert_eq!(blob.bytes().await.unwrap(), bytes);
    };
    pull().await;
    proxy.settled().await;
    registry.set_mode(Mode::RateLimited);
    proxy
        .server
        .clock()
        .advance(std::time::Duration::from_secs(601));
    pull().await;
    assert_eq!(
        registry.count("HEAD", "/manifests/v1"),
        1,
        "the stale tag was asked about once, got 429, and was served from the cache"
    );
}

#[tokio::test]
async fn a_reload_cannot_open_a_wide_mirror_to_everyone() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .proxy("allow_clients = [\"127.0.0.0/8\"]")
        .mirror("listen = \"0.0.0.0:0\"")
        .start()
        .await;
    assert!(proxy.server.mirror_addr().unwrap().ip().is_unspecified());
    // The file now says loopback and drops the allow-list: fine for a loopback mirror, an open
    // one on the address that is bound.
    let path = Proxy::builder(&registry)
        .mirror(LISTEN)
        .write_config(proxy.dir.path(), "127.0.0.1:0");
    let config = hoard::Config::load(Some(&path), Default::default()).unwrap();
    let refused = proxy.server.reload(config).unwrap_err().to_string();
    assert!(refused.starts_with("mirror.listen"), "{refused}");
}

#[tokio::test]
async fn a_mirror_named_by_its_address_passes_openssls_name_constraint_checks() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .mirror(&format!("{LISTEN}\nnames = [\"127.0.0.1\"]"))
        .start()
        .await;
    let addr = proxy.server.mirror_addr().unwrap();
    let ca = proxy.dir.path().join("ca/ca.crt");
    // OpenSSL, unlike rustls, also checks the common name against the CA's DNS constraints: a
    // leaf whose common name is an address is refused there. Run off the test's one runtime
    // thread, which serves the handshake.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-verify_return_error",
            ])
            .args(["-verify_ip", "127.0.0.1", "-CAfile"])
            .arg(&ca)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Verify return code: 0 (ok)"),
        "openssl refused the mirror's certificate: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_ca_limited_to_other_names_stops_the_start_with_advice() {
    init();
    let registry = Registry::start().await;
    // The first start creates a CA limited to the intercepted hosts.
    let first = Proxy::builder(&registry).start().await;
    let dir = first.dir;
    drop(first.server);
    let path = Proxy::builder(&registry)
        .mirror(&format!("{LISTEN}\nnames = [\"mirror.test\"]"))
        .write_config(dir.path(), "127.0.0.1:0");
    let config = hoard::Config::load(Some(&path), Default::default()).unwrap();
    let refused = match hoard::Server::start(config).await {
        Ok(_) => panic!("a CA that cannot sign for mirror.test served the mirror"),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        refused.contains("cannot sign for mirror.test") && refused.contains("move ca/ away"),
        "{refused}"
    );
}

/// A mirror reaches a registry on port 443, or on a port its `host:port` is listed with; anything
/// else is refused before a connection is made. An unreachable registry's 502 names it as the
/// client did, never the address it resolved to or the system's error.
#[tokio::test]
async fn a_mirror_reaches_only_port_443_or_a_listed_host_port() {
    init();
    let registry = Registry::start().await;
    let closed = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::builder(&registry)
        .mirror(&format!(
            "{LISTEN}\nregistries = [\"down.test\", \"other.test:5000\"]"
        ))
        .resolve(&format!(
            r#"{{ "{REGISTRY}" = "{addr}", "down.test" = "{closed}", "other.test" = "{closed}" }}"#,
            addr = registry.addr
        ))
        .start()
        .await;
    let digest = format!("sha256:{}", "a".repeat(64));
    for ns in [
        format!("{REGISTRY}:8443"),
        "down.test:5000".to_owned(),
        "other.test:5001".to_owned(),
    ] {
        let answer = raw_get(&proxy, &format!("/v2/p/app/blobs/{digest}?ns={ns}")).await;
        assert!(answer.starts_with("HTTP/1.1 403 "), "{ns}: {answer}");
        assert!(answer.contains("port"), "{ns}: {answer}");
        let answer = raw_get(&proxy, &format!("/v2/{ns}/p/app/blobs/{digest}")).await;
        assert!(answer.starts_with("HTTP/1.1 403 "), "{ns}: {answer}");
    }
    assert!(registry.seen().is_empty(), "{:?}", registry.seen());

    for ns in ["down.test", "other.test:5000"] {
        let answer = raw_get(&proxy, &format!("/v2/p/app/blobs/{digest}?ns={ns}")).await;
        assert!(answer.starts_with("HTTP/1.1 502 "), "{ns}: {answer}");
        assert!(answer.contains(ns), "{ns}: {answer}");
        assert!(!answer.contains("127.0.0.1"), "{ns}: {answer}");
        assert!(!answer.contains("os error"), "{ns}: {answer}");
    }
}

#[tokio::test]
async fn a_tls_mirror_serves_its_setup_script_without_a_login_and_nothing_else() {
    init();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let port = free_port();
    let proxy = Proxy::builder(&registry)
        .proxy(&format!("auth_file = \"{}\"", users.display()))
        .mirror(&format!(
            "listen = \"127.0.0.1:{port}\"\nnames = [\"mirror.test\"]"
        ))
        .start()
        .await;
    let addr = proxy.server.mirror_addr().unwrap();
    let ca = reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve("mirror.test", addr)
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let base = format!("https://mirror.test:{port}");
    let script = client
        .get(format!("{base}/setup/containerd?mode=mirror"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let text = script.text().await.unwrap();
    assert!(text.starts_with("#!/bin/sh"), "{text}");
    assert!(
        text.contains(proxy.ca_pem.trim()),
        "the script carries the CA"
    );
    assert!(
        text.contains(&format!("https://mirror.test:{port}")),
        "{text}"
    );
    // The registry API still needs a login.
    let v2 = client.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(v2.status(), 401);
    assert!(registry.seen().is_empty());
}
