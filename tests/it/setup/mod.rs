//! The host setup scripts served at `/setup/<engine>`: fetched from hoard in-process and run with
//! `sh` against a scratch root (`--root`), twice, and as a dry run. [`proxy`] for hoard as the
//! engine's proxy (the default), [`mirror`] for `?mode=mirror`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use crate::common::Proxy;
use base64::Engine as _;

mod fingerprint;
mod merge;
mod mirror;
mod proxy;

/// A client that talks to hoard directly, as `curl http://hoard:3128/setup/docker` does.
fn direct() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn fetch(proxy: &Proxy, engine: &str, auth: Option<&str>) -> String {
    let mut request = direct().get(format!("{}/setup/{engine}", proxy.url()));
    if let Some(auth) = auth {
        let basic = base64::engine::general_purpose::STANDARD.encode(auth);
        request = request.header("proxy-authorization", format!("Basic {basic}"));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "/setup/{engine}");
    assert_eq!(
        response.headers()["content-type"],
        "text/x-shellscript",
        "/setup/{engine}"
    );
    response.text().await.unwrap()
}

/// Writes a fetched script into `dir` and returns its path.
fn save(dir: &Path, engine: &str, script: String) -> PathBuf {
    let path = dir.join(format!("{engine}.sh"));
    std::fs::write(&path, script).unwrap();
    path
}

/// Runs `script` with `sh` and `args`; `env` adds to the environment.
fn run(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = Command::new("sh")
        .arg(script)
        .args(args)
        .env_remove("HOARD_SETUP_ROOT")
        .env_remove("HOARD_PROXY_USER")
        .env_remove("HOARD_NO_PROXY")
        .env_remove("HOARD_CA_SHA256")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sh {} {args:?}: {}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read(root: &Path, path: &str) -> String {
    let full = root.join(path.trim_start_matches('/'));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, SystemTime)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap(), modified));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn dry_runs_create_nothing() {
    crate::common::init();
    let registry = crate::common::Registry::start().await;
    let (hoard, _) = mirror::plain_mirror(&registry).await;
    let work = tempfile::tempdir().unwrap();
    for engine in ["docker", "containerd", "podman"] {
        for mode in ["", "?mode=mirror"] {
            let text = fetch(&hoard, &format!("{engine}{mode}"), None).await;
            let script = save(work.path(), engine, text);
            let root = work.path().join(format!("empty-{engine}"));
            let out = stdout(&run(
                &script,
                &["--dry-run", "--root", root.to_str().unwrap()],
                &[],
            ));
            let what = format!("{engine}{mode}");
            assert!(
                !root.exists(),
                "{what}: the dry run created {}",
                root.display()
            );
            let create = format!("would create {}", root.join("etc").display());
            assert!(out.contains(&create), "{what}: {out}");
            assert!(!out.contains("created "), "{what}: {out}");
            assert!(out.contains("file(s) would change"), "{what}: {out}");
        }
    }
}
