//! Image references as operators type them (`alpine`, `gcr.io/p/app:1`, `localhost:5000/x`,
//! `host/repo@sha256:…`), resolved as docker resolves them, and checked before any of it is
//! used in a URL or a path.

use std::fmt;
use std::str::FromStr;

pub use crate::oci::registry_key;
use crate::oci::{DOCKER_HUB, Digest, Reference, names_a_registry, valid_repository, valid_tag};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, lowercase, with `:port` unless the port is 443: the same key as the
    /// store's tag folders.
    pub registry: String,
    /// The repository path, e.g. `library/alpine`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// The digest; when both are given, the digest is what is pulled.
    pub digest: Option<Digest>,
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an image reference: {reason}")]
pub struct RefError {
    input: String,
    reason: &'static str,
}

impl ImageRef {
    /// Parses `[registry[:port]/]repository[:tag][@digest]`.
    pub fn parse(input: &str) -> Result<ImageRef, RefError> {
        let fail = |reason| RefError {
            input: input.to_owned(),
            reason,
        };
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(Digest::parse(digest).ok_or_else(|| {
                    fail("a digest is sha256: and 64 lowercase hex digits (or sha512: and 128)")
                })?),
            ),
            None => (input, None),
        };
        // A tag follows a ':' after the last '/'; a ':' before it belongs to a registry port.
        let last_component = name.rfind('/').map_or(0, |slash| slash + 1);
        let (name, tag) = match name[last_component..].rfind(':') {
            Some(colon) => {
                let colon = last_component + colon;
                (&name[..colon], Some(&name[colon + 1..]))
            }
            None => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if names_a_registry(first) => {
                let registry = registry_key(first)
                    .ok_or_else(|| fail("the registry is not a host name with an optional port"))?;
                (registry, rest)
            }
            _ => (DOCKER_HUB.to_owned(), name),
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        if !valid_repository(&repository) {
            return Err(fail(
                "repository names are lowercase letters, digits and separators (. _ __ -), \
                 in components joined by /",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) if !valid_tag(tag) => {
                return Err(fail(
                    "a tag is up to 128 letters, digits, _ . and -, not starting with . or -",
                ));
            }
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub(crate) fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => Reference::Digest(digest.clone()),
            (None, Some(tag)) => Reference::Tag(tag.clone()),
            (None, None) => Reference::Tag("latest".to_owned()),
        }
    }
}

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(text: &str) -> Result<ImageRef, RefError> {
        ImageRef::parse(text)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A dotless host on port 443 ("myhost:443/x") prints its port: without it the text
        // would name a Docker Hub repository when parsed again (found by fuzz/reference).
        let registry = &self.registry;
        if registry.contains(['.', ':']) || registry == "localhost" {
            write!(f, "{registry}/{}", self.repository)?;
        } else {
            write!(f, "{registry}:443/{}", self.repository)?;
        }
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parsed(text: &str) -> String {
        ImageRef::parse(text).map_or_else(|e| format!("error: {e}"), |r| r.to_string())
    }

    #[test]
    fn dotless_hosts_on_443_print_back_to_themselves() {
        for text in ["10:443/x/y", "myhost:443/repo:1"] {
            let printed = parsed(text);
            assert_eq!(parsed(&printed), printed, "{text}");
            assert!(
                printed.starts_with(text.split('/').next().unwrap_or_default()),
                "{printed}"
            );
        }
    }

    #[test]
    fn short_names_resolve_to_docker_hub() {
        assert_eq!(
            parsed("alpine"),
            "registry-1.docker.io/library/alpine:latest"
        );
        assert_eq!(parsed("user/app:1"), "registry-1.docker.io/user/app:1");
        assert_eq!(
            parsed("docker.io/alpine:3.20"),
            "registry-1.docker.io/library/alpine:3.20"
        );
        assert_eq!(
            parsed("index.docker.io/user/app"),
            "registry-1.docker.io/user/app:latest"
        );
    }

    #[test]
    fn registries_keep_their_ports_except_443() {
        assert_eq!(parsed("gcr.io/p/i:tag"), "gcr.io/p/i:tag");
        assert_eq!(parsed("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(parsed("localhost/x"), "localhost/x:latest");
        assert_eq!(parsed("GCR.io:443/p/i"), "gcr.io/p/i:latest");
        assert_eq!(parsed("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
    }

    #[test]
    fn digests_win_over_tags() {
        let by_digest = ImageRef::parse(&format!("host.test/repo@sha256:{HEX}"));
        assert_eq!(
            by_digest.as_ref().map(ImageRef::reference).ok(),
            Digest::parse(&format!("sha256:{HEX}")).map(Reference::Digest)
        );
        assert_eq!(by_digest.map(|r| r.tag).ok(), Some(None));
        let both = ImageRef::parse(&format!("host.test/repo:v1@sha256:{HEX}"));
        assert_eq!(
            both.as_ref().map(ImageRef::reference).ok(),
            Digest::parse(&format!("sha256:{HEX}")).map(Reference::Digest)
        );
        assert_eq!(both.map(|r| r.tag).ok(), Some(Some("v1".to_owned())));
    }

    #[test]
    fn invalid_references_are_refused() {
        for bad in [
            "",
            "Alpine",
            "gcr.io/",
            "gcr.io/p/../x",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:abc",
            &format!("alpine@md5:{HEX}"),
            "host:99999/x",
            "host:0/x",
            "ho_st.io/x",
            "a//b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(
            parsed("Alpine").contains("lowercase"),
            "{}",
            parsed("Alpine")
        );
    }
}
