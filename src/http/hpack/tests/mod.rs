//! The RFC 7541 Appendix C examples (`appendix_c.rs`), every error a block can have and the
//! header list limit (`blocks.rs`), the Huffman table's own checks, and encoding round trips.

mod appendix_c;
mod blocks;

use super::huffman::{CODES, LENGTHS};
use super::*;

/// Bytes from hex, spaces ignored.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .fold(0, |byte, digit| byte << 4 | nibble(*digit))
        })
        .collect()
}

/// The value of a hex digit.
fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit.to_ascii_lowercase() - b'a' + 10,
    }
}

/// The fields of `list`, as text.
fn fields(list: &HeaderList) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect()
}

/// Decodes `block` (hex) with no limit to speak of, and checks the fields and the dynamic
/// table's size after it.
fn check(decoder: &mut Decoder, block: &str, expected: &[(&str, &str)], table_size: usize) {
    let mut list = HeaderList::new();
    assert_eq!(decoder.decode(&hex(block), 1 << 20, &mut list), Ok(true));
    let expected: Vec<_> = expected
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(fields(&list), expected);
    assert_eq!(decoder.table_size(), table_size);
}

/// Why `block` (hex) is not valid for a fresh decoder of a 4096-byte table.
fn error(block: &str) -> &'static str {
    let mut list = HeaderList::new();
    let decoded = Decoder::new(4096).decode(&hex(block), 1 << 20, &mut list);
    decoded.err().map_or("no error", |error| error.0)
}

/// `text` Huffman-coded, with EOS's start as padding.
fn huffman_encode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut bits, mut count) = (0u64, 0u32);
    for &byte in text {
        let len = u32::from(LENGTHS[usize::from(byte)]);
        bits = bits << len | u64::from(CODES[usize::from(byte)]);
        count += len;
        while count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    if count > 0 {
        out.push((bits << (8 - count)) as u8 | (0xff >> count));
    }
    out
}

/// A literal field without indexing, name and value Huffman-coded.
fn huffman_field(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut block = vec![0x00];
    for text in [name, value] {
        let coded = huffman_encode(text);
        assert!(coded.len() < 127);
        block.push(0x80 | coded.len() as u8);
        block.extend_from_slice(&coded);
    }
    block
}

/// `expected` as `fields` gives it.
fn fields_of(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut list = HeaderList::new();
    for (name, value) in expected {
        list.push(name.as_bytes(), value.as_bytes());
    }
    fields(&list)
}

#[test]
fn huffman_code_is_complete_canonical_and_prefix_free() {
    // Kraft's sum of a complete code is exactly 1.
    let sum: u64 = LENGTHS.iter().map(|&len| 1u64 << (30 - len)).sum();
    assert_eq!(sum, 1 << 30);
    assert_eq!((CODES[256], LENGTHS[256]), (0x3fff_ffff, 30));
    // A few codes as Appendix B prints them.
    for (symbol, code) in [
        (0, 0x1ff8),
        (b' ', 0x14),
        (b'0', 0),
        (b'a', 0x3),
        (b'<', 0x7ffc),
    ] {
        assert_eq!(CODES[usize::from(symbol)], code, "{symbol}");
    }
    assert_eq!((CODES[10], CODES[255]), (0x3fff_fffc, 0x3ff_ffee));
    for a in 0..257 {
        for b in 0..257 {
            let (la, lb) = (u32::from(LENGTHS[a]), u32::from(LENGTHS[b]));
            if a != b && la <= lb {
                assert_ne!(CODES[b] >> (lb - la), CODES[a], "{a} is a prefix of {b}");
            }
        }
    }
}

#[test]
fn every_byte_round_trips_through_huffman() {
    let mut decoder = Decoder::new(4096);
    let mut list = HeaderList::new();
    let all: Vec<u8> = (0..=255).collect();
    for value in (0..=255u8)
        .map(|b| vec![b])
        .chain([all.clone(), all.repeat(3)])
    {
        let mut block = vec![0x00, 0x81, 0x1f]; // name "a" ('a' is 00011, then 111 of padding)
        let coded = huffman_encode(&value);
        super::encoder::integer(coded.len(), 7, 0x80, &mut block);
        block.extend_from_slice(&coded);
        assert_eq!(decoder.decode(&block, 1 << 20, &mut list), Ok(true));
        assert_eq!(list.iter().next(), Some((&b"a"[..], &value[..])));
    }
}

#[test]
fn huffman_strings_with_eos_or_bad_padding_are_errors() {
    // EOS (30 ones) in a string, then 2 bits of padding.
    assert_eq!(
        error("00 81 1f 84 ff ff ff ff"),
        "EOS in a Huffman-coded string"
    );
    // 'a' then 11 bits of ones: more than 7 bits of padding.
    assert_eq!(
        error("00 81 1f 82 1f ff"),
        "a Huffman-coded string ends in a part of a code"
    );
    // 'a' padded with zeros.
    assert_eq!(
        error("00 81 18 80"),
        "a Huffman-coded string's padding is not all ones"
    );
    // An empty Huffman-coded string is fine; a whole byte of ones is not.
    let mut list = HeaderList::new();
    assert_eq!(
        Decoder::new(0).decode(&hex("00 81 1f 80"), 100, &mut list),
        Ok(true)
    );
    assert_eq!(
        error("00 81 1f 81 ff"),
        "a Huffman-coded string ends in a part of a code"
    );
}

