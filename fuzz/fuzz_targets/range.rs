//! `parse_range`, the client's `Range` header on a cached blob: an accepted range lies inside
//! the blob, for blob lengths at the edges and near every number in the header. And
//! `far_range`, which decides whether a range on a cold blob starts a fill: a range it lets
//! start one begins within `RANGE_FILL_AHEAD` of the start.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fn check(value: &HeaderValue, len: u64) {
    if let Ok((first, last)) = hoard::oci::parse_range(value, len) {
        assert!(
            first <= last && last < len,
            "{value:?} with len {len}: {first}-{last}"
        );
        assert!(
            hoard::oci::far_range(value) || first <= hoard::oci::RANGE_FILL_AHEAD,
            "{value:?} with len {len}: starts a fill at {first}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    for len in [0, 1, 2, 1023, 1024, u64::MAX - 1, u64::MAX] {
        check(&value, len);
    }
    // The lengths that meet the header's own bounds: n - 1, n, n + 1 for each number in it.
    let numbers = data
        .split(|b| !b.is_ascii_digit())
        .filter_map(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
    for n in numbers.take(4) {
        for len in [n.saturating_sub(1), n, n.saturating_add(1)] {
            check(&value, len);
        }
    }
});
