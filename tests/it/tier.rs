//! The shared S3-API tier against a real engine (SeaweedFS, `common::seaweed`): blobs and
//! manifests round trip, uploads are conditional creates, a corrupt object never reaches a reader
//! whole, `hoard cache prune --s3` removes only old objects, and a bad `[store.s3]` is refused on
//! one line. Retention by use (use records, `prune --s3 --unused-for`) is in `tier/uses.rs`.

use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use hoard::oci::Digest;
use hoard::tier::{Kind, PART_SIZE, Put, S3Tier, TierError};
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::common::seaweed::{BUCKET, SECRET_KEY, Seaweed};
use crate::common::verified::get_verified_blob;
use crate::common::{HOARD_BIN, assert_config_error, fresh_blob, serve_with, sha256};

fn digest_of(bytes: &[u8]) -> Digest {
    Digest::parse(&sha256(bytes)).unwrap()
}

/// `bytes` in a temp file, as the local store would hold a verified blob.
fn blob_file(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(sha256(bytes).replace(':', "-"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Everything a blob stream yields: the bytes before the first error, and that error.
async fn drain(mut stream: hoard::tier::BlobStream) -> (Vec<u8>, usize, Option<TierError>) {
    let (mut bytes, mut pieces) = (Vec::new(), 0);
    while let Some(item) = stream.next().await {
        match item {
            Ok(piece) => {
                pieces += 1;
                bytes.extend_from_slice(&piece);
            }
            Err(err) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (bytes, pieces, Some(err));
            }
        }
    }
    (bytes, pieces, None)
}

/// The raw bucket, to put objects behind the tier's back.
fn raw_bucket(seaweed: &Seaweed) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(seaweed.endpoint())
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(crate::common::seaweed::ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap()
}

#[tokio::test]
async fn blobs_round_trip_and_a_second_upload_is_already_there() {
    let Some(seaweed) = Seaweed::start("blobs_round_trip").await else {
        return;
    };
    let tier = seaweed.tier("fleet/a");
    let dir = tempfile::tempdir().unwrap();
    let blob = fresh_blob(300 << 10);
    let digest = digest_of(&blob);
    let path = blob_file(&dir, &blob);

    assert!(!tier.has_blob(&digest).await.unwrap());
    assert!(tier.get_blob(&digest).await.unwrap().is_none());
    assert_eq!(tier.put_blob(&digest, &path).await.unwrap(), Put::Created);
    assert!(tier.has_blob(&digest).await.unwrap());

    let (length, body) = tier.get_blob(&digest).await.unwrap().unwrap();
    assert_eq!(length, blob.len() as u64);
    let (bytes, _, err) = drain(body).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, blob);
    let (_, body) = get_verified_blob(&tier, &digest).await.unwrap().unwrap();
    let (bytes, _, err) = drain(body).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, blob);

    // Another node uploading the same blob writes nothing.
    assert_eq!(
        tier.put_blob(&digest, &path).await.unwrap(),
        Put::AlreadyThere
    );
    // The key is where the layout says, under the prefix.
    let key = tier.key(Kind::Blob, &digest);
    assert_eq!(
        key,
        format!(
            "fleet/a/blobs/sha256/{}/{}",
            &digest.hex()[..2],
            digest.hex()
        )
    );
    let listed: Vec<_> = tier.list(Kind::Blob).collect().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].as_ref().unwrap().digest, digest);

    // A file that does not match its digest is never uploaded.
    let other = fresh_blob(1000);
    let wrong = digest_of(b"something else");
    let err = tier.put_blob(&wrong, &blob_file(&dir, &other)).await;
    assert!(matches!(err, Err(TierError::Mismatch { .. })), "{err:?}");
    assert!(!tier.has_blob(&wrong).await.unwrap());

    // The engine requires a signature with the right key.
    let mut config = seaweed.config("fleet/a");
    if let Some(credentials) = config.credentials.as_mut() {
        credentials.secret_access_key = "wrong".into();
    }
    let intruder = S3Tier::new(&config).unwrap();
    assert!(intruder.has_blob(&digest).await.is_err());
    assert!(intruder.get_blob(&digest).await.is_err());
}