#[test]
fn decoding_allocates_nothing_after_warm_up() {
    let mut decoder = Decoder::new(4096);
    let mut list = HeaderList::new();
    // Requests as a Go client sends them: each path added to the table, raw or Huffman-coded,
    // 20 to 120 bytes long, so that the table evicts all the time.
    let mut round = |i: usize| {
        let path = format!("/v2/library/{}/blobs/sha256:{i:x}", "x".repeat(i % 101));
        let mut block = hex("82 87");
        block.push(0x44);
        match i % 2 {
            0 => {
                super::encoder::integer(path.len(), 7, 0x00, &mut block);
                block.extend_from_slice(path.as_bytes());
            }
            _ => {
                let coded = huffman_encode(path.as_bytes());
                super::encoder::integer(coded.len(), 7, 0x80, &mut block);
                block.extend_from_slice(&coded);
            }
        }
        block.extend_from_slice(&hex("be be"));
        assert_eq!(decoder.decode(&block, 16384, &mut list), Ok(true));
        assert_eq!(list.len(), 5);
        (decoder.table_capacity(), list.capacity())
    };
    let warm = (0..1000).map(&mut round).last();
    assert!(
        warm.is_some_and(|((bytes, _), _)| bytes <= 3 * 4096),
        "{warm:?}"
    );
    for i in 1000..5000 {
        assert_eq!(Some(round(i)), warm, "{i}");
    }
}

#[test]
fn encode_names_static_entries_by_index() {
    let mut dst = Vec::new();
    encode(b":path", b"/v2/", &mut dst);
    assert_eq!(dst, b"\x04\x04/v2/");
    dst.clear();
    encode(b"www-authenticate", b"", &mut dst);
    assert_eq!(dst, [0x0f, 0x2e, 0x00]);
    dst.clear();
    encode(b"x", &[b'y'; 200], &mut dst);
    assert_eq!(dst[..5], [0x00, 0x01, b'x', 0x7f, 200 - 127]);
    dst.clear();
    encode_status(200, &mut dst);
    encode_status(500, &mut dst);
    encode_status(302, &mut dst);
    assert_eq!(dst, b"\x88\x8e\x08\x03302");
}

#[test]
fn encoded_fields_decode_as_they_were_and_leave_the_table_empty() {
    let long = "/v2/library/ubuntu/blobs/sha256:".to_string() + &"ab".repeat(100);
    let written: [(&[u8], &[u8]); 7] = [
        (b":path", long.as_bytes()),
        (
            b"content-type",
            b"application/vnd.oci.image.manifest.v1+json",
        ),
        (b"docker-content-digest", b"sha256:00"),
        (b"", b""),
        (b"x-odd", &[0, 0xff, b'\n']),
        (b":authority", b""),
        (b"cache-control", b"no-cache"),
    ];
    let mut block = Vec::new();
    let mut expected = HeaderList::new();
    for status in 100..=999 {
        encode_status(status, &mut block);
        expected.push(b":status", status.to_string().as_bytes());
    }
    for (name, value) in written {
        encode(name, value, &mut block);
        expected.push(name, value);
    }
    let mut decoder = Decoder::new(4096);
    let mut list = HeaderList::new();
    assert_eq!(decoder.decode(&block, usize::MAX, &mut list), Ok(true));
    assert_eq!(fields(&list), fields(&expected));
    assert_eq!((decoder.table_size(), decoder.table_len()), (0, 0));
}

/// A one-off figure, not a test: how long a typical request's `:path` takes to decode,
/// Huffman-coded and not. `cargo test --release --lib hpack::tests::path_decode_time --
/// --ignored --nocapture`
#[test]
#[ignore]
fn path_decode_time() {
    let path = "/v2/library/ubuntu/blobs/sha256:".to_string() + &"3f5ad8c90b".repeat(6) + "2e4f";
    let coded = huffman_encode(path.as_bytes());
    let mut huffman = vec![0x04];
    super::encoder::integer(coded.len(), 7, 0x80, &mut huffman);
    huffman.extend_from_slice(&coded);
    let mut raw = Vec::new();
    encode(b":path", path.as_bytes(), &mut raw);
    for (block, how) in [(huffman, "Huffman-coded"), (raw, "raw")] {
        let mut decoder = Decoder::new(4096);
        let mut list = HeaderList::new();
        let rounds = 1_000_000;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let decoded = decoder.decode(std::hint::black_box(&block), 16384, &mut list);
            assert_eq!(decoded, Ok(true));
        }
        let each = start.elapsed() / rounds;
        println!(
            "{} chars of path, {how} in {} bytes: {each:?} a block",
            path.len(),
            block.len()
        );
    }
}
