//! What `cache.pin` keeps from eviction: the images whose tags match a pin pattern (from the
//! config, or from the `pins` file that `hoard cache pin` writes in the cache folder). A tag keeps
//! the manifests its tag file points at, an index the manifests it lists, a manifest its config
//! and layers. Worked out from the files on disk at each reconcile, on the blocking pool, so a
//! pin or an image pulled since applies from the next reconcile on.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::key::Key;
use super::layout::{entry_path, parse_tag_line, split_manifest_file};
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

/// Every stored entry that an image matching one of `patterns` is made of (entries its
/// manifests name but the store lacks included: they are kept once they arrive).
pub(super) fn kept_keys(root: &Path, patterns: &[RepoPattern]) -> HashSet<Key> {
    let mut kept = HashSet::new();
    if patterns.is_empty() {
        return kept;
    }
    let Ok(hosts) = std::fs::read_dir(root.join("tags")) else {
        return kept;
    };
    for host in hosts.flatten() {
        if let Some(name) = host.file_name().to_str() {
            let at = Place {
                root,
                patterns,
                host: name,
            };
            at.repositories(&host.path(), "", &mut kept);
        }
    }
    kept
}

/// Where [`kept_keys`] looks: one registry's tag folder.
struct Place<'a> {
    root: &'a Path,
    patterns: &'a [RepoPattern],
    host: &'a str,
}

impl Place<'_> {
    /// Walks the folder of repository `repo` (`""` at the registry's top): `_tags` holds its
    /// tags, every other folder a deeper repository.
    fn repositories(&self, dir: &Path, repo: &str, kept: &mut HashSet<Key>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let (Some(name), Ok(kind)) = (
                entry.file_name().to_str().map(str::to_owned),
                entry.file_type(),
            ) else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            if name == "_tags" && !repo.is_empty() {
                self.tags(&entry.path(), repo, kept);
            } else if repo.is_empty() {
                self.repositories(&entry.path(), &name, kept);
            } else {
                self.repositories(&entry.path(), &format!("{repo}/{name}"), kept);
            }
        }
    }

    /// Keeps the images of the tags of `repo` that a pattern matches.
    fn tags(&self, dir: &Path, repo: &str, kept: &mut HashSet<Key>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(tag) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !self
                .patterns
                .iter()
                .any(|p| p.matches_tag(self.host, repo, &tag))
            {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines().filter_map(parse_tag_line) {
                keep_manifest(self.root, line.digest, kept);
            }
        }
    }
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
