//! The Huffman code of HPACK (RFC 7541 §5.2, Appendix B), decoding only: hoard writes its own
//! strings as they are. A string is decoded through a table of the next 12 bits, made at compile
//! time, which holds every code of 12 bits or fewer (all of printable ASCII but
//! `$ < @ [ \ ] ^ ` { } ~`), and the second code too when both fit in the 12 bits (two symbols
//! of a path at a time, as its letters, digits and `/` take 5 to 6 bits); the longer codes are
//! found by the canonical code's per-length limits.

use super::Error;

/// The length in bits of each symbol's code, bytes 0..=255 then EOS (256), from RFC 7541
/// Appendix B. The code is canonical (codes of one length are consecutive, in symbol order, and
/// follow the shorter ones), so the lengths are the whole code.
#[rustfmt::skip]
pub(super) const LENGTHS: [u8; 257] = [
    // 0..=31: control bytes.
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    // ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    // @ A B C D E F G H I J K L M N O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    // P Q R S T U V W X Y Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    // ` a b c d e f g h i j k l m n o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    // p q r s t u v w x y z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    // 128..=255
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // EOS
    30,
];

/// The end-of-string symbol, which no string may hold.
const EOS: u16 = 256;

/// The longest code, EOS's.
const MAX_LENGTH: usize = 30;

/// The bits the short table decodes at once: 2^12 entries of 4 bytes, 16 KiB, which stays in
/// the L1 cache while a block is decoded.
const SHORT_BITS: u32 = 12;

/// Each symbol's code, right-aligned in its length.
pub(super) const CODES: [u32; 257] = codes();

/// The code of each length's first symbol, right-aligned (index: the length).
const FIRST: [u32; MAX_LENGTH + 1] = firsts();

/// How many symbols have a code of each length.
const COUNT: [u32; MAX_LENGTH + 1] = counts();

/// Where each length's symbols start in `SORTED`.
const OFFSET: [u16; MAX_LENGTH + 1] = offsets();

/// The symbols by code: by length, then by symbol.
const SORTED: [u16; 257] = sorted();

/// By the next `SHORT_BITS` bits: the symbol whose code starts them (bits 0 to 7) and the
/// code's length (bits 16 to 19, 0 when the code is longer); and when a second code follows
/// within the bits, its symbol (bits 8 to 15) and the two codes' length (bits 20 to 23, else 0).
static PAIRS: [u32; 1 << SHORT_BITS] = pairs();

/// The canonical codes of `LENGTHS`.
const fn codes() -> [u32; 257] {
    let mut codes = [0; 257];
    let mut code = 0;
    let mut len = 1;
    while len <= MAX_LENGTH {
        let mut symbol = 0;
        while symbol < 257 {
            if LENGTHS[symbol] as usize == len {
                codes[symbol] = code;
                code += 1;
            }
            symbol += 1;
        }
        code <<= 1;
        len += 1;
    }
    codes
}

/// `COUNT`.
const fn counts() -> [u32; MAX_LENGTH + 1] {
    let mut counts = [0; MAX_LENGTH + 1];
    let mut symbol = 0;
    while symbol < 257 {
        counts[LENGTHS[symbol] as usize] += 1;
        symbol += 1;
    }
    counts
}

/// `FIRST`: each length's codes follow the shorter ones' (the canonical code's rule).
const fn firsts() -> [u32; MAX_LENGTH + 1] {
    let counts = counts();
    let mut firsts = [0; MAX_LENGTH + 1];
    let mut len = 1;
    while len <= MAX_LENGTH {
        firsts[len] = (firsts[len - 1] + counts[len - 1]) << 1;
        len += 1;
    }
    firsts
}

/// `OFFSET`.
const fn offsets() -> [u16; MAX_LENGTH + 1] {
    let counts = counts();
    let mut offsets = [0; MAX_LENGTH + 1];
    let mut len = 1;
    while len <= MAX_LENGTH {
        offsets[len] = offsets[len - 1] + counts[len - 1] as u16;
        len += 1;
    }
    offsets
}

/// `SORTED`.
const fn sorted() -> [u16; 257] {
    let mut sorted = [0; 257];
    let mut next = offsets();
    let mut symbol = 0;
    while symbol < 257 {
        let len = LENGTHS[symbol] as usize;
        sorted[next[len] as usize] = symbol as u16;
        next[len] += 1;
        symbol += 1;
    }
    sorted
}

