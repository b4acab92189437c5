//! What hoard refuses to reach or to serve: private destinations and other ports, private content
//! under `auth_on_hit = "upstream"`, names outside a constrained CA, and hostile input.

use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::UnixTime;

use super::*;

#[tokio::test]
async fn tunnels_and_forwards_to_private_addresses_or_other_ports_are_refused() {
    init();
    let registry = Registry::start().await;
    let (echo, _server) = echo_server().await;
    // The echo server's port is allowed, so the refusal of a forward to it is the guard's.
    let ports = format!("forward_ports = [80, {}]", echo.port());
    let proxy = Proxy::builder(&registry).proxy(&ports).start().await;

    // A name that resolves to loopback is refused on the resolved address.
    for target in [
        "localhost:443",
        "127.0.0.1:443",
        "[::1]:443",
        "169.254.169.254:443",
    ] {
        let response = raw_head(
            &proxy,
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 403"), "{target}: {response}");
        assert!(
            response.contains("allow_private_destinations"),
            "{target}: {response}"
        );
    }
    let port = raw_head(&proxy, b"CONNECT example.com:22 HTTP/1.1\r\n\r\n").await;
    assert!(port.starts_with("HTTP/1.1 403"), "{port}");
    assert!(port.contains("port 22"), "{port}");
    let plain = raw_head(
        &proxy,
        format!(
            "GET http://localhost:{}/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
            echo.port()
        )
        .as_bytes(),
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 403"), "{plain}");
    assert!(plain.contains("allow_private_destinations"), "{plain}");
    // Plain forwards reach only proxy.forward_ports (80 by default).
    let other_port = raw_head(
        &proxy,
        b"GET http://example.com:25/ HTTP/1.1\r\nHost: example.com:25\r\n\r\n",
    )
    .await;
    assert!(other_port.starts_with("HTTP/1.1 403"), "{other_port}");
    assert!(other_port.contains("proxy.forward_ports"), "{other_port}");

    // The intercepted registry is the operator's own and may live anywhere (here: loopback).
    let ping = proxy.client(true).get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
}

#[tokio::test]
async fn auth_on_hit_upstream_keeps_private_content_private() {
    init();
    let registry = Registry::start().await;
    registry.require("team/secret", "Bearer good");
    let proxy = Proxy::builder(&registry)
        .cache("auth_on_hit = \"upstream\"")
        .start()
        .await;
    let layer = fresh_blob(10_000);
    let digest = registry.add_blob(layer.clone());
    let manifest = Registry::manifest_json(&[(&digest, 10_000)], "secret");
    let manifest_digest = registry.add_manifest("team/secret", "v1", DOCKER_V2, manifest.clone());
    let client = proxy.client(false);
    let blob = url(&format!("/v2/team/secret/blobs/{digest}"));
    let by_digest = url(&format!("/v2/team/secret/manifests/{manifest_digest}"));

    // The owner pulls: now both are cached.
    for path in [&by_digest, &blob] {
        let got = client.get(path).bearer_auth("good").send().await.unwrap();
        assert_eq!(got.status(), 200);
    }
    assert_eq!(registry.count("GET", "/blobs/"), 1);

    // Nobody else gets them from the cache.
    for path in [&by_digest, &blob] {
        let anonymous = client.get(path).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
        assert!(anonymous.headers().contains_key("www-authenticate"));
        let wrong = client.get(path).bearer_auth("bad").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    // The owner still does, from the cache: the registry saw HEADs, not another GET.
    let again = client.get(&blob).bearer_auth("good").send().await.unwrap();
    assert_eq!(again.bytes().await.unwrap(), layer);
    assert_eq!(registry.count("GET", "/blobs/"), 1);
    assert!(registry.count("HEAD", "/blobs/") >= 1);

    // The verdict is remembered: no HEAD for a repeat within minutes.
    let heads = registry.count("HEAD", "/blobs/");
    client.get(&blob).bearer_auth("good").send().await.unwrap();
    assert_eq!(registry.count("HEAD", "/blobs/"), heads);

    // Registry down: the owner, accepted before, is still served; a stranger is not.
    registry.set_mode(Mode::Down);
    let offline = client
        .get(&by_digest)
        .bearer_auth("good")
        .send()
        .await
        .unwrap();
    assert_eq!(offline.status(), 200);
    let stranger = client
        .get(&by_digest)
        .bearer_auth("other")
        .send()
        .await
        .unwrap();
    assert!(stranger.status().is_server_error(), "{}", stranger.status());
}

#[tokio::test]
async fn offline_an_object_goes_only_to_credentials_accepted_for_a_repository_it_came_from() {
    init();
    let registry = Registry::start().await;
    registry.require("team/secret", "Bearer good");
    registry.require("team/public", "Bearer pub");
    let proxy = Proxy::builder(&registry)
        .cache("auth_on_hit = \"upstream\"")
        .start()
        .await;
    let client = proxy.client(false);
    let secret = fresh_blob(10_000);
    let secret_digest = registry.add_blob(secret.clone());
    let manifest = Registry::manifest_json(&[(&secret_digest, 10_000)], "secret");
    let manifest_digest = registry.add_manifest("team/secret", "v1", DOCKER_V2, manifest);
    let public_digest = registry.add_blob(fresh_blob(5_000));
    let get = |path: String, token: &str| client.get(url(&path)).bearer_auth(token).send();

    // The owner pulls the private image; someone else pulls from a repository of their own.
    for path in [
        format!("/v2/team/secret/manifests/{manifest_digest}"),
        format!("/v2/team/secret/blobs/{secret_digest}"),
    ] {
        assert_eq!(get(path, "good").await.unwrap().status(), 200);
    }
    let public = format!("/v2/team/public/blobs/{public_digest}");
    assert_eq!(get(public.clone(), "pub").await.unwrap().status(), 200);
    proxy.settled().await;
    // The origins are written in the background: give them a moment.
    let origins = proxy.cache_dir().join("origins");
    let recorded = |kind: &str, digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        origins.join(kind).join("sha256").join(&hex[..2]).join(hex)
    };
    let files = [
        recorded("blobs", &secret_digest),
        recorded("manifests", &manifest_digest),
        recorded("blobs", &public_digest),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !files.iter().all(|f| f.exists()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    registry.set_mode(Mode::Down);
    // Accepted for team/public, asking for the private objects under team/public's name.
    for path in [
        format!("/v2/team/public/blobs/{secret_digest}"),
        format!("/v2/team/public/manifests/{manifest_digest}"),
    ] {
        let stranger = get(path.clone(), "pub").await.unwrap();
        assert_eq!(stranger.status(), 503, "{path}");
    }
    // Their own object still comes (a remembered verdict), and the owner gets the private one
    // under any name: the registry accepted the owner for a repository it came from.
    assert_eq!(get(public, "pub").await.unwrap().status(), 200);
    let owner = get(format!("/v2/team/mirror/blobs/{secret_digest}"), "good")
        .await
        .unwrap();
    assert_eq!(owner.status(), 200);
    assert_eq!(owner.bytes().await.unwrap(), secret);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(text, "registry.test team/secret\n");

    // An entry whose origins are unknown (stored by an older hoard) waits for the registry.
    std::fs::remove_dir_all(&origins).unwrap();
    let unknown = get(format!("/v2/team/other/blobs/{secret_digest}"), "good")
        .await
        .unwrap();
    assert_eq!(unknown.status(), 503);
}

#[tokio::test]
async fn a_name_constrained_ca_signs_only_the_intercepted_domains() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .ca("name_constraints = true")
        .start()
        .await;
    // hoard's own leaf for the intercepted host verifies.
    let ping = proxy.client(false).get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);

    // Anyone holding the CA key still cannot make a certificate another site would accept.
    let key_pem = std::fs::read_to_string(proxy.dir.path().join("ca/ca.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&proxy.ca_pem, key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(proxy.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let verify = |name: &str| {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        verifier.verify_server_cert(
            leaf.der(),
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
    };
    assert!(verify(REGISTRY).is_ok());
    let forged = verify("bank.example").unwrap_err().to_string();
    assert!(forged.to_lowercase().contains("name"), "{forged}");
    assert!(verify("127.0.0.1").is_err());
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_with_a_reason_and_hoard_keeps_serving() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let bytes = fresh_blob(1000);
    let digest = registry.add_blob(bytes.clone());

    for (path, reason) in [
        ("/v2/a/%2e%2e/%2e%2e/manifests/latest", "dot segments"),
        ("/v2/../../etc/passwd/manifests/x", "dot segments"),
        ("/v2/a/blobs/sha256:../../../etc/passwd", "dot segments"),
        ("/v2/a/blobs/sha256:abc", "invalid digest"),
        (
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            "invalid digest",
        ),
        ("/v2/UPPER/manifests/latest", "invalid repository"),
        ("/v2/a/manifests/-tag", "invalid tag"),
    ] {
        let response = raw_intercepted(
            &proxy,
            format!("GET {path} HTTP/1.1\r\nHost: {REGISTRY}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        assert!(response.contains(reason), "{path}: {response}");
    }
    let range = raw_intercepted(
        &proxy,
        format!(
            "GET /v2/a/blobs/{digest} HTTP/1.1\r\nHost: {REGISTRY}\r\nRange: bytes=oops\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(range.starts_with("HTTP/1.1 416"), "{range}");

    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {REGISTRY}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(80 << 10)
    );
    let too_big = raw_head(&proxy, huge.as_bytes()).await;
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    let garbage = raw_head(&proxy, b"\x16\x03\x01\x00\xff garbage\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let no_port = raw_head(&proxy, b"CONNECT registry.test HTTP/1.1\r\n\r\n").await;
    assert!(no_port.starts_with("HTTP/1.1 400"), "{no_port}");

    // None of it left hoard unable to serve.
    let got = proxy
        .client(true)
        .get(url(&format!("/v2/a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), bytes);
}

/// The access check asks the registry alone: its redirect means yes, and where it points (a
/// presigned CDN URL answers a HEAD 403 or 401 while the GET would work) is never asked, let alone
/// remembered as the verdict.
#[tokio::test]
async fn auth_on_hit_takes_the_registrys_redirect_as_a_yes_and_never_asks_its_target() {
    init();
    let registry = Registry::start().await;
    registry.require("team/secret", "Bearer good");
    let proxy = Proxy::builder(&registry)
        .cache("auth_on_hit = \"upstream\"")
        .start()
        .await;
    let layer = fresh_blob(10_000);
    let digest = registry.add_blob(layer.clone());
    let client = proxy.client(false);
    // Cached through a public repository; then asked for in the private one.
    let public = url(&format!("/v2/team/public/blobs/{digest}"));
    let got = client.get(&public).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), layer);
    proxy.settled().await;
    let blob = url(&format!("/v2/team/secret/blobs/{digest}"));

    // Now the registry redirects its blobs to a CDN that refuses a HEAD.
    registry.set_mode(Mode::RedirectToChallenge);
    registry.forget();
    for _ in 0..2 {
        let got = client.get(&blob).bearer_auth("good").send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap(), layer);
    }
    let seen = registry.seen();
    assert!(seen.iter().all(|s| s.host != CDN), "{seen:?}");
    assert_eq!(registry.count("HEAD", "/blobs/"), 1, "{seen:?}");
}