#[tokio::test]
async fn an_upload_never_overwrites_what_the_bucket_holds() {
    let Some(seaweed) = Seaweed::start("conditional_create").await else {
        return;
    };
    let tier = seaweed.tier("");
    let dir = tempfile::tempdir().unwrap();
    let blob = fresh_blob(64 << 10);
    let digest = digest_of(&blob);
    // Something else is already under the key: If-None-Match: * must leave it alone.
    let squatter = Bytes::from_static(b"put there first by someone else");
    let key = object_store::path::Path::from(tier.key(Kind::Blob, &digest).as_str());
    let raw = raw_bucket(&seaweed);
    raw.put(&key, PutPayload::from(squatter.clone()))
        .await
        .unwrap();
    assert_eq!(
        tier.put_blob(&digest, &blob_file(&dir, &blob))
            .await
            .unwrap(),
        Put::AlreadyThere
    );
    let held = raw.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        held, squatter,
        "the conditional create overwrote the object"
    );
}

#[tokio::test]
async fn a_corrupt_object_never_reaches_a_reader_whole() {
    let Some(seaweed) = Seaweed::start("corrupt_object").await else {
        return;
    };
    let tier = seaweed.tier("fleet");
    let raw = raw_bucket(&seaweed);
    let blob = fresh_blob(1 << 20);
    let digest = digest_of(&blob);
    let key = object_store::path::Path::from(tier.key(Kind::Blob, &digest).as_str());

    // Same length, one byte changed at the very end.
    let mut corrupt = blob.to_vec();
    *corrupt.last_mut().unwrap() ^= 0xff;
    raw.put(&key, PutPayload::from(corrupt.clone()))
        .await
        .unwrap();
    let (length, body) = get_verified_blob(&tier, &digest).await.unwrap().unwrap();
    assert_eq!(length, blob.len() as u64);
    let (bytes, pieces, err) = drain(body).await;
    assert!(
        matches!(&err, Some(TierError::Corrupt { why, .. }) if why.contains("does not hash")),
        "{err:?}"
    );
    assert!(pieces > 0, "a 1 MiB body comes in several pieces");
    assert!(bytes.len() < blob.len(), "the last piece was held back");
    assert_eq!(
        bytes,
        blob[..bytes.len()],
        "what came before was the object's own"
    );
    // The unchecked read hands over everything: checking is the caller's job there.
    let (_, body) = tier.get_blob(&digest).await.unwrap().unwrap();
    assert_eq!(drain(body).await.0, corrupt);

    // A short object is caught by its length.
    raw.put(&key, PutPayload::from(blob.slice(..1000)))
        .await
        .unwrap();
    let (length, body) = get_verified_blob(&tier, &digest).await.unwrap().unwrap();
    assert_eq!(length, 1000);
    let (bytes, _, err) = drain(body).await;
    assert!(bytes.len() < 1000);
    assert!(matches!(err, Some(TierError::Corrupt { .. })), "{err:?}");

    // A corrupt manifest is refused whole.
    let manifest = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let digest = digest_of(&manifest);
    let key = object_store::path::Path::from(tier.key(Kind::Manifest, &digest).as_str());
    let mut attributes = object_store::Attributes::new();
    attributes.insert(
        object_store::Attribute::ContentType,
        "application/vnd.oci.image.manifest.v1+json".into(),
    );
    let options = object_store::PutOptions {
        attributes,
        ..Default::default()
    };
    raw.put_opts(
        &key,
        PutPayload::from_static(br#"{"schemaVersion":3}"#),
        options,
    )
    .await
    .unwrap();
    let err = tier.get_manifest(&digest).await;
    assert!(matches!(err, Err(TierError::Corrupt { .. })), "{err:?}");
}

#[tokio::test]
async fn manifests_round_trip_with_their_media_type() {
    let Some(seaweed) = Seaweed::start("manifests_round_trip").await else {
        return;
    };
    let tier = seaweed.tier("fleet");
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","layers":[]}}"#,
        crate::common::DOCKER_V2
    ));
    let digest = digest_of(&manifest);
    assert!(tier.get_manifest(&digest).await.unwrap().is_none());
    let put = tier.put_manifest(&digest, crate::common::DOCKER_V2, manifest.clone());
    assert_eq!(put.await.unwrap(), Put::Created);
    let got = tier.get_manifest(&digest).await.unwrap().unwrap();
    assert_eq!(got.media_type, crate::common::DOCKER_V2);
    assert_eq!(got.bytes, manifest);
    let again = tier.put_manifest(&digest, crate::common::OCI_INDEX, manifest.clone());
    assert_eq!(again.await.unwrap(), Put::AlreadyThere);
    assert_eq!(
        tier.get_manifest(&digest)
            .await
            .unwrap()
            .unwrap()
            .media_type,
        crate::common::DOCKER_V2,
        "the first upload's media type stays"
    );
    let wrong = digest_of(b"x");
    let put = tier.put_manifest(&wrong, crate::common::DOCKER_V2, manifest);
    assert!(matches!(put.await, Err(TierError::Mismatch { .. })));
    assert_eq!(
        tier.key(Kind::Manifest, &digest),
        format!(
            "fleet/manifests/sha256/{}/{}",
            &digest.hex()[..2],
            digest.hex()
        )
    );
}

