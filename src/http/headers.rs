//! Headers hoard takes off or puts on: hop-by-hop headers (never forwarded) and the digest
//! headers of a registry response.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONNECTION, ETAG, HeaderName, HeaderValue};

use crate::oci::Digest;

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // The framing is redone by hyper on each side.
    headers.remove(http::header::TRANSFER_ENCODING);
}

pub(crate) const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

pub(crate) const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

pub(crate) fn insert_digest_headers(headers: &mut HeaderMap, digest: &Digest) {
    // Named once at compile time: a `&str` name is parsed again on every insert.
    const DIGEST: HeaderName = HeaderName::from_static(DOCKER_CONTENT_DIGEST);
    const VERSION: HeaderName = HeaderName::from_static(API_VERSION.0);
    // Put together by hand: this runs for every hit, and formatting costs more than the rest.
    let (algorithm, hex) = (digest.algorithm().as_str(), digest.hex());
    let mut quoted = String::with_capacity(algorithm.len() + hex.len() + 3);
    for part in ["\"", algorithm, ":", hex, "\""] {
        quoted.push_str(part);
    }
    // One allocation for both values: the digest is the ETag without its quotes.
    let quoted = Bytes::from(quoted);
    let bare = quoted.slice(1..quoted.len() - 1);
    if let Ok(value) = HeaderValue::from_maybe_shared(quoted) {
        headers.insert(ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(bare) {
        headers.insert(DIGEST, value);
    }
    headers.insert(VERSION, HeaderValue::from_static(API_VERSION.1));
}

pub(crate) fn upstream_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    headers
}
