//! `/setup/<engine>`, hoard as the engine's HTTPS proxy: the CA in the system store and
//! certs.d, and the proxy in a systemd drop-in or containers.conf.

use super::{direct, fetch, read, run, save, snapshot, stdout};
use crate::common::{Proxy, REGISTRY, Registry, init, raw_whole};

/// What one engine's script must write, besides the CA in the system store.
struct Expected {
    engine: &'static str,
    certs_d: &'static str,
    proxy_file: &'static str,
    /// The proxy file's lines that carry the settings, with `{proxy}` for hoard's address.
    proxy_lines: &'static [&'static str],
}

const ENGINES: [Expected; 3] = [
    Expected {
        engine: "docker",
        certs_d: "/etc/docker/certs.d",
        proxy_file: "/etc/systemd/system/docker.service.d/http-proxy.conf",
        proxy_lines: &[
            "[Service]",
            "Environment=\"HTTPS_PROXY=http://{proxy}\"",
            "Environment=\"NO_PROXY=localhost,127.0.0.0/8,::1,127.0.0.1\"",
        ],
    },
    Expected {
        engine: "containerd",
        certs_d: "/etc/containerd/certs.d",
        proxy_file: "/etc/systemd/system/containerd.service.d/http-proxy.conf",
        proxy_lines: &[
            "[Service]",
            "Environment=\"HTTPS_PROXY=http://{proxy}\"",
            "Environment=\"NO_PROXY=localhost,127.0.0.0/8,::1,127.0.0.1\"",
        ],
    },
    Expected {
        engine: "podman",
        certs_d: "/etc/containers/certs.d",
        proxy_file: "/etc/containers/containers.conf.d/hoard.conf",
        proxy_lines: &[
            "[engine]",
            "env = [\"HTTPS_PROXY=http://{proxy}\", \"NO_PROXY=localhost,127.0.0.0/8,::1,127.0.0.1\"]",
        ],
    },
];

#[tokio::test]
async fn setup_scripts_install_the_ca_and_proxy_and_change_nothing_the_second_time() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;
    let authority = proxy.server.local_addr().to_string();
    let ca = std::fs::read_to_string(proxy.dir.path().join("ca/ca.crt")).unwrap();
    let work = tempfile::tempdir().unwrap();

    for expected in &ENGINES {
        let engine = expected.engine;
        let script = save(work.path(), engine, fetch(&proxy, engine, None).await);
        let root = work.path().join(format!("root-{engine}"));
        let root_arg = root.to_str().unwrap();

        let first = stdout(&run(&script, &["--root", root_arg], &[]));
        assert!(first.contains("created "), "{engine}: {first}");
        assert_eq!(
            read(&root, "/usr/local/share/ca-certificates/hoard.crt"),
            ca
        );
        let host_ca = format!("{}/{REGISTRY}/ca.crt", expected.certs_d);
        assert_eq!(read(&root, &host_ca), ca, "{engine}: {host_ca}");
        let written = read(&root, expected.proxy_file);
        let lines: Vec<&str> = written.lines().filter(|l| !l.starts_with('#')).collect();
        let want: Vec<String> = expected
            .proxy_lines
            .iter()
            .map(|l| l.replace("{proxy}", &authority))
            .collect();
        assert_eq!(lines, want, "{engine}: {written}");
        let files: Vec<String> = snapshot(&root).into_iter().map(|f| f.0).collect();
        assert_eq!(
            files.len(),
            3,
            "{engine}: only what was asked for: {files:?}"
        );

        let before = snapshot(&root);
        let second = stdout(&run(&script, &["--root", root_arg], &[]));
        assert_eq!(
            snapshot(&root),
            before,
            "{engine}: the second run changed files"
        );
        assert_eq!(
            second.matches("unchanged ").count(),
            3,
            "{engine}: {second}"
        );
        for verb in ["created", "updated", "skipped"] {
            assert!(
                !second.contains(verb),
                "{engine}: {verb} on the second run: {second}"
            );
        }

        // The same through the environment instead of the flag.
        let third = stdout(&run(&script, &[], &[("HOARD_SETUP_ROOT", root_arg)]));
        assert_eq!(third.matches("unchanged ").count(), 3, "{engine}: {third}");
    }
}

#[tokio::test]
async fn proxy_credentials_come_from_the_user_never_from_hoard() {
    init();
    let registry = Registry::start().await;
    let users = tempfile::tempdir().unwrap();
    let htpasswd = users.path().join("htpasswd");
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let proxy_extra = format!("auth_file = \"{}\"", htpasswd.display());
    let proxy = Proxy::builder(&registry).proxy(&proxy_extra).start().await;
    let authority = proxy.server.local_addr().to_string();
    let work = tempfile::tempdir().unwrap();
    let text = fetch(&proxy, "docker", Some("alice:wonderland")).await;
    assert!(!text.contains("wonderland") && !text.contains(&hash));
    let script = save(work.path(), "docker", text);
    let root = work.path().join("root");
    let root_arg = root.to_str().unwrap();
    let drop_in = "/etc/systemd/system/docker.service.d/http-proxy.conf";

    let without = run(&script, &["--root", root_arg], &[]);
    let warning = String::from_utf8_lossy(&without.stderr);
    assert!(warning.contains("--proxy-user"), "{warning}");
    assert!(read(&root, drop_in).contains(&format!("HTTPS_PROXY=http://{authority}\"")));

    // Reserved characters are percent-encoded, and the % doubled for systemd.
    let with = stdout(&run(
        &script,
        &["--root", root_arg, "--proxy-user", "alice:won@der:land"],
        &[],
    ));
    assert!(with.contains("updated "), "{with}");
    assert!(
        !with.contains("won@der"),
        "no password in the output: {with}"
    );
    let written = read(&root, drop_in);
    assert!(
        written.contains(&format!(
            "HTTPS_PROXY=http://alice:won%%40der%%3Aland@{authority}\""
        )),
        "{written}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(root.join(drop_in.trim_start_matches('/')))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "a drop-in with a password is root's only"
    );

    let again = run(
        &script,
        &["--root", root_arg],
        &[("HOARD_PROXY_USER", "alice:won@der:land")],
    );
    assert!(!stdout(&again).contains("updated "), "{}", stdout(&again));
}

#[tokio::test]
async fn the_host_header_names_the_proxy_and_must_be_a_host() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry).start().await;

    let named = raw_whole(
        &proxy,
        "GET /setup/podman HTTP/1.1\r\nHost: hoard.example:3128\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(named.starts_with("HTTP/1.1 200"), "{named}");
    assert!(named.contains("\nPROXY_HOSTPORT='hoard.example:3128'\n"));
    assert!(
        named.contains(",hoard.example'\n"),
        "the proxy host is in NO_PROXY"
    );

    for bad in [
        "x;reboot",
        "$(reboot):3128",
        "hoard:99999",
        "a'b",
        "hoard example",
    ] {
        let answer = raw_whole(
            &proxy,
            &format!("GET /setup/docker HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?}: {answer}");
        assert!(answer.contains("Host header"), "{bad:?}: {answer}");
        assert!(!answer.contains("#!/bin/sh"), "{bad:?}");
    }

    let unknown = direct()
        .get(format!("{}/setup/windows", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().await.unwrap().contains("/setup/docker"));
}
