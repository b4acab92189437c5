//! Retention by use in the shared tier, against SeaweedFS: a node that serves an object renews
//! its use record (`<prefix>/used/…`) once a day at most, and `hoard cache prune --s3
//! --unused-for` keeps what was served or uploaded within that time, and removes the rest with
//! its record. Ages are seconds here: `Last-Modified` counts whole seconds, so each wait leaves
//! a second of margin on both sides of the cutoff.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use hoard::tier::{Kind, S3Tier};
use object_store::{ObjectStore as _, ObjectStoreExt as _};

use super::in_the_fill_path::{eventually, node, pull};
use super::{Seaweed, blob_file, digest_of, prune, raw_bucket};
use crate::common::{Mode, Registry, fresh_blob, init, sample};

/// `--unused-for` in these tests.
const UNUSED_FOR: &str = "5s";
/// Waited so that what was uploaded before is unused for longer than [`UNUSED_FOR`].
const PAST_IT: Duration = Duration::from_secs(6);

/// Every key under `prefix` in the bucket.
async fn keys(seaweed: &Seaweed, prefix: &str) -> BTreeSet<String> {
    raw_bucket(seaweed)
        .list(Some(&object_store::path::Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// The keys of objects and of use records.
fn objects(tier: &S3Tier, blobs: &[&Bytes], manifests: &[&Bytes], used: bool) -> Vec<String> {
    let key = |kind, bytes: &Bytes| {
        let digest = digest_of(bytes);
        if used {
            tier.used_key(kind, &digest)
        } else {
            tier.key(kind, &digest)
        }
    };
    let blobs = blobs.iter().map(|b| key(Kind::Blob, b));
    blobs
        .chain(manifests.iter().map(|m| key(Kind::Manifest, m)))
        .collect()
}

fn manifest(marker: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","layers":[],"marker":"{marker}"}}"#,
        crate::common::DOCKER_V2
    ))
}

fn stdout(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Blob A and manifest MA are read through a fresh node (so from the bucket) after they are
/// older than `--unused-for`; blob B and manifest MB are never read; D is uploaded just before
/// the prune. The prune removes B and MB and an orphan record, keeps A, MA and D; A still serves
/// to a node whose registry is down. Once nothing was read for the same time again, a second
/// prune removes A and MA with their records. A second read on the same node (a hit on its disk
/// now) writes no second record.
#[tokio::test]
async fn objects_read_survive_prune_unused_for_and_objects_never_read_go() {
    init();
    let Some(seaweed) = Seaweed::start("tier_use_prune").await else {
        return;
    };
    let registry = Registry::start().await;
    let tier = seaweed.tier("fleet");
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c, d] = [1, 2, 3, 4].map(|i| fresh_blob(i * 1000));
    let (ma, mb) = (manifest("a"), manifest("b"));
    for blob in [&a, &b, &c] {
        registry.add_blob(blob.clone());
        let (digest, path) = (digest_of(blob), blob_file(&dir, blob));
        tier.put_blob(&digest, &path).await.unwrap();
    }
    for (tag, m) in [("a", &ma), ("b", &mb)] {
        registry.add_manifest("p/app", tag, crate::common::DOCKER_V2, m.clone());
        let digest = digest_of(m);
        let put = tier.put_manifest(&digest, crate::common::DOCKER_V2, m.clone());
        put.await.unwrap();
    }
    let reader = node(&registry, &seaweed, "fleet").await;
    tokio::time::sleep(PAST_IT).await;

    let blob_path = |bytes: &Bytes| format!("/v2/p/app/blobs/{}", digest_of(bytes));
    let manifest_path = |bytes: &Bytes| format!("/v2/p/app/manifests/{}", digest_of(bytes));
    for _ in 0..2 {
        let got = pull(&reader, &blob_path(&a)).await;
        assert_eq!(got.bytes().await.unwrap(), a);
        let got = pull(&reader, &manifest_path(&ma)).await;
        assert_eq!(got.bytes().await.unwrap(), ma);
        reader.settled().await;
    }
    assert_eq!(registry.count("GET", &digest_of(&a).to_string()), 0);
    assert_eq!(registry.count("GET", &digest_of(&ma).to_string()), 0);
    // C, read once after those second reads: once its record is there, any record the second
    // reads wrote would be too.
    let got = pull(&reader, &blob_path(&c)).await;
    assert_eq!(got.bytes().await.unwrap(), c);
    let raw = raw_bucket(&seaweed);
    let record = |kind, bytes: &Bytes| {
        object_store::path::Path::from(tier.used_key(kind, &digest_of(bytes)).as_str())
    };
    eventually("the use records of A, MA and C", async || {
        raw.head(&record(Kind::Blob, &a)).await.is_ok()
            && raw.head(&record(Kind::Manifest, &ma)).await.is_ok()
            && raw.head(&record(Kind::Blob, &c)).await.is_ok()
    })
    .await;
    let metrics = reader.admin("/metrics").await;
    assert_eq!(
        sample(&metrics, "hoard_tier_reads_total{result=\"hit\"}"),
        3.0,
        "A, MA and C came from the bucket, the second reads from the disk: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "hoard_tier_use_records_total{result=\"created\"}"),
        3.0,
        "one record each for A, MA and C, none for the second reads: {metrics}"
    );
    tier.put_blob(&digest_of(&d), &blob_file(&dir, &d))
        .await
        .unwrap();
    let orphan = digest_of(b"an object no longer there");
    let orphan_key = tier.used_key(Kind::Blob, &orphan);
    raw.put(&orphan_key.as_str().into(), object_store::PutPayload::new())
        .await
        .unwrap();

    let mut before: BTreeSet<String> = objects(&tier, &[&a, &b, &c, &d], &[&ma, &mb], false)
        .into_iter()
        .chain(objects(&tier, &[&a, &c], &[&ma], true))
        .collect();
    before.insert(orphan_key);
    assert_eq!(keys(&seaweed, "fleet").await, before);

    let config = dir.path().join("config.toml");
    std::fs::write(&config, seaweed.config_toml("fleet", dir.path())).unwrap();
    let dry = stdout(&prune(
        &config,
        &["--s3", "--unused-for", UNUSED_FOR, "--dry-run"],
    ));
    assert!(
        dry.contains("would remove 2 objects") && dry.contains("and 1 use records"),
        "{dry}"
    );
    assert_eq!(
        keys(&seaweed, "fleet").await,
        before,
        "a dry run removes nothing"
    );
    let run = stdout(&prune(&config, &["--s3", "--unused-for", UNUSED_FOR]));
    assert!(
        run.contains(&format!("removed blob {}", digest_of(&b)))
            && run.contains(&format!("removed manifest {}", digest_of(&mb)))
            && run.contains("removed 2 objects from s3://hoard/fleet")
            && run.contains("and 1 use records"),
        "{run}"
    );
    let after: BTreeSet<String> = objects(&tier, &[&a, &c, &d], &[&ma], false)
        .into_iter()
        .chain(objects(&tier, &[&a, &c], &[&ma], true))
        .collect();
    assert_eq!(keys(&seaweed, "fleet").await, after);

    // A still serves, from the bucket: the registry is down.
    registry.set_mode(Mode::Down);
    let other = node(&registry, &seaweed, "fleet").await;
    let got = pull(&other, &blob_path(&a)).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), a);
    other.settled().await;

    // Nothing read since: everything goes, records with their objects.
    tokio::time::sleep(PAST_IT).await;
    let run = stdout(&prune(&config, &["--s3", "--unused-for", UNUSED_FOR]));
    assert!(
        run.contains("removed 4 objects") && run.contains("and 3 use records"),
        "{run}"
    );
    assert_eq!(keys(&seaweed, "fleet").await, BTreeSet::new());
}
