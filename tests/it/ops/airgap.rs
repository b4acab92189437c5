//! `hoard cache export` and `import`: images carried in an OCI image-layout tar from a hoard
//! filled through the fixture registry to a fresh cache folder, served from there by a hoard
//! whose registry is gone; `--offline` and tampered tars.

use std::collections::BTreeSet;

use super::*;

/// Two images in the registry: `p/app:v1` (two layers) and `p/multi:v1`, an OCI index of an
/// amd64 and an arm64 manifest. Returns them and the index's digest.
fn two_images(s: &Setup) -> (Image, Image, Image, String) {
    let app = s.image("p/app", "v1", &[&fresh_blob(40 << 10), &fresh_blob(3000)]);
    let amd64 = s.image("p/multi", "amd64", &[&fresh_blob(20 << 10)]);
    let arm64 = s.image("p/multi", "arm64", &[&fresh_blob(30 << 10)]);
    let index_digest = s.index("p/multi", "v1", &amd64, &arm64);
    (app, amd64, arm64, index_digest)
}

/// What becomes of an entry of a tar rebuilt with changes: its new bytes, or `None` to leave it out.
type Edit<'a> = dyn Fn(&str, Vec<u8>) -> Option<Vec<u8>> + 'a;

/// The entries of a tar: name and bytes, in order.
fn tar_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// Runs the binary with a config whose cache folder is `dir/cache` (nothing listens).
async fn hoard_in(dir: &Path, args: &[&str]) -> Run {
    let config = write_config(dir, &format!("127.0.0.1:{}", free_port()));
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["--config".to_owned(), config.display().to_string()]);
    tokio::task::spawn_blocking(move || run(&args))
        .await
        .unwrap()
}

