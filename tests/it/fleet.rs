//! A fleet of hoards on loopback, one fixture registry behind them: each blob and tag fetched
//! from the registry once for the whole fleet, the owner's answer streamed to the others, a dead
//! owner's share fetched by the others themselves, a fourth peer taking only its share of the
//! keys, and the peer endpoint closed to anyone without the fleet's secret.

use std::time::Duration;

use tokio::task::JoinSet;

use crate::common::*;

const SECRET: &str = "a-fleet-secret-for-the-tests-0123456789";

/// The mirror port of each node is how the test's clients reach it (plain HTTP).
const MIRROR: &str = "listen = \"127.0.0.1:0\"";

/// A fleet's shared settings: the peers' names, the secret's file.
struct Plan {
    peers: Vec<String>,
    secret: tempfile::TempDir,
}

impl Plan {
    fn new(n: usize) -> Plan {
        let secret = tempfile::tempdir().unwrap();
        std::fs::write(secret.path().join("secret"), SECRET).unwrap();
        Plan {
            peers: (0..n)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            secret,
        }
    }

    /// `[fleet]` for node `i`: its name is its listen address.
    fn fleet(&self, i: usize) -> String {
        format!(
            "peers = {:?}\nself = \"{me}\"\nlisten = \"{me}\"\nsecret_file = \"{}\"\npeer_timeout = \"3s\"",
            self.peers,
            self.secret.path().join("secret").display(),
            me = self.peers[i],
        )
    }

    async fn start(&self, registry: &Registry, i: usize) -> Proxy {
        Proxy::builder(registry)
            .mirror(MIRROR)
            .fleet(&self.fleet(i))
            .start()
            .await
    }
}

