//! Blocks that are not valid HPACK, dynamic table size updates and evictions, and the header
//! list limit.

use super::appendix_c::{C3, C4, C5, REQUESTS, RESPONSES};
use super::*;

#[test]
fn indexes_out_of_the_table_are_errors() {
    assert_eq!(error("80"), "index 0");
    assert_eq!(Error("index 0").to_string(), "hpack: index 0");
    assert_eq!(error("be"), "an index past the end of the table");
    assert_eq!(error("ff 00"), "an index past the end of the table");
    // A literal's name index too.
    assert_eq!(error("7e 01 61"), "an index past the end of the table");
    assert_eq!(error("0f 2f 01 61"), "an index past the end of the table");
    // One entry: 62 is in, 63 is not.
    let mut decoder = Decoder::new(4096);
    check(&mut decoder, C3[0], REQUESTS[0].0, 57);
    check(&mut decoder, "be", &[(":authority", "www.example.com")], 57);
    let mut list = HeaderList::new();
    assert!(decoder.decode(&hex("bf"), 1000, &mut list).is_err());
}

#[test]
fn integers_too_large_or_too_long_and_cut_strings_are_errors() {
    // 127 + 2^32 - 1.
    assert_eq!(
        error("ff ff ff ff ff 0f"),
        "an integer larger than 2^32 - 1"
    );
    assert_eq!(
        error("ff 80 80 80 80 80 00"),
        "an integer of more than 5 bytes after its prefix"
    );
    assert_eq!(error("ff"), "a block that ends inside an integer");
    assert_eq!(error("ff 80"), "a block that ends inside an integer");
    assert_eq!(
        error("04 05 61"),
        "a string that runs past the end of the block"
    );
    assert_eq!(
        error("00 01"),
        "a string that runs past the end of the block"
    );
    assert_eq!(
        error("00 7f ff ff ff 07"),
        "a string that runs past the end of the block"
    );
    assert_eq!(error("40 01 61"), "a block that ends inside an integer");
    // The largest index that fits, and a zero-padded integer, are only past the table.
    assert_eq!(
        error("ff 80 ff ff ff 0f"),
        "an index past the end of the table"
    );
}

#[test]
fn size_updates_come_first_and_within_the_advertised_size() {
    // 4096 = 31 + 0x61 + (0x1f << 7).
    let mut decoder = Decoder::new(4096);
    check(&mut decoder, "20 3f e1 1f 82", &[(":method", "GET")], 0);
    assert_eq!(
        error("3f e2 1f"),
        "a dynamic table size above the one advertised"
    );
    assert_eq!(error("82 20"), "a dynamic table size update after a field");
    // A size update evicts down to the new size.
    let mut decoder = Decoder::new(256);
    for (block, (expected, size)) in C5.iter().zip(RESPONSES) {
        check(&mut decoder, block, expected, size);
    }
    check(
        &mut decoder,
        "3f 9b 01 be",
        &[("set-cookie", RESPONSES[2].0[5].1)],
        150,
    );
    check(&mut decoder, "20 3f e1 01", &[], 0);
    assert_eq!(decoder.table_len(), 0);
    // 256 is this decoder's most.
    assert!(
        Decoder::new(256)
            .decode(&hex("3f e2 01"), 100, &mut HeaderList::new())
            .is_err()
    );
}

/// A decoder whose table has `max` bytes and holds "aaaa: bbbb" (40 bytes).
fn aaaa_bbbb(max: usize) -> Decoder {
    let mut decoder = Decoder::new(max);
    check(
        &mut decoder,
        "40 04 61616161 04 62626262",
        &[("aaaa", "bbbb")],
        40,
    );
    decoder
}

