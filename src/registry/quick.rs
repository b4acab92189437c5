//! Hits answered whole from memory (`cache.memory`), before and without the rest of a request's
//! path: a blob or a manifest by digest whose bytes memory holds, a blob's `HEAD`, and a tag
//! within its TTL whose record (and, for a `GET`, manifest) memory holds. Every listener asks
//! here first: hyper's connections in their service, and an HTTP/1.1 registry connection with
//! the head it parsed itself (`h1.rs`), which then sends the answer without hyper.
//!
//! An answer here is the one the full path would give: the same response makers (`blobs.rs`,
//! `manifests.rs`, `tags.rs`), the same use marks, the same log line. Whatever could make the
//! full path answer otherwise declines, and the request takes the full path:
//! - the request asks for part of an object, or conditionally (`Range`, `If-*`);
//! - its answer depends on who asks (`access.grants`, `cache.auth_on_hit`, a mirror login or
//!   allow-list that refuses it) or on a fleet peer;
//! - memory holds no copy of what it asks for, or the tag is not fresh.

use std::net::IpAddr;

use bytes::Bytes;
use http::{Request, Response};

use super::answered::Answered;
use super::target::Target;
use crate::access::limits::Busy;
use crate::config::AuthOnHit;
use crate::hoard::Hoard;
use crate::http::CacheStatus;
use crate::http::plain_get::PlainGet;
use crate::oci::{Reference, Route};
use crate::telemetry::access_log::Unsent;
use crate::tier::Kind;

/// A plain `GET` or `HEAD` from a client, as far as an answer from memory needs it.
#[derive(Debug)]
pub(crate) struct Ask<'a> {
    /// The request.
    pub get: PlainGet<'a>,
    /// The client's address.
    pub client: IpAddr,
}

impl<'a> Ask<'a> {
    /// `request` from `client` as an [`Ask`]; `None` when it is not a `GET` or `HEAD` that
    /// memory could answer whole.
    pub(crate) fn of<B>(request: &'a Request<B>, client: IpAddr) -> Option<Ask<'a>> {
        let get = PlainGet::of(request)?;
        Some(Ask { get, client })
    }
}

/// The answer from memory to `ask` for `path` (the path as `target` is to get it), or `None`
/// when the full path must answer (see the module docs).
pub(crate) fn answer(
    target: &Target,
    path: &str,
    ask: &Ask<'_>,
    hoard: &Hoard,
) -> Option<Answered<Bytes>> {
    let (user, lent) = {
        let config = hoard.config();
        let open = config.access.grants.is_empty() && config.cache.auth_on_hit == AuthOnHit::None;
        if !open || target.from_peer {
            return None;
        }
        target.borrower(&config)
    };
    let store = &hoard.store;
    let response = match Route::parse(path) {
        Route::Blob { digest, .. } if ask.get.head => {
            let len = store.blob_length(&digest)?;
            super::blobs::whole(&digest, len, Bytes::new(), CacheStatus::Hit)
        }
        Route::Blob { digest, .. } => {
            let data = store.blob_in_memory(&digest)?;
            super::bucket::used(hoard, Kind::Blob, &digest);
            let len = data.len() as u64;
            super::blobs::whole(&digest, len, data, CacheStatus::Hit)
        }
        Route::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => {
            let manifest = store.manifest_in_memory(&digest)?;
            if !ask.get.head {
                super::bucket::used(hoard, Kind::Manifest, &digest);
            }
            super::manifests::manifest_answer(&manifest, &digest, ask.get.head, CacheStatus::Hit)
        }
        Route::Manifest {
            repo,
            reference: Reference::Tag(tag),
        } => {
            let entries = store.tag_in_memory(&target.key, &repo, &tag)?;
            let entry = super::tags::pick(entries, ask.get.accept.iter().copied())?;
            let stored = match ask.get.head {
                true => None,
                false => Some(store.manifest_in_memory(&entry.digest)?),
            };
            let named = (&target.key, repo.as_str(), tag.as_str());
            super::tags::fresh_hit(hoard, named, &entry, ask.get.head, stored.as_ref())?
        }
        _ => return None,
    };
    Some(Answered {
        response,
        host: target.authority().to_owned(),
        path: None,
        user,
        lent,
    })
}

/// The quick path's answers from memory, for the requests a connection parsed itself (`h1.rs`,
/// `h2/`), ready to send.
pub(super) trait Quick {
    /// The answer to `ask`, ready to send; `None` when the connection's hyper server is to answer it.
    fn answer(&self, ask: &Ask<'_>) -> Option<Sending>;
}

/// A quick answer being sent: the response, its log line, and the mark that the connection has
/// a request in flight.
pub(super) struct Sending {
    pub response: Response<Bytes>,
    pub line: Unsent,
    pub busy: Busy,
}
