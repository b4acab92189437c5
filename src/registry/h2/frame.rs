//! h2 frames as the front reads and writes them (RFC 9113 §4.1 and §6): the 9-byte head, and
//! the few frames the front writes itself.

/// The connection preface a client opens with (`h1.rs` looks for it too: h2 without TLS).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame head's length.
pub(super) const HEAD_LEN: usize = 9;

/// The largest frame payload: hyper's server never allows more (SETTINGS_MAX_FRAME_SIZE keeps
/// its default), and every client must take this much.
pub(super) const MAX_PAYLOAD: usize = 16_384;

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;

/// `END_STREAM` (DATA, HEADERS); `ACK` (SETTINGS, PING) has the same bit.
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const ACK: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// SETTINGS_HEADER_TABLE_SIZE.
pub(super) const HEADER_TABLE_SIZE: u16 = 0x1;
/// SETTINGS_INITIAL_WINDOW_SIZE.
pub(super) const INITIAL_WINDOW_SIZE: u16 = 0x4;

/// A window's size before any SETTINGS or WINDOW_UPDATE.
pub(super) const DEFAULT_WINDOW: u32 = 65_535;

/// A frame's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    /// The payload's length.
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// The stream, its reserved bit cleared.
    pub stream: u32,
}

impl Head {
    /// The head in the first [`HEAD_LEN`] bytes of `bytes`, when they are there.
    pub(super) fn parse(bytes: &[u8]) -> Option<Head> {
        let b: &[u8; HEAD_LEN] = bytes.get(..HEAD_LEN)?.try_into().ok()?;
        Some(Head {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether `flag` is set.
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The head as bytes (`len` at most [`MAX_PAYLOAD`]).
    fn bytes(&self) -> [u8; HEAD_LEN] {
        let len = u32::try_from(self.len).unwrap_or(u32::MAX).to_be_bytes();
        let stream = self.stream.to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, stream[0], stream[1], stream[2],
            stream[3],
        ]
    }

    /// Appends the head.
    fn write(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.bytes());
    }
}

/// The header block fragment of a HEADERS frame's `payload`, without its padding and priority
/// fields; `None` when the padding is longer than the payload (a PROTOCOL_ERROR).
pub(super) fn fragment<'p>(head: &Head, payload: &'p [u8]) -> Option<&'p [u8]> {
    let mut payload = payload;
    if head.has(PADDED) {
        let (&pad, rest) = payload.split_first()?;
        payload = rest.get(..rest.len().checked_sub(usize::from(pad))?)?;
    }
    if head.has(PRIORITY_FLAG) {
        payload = payload.get(5..)?;
    }
    Some(payload)
}

/// The settings a SETTINGS frame's `payload` carries, as (identifier, value) pairs; `None` when
/// its length is not a multiple of 6 (a FRAME_SIZE_ERROR).
pub(super) fn settings(payload: &[u8]) -> Option<impl Iterator<Item = (u16, u32)> + '_> {
    payload.len().is_multiple_of(6).then(|| {
        payload.chunks_exact(6).map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
    })
}

/// The increment of a WINDOW_UPDATE frame's `payload`; `None` when it is not 4 bytes.
pub(super) fn increment(payload: &[u8]) -> Option<u32> {
    let b: [u8; 4] = payload.try_into().ok()?;
    Some(u32::from_be_bytes(b) & 0x7fff_ffff)
}

/// Appends a header block that `encode` writes as a HEADERS frame on `stream` (and
/// CONTINUATION frames when it needs them), written in place as a rule.
pub(super) fn write_headers_with(
    stream: u32,
    end_stream: bool,
    dst: &mut Vec<u8>,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    let start = dst.len();
    dst.extend_from_slice(&[0; HEAD_LEN]);
    encode(dst);
    let len = dst.len() - start - HEAD_LEN;
    if len > MAX_PAYLOAD {
        let block = dst.split_off(start + HEAD_LEN);
        dst.truncate(start);
        return write_headers(stream, end_stream, &block, dst);
    }
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    let head = Head {
        len,
        kind: HEADERS,
        flags,
        stream,
    };
    dst[start..start + HEAD_LEN].copy_from_slice(&head.bytes());
}

