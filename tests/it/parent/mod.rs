//! hoard behind a parent proxy (`upstream.proxy`): an HTTP CONNECT parent with credentials, a
//! SOCKS5 parent and a second hoard (tunnelling, or intercepting as the regional level of a
//! hierarchy: `hierarchy.rs`), each written or started here on loopback. The child hoard
//! has no `upstream.resolve` entry for the fixture registry, so the parent is its only way there.

mod fake;
mod guard;
mod hierarchy;

use fake::FakeParent;

use crate::common::*;

const BLOB_SIZE: usize = 64 << 10;

/// The credentials the test parents want: a space in the password, percent-encoded in the URL.
const USER: &str = "user";
const PASSWORD: &str = "pa ss";
const PASSWORD_IN_URL: &str = "pa%20ss";

/// A hoard whose only way to the fixture registry is `parent` (a proxy URL), with `proxy` lines
/// in its `[proxy]` section.
async fn child(registry: &Registry, parent: &str, proxy: &str) -> Proxy {
    Proxy::builder(registry)
        .proxy(proxy)
        .upstream(&format!("proxy = \"{parent}\""))
        .resolve("{}")
        .start()
        .await
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, bytes::Bytes) {
    let response = client
        .get(url)
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap())
}

fn blob_url(digest: &str) -> String {
    url(&format!("/v2/lib/app/blobs/{digest}"))
}

/// A client that sends plain `http://` requests through `hoard`.
fn forwarder(hoard: &Proxy) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(hoard.url()).unwrap())
        .build()
        .unwrap()
}

/// The fixture registry, an HTTP CONNECT parent in front of it, and a child hoard behind that.
async fn behind_a_connect_parent() -> (Registry, FakeParent, Proxy) {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::http(registry.addr, USER, PASSWORD).await;
    let hoard = child(&registry, &parent.http_url(USER, PASSWORD_IN_URL), "").await;
    (registry, parent, hoard)
}

#[tokio::test]
async fn pulls_go_through_an_http_connect_parent_with_credentials() {
    let (registry, parent, hoard) = behind_a_connect_parent().await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());
    let manifest = Registry::manifest_json(&[(&digest, BLOB_SIZE)], "parent");
    registry.add_manifest("lib/app", "v1", DOCKER_V2, manifest.clone());

    let client = hoard.client(false);
    let (status, body) = get(&client, &url("/v2/lib/app/manifests/v1")).await;
    assert_eq!((status, body), (200, manifest));
    let (status, body) = get(&client, &blob_url(&digest)).await;
    assert_eq!(status, 200);
    assert_eq!(body, blob, "the blob arrived intact");

    let targets = parent.targets();
    assert!(!targets.is_empty(), "the parent saw no CONNECT");
    assert!(
        targets.iter().all(|t| t == "registry.test:443"),
        "{targets:?}"
    );
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn wrong_parent_credentials_are_a_bad_gateway_that_names_the_407() {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::http(registry.addr, USER, PASSWORD).await;
    let hoard = child(&registry, &parent.http_url(USER, "wrong"), "").await;
    let digest = registry.add_blob(fresh_blob(BLOB_SIZE));

    let response = hoard
        .client(false)
        .get(blob_url(&digest))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let reason = response.text().await.unwrap();
    assert!(reason.contains("407"), "{reason}");
    assert!(reason.contains(&parent.addr.to_string()), "{reason}");
    assert!(
        !reason.contains("wrong"),
        "the password is not shown: {reason}"
    );
    assert_eq!(parent.targets(), ["registry.test:443"]);
    assert!(registry.seen().is_empty(), "nothing reached the registry");
}

#[tokio::test]
async fn a_second_hoard_as_parent_tunnels_and_the_child_keeps_the_blob() {
    init();
    let registry = Registry::start().await;
    // The parent intercepts nothing and tunnels registry.test to the fixture (its resolve entry).
    let parent = Proxy::builder(&registry).intercept("[]").start().await;
    let hoard = child(&registry, &parent.url(), "").await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());
    let client = hoard.client(false);

    let (status, body) = get(&client, &blob_url(&digest)).await;
    assert_eq!((status, body), (200, blob.clone()));
    hoard.settled().await;
    assert_eq!(std::fs::read(hoard.blob_path(&digest)).unwrap(), blob);
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        parent.server.admin_addr().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let connections = metrics.lines().find_map(|l| {
        l.strip_prefix("hoard_connections_total ")?
            .parse::<f64>()
            .ok()
    });
    assert!(
        connections.is_some_and(|n| n >= 1.0),
        "the parent served the child: {metrics}"
    );

    // With the parent and the registry gone, the blob comes from the child's store.
    drop(parent);
    registry.stop();
    let (status, body) = get(&client, &blob_url(&digest)).await;
    assert_eq!((status, body), (200, blob));
    assert_eq!(registry.count("GET", "/blobs/"), 1);
}

