//! What the client of an h2 connection sends, read frame by frame before hyper sees it: every
//! header block is decoded here (the HPACK table is the connection's, so one decoder must see
//! them all); a request the quick path answers is answered with frames of hoard's own, and
//! everything else is handed on to hyper, a header block re-encoded so that it needs no table.
//!
//! Streams hyper never saw (the ones answered here) stay hidden from it: a later
//! WINDOW_UPDATE, RST_STREAM or PRIORITY on one is dropped, and DATA on one (a client that
//! sends a body after the answer said it needs none) is dropped with its flow-control credit
//! given back. The client's connection send window is shared: see `window.rs`.

use std::io;
use std::net::IpAddr;

use crate::http::hpack::{self, Decoder, HeaderList};
use crate::http::plain_get::PlainGet;
use crate::store::MEMORY_OBJECT_MAX;

use super::super::quick::{Ask, Quick, Sending};
use super::frame::{self, Head};
use super::frame::{
    ACK, CONTINUATION, DATA, DEFAULT_WINDOW, END_HEADERS, END_STREAM, HEAD_LEN, HEADER_TABLE_SIZE,
    HEADERS, INITIAL_WINDOW_SIZE, MAX_PAYLOAD, PREFACE, PRIORITY, RST_STREAM, SETTINGS,
    WINDOW_UPDATE,
};
use super::window::Window;

/// The default HPACK table size (SETTINGS_HEADER_TABLE_SIZE): the most the client's encoder
/// may use (hyper leaves its own setting at the default), and the size hyper's encoder starts
/// with.
const TABLE_SIZE: usize = 4096;

/// Frames of the front's own waiting to be written, past which no more requests are read: a
/// client that asks and does not read is not answered into memory without end.
pub(super) const OURS_MAX: usize = 1 << 20;

/// The streams the client opened.
#[derive(Debug, Default)]
struct Streams {
    /// The highest stream it opened.
    opened: u32,
    /// The highest stream hyper was given.
    hyper: u32,
}

impl Streams {
    /// Whether `stream` is one answered here that hyper would take for one not opened yet.
    fn hidden(&self, stream: u32) -> bool {
        stream > self.hyper && stream <= self.opened
    }
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
}

/// The client's side of an h2 connection, as the front reads it.
pub(super) struct Inbound<Q> {
    quick: Q,
    client: IpAddr,
    /// The largest header block (and decoded header list) taken: hyper refuses a request over
    /// `proxy.max_header_size`; this bounds what is held before it can.
    block_limit: usize,
    /// How much of the preface is still to come.
    preface_left: usize,
    /// The start of a frame that has not arrived whole.
    partial: Vec<u8>,
    block: Option<Block>,
    decoder: Decoder,
    fields: HeaderList,
    streams: Streams,
    window: Window,
    /// SETTINGS_INITIAL_WINDOW_SIZE: each new stream's send window.
    stream_window: u32,
    /// A frame the front does not follow came (one larger than allowed, a malformed preface):
    /// hyper ends the connection for it, so everything is passed on as it is from then on.
    passing: bool,
    /// Requests are all hyper's from now on: it is ending the connection (it sent GOAWAY), or
    /// the client shrank the HPACK table hyper's encoder uses (the next header block the client
    /// gets must then say so, and only hyper's encoder can).
    pub hyper_only: bool,
    /// Bytes for hyper.
    for_hyper: Queue,
    /// Frames of the front's own for the client.
    ours: Queue,
}

impl<Q: Quick> Inbound<Q> {
    /// The client side of a connection from `client`, requests answered by `quick` when it can;
    /// `max_header_size` is `proxy.max_header_size`.
    pub(super) fn new(quick: Q, client: IpAddr, max_header_size: usize) -> Self {
        Inbound {
            quick,
            client,
            block_limit: max_header_size
                .saturating_mul(2)
                .saturating_add(MAX_PAYLOAD),
            preface_left: PREFACE.len(),
            partial: Vec::new(),
            block: None,
            decoder: Decoder::new(TABLE_SIZE),
            fields: HeaderList::new(),
            streams: Streams::default(),
            window: Window::default(),
            stream_window: DEFAULT_WINDOW,
            passing: false,
            hyper_only: false,
            for_hyper: Queue::default(),
            ours: Queue::default(),
        }
    }
}

impl<Q> Inbound<Q> {
    /// The bytes hyper is to read next.
    pub(super) fn for_hyper(&self) -> &[u8] {
        self.for_hyper.pending()
    }

    /// Notes that hyper read `n` of [`Inbound::for_hyper`].
    pub(super) fn gave(&mut self, n: usize) {
        self.for_hyper.took(n);
    }

    /// Notes `n` bytes of DATA payload hyper sent (against the connection's window).
    pub(super) fn hyper_sent(&mut self, n: usize) {
        self.window.hyper_sent(n);
    }

    /// The front's frames not written yet.
    pub(super) fn unwritten(&self) -> &[u8] {
        self.ours.pending()
    }

