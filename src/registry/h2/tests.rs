//! The front's reading of a client's frames, against a quick path that answers `/small`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Response;

use super::frame::*;
use super::inbound::Inbound;
use super::{Outbound, Passed};
use crate::access::limits::{ConnectionLimits, Ticket};
use crate::http::hpack::{self, Decoder, HeaderList};
use crate::registry::quick::{Ask, Quick, Sending};
use crate::telemetry::Metrics;
use crate::telemetry::Via;
use crate::telemetry::access_log::{RequestInfo, Unsent};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Answers `GET`/`HEAD /small` with "hello"; nothing else.
struct Small {
    ticket: Ticket,
}

impl Quick for Small {
    fn answer(&self, ask: &Ask<'_>) -> Option<Sending> {
        if ask.get.path != "/small" {
            return None;
        }
        let body = if ask.get.head { "" } else { "hello" };
        let response = Response::builder()
            .header("content-length", "5")
            .body(Bytes::from_static(body.as_bytes()))
            .ok()?;
        let info = RequestInfo {
            metrics: Arc::new(Metrics::new()),
            host: String::new(),
            method: ask.get.method(),
            path: ask.get.path.to_owned(),
            start: Instant::now(),
            via: Via::Mirror,
            user: String::new(),
            lent: false,
        };
        Some(Sending {
            line: Unsent::of(info, &response),
            response,
            busy: self.ticket.busy()?,
        })
    }
}

fn inbound() -> Inbound<Small> {
    let limits = ConnectionLimits::new(10, 10);
    let (ticket, _) = limits.admit(CLIENT).unwrap_or_else(|e| panic!("{e:?}"));
    Inbound::new(Small { ticket }, CLIENT, 8192)
}

/// A frame as bytes.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = u32::try_from(payload.len())
        .unwrap_or_else(|e| panic!("{e}"))
        .to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        hpack::encode(name.as_bytes(), value.as_bytes(), &mut out);
    }
    out
}

fn get(stream: u32, method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", "mirror.test"),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block(&fields))
}

/// The preface, SETTINGS (with `settings` pairs) and a connection WINDOW_UPDATE of
/// `increment` (none when 0).
fn opening(settings: &[(u16, u32)], increment: u32) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    let pairs: Vec<u8> = settings
        .iter()
        .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat())
        .collect();
    out.extend(frame(SETTINGS, 0, 0, &pairs));
    if increment > 0 {
        out.extend(frame(WINDOW_UPDATE, 0, 0, &increment.to_be_bytes()));
    }
    out
}

/// The frames in `bytes`: head and payload.
fn frames(bytes: &[u8]) -> Vec<(Head, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(head) = Head::parse(rest) {
        out.push((head, rest[HEAD_LEN..HEAD_LEN + head.len].to_vec()));
        rest = &rest[HEAD_LEN + head.len..];
    }
    assert!(rest.is_empty(), "a frame cut short: {rest:?}");
    out
}

fn decoded(block: &[u8]) -> Vec<(String, String)> {
    let mut list = HeaderList::new();
    let whole = Decoder::new(4096).decode(block, 1 << 20, &mut list);
    assert_eq!(whole, Ok(true));
    list.iter()
        .map(|(n, v)| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (text(n), text(v))
        })
        .collect()
}

/// What hyper was given, after the preface.
fn hyper_frames(inbound: &Inbound<Small>) -> Vec<(Head, Vec<u8>)> {
    let given = inbound.for_hyper();
    assert!(given.starts_with(PREFACE));
    frames(&given[PREFACE.len()..])
}

