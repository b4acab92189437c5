//! hoard as a real process, killed and starved: `kill -9` in the middle of a fill and right
//! after one, then a restart on the same store; and a disk that refuses writes (a file-size
//! limit), which must turn caching off and leave every response whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

/// 64 KiB pieces 30 ms apart: a 2 MiB blob takes about a second to fill, 1 MiB half that.
const SLOW: Mode = Mode::Slow {
    chunk: 64 << 10,
    delay: Duration::from_millis(30),
};

/// Starts hoard on the config in `dir` (through `sh -c script` when given) and waits until it
/// answers `/healthz`.
async fn start(dir: &Path, port: u16, script: Option<&str>) -> HoardProcess {
    let mut hoard = HoardProcess::spawn(&dir.join("config.toml"), port, script);
    hoard.wait_healthy().await;
    hoard
}

/// A fixture registry in `mode`, and a folder with a config for hoard on a free port.
async fn setup(mode: Mode) -> (Registry, tempfile::TempDir, u16) {
    init();
    let registry = Registry::start().await;
    registry.set_mode(mode);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    Proxy::builder(&registry)
        .cache("min_free = \"0\"")
        .write_config(dir.path(), &listen);
    (registry, dir, port)
}

fn blob_url(digest: &str) -> String {
    url(&format!("/v2/p/app/blobs/{digest}"))
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    dir.join("cache/blobs/sha256").join(&hex[..2]).join(hex)
}

/// The stored blob, once its fill has synced it into the store (a client has the last bytes a
/// moment before).
async fn stored(dir: &Path, digest: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(bytes) = std::fs::read(blob_path(dir, digest)) {
            return bytes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{digest} is not in the store after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The files in the store's temp folder, with their sizes.
fn temp_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(dir.join("cache").join(hoard::store::TMP_DIR))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != hoard::store::TMP_MARKER)
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect()
}

async fn pull(client: &reqwest::Client, digest: &str) -> bytes::Bytes {
    let response = client.get(blob_url(digest)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_fill_leaves_nothing_wrong() {
    let (registry, dir, port) = setup(SLOW).await;
    let dir = dir.path();
    let total = 2 << 20;
    let bytes = fresh_blob(total);
    let digest = registry.add_blob(bytes.clone());

    let mut hoard = start(dir, port, None).await;
    let mut response = hoard.client().get(blob_url(&digest)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0;
    // Past two 256 KiB write batches, so the temp file holds some of the blob.
    while received < 600 << 10 {
        received += response.chunk().await.unwrap().unwrap().len();
    }
    let partial = temp_files(dir);
    assert_eq!(partial.len(), 1, "one fill in progress: {partial:?}");
    hoard.kill();
    assert!(received < total, "the kill came before the end of the fill");
    let rest = async {
        while response.chunk().await?.is_some() {}
        Ok::<_, reqwest::Error>(())
    };
    assert!(rest.await.is_err(), "the client sees the body cut short");
    assert!(!blob_path(dir, &digest).exists(), "nothing is stored");
    let partial = temp_files(dir);
    assert_eq!(
        partial.len(),
        1,
        "the unfinished temp file is left: {partial:?}"
    );
    assert!(
        partial[0].1 > 0 && partial[0].1 < total as u64,
        "and it is partial: {partial:?}"
    );

    let hoard = start(dir, port, None).await;
    assert_eq!(temp_files(dir), vec![], "leftovers are removed at start");
    let got = pull(&hoard.client(), &digest).await;
    assert_eq!(
        sha256(&got),
        digest,
        "the pull after the restart is correct"
    );
    assert_eq!(
        sha256(&stored(dir, &digest).await),
        digest,
        "and stored whole"
    );
    assert_eq!(registry.count("GET", &digest), 2, "one fill per start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_a_fill_leaves_the_blob_whole_or_absent() {
    let (registry, dir, port) = setup(SLOW).await;
    let dir = dir.path();
    let bytes = fresh_blob(1 << 20);
    let digest = registry.add_blob(bytes.clone());

    // The client has its last bytes once they are verified; the blob is then synced and renamed
    // into the store. A kill in between leaves the whole blob or none of it, never a part.
    let mut hoard = start(dir, port, None).await;
    let got = pull(&hoard.client(), &digest).await;
    hoard.kill();
    assert_eq!(got, bytes);
    let kept = match std::fs::read(blob_path(dir, &digest)) {
        Ok(stored) => {
            assert_eq!(sha256(&stored), digest, "a stored file is complete");
            true
        }
        Err(_) => false,
    };
    eprintln!("killed right after the client's last byte: blob kept = {kept}");

    let mut hoard = start(dir, port, None).await;
    assert_eq!(temp_files(dir), vec![], "leftovers are removed at start");
    let got = pull(&hoard.client(), &digest).await;
    assert_eq!(sha256(&got), digest);
    let fills = if kept { 1 } else { 2 };
    assert_eq!(registry.count("GET", &digest), fills, "kept = {kept}");

    // Once the fill has reached the store, a kill does not lose it.
    assert_eq!(sha256(&stored(dir, &digest).await), digest);
    hoard.kill();
    let hoard = start(dir, port, None).await;
    let got = pull(&hoard.client(), &digest).await;
    assert_eq!(sha256(&got), digest);
    assert_eq!(
        registry.count("GET", &digest),
        fills,
        "served from the store after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_turns_caching_off_not_the_response() {
    let (registry, dir, port) = setup(Mode::Direct).await;
    let dir = dir.path();
    // No file hoard writes may pass 200 KiB (dash counts `ulimit -f` in 512-byte blocks, bash
    // in 1024-byte ones: 200 KiB or 400 KiB, either between the two blob sizes below). With
    // SIGXFSZ ignored, a write past the limit fails with EFBIG instead of killing the process.
    let script = "trap '' XFSZ; ulimit -f 400; exec \"$0\" serve --config \"$1\"";
    let hoard = start(dir, port, Some(script)).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", hoard.child.id())).unwrap();
    let file_size = limits
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .unwrap();
    assert!(
        file_size.contains(" 204800 ") || file_size.contains(" 409600 "),
        "{file_size}"
    );
    let client = hoard.client();

    let big = fresh_blob(1 << 20);
    let big_digest = registry.add_blob(big.clone());
    for _ in 0..3 {
        assert_eq!(
            pull(&client, &big_digest).await,
            big,
            "every response is whole"
        );
        assert!(!blob_path(dir, &big_digest).exists(), "nothing is stored");
        assert_eq!(temp_files(dir), vec![], "no temp file is left");
    }
    assert_eq!(registry.count("GET", &big_digest), 3);

    let small = fresh_blob(100 << 10);
    let small_digest = registry.add_blob(small.clone());
    assert_eq!(pull(&client, &small_digest).await, small);
    assert_eq!(pull(&client, &small_digest).await, small);
    assert_eq!(
        registry.count("GET", &small_digest),
        1,
        "a small blob is still cached"
    );
    assert_eq!(sha256(&stored(dir, &small_digest).await), small_digest);

    let mut hoard = hoard;
    hoard.kill();
    let log = hoard.log();
    let warnings = log
        .matches("caching is off for the affected responses")
        .count();
    assert_eq!(
        warnings, 1,
        "one warning for three failures (throttled):\n{log}"
    );
    assert!(log.contains("File too large"), "the cause is named:\n{log}");
}
