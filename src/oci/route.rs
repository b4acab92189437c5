//! Which registry call a request is, and the repository names, tags and digests in it. Everything
//! that becomes a cache key passes through these parsers first.

use super::Digest;

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
    /// `/v2/<name>/referrers/<digest>`: the artifacts that name a manifest (signatures, SBOMs).
    Referrers { repo: String, subject: Digest },
    /// Anything else: tag lists, catalog, uploads: forwarded.
    Other,
    /// A blob or manifest path that is not valid: answered 400 with the reason.
    Invalid(&'static str),
}

impl Route {
    /// The repository the call names, if it names one.
    pub fn repo(&self) -> Option<&str> {
        match self {
            Route::Blob { repo, .. }
            | Route::Manifest { repo, .. }
            | Route::Referrers { repo, .. } => Some(repo),
            Route::Ping | Route::Other | Route::Invalid(_) => None,
        }
    }

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
        if let Some((repo, subject)) = rest.rsplit_once("/referrers/") {
            if !valid_repository(repo) {
                return Route::Invalid("invalid repository name");
            }
            return match Digest::parse(subject) {
                Some(subject) => Route::Referrers {
                    repo: repo.to_owned(),
                    subject,
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

#[cfg(test)]
mod tests {
    use super::*;
    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
}
