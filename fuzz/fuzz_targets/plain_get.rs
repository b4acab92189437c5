//! `http::plain_get::parse`, the registry's quick HTTP/1.1 head parser: it never panics, a head
//! it takes lies within the bytes and the limit, is a `GET` or `HEAD` of an origin-form path
//! that carries no body, range, condition or connection header, and its parts are the request
//! line's; anything it leaves to hyper is left whole.
#![no_main]

use hoard::http::plain_get::{PARTIAL_OR_CONDITIONAL, Parsed, parse};
use libfuzzer_sys::fuzz_target;

/// Headers a taken head never carries.
const REFUSED: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
    "upgrade",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limit, so heads over it are tried too.
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    let limit = 16 + usize::from(pick) * 4;
    let Parsed::Get { get, len } = parse(buf, limit) else {
        return;
    };
    assert!(
        len <= buf.len() && len <= limit,
        "{len} of {} (limit {limit})",
        buf.len()
    );
    let head = &buf[..len];
    assert!(
        head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
        "{head:?}"
    );
    // Header values may hold any octet (obs-text); names and the request line are ASCII.
    let text = String::from_utf8_lossy(head);
    // Empty lines before the request line are skipped, as RFC 9112 lets a server do.
    let mut lines = text.lines().skip_while(|l| l.trim_end().is_empty());
    let line = lines.next().unwrap_or_default();
    let method = if get.head { "HEAD" } else { "GET" };
    let target = match get.query {
        Some(query) => format!("{}?{query}", get.path),
        None => get.path.to_owned(),
    };
    assert_eq!(
        line.trim_end(),
        format!("{method} {target} HTTP/1.1"),
        "{text:?}"
    );
    assert!(
        get.path.starts_with('/') && !target.contains('#'),
        "{target:?}"
    );
    for header in lines {
        let name = header
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        assert!(!REFUSED.contains(&name.as_str()), "{text:?}");
        assert!(
            !PARTIAL_OR_CONDITIONAL.iter().any(|h| h.as_str() == name),
            "{text:?}"
        );
    }
    let within = head.as_ptr_range();
    for value in &get.accept {
        let at = value.as_bytes().as_ptr_range();
        assert!(
            within.start <= at.start && at.end <= within.end,
            "{value:?} not in the head"
        );
    }
});
