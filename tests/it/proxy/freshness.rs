//! `[[cache.freshness]]`: a tag under a rule is revalidated at the rule's TTL, the others at
//! `cache.tag_ttl`; an immutable tag is never asked about again, though `auth_on_hit =
//! "upstream"` still asks the registry who may have it; the status page lists the rules. A
//! registry that failed moments ago is not asked again for each stale tag.

use std::time::Duration;

use super::*;

/// GETs `repo:tag` through hoard and returns the digest it answered with.
async fn get_tag(client: &reqwest::Client, repo: &str, tag: &str) -> String {
    let response = client
        .get(url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{repo}:{tag}");
    response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// A hoard with `tag_ttl = "1s"` and `more` cache settings, through which `p/app:v1` was fetched
/// once; the tag's digest.
async fn fetched_v1(more: &str) -> (Registry, Proxy, reqwest::Client, String) {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .cache(&format!("tag_ttl = \"1s\"\n{more}"))
        .start()
        .await;
    let client = proxy.client(false);
    let v1 = registry.add_manifest(
        "p/app",
        "v1",
        DOCKER_V2,
        Registry::manifest_json(&[], "one"),
    );
    assert_eq!(get_tag(&client, "p/app", "v1").await, v1);
    (registry, proxy, client, v1)
}

#[tokio::test]
async fn a_tag_under_a_rule_is_revalidated_at_its_ttl_and_the_others_at_the_global_one() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .cache(&format!(
            "tag_ttl = \"10m\"\n[[cache.freshness]]\nmatch = \"{REGISTRY}/p/*:1.*\"\ntag_ttl = \"1m\""
        ))
        .start()
        .await;
    let client = proxy.client(false);
    let minor = registry.add_manifest("p/app", "1.4", DOCKER_V2, Registry::manifest_json(&[], "a"));
    let latest = registry.add_manifest(
        "p/app",
        "latest",
        DOCKER_V2,
        Registry::manifest_json(&[], "b"),
    );
    assert_eq!(get_tag(&client, "p/app", "1.4").await, minor);
    assert_eq!(get_tag(&client, "p/app", "latest").await, latest);
    assert_eq!(registry.count("GET", "/manifests/"), 2);

    // Past the rule's minute: the ruled tag is revalidated, the other is still fresh.
    proxy.server.clock().advance(Duration::from_secs(61));
    assert_eq!(get_tag(&client, "p/app", "1.4").await, minor);
    assert_eq!(get_tag(&client, "p/app", "latest").await, latest);
    assert_eq!(registry.count("HEAD", "/manifests/1.4"), 1);
    assert_eq!(registry.count("HEAD", "/manifests/latest"), 0);

    // Past the global ten minutes: now the other is revalidated too.
    proxy.server.clock().advance(Duration::from_secs(540));
    assert_eq!(get_tag(&client, "p/app", "latest").await, latest);
    assert_eq!(registry.count("HEAD", "/manifests/latest"), 1);
    assert_eq!(
        registry.count("GET", "/manifests/"),
        2,
        "nothing fetched again"
    );
}

#[tokio::test]
async fn an_immutable_tag_makes_no_upstream_request_after_its_first_fetch() {
    let rule = format!("[[cache.freshness]]\nmatch = \"{REGISTRY}/p/**:v1\"\nimmutable = true");
    let (registry, proxy, client, v1) = fetched_v1(&rule).await;
    let seen = registry.seen().len();
    assert!(seen >= 1);

    // The tag moves upstream, a year passes: hoard still answers v1 as first fetched, GET and
    // HEAD, without a word to the registry.
    registry.add_manifest(
        "p/app",
        "v1",
        DOCKER_V2,
        Registry::manifest_json(&[], "moved"),
    );
    proxy
        .server
        .clock()
        .advance(Duration::from_secs(365 * 86_400));
    for _ in 0..2 {
        assert_eq!(get_tag(&client, "p/app", "v1").await, v1);
        let head = client
            .head(url("/v2/p/app/manifests/v1"))
            .header("accept", DOCKER_V2)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["docker-content-digest"], v1.as_str());
    }
    assert_eq!(registry.seen().len(), seen, "{:?}", registry.seen());

    // A tag the rule does not match goes by the global second.
    let v2 = registry.add_manifest(
        "p/app",
        "v2",
        DOCKER_V2,
        Registry::manifest_json(&[], "two"),
    );
    assert_eq!(get_tag(&client, "p/app", "v2").await, v2);
    proxy.server.clock().advance(Duration::from_secs(2));
    assert_eq!(get_tag(&client, "p/app", "v2").await, v2);
    assert_eq!(registry.count("HEAD", "/manifests/v2"), 1);
}

