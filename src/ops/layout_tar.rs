//! The OCI image-layout tar that `hoard cache export` writes and `hoard cache import` reads: an
//! `oci-layout` file, an `index.json` whose entries are the images, each annotated with its full
//! reference, and every manifest and blob once under `blobs/<algorithm>/<hex>`. It is what
//! `skopeo copy oci-archive:FILE:REF` reads (it matches `org.opencontainers.image.ref.name`) and
//! what `ctr image import` reads (it names images by `io.containerd.image.name`).

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::oci::{DOCKER_HUB, Digest};
use crate::ops::imageref::ImageRef;

/// The `oci-layout` file's name and content.
pub(crate) const OCI_LAYOUT: &str = "oci-layout";
pub(crate) const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The index of the images.
pub(crate) const INDEX_JSON: &str = "index.json";

/// The annotation the OCI image layout names images by (skopeo's `oci-archive:FILE:REF`).
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd names imported images by.
pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// `index.json`: an OCI image index of the images.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LayoutIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<LayoutEntry>,
}

/// One image of `index.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LayoutEntry {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The full name of an image as containerd and docker write it: `docker.io/library/alpine:3.20`
/// for Docker Hub (hoard's key for it is `registry-1.docker.io`), `host[:port]/repo:tag` else;
/// `@digest` when there is no tag.
pub(crate) fn full_name(image: &ImageRef, digest: &Digest) -> String {
    let registry = match image.registry.as_str() {
        DOCKER_HUB => "docker.io",
        other => other,
    };
    match &image.tag {
        Some(tag) => format!("{registry}/{}:{tag}", image.repository),
        None => format!("{registry}/{}@{digest}", image.repository),
    }
}

/// The entry that names an image in `index.json`.
pub(crate) fn entry_for(name: &str, media_type: &str, digest: &Digest, size: u64) -> LayoutEntry {
    let annotations = [REF_NAME, CONTAINERD_NAME]
        .into_iter()
        .map(|key| (key.to_owned(), name.to_owned()))
        .collect();
    LayoutEntry {
        media_type: Some(media_type.to_owned()),
        digest: digest.to_string(),
        size,
        annotations,
    }
}

/// The image an entry names: containerd's annotation, else the OCI one when it is a full
/// reference (a bare tag, as `skopeo copy … oci-archive:FILE:v1` writes, names no registry).
pub(crate) fn named_image(entry: &LayoutEntry) -> Option<ImageRef> {
    [CONTAINERD_NAME, REF_NAME]
        .iter()
        .filter_map(|key| entry.annotations.get(*key))
        .filter(|name| name.contains('/'))
        .find_map(|name| ImageRef::parse(name).ok())
}

/// What an entry of the tar is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryName {
    Layout,
    Index,
    Blob(Digest),
    /// A folder of the layout, or a file the layout does not define: skipped.
    Other,
}

/// Parses an entry's path; `None` for a name that climbs out (`..`) or starts at the root.
pub(crate) fn entry_name(path: &Path) -> Option<EntryName> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(match parts[..] {
        [OCI_LAYOUT] => EntryName::Layout,
        [INDEX_JSON] => EntryName::Index,
        ["blobs", algorithm, hex] => match Digest::parse(&format!("{algorithm}:{hex}")) {
            Some(digest) => EntryName::Blob(digest),
            None => return None,
        },
        _ => EntryName::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_of_entries_are_parsed_and_traversal_refused() {
        let digest = Digest::parse(&format!("sha256:{HEX}"));
        let blob = format!("blobs/sha256/{HEX}");
        assert_eq!(
            entry_name(Path::new(&blob)),
            digest.clone().map(EntryName::Blob)
        );
        assert_eq!(
            entry_name(Path::new(&format!("./{blob}"))),
            digest.map(EntryName::Blob)
        );
        assert_eq!(entry_name(Path::new("index.json")), Some(EntryName::Index));
        assert_eq!(
            entry_name(Path::new("blobs/sha256/")),
            Some(EntryName::Other)
        );
        for bad in [
            "../index.json",
            "/etc/passwd",
            "blobs/../../x",
            "blobs/sha256/abc",
            "blobs/md5/0011",
        ] {
            assert_eq!(entry_name(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn images_are_named_as_containerd_names_them_and_read_back() {
        let digest = Digest::sha256_of(b"x");
        let hub = ImageRef::parse("alpine:3.20").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full_name(&hub, &digest), "docker.io/library/alpine:3.20");
        let local = ImageRef::parse("127.0.0.1:5000/team/app:v1").unwrap_or_else(|e| panic!("{e}"));
        let name = full_name(&local, &digest);
        assert_eq!(name, "127.0.0.1:5000/team/app:v1");
        let entry = entry_for(&name, "t", &digest, 1);
        assert_eq!(named_image(&entry), Some(local));
        let bare = LayoutEntry {
            annotations: [(REF_NAME.to_owned(), "v1".to_owned())].into(),
            ..entry
        };
        assert_eq!(named_image(&bare), None);
    }
}
