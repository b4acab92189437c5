//! `ranges`, the client's `Range` header on a cached blob (one range or several): every span
//! lies inside the blob, several are ascending and neither overlap nor touch, and there are at
//! most `MAX_RANGES`, for blob lengths at the edges and near every number in the header. And `far_range`, which decides whether a range on a cold
//! blob starts a fill: ranges it lets start one all begin within `RANGE_FILL_AHEAD` of the start.
#![no_main]

use http::HeaderValue;
use hoard::oci::{MAX_RANGES, RANGE_FILL_AHEAD, Ranges, far_range, ranges};
use libfuzzer_sys::fuzz_target;

fn check(value: &HeaderValue, len: u64) {
    let spans = match ranges(Some(value), len) {
        Ok(Ranges::Whole) | Err(_) => return,
        Ok(Ranges::One(span)) => vec![span],
        Ok(Ranges::Many(spans)) => {
            assert!((2..=MAX_RANGES).contains(&spans.len()), "{value:?}");
            spans
        }
    };
    for span in &spans {
        assert!(
            span.start < span.end && span.end <= len,
            "{value:?} with len {len}: {span:?}"
        );
        assert!(
            far_range(value) || span.start <= RANGE_FILL_AHEAD,
            "{value:?} with len {len}: starts a fill for {span:?}"
        );
    }
    for pair in spans.windows(2) {
        assert!(pair[0].end < pair[1].start, "{value:?}: {spans:?}");
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