#[tokio::test]
async fn a_socks5_parent_gets_the_host_name_and_credentials() {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::socks5(registry.addr).await;
    let url_of_parent = format!("socks5h://{USER}:{PASSWORD_IN_URL}@{}", parent.addr);
    let hoard = child(&registry, &url_of_parent, "").await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());

    let (status, body) = get(&hoard.client(false), &blob_url(&digest)).await;
    assert_eq!(status, 200);
    assert_eq!(body, blob, "the blob arrived intact");
    assert_eq!(
        parent.targets(),
        ["registry.test:443"],
        "a name, not an address"
    );
}

#[tokio::test]
async fn no_proxy_destinations_skip_the_parent() {
    init();
    let registry = Registry::start().await;
    let parent = FakeParent::http(registry.addr, USER, PASSWORD).await;
    // The registry by its address (no_proxy) and by its name (through the parent).
    let port = registry.addr.port();
    let hoard = Proxy::builder(&registry)
        .proxy(&format!("connect_ports = [443, {port}]"))
        .intercept(r#"["registry.test", "127.0.0.1"]"#)
        .resolve("{}")
        .upstream(&format!(
            "proxy = \"{}\"\nno_proxy = [\".example\", \"127.0.0.1\"]",
            parent.http_url(USER, PASSWORD_IN_URL)
        ))
        .start()
        .await;
    let client = hoard.client(false);
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());

    let direct = format!("https://127.0.0.1:{port}/v2/lib/app/blobs/{digest}");
    let (status, body) = get(&client, &direct).await;
    assert_eq!((status, body), (200, blob.clone()));
    assert!(parent.targets().is_empty(), "{:?}", parent.targets());

    let other = fresh_blob(BLOB_SIZE);
    let other_digest = registry.add_blob(other.clone());
    let (status, body) = get(&client, &blob_url(&other_digest)).await;
    assert_eq!((status, body), (200, other));
    assert_eq!(parent.targets(), ["registry.test:443"]);
}

#[tokio::test]
async fn tunnels_go_through_the_parent_too() {
    let (registry, parent, hoard) = behind_a_connect_parent().await;
    let blob = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(blob.clone());

    // cdn.test is not intercepted: the client's TLS goes through hoard and the parent untouched,
    // and the client checks the registry's own certificate.
    let client = client_via(&hoard.url(), &registry.ca.pem, false);
    let response = client
        .get(format!("https://{CDN}/cdn/b/final-{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), blob);
    assert_eq!(parent.targets(), [format!("{CDN}:443")]);
    assert_eq!(registry.seen().len(), 1);
    assert_eq!(registry.seen()[0].host, CDN);
}

#[tokio::test]
async fn a_reload_switches_the_parent() {
    let (registry, first, hoard) = behind_a_connect_parent().await;
    let second = FakeParent::http(registry.addr, USER, PASSWORD).await;
    let client = hoard.client(false);
    let one = registry.add_blob(fresh_blob(BLOB_SIZE));
    assert_eq!(get(&client, &blob_url(&one)).await.0, 200);
    assert_eq!(first.targets().len(), 1);

    let upstream = format!("proxy = \"{}\"", second.http_url(USER, PASSWORD_IN_URL));
    let path = Proxy::builder(&registry)
        .upstream(&upstream)
        .resolve("{}")
        .write_config(hoard.dir.path(), "127.0.0.1:0");
    let config = hoard::Config::load(Some(&path), Default::default()).unwrap();
    hoard.server.reload(config).unwrap();

    let two = registry.add_blob(fresh_blob(BLOB_SIZE));
    assert_eq!(get(&client, &blob_url(&two)).await.0, 200);
    assert_eq!(first.targets().len(), 1, "the first parent is out");
    assert_eq!(second.targets(), ["registry.test:443"]);
}
