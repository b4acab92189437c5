//! HTTP vocabulary shared by every listener and the upstream client: the body types, hoard-made
//! responses, hop-by-hop and digest headers, Basic credentials, percent-encoded query values,
//! the cache status a response carries, `multipart/byteranges` framing, the idle timeout for
//! client connections, replaying bytes read ahead, h2 write batching, a plain `GET` on the
//! wire of HTTP/1.1 (`plain_get.rs`), and HPACK, h2's header compression (`hpack/`).

mod basic;
mod body;
mod cache_status;
mod channel;
mod headers;
pub mod hpack;
pub(crate) mod idle;
mod multipart;
pub mod plain_get;
mod query;
pub(crate) mod replay;
mod response;
pub(crate) mod write_batch;

pub use basic::{basic_credentials, basic_header};
pub(crate) use body::{Body, BoxError, empty_body, full_body};
pub(crate) use cache_status::CacheStatus;
pub(crate) use channel::{ChannelBody, Chunk, Piece};
pub(crate) use headers::{
    API_VERSION, DOCKER_CONTENT_DIGEST, insert_digest_headers, strip_hop_by_hop, upstream_headers,
};
pub(crate) use multipart::Multipart;
pub(crate) use query::percent_encode;
pub(crate) use response::{
    ErrorReason, error, head_too_large, internal, making_room, pass_through,
};
