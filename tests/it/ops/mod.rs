//! The operator commands (`hoard cache …`, `hoard warm`) run as the real binary against a store
//! that hoard, running in-process over the fixture registry, filled; assertions on their output,
//! on the files left, and on what the registry saw.

mod airgap;
mod cache;
mod pin;
mod warm;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::common::*;

/// The config blob every fixture manifest names (`Registry::manifest_json`).
const CONFIG_BLOB: &[u8] = b"{}";

/// hoard in-process over a fixture registry, and a config for the binary that names hoard's
/// real listener and the same CA and cache folders.
struct Setup {
    registry: Registry,
    proxy: Proxy,
    config: PathBuf,
}

/// An image added to the fixture registry.
struct Image {
    repo: String,
    tag: String,
    digest: String,
    /// Config first, then the layers.
    blobs: Vec<String>,
    /// Config plus layers, in bytes.
    size: u64,
    /// The manifest's length.
    manifest_size: usize,
}

impl Image {
    fn name(&self) -> String {
        format!("{REGISTRY}/{}:{}", self.repo, self.tag)
    }
}

/// What a run of the binary printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Setup {
    async fn new() -> Setup {
        init();
        let registry = Registry::start().await;
        registry.add_blob(Bytes::from_static(CONFIG_BLOB));
        let proxy = Proxy::builder(&registry).start().await;
        let config = write_config(proxy.dir.path(), &proxy.server.local_addr().to_string());
        Setup {
            registry,
            proxy,
            config,
        }
    }

    /// Adds `repo:tag` made of `layers` to the registry.
    fn image(&self, repo: &str, tag: &str, layers: &[&Bytes]) -> Image {
        let digests: Vec<String> = layers
            .iter()
            .map(|l| self.registry.add_blob((*l).clone()))
            .collect();
        let described: Vec<(&str, usize)> = digests
            .iter()
            .zip(layers)
            .map(|(d, l)| (d.as_str(), l.len()))
            .collect();
        let manifest = Registry::manifest_json(&described, &format!("{repo}:{tag}"));
        let manifest_size = manifest.len();
        let digest = self.registry.add_manifest(repo, tag, DOCKER_V2, manifest);
        Image {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            digest,
            blobs: std::iter::once(sha256(CONFIG_BLOB))
                .chain(digests)
                .collect(),
            size: (CONFIG_BLOB.len() + layers.iter().map(|l| l.len()).sum::<usize>()) as u64,
            manifest_size,
        }
    }

    /// Adds `repo:tag`, an OCI index of `amd64` (linux/amd64) and `arm64` (linux/arm64/v8), to
    /// the registry; returns its digest.
    fn index(&self, repo: &str, tag: &str, amd64: &Image, arm64: &Image) -> String {
        let entry = |image: &Image, platform: &str| {
            format!(
                r#"{{"mediaType":"{DOCKER_V2}","digest":"{}","size":{},"platform":{platform}}}"#,
                image.digest, image.manifest_size
            )
        };
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
            entry(amd64, r#"{"os":"linux","architecture":"amd64"}"#),
            entry(
                arm64,
                r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#
            ),
        );
        self.registry
            .add_manifest(repo, tag, OCI_INDEX, Bytes::from(index))
    }

    /// Pulls an image through hoard as a client would: the manifest by tag, then its blobs.
    async fn pull(&self, image: &Image) {
        let client = self.proxy.client(false);
        let manifest = client
            .get(url(&format!("/v2/{}/manifests/{}", image.repo, image.tag)))
            .header("accept", DOCKER_V2)
            .send()
            .await
            .unwrap();
        assert_eq!(manifest.status(), 200);
        assert_eq!(sha256(&manifest.bytes().await.unwrap()), image.digest);
        for digest in &image.blobs {
            let blob = client
                .get(url(&format!("/v2/{}/blobs/{digest}", image.repo)))
                .send()
                .await
                .unwrap();
            assert_eq!(blob.status(), 200);
            assert_eq!(sha256(&blob.bytes().await.unwrap()), *digest);
        }
        self.proxy.settled().await;
    }

    /// Runs `hoard <args> --config <config>`.
    async fn hoard(&self, args: &[&str]) -> Run {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--config".to_owned(), self.config.display().to_string()]);
        tokio::task::spawn_blocking(move || run(&args))
            .await
            .unwrap()
    }

    fn cache(&self) -> PathBuf {
        self.proxy.cache_dir()
    }

    fn manifest_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.cache()
            .join("manifests/sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// Where hoard records the registries and repositories an entry came from.
    fn origins_path(&self, kind: &str, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.cache()
            .join("origins")
            .join(kind)
            .join("sha256")
            .join(&hex[..2])
            .join(hex)
    }

    fn tag_path(&self, image: &Image) -> PathBuf {
        self.cache()
            .join("tags")
            .join(REGISTRY)
            .join(&image.repo)
            .join("_tags")
            .join(&image.tag)
    }
}

/// A config for the binary: hoard's CA and cache folders under `dir`, listening on `listen`.
fn write_config(dir: &Path, listen: &str) -> PathBuf {
    let path = dir.join("ops.toml");
    let text = format!(
        "[proxy]\nlisten = \"{listen}\"\n[ca]\ndir = \"{}\"\n[cache]\ndir = \"{}\"\n\
         [intercept]\nhosts = [\"{REGISTRY}\"]\n",
        dir.join("ca").display(),
        dir.join("cache").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[String]) -> Run {
    let output = std::process::Command::new(HOARD_BIN)
        .args(args)
        .env_remove("HOARD_CONFIG")
        .output()
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.file_type().unwrap().is_dir() {
                files(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

fn set_mtime(path: &Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn bad_usage_and_bad_config_exit_2() {
    let code = |args: &[&str]| {
        let output = run(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
        (output.code, output.stderr)
    };
    let (status, stderr) = code(&["cache", "ls", "--config", "/nonexistent/hoard.toml"]);
    assert_eq!(status, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(code(&["cache", "prune"]).0, Some(2));
    assert_eq!(code(&["cache", "prune", "--max-size", "lots"]).0, Some(2));
    assert_eq!(code(&["cache", "rm"]).0, Some(2));
    let (status, stderr) = code(&["cache", "rm", "Not/Lowercase"]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("lowercase"), "{stderr}");
    assert_eq!(code(&["warm", "alpine", "--platform", "linux"]).0, Some(2));
}