/// Appends `block` as a HEADERS frame on `stream`, and CONTINUATION frames as it needs.
fn write_headers(stream: u32, end_stream: bool, block: &[u8], dst: &mut Vec<u8>) {
    let mut chunks = block.chunks(MAX_PAYLOAD).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    loop {
        let chunk = chunks.next().unwrap_or_default();
        let last = chunks.peek().is_none();
        if last {
            flags |= END_HEADERS;
        }
        Head {
            len: chunk.len(),
            kind,
            flags,
            stream,
        }
        .write(dst);
        dst.extend_from_slice(chunk);
        if last {
            return;
        }
        (kind, flags) = (CONTINUATION, 0);
    }
}

/// Appends `body` as DATA frames on `stream`, the last one ending the stream.
pub(super) fn write_data(stream: u32, body: &[u8], dst: &mut Vec<u8>) {
    let mut chunks = body.chunks(MAX_PAYLOAD).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_STREAM
        } else {
            0
        };
        Head {
            len: chunk.len(),
            kind: DATA,
            flags,
            stream,
        }
        .write(dst);
        dst.extend_from_slice(chunk);
    }
}

/// Appends a WINDOW_UPDATE frame.
pub(super) fn write_window_update(stream: u32, increment: u32, dst: &mut Vec<u8>) {
    let head = Head {
        len: 4,
        kind: WINDOW_UPDATE,
        flags: 0,
        stream,
    };
    head.write(dst);
    dst.extend_from_slice(&increment.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Head {
        Head::parse(bytes).unwrap_or_else(|| panic!("no head in {bytes:?}"))
    }

    #[test]
    fn a_head_reads_back_as_written() {
        let head = Head {
            len: 16_384,
            kind: HEADERS,
            flags: END_HEADERS | END_STREAM,
            stream: 0x7fff_fffd,
        };
        let mut bytes = Vec::new();
        head.write(&mut bytes);
        assert_eq!(bytes, [0, 0x40, 0, 1, 5, 0x7f, 0xff, 0xff, 0xfd]);
        assert_eq!(Head::parse(&bytes), Some(head));
        assert_eq!(Head::parse(&bytes[..8]), None);
    }

    #[test]
    fn a_fragment_is_found_behind_padding_and_priority() {
        let head = |flags| Head {
            len: 0,
            kind: HEADERS,
            flags,
            stream: 1,
        };
        let padded = [2, b'a', b'b', 0, 0];
        assert_eq!(fragment(&head(PADDED), &padded), Some(&b"ab"[..]));
        let both = [1, 0, 0, 0, 3, 16, b'x', 0];
        assert_eq!(
            fragment(&head(PADDED | PRIORITY_FLAG), &both),
            Some(&b"x"[..])
        );
        assert_eq!(fragment(&head(PADDED), &[5, b'a']), None);
        assert_eq!(fragment(&head(PADDED), &[]), None);
        assert_eq!(fragment(&head(PRIORITY_FLAG), &[0, 0]), None);
    }

    #[test]
    fn a_large_block_is_split_into_continuations_and_a_body_into_frames() {
        let mut out = vec![1, 2];
        write_headers_with(3, true, &mut out, |b| b.extend(vec![7; MAX_PAYLOAD + 1]));
        assert_eq!(out[..2], [1, 2]);
        out.drain(..2);
        let first = head(&out);
        assert_eq!(
            (first.len, first.kind, first.flags),
            (MAX_PAYLOAD, HEADERS, END_STREAM)
        );
        let second = head(&out[HEAD_LEN + MAX_PAYLOAD..]);
        assert_eq!(
            (second.len, second.kind, second.flags),
            (1, CONTINUATION, END_HEADERS)
        );
        assert_eq!(out.len(), 2 * HEAD_LEN + MAX_PAYLOAD + 1);

        let mut out = Vec::new();
        write_headers_with(5, false, &mut out, |_| {});
        assert_eq!(head(&out).flags, END_HEADERS);

        let mut out = Vec::new();
        write_data(3, &vec![1; MAX_PAYLOAD * 2], &mut out);
        let first = head(&out);
        let second = head(&out[HEAD_LEN + MAX_PAYLOAD..]);
        assert_eq!((first.flags, second.flags), (0, END_STREAM));
        assert_eq!(out.len(), 2 * (HEAD_LEN + MAX_PAYLOAD));
    }

    #[test]
    fn settings_and_increments_are_read_or_refused() {
        let pairs: Vec<_> = settings(&[0, 4, 0, 1, 0, 0, 0, 5, 0, 0, 0x40, 0])
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(pairs, [(4, 65_536), (5, 16_384)]);
        assert!(settings(&[0; 5]).is_none());
        assert_eq!(increment(&[0x80, 0, 0, 1]), Some(1));
        assert_eq!(increment(&[0, 0, 1]), None);
    }
}