    /// Notes that `n` of [`Inbound::unwritten`] were written.
    pub(super) fn wrote(&mut self, n: usize) {
        self.ours.took(n);
    }
}

impl<Q: Quick> Inbound<Q> {
    /// Takes `data`, the next bytes from the client.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.preface_left > 0 {
            data = self.preface(data);
        }
        if self.passing {
            self.for_hyper.bytes.extend_from_slice(data);
            return Ok(());
        }
        if !self.partial.is_empty() {
            data = self.complete_partial(data)?;
        }
        while !data.is_empty() && !self.passing {
            let Some(head) = Head::parse(data) else { break };
            if head.len > MAX_PAYLOAD {
                self.passing = true;
                break;
            }
            let Some(whole) = data.get(..HEAD_LEN + head.len) else {
                break;
            };
            self.frame(head, whole)?;
            data = &data[whole.len()..];
        }
        if self.passing {
            self.for_hyper.bytes.extend_from_slice(data);
        } else {
            self.partial.extend_from_slice(data);
        }
        Ok(())
    }

    /// Passes on the preface's bytes at the start of `data`, and what follows.
    fn preface<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let at = PREFACE.len() - self.preface_left;
        let n = self.preface_left.min(data.len());
        if data[..n] != PREFACE[at..at + n] {
            self.passing = true;
            return data;
        }
        self.for_hyper.bytes.extend_from_slice(&data[..n]);
        self.preface_left -= n;
        &data[n..]
    }

    /// Adds to the frame begun in `partial` from `data`, takes it when it is whole, and returns
    /// the rest of `data`.
    fn complete_partial<'d>(&mut self, data: &'d [u8]) -> io::Result<&'d [u8]> {
        let mut data = data;
        if self.partial.len() < HEAD_LEN {
            let n = (HEAD_LEN - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        let Some(head) = Head::parse(&self.partial) else {
            return Ok(data);
        };
        if head.len > MAX_PAYLOAD {
            self.passing = true;
            self.for_hyper.bytes.append(&mut self.partial);
            return Ok(data);
        }
        let n = (HEAD_LEN + head.len - self.partial.len()).min(data.len());
        self.partial.extend_from_slice(&data[..n]);
        if self.partial.len() == HEAD_LEN + head.len {
            let whole = std::mem::take(&mut self.partial);
            self.frame(head, &whole)?;
        }
        Ok(&data[n..])
    }

    /// Takes one whole frame, `raw` (its head is `head`).
    fn frame(&mut self, head: Head, raw: &[u8]) -> io::Result<()> {
        let payload = &raw[HEAD_LEN..];
        if self.block.is_some() {
            return self.continuation(head, payload);
        }
        match head.kind {
            HEADERS => {
                let Some(fragment) = frame::fragment(&head, payload) else {
                    return Err(protocol("a HEADERS frame padded past its end"));
                };
                let end_stream = head.has(END_STREAM);
                if head.has(END_HEADERS) {
                    return self.request(head.stream, end_stream, fragment);
                }
                self.block = Some(Block {
                    stream: head.stream,
                    end_stream,
                    bytes: fragment.to_vec(),
                });
            }
            SETTINGS if !head.has(ACK) => {
                for (id, value) in frame::settings(payload).into_iter().flatten() {
                    match id {
                        INITIAL_WINDOW_SIZE => self.stream_window = value,
                        HEADER_TABLE_SIZE if value < TABLE_SIZE as u32 => self.hyper_only = true,
                        _ => {}
                    }
                }
                self.for_hyper.bytes.extend_from_slice(raw);
            }
            WINDOW_UPDATE if head.stream == 0 => match frame::increment(payload) {
                Some(increment) if increment > 0 => {
                    let given = self.window.split(increment);
                    if given > 0 {
                        frame::write_window_update(0, given, &mut self.for_hyper.bytes);
                    }
                }
                _ => self.for_hyper.bytes.extend_from_slice(raw),
            },
            DATA if self.streams.hidden(head.stream) => {
                if let Ok(credit @ 1..) = u32::try_from(head.len) {
                    frame::write_window_update(0, credit, &mut self.ours.bytes);
                }
            }
            WINDOW_UPDATE | RST_STREAM | PRIORITY if self.streams.hidden(head.stream) => {}
            _ => self.for_hyper.bytes.extend_from_slice(raw),
        }
        Ok(())
    }

    /// Takes a frame that came while a header block is being gathered: only its CONTINUATION
    /// may.
    fn continuation(&mut self, head: Head, payload: &[u8]) -> io::Result<()> {
        let Some(block) = self.block.as_mut() else {
            return Ok(());
        };
        if head.kind != CONTINUATION || head.stream != block.stream {
            return Err(protocol("a frame in the middle of a header block"));
        }
        if block.bytes.len() + payload.len() > self.block_limit {
            return Err(protocol(
                "a header block larger than proxy.max_header_size allows",
            ));
        }
        block.bytes.extend_from_slice(payload);
        if !head.has(END_HEADERS) {
            return Ok(());
        }
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        self.request(block.stream, block.end_stream, &block.bytes)
    }

    /// Takes a whole header block on `stream`: a request answered here, or handed to hyper.
    fn request(&mut self, stream: u32, end_stream: bool, block: &[u8]) -> io::Result<()> {
        let whole = self
            .decoder
            .decode(block, self.block_limit, &mut self.fields)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        if !whole {
            return Err(protocol(
                "a header list larger than proxy.max_header_size allows",
            ));
        }
        if self.streams.hidden(stream) {
            return Err(protocol("a HEADERS frame on a stream already closed"));
        }
        // A new stream (odd, above every one before it); anything else (trailers, a stream
        // number the client may not use) is for hyper to take or refuse.
        if stream % 2 == 1 && stream > self.streams.opened {
            self.streams.opened = stream;
            if end_stream && self.answer(stream) {
                return Ok(());
            }
            self.streams.hyper = stream;
        }
        let fields = &self.fields;
        frame::write_headers_with(stream, end_stream, &mut self.for_hyper.bytes, |block| {
            for (name, value) in fields.iter() {
                hpack::encode(name, value, block);
            }
        });
        Ok(())
    }

    /// Answers the request in `fields` on `stream` from memory, when the quick path has the
    /// answer and the client's windows take it whole; false when hyper is to answer it.
    fn answer(&mut self, stream: u32) -> bool {
        if self.hyper_only
            || self.ours.bytes.len() >= OURS_MAX
            || u64::from(self.window.slack) < MEMORY_OBJECT_MAX
        {
            return false;
        }
        let Some(ask) = ask(&self.fields, self.client) else {
            return false;
        };
        let Some(sending) = self.quick.answer(&ask) else {
            return false;
        };
        let len = sending.response.body().len();
        let Ok(len32) = u32::try_from(len) else {
            return false;
        };
        // Within the slack, as memory's objects are; a stream window smaller than the body
        // leaves the request to hyper, which sends as the window opens.
        if len32 > self.window.slack || len32 > self.stream_window {
            return false;
        }
        self.window.spend(len32);
        self.send(stream, sending);
        true
    }

    /// Writes `sending` as frames on `stream`.
    fn send(&mut self, stream: u32, sending: Sending) {
        let Sending {
            response,
            line,
            busy,
        } = sending;
        let body = response.body();
        frame::write_headers_with(stream, body.is_empty(), &mut self.ours.bytes, |block| {
            hpack::encode_status(response.status().as_u16(), block);
            for (name, value) in response.headers() {
                hpack::encode(name.as_str().as_bytes(), value.as_bytes(), block);
            }
            crate::http::plain_get::with_date(|date| {
                hpack::encode(b"date", date.as_bytes(), block)
            });
        });
        frame::write_data(stream, body, &mut self.ours.bytes);
        line.sent(body.len() as u64, true);
        drop(busy);
    }
}