/// Every file below `dir/cache` but hoard's markers and temp folder.
fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let cache = dir.join("cache");
    ["blobs", "manifests", "tags", "origins"]
        .iter()
        .flat_map(|folder| files(&cache.join(folder)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_every_platform_once_and_import_serves_them_with_the_registry_gone() {
    let s = Setup::new().await;
    let (app, amd64, arm64, index_digest) = two_images(&s);
    // app is in the cache; the multi-platform image is not: export pulls it through hoard.
    s.pull(&app).await;
    s.registry.forget();
    let out = s.proxy.dir.path().join("images.tar");
    let multi = format!("{REGISTRY}/p/multi:v1");
    let export = s
        .hoard(&[
            "cache",
            "export",
            &app.name(),
            &multi,
            "--output",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert_eq!(
        export.stderr, "",
        "no bars nor notes when stderr is not a terminal"
    );
    assert_eq!(
        s.registry.count("GET", &app.blobs[1]),
        0,
        "app came from the cache"
    );
    assert_eq!(
        s.registry.count("GET", &arm64.blobs[1]),
        1,
        "arm64 pulled once"
    );
    assert_eq!(
        s.registry.count("GET", &amd64.blobs[1]),
        1,
        "amd64 pulled once"
    );
    assert!(
        export
            .stdout
            .contains(&format!("exported {} {}", app.name(), app.digest))
            && export
                .stdout
                .contains(&format!("exported {multi} {index_digest}")),
        "{}",
        export.stdout
    );
    assert!(!PathBuf::from(format!("{}.tmp", out.display())).exists());

    // The layout: oci-layout, index.json naming both images both ways, every blob once.
    let entries = tar_entries(&out);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "an entry twice: {names:?}");
    let file = |name: &str| &entries.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(file("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: serde_json::Value = serde_json::from_slice(file("index.json")).unwrap();
    let images = index["manifests"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (image, name, digest, media_type) in [
        (&images[0], app.name(), &app.digest, DOCKER_V2),
        (&images[1], multi.clone(), &index_digest, OCI_INDEX),
    ] {
        assert_eq!(image["digest"], digest.as_str());
        assert_eq!(image["mediaType"], media_type);
        assert_eq!(
            image["annotations"]["org.opencontainers.image.ref.name"],
            name
        );
        assert_eq!(image["annotations"]["io.containerd.image.name"], name);
    }
    let mut wanted: BTreeSet<String> = [&app.digest, &index_digest, &amd64.digest, &arm64.digest]
        .into_iter()
        .chain(&app.blobs)
        .chain(&amd64.blobs)
        .chain(&arm64.blobs)
        .map(|d| format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap()))
        .collect();
    wanted.extend(["oci-layout", "index.json", "blobs/", "blobs/sha256/"].map(String::from));
    assert_eq!(unique, wanted.iter().map(String::as_str).collect());
    for (name, data) in &entries {
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256(data), format!("sha256:{hex}"), "{name}");
        }
    }

    // Import into the fresh cache folder of a running hoard whose registry is gone, and which
    // checks access upstream.
    let gone = Registry::start().await;
    gone.stop();
    let offline = Proxy::builder(&gone)
        .cache("auth_on_hit = \"upstream\"")
        .start()
        .await;
    let far = offline.dir.path();
    let import = hoard_in(far, &["cache", "import", out.to_str().unwrap()]).await;
    assert_eq!(import.code, Some(0), "{}", import.stderr);
    assert_eq!(import.stderr, "");
    assert!(
        import
            .stdout
            .contains(&format!("imported {} {} (3 blobs)", app.name(), app.digest))
            && import
                .stdout
                .contains(&format!("imported {multi} {index_digest} (3 blobs)"))
            && import.stdout.contains("added 5 blobs and 4 manifests")
            && import.stdout.contains("0 already present"),
        "{}",
        import.stdout
    );
    let cache = far.join("cache");
    let tag = std::fs::read_to_string(cache.join("tags").join(REGISTRY).join("p/multi/_tags/v1"))
        .unwrap();
    assert!(
        tag.contains(&format!(" {index_digest} ")) && tag.ends_with(&format!("{OCI_INDEX}\n")),
        "{tag}"
    );
    let origins = |kind: &str, digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read_to_string(
            cache
                .join("origins")
                .join(kind)
                .join("sha256")
                .join(&hex[..2])
                .join(hex),
        )
        .unwrap_or_default()
    };
    assert_eq!(
        origins("blobs", &arm64.blobs[1]),
        format!("{REGISTRY} p/multi imported\n")
    );
    assert_eq!(
        origins("manifests", &app.digest),
        format!("{REGISTRY} p/app imported\n")
    );
    // The config blob both images share has both origins.
    assert_eq!(origins("blobs", &app.blobs[0]).lines().count(), 2);

    // Again: everything is there already.
    let again = hoard_in(far, &["cache", "import", out.to_str().unwrap()]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        again
            .stdout
            .contains("added 0 blobs and 0 manifests (0 B), 9 already present"),
        "{}",
        again.stdout
    );

    // From its next reconcile, the hoard serves both.
    offline.server.reconcile().await;
    let client = offline.client(false);
    let get = |path: String, accept: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .get(url(&path))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            sha256(&response.bytes().await.unwrap())
        }
    };
    assert_eq!(
        get("/v2/p/app/manifests/v1".into(), DOCKER_V2).await,
        app.digest
    );
    assert_eq!(
        get("/v2/p/multi/manifests/v1".into(), OCI_INDEX).await,
        index_digest
    );
    for (repo, digest) in app
        .blobs
        .iter()
        .map(|d| ("p/app", d))
        .chain(arm64.blobs.iter().map(|d| ("p/multi", d)))
    {
        assert_eq!(
            get(format!("/v2/{repo}/blobs/{digest}"), "*/*").await,
            *digest
        );
    }
    // Imported for p/app, not for another repository: the registry would have to say.
    let elsewhere = client
        .get(url(&format!("/v2/p/other/blobs/{}", app.blobs[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_export_of_an_image_with_a_missing_blob_names_it_and_writes_nothing() {
    let s = Setup::new().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(10 << 10), &fresh_blob(2000)]);
    s.pull(&app).await;
    let out = s.proxy.dir.path().join("images.tar");
    std::fs::remove_file(s.proxy.blob_path(&app.blobs[2])).unwrap();
    s.registry.forget();
    let export = s
        .hoard(&[
            "cache",
            "export",
            "--offline",
            &app.name(),
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(export.code, Some(1), "{}", export.stderr);
    assert_eq!(export.stderr.lines().count(), 1, "{}", export.stderr);
    assert!(
        export.stderr.contains(&format!(
            "the cache lacks blob {} (layer of {})",
            app.blobs[2], app.digest
        )),
        "{}",
        export.stderr
    );
    assert!(!out.exists() && !PathBuf::from(format!("{}.tmp", out.display())).exists());
    assert_eq!(s.registry.seen().len(), 0, "offline asks nobody");

    let unknown = s
        .hoard(&[
            "cache",
            "export",
            "--offline",
            &format!("{REGISTRY}/p/app:nope"),
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("the cache lacks the tag nope"),
        "{}",
        unknown.stderr
    );
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_tar_is_refused_naming_the_digest_and_nothing_is_imported() {
    let s = Setup::new().await;
    let app = s.image("p/app", "v1", &[&fresh_blob(10 << 10), &fresh_blob(2000)]);
    s.pull(&app).await;
    let good = s.proxy.dir.path().join("images.tar");
    let export = s
        .hoard(&["cache", "export", &app.name(), "-o", good.to_str().unwrap()])
        .await;
    assert_eq!(export.code, Some(0), "{}", export.stderr);

    // One byte of a layer changed.
    let layer = app.blobs[1].strip_prefix("sha256:").unwrap();
    let offset = {
        let mut archive = tar::Archive::new(std::fs::File::open(&good).unwrap());
        let entry = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().ends_with(layer))
            .unwrap();
        entry.raw_file_position() as usize + 100
    };
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[offset] ^= 0xff;
    let tampered = s.proxy.dir.path().join("tampered.tar");
    std::fs::write(&tampered, &bytes).unwrap();

    // The layer left out, a link slipped in, and index.json cut short.
    let rebuilt = |name: &str, edit: &Edit<'_>, link: bool| {
        let path = s.proxy.dir.path().join(name);
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (entry_name, data) in tar_entries(&good) {
            let Some(data) = edit(&entry_name, data).filter(|_| !entry_name.ends_with('/')) else {
                continue;
            };
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, &entry_name, data.as_slice())
                .unwrap();
        }
        if link {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, "blobs/sha256/x", "/etc/passwd")
                .unwrap();
        }
        builder.finish().unwrap();
        path
    };
    let missing = rebuilt(
        "missing.tar",
        &|n, d| (!n.ends_with(layer)).then_some(d),
        false,
    );
    let linked = rebuilt("linked.tar", &|_, d| Some(d), true);
    let bad_json = rebuilt(
        "bad-json.tar",
        &|n, d| {
            Some(if n == "index.json" {
                b"{\"manifests\": [".to_vec()
            } else {
                d
            })
        },
        false,
    );

    let far = tempfile::tempdir().unwrap();
    for (tar, reason) in [
        (
            &tampered,
            format!("blob {} does not match its digest", app.blobs[1]),
        ),
        (
            &missing,
            format!(
                "blob named by manifest {} {} is missing from the tar",
                app.digest, app.blobs[1]
            ),
        ),
        (&linked, "entry \"blobs/sha256/x\" is a Symlink".to_owned()),
        (&bad_json, "index.json is not an image index".to_owned()),
    ] {
        let import = hoard_in(far.path(), &["cache", "import", tar.to_str().unwrap()]).await;
        assert_eq!(import.code, Some(2), "{}", import.stderr);
        assert_eq!(import.stderr.lines().count(), 1, "{}", import.stderr);
        assert!(
            import.stderr.contains(&reason),
            "{reason}: {}",
            import.stderr
        );
        assert_eq!(import.stdout, "nothing imported\n");
        assert_eq!(cache_files(far.path()), Vec::<PathBuf>::new(), "{reason}");
        let staging = files(&far.path().join("cache").join(TMP_DIR_NAME));
        assert!(
            staging.iter().all(|p| p.ends_with(".hoard-tmp")),
            "{staging:?}"
        );
    }
    // The good tar goes in.
    let import = hoard_in(far.path(), &["cache", "import", good.to_str().unwrap()]).await;
    assert_eq!(import.code, Some(0), "{}", import.stderr);
    assert_eq!(
        cache_files(far.path()).len(),
        1 + 3 + 1 + 4,
        "manifest, blobs, tag, origins"
    );
}

const TMP_DIR_NAME: &str = "hoard-tmp";