#[tokio::test]
async fn big_blobs_go_up_in_parts_and_are_checked_first() {
    let Some(seaweed) = Seaweed::start("multipart").await else {
        return;
    };
    // One byte over the part size (16 MiB), so that the blob goes up in two parts.
    let tier = seaweed.tier("fleet");
    let dir = tempfile::tempdir().unwrap();
    let blob = fresh_blob(PART_SIZE + 1);
    let digest = digest_of(&blob);
    let path = blob_file(&dir, &blob);
    assert_eq!(tier.put_blob(&digest, &path).await.unwrap(), Put::Created);
    let (length, body) = get_verified_blob(&tier, &digest).await.unwrap().unwrap();
    assert_eq!(length, blob.len() as u64);
    let (bytes, _, err) = drain(body).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, blob);
    assert_eq!(
        tier.put_blob(&digest, &path).await.unwrap(),
        Put::AlreadyThere
    );
    // A big file that does not match is aborted before it completes: nothing is left.
    let other = fresh_blob(PART_SIZE + 1);
    let wrong = digest_of(b"not this");
    let err = tier.put_blob(&wrong, &blob_file(&dir, &other)).await;
    assert!(matches!(err, Err(TierError::Mismatch { .. })), "{err:?}");
    assert!(!tier.has_blob(&wrong).await.unwrap());
}

/// `hoard cache prune <args>` with `config`, its environment free of AWS keys.
fn prune(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(HOARD_BIN)
        .args(["cache", "prune", "--config"])
        .arg(config)
        .args(args)
        .env_remove("HOARD_CONFIG")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap()
}