#[test]
fn a_plain_get_is_answered_here_and_the_rest_goes_to_hyper() {
    let mut inbound = inbound();
    let mut input = opening(&[], 1 << 30);
    input.extend(get(1, "GET", "/small", &[("accept", "*/*")]));
    input.extend(get(3, "GET", "/other", &[]));
    input.extend(get(5, "GET", "/small", &[("range", "bytes=0-1")]));
    input.extend(get(7, "HEAD", "/small", &[]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));

    let ours = frames(inbound.unwritten());
    let kinds: Vec<_> = ours
        .iter()
        .map(|(h, _)| (h.kind, h.flags, h.stream))
        .collect();
    assert_eq!(
        kinds,
        [
            (HEADERS, END_HEADERS, 1),
            (DATA, END_STREAM, 1),
            (HEADERS, END_HEADERS | END_STREAM, 7),
        ]
    );
    let answer = decoded(&ours[0].1);
    assert_eq!(answer[0], (":status".into(), "200".into()));
    assert!(answer.contains(&("content-length".into(), "5".into())));
    assert!(answer.iter().any(|(n, _)| n == "date"));
    assert_eq!(ours[1].1, b"hello");

    let given = hyper_frames(&inbound);
    let kinds: Vec<_> = given.iter().map(|(h, _)| (h.kind, h.stream)).collect();
    assert_eq!(
        kinds,
        [
            (SETTINGS, 0),
            (WINDOW_UPDATE, 0),
            (HEADERS, 3),
            (HEADERS, 5)
        ]
    );
    // Half of the large update is kept for the answers given here.
    assert_eq!(increment(&given[1].1), Some(1 << 29));
    let other = decoded(&given[2].1);
    assert_eq!(other[3], (":path".into(), "/other".into()));
    assert_eq!(given[2].0.flags, END_HEADERS | END_STREAM);
    assert!(decoded(&given[3].1).contains(&("range".into(), "bytes=0-1".into())));
}

