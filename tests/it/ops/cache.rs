//! `hoard cache ls|stats|verify|prune|rm` on a store that hoard filled.

use super::*;

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

/// Each tag shows the `[[cache.freshness]]` rule its config gives it (first match wins), or the
/// global `cache.tag_ttl`, in the table and in the JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_shows_the_freshness_rule_of_each_tag() {
    let s = Setup::new().await;
    let app = s.image("p/app", "1.4", &[&fresh_blob(3000)]);
    let base = s.image("p/base", "latest", &[&fresh_blob(4000)]);
    let tool = s.image("q/tool", "2.0", &[&fresh_blob(5000)]);
    for image in [&app, &base, &tool] {
        s.pull(image).await;
    }
    let config = std::fs::read_to_string(&s.config).unwrap();
    let mut config = config.replacen("[cache]\n", "[cache]\ntag_ttl = \"7m\"\n", 1);
    config.push_str(&format!(
        "[[cache.freshness]]\nmatch = \"{REGISTRY}/p/*:1.*\"\ntag_ttl = \"5m\"\n\
         [[cache.freshness]]\nmatch = \"{REGISTRY}/p/**\"\nimmutable = true\n"
    ));
    std::fs::write(&s.config, config).unwrap();

    let table = s.hoard(&["cache", "ls"]).await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(lines[0].ends_with("FRESHNESS"), "{}", lines[0]);
    let row = |image: &Image| {
        *lines
            .iter()
            .find(|l| l.starts_with(&image.name()))
            .unwrap_or_else(|| panic!("{} not in {}", image.name(), table.stdout))
    };
    assert!(
        row(&app).ends_with(&format!("5m ({REGISTRY}/p/*:1.*)")),
        "{}",
        row(&app)
    );
    assert!(
        row(&base).ends_with(&format!("immutable ({REGISTRY}/p/**)")),
        "{}",
        row(&base)
    );
    assert!(row(&tool).ends_with("7m (cache.tag_ttl)"), "{}", row(&tool));

    let json = s.hoard(&["cache", "ls", "--json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let by_repo = |repo: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["repository"] == repo)
            .unwrap()
            .clone()
    };
    assert_eq!(by_repo("p/app")["tag_ttl"], "5m");
    assert_eq!(
        by_repo("p/app")["freshness_rule"],
        format!("{REGISTRY}/p/*:1.*")
    );
    assert_eq!(by_repo("p/base")["tag_ttl"], "immutable");
    assert_eq!(
        by_repo("p/base")["freshness_rule"],
        format!("{REGISTRY}/p/**")
    );
    assert_eq!(by_repo("q/tool")["tag_ttl"], "7m");
    assert_eq!(by_repo("q/tool")["freshness_rule"], serde_json::Value::Null);
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
    // Tag records count like the rest: they are in what `cache.max_size` limits.
    let tag_bytes = std::fs::metadata(s.tag_path(&app)).unwrap().len();
    assert_eq!(stats["tags"]["entries"], 1);
    assert_eq!(stats["tags"]["bytes"], tag_bytes);
    let bytes = |kind: &str| stats[kind]["bytes"].as_u64().unwrap();
    assert_eq!(
        stats["bytes"].as_u64().unwrap(),
        bytes("blobs") + bytes("manifests") + tag_bytes
    );
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
async fn prune_counts_tag_records_and_removes_the_least_recently_used_one() {
    let s = Setup::new().await;
    let old = s.image("p/old", "v1", &[&fresh_blob(3000)]);
    let new = s.image("p/new", "v1", &[&fresh_blob(3000)]);
    s.pull(&old).await;
    s.pull(&new).await;
    let files: Vec<PathBuf> = ["blobs", "manifests", "tags"]
        .iter()
        .flat_map(|d| files(&s.cache().join(d)))
        .collect();
    // Everything used an hour ago, but p/old's tag record three days ago.
    for path in &files {
        set_mtime(path, HOUR);
    }
    set_mtime(&s.tag_path(&old), 72 * HOUR);
    let total: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();

    let prune = s
        .hoard(&["cache", "prune", "--max-size", &(total - 1).to_string()])
        .await;
    assert_eq!(prune.code, Some(0), "{}", prune.stderr);
    assert!(
        prune
            .stdout
            .starts_with(&format!("removed tag {} (", old.name())),
        "{}",
        prune.stdout
    );
    assert!(
        prune.stdout.contains("removed 0 entries and 1 tags, "),
        "{}",
        prune.stdout
    );
    assert!(!s.tag_path(&old).exists());
    assert!(s.manifest_path(&old.digest).exists() && s.tag_path(&new).exists());
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
        manifest_size: v1.manifest_size,
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