#[tokio::test]
async fn prune_s3_removes_only_old_objects_and_leaves_the_disk_alone() {
    let Some(seaweed) = Seaweed::start("prune_s3").await else {
        return;
    };
    let tier = seaweed.tier("fleet");
    let raw = raw_bucket(&seaweed);
    let dir = tempfile::tempdir().unwrap();
    let (old_blob, new_blob) = (fresh_blob(2000), fresh_blob(3000));
    let old_manifest = Bytes::from_static(br#"{"schemaVersion":2,"old":true}"#);
    let put = |bytes: &Bytes| {
        let (tier, digest, path) = (&tier, digest_of(bytes), blob_file(&dir, bytes));
        async move { tier.put_blob(&digest, &path).await.unwrap() }
    };
    put(&old_blob).await;
    tier.put_manifest(
        &digest_of(&old_manifest),
        crate::common::OCI_INDEX,
        old_manifest.clone(),
    )
    .await
    .unwrap();
    // Not in the layout: never pruned, however old.
    let foreign = object_store::path::Path::from("fleet/blobs/README");
    raw.put(&foreign, PutPayload::from_static(b"kept"))
        .await
        .unwrap();
    // Last-Modified counts in whole seconds: 3.5 s apart, with a cutoff of 2 s, one side is
    // surely older and the other surely newer.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    put(&new_blob).await;

    let cache_dir = dir.path().join("local-cache");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[cache]\ndir = {:?}\n\n{}retention = \"2s\"\n",
            cache_dir.display().to_string(),
            seaweed.config_toml("fleet", dir.path())
        ),
    )
    .unwrap();

    let dry = prune(&config, &["--s3", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(stdout.contains("would remove 2 objects"), "{stdout}");
    assert!(tier.has_blob(&digest_of(&old_blob)).await.unwrap());

    // store.s3.retention is the age when --older-than is not given.
    let run = prune(&config, &["--s3"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains(&format!("removed blob {}", digest_of(&old_blob)))
            && stdout.contains(&format!("removed manifest {}", digest_of(&old_manifest)))
            && stdout.contains("removed 2 objects from s3://hoard/fleet"),
        "{stdout}"
    );
    assert!(!tier.has_blob(&digest_of(&old_blob)).await.unwrap());
    assert!(
        tier.get_manifest(&digest_of(&old_manifest))
            .await
            .unwrap()
            .is_none()
    );
    assert!(tier.has_blob(&digest_of(&new_blob)).await.unwrap());
    assert!(
        raw.head(&foreign).await.is_ok(),
        "a foreign object was pruned"
    );
    assert!(
        !cache_dir.exists(),
        "prune --s3 touched the local cache folder"
    );

    // --older-than wins over the config; a long one removes nothing.
    let run = prune(&config, &["--s3", "--older-than", "1h"]);
    assert!(String::from_utf8_lossy(&run.stdout).contains("removed 0 objects"));
    assert!(tier.has_blob(&digest_of(&new_blob)).await.unwrap());
}

#[test]
fn prune_s3_needs_the_section_and_an_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let out = prune(&config, &["--s3"]);
    assert_config_error(&out, "--s3 needs a [store.s3] section");
    std::fs::write(
        &config,
        "[store.s3]\nbucket = \"hoard\"\nendpoint = \"https://s3.test\"\n\
         access_key_id_file = \"/dev/null\"\nsecret_access_key_file = \"/dev/null\"\n",
    )
    .unwrap();
    // /dev/null is an empty key file: refused by name.
    let out = prune(&config, &["--s3"]);
    assert_config_error(&out, "store.s3.access_key_id_file:");
    let out = prune(&config, &["--s3", "--max-size", "1GiB"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_store_s3_section_is_refused_on_one_line() {
    let base = "[store.s3]\nbucket = \"hoard\"\n";
    let http = format!("{base}endpoint = \"http://127.0.0.1:8333\"\n");
    assert_config_error(
        &serve_with(&http),
        "store.s3.endpoint: http://127.0.0.1:8333 is plain HTTP",
    );
    assert_config_error(
        &serve_with("[store.s3]\nregion = \"us-east-1\"\n"),
        "store.s3.bucket: missing",
    );
    let unreadable = format!(
        "{base}access_key_id_file = \"/nonexistent/key-id\"\n\
         secret_access_key_file = \"/nonexistent/secret\"\n"
    );
    assert_config_error(
        &serve_with(&unreadable),
        "store.s3.access_key_id_file: cannot read /nonexistent/key-id",
    );
    assert_config_error(
        &serve_with(&format!("{base}bukket = \"x\"\n")),
        "unknown field `bukket`",
    );
}

mod uses;

// ---------------------------------------------------------------------------------------------
// The tier in the fill path: hoard nodes in front of the fixture registry and one bucket.

mod in_the_fill_path {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::common::{Image, Mode, Proxy, REGISTRY, Registry, init};

    const MIRROR: &str = "listen = \"127.0.0.1:0\"";

    /// A hoard node on the bucket under `prefix`, reached by its mirror port.
    pub(super) async fn node(registry: &Registry, seaweed: &Seaweed, prefix: &str) -> Proxy {
        let keys = tempfile::tempdir().unwrap();
        let node = Proxy::builder(registry)
            .mirror(MIRROR)
            .tail(&seaweed.config_toml(prefix, keys.path()))
            .start()
            .await;
        drop(keys); // read at start
        node
    }

    pub(super) async fn pull(node: &Proxy, path: &str) -> reqwest::Response {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{}{path}?ns={REGISTRY}", node.mirror_url()))
            .send()
            .await
            .unwrap()
    }

    /// Waits up to 10 s for `check` (uploads run in the background).
    pub(super) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_fresh_node_gets_a_whole_image_from_the_tier_while_the_registry_is_down() {
        init();
        let Some(seaweed) = Seaweed::start("fresh_node_from_tier").await else {
            return;
        };
        let registry = Registry::start().await;
        let Image {
            layers,
            digests,
            manifest,
        } = registry.add_image("team/app", "v1", 2, 300 << 10, "tier");

        let a = node(&registry, &seaweed, "fleet").await;
        let got = pull(&a, "/v2/team/app/manifests/v1").await;
        assert_eq!(got.bytes().await.unwrap(), manifest);
        for (digest, layer) in digests.iter().zip(&layers) {
            let got = pull(&a, &format!("/v2/team/app/blobs/{digest}")).await;
            assert_eq!(&got.bytes().await.unwrap(), layer);
        }
        // A uploads what it fetched from the registry, after verifying it.
        let tier = seaweed.tier("fleet");
        let manifest_digest = digest_of(&manifest);
        eventually("A's uploads reach the bucket", async || {
            let mut all = tier.get_manifest(&manifest_digest).await.unwrap().is_some();
            for digest in &digests {
                all &= tier.has_blob(&digest_of_text(digest)).await.unwrap();
            }
            all && tier
                .get_tag(REGISTRY, "team/app", "v1")
                .await
                .unwrap()
                .is_some()
        })
        .await;
        // An upload is its object's use for the day: A's hits on its disk write no use record.
        pull(&a, "/v2/team/app/manifests/v1")
            .await
            .bytes()
            .await
            .unwrap();
        for digest in &digests {
            let got = pull(&a, &format!("/v2/team/app/blobs/{digest}")).await;
            got.bytes().await.unwrap();
        }
        let records = "hoard_tier_use_records_total";
        let metrics = a.admin("/metrics").await;
        assert!(!metrics.contains(records), "{metrics}");

        registry.set_mode(Mode::Down);
        let before = registry.seen().len();
        let b = node(&registry, &seaweed, "fleet").await;
        let got = pull(&b, "/v2/team/app/manifests/v1").await;
        assert_eq!(got.status(), 200, "the tag as the tier recorded it");
        assert_eq!(got.bytes().await.unwrap(), manifest);
        for (digest, layer) in digests.iter().zip(&layers) {
            let got = pull(&b, &format!("/v2/team/app/blobs/{digest}")).await;
            assert_eq!(got.status(), 200);
            assert_eq!(&got.bytes().await.unwrap(), layer);
        }
        let asked: Vec<_> = registry.seen()[before..]
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert!(
            asked.iter().all(|r| r.contains("/manifests/v1")),
            "only the tag was asked of the registry: {asked:?}"
        );
        // B keeps its own copies.
        b.settled().await;
        for (digest, layer) in digests.iter().zip(&layers) {
            assert_eq!(&std::fs::read(b.blob_path(digest)).unwrap(), layer);
        }
        let metrics = b.admin("/metrics").await;
        let hits = "hoard_tier_reads_total{result=\"hit\"} 4";
        assert!(
            metrics.contains(hits),
            "tag, manifest, two blobs: {metrics}"
        );
        assert!(
            !metrics.contains("hoard_tier_writes_total{result=\"created\"}"),
            "{metrics}"
        );
        let page = b.admin("/").await;
        assert!(
            page.contains("<tr><td>reads</td><td>4</td><td>0</td>"),
            "the status page counts the tier's reads: {page}"
        );
        // What B read from the bucket renews its use there: the manifest and the two blobs.
        let created = format!("{records}{{result=\"created\"}}");
        eventually("B's use records", async || {
            crate::common::sample(&b.admin("/metrics").await, &created) == 3.0
        })
        .await;
        let used = [(Kind::Manifest, manifest_digest.clone())]
            .into_iter()
            .chain(digests.iter().map(|d| (Kind::Blob, digest_of_text(d))));
        let raw = raw_bucket(&seaweed);
        for (kind, digest) in used {
            let key = object_store::path::Path::from(tier.used_key(kind, &digest).as_str());
            assert_eq!(raw.head(&key).await.unwrap().size, 0, "{key}");
        }
    }

    /// A blob of `size` bytes added to `registry`, and a copy of it with one byte changed put in
    /// the bucket under its digest: the blob and its digest.
    async fn corrupt_in_bucket(
        registry: &Registry,
        seaweed: &Seaweed,
        size: usize,
    ) -> (Bytes, String) {
        let blob = fresh_blob(size);
        let digest = registry.add_blob(blob.clone());
        let key = seaweed
            .tier("fleet")
            .key(Kind::Blob, &digest_of_text(&digest));
        let mut wrong = blob.to_vec();
        wrong[1000] ^= 0xff;
        raw_bucket(seaweed)
            .put(
                &object_store::path::Path::from(key.as_str()),
                PutPayload::from(wrong),
            )
            .await
            .unwrap();
        (blob, digest)
    }

    /// Every read of the bucket, whatever its result.
    async fn tier_reads(node: &Proxy) -> f64 {
        let metrics = node.admin("/metrics").await;
        ["hit", "miss", "error", "corrupt"]
            .iter()
            .map(|result| {
                let series = format!("hoard_tier_reads_total{{result=\"{result}\"}}");
                if metrics.contains(&series) {
                    crate::common::sample(&metrics, &series)
                } else {
                    0.0
                }
            })
            .sum()
    }

    /// A blob too big to be checked before it is sent (over 4 MiB) streams from the bucket, and
    /// its fill finds it corrupt at the end: that pull fails, and the digest is skipped in the
    /// bucket at once, so the next pull goes to the registry even before the delete lands.
    #[tokio::test]
    async fn a_corrupt_blob_in_the_bucket_is_never_served_whole_and_is_replaced() {
        init();
        let Some(seaweed) = Seaweed::start("corrupt_in_fill_path").await else {
            return;
        };
        let registry = Registry::start().await;
        let (blob, digest) = corrupt_in_bucket(&registry, &seaweed, 5 << 20).await;
        let tier = seaweed.tier("fleet");

        let node = node(&registry, &seaweed, "fleet").await;
        let path = format!("/v2/p/app/blobs/{digest}");
        let got = pull(&node, &path).await;
        if let Ok(bytes) = got.bytes().await {
            assert!(
                bytes.len() < blob.len(),
                "a corrupt body must not arrive whole ({} bytes)",
                bytes.len()
            );
        }
        assert_eq!(
            registry.count("GET", &digest),
            0,
            "the tier was asked first"
        );
        node.settled().await;
        assert!(!node.blob_path(&digest).exists(), "nothing corrupt is kept");
        let reads = tier_reads(&node).await;
        let got = pull(&node, &path).await;
        assert_eq!(got.bytes().await.unwrap(), blob);
        assert_eq!(registry.count("GET", &digest), 1);
        assert_eq!(tier_reads(&node).await, reads, "the bucket is skipped");
        eventually("the corrupt object is deleted", async || {
            !tier.has_blob(&digest_of_text(&digest)).await.unwrap()
        })
        .await;

        // The next pull fetches it from the registry, verified, and the bucket gets it right.
        let got = pull(&node, &path).await;
        assert_eq!(got.bytes().await.unwrap(), blob);
        eventually("the right bytes are uploaded", async || {
            tier.has_blob(&digest_of_text(&digest)).await.unwrap()
        })
        .await;
        let (_, body) = get_verified_blob(&tier, &digest_of_text(&digest))
            .await
            .unwrap()
            .unwrap();
        let (bytes, _, err) = drain(body).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(bytes, blob);
        let metrics = node.admin("/metrics").await;
        assert!(
            metrics.contains("hoard_tier_reads_total{result=\"corrupt\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("hoard_tier_writes_total{result=\"created\"} 1"),
            "{metrics}"
        );
    }

    /// A small blob is checked whole before a byte is sent, as a manifest is: a corrupt copy in
    /// the bucket costs the pull nothing, it goes to the registry.
    #[tokio::test]
    async fn a_corrupt_small_blob_or_manifest_in_the_bucket_falls_back_to_the_registry() {
        init();
        let Some(seaweed) = Seaweed::start("corrupt_small_falls_back").await else {
            return;
        };
        let registry = Registry::start().await;
        let (blob, digest) = corrupt_in_bucket(&registry, &seaweed, 400 << 10).await;

        let node = node(&registry, &seaweed, "fleet").await;
        let got = pull(&node, &format!("/v2/p/app/blobs/{digest}")).await;
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap(), blob, "whole, from the registry");
        assert_eq!(registry.count("GET", &digest), 1);
        let metrics = node.admin("/metrics").await;
        assert!(
            metrics.contains("hoard_tier_reads_total{result=\"corrupt\"} 1"),
            "{metrics}"
        );
        node.settled().await;
        assert_eq!(std::fs::read(node.blob_path(&digest)).unwrap(), blob);
    }

    fn digest_of_text(text: &str) -> Digest {
        Digest::parse(text).unwrap()
    }
}
