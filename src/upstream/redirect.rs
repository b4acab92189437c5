//! Redirects: where a `Location` points, and whether a hop stays at the registry's origin
//! (only then may hoard's credentials go with it).

use http::Uri;

/// Whether a response of [`Upstream::send_following`] came from the host it was sent to (`true`)
/// or from a redirect hop elsewhere (`false`). Only the origin's challenges may be answered with
/// hoard's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(pub bool);

/// Same scheme and authority, and that scheme is `https`: the only hops that may see the
/// `Authorization` meant for `origin`.
pub(super) fn same_origin(origin: &Uri, next: &Uri) -> bool {
    next.scheme() == Some(&http::uri::Scheme::HTTPS)
        && next.scheme() == origin.scheme()
        && next.authority() == origin.authority()
}

/// Resolves a `Location` header against the URI it came from: absolute, scheme-relative,
/// path-absolute or relative.
pub fn join_location(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?;
    let text = if location.starts_with("https://") || location.starts_with("http://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = text.parse().ok()?;
    uri.authority()?;
    Some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "https://gcr.io/v2/p/i/blobs/sha256:00?x=1"
            .parse()
            .unwrap_or_default();
        let join = |l| join_location(&base, l).map(|u| u.to_string());
        assert_eq!(
            join("https://cdn.example/a?sig=1").as_deref(),
            Some("https://cdn.example/a?sig=1")
        );
        assert_eq!(
            join("//cdn.example/a").as_deref(),
            Some("https://cdn.example/a")
        );
        assert_eq!(
            join("/storage/x").as_deref(),
            Some("https://gcr.io/storage/x")
        );
        assert_eq!(
            join("other").as_deref(),
            Some("https://gcr.io/v2/p/i/blobs/other")
        );
        assert_eq!(join("https://"), None);
    }

    #[test]
    fn only_https_to_the_same_authority_is_the_origin() {
        let origin: Uri = "https://gcr.io/v2/p/i/blobs/sha256:00"
            .parse()
            .unwrap_or_default();
        let same = |text: &str| same_origin(&origin, &text.parse().unwrap_or_default());
        assert!(same("https://gcr.io/storage/x?sig=1"));
        assert!(same("https://GCR.io/x"));
        assert!(!same("http://gcr.io/storage/x"), "a downgrade to http");
        assert!(!same("https://gcr.io:8443/x"));
        assert!(!same("https://storage.googleapis.com/x"));
    }
}
