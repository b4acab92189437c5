//! The parts of image manifests and indexes the operator commands follow: the blobs an image
//! is made of, the platform manifests an index lists, and their sizes.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::oci::Digest;

/// OCI image index.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list.
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest, schema 2.
pub(crate) const DOCKER_MANIFEST: &str = crate::oci::DOCKER_MANIFEST_V2;

/// The manifest media types hoard's operator commands ask for, indexes first.
pub(crate) const ACCEPT: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// An image manifest, an index, or a schema 1 manifest: whichever fields are present.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Entries of an index or manifest list.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Layers of a Docker schema 1 manifest.
    #[serde(default)]
    pub fs_layers: Vec<FsLayer>,
}

/// A reference to content: its digest and size, and for index entries, the platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct DescriptorPlatform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A schema 1 layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsLayer {
    pub blob_sum: String,
}

impl Manifest {
    /// Parses manifest JSON; `None` if it is not a JSON object of the expected shape.
    pub fn parse(bytes: &[u8]) -> Option<Manifest> {
        serde_json::from_slice(bytes).ok()
    }

    /// Whether this is an index or manifest list, judged by the stored or served media type
    /// and by the body.
    pub(crate) fn is_index(&self, media_type: &str) -> bool {
        !self.manifests.is_empty()
            || [media_type, self.media_type.as_deref().unwrap_or("")]
                .iter()
                .any(|t| *t == OCI_INDEX || *t == DOCKER_LIST)
    }

    /// The config and layers, in order; entries whose digest does not parse are left out.
    pub(crate) fn blobs(&self) -> impl Iterator<Item = (Digest, u64)> + '_ {
        let descriptors = self.config.iter().chain(&self.layers);
        let schema1 = self.fs_layers.iter().map(|l| (l.blob_sum.as_str(), 0));
        descriptors
            .map(|d| (d.digest.as_str(), d.size))
            .chain(schema1)
            .filter_map(|(digest, size)| Some((Digest::parse(digest)?, size)))
    }

    /// The image's size: config plus layers, as the manifest states them.
    pub(crate) fn image_size(&self) -> u64 {
        self.blobs().map(|(_, size)| size).sum()
    }

    /// The manifests an index lists; entries whose digest does not parse are left out.
    pub(crate) fn children(&self) -> impl Iterator<Item = Digest> + '_ {
        self.manifests
            .iter()
            .filter_map(|d| Digest::parse(&d.digest))
    }

    /// The index entry for `platform`: os and architecture must match, and the variant too when
    /// one is asked for.
    pub(crate) fn entry_for(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == platform.os
                    && p.architecture == platform.architecture
                    && (platform.variant.is_none() || p.variant == platform.variant)
            })
        })
    }

    /// The platforms an index lists, for an error message.
    pub(crate) fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| {
                let platform = Platform {
                    os: p.os.clone(),
                    architecture: p.architecture.clone(),
                    variant: p.variant.clone(),
                };
                platform.to_string()
            })
            .collect()
    }
}

/// A platform as `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Platform {
        Platform {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Platform, String> {
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let parts: Vec<&str> = text.split('/').collect();
        match parts[..] {
            [os, architecture] | [os, architecture, _] if parts.iter().all(|p| word(p)) => {
                Ok(Platform {
                    os: os.to_owned(),
                    architecture: architecture.to_owned(),
                    variant: parts.get(2).map(|v| (*v).to_owned()),
                })
            }
            _ => Err(format!(
                "{text:?} is not a platform like linux/amd64 or linux/arm64/v8"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
        "manifests":[
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,
           "digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",
           "platform":{"os":"linux","architecture":"amd64"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,
           "digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222",
           "platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":10,
           "digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333",
           "platform":{"os":"unknown","architecture":"unknown"}}]}"#;

    fn platform(text: &str) -> Platform {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn index_entries_are_picked_by_platform() {
        let index = Manifest::parse(INDEX.as_bytes()).unwrap_or_default();
        assert!(index.is_index(""));
        let pick = |p: &str| index.entry_for(&platform(p)).map(|d| &d.digest[7..9]);
        assert_eq!(pick("linux/amd64"), Some("11"));
        assert_eq!(pick("linux/arm64"), Some("22"));
        assert_eq!(pick("linux/arm64/v8"), Some("22"));
        assert_eq!(pick("linux/arm64/v7"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(index.children().count(), 3);
        assert_eq!(index.platforms()[1], "linux/arm64/v8");
    }

    #[test]
    fn image_size_is_config_plus_layers() {
        let image = Manifest::parse(
            br#"{"schemaVersion":2,"config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":5},
            "layers":[{"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":100},
                      {"digest":"not a digest","size":1000}]}"#,
        )
        .unwrap_or_default();
        assert!(!image.is_index(DOCKER_MANIFEST));
        assert_eq!(image.blobs().count(), 2);
        assert_eq!(image.image_size(), 105);
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(platform("linux/arm64/v8").to_string(), "linux/arm64/v8");
        for bad in [
            "linux",
            "linux/",
            "linux/amd64/v8/x",
            "Linux/amd64",
            "linux/../x",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }
}
