//! `/setup/<engine>?mode=mirror`: the engine pulls through hoard's registry mirror: containerd's
//! certs.d hosts.toml and its CRI config_path, dockerd's registry-mirrors merged into
//! daemon.json, podman's registries.conf.d drop-in; hoard's CA only for a mirror whose
//! certificate it signed, and only for the mirror's name.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{direct, fetch, read, run, save, snapshot, stdout};
use crate::common::{Proxy, REGISTRY, Registry, free_port, fresh_blob, init};

pub(super) const CERTS_D: &str = "/etc/containerd/certs.d";
pub(super) const CONFIG_TOML: &str = "/etc/containerd/config.toml";
pub(super) const DAEMON_JSON: &str = "/etc/docker/daemon.json";
const DROP_IN: &str = "/etc/containers/registries.conf.d/50-hoard-mirror.conf";

/// A containerd 1.x config as `containerd config default` writes it, abridged: the CRI registry
/// section with an empty config_path and empty mirrors and configs tables.
const CONTAINERD_DEFAULT: &str = r#"version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.8"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
      [plugins."io.containerd.grpc.v1.cri".registry.configs]
      [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
"#;

/// A daemon.json with other settings and another mirror, which must all stay.
const DAEMON_JSON_BEFORE: &str = r#"{
  "log-driver": "json-file",
  "registry-mirrors": ["https://mirror.example"],
  "live-restore": true
}
"#;

