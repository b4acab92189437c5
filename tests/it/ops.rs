//! The operator commands (`hoard cache …`, `hoard warm`) run as the real binary against a store
//! that hoard, running in-process over the fixture registry, filled; assertions on their output,
//! on the files left, and on what the registry saw.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::common::*;
use bytes::Bytes;

const HOARD: &str = env!("CARGO_BIN_EXE_hoard");

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
        let proxy = Proxy::start(&registry, "").await;
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
        let digest = self.registry.add_manifest(repo, tag, DOCKER_V2, manifest);
        Image {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            digest,
            blobs: std::iter::once(sha256(CONFIG_BLOB))
                .chain(digests)
                .collect(),
            size: (CONFIG_BLOB.len() + layers.iter().map(|l| l.len()).sum::<usize>()) as u64,
        }
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
    let output = std::process::Command::new(HOARD)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_each_tag_with_digest_size_and_last_use() {
    let s = Setup::new().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(3000), &fresh_blob(5000)]);
    let tool = s.image("q/tool", "2.0", &[&fresh_blob(7000)]);
    s.pull(&app).await;
    s.pull(&tool).await;

    let table = s.hoard(&["cache", "ls"]).await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(lines[0].starts_with("IMAGE") && lines[0].contains("LAST USED"));
    assert!(lines[1].starts_with(&app.name()) && lines[1].contains(&app.digest));
    assert!(lines[1].contains("7.81 KiB"), "{}", lines[1]); // 2 + 3000 + 5000 bytes
    assert!(lines[2].starts_with(&tool.name()) && lines[2].contains(&tool.digest));
    // Aligned: the digests start in the same column.
    assert_eq!(lines[1].find("sha256:"), lines[2].find("sha256:"));

    let json = s.hoard(&["cache", "ls", "--json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, image) in rows.iter().zip([&app, &tool]) {
        assert_eq!(row["registry"], REGISTRY);
        assert_eq!(row["repository"], image.repo.as_str());
        assert_eq!(row["tag"], image.tag.as_str());
        assert_eq!(row["digest"], image.digest.as_str());
        assert_eq!(row["media_type"], DOCKER_V2);
        assert_eq!(row["size"], image.size);
        let used = row["last_used"].as_str().unwrap();
        assert!(used.len() == 20 && used.ends_with('Z'), "{used}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_counts_entries_and_shows_the_hit_ratio_of_a_running_hoard() {
    let s = Setup::new().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(3000), &fresh_blob(5000)]);
    s.pull(&app).await; // 1 manifest + 3 blobs missed
    s.pull(&app).await; // and hit

    let json = s.hoard(&["cache", "stats", "--json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let stats: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(stats["blobs"]["entries"], 3);
    assert_eq!(stats["blobs"]["bytes"], app.size);
    assert_eq!(stats["manifests"]["entries"], 1);
    assert_eq!(stats["tags"], 1);
    assert_eq!(stats["running"], true);
    assert_eq!(stats["hit_ratio"]["requests"], 0.5);
    assert_eq!(stats["counters"]["requests"]["MISS"], 4);

    let text = s.hoard(&["cache", "stats"]).await;
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert!(text.stdout.contains("blobs"), "{}", text.stdout);
    assert!(
        text.stdout.contains("50.0% of requests (4 of 8)"),
        "{}",
        text.stdout
    );

    // Nothing listens on a port that was just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let config = write_config(s.proxy.dir.path(), &addr);
    let args = ["cache", "stats", "--config", config.to_str().unwrap()].map(str::to_owned);
    let stopped = tokio::task::spawn_blocking(move || run(&args))
        .await
        .unwrap();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr);
    assert!(
        stopped
            .stdout
            .contains(&format!("hoard is not running at {addr}")),
        "{}",
        stopped.stdout
    );
    assert!(stopped.stdout.contains("blobs"), "{}", stopped.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_removes_corrupt_entries_and_exits_1() {
    let s = Setup::new().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(3000), &fresh_blob(5000)]);
    s.pull(&app).await;

    let clean = s.hoard(&["cache", "verify"]).await;
    assert_eq!(clean.code, Some(0), "{}", clean.stderr);
    assert!(
        clean.stdout.starts_with("verified 4 entries, "),
        "{}",
        clean.stdout
    );
    assert!(clean.stdout.ends_with("0 corrupt removed\n"));
    // No progress bar in a pipe.
    assert_eq!(clean.stderr, "");

    let layer = s.proxy.blob_path(&app.blobs[1]);
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    // A manifest file that lost its media-type line.
    let manifest = s.manifest_path(&app.digest);
    let text = std::fs::read(&manifest).unwrap();
    let body = &text[text.iter().position(|b| *b == b'\n').unwrap() + 1..];
    std::fs::write(&manifest, body).unwrap();

    let dirty = s.hoard(&["cache", "verify"]).await;
    assert_eq!(dirty.code, Some(1), "{}", dirty.stderr);
    let lines: Vec<&str> = dirty.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", dirty.stdout);
    assert!(dirty.stdout.contains(&format!(
        "removed corrupt blob {}: content does not match the digest",
        app.blobs[1]
    )));
    assert!(dirty.stdout.contains(&format!(
        "removed corrupt manifest {}: no media-type line",
        app.digest
    )));
    assert!(
        lines[2].starts_with("verified 4 entries, ") && lines[2].ends_with("2 corrupt removed")
    );
    assert!(!layer.exists() && !manifest.exists());
    assert!(s.proxy.blob_path(&app.blobs[2]).exists());

    let again = s.hoard(&["cache", "verify"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stdout);
    assert!(again.stdout.starts_with("verified 2 entries, "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_least_recently_used_first_and_dry_run_removes_nothing() {
    let s = Setup::new().await;
    let layers = [fresh_blob(10_000), fresh_blob(10_000), fresh_blob(10_000)];
    let app = s.image("p/app", "v1", &[&layers[0], &layers[1], &layers[2]]);
    s.pull(&app).await;
    let entries: Vec<PathBuf> = ["blobs", "manifests"]
        .iter()
        .flat_map(|d| files(&s.cache().join(d)))
        .collect();
    assert_eq!(entries.len(), 5);
    for path in &entries {
        set_mtime(path, HOUR);
    }
    let (oldest, older, newer) = (
        s.proxy.blob_path(&app.blobs[1]),
        s.proxy.blob_path(&app.blobs[2]),
        s.proxy.blob_path(&app.blobs[3]),
    );
    set_mtime(&oldest, 72 * HOUR);
    set_mtime(&older, 48 * HOUR);
    let total: u64 = entries
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let just_under = (total - 1).to_string();

    let dry = s
        .hoard(&["cache", "prune", "--max-size", &just_under, "--dry-run"])
        .await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert!(
        dry.stdout
            .starts_with(&format!("would remove blob {} (9.77 KiB", app.blobs[1])),
        "{}",
        dry.stdout
    );
    assert_eq!(dry.stdout.lines().count(), 2, "{}", dry.stdout);
    assert!(oldest.exists());

    let by_size = s
        .hoard(&["cache", "prune", "--max-size", &just_under])
        .await;
    assert_eq!(by_size.code, Some(0), "{}", by_size.stderr);
    assert!(
        by_size
            .stdout
            .starts_with(&format!("removed blob {}", app.blobs[1]))
    );
    assert!(
        by_size
            .stdout
            .ends_with("removed 1 entries and 0 tags, 9.77 KiB freed\n")
    );
    assert!(!oldest.exists() && older.exists());

    let by_age = s.hoard(&["cache", "prune", "--older-than", "36h"]).await;
    assert_eq!(by_age.code, Some(0), "{}", by_age.stderr);
    assert!(!older.exists() && newer.exists());
    assert!(s.manifest_path(&app.digest).exists() && s.tag_path(&app).exists());

    // Once the manifest goes, its tag goes too, and ls lists nothing.
    let all = s.hoard(&["cache", "prune", "--older-than", "30m"]).await;
    assert_eq!(all.code, Some(0), "{}", all.stderr);
    assert!(
        all.stdout
            .contains(&format!("removed tag {} (no manifest left)", app.name())),
        "{}",
        all.stdout
    );
    assert!(
        all.stdout.contains("removed 3 entries and 1 tags, "),
        "{}",
        all.stdout
    );
    assert!(files(&s.cache().join("blobs")).is_empty());
    let ls = s.hoard(&["cache", "ls"]).await;
    assert_eq!(ls.stdout.lines().count(), 1, "{}", ls.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_removes_an_image_and_only_the_blobs_no_other_image_uses() {
    let s = Setup::new().await;
    let shared = fresh_blob(4000);
    let app = s.image("p/app", "v1", &[&fresh_blob(3000), &shared]);
    let other = s.image("p/other", "v1", &[&fresh_blob(2000), &shared]);
    s.pull(&app).await;
    s.pull(&other).await;
    // Origins are recorded in the background: wait for them, so none is written after the rm.
    let recorded = || {
        [&app, &other].iter().all(|image| {
            s.origins_path("manifests", &image.digest).exists()
                && image
                    .blobs
                    .iter()
                    .all(|d| s.origins_path("blobs", d).exists())
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !recorded() {
        assert!(std::time::Instant::now() < deadline, "origins not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rm = s.hoard(&["cache", "rm", &app.name()]).await;
    assert_eq!(rm.code, Some(0), "{}", rm.stderr);
    assert!(rm.stdout.contains(&format!("removed tag {}", app.name())));
    assert!(
        rm.stdout
            .contains(&format!("removed manifest {}", app.digest))
    );
    assert!(
        rm.stdout
            .contains(&format!("removed blob {}", app.blobs[1]))
    );
    assert!(
        rm.stdout.contains("kept 2 blobs used by other images"),
        "{}",
        rm.stdout
    );
    assert!(!s.tag_path(&app).exists() && !s.manifest_path(&app.digest).exists());
    assert!(!s.proxy.blob_path(&app.blobs[1]).exists());
    // No provenance outlives its entry.
    assert!(!s.origins_path("manifests", &app.digest).exists());
    assert!(!s.origins_path("blobs", &app.blobs[1]).exists());
    // The config and the shared layer stay with the other image.
    for digest in &other.blobs {
        assert!(s.proxy.blob_path(digest).exists(), "{digest}");
        assert!(s.origins_path("blobs", digest).exists(), "{digest}");
    }
    let ls = s.hoard(&["cache", "ls"]).await;
    assert_eq!(ls.stdout.lines().count(), 2, "{}", ls.stdout);
    assert!(ls.stdout.contains(&other.name()));

    let again = s.hoard(&["cache", "rm", &app.name()]).await;
    assert_eq!(again.code, Some(1));
    assert_eq!(
        again.stderr,
        format!("hoard: {} is not in the cache\n", app.name())
    );

    // By digest: the manifest, the tags pointing at it, and now every blob.
    let by_digest = format!("{REGISTRY}/p/other@{}", other.digest);
    let rm = s.hoard(&["cache", "rm", &by_digest]).await;
    assert_eq!(rm.code, Some(0), "{}", rm.stderr);
    assert!(rm.stdout.contains(&format!("removed tag {}", other.name())));
    assert!(files(&s.cache().join("blobs")).is_empty(), "{}", rm.stdout);
    assert!(files(&s.cache().join("tags")).is_empty());
    let origins = files(&s.cache().join("origins"));
    assert!(
        origins
            .iter()
            .all(|p| p.starts_with(s.cache().join("origins/tmp"))),
        "{origins:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_keeps_a_manifest_that_another_tag_still_names() {
    let s = Setup::new().await;
    let v1 = s.image("p/app", "v1", &[&fresh_blob(3000)]);
    // `latest` is the same manifest as `v1`.
    let manifest = Registry::manifest_json(&[(&v1.blobs[1], 3000)], "p/app:v1");
    assert_eq!(
        s.registry
            .add_manifest("p/app", "latest", DOCKER_V2, manifest),
        v1.digest
    );
    let latest = Image {
        repo: v1.repo.clone(),
        tag: "latest".to_owned(),
        digest: v1.digest.clone(),
        blobs: v1.blobs.clone(),
        size: v1.size,
    };
    s.pull(&v1).await;
    s.pull(&latest).await;

    let rm = s.hoard(&["cache", "rm", &v1.name()]).await;
    assert_eq!(rm.code, Some(0), "{}", rm.stderr);
    let expected = format!(
        "removed tag {}\nkept manifest {} (still tagged {})\n{}: removed 1 files, freed ",
        v1.name(),
        v1.digest,
        latest.name(),
        v1.name()
    );
    assert!(rm.stdout.starts_with(&expected), "{}", rm.stdout);
    assert!(s.manifest_path(&v1.digest).exists());
    for digest in &v1.blobs {
        assert!(s.proxy.blob_path(digest).exists(), "{digest}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pulls_through_hoard_so_later_pulls_are_hits() {
    let s = Setup::new().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(300 << 10), &fresh_blob(5000)]);

    let warm = s.hoard(&["warm", &app.name()]).await;
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);
    assert_eq!(
        warm.stdout,
        format!(
            "warmed {} {} (3 blobs, 304.88 KiB)\n",
            app.name(),
            app.digest
        )
    );
    assert_eq!(warm.stderr, "");
    assert_eq!(s.registry.count("GET", "/blobs/"), 3);

    s.registry.forget();
    s.pull(&app).await;
    assert_eq!(s.registry.count("GET", "/blobs/"), 0);
    assert_eq!(s.registry.count("GET", "/manifests/"), 0);

    let unknown = s.hoard(&["warm", &format!("{REGISTRY}/p/app:nope")]).await;
    assert_eq!(unknown.code, Some(1));
    assert_eq!(unknown.stderr.lines().count(), 1, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("404"), "{}", unknown.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_follows_an_index_to_the_requested_platform() {
    let s = Setup::new().await;
    let amd64 = s.image("p/multi", "amd64-only", &[&fresh_blob(6000)]);
    let arm64 = s.image("p/multi", "arm64-only", &[&fresh_blob(8000)]);
    let entry = |image: &Image, platform: &str| {
        format!(
            r#"{{"mediaType":"{DOCKER_V2}","digest":"{}","size":1,"platform":{platform}}}"#,
            image.digest
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        entry(&amd64, r#"{"os":"linux","architecture":"amd64"}"#),
        entry(
            &arm64,
            r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#
        ),
    );
    let index_digest = s
        .registry
        .add_manifest("p/multi", "v1", OCI_INDEX, Bytes::from(index));
    let name = format!("{REGISTRY}/p/multi:v1");

    let warm = s.hoard(&["warm", &name, "--platform", "linux/arm64"]).await;
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);
    assert!(
        warm.stdout
            .starts_with(&format!("warmed {name} {index_digest} (2 blobs, ")),
        "{}",
        warm.stdout
    );
    assert_eq!(s.registry.count("GET", &arm64.digest), 1);
    assert_eq!(s.registry.count("GET", &arm64.blobs[1]), 1);
    assert_eq!(s.registry.count("GET", &amd64.digest), 0);
    assert_eq!(s.registry.count("GET", &amd64.blobs[1]), 0);

    // The index is sized by the platform manifests that are stored.
    let ls = s.hoard(&["cache", "ls", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    assert_eq!(rows[0]["digest"], index_digest.as_str());
    assert_eq!(rows[0]["media_type"], OCI_INDEX);
    assert_eq!(rows[0]["size"], arm64.size);

    let missing = s
        .hoard(&["warm", &name, "--platform", "windows/amd64"])
        .await;
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains(
            "no manifest for windows/amd64 in the index (it has: linux/amd64, linux/arm64/v8)"
        ),
        "{}",
        missing.stderr
    );

    // The default platform is linux/amd64.
    let warm = s.hoard(&["warm", &name]).await;
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);
    assert_eq!(s.registry.count("GET", &amd64.blobs[1]), 1);
}

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