/// By the next `SHORT_BITS` bits: the symbol whose code starts them, in the low byte, and the
/// code's length, in the high byte; 0 when the code is longer.
const fn short() -> [u16; 1 << SHORT_BITS] {
    let mut short = [0; 1 << SHORT_BITS];
    let mut symbol = 0;
    while symbol < 256 {
        let len = LENGTHS[symbol] as u32;
        if len <= SHORT_BITS {
            let spread = SHORT_BITS - len;
            let start = (CODES[symbol] << spread) as usize;
            let mut i = 0;
            while i < 1 << spread {
                short[start + i] = (len as u16) << 8 | symbol as u16;
                i += 1;
            }
        }
        symbol += 1;
    }
    short
}

/// `PAIRS`, from `short()`'s single codes.
const fn pairs() -> [u32; 1 << SHORT_BITS] {
    let short = short();
    let mut pairs = [0; 1 << SHORT_BITS];
    let mut bits = 0;
    while bits < 1 << SHORT_BITS {
        let first = short[bits] as u32;
        let len = first >> 8;
        if len != 0 {
            pairs[bits] = (first & 0xff) | len << 16;
            let second = short[(bits << len) & ((1 << SHORT_BITS) - 1)] as u32;
            let both = len + (second >> 8);
            if second != 0 && both <= SHORT_BITS {
                pairs[bits] |= (second & 0xff) << 8 | both << 20;
            }
        }
        bits += 1;
    }
    pairs
}

/// Appends the Huffman-coded string `src`, decoded, to `dst` as long as `dst` stays within
/// `cap` bytes; past that, the rest is decoded without being kept. Ok(false) when it did not
/// fit (`dst` then holds a part of it). An error when `src` is not a whole Huffman-coded string:
/// it holds EOS, or ends in more than 7 bits or in bits that are not the start of EOS (all
/// ones).
pub(super) fn decode(src: &[u8], dst: &mut Vec<u8>, cap: usize) -> Result<bool, Error> {
    // Every code has at least 5 bits.
    dst.reserve((src.len() * 8 / 5).min(cap.saturating_sub(dst.len())));
    let mut fits = true;
    // The bits not decoded yet, left-aligned, and how many there are.
    let mut bits = 0u64;
    let mut count = 0u32;
    let mut rest = src;
    loop {
        while count <= 56 {
            let Some((&byte, tail)) = rest.split_first() else {
                break;
            };
            bits |= u64::from(byte) << (56 - count);
            count += 8;
            rest = tail;
        }
        if count == 0 {
            return Ok(fits);
        }
        let entry = PAIRS[(bits >> (64 - SHORT_BITS)) as usize];
        let both = entry >> 20;
        if both != 0 && both <= count && dst.len() + 2 <= cap {
            dst.extend_from_slice(&[entry as u8, (entry >> 8) as u8]);
            bits <<= both;
            count -= both;
            continue;
        }
        let (symbol, len) = match (entry >> 16) & 0xf {
            0 => long(bits),
            len => ((entry & 0xff) as u16, len),
        };
        if len > count {
            return padding(bits, count).map(|()| fits);
        }
        let Ok(byte) = u8::try_from(symbol) else {
            return Err(Error("EOS in a Huffman-coded string"));
        };
        if dst.len() < cap {
            dst.push(byte);
        } else {
            fits = false;
        }
        bits <<= len;
        count -= len;
    }
}

/// The symbol whose code, longer than `SHORT_BITS`, starts `bits` (left-aligned), and the
/// code's length, which may be more than the bits there are (the bits past the string's end are
/// zeros). The canonical code's codes of one length are consecutive, so the first length whose
/// range holds the bits' start is the code's.
fn long(bits: u64) -> (u16, u32) {
    let window = (bits >> 32) as u32;
    for len in SHORT_BITS as usize + 1..=MAX_LENGTH {
        let offset = (window >> (32 - len)).wrapping_sub(FIRST[len]);
        if offset < COUNT[len] {
            let at = usize::from(OFFSET[len]) + offset as usize;
            // `len` is at most 30, so it fits in u32.
            return (SORTED.get(at).copied().unwrap_or(EOS), len as u32);
        }
    }
    // Every 30 bits start with a code (the code is complete): not reached.
    (EOS, MAX_LENGTH as u32)
}

/// Checks that the last `count` bits of a string, left-aligned in `bits`, are padding: fewer
/// than 8, all ones (the start of EOS).
fn padding(bits: u64, count: u32) -> Result<(), Error> {
    if count > 7 {
        return Err(Error("a Huffman-coded string ends in a part of a code"));
    }
    if bits >> (64 - count) != (1 << count) - 1 {
        return Err(Error("a Huffman-coded string's padding is not all ones"));
    }
    Ok(())
}