/// hoard with `[mirror]` lines, intercepting the fixture registry, Docker Hub and a wildcard,
/// and mirroring gcr.io beyond them.
pub(super) async fn hoard_with_mirror(registry: &Registry, mirror: &str) -> Proxy {
    Proxy::builder(registry)
        .intercept(&format!(
            r#"["{REGISTRY}", "registry-1.docker.io", "*.pkg.dev"]"#
        ))
        .mirror(mirror)
        .mirror(r#"registries = ["gcr.io", "docker.io"]"#)
        .start()
        .await
}

/// Fetches `/setup/<engine>?mode=mirror` into `dir`; its path.
pub(super) async fn mirror_script(hoard: &Proxy, dir: &Path, engine: &str) -> PathBuf {
    let path = format!("{engine}?mode=mirror");
    save(dir, engine, fetch(hoard, &path, None).await)
}

/// hoard with a plain-HTTP mirror on a port of its own, and the mirror's URL.
pub(super) async fn plain_mirror(registry: &Registry) -> (Proxy, String) {
    let port = free_port();
    let hoard = hoard_with_mirror(registry, &format!(r#"listen = "127.0.0.1:{port}""#)).await;
    (hoard, format!("http://127.0.0.1:{port}"))
}

/// Writes `text` at `path` under `root`.
pub(super) fn put(root: &Path, path: &str, text: &str) {
    let full = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

/// Runs `script` against `root` twice: the second run must change nothing and say so. The first
/// run's output.
pub(super) fn run_twice(script: &Path, root: &Path) -> Output {
    let root_arg = root.to_str().unwrap();
    let first = run(script, &["--root", root_arg], &[]);
    let before = snapshot(root);
    let second = stdout(&run(script, &["--root", root_arg], &[]));
    assert_eq!(snapshot(root), before, "the second run changed files");
    for verb in ["created", "updated", "skipped"] {
        assert!(!second.contains(verb), "{verb} on the second run: {second}");
    }
    assert!(second.contains("everything unchanged"), "{second}");
    first
}

pub(super) fn parse_toml(root: &Path, path: &str) -> toml::Table {
    let text = read(root, path);
    text.parse()
        .unwrap_or_else(|e| panic!("{path} is not TOML: {e}\n{text}"))
}

/// The `[host."<mirror>"]` table of a hosts.toml, checked against the registry's server.
fn mirror_host(root: &Path, folder: &str, server: &str, mirror: &str) -> toml::Table {
    let hosts = parse_toml(root, &format!("{CERTS_D}/{folder}/hosts.toml"));
    assert_eq!(hosts["server"].as_str(), Some(server), "{folder}: {hosts}");
    let host = hosts["host"][mirror].as_table().unwrap().clone();
    let capabilities: Vec<&str> = host["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(capabilities, ["pull", "resolve"], "{folder}");
    host
}

#[tokio::test]
async fn plain_mirror_scripts_set_up_each_engine_and_change_nothing_the_second_time() {
    init();
    let registry = Registry::start().await;
    let (hoard, mirror) = plain_mirror(&registry).await;
    let work = tempfile::tempdir().unwrap();
    let answer = direct().get(format!("{mirror}/v2/")).send().await.unwrap();
    assert_eq!(answer.status(), 200, "the mirror listens at {mirror}");

    // containerd, over a config.toml from `containerd config default`.
    let script = mirror_script(&hoard, work.path(), "containerd").await;
    let root = work.path().join("containerd");
    put(&root, CONFIG_TOML, CONTAINERD_DEFAULT);
    let out = stdout(&run_twice(&script, &root));
    assert!(out.contains("*.pkg.dev is a wildcard pattern"), "{out}");
    for (folder, server) in [
        (REGISTRY, format!("https://{REGISTRY}")),
        ("docker.io", "https://registry-1.docker.io".into()),
        ("gcr.io", "https://gcr.io".into()),
    ] {
        let host = mirror_host(&root, folder, &server, &mirror);
        assert!(!host.contains_key("ca"), "plain HTTP needs no CA: {host}");
    }
    let config = parse_toml(&root, CONFIG_TOML);
    let cri = &config["plugins"]["io.containerd.grpc.v1.cri"];
    assert_eq!(cri["registry"]["config_path"].as_str(), Some(CERTS_D));
    assert_eq!(
        cri["sandbox_image"].as_str(),
        Some("registry.k8s.io/pause:3.8")
    );
    assert_eq!(
        read(&root, &format!("{CONFIG_TOML}.before-hoard")),
        CONTAINERD_DEFAULT
    );
    let files: Vec<String> = snapshot(&root).into_iter().map(|f| f.0).collect();
    assert_eq!(
        files.len(),
        5,
        "hosts.toml ×3, config.toml and its copy: {files:?}"
    );

    // docker, over a daemon.json with other settings and another mirror.
    let script = mirror_script(&hoard, work.path(), "docker").await;
    let root = work.path().join("docker");
    put(&root, DAEMON_JSON, DAEMON_JSON_BEFORE);
    let out = stdout(&run_twice(&script, &root));
    assert!(out.contains("Docker Hub only"), "{out}");
    let daemon: serde_json::Value = serde_json::from_str(&read(&root, DAEMON_JSON)).unwrap();
    assert_eq!(
        daemon,
        serde_json::json!({
            "log-driver": "json-file",
            "registry-mirrors": [mirror, "https://mirror.example"],
            "live-restore": true,
        })
    );
    let files: Vec<String> = snapshot(&root).into_iter().map(|f| f.0).collect();
    assert_eq!(files.len(), 2, "daemon.json and its copy, no CA: {files:?}");

    // podman: one [[registry]] per registry, the mirror's path naming it.
    let script = mirror_script(&hoard, work.path(), "podman").await;
    let root = work.path().join("podman");
    run_twice(&script, &root);
    let drop_in = parse_toml(&root, DROP_IN);
    let registries = drop_in["registry"].as_array().unwrap();
    let names: Vec<&str> = registries
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(names, [REGISTRY, "docker.io", "gcr.io"]);
    for registry in registries {
        let name = registry["prefix"].as_str().unwrap();
        assert_eq!(registry["location"].as_str(), Some(name));
        let mirrors = registry["mirror"].as_array().unwrap();
        assert_eq!(mirrors.len(), 1, "{name}");
        let location = format!("{}/{name}", mirror.trim_start_matches("http://"));
        assert_eq!(mirrors[0]["location"].as_str(), Some(location.as_str()));
        assert_eq!(mirrors[0]["insecure"].as_bool(), Some(true), "plain HTTP");
    }
    assert_eq!(snapshot(&root).len(), 1, "the drop-in only");

    // A pull of registry.test/p/app as podman makes it from the drop-in: /v2/, the location's
    // path, the repository.
    let blob = fresh_blob(4096);
    let digest = registry.add_blob(blob.clone());
    let location = registries[0]["mirror"][0]["location"].as_str().unwrap();
    let (host, prefix) = location.split_once('/').unwrap();
    let url = format!("http://{host}/v2/{prefix}/p/app/blobs/{digest}");
    let got = direct().get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200, "{url}");
    assert_eq!(got.bytes().await.unwrap(), blob);
}

#[tokio::test]
async fn a_mirror_certificate_from_hoards_ca_is_trusted_for_the_mirrors_name_only() {
    init();
    let registry = Registry::start().await;
    let port = free_port();
    let lines = format!("listen = \"127.0.0.1:{port}\"\nnames = [\"hoard.example\", \"10.0.0.5\"]");
    let hoard = hoard_with_mirror(&registry, &lines).await;
    let mirror = format!("hoard.example:{port}");
    let work = tempfile::tempdir().unwrap();

    let script = mirror_script(&hoard, work.path(), "containerd").await;
    let root = work.path().join("containerd");
    run_twice(&script, &root);
    for folder in [REGISTRY, "docker.io", "gcr.io"] {
        let ca_path = format!("{CERTS_D}/{folder}/hoard-ca.pem");
        let server = match folder {
            "docker.io" => "https://registry-1.docker.io".into(),
            _ => format!("https://{folder}"),
        };
        let host = mirror_host(&root, folder, &server, &format!("https://{mirror}"));
        assert_eq!(host["ca"].as_str(), Some(ca_path.as_str()));
        assert_eq!(read(&root, &ca_path), hoard.ca_pem);
    }
    // The CA written validates the mirror's certificate for the name the script gives it.
    let ca = read(&root, &format!("{CERTS_D}/gcr.io/hoard-ca.pem"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve("hoard.example", ([127, 0, 0, 1], port).into())
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let answer = client.get(format!("https://{mirror}/v2/")).send().await;
    assert_eq!(answer.unwrap().status(), 200, "the mirror through its URL");
    // No config.toml here: one that makes the CRI plugin read certs.d.
    let config = parse_toml(&root, CONFIG_TOML);
    let cri = &config["plugins"]["io.containerd.grpc.v1.cri"];
    assert_eq!(cri["registry"]["config_path"].as_str(), Some(CERTS_D));
    assert!(!root.join("usr").exists(), "never the system store");

    let script = mirror_script(&hoard, work.path(), "docker").await;
    let root = work.path().join("docker");
    run_twice(&script, &root);
    let daemon: serde_json::Value = serde_json::from_str(&read(&root, DAEMON_JSON)).unwrap();
    assert_eq!(
        daemon,
        serde_json::json!({ "registry-mirrors": [format!("https://{mirror}")] })
    );
    let ca = format!("/etc/docker/certs.d/{mirror}/ca.crt");
    assert_eq!(read(&root, &ca), hoard.ca_pem);
    assert_eq!(snapshot(&root).len(), 2, "daemon.json and the CA");

    let script = mirror_script(&hoard, work.path(), "podman").await;
    let root = work.path().join("podman");
    run_twice(&script, &root);
    let text = read(&root, DROP_IN);
    assert!(
        text.contains(&format!("location = \"{mirror}/gcr.io\"\n")),
        "{text}"
    );
    assert!(!text.contains("insecure"), "{text}");
    let ca = format!("/etc/containers/certs.d/{mirror}/ca.crt");
    assert_eq!(read(&root, &ca), hoard.ca_pem);
}

#[tokio::test]
async fn an_operator_certificate_needs_no_ca_from_hoard() {
    init();
    let registry = Registry::start().await;
    let keys = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["mirror.example".to_owned()]).unwrap();
    let (cert_path, key_path) = (keys.path().join("tls.crt"), keys.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let lines = format!(
        "listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    let hoard = hoard_with_mirror(&registry, &lines).await;
    let work = tempfile::tempdir().unwrap();
    let script = mirror_script(&hoard, work.path(), "containerd").await;
    let root = work.path().join("root");
    run_twice(&script, &root);
    let host = mirror_host(
        &root,
        "gcr.io",
        "https://gcr.io",
        &format!("https://127.0.0.1:{port}"),
    );
    assert!(!host.contains_key("ca"), "{host}");
    assert!(
        !root
            .join("etc/containerd/certs.d/gcr.io/hoard-ca.pem")
            .exists()
    );
}

#[tokio::test]
async fn mirror_mode_needs_the_mirror_and_proxy_mode_stays_the_default() {
    init();
    let registry = Registry::start().await;
    let hoard = Proxy::builder(&registry).start().await;
    let get = |query: &str| {
        let url = format!("{}/setup/docker{query}", hoard.url());
        async move {
            let response = direct().get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, text) = get("?mode=mirror").await;
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("mirror mode is off: set [mirror] listen"),
        "{text}"
    );
    let port_zero = hoard_with_mirror(&registry, r#"listen = "127.0.0.1:0""#).await;
    let url = format!("{}/setup/containerd?mode=mirror", port_zero.url());
    let response = direct().get(url).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let text = response.text().await.unwrap();
    assert!(text.contains("mirror.listen has port 0"), "{text}");
    let (status, text) = get("?mode=bogus").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("mode is proxy"), "{text}");
    let (status, default) = get("").await;
    assert_eq!(status, 200);
    assert_eq!(get("?mode=proxy").await, (200, default));
}
