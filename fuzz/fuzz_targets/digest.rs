//! `Digest::parse`: what it accepts is canonical, prints back to the input, and is safe as a
//! file name (the store names content files by the hex part).
#![no_main]

use hoard::oci::{Algorithm, Digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(digest) = Digest::parse(text) else {
        return;
    };
    assert_eq!(
        digest.to_string(),
        text,
        "a parsed digest prints back to its input"
    );
    let hex = digest.hex();
    let expected_len = match digest.algorithm() {
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    };
    assert_eq!(hex.len(), expected_len, "hex length of {text:?}");
    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "hex of {text:?} is lowercase hex"
    );
    assert!(
        !hex.contains(['/', '.', '\\']),
        "hex of {text:?} is a plain file name"
    );
    assert_eq!(Digest::parse(&digest.to_string()), Some(digest));
});