/// Bytes queued for a reader that takes them in pieces (hyper, the client's socket).
#[derive(Debug, Default)]
struct Queue {
    bytes: Vec<u8>,
    /// How many of `bytes` the reader took.
    taken: usize,
}

impl Queue {
    /// The bytes not taken yet.
    fn pending(&self) -> &[u8] {
        &self.bytes[self.taken..]
    }

    /// Notes that the reader took `n` of [`Queue::pending`]. Once it took all, the buffer is
    /// emptied, and freed when it grew past what a connection's usual traffic needs: an idle
    /// connection keeps no more than that.
    fn took(&mut self, n: usize) {
        const KEPT: usize = 32 * 1024;
        self.taken += n;
        if self.taken == self.bytes.len() {
            self.taken = 0;
            if self.bytes.capacity() > KEPT {
                self.bytes = Vec::new();
            } else {
                self.bytes.clear();
            }
        }
    }
}

/// The request in `fields` as an [`Ask`], when it is a plain `GET` or `HEAD` whose fields are
/// all well-formed (RFC 9113 §8.2, §8.3): anything else is hyper's to answer or refuse.
fn ask(fields: &HeaderList, client: IpAddr) -> Option<Ask<'_>> {
    let (mut method, mut target, mut scheme, mut authority) = (None, None, None, None);
    let mut regular = false;
    for (name, value) in fields.iter() {
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
        {
            return None;
        }
        let Some(pseudo) = name.strip_prefix(b":") else {
            if name.is_empty() || !name.iter().all(|&b| token_lowercase(b)) {
                return None;
            }
            regular = true;
            continue;
        };
        let slot = match pseudo {
            b"method" => &mut method,
            b"path" => &mut target,
            b"scheme" => &mut scheme,
            b"authority" => &mut authority,
            _ => return None,
        };
        if regular || slot.replace(value).is_some() {
            return None;
        }
    }
    let headers = fields.iter().filter(|(name, _)| !name.starts_with(b":"));
    let get = PlainGet::of_parts(method?, target?, headers)?;
    Some(Ask { get, client })
}

/// Whether `byte` may be in an h2 header name (RFC 9110 token characters, no uppercase).
fn token_lowercase(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A connection error the front ends the connection for.
fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("h2: {what}"))
}
