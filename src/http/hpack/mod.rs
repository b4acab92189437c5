//! HPACK, the header compression of HTTP/2 (RFC 7541), for hoard's own h2 frame layer: a
//! [`Decoder`] that decodes every header block a client sends, keeping the connection's dynamic
//! table in step, into a reusable [`HeaderList`]; and [`encode`] and [`encode_status`], which
//! write fields that touch no dynamic table. Everything a peer sends is bounded: integers, string
//! lengths, the dynamic table (by the size this end advertises) and the decoded list (by the
//! caller's limit).
//!
//! - `decoder.rs`: the block's representations (§6) and the dynamic table's updates.
//! - `table.rs`: the static table and the dynamic table's entries.
//! - `huffman.rs`: the Huffman code (Appendix B).
//! - `list.rs`: the decoded fields.
//! - `encoder.rs`: literal fields without indexing.

mod decoder;
mod encoder;
mod huffman;
mod list;
mod table;
#[cfg(test)]
mod tests;

pub use decoder::Decoder;
pub use encoder::{encode, encode_status};
pub use list::HeaderList;

use std::fmt;

/// Why a header block is not valid HPACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(&'static str);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hpack: {}", self.0)
    }
}

impl std::error::Error for Error {}