#[tokio::test]
async fn auth_on_hit_upstream_still_checks_access_to_an_immutable_tag() {
    init();
    let registry = Registry::start().await;
    registry.require("team/secret", "Bearer good");
    let proxy = Proxy::builder(&registry)
        .cache(&format!(
            "auth_on_hit = \"upstream\"\n[[cache.freshness]]\nmatch = \"{REGISTRY}/team/*\"\nimmutable = true"
        ))
        .start()
        .await;
    let manifest = Registry::manifest_json(&[], "secret");
    let digest = registry.add_manifest("team/secret", "v1", DOCKER_V2, manifest);
    let client = proxy.client(false);
    let tag = url("/v2/team/secret/manifests/v1");
    let get = |token: Option<&'static str>| {
        let request = client.get(&tag).header("accept", DOCKER_V2);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };

    let owner = get(Some("good")).await.unwrap();
    assert_eq!(owner.status(), 200);
    assert_eq!(owner.headers()["docker-content-digest"], digest.as_str());
    // The tag moves at the registry and a year passes: immutable, it is not revalidated.
    let moved = Registry::manifest_json(&[], "moved");
    registry.add_manifest("team/secret", "v1", DOCKER_V2, moved);
    proxy
        .server
        .clock()
        .advance(Duration::from_secs(365 * 86_400));
    let checks = registry.seen().len();
    // A stranger is refused by the registry's word, though the tag needs no revalidation.
    let anonymous = get(None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = get(Some("bad")).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(registry.seen().len() > checks, "the registry was asked");
    // The owner is served the tag as first fetched, from the cache: no GET by tag again.
    let again = get(Some("good")).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(registry.count("GET", "/manifests/"), 1);
}

#[tokio::test]
async fn the_status_page_lists_the_freshness_rules_in_order() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .cache(
            "tag_ttl = \"15m\"\n\
             [[cache.freshness]]\nmatch = \"docker.io/library/*:1.*\"\ntag_ttl = \"5m\"\n\
             [[cache.freshness]]\nmatch = \"gcr.io/distroless/**:latest\"\nimmutable = true",
        )
        .start()
        .await;
    let page = reqwest::get(format!("http://{}/", proxy.server.admin_addr().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let table = &page[page
        .find("<table id=\"freshness\">")
        .expect("freshness table")..];
    let table = &table[..table.find("</table>").unwrap()];
    let hub = table.find("registry-1.docker.io/library/*:1.*</td><td>5m");
    let distroless = table.find("gcr.io/distroless/**:latest</td><td>immutable");
    let default = table.find("any other (cache.tag_ttl)</td><td>15m");
    assert!(
        hub.is_some() && distroless.is_some() && default.is_some(),
        "{table}"
    );
    assert!(hub < distroless && distroless < default, "{table}");
}

#[tokio::test]
async fn a_registry_that_just_failed_is_not_asked_again_for_each_stale_tag() {
    let (registry, proxy, client, v1) = fetched_v1("").await;

    // The registry goes away; the tag goes stale. The first request finds the registry down,
    // the next ones are served the stale tag without trying it again.
    registry.stop();
    proxy.server.clock().advance(Duration::from_secs(2));
    for _ in 0..5 {
        assert_eq!(get_tag(&client, "p/app", "v1").await, v1);
    }
    let metrics = proxy.admin("/metrics").await;
    let failed = format!("hoard_upstream_requests_total{{host=\"{REGISTRY}\",status=\"0\"}} 1\n");
    assert!(
        metrics.contains(&failed),
        "one failed try, not five:\n{metrics}"
    );
}