/// GET through a node's mirror port, the registry named in `ns`.
async fn pull(client: &reqwest::Client, node: &str, path: &str) -> reqwest::Response {
    client
        .get(format!("{node}{path}?ns={REGISTRY}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_clients_on_three_nodes_make_one_registry_get_per_blob() {
    init();
    let registry = Registry::start().await;
    let plan = Plan::new(3);
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(plan.start(&registry, i).await);
    }
    let Image {
        layers,
        digests,
        manifest,
    } = registry.add_image("team/app", "v1", 3, 768 << 10, "fleet");
    // Slow enough that every client asks while the fills still run.
    registry.set_mode(Mode::Slow {
        chunk: 64 << 10,
        delay: Duration::from_millis(15),
    });

    let mut clients = JoinSet::new();
    for c in 0..10 {
        let node = nodes[c % 3].mirror_url();
        let (layers, digests, manifest) = (layers.clone(), digests.clone(), manifest.clone());
        clients.spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let got = pull(&client, &node, "/v2/team/app/manifests/v1").await;
            assert_eq!(got.status(), 200, "client {c}");
            assert_eq!(got.bytes().await.unwrap(), manifest, "client {c}");
            // Each client takes the layers in its own order.
            for k in 0..3 {
                let i = (c + k) % 3;
                let got = pull(
                    &client,
                    &node,
                    &format!("/v2/team/app/blobs/{}", digests[i]),
                )
                .await;
                assert_eq!(got.status(), 200, "client {c}");
                let body = got.bytes().await.unwrap();
                assert_eq!(sha256(&body), digests[i], "client {c} got wrong bytes");
                assert_eq!(body, layers[i]);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    for digest in &digests {
        assert_eq!(
            registry.count("GET", digest),
            1,
            "one registry GET for {digest} in the fleet: {:#?}",
            registry.seen().iter().map(|s| &s.path).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        registry.count("GET", "/manifests/v1"),
        1,
        "one registry GET of the tag in the fleet"
    );
    // Every node keeps its own verified copy.
    for node in &nodes {
        node.settled().await;
        for (digest, layer) in digests.iter().zip(&layers) {
            assert_eq!(&std::fs::read(node.blob_path(digest)).unwrap(), layer);
        }
    }
    // The nodes that did not own a blob read it from the owner, and none fetched it twice.
    let mut peer_reads = 0;
    for node in &nodes {
        let metrics = node.admin("/metrics").await;
        assert!(
            !metrics.contains("hoard_fleet_duplicate_fetches_total{"),
            "{metrics}"
        );
        peer_reads += sample(&metrics, "hoard_fleet_peer_reads_total") as u64;
    }
    assert!(peer_reads >= 2 * 3, "{peer_reads} peer reads");
    // The status page lists the peers, this node among them, and what it read from owners.
    let page = nodes[0].admin("/").await;
    assert!(page.contains("<table id=\"fleet\">"), "{page}");
    for peer in &plan.peers {
        assert!(
            page.contains(&format!("<td>{peer}</td>")),
            "{peer} not in {page}"
        );
    }
    assert!(
        page.contains("<td>this node</td>") && page.contains("<td>up</td>"),
        "{page}"
    );
    assert!(
        page.contains(" duplicate fetches from the registry"),
        "{page}"
    );
    // And the fleet's figures: every node's counters, read from its peer endpoint, in all.
    let total = "<tr id=\"fleet-total\"><td>fleet (3 of 3 nodes)</td>";
    let at = page
        .find(total)
        .unwrap_or_else(|| panic!("no fleet total in {page}"));
    let cells: Vec<u64> = page[at + total.len()..]
        .split("</tr>")
        .next()
        .unwrap()
        .split("<td>")
        .filter_map(|cell| cell.trim_end_matches("</td>").parse().ok())
        .collect();
    // owner misses, owner hits, read from owners, duplicates, tier hits and uploads, registry
    // requests
    assert_eq!(cells.len(), 7, "{page}");
    assert_eq!(
        cells[2], peer_reads,
        "the fleet's reads from owners: {page}"
    );
    assert_eq!(
        cells[0] + cells[1],
        peer_reads,
        "each read answered by an owner: {page}"
    );
    assert_eq!(
        cells[6],
        registry.seen().len() as u64,
        "the fleet's registry requests are what the registry saw: {page}"
    );
    assert_eq!(cells[3], 0, "{page}");
}

#[tokio::test]
async fn a_node_whose_owner_dies_mid_blob_gets_the_rest_from_the_registry() {
    init();
    let registry = Registry::start().await;
    let plan = Plan::new(2);
    // The owner is a real process, killed mid-transfer.
    let owner_dir = tempfile::tempdir().unwrap();
    let owner_port = free_port();
    let config = Proxy::builder(&registry)
        .fleet(&plan.fleet(0))
        .write_config(owner_dir.path(), &format!("127.0.0.1:{owner_port}"));
    let mut owner = HoardProcess::spawn(&config, owner_port, None);
    owner.wait_healthy().await;
    let node = plan.start(&registry, 1).await;

    // Two blobs the dead-to-be owner owns.
    let mut owned = Vec::new();
    while owned.len() < 2 {
        let bytes = fresh_blob(1 << 20);
        let digest = sha256(&bytes);
        if node.server.fleet_owner(&digest).as_deref() == Some(plan.peers[0].as_str()) {
            registry.add_blob(bytes.clone());
            owned.push((digest, bytes));
        }
    }
    registry.set_mode(Mode::Slow {
        chunk: 32 << 10,
        delay: Duration::from_millis(20),
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let (digest, bytes) = &owned[0];
    let mut got = pull(
        &client,
        &node.mirror_url(),
        &format!("/v2/p/app/blobs/{digest}"),
    )
    .await;
    assert_eq!(got.status(), 200);
    let mut body = Vec::new();
    while body.len() < 256 << 10 {
        body.extend_from_slice(&got.chunk().await.unwrap().unwrap());
    }
    owner.kill();
    while let Some(chunk) = got.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&body), *digest, "the client got the blob whole");
    assert_eq!(&body, bytes);
    node.settled().await;
    assert_eq!(&std::fs::read(node.blob_path(digest)).unwrap(), bytes);
    let ranged: Vec<_> = registry
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.contains(digest.as_str()))
        .map(|s| {
            s.headers
                .get("range")
                .map(|r| r.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(ranged.len(), 2, "the owner's GET and the rest: {ranged:?}");
    assert!(
        ranged[1]
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "the rest was asked for as a range: {ranged:?}"
    );

    // With the owner gone, the node asks the registry itself, and says so.
    registry.set_mode(Mode::Direct);
    let (digest, bytes) = &owned[1];
    let got = pull(
        &client,
        &node.mirror_url(),
        &format!("/v2/p/app/blobs/{digest}"),
    )
    .await;
    assert_eq!(got.status(), 200);
    assert_eq!(&got.bytes().await.unwrap(), bytes);
    let metrics = node.admin("/metrics").await;
    for reason in ["broken", "unreachable"] {
        let series = format!("hoard_fleet_duplicate_fetches_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&series), "no {series} in\n{metrics}");
    }
    assert!(
        metrics.contains("hoard_fleet_peers{state=\"down\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_fourth_peer_added_by_reload_takes_a_quarter_of_the_keys_and_pulls_go_on() {
    init();
    let registry = Registry::start().await;
    let plan = Plan::new(4);
    let three = Plan {
        peers: plan.peers[..3].to_vec(),
        secret: tempfile::tempdir().unwrap(),
    };
    std::fs::write(three.secret.path().join("secret"), SECRET).unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(three.start(&registry, i).await);
    }
    let keys: Vec<String> = (0..2000).map(|i| format!("sha256:{i:064x}")).collect();
    let owners = |node: &Proxy, me: &str| -> Vec<String> {
        keys.iter()
            .map(|k| node.server.fleet_owner(k).unwrap_or_else(|| me.to_owned()))
            .collect()
    };
    let before = owners(&nodes[0], &plan.peers[0]);
    assert_eq!(before, owners(&nodes[1], &plan.peers[1]), "nodes agree");

    let blobs: Vec<_> = (0..6).map(|_| fresh_blob(256 << 10)).collect();
    let digests: Vec<String> = blobs.iter().map(|b| registry.add_blob(b.clone())).collect();
    registry.set_mode(Mode::Slow {
        chunk: 32 << 10,
        delay: Duration::from_millis(10),
    });
    // Pulls on every node while the fourth joins and the others reload.
    let mut pulls = JoinSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let node = node.mirror_url();
        let (blobs, digests) = (blobs.clone(), digests.clone());
        pulls.spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            for k in 0..6 {
                let j = (i + k) % 6;
                let got = pull(&client, &node, &format!("/v2/p/app/blobs/{}", digests[j])).await;
                assert_eq!(got.status(), 200);
                assert_eq!(got.bytes().await.unwrap(), blobs[j]);
            }
        });
    }
    let fourth = plan.start(&registry, 3).await;
    for (i, node) in nodes.iter().enumerate() {
        let path = Proxy::builder(&registry)
            .mirror(MIRROR)
            .fleet(&plan.fleet(i))
            .write_config(node.dir.path(), "127.0.0.1:0");
        let config = hoard::Config::load(Some(&path), Default::default()).unwrap();
        node.server.reload(config).unwrap();
    }
    while let Some(done) = pulls.join_next().await {
        done.unwrap();
    }

    let after = owners(&nodes[0], &plan.peers[0]);
    assert_eq!(
        after,
        owners(&fourth, &plan.peers[3]),
        "the new peer agrees"
    );
    let moved: Vec<_> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
    assert!(
        moved.iter().all(|&i| after[i] == plan.peers[3]),
        "keys moved only to the new peer"
    );
    let share = moved.len() as f64 / keys.len() as f64;
    assert!((0.18..0.32).contains(&share), "{share} of the keys moved");
    // A blob the fourth owns: the others read it from it.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    registry.set_mode(Mode::Direct);
    let (digest, bytes) = loop {
        let bytes = fresh_blob(64 << 10);
        let digest = sha256(&bytes);
        if fourth.server.fleet_owner(&digest).is_none() {
            registry.add_blob(bytes.clone());
            break (digest, bytes);
        }
    };
    for node in &nodes {
        let got = pull(
            &client,
            &node.mirror_url(),
            &format!("/v2/p/app/blobs/{digest}"),
        )
        .await;
        assert_eq!(got.bytes().await.unwrap(), bytes);
    }
    assert_eq!(registry.count("GET", &digest), 1);
}

#[tokio::test]
async fn the_peer_endpoint_refuses_strangers_and_registries_it_does_not_serve() {
    init();
    let registry = Registry::start().await;
    let plan = Plan::new(1);
    let node = plan.start(&registry, 0).await;
    let endpoint = format!("http://{}", node.server.fleet_addr().unwrap());
    let digest = registry.add_blob(fresh_blob(1024));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let path = format!("/v2/p/app/blobs/{digest}?ns={REGISTRY}");

    let ask = |path: String, signature: Option<String>, mode: &'static str| {
        let mut request = client
            .get(format!("{endpoint}{path}"))
            .header("hoard-fleet-mode", mode);
        if let Some(signature) = signature {
            request = request.header("hoard-fleet-signature", signature);
        }
        request.send()
    };
    let refused = |response: reqwest::Response, status: u16, says: &'static str| async move {
        assert_eq!(response.status(), status);
        assert!(response.headers().contains_key("hoard-fleet-refused"));
        let text = response.text().await.unwrap();
        assert!(text.contains(says), "{text}");
    };
    refused(
        ask(path.clone(), None, "proxy").await.unwrap(),
        401,
        "only peers",
    )
    .await;
    let forged = signature(
        b"not the fleet's secret at all",
        "GET",
        &path,
        "proxy",
        now(),
    );
    refused(
        ask(path.clone(), Some(forged), "proxy").await.unwrap(),
        401,
        "does not match",
    )
    .await;
    let old = signature(SECRET.as_bytes(), "GET", &path, "proxy", now() - 3600);
    refused(
        ask(path.clone(), Some(old), "proxy").await.unwrap(),
        401,
        "too old",
    )
    .await;
    // Signed for one path, sent for another.
    let other = format!("/v2/p/app/blobs/{digest}?ns=elsewhere.test");
    let signed = signature(SECRET.as_bytes(), "GET", &path, "proxy", now());
    refused(
        ask(other.clone(), Some(signed), "proxy").await.unwrap(),
        401,
        "does not match",
    )
    .await;
    // Signed right, but for a registry this node does not serve, or no registry.
    let signed = signature(SECRET.as_bytes(), "GET", &other, "proxy", now());
    refused(
        ask(other, Some(signed), "proxy").await.unwrap(),
        403,
        "not served",
    )
    .await;
    let bare = format!("/v2/p/app/blobs/{digest}");
    let signed = signature(SECRET.as_bytes(), "GET", &bare, "mirror", now());
    refused(
        ask(bare, Some(signed), "mirror").await.unwrap(),
        400,
        "names the registry in ns",
    )
    .await;
    let bad = format!("/v2/p/app/blobs/sha256:zz?ns={REGISTRY}");
    let signed = signature(SECRET.as_bytes(), "GET", &bad, "mirror", now());
    let got = ask(bad, Some(signed), "mirror").await.unwrap();
    assert_eq!(got.status(), 400, "a bad digest");
    assert_eq!(registry.seen().len(), 0, "nothing was fetched");

    // A node's metrics, for the fleet's figures: to a signed request only.
    let got = client
        .get(format!("{endpoint}/fleet/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 401);
    assert!(got.headers().contains_key("hoard-fleet-refused"));
    let signed = signature(SECRET.as_bytes(), "GET", "/fleet/metrics", "stats", now());
    let got = client
        .get(format!("{endpoint}/fleet/metrics"))
        .header("hoard-fleet-mode", "stats")
        .header("hoard-fleet-signature", signed)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.text()
            .await
            .unwrap()
            .contains("# TYPE hoard_requests counter")
    );

    // v2: a v1 signature (no nonce) is refused, a signature is good once, and the Range is
    // covered.
    let v1 = signature(SECRET.as_bytes(), "GET", &path, "mirror", now());
    let v1 = format!(
        "{} {}",
        v1.split(' ').next().unwrap(),
        v1.split(' ').nth(2).unwrap()
    );
    refused(
        ask(path.clone(), Some(v1), "mirror").await.unwrap(),
        401,
        "v1",
    )
    .await;
    let nonce = fresh_nonce();
    let once = signature_with(SECRET.as_bytes(), "GET", &path, "mirror", now(), &nonce, "");
    let first = ask(path.clone(), Some(once.clone()), "mirror")
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    refused(
        ask(path.clone(), Some(once), "mirror").await.unwrap(),
        401,
        "used before",
    )
    .await;
    let whole = signature(SECRET.as_bytes(), "GET", &path, "mirror", now());
    let ranged = client
        .get(format!("{endpoint}{path}"))
        .header("hoard-fleet-mode", "mirror")
        .header("hoard-fleet-signature", whole)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    refused(ranged, 401, "does not match").await;

    // And a peer that signs right gets the blob.
    let signed = signature(SECRET.as_bytes(), "GET", &path, "mirror", now());
    let got = ask(path, Some(signed), "mirror").await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
}

#[tokio::test]
async fn a_node_stops_at_once_though_its_peers_hold_pooled_connections_to_it() {
    init();
    let registry = Registry::start().await;
    let plan = Plan::new(2);
    let reader = plan.start(&registry, 0).await;
    let owner = plan.start(&registry, 1).await;
    let (digest, bytes) = loop {
        let bytes = fresh_blob(64 << 10);
        let digest = sha256(&bytes);
        if reader.server.fleet_owner(&digest).as_deref() == Some(plan.peers[1].as_str()) {
            registry.add_blob(bytes.clone());
            break (digest, bytes);
        }
    };
    let got = pull(
        &reqwest::Client::builder().no_proxy().build().unwrap(),
        &reader.mirror_url(),
        &format!("/v2/p/app/blobs/{digest}"),
    )
    .await;
    assert_eq!(got.bytes().await.unwrap(), bytes);
    // The reader keeps its connection to the owner's peer endpoint in its pool, idle: the
    // owner's shutdown closes it instead of waiting out the grace.
    let grace = Duration::from_secs(30);
    let started = std::time::Instant::now();
    owner.server.shutdown(grace).await;
    assert!(
        started.elapsed() < grace / 3,
        "the shutdown waited {:?} for an idle connection",
        started.elapsed()
    );
}

/// The trace ids the access log lines of a hoard's log name.
fn trace_ids(log: &str) -> std::collections::BTreeSet<String> {
    log.lines()
        .filter(|line| line.contains("hoard::log"))
        .filter_map(|line| line.split("trace_id=").nth(1))
        .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_the_owner_carries_one_trace_id_into_both_nodes_logs() {
    init();
    let registry = Registry::start().await;
    let plan = Plan::new(2);
    let Image { digests, .. } = registry.add_image("team/traced", "v1", 1, 64 << 10, "trace");
    let mut nodes = Vec::new();
    for i in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mirror = format!("listen = \"127.0.0.1:{}\"", free_port());
        let config = Proxy::builder(&registry)
            .mirror(&mirror)
            .fleet(&plan.fleet(i));
        let port = free_port();
        let path = config.write_config(dir.path(), &format!("127.0.0.1:{port}"));
        let mut process = HoardProcess::spawn(&path, port, None);
        process.wait_logged("fleet peer endpoint listening").await;
        let url = format!("http://{}", mirror.split('"').nth(1).unwrap());
        nodes.push((process, url, dir));
    }
    // Through both nodes: whichever does not own the blob asks the one that does.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let path = format!("/v2/team/traced/blobs/{}", digests[0]);
    for (_, url, _) in &nodes {
        let got = pull(&client, url, &path).await;
        assert_eq!(got.status(), 200);
        assert_eq!(sha256(&got.bytes().await.unwrap()), digests[0]);
    }
    assert_eq!(
        registry.count("GET", &path),
        1,
        "one registry GET for the fleet"
    );
    // The access log line is written when the body ends; give the owner's a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (asker, owner) = (trace_ids(&nodes[0].0.log()), trace_ids(&nodes[1].0.log()));
    let shared: Vec<_> = asker.intersection(&owner).collect();
    assert_eq!(shared.len(), 1, "node 0: {asker:?}, node 1: {owner:?}");
    assert_eq!(shared[0].len(), 32);
}

#[tokio::test]
async fn an_owner_never_lends_its_account_to_a_node_that_did_not() {
    init();
    let registry = Registry::start().await;
    registry.require("team/private", "Bearer tok");
    let account = hoard::http::basic_header("hoard", "s3cret");
    registry.serve_token_to(&account, r#"{"token":"tok","expires_in":300}"#);
    let plan = Plan::new(2);
    let credentials = |lend_to: &str| {
        format!(
            "[[upstream.credentials]]\nhost = \"{REGISTRY}\"\nusername = \"hoard\"\npassword = \"s3cret\"\nlend_to = {lend_to}\n"
        )
    };
    // Node 0 lends its account to nobody, node 1 to every client; the blob is node 1's.
    let start = |i: usize, lend_to: &str| {
        Proxy::builder(&registry)
            .mirror(MIRROR)
            .fleet(&plan.fleet(i))
            .upstream(&credentials(lend_to))
            .start()
    };
    let node0 = start(0, "[]").await;
    let node1 = start(1, "[\"*\"]").await;
    let digest = loop {
        let digest = registry.add_blob(fresh_blob(64 << 10));
        if node0.server.fleet_owner(&digest).as_deref() == Some(plan.peers[1].as_str()) {
            break digest;
        }
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let path = format!("/v2/team/private/blobs/{digest}");
    let refused = pull(&client, &node0.mirror_url(), &path).await;
    assert_eq!(
        refused.status(),
        401,
        "node 0 lent nothing, so neither may its owner"
    );
    assert_eq!(
        registry.count("GET", &path),
        0,
        "nothing fetched with a token that opens it"
    );
    let lent = pull(&client, &node1.mirror_url(), &path).await;
    assert_eq!(
        lent.status(),
        200,
        "node 1's own client is lent its account"
    );
    let logins = registry.token_logins();
    assert!(
        logins.contains(&None),
        "the owner asked anonymously for node 0: {logins:?}"
    );
}
