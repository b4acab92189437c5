//! Retention by use with real programs: a pinned image (its tag record, manifest and blobs)
//! stays in a small cache while skopeo pulls other images through it from the Distribution
//! registry, the others' tag records go least recently used first like their blobs, and the
//! pinned image is served from the cache once the registry is down. See `README.md`.

use std::path::{Path, PathBuf};

use super::harness;
use crate::common::disk_usage;

use harness::{HOARD_PROC, HoardOptions, REGISTRY_HOST, REPOSITORY, Result, fail};

/// The cache's size limit: the pinned image (~1 MiB) and about 1.6 MiB of others.
const MAX_SIZE: u64 = 2600 << 10;

/// `<cache>/<blobs|manifests>/sha256/<xx>/<hex>`
fn entry_path(cache: &Path, kind: &str, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    cache.join(kind).join("sha256").join(&hex[..2]).join(hex)
}

fn tag_path(cache: &Path, tag: &str) -> PathBuf {
    cache
        .join("tags")
        .join(REGISTRY_HOST)
        .join(REPOSITORY)
        .join("_tags")
        .join(tag)
}

#[test]
fn skopeo_pulls_a_pinned_image_from_cache_after_other_images_evicted_each_other() -> Result {
    harness::run(
        "retention",
        &harness::SKOPEO_TOOLS,
        false,
        |scene, tools| {
            let pki = harness::make_pki(scene, tools)?;
            let registry = harness::start_registry(scene, tools, &pki)?;
            let pinned = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
            let mut others = Vec::new();
            for tag in ["v2", "v3", "v4"] {
                others.push(harness::build_and_push(scene, tools, &pki, &registry, tag)?);
            }
            let options = HoardOptions {
                cache_toml: format!(
                    "max_size = \"{MAX_SIZE}B\"\nmin_free = \"0\"\n\
                     pin = [\"{REGISTRY_HOST}/{REPOSITORY}:v1\"]"
                ),
                ..HoardOptions::default()
            };
            let hoard = harness::start_hoard_with(scene, &pki, &registry, &options)?;
            harness::skopeo_copy_via_hoard(scene, tools, &hoard, "v1", "pinned")?
                .check_matches(&pinned)?;
            // Pins are worked out at start (and at each reconcile): restart on the same cache.
            scene.stop(HOARD_PROC)?;
            let hoard = harness::start_hoard_with(scene, &pki, &registry, &options)?;
            for other in &others {
                harness::skopeo_copy_via_hoard(scene, tools, &hoard, &other.tag, &other.tag)?
                    .check_matches(other)?;
            }

            let cache = scene.path(&format!("{HOARD_PROC}/cache"));
            let stored: u64 = ["blobs", "manifests", "tags"]
                .iter()
                .map(|d| disk_usage(&cache.join(d)))
                .sum();
            eprintln!("e2e: {stored} bytes stored, max_size {MAX_SIZE}");
            if stored > MAX_SIZE {
                return fail(format!("{stored} bytes stored, over max_size {MAX_SIZE}"));
            }
            let mut kept = vec![
                tag_path(&cache, "v1"),
                entry_path(&cache, "manifests", &pinned.manifest_digest),
                entry_path(&cache, "blobs", &pinned.config_digest),
            ];
            kept.extend(
                pinned
                    .layer_digests
                    .iter()
                    .map(|d| entry_path(&cache, "blobs", d)),
            );
            if let Some(missing) = kept.iter().find(|p| !p.exists()) {
                return fail(format!("pinned {} was evicted", missing.display()));
            }
            // The oldest unpinned image went, its tag record first.
            let oldest = &others[0];
            for gone in [
                tag_path(&cache, &oldest.tag),
                entry_path(&cache, "manifests", &oldest.manifest_digest),
            ] {
                if gone.exists() {
                    return fail(format!("{} was not evicted", gone.display()));
                }
            }

            registry.stop_and_let_tags_expire(scene)?;
            let again = harness::skopeo_copy_via_hoard(scene, tools, &hoard, "v1", "again")?;
            again.check_matches(&pinned)
        },
    )
}
