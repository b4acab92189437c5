//! `http::hpack`, the HPACK decoder every h2 header block a client sends goes through: it never
//! panics; a decoder held to a small header list limit fails exactly when one without a limit
//! does, keeps a prefix of its fields within the limit and says so, and its dynamic table stays
//! in step (every later block decodes the same); and fields written by `encode` and
//! `encode_status` decode as they were, on a fresh decoder and on the fuzzed one.
#![no_main]

use hoard::http::hpack::{Decoder, HeaderList, encode, encode_status};
use libfuzzer_sys::fuzz_target;

/// The header list size of `list` (RFC 9113 §6.5.2).
fn size(list: &HeaderList) -> usize {
    list.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
}

/// The fields of `list`, owned.
fn fields(list: &HeaderList) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

fuzz_target!(|data: &[u8]| {
    // Three bytes pick the header list limit, the byte that ends each block, and the dynamic
    // table's size; the rest is the blocks.
    let [pick_limit, separator, pick_table, rest @ ..] = data else {
        return;
    };
    let limit = usize::from(*pick_limit) * 4;
    let table = usize::from(*pick_table) * 32;
    let mut limited = Decoder::new(table);
    let mut whole = Decoder::new(table);
    let (mut some, mut all) = (HeaderList::new(), HeaderList::new());
    let mut alive = true;
    for block in rest.split(|b| b == separator) {
        let got = limited.decode(block, limit, &mut some);
        let full = whole.decode(block, usize::MAX, &mut all);
        assert_eq!(got.is_err(), full.is_err(), "{block:?}: {got:?} {full:?}");
        if got.is_err() {
            alive = false;
            break;
        }
        assert_eq!(full, Ok(true));
        assert!(size(&some) <= limit, "{} > {limit}", size(&some));
        assert_eq!(got, Ok(size(&all) <= limit), "{block:?}");
        let (some, all) = (fields(&some), fields(&all));
        assert_eq!(some[..], all[..some.len()], "{block:?}");
    }

    // The pieces between separators, as fields; and a status from the first two bytes.
    let mut block = Vec::new();
    let mut written = HeaderList::new();
    let status = u16::from_be_bytes([*pick_limit, *pick_table]);
    encode_status(status, &mut block);
    written.push(b":status", status.to_string().as_bytes());
    let mut pieces = rest.split(|b| b == separator);
    while let (Some(name), Some(value)) = (pieces.next(), pieces.next()) {
        encode(name, value, &mut block);
        written.push(name, value);
    }
    let mut decoded = HeaderList::new();
    assert_eq!(Decoder::new(0).decode(&block, usize::MAX, &mut decoded), Ok(true));
    assert_eq!(fields(&decoded), fields(&written));
    if alive {
        assert_eq!(limited.decode(&block, usize::MAX, &mut decoded), Ok(true));
        assert_eq!(fields(&decoded), fields(&written));
    }
});
