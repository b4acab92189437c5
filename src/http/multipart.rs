//! `multipart/byteranges` framing (RFC 9110 §14.6): the boundary, each part's header lines and
//! the closing delimiter around byte spans of one representation, with the exact length of the
//! whole. The bytes of the spans come from elsewhere.

use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

use bytes::Bytes;

/// The frame of a `multipart/byteranges` body for some spans of `len` bytes.
pub(crate) struct Multipart {
    boundary: String,
    content_type: &'static str,
    spans: Vec<Range<u64>>,
    len: u64,
}

impl Multipart {
    /// The frame for `spans` (each within `len`) of a representation of type `content_type`.
    /// The boundary is random, so a body is unlikely to hold it.
    pub(crate) fn new(spans: Vec<Range<u64>>, len: u64, content_type: &'static str) -> Multipart {
        let random = RandomState::new().hash_one(len);
        Multipart {
            boundary: format!("hoard-{random:016x}"),
            content_type,
            spans,
            len,
        }
    }

    /// The response's `Content-Type`.
    pub(crate) fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }

    /// The spans, in the order they are sent.
    pub(crate) fn spans(&self) -> &[Range<u64>] {
        &self.spans
    }

    /// What goes before the bytes of span `i`: its delimiter (after a line break unless it is
    /// the first), `Content-Type` and `Content-Range`, and the blank line.
    pub(crate) fn head(&self, i: usize) -> Bytes {
        let Some(span) = self.spans.get(i) else {
            return Bytes::new();
        };
        let lead = if i == 0 { "" } else { "\r\n" };
        Bytes::from(format!(
            "{lead}--{}\r\nContent-Type: {}\r\nContent-Range: bytes {}-{}/{}\r\n\r\n",
            self.boundary,
            self.content_type,
            span.start,
            span.end.saturating_sub(1),
            self.len
        ))
    }

    /// What ends the body: the closing delimiter.
    pub(crate) fn tail(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }

    /// The length of the whole body: heads, spans and tail.
    pub(crate) fn content_length(&self) -> u64 {
        let heads: u64 = (0..self.spans.len())
            .map(|i| self.head(i).len() as u64)
            .sum();
        let bodies: u64 = self.spans.iter().map(|s| s.end - s.start).sum();
        heads + bodies + self.tail().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_frame_is_as_long_as_it_says() {
        let frame = Multipart::new(vec![0..3, 10..12], 20, "application/octet-stream");
        let blob = b"abcdefghijklmnopqrst";
        let mut body = Vec::new();
        for (i, span) in frame.spans().iter().enumerate() {
            body.extend_from_slice(&frame.head(i));
            body.extend_from_slice(&blob[span.start as usize..span.end as usize]);
        }
        body.extend_from_slice(&frame.tail());
        assert_eq!(body.len() as u64, frame.content_length());
        let boundary = frame.boundary.clone();
        let expected = format!(
            "--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-2/20\r\n\r\nabc\
             \r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 10-11/20\r\n\r\nkl\
             \r\n--{boundary}--\r\n"
        );
        assert_eq!(
            frame.content_type(),
            format!("multipart/byteranges; boundary={boundary}")
        );
        assert_eq!(String::from_utf8_lossy(&body), expected);
    }
}
