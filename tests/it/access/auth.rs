//! Proxy logins (throttled, unknown users as slow as wrong passwords) and the client allow-list.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn proxy_authentication_guards_connect_and_plain_requests() {
    init();
    let registry = Registry::start().await;
    let users = tempfile::tempdir().unwrap();
    let (echo, _server) = echo_server().await;
    let proxy_extra = format!(
        "auth_file = \"{}\"\nallow_private_destinations = true\nforward_ports = [{}]",
        htpasswd(users.path()).display(),
        echo.port()
    );
    let proxy = Proxy::builder(&registry).proxy(&proxy_extra).start().await;

    let connect = raw_head(
        &proxy,
        format!("CONNECT {REGISTRY}:443 HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 407"), "{connect}");
    assert!(
        connect.contains("proxy-authenticate: Basic realm=\"hoard\""),
        "{connect}"
    );
    let plain = raw_head(
        &proxy,
        format!("GET http://{echo}/ HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 407"), "{plain}");
    let wrong = format!(
        "GET http://{echo}/ HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: {}\r\n\r\n",
        hoard::http::basic_header("alice", "looking-glass")
    );
    assert!(
        raw_head(&proxy, wrong.as_bytes())
            .await
            .starts_with("HTTP/1.1 407")
    );
    // The CA certificate and the readiness probe stay reachable without credentials.
    let ca = raw_head(&proxy, b"GET /ca.crt HTTP/1.1\r\nHost: hoard\r\n\r\n").await;
    assert!(ca.starts_with("HTTP/1.1 200"), "{ca}");
    let ready = raw_head(&proxy, b"GET /readyz HTTP/1.1\r\nHost: hoard\r\n\r\n").await;
    assert!(
        ready.starts_with("HTTP/1.1 200"),
        "a kubelet probe needs no login: {ready}"
    );
    let setup = raw_head(&proxy, b"GET /setup/docker HTTP/1.1\r\nHost: hoard\r\n\r\n").await;
    assert!(setup.starts_with("HTTP/1.1 200"), "{setup}");
    assert!(!setup.contains("wonderland"), "no secret in the script");

    let with_user = |url: &str| {
        reqwest::Proxy::all(url)
            .unwrap()
            .basic_auth("alice", "wonderland")
    };
    let client = reqwest::Client::builder()
        .proxy(with_user(&proxy.url()))
        .tls_certs_only([reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let ping = client.get(url("/v2/")).send().await.unwrap();
    assert_eq!(
        ping.status(),
        200,
        "CONNECT with credentials is intercepted"
    );
    let forwarded = client.get(format!("http://{echo}/x")).send().await.unwrap();
    assert_eq!(forwarded.status(), 200);
    let echoed = forwarded.text().await.unwrap();
    assert!(
        !echoed.contains("proxy-authorization"),
        "credentials are not forwarded: {echoed}"
    );
}

#[tokio::test]
async fn the_client_allow_list_refuses_other_addresses() {
    init();
    let registry = Registry::start().await;
    let elsewhere = Proxy::builder(&registry)
        .proxy("allow_clients = [\"10.0.0.0/8\", \"fd00::/8\"]")
        .start()
        .await;
    let refused = raw_head(
        &elsewhere,
        format!("CONNECT {REGISTRY}:443 HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("127.0.0.1 is not in proxy.allow_clients"),
        "{refused}"
    );

    let here = Proxy::builder(&registry)
        .proxy("allow_clients = [\"127.0.0.0/8\"]")
        .start()
        .await;
    let ping = here.client(false).get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
}

#[tokio::test]
async fn an_unknown_proxy_user_costs_as_much_as_a_wrong_password() {
    init();
    // Heavy: compares bcrypt timings, which a busy machine would skew.
    let _heavy = serial::heavy().await;
    let registry = Registry::start().await;
    let proxy = proxy_with_alice(&registry, 10).await;
    let timed = |user: &'static str, from: &'static str| {
        let proxy = &proxy;
        async move {
            let mut fastest = Duration::MAX;
            for _ in 0..3 {
                let start = std::time::Instant::now();
                let answer = login(proxy, from, user, "guess").await;
                assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
                fastest = fastest.min(start.elapsed());
            }
            fastest
        }
    };
    let wrong_password = timed("alice", "127.0.0.7").await;
    let unknown_user = timed("mallory", "127.0.0.8").await;
    assert!(
        unknown_user * 2 >= wrong_password,
        "an unknown user is refused in {unknown_user:?}, a wrong password in {wrong_password:?}: \
         user names can be probed"
    );
}

#[tokio::test]
async fn failed_proxy_logins_are_throttled_per_address() {
    init();
    let registry = Registry::start().await;
    let proxy = proxy_with_alice(&registry, 4).await;
    // alice logs in from 127.0.0.9 before a guesser there starts.
    let ok = login(&proxy, "127.0.0.9", "alice", "wonderland").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    for attempt in 0..10 {
        let answer = login(&proxy, "127.0.0.9", "alice", &format!("guess{attempt}")).await;
        assert!(
            answer.starts_with("HTTP/1.1 407"),
            "attempt {attempt}: {answer}"
        );
    }
    let throttled = login(&proxy, "127.0.0.9", "alice", "guess10").await;
    assert!(throttled.starts_with("HTTP/1.1 429"), "{throttled}");
    assert!(throttled.contains("retry-after: "), "{throttled}");
    assert!(
        throttled.contains("too many failed proxy logins"),
        "{throttled}"
    );
    // No new credentials are checked from there now...
    let other = login(&proxy, "127.0.0.9", "mallory", "wonderland").await;
    assert!(other.starts_with("HTTP/1.1 429"), "{other}");
    // ...but credentials verified before still work, and other addresses are not affected.
    let verified = login(&proxy, "127.0.0.9", "alice", "wonderland").await;
    assert!(verified.starts_with("HTTP/1.1 200"), "{verified}");
    let elsewhere = login(&proxy, "127.0.0.10", "alice", "nope").await;
    assert!(elsewhere.starts_with("HTTP/1.1 407"), "{elsewhere}");
}
