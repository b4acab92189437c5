//! hoard's CA: `hoard ca fingerprint` and `hoard ca renew`, a new CA's lifetime, its expiry
//! gauge and fingerprint on the status page, and a reloaded host its name constraints leave out.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{CDN, HOARD_BIN, HoardProcess, Proxy, Registry, free_port, sample};

fn ca_command(args: &[&str], config: &Path) -> Output {
    Command::new(HOARD_BIN)
        .arg("ca")
        .args(args)
        .env("HOARD_CONFIG", config)
        .output()
        .unwrap()
}

/// `sha256:<hex>` of `ca.crt` as openssl and sha256sum see it.
fn openssl_fingerprint(ca_crt: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -outform DER | sha256sum",
        ca_crt.display()
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn ca_fingerprint_without_a_ca_exits_1_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoard.toml");
    let ca_dir = dir.path().join("ca");
    std::fs::write(&config, format!("[ca]\ndir = \"{}\"\n", ca_dir.display())).unwrap();
    let output = ca_command(&["fingerprint"], &config);
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no CA in"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(output.stdout.is_empty());
    assert!(!ca_dir.exists());
}

#[tokio::test]
async fn ca_fingerprint_matches_openssl_and_the_status_page_and_the_gauge() {
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let config = proxy.dir.path().join("config.toml");
    let ca_crt = proxy.dir.path().join("ca/ca.crt");
    let output = Command::new(HOARD_BIN)
        .args(["ca", "fingerprint", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = stdout(&output);
    assert_eq!(printed, openssl_fingerprint(&ca_crt));
    assert_eq!(printed.len(), "sha256:".len() + 64);

    let page = proxy.admin("/").await;
    assert!(page.contains(&printed), "{page}");
    assert!(!page.contains("ca-expiry"), "a new CA is far from expiry");
    let metrics = proxy.admin("/metrics").await;
    let expiry = sample(&metrics, "hoard_ca_expiry_timestamp_seconds");
    let now = crate::common::now() as f64;
    // A new CA lasts at most 3 years.
    assert!(expiry > now + 300.0 * 86_400.0, "{expiry}");
    assert!(expiry <= now + 3.0 * 365.0 * 86_400.0 + 60.0, "{expiry}");

    // openssl agrees on notAfter: 3 years at most.
    let check = Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((3 * 365 * 86_400 + 60).to_string())
        .arg("-in")
        .arg(&ca_crt)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "the CA outlives 3 years");
}

#[tokio::test]
async fn ca_renew_changes_the_fingerprint_and_the_next_start_uses_it() {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = Proxy::builder(&registry).write_config(dir.path(), &format!("127.0.0.1:{port}"));
    let ca_crt = dir.path().join("ca/ca.crt");

    let first = ca_command(&["renew"], &config);
    assert!(first.status.success(), "{first:?}");
    let first = stdout(&first);
    assert_eq!(first, openssl_fingerprint(&ca_crt));
    let second = ca_command(&["renew"], &config);
    assert!(second.status.success());
    let second = stdout(&second);
    assert_ne!(first, second);
    assert_eq!(second, openssl_fingerprint(&ca_crt));
    let mode = std::fs::metadata(dir.path().join("ca/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("ca"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");

    let mut hoard = HoardProcess::spawn(&config, port, None);
    hoard.wait_healthy().await;
    let served = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/ca.crt", hoard.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, std::fs::read_to_string(&ca_crt).unwrap());
    assert!(hoard.log().contains(&second), "{}", hoard.log());
    // And it intercepts with the new CA.
    let response = hoard
        .client()
        .get(crate::common::url("/v2/"))
        .send()
        .await
        .unwrap();
    assert!(response.status().as_u16() < 500);
}

#[tokio::test]
async fn a_reloaded_host_outside_the_name_constraints_is_tunnelled_not_intercepted() {
    let registry = Registry::start().await;
    let builder = Proxy::builder(&registry).tunnels_to_registry();
    let proxy = builder.start().await;
    // cdn.test resolves to the fixture registry too, but the CA was made for registry.test only.
    let path = Proxy::builder(&registry)
        .tunnels_to_registry()
        .intercept(&format!(r#"["{}", "{CDN}"]"#, crate::common::REGISTRY))
        .write_config(proxy.dir.path(), "127.0.0.1:0");
    let config = hoard::Config::load(Some(&path), Default::default()).unwrap();
    proxy.server.reload(config).unwrap();

    // A client trusting only the registry's own CA: a tunnel reaches it; an intercept would
    // present hoard's leaf, which the client would reject.
    let client = crate::common::client_via(&proxy.url(), &registry.ca.pem, false);
    let port = registry.addr.port();
    let response = client
        .get(format!("https://{CDN}:{port}/v2/"))
        .send()
        .await
        .unwrap();
    assert!(response.status().as_u16() < 500, "{}", response.status());
    assert_eq!(registry.count("GET", "/v2/"), 1);

    let metrics = proxy.admin("/metrics").await;
    assert_eq!(sample(&metrics, "hoard_ca_uncovered_hosts"), 1.0);
    let page = proxy.admin("/").await;
    assert!(
        page.contains("ca-uncovered") && page.contains("hoard ca renew"),
        "{page}"
    );
}

#[tokio::test]
async fn a_ca_near_its_end_is_warned_about_on_the_status_page() {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(30);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(ca_dir.join("ca.crt"), cert.pem()).unwrap();
    std::fs::write(ca_dir.join("ca.key"), key.serialize_pem()).unwrap();
    let proxy = Proxy::builder(&registry).dir(dir).start().await;
    let page = proxy.admin("/").await;
    assert!(
        page.contains("ca-expiry") && page.contains("hoard ca renew"),
        "{page}"
    );
    let metrics = proxy.admin("/metrics").await;
    let expiry = sample(&metrics, "hoard_ca_expiry_timestamp_seconds");
    assert!((expiry - (now.unix_timestamp() + 30 * 86_400) as f64).abs() < 5.0);
}