#[test]
fn an_entry_larger_than_the_table_empties_it() {
    // Table size 64: "aaaa: bbbb" (40) goes in, then a 33-byte value under the name at 62
    // (4 + 33 + 32 = 69) empties the table and is not added; the field is still decoded.
    let mut decoder = aaaa_bbbb(64);
    let long = "c".repeat(33);
    let block = format!("7e 21 {}", "63".repeat(33));
    check(&mut decoder, &block, &[("aaaa", &long)], 0);
    assert_eq!(decoder.table_len(), 0);
}

#[test]
fn a_new_entry_may_name_the_entry_it_evicts() {
    let mut decoder = aaaa_bbbb(100);
    // 4 + 60 + 32 = 96: "aaaa: bbbb" must go first, and its name is the new entry's.
    let value = "d".repeat(60);
    let block = format!("7e 3c {}", "64".repeat(60));
    check(&mut decoder, &block, &[("aaaa", &value)], 96);
    assert_eq!(
        decoder.table_entry(62),
        Some((&b"aaaa"[..], value.as_bytes()))
    );
}

#[test]
fn literals_without_indexing_and_never_indexed_leave_the_table() {
    let mut decoder = Decoder::new(4096);
    check(
        &mut decoder,
        "00 01 61 01 62 10 01 63 01 64 0f 2d 01 65",
        &[("a", "b"), ("c", "d"), ("via", "e")],
        0,
    );
}

#[test]
fn past_the_limit_the_table_still_follows_the_block() {
    let mut decoder = Decoder::new(4096);
    let mut list = HeaderList::new();
    check(&mut decoder, C3[0], REQUESTS[0].0, 57);
    // :method GET (42), :scheme http (43) and :path / (38) fit; :authority (57) does not, and
    // cache-control: no-cache goes in the table all the same.
    assert_eq!(decoder.decode(&hex(C3[1]), 123 + 56, &mut list), Ok(false));
    assert_eq!(fields(&list), fields_of(&REQUESTS[1].0[..3]));
    assert_eq!(decoder.table_size(), 110);
    check(&mut decoder, C3[2], REQUESTS[2].0, 164);
    // With Huffman coding and no room at all.
    let mut decoder = Decoder::new(4096);
    for (block, (_, size)) in C4.iter().zip(REQUESTS) {
        assert_eq!(decoder.decode(&hex(block), 0, &mut list), Ok(false));
        assert!(list.is_empty());
        assert_eq!(decoder.table_size(), size);
        check(&mut decoder, "", &[], size);
    }
    check(
        &mut decoder,
        "be bf",
        &[REQUESTS[2].0[4], REQUESTS[1].0[4]],
        164,
    );
}

#[test]
fn past_the_limit_a_new_entry_may_still_name_the_entry_it_evicts() {
    let mut decoder = aaaa_bbbb(100);
    let value = "d".repeat(60);
    let block = format!("82 7e 3c {}", "64".repeat(60));
    let mut list = HeaderList::new();
    // Room for :method GET (42) only.
    assert_eq!(decoder.decode(&hex(&block), 50, &mut list), Ok(false));
    assert_eq!(fields(&list), fields_of(&[(":method", "GET")]));
    assert_eq!(
        decoder.table_entry(62),
        Some((&b"aaaa"[..], value.as_bytes()))
    );
    assert_eq!(decoder.table_size(), 96);
}

#[test]
fn past_the_limit_strings_are_still_checked() {
    let mut list = HeaderList::new();
    assert!(
        Decoder::new(4096)
            .decode(&hex("82 00 81 18 80"), 0, &mut list)
            .is_err()
    );
    // A Huffman-coded value cut off by the limit part way.
    let mut block = huffman_field(b"a", &[b'b'; 100]);
    block.extend_from_slice(&huffman_field(b"c", b"d"));
    assert_eq!(
        Decoder::new(4096).decode(&block, 32 + 50, &mut list),
        Ok(false)
    );
    assert!(list.is_empty());
    assert_eq!(
        Decoder::new(4096).decode(&block, 32 + 101 + 34, &mut list),
        Ok(true)
    );
    assert_eq!(list.len(), 2);
}
