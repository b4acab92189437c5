//! `hoard cache pin` / `unpin`: the pins file a running hoard picks up at its next reconcile,
//! and config pins that `unpin` cannot undo; `hoard cache prune` leaves pinned images alone.

use super::*;

/// hoard with a 1 MiB cache and `cache.pin` naming `p/base`, and the binary on its own config.
async fn small_pinned_cache() -> Setup {
    init();
    let registry = Registry::start().await;
    registry.add_blob(Bytes::from_static(CONFIG_BLOB));
    let proxy = Proxy::builder(&registry)
        .cache("max_size = \"1MiB\"\nmin_free = \"0\"\npin = [\"registry.test/p/base\"]")
        .start()
        .await;
    let config = proxy.dir.path().join("config.toml");
    Setup {
        registry,
        proxy,
        config,
    }
}

/// Whether `hoard cache ls --json` says `repo`'s tag is pinned, and the table's PINNED cell.
async fn listed_pinned(s: &Setup, repo: &str) -> (bool, String) {
    let json = s.hoard(&["cache", "ls", "--json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == repo)
        .unwrap_or_else(|| panic!("{repo} not listed: {}", json.stdout))
        .clone();
    let table = s.hoard(&["cache", "ls"]).await;
    let header = table.stdout.lines().next().unwrap_or_default().to_owned();
    let column = header.find("PINNED").unwrap_or_else(|| panic!("{header}"));
    let line = table
        .stdout
        .lines()
        .find(|l| l.contains(&format!("/{repo}:")))
        .unwrap_or_else(|| panic!("{repo} not in {}", table.stdout));
    let cell = line[column..].split_whitespace().next().unwrap_or_default();
    (row["pinned"].as_bool().unwrap(), cell.to_owned())
}

/// Pulls 2.4 MB of other images through the 1 MiB cache.
async fn flood(s: &Setup, round: &str) {
    for n in 0..12 {
        let image = s.image(&format!("p/flood{round}{n}"), "1", &[&fresh_blob(200_000)]);
        s.pull(&image).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_keeps_an_image_from_the_next_reconcile_and_unpin_lets_it_go() {
    let s = small_pinned_cache().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(300_000)]);
    s.pull(&app).await;

    let pinned = s.hoard(&["cache", "pin", "registry.test/p/app:v1"]).await;
    assert_eq!(pinned.code, Some(0), "{}", pinned.stderr);
    assert!(
        pinned.stdout.starts_with("pinned registry.test/p/app:v1"),
        "{}",
        pinned.stdout
    );
    let file = std::fs::read_to_string(s.cache().join("pins")).unwrap();
    assert_eq!(file, "registry.test/p/app:v1\n");
    assert_eq!(listed_pinned(&s, "p/app").await, (true, "yes".to_owned()));
    let base = s.image("p/base", "1.0", &[&fresh_blob(1000)]);
    s.pull(&base).await;
    assert_eq!(
        listed_pinned(&s, "p/base").await,
        (true, "yes".to_owned()),
        "pinned by cache.pin in the config"
    );
    s.proxy.server.reconcile().await;
    flood(&s, "a").await;
    for digest in std::iter::once(&app.digest) {
        assert!(
            s.manifest_path(digest).exists(),
            "the pinned manifest stayed"
        );
    }
    for digest in &app.blobs {
        assert!(
            s.proxy.blob_path(digest).exists(),
            "pinned blob {digest} stayed"
        );
    }

    // A config pin: unpin says so in one line, exit status 1.
    let refused = s
        .hoard(&["cache", "unpin", "registry.test/p/base:1.0"])
        .await;
    assert_eq!(refused.code, Some(1));
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("cache.pin \"registry.test/p/base\""),
        "{}",
        refused.stderr
    );

    let unpinned = s.hoard(&["cache", "unpin", "registry.test/p/app:v1"]).await;
    assert_eq!(unpinned.code, Some(0), "{}", unpinned.stderr);
    assert_eq!(unpinned.stdout, "unpinned registry.test/p/app:v1\n");
    assert_eq!(std::fs::read_to_string(s.cache().join("pins")).unwrap(), "");
    assert_eq!(listed_pinned(&s, "p/app").await, (false, "no".to_owned()));
    s.proxy.server.reconcile().await;
    flood(&s, "b").await;
    let layer = &app.blobs[1];
    assert!(
        !s.proxy.blob_path(layer).exists(),
        "the unpinned layer went"
    );

    let again = s.hoard(&["cache", "unpin", "registry.test/p/app:v1"]).await;
    assert_eq!(again.code, Some(1));
    assert_eq!(
        again.stderr,
        "hoard: registry.test/p/app:v1 is not pinned\n"
    );
    let digest = s
        .hoard(&[
            "cache",
            "pin",
            &format!("registry.test/p/app@{}", app.digest),
        ])
        .await;
    assert_eq!(
        digest.code,
        Some(2),
        "a digest is not a pin: {}",
        digest.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_leaves_pinned_images_and_takes_the_rest() {
    let s = small_pinned_cache().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(3000)]);
    let base = s.image("p/base", "1.0", &[&fresh_blob(2000)]);
    let other = s.image("p/other", "1", &[&fresh_blob(4000)]);
    for image in [&app, &base, &other] {
        s.pull(image).await;
    }
    let pinned = s.hoard(&["cache", "pin", "registry.test/p/app:v1"]).await;
    assert_eq!(pinned.code, Some(0), "{}", pinned.stderr);

    let pruned = s.hoard(&["cache", "prune", "--max-size", "0"]).await;
    assert_eq!(pruned.code, Some(0), "{}", pruned.stderr);
    assert!(
        pruned
            .stdout
            .contains("removed tag registry.test/p/other:1"),
        "{}",
        pruned.stdout
    );
    for (image, kept) in [(&app, true), (&base, true), (&other, false)] {
        assert_eq!(
            s.manifest_path(&image.digest).exists(),
            kept,
            "{}",
            pruned.stdout
        );
        assert_eq!(
            s.proxy.blob_path(&image.blobs[1]).exists(),
            kept,
            "{}",
            pruned.stdout
        );
    }
    assert!(
        !pruned.stdout.contains("p/app") && !pruned.stdout.contains("p/base"),
        "pinned by the pins file and by cache.pin: {}",
        pruned.stdout
    );
}
