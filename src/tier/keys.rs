//! Where objects sit in the bucket: `<prefix>/blobs/<algorithm>/<first two hex>/<hex>` and the
//! same under `manifests/`, as the local store lays out its files (`store/layout.rs`), so an
//! operator finds a digest in either place the same way. An object's use record (`uses.rs`) is the
//! same path under `<prefix>/used/`.

use crate::oci::Digest;

/// Which half of the layout an object is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Under `blobs/`.
    Blob,
    /// Under `manifests/`.
    Manifest,
}

impl Kind {
    /// The folder of this kind, and its name in output lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        }
    }
}

/// The folder of `kind`: `<prefix>/blobs` (or `blobs` with no prefix).
pub(super) fn folder(prefix: &str, kind: Kind) -> String {
    if prefix.is_empty() {
        kind.as_str().to_owned()
    } else {
        format!("{prefix}/{}", kind.as_str())
    }
}

/// The folder of the use records of `kind`: `<prefix>/used/blobs` (or `used/blobs`).
pub(super) fn used_folder(prefix: &str, kind: Kind) -> String {
    if prefix.is_empty() {
        format!("used/{}", kind.as_str())
    } else {
        format!("{prefix}/used/{}", kind.as_str())
    }
}

/// The key of `digest`'s object of `kind`.
pub(super) fn key(prefix: &str, kind: Kind, digest: &Digest) -> String {
    in_folder(&folder(prefix, kind), digest)
}

/// The key of the use record of `digest`'s object of `kind`.
pub(super) fn used_key(prefix: &str, kind: Kind, digest: &Digest) -> String {
    in_folder(&used_folder(prefix, kind), digest)
}

fn in_folder(folder: &str, digest: &Digest) -> String {
    let hex = digest.hex();
    format!(
        "{folder}/{}/{}/{hex}",
        digest.algorithm().as_str(),
        &hex[..2]
    )
}

/// The key of a tag's record: `<prefix>/tags/<registry>/<repository>/<tag>`. Registry keys,
/// repository names and tags are checked names (no `..`, no empty components) before they get
/// here.
pub(super) fn tag_key(prefix: &str, registry: &str, repo: &str, tag: &str) -> String {
    let folder = if prefix.is_empty() {
        "tags".to_owned()
    } else {
        format!("{prefix}/tags")
    };
    format!("{folder}/{registry}/{repo}/{tag}")
}

/// The digest `key` names in `folder` (the objects of a kind, or their use records); `None` for a
/// key that is not in the layout (something else under the prefix: never listed, never pruned).
pub(super) fn parse_in(folder: &str, key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(folder)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (algorithm, fan, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || hex.get(..2) != Some(fan) {
        return None;
    }
    Digest::parse(&format!("{algorithm}:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fan_out_by_the_first_two_hex_and_parse_back() {
        let digest = Digest::sha256_of(b"hello");
        let hex = digest.hex().to_owned();
        let blob = key("", Kind::Blob, &digest);
        assert_eq!(blob, format!("blobs/sha256/{}/{hex}", &hex[..2]));
        let manifest = key("fleet/a", Kind::Manifest, &digest);
        assert_eq!(
            manifest,
            format!("fleet/a/manifests/sha256/{}/{hex}", &hex[..2])
        );
        assert_eq!(
            parse_in(&folder("", Kind::Blob), &blob),
            Some(digest.clone())
        );
        assert_eq!(
            parse_in(&folder("fleet/a", Kind::Manifest), &manifest),
            Some(digest.clone())
        );
        let used = used_key("fleet/a", Kind::Blob, &digest);
        assert_eq!(
            used,
            format!("fleet/a/used/blobs/sha256/{}/{hex}", &hex[..2])
        );
        assert_eq!(
            parse_in(&used_folder("fleet/a", Kind::Blob), &used),
            Some(digest.clone())
        );
        assert_eq!(parse_in(&folder("fleet/a", Kind::Blob), &used), None);
        for foreign in [
            manifest.as_str(),
            "blobs/sha256/00/x",
            "blobs/sha256/ab",
            "blobsx/sha256/2c/2cf24d",
            &format!("blobs/sha256/00/{hex}"),
            &format!("blobs/sha256/{}/{hex}/more", &hex[..2]),
            &format!("blobs/md5/{}/{hex}", &hex[..2]),
        ] {
            assert_eq!(
                parse_in(&folder("", Kind::Blob), foreign),
                None,
                "{foreign}"
            );
        }
    }
}
