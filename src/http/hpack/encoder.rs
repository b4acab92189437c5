//! Encoding header fields so that no dynamic table changes: every field is a literal without
//! indexing (RFC 7541 §6.2.2), or an index of the static table, so blocks from any number of
//! encoders may go out on one connection in any order.

use super::table::{STATIC, static_name};

/// Appends `name: value` as a literal field without indexing (RFC 7541 §6.2.2), the name by its
/// static-table index when the static table has that name, no Huffman coding. Such fields leave
/// every dynamic table as it was, so any number of encoders may write blocks on one connection
/// in any order. `name` is written as it is: h2 wants it in lowercase.
pub fn encode(name: &[u8], value: &[u8], dst: &mut Vec<u8>) {
    match static_name(name) {
        Some(index) => integer(index, 4, 0x00, dst),
        None => {
            dst.push(0x00);
            string(name, dst);
        }
    }
    string(value, dst);
}

/// Appends `:status` = `status` (100..=999): indexed when the static table has it (200, 204,
/// 206, 304, 400, 404, 500), else as [`encode`] would.
pub fn encode_status(status: u16, dst: &mut Vec<u8>) {
    let mut digits = [0; 5];
    let text = decimal(status, &mut digits);
    // `:status` entries are indexes 8 to 14.
    let indexed = STATIC[7..14].iter().position(|(_, value)| *value == text);
    match indexed {
        Some(at) => integer(at + 8, 7, 0x80, dst),
        None => encode(b":status", text, dst),
    }
}

/// `value` in decimal, in the end of `digits`.
fn decimal(mut value: u16, digits: &mut [u8; 5]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// Appends a string literal without Huffman coding (§5.2).
fn string(bytes: &[u8], dst: &mut Vec<u8>) {
    integer(bytes.len(), 7, 0x00, dst);
    dst.extend_from_slice(bytes);
}

/// Appends `value` with a `prefix`-bit prefix (§5.1), the first byte's other bits `flags`.
pub(super) fn integer(value: usize, prefix: u32, flags: u8, dst: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.push(rest as u8);
}
