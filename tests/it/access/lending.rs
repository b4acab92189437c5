//! hoard lends its registry accounts only to whom `lend_to` names (issue 22): a client it is not
//! lent to gets the registry's own answer on the proxy port (so it can log in with its own
//! credentials) and hoard's anonymous pull on the mirror, cold and cached.

use super::*;

/// hoard's account at the fixture registry.
pub(super) const ACCOUNT: (&str, &str) = ("hoard", "s3cret");

/// A private repository whose token only hoard's account gets (no login gets an anonymous token
/// that does not open it; another login, 401).
pub(super) fn private_registry(registry: &Registry) {
    registry.require("team/private", "Bearer tok");
    registry.serve_token_to(
        &hoard::http::basic_header(ACCOUNT.0, ACCOUNT.1),
        r#"{"token":"tok","expires_in":300}"#,
    );
}

/// `[[upstream.credentials]]` for the fixture registry with `lend_to` (absent when `None`).
fn account(lend_to: Option<&str>) -> String {
    let lend_to = lend_to.map_or(String::new(), |l| format!("lend_to = {l}\n"));
    format!(
        "[[upstream.credentials]]\nhost = \"{REGISTRY}\"\nusername = \"{}\"\npassword = \"{}\"\n{lend_to}",
        ACCOUNT.0, ACCOUNT.1
    )
}

/// A private registry and a hoard with alice and bob as users, `lend_to` on its account, and a
/// mirror listener when `mirror`.
async fn start(lend_to: Option<&str>, mirror: bool) -> (Registry, Proxy, tempfile::TempDir) {
    init();
    let registry = Registry::start().await;
    private_registry(&registry);
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Proxy::builder(&registry)
        .proxy(&users_and_groups(dir.path()))
        .upstream(&account(lend_to));
    if mirror {
        builder = builder.mirror("listen = \"127.0.0.1:0\"");
    }
    let proxy = builder.start().await;
    (registry, proxy, dir)
}

#[tokio::test]
async fn the_proxy_lends_hoards_account_only_to_the_users_lend_to_names() {
    let (registry, proxy, _dir) = start(Some("[\"@ops\"]"), false).await;
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let path = blob_path("team/private", &digest);

    // bob is not lent the account: the registry's 401 and its challenge, nothing kept.
    let bob = proxy_client(&proxy, "bob");
    let cold = bob.get(&path).send().await.unwrap();
    assert_eq!(cold.status(), 401);
    assert!(cold.headers().contains_key("www-authenticate"));
    assert!(!proxy.blob_path(&digest).exists());
    // alice is, through @ops.
    let alice = proxy_client(&proxy, "alice");
    let got = alice.get(&path).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), bytes);
    proxy.settled().await;
    assert!(proxy.blob_path(&digest).exists());
    // Cached now, and still not bob's without credentials of his own.
    let cached = bob.get(&path).send().await.unwrap();
    assert_eq!(cached.status(), 401, "a hit is judged as a miss is");
    // With his own registry login, bob gets it from the cache.
    let own = bob
        .get(&path)
        .header("authorization", "Bearer tok")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(own.bytes().await.unwrap(), bytes);
    assert_eq!(registry.count("GET", "/blobs/"), 1, "one fill, by alice");
}

#[tokio::test]
async fn a_shared_hoard_without_lend_to_lends_to_nobody() {
    let (registry, proxy, _dir) = start(None, false).await;
    let digest = registry.add_blob(fresh_blob(BLOB_SIZE));
    let got = proxy_client(&proxy, "alice")
        .get(blob_path("team/private", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.status(),
        401,
        "logins make hoard shared: its account stays its own"
    );
    let tokens = registry.token_logins();
    assert!(tokens.is_empty(), "hoard asked for no token: {tokens:?}");
}

#[tokio::test]
async fn the_mirror_pulls_anonymously_for_a_login_not_lent() {
    let (registry, proxy, _dir) = start(Some("[\"alice\"]"), true).await;
    let bytes = fresh_blob(BLOB_SIZE);
    let digest = registry.add_blob(bytes.clone());
    let url = format!(
        "{}/v2/team/private/blobs/{digest}?ns={REGISTRY}",
        proxy.mirror_url()
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let as_user = |user: &str| {
        client.get(&url).header(
            "authorization",
            hoard::http::basic_header(user, "wonderland"),
        )
    };
    assert_eq!(as_user("bob").send().await.unwrap().status(), 401);
    let got = as_user("alice").send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), bytes);
    proxy.settled().await;
    assert_eq!(
        as_user("bob").send().await.unwrap().status(),
        401,
        "cached, and still not lent"
    );
    // bob's token requests went without hoard's account.
    let account = hoard::http::basic_header(ACCOUNT.0, ACCOUNT.1);
    let token_logins = registry.token_logins();
    assert!(
        token_logins.contains(&None),
        "bob went anonymous: {token_logins:?}"
    );
    assert!(
        token_logins.contains(&Some(account)),
        "alice was lent: {token_logins:?}"
    );
}

#[test]
fn lend_to_names_only_known_users_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = users_and_groups(dir.path());
    for (lend_to, needle) in [("[\"carol\"]", "carol"), ("[\"@devs\"]", "devs")] {
        let config = format!("[proxy]\n{proxy}\n[upstream]\n{}", account(Some(lend_to)));
        assert_config_error(&serve_with(&config), needle);
    }
    // Hits served to everyone would ignore a narrower lend_to.
    let config = format!(
        "[proxy]\n{proxy}\n[cache]\nauth_on_hit = \"none\"\n[upstream]\n{}",
        account(Some("[\"alice\"]"))
    );
    assert_config_error(&serve_with(&config), "cache.auth_on_hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_user_and_whether_the_account_was_lent() {
    init();
    let registry = Registry::start().await;
    private_registry(&registry);
    let dir = tempfile::tempdir().unwrap();
    let config = Proxy::builder(&registry)
        .proxy(&users_and_groups(dir.path()))
        .upstream(&account(Some("[\"alice\"]")));
    let port = free_port();
    let path = config.write_config(dir.path(), &format!("127.0.0.1:{port}"));
    let mut hoard = HoardProcess::spawn(&path, port, None);
    hoard.wait_logged("hoard listening").await;
    let digest = registry.add_blob(fresh_blob(BLOB_SIZE));
    for (user, status) in [("alice", 200), ("bob", 401)] {
        let got = hoard
            .client_as(user, "wonderland")
            .get(blob_path("team/private", &digest))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), status, "{user}");
        got.bytes().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = hoard.log();
    let line = |user: &str| {
        log.lines()
            .find(|l| {
                l.contains("hoard::log")
                    && l.contains("/blobs/")
                    && l.contains(&format!("user={user}"))
            })
            .unwrap_or_else(|| panic!("no access log line for {user}:\n{log}"))
            .to_owned()
    };
    assert!(line("alice").contains("lent=true"), "{}", line("alice"));
    assert!(line("bob").contains("lent=false"), "{}", line("bob"));
}
