//! Destinations a client names (CONNECT host, plain-forward URL host), as the private-destination
//! guard judges them: `access::is_noncanonical_numeric` and `access::is_private`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use hoard::net::{is_noncanonical_numeric, is_private};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    let odd = is_noncanonical_numeric(host);
    // A dotted quad is canonical; anything the guard reads as an address must be one.
    if host.parse::<Ipv4Addr>().is_ok() {
        assert!(!odd, "{host:?}");
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let _ = is_private(ip);
    }
    // A host whose last label holds a letter other than a hex digit is a name, never a number.
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    if last.bytes().any(|b| b.is_ascii_alphabetic() && !b.is_ascii_hexdigit() && b != b'x' && b != b'X') {
        assert!(!odd, "{host:?}");
    }
});
