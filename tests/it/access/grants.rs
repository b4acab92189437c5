//! `[[access.grants]]`: a logged-in user pulls only the repositories a grant names for them, on
//! the proxy port and the mirror, cached objects included (issue 22).

use super::*;

/// A hoard with alice (group `ops`) and bob, a mirror, and grants: `@ops` pulls
/// `registry.test/team/**`, bob pulls `registry.test/public/*`.
async fn granted() -> (Registry, Proxy, tempfile::TempDir) {
    init();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::builder(&registry)
        .proxy(&users_and_groups(dir.path()))
        .mirror("listen = \"127.0.0.1:0\"")
        .tail(&format!(
            "[[access.grants]]\nusers = [\"@ops\"]\nrepositories = [\"{REGISTRY}/team/**\"]\n\
             [[access.grants]]\nusers = [\"bob\"]\nrepositories = [\"{REGISTRY}/public/*\"]\n"
        ))
        .start()
        .await;
    (registry, proxy, dir)
}

#[tokio::test]
async fn a_user_pulls_only_what_a_grant_names_cached_or_not() {
    let (registry, proxy, _dir) = granted().await;
    let bytes = fresh_blob(64 << 10);
    let digest = registry.add_blob(bytes.clone());
    let (alice, bob) = (proxy_client(&proxy, "alice"), proxy_client(&proxy, "bob"));
    let get = |client: &reqwest::Client, repo: &str| {
        client
            .get(format!("https://{REGISTRY}/v2/{repo}/blobs/{digest}"))
            .send()
    };

    let got = get(&alice, "team/app/deep").await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), bytes);
    proxy.settled().await;
    // The blob is cached now; grants still decide who gets it.
    let refused = get(&bob, "team/app/deep").await.unwrap();
    assert_eq!(refused.status(), 403);
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("no grant lets bob pull"), "{reason}");
    assert_eq!(get(&bob, "public/tools").await.unwrap().status(), 200);
    assert_eq!(
        get(&bob, "public/tools/deeper").await.unwrap().status(),
        403,
        "* is one segment"
    );
    assert_eq!(get(&alice, "public/tools").await.unwrap().status(), 403);
    let tags = bob
        .get(format!("https://{REGISTRY}/v2/team/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 403);
    assert_eq!(
        registry.count("GET", "/blobs/"),
        1,
        "one fill; the rest were hits or refusals"
    );

    // The mirror judges its logins the same way.
    let mirror = |user: &str, repo: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!(
                "{}/v2/{repo}/blobs/{digest}?ns={REGISTRY}",
                proxy.mirror_url()
            ))
            .header(
                "authorization",
                hoard::http::basic_header(user, "wonderland"),
            )
            .send()
    };
    assert_eq!(mirror("bob", "team/app").await.unwrap().status(), 403);
    assert_eq!(mirror("alice", "team/app").await.unwrap().status(), 200);
}

#[test]
fn grants_need_logins_and_name_known_users_and_valid_patterns() {
    let grant = |users: &str, repos: &str| {
        format!("[[access.grants]]\nusers = {users}\nrepositories = {repos}\n")
    };
    assert_config_error(
        &serve_with(&grant("[\"alice\"]", "[\"gcr.io/a/*\"]")),
        "proxy.auth_file",
    );
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let proxy = format!("[proxy]\nauth_file = \"{}\"\n", users.display());
    for (users, repos, needle) in [
        ("[\"carol\"]", "[\"gcr.io/a/*\"]", "carol"),
        ("[\"alice\"]", "[\"gcr.io\"]", "registry/repository"),
        ("[\"alice\"]", "[\"gcr.io/A\"]", "is not a repository name"),
    ] {
        let config = format!("{proxy}{}", grant(users, repos));
        assert_config_error(&serve_with(&config), needle);
    }
}