#[test]
fn small_windows_leave_every_request_to_hyper() {
    // No connection window beyond the 64 KiB every connection starts with.
    let mut inbound = self::inbound();
    let mut input = opening(&[], 0);
    input.extend(get(1, "GET", "/small", &[]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    assert!(inbound.unwritten().is_empty());
    assert_eq!(hyper_frames(&inbound).len(), 2);

    // A large connection window but a stream window smaller than the answer.
    let mut inbound = self::inbound();
    let mut input = opening(&[(INITIAL_WINDOW_SIZE, 4)], 1 << 30);
    input.extend(get(1, "GET", "/small", &[]));
    input.extend(get(3, "HEAD", "/small", &[]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    let ours = frames(inbound.unwritten());
    assert_eq!(
        ours.len(),
        1,
        "only the HEAD, with no body, is answered here"
    );
    assert_eq!(ours[0].0.stream, 3);
    let given = hyper_frames(&inbound);
    assert_eq!((given[2].0.kind, given[2].0.stream), (HEADERS, 1));

    // A client that shrinks the table hyper's encoder uses: hyper's next header block must say
    // so first.
    let mut inbound = self::inbound();
    let mut input = opening(&[(HEADER_TABLE_SIZE, 0)], 1 << 30);
    input.extend(get(1, "GET", "/small", &[]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    assert!(inbound.unwritten().is_empty());

    // An update of up to 4 MiB is hyper's whole.
    let mut inbound = self::inbound();
    inbound
        .feed(&opening(&[], 4 << 20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(increment(&hyper_frames(&inbound)[1].1), Some(4 << 20));
}

#[test]
fn what_a_window_update_gives_back_goes_to_whoever_sent_it() {
    let mut inbound = inbound();
    let mut input = opening(&[], 6 << 20);
    input.extend(get(1, "GET", "/small", &[]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    // Of the new 6 MiB, hyper keeps 4.
    assert_eq!(increment(&hyper_frames(&inbound)[1].1), Some(4 << 20));
    // The front sent 5 bytes ("hello"); hyper 95 of its own.
    inbound.hyper_sent(95);
    let before = inbound.for_hyper().len();
    let update = |n: u32| frame(WINDOW_UPDATE, 0, 0, &n.to_be_bytes());
    inbound.feed(&update(100)).unwrap_or_else(|e| panic!("{e}"));
    let given = frames(&inbound.for_hyper()[before..]);
    assert_eq!(
        increment(&given[0].1),
        Some(95),
        "hyper's own back, the front's kept"
    );
    // With nothing out, a small update is all hyper's.
    inbound
        .feed(&update(1000))
        .unwrap_or_else(|e| panic!("{e}"));
    let given = frames(&inbound.for_hyper()[before..]);
    assert_eq!(increment(&given[1].1), Some(1000));
}

#[test]
fn frames_on_streams_answered_here_are_kept_from_hyper() {
    let mut inbound = inbound();
    let mut input = opening(&[], 1 << 30);
    input.extend(get(1, "GET", "/small", &[]));
    input.extend(frame(WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes()));
    input.extend(frame(RST_STREAM, 0, 1, &0u32.to_be_bytes()));
    input.extend(frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 16]));
    input.extend(frame(DATA, 0, 1, &[7; 10]));
    // The same frames on a stream no one opened are hyper's to refuse.
    input.extend(frame(RST_STREAM, 0, 9, &0u32.to_be_bytes()));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    let ours = frames(inbound.unwritten());
    let last = &ours[ours.len() - 1];
    assert_eq!((last.0.kind, last.0.stream), (WINDOW_UPDATE, 0));
    assert_eq!(increment(&last.1), Some(10), "the DATA's credit given back");
    let kinds: Vec<_> = hyper_frames(&inbound)
        .iter()
        .map(|(h, _)| (h.kind, h.stream))
        .collect();
    assert_eq!(kinds, [(SETTINGS, 0), (WINDOW_UPDATE, 0), (RST_STREAM, 9)]);
    // A stream answered here cannot be opened again.
    let again = inbound.feed(&get(1, "GET", "/small", &[]));
    assert!(again.is_err());
}

#[test]
fn bytes_split_anywhere_read_the_same() {
    let mut input = opening(&[(INITIAL_WINDOW_SIZE, 1 << 20)], 1 << 30);
    input.extend(get(1, "GET", "/small", &[]));
    input.extend(get(3, "GET", "/other", &[("accept", "a/b")]));
    input.extend(frame(DATA, 0, 3, b"body"));
    let mut whole = inbound();
    whole.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    for size in [1, 2, 7, 9, 10, 100] {
        let mut split = inbound();
        for chunk in input.chunks(size) {
            split.feed(chunk).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(split.for_hyper(), whole.for_hyper(), "in pieces of {size}");
        let answers = |i: &Inbound<Small>| {
            frames(i.unwritten())
                .into_iter()
                .map(|(h, p)| (h, if h.kind == HEADERS { vec![] } else { p }))
                .collect::<Vec<_>>()
        };
        assert_eq!(answers(&split), answers(&whole), "in pieces of {size}");
    }
}

#[test]
fn a_header_block_in_continuations_is_gathered_and_a_frame_inside_it_refused() {
    let fields = block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/small"),
    ]);
    let (first, rest) = fields.split_at(5);
    let mut inbound = inbound();
    let mut input = opening(&[], 1 << 30);
    input.extend(frame(HEADERS, END_STREAM, 1, first));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, rest));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(frames(inbound.unwritten()).len(), 2, "answered");

    let mut input = frame(HEADERS, END_STREAM, 3, first);
    input.extend(frame(PRIORITY, 0, 3, &[0, 0, 0, 0, 16]));
    assert!(inbound.feed(&input).is_err());
}

#[test]
fn what_the_front_does_not_follow_goes_to_hyper_as_it_is() {
    // A frame larger than hyper allows: hyper ends the connection for it.
    let mut inbound = inbound();
    let mut input = opening(&[], 1 << 30);
    let big = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &vec![0; MAX_PAYLOAD + 1],
    );
    input.extend(&big);
    input.extend(get(3, "GET", "/small", &[]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    assert!(inbound.unwritten().is_empty());
    assert!(inbound.for_hyper().ends_with(&get(3, "GET", "/small", &[])));

    // Not the preface.
    let mut inbound = self::inbound();
    inbound
        .feed(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inbound.for_hyper(), b"GET / HTTP/1.1\r\n\r\n");

    // A request with an uppercase header name is malformed: hyper refuses it.
    let mut inbound = self::inbound();
    let mut input = opening(&[], 1 << 30);
    input.extend(get(1, "GET", "/small", &[("Accept", "*/*")]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    assert!(inbound.unwritten().is_empty());
}

#[test]
fn once_hyper_says_goaway_every_request_is_its_own() {
    let mut inbound = inbound();
    inbound.hyper_only = true;
    let mut input = opening(&[], 1 << 30);
    input.extend(get(1, "GET", "/small", &[]));
    inbound.feed(&input).unwrap_or_else(|e| panic!("{e}"));
    assert!(inbound.unwritten().is_empty());

    let mut outbound = Outbound::default();
    assert!(
        !outbound.between_frames(),
        "nothing before hyper's SETTINGS"
    );
    let settings = frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 1]);
    let data = frame(DATA, 0, 1, &[1; 100]);
    let nothing = Passed::default();
    assert_eq!(outbound.pass(&settings[..4]), nothing);
    assert!(!outbound.between_frames());
    assert_eq!(outbound.pass(&settings[4..]), nothing);
    assert!(outbound.between_frames());
    let data_begun = Passed {
        goaway: false,
        data: 100,
    };
    assert_eq!(outbound.pass(&data[..20]), data_begun);
    assert_eq!(outbound.frame_end(500), 89, "the rest of the DATA frame");
    assert_eq!(outbound.pass(&data[20..]), nothing);
    assert!(outbound.pass(&frame(GOAWAY, 0, 0, &[0; 8])).goaway);
    assert!(outbound.between_frames());
}

#[test]
fn any_frames_are_read_without_a_panic_and_every_answer_is_whole() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let paths = ["/small", "/other", "/small?x=1", "small", "/sm all"];
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut inbound = inbound();
        let mut input = opening(&[], 1 << 30);
        let mut opened = 1;
        for _ in 0..next(12) {
            let method = ["GET", "HEAD", "POST"][next(3) as usize];
            let path = paths[next(paths.len() as u64) as usize];
            let mut fields = vec![(":method", method), (":path", path)];
            if next(4) == 0 {
                fields.push(("range", "bytes=0-1"));
            }
            let mut fields = block(&fields);
            if next(5) < 2 {
                // A request as a client sends it.
                opened += 2 * next(3) as u32;
                input.extend(frame(HEADERS, END_STREAM | END_HEADERS, opened, &fields));
                opened += 2;
                continue;
            }
            let (kind, stream) = (next(11) as u8, next(12) as u32);
            let flags = [0, END_STREAM, END_HEADERS, END_STREAM | END_HEADERS, 0xff];
            let payload: Vec<u8> = match kind {
                HEADERS | CONTINUATION if next(2) == 0 => {
                    fields.truncate(next(fields.len() as u64 + 1) as usize);
                    fields
                }
                _ => (0..next(20)).map(|_| next(256) as u8).collect(),
            };
            input.extend(frame(kind, flags[next(5) as usize], stream, &payload));
        }
        let mut failed = false;
        for chunk in input.chunks(1 + next(40) as usize) {
            if inbound.feed(chunk).is_err() {
                failed = true;
                break;
            }
        }
        if failed {
            refused += 1;
            continue;
        }
        // What the front wrote is whole frames, and each answer a HEADERS then its DATA.
        let ours = frames(inbound.unwritten());
        for (head, payload) in &ours {
            match head.kind {
                HEADERS => {
                    assert!(decoded(payload)[0].0 == ":status");
                    answered += 1;
                }
                DATA => assert_eq!(payload, b"hello"),
                WINDOW_UPDATE => assert_eq!(head.stream, 0),
                other => panic!("the front wrote a frame of kind {other}"),
            }
        }
    }
    // The inputs reach both ends: answers made, and connections refused.
    assert!(
        answered > 100 && refused > 100,
        "{answered} answered, {refused} refused"
    );
}
