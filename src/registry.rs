//! The OCI distribution API as hoard sees it: which call a request is, and the digests, repository
//! names and tags in it. Nothing here touches the network or the disk; everything that becomes a
//! cache key passes through these parsers first.

use std::fmt;

use sha2::Digest as _;

/// A content digest: `sha256:` + 64 lowercase hex, or `sha512:` + 128 lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// The hash functions a digest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name used in digests and store paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// Parses a digest, accepting only the canonical form (so it is safe as a file name).
    pub fn parse(text: &str) -> Option<Digest> {
        let (algorithm, hex) = text.split_once(':')?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return None,
        };
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: const_hex::encode(sha2::Sha256::digest(bytes)),
        }
    }

    /// The hash function.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A hasher for verifying content against this digest.
    pub fn hasher(&self) -> Hasher {
        match self.algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// Incremental hashing of content whose digest is known in advance.
#[derive(Clone, Debug)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// Whether everything fed hashes to `expected`.
    pub fn matches(self, expected: &Digest) -> bool {
        let hex = match self {
            Hasher::Sha256(h) => const_hex::encode(h.finalize()),
            Hasher::Sha512(h) => const_hex::encode(h.finalize()),
        };
        hex == expected.hex
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

/// The registry calls hoard treats specially. Everything else is [`Route::Other`] and forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v2/`: the version check (and the auth challenge).
    Ping,
    /// `/v2/<name>/blobs/<digest>`
    Blob { repo: String, digest: Digest },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { repo: String, reference: Reference },
    /// Anything else: tag lists, catalog, uploads, referrers: forwarded.
    Other,
    /// A blob or manifest path that is not valid: answered 400 with the reason.
    Invalid(&'static str),
}

impl Route {
    /// Classifies a request path (without the query string).
    pub fn parse(path: &str) -> Route {
        if path == "/v2/" || path == "/v2" {
            return Route::Ping;
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::Other;
        };
        // No registry name, digest or tag has these; they only ever try to escape.
        if rest.contains('%') || rest.split('/').any(|s| s == "." || s == "..") {
            return Route::Invalid(
                "dot segments and percent-encoding are not allowed in registry paths",
            );
        }
        if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
            if digest.starts_with("uploads") {
                return Route::Other;
            }
            if !valid_repository(repo) {
                return Route::Invalid("invalid repository name");
            }
            return match Digest::parse(digest) {
                Some(digest) => Route::Blob {
                    repo: repo.to_owned(),
                    digest,
                },
                None => {
                    Route::Invalid("invalid digest: expected sha256:<64 hex> or sha512:<128 hex>")
                }
            };
        }
        if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
            if !valid_repository(repo) {
                return Route::Invalid("invalid repository name");
            }
            let reference = if let Some(digest) = Digest::parse(reference) {
                Reference::Digest(digest)
            } else if valid_tag(reference) {
                Reference::Tag(reference.to_owned())
            } else {
                return Route::Invalid("invalid tag or digest");
            };
            return Route::Manifest {
                repo: repo.to_owned(),
                reference,
            };
        }
        Route::Other
    }
}

/// A repository name as the distribution spec defines it: lowercase path components of
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`. No component can be `.` or `..`.
pub fn valid_repository(name: &str) -> bool {
    name.len() <= 255 && name.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Separators between alphanumeric runs: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    match bytes.split_first() {
        Some((first, rest)) => {
            word(first)
                && rest.len() <= 127
                && rest.iter().all(|b| word(b) || *b == b'.' || *b == b'-')
        }
        None => false,
    }
}

/// Media types of manifests, used when the upstream gives none.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Whether a client's `Accept` header values admit `media_type`. No `Accept` at all admits
/// anything, as does `*/*`; parameters such as `;q=0.5` are ignored.
pub fn accepts<'a>(accept: impl Iterator<Item = &'a str>, media_type: &str) -> bool {
    let mut any = false;
    for value in accept {
        for item in value.split(',') {
            let item = item.split(';').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            any = true;
            if item == "*/*" || item.eq_ignore_ascii_case(media_type) {
                return true;
            }
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_parse_only_in_canonical_form() {
        assert!(Digest::parse(&format!("sha256:{HEX}")).is_some());
        assert!(Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).is_none());
        assert!(Digest::parse(&format!("sha256:{}", &HEX[1..])).is_none());
        assert!(Digest::parse(&format!("md5:{HEX}")).is_none());
        assert!(Digest::parse("sha256:../../etc/passwd").is_none());
        assert_eq!(Digest::sha256_of(b"").hex(), HEX);
    }

    #[test]
    fn routes_are_classified() {
        assert_eq!(Route::parse("/v2/"), Route::Ping);
        assert!(matches!(
            Route::parse(&format!("/v2/library/alpine/blobs/sha256:{HEX}")),
            Route::Blob { repo, .. } if repo == "library/alpine"
        ));
        assert!(matches!(
            Route::parse("/v2/my-proj/app/manifests/v1.2"),
            Route::Manifest { reference: Reference::Tag(t), .. } if t == "v1.2"
        ));
        assert_eq!(Route::parse("/v2/a/blobs/uploads/1234"), Route::Other);
        assert_eq!(Route::parse("/v2/a/tags/list"), Route::Other);
        assert_eq!(Route::parse("/v2/_catalog"), Route::Other);
        for bad in [
            "/v2/../x/manifests/latest",
            "/v2/a/%2e%2e/manifests/latest",
            "/v2/a/manifests/.hidden",
            "/v2/a/blobs/sha256:1234",
            "/v2/A/blobs/sha256:1234",
            "/v2/a/./b/tags/list",
        ] {
            assert!(matches!(Route::parse(bad), Route::Invalid(_)), "{bad}");
        }
    }

    #[test]
    fn repository_names_follow_the_spec() {
        for ok in ["a", "library/alpine", "a__b", "a-----b", "a.b/c_d", "0"] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", ".a", "a-", "..", "a/./b",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
    }

    #[test]
    fn accept_lists_are_honoured() {
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        assert!(accepts(std::iter::empty(), docker));
        assert!(accepts(["application/json, */*;q=0.1"].into_iter(), docker));
        assert!(accepts([docker].into_iter(), docker));
        assert!(!accepts(
            ["application/vnd.oci.image.index.v1+json"].into_iter(),
            docker
        ));
    }
}
