//! What the mirror scripts make of engine configs already there: containerd's config.toml in
//! each of its versions and dockerd's daemon.json are edited with every other setting kept, and
//! what cannot be edited safely is left alone with a reason.

use std::path::Path;
use std::process::Command;

use super::mirror::{
    CERTS_D, CONFIG_TOML, DAEMON_JSON, mirror_script, parse_toml, plain_mirror, put, run_twice,
};
use super::read;
use crate::common::{Registry, init};

/// The `config_path` of `section` (a table path) in the config.toml under `root`.
fn config_path(root: &Path, section: &[&str]) -> Option<String> {
    let mut table = toml::Value::Table(parse_toml(root, CONFIG_TOML));
    for key in section {
        table = table.get(key)?.clone();
    }
    Some(table.get("config_path")?.as_str()?.to_owned())
}

/// The CRI `config_path` that containerd itself reads from the config.toml under `root`
/// (`containerd config dump`); `None` when containerd is not installed (with CI=true, a failure).
fn containerd_reads(root: &Path) -> Option<String> {
    let config = root.join(CONFIG_TOML.trim_start_matches('/'));
    let output = match Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "no containerd");
            eprintln!("skipped: containerd config dump: containerd is not installed");
            return None;
        }
        Err(e) => panic!("containerd: {e}"),
    };
    let dump = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{dump}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dump: toml::Table = dump.parse().unwrap();
    // containerd 1.x dumps version 2, containerd 2.x version 3.
    let cri = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"]
        .into_iter()
        .find_map(|name| dump["plugins"].get(name))
        .unwrap();
    Some(cri["registry"]["config_path"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn containerd_configs_of_every_version_read_certs_d_or_say_why_not() {
    init();
    let registry = Registry::start().await;
    let (hoard, _) = plain_mirror(&registry).await;
    let work = tempfile::tempdir().unwrap();
    let script = mirror_script(&hoard, work.path(), "containerd").await;
    let cri_v2 = ["plugins", "io.containerd.grpc.v1.cri", "registry"];
    let cri_v3 = ["plugins", "io.containerd.cri.v1.images", "registry"];
    let cri_v1 = ["plugins", "cri", "registry"];
    let both = format!("{CERTS_D}:/etc/docker/certs.d");
    // (the file before, where config_path is, what it must be after, whether the file changes)
    let cases: [(&str, &[&str], &str, bool); 5] = [
        (
            "version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = 'pause'\n",
            &cri_v3,
            CERTS_D,
            true,
        ),
        (
            "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/docker/certs.d'\n",
            &cri_v3,
            &both,
            true,
        ),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n",
            &cri_v2,
            &both,
            false,
        ),
        ("disabled_plugins = []\n", &cri_v1, CERTS_D, true),
        ("# only comments\n", &cri_v2, CERTS_D, true),
    ];
    for (i, (before, section, after, changes)) in cases.into_iter().enumerate() {
        let root = work.path().join(format!("root-{i}"));
        put(&root, CONFIG_TOML, before);
        run_twice(&script, &root);
        let path = config_path(&root, section);
        assert_eq!(path.as_deref(), Some(after), "{before}");
        // containerd 1.x reads versions 1 and 2; 2.x reads them all.
        if !before.starts_with("version = 3")
            && let Some(read_by_containerd) = containerd_reads(&root)
        {
            assert_eq!(read_by_containerd, after, "{before}");
        }
        let copy = root.join("etc/containerd/config.toml.before-hoard");
        assert_eq!(copy.exists(), changes, "{before}");
        if changes {
            // Everything that was there stays, but the config_path replaced.
            let kept = read(&root, CONFIG_TOML);
            let mut lines = before.lines().filter(|l| !l.contains("config_path"));
            assert!(lines.all(|l| kept.contains(l)), "{kept}");
        } else {
            assert_eq!(read(&root, CONFIG_TOML), before);
        }
    }

    // Deprecated CRI mirrors and TLS configs cannot go with config_path: the file is left alone,
    // with a reason, and the hosts.toml files are written all the same.
    for (before, what) in [
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://mirror.example\"]\n",
            "registry.mirrors",
        ),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"gcr.io\".tls]\n  insecure_skip_verify = true\n",
            "registry.configs.<host>.tls",
        ),
    ] {
        let root = work.path().join("conflict");
        let _ = std::fs::remove_dir_all(&root);
        put(&root, CONFIG_TOML, before);
        let first = run_twice(&script, &root);
        let warning = String::from_utf8_lossy(&first.stderr);
        assert!(warning.contains(what), "{warning}");
        assert_eq!(read(&root, CONFIG_TOML), before);
        assert!(
            root.join("etc/containerd/certs.d/gcr.io/hosts.toml")
                .exists()
        );
    }
}

#[tokio::test]
async fn daemon_json_gains_the_mirror_and_keeps_the_rest_or_is_left_alone() {
    init();
    let registry = Registry::start().await;
    let (hoard, mirror) = plain_mirror(&registry).await;
    let work = tempfile::tempdir().unwrap();
    let script = mirror_script(&hoard, work.path(), "docker").await;
    let cases = [
        ("{}", serde_json::json!({ "registry-mirrors": [mirror] })),
        (
            r#"{"debug":true}"#,
            serde_json::json!({ "registry-mirrors": [mirror], "debug": true }),
        ),
        (
            r#"{ "x": {"registry-mirrors": 5}, "note": "a \"registry-mirrors\": [ here" }"#,
            serde_json::json!({
                "registry-mirrors": [mirror],
                "x": { "registry-mirrors": 5 },
                "note": "a \"registry-mirrors\": [ here",
            }),
        ),
        (
            r#"{"registry-mirrors": []}"#,
            serde_json::json!({ "registry-mirrors": [mirror] }),
        ),
    ];
    for (i, (before, after)) in cases.into_iter().enumerate() {
        let root = work.path().join(format!("root-{i}"));
        put(&root, DAEMON_JSON, before);
        run_twice(&script, &root);
        let merged: serde_json::Value = serde_json::from_str(&read(&root, DAEMON_JSON)).unwrap();
        assert_eq!(merged, after, "{before}");
    }

    // The mirror there already, with a trailing slash: nothing to do.
    let root = work.path().join("there");
    let before = format!(r#"{{"registry-mirrors": ["{mirror}/"]}}"#);
    put(&root, DAEMON_JSON, &before);
    run_twice(&script, &root);
    assert_eq!(read(&root, DAEMON_JSON), before);

    for (before, why) in [
        (
            r#"{"registry-mirrors": "x"}"#,
            "registry-mirrors that is not a list",
        ),
        (
            r#"{"registry-mirrors": [1]}"#,
            "registry-mirrors holding more than strings",
        ),
        (r#"{"debug": [true}"#, "brackets that do not match"),
        ("[]", "no JSON object"),
    ] {
        let root = work.path().join("bad");
        put(&root, DAEMON_JSON, before);
        let output = Command::new("sh")
            .arg(&script)
            .args(["--root", root.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{before}");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains(why), "{before}: {error}");
        assert_eq!(read(&root, DAEMON_JSON), before, "left alone");
    }
}
