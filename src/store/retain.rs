//! What `cache.pin` keeps from eviction: the images whose tags match a pin pattern (from the
//! config, or from the `pins` file that `hoard cache pin` writes in the cache folder). A tag keeps
//! its own tag record and the manifests it points at, an index the manifests it lists, a
//! manifest its config and layers. Worked out from the files on disk at each reconcile, on the blocking pool, so a
//! pin or an image pulled since applies from the next reconcile on.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::key::Key;
use super::layout::{entry_path, parse_tag_line, split_manifest_file};
use super::scan::walk_tags;
use crate::oci::{Digest, RepoPattern};

/// The file in the cache folder holding the pins of `hoard cache pin`, one pattern a line.
pub const PINS_FILE: &str = "pins";

/// The patterns of the pins file under `root`; lines that are not a pattern are left out.
pub fn read_pins(root: &Path) -> Vec<RepoPattern> {
    let text = std::fs::read_to_string(root.join(PINS_FILE)).unwrap_or_default();
    text.lines()
        .filter_map(|line| RepoPattern::parse(line.trim()).ok())
        .collect()
}

/// The digests a manifest refers to: any of the fields is left out when absent.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct References {
    #[serde(default)]
    config: Option<Reference>,
    #[serde(default)]
    layers: Vec<Reference>,
    #[serde(default)]
    manifests: Vec<Reference>,
    /// Layers of a Docker schema 1 manifest.
    #[serde(default)]
    fs_layers: Vec<Schema1Layer>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    digest: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Schema1Layer {
    blob_sum: String,
}

/// Every stored entry that an image matching one of `patterns` is made of: its tag record, and
/// the manifests and blobs it names (those the store lacks included: they are kept once they
/// arrive).
pub(crate) fn kept_keys(root: &Path, patterns: &[RepoPattern]) -> HashSet<Key> {
    let mut kept = HashSet::new();
    if patterns.is_empty() {
        return kept;
    }
    walk_tags(root, &mut |file| {
        if !patterns
            .iter()
            .any(|p| p.matches_tag(file.host, file.repo, file.tag))
        {
            return;
        }
        kept.insert(Key::tag(file.host, file.repo, file.tag));
        let text = std::fs::read_to_string(file.entry.path()).unwrap_or_default();
        for line in text.lines().filter_map(parse_tag_line) {
            keep_manifest(root, line.digest, &mut kept);
        }
    });
    kept
}

/// Keeps a manifest and, if it is stored, what it refers to.
fn keep_manifest(root: &Path, digest: Digest, kept: &mut HashSet<Key>) {
    let key = Key::Manifest(digest);
    let Ok(data) = std::fs::read(entry_path(root, &key)) else {
        kept.insert(key);
        return;
    };
    if !kept.insert(key) {
        return;
    }
    let Some((_, start)) = split_manifest_file(&data) else {
        return;
    };
    let refs: References = serde_json::from_slice(&data[start..]).unwrap_or_default();
    let blobs = refs
        .config
        .iter()
        .chain(&refs.layers)
        .map(|r| r.digest.as_str());
    let schema1 = refs.fs_layers.iter().map(|l| l.blob_sum.as_str());
    kept.extend(
        blobs
            .chain(schema1)
            .filter_map(Digest::parse)
            .map(Key::Blob),
    );
    for child in refs
        .manifests
        .iter()
        .filter_map(|r| Digest::parse(&r.digest))
    {
        keep_manifest(root, child, kept);
    }
}
