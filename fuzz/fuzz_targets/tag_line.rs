//! Text hoard reads back from disk or from an upstream: a tag file line
//! (`store::parse_tag_line`), an origins file line (`store::parse_origin_line`) and a `Location`
//! header resolved against the request's URI (`upstream::join_location`).
#![no_main]

use hoard::oci::{Digest, valid_repository};
use hoard::store::{parse_origin_line, parse_tag_line};
use hoard::upstream::join_location;
use http::Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(entry) = parse_tag_line(text) {
        assert_eq!(
            Digest::parse(&entry.digest.to_string()).as_ref(),
            Some(&entry.digest)
        );
        assert!(!entry.media_type.contains(' '), "{text:?}: {entry:?}");
    }
    if let Some(origin) = parse_origin_line(text) {
        let (host, repo) = (&origin.host, &origin.repository);
        assert!(valid_repository(repo), "{text:?}: repository {repo:?}");
        assert!(
            !host.is_empty() && !host.contains([' ', '/', '\n']),
            "{text:?}: host {host:?}"
        );
        assert_eq!(
            origin.line(),
            text,
            "nothing dropped or rewritten"
        );
    }
    let base = Uri::from_static("https://registry.example:5000/v2/library/alpine/blobs/x?y=1");
    if let Some(uri) = join_location(&base, text) {
        assert!(uri.authority().is_some(), "{text:?} -> {uri}");
        assert!(
            matches!(uri.scheme_str(), Some("https" | "http")),
            "{text:?} -> {uri}"
        );
    }
});
