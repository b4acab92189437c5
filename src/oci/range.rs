//! Byte ranges: the one `Range` form registries and their clients use (`bytes=first-last`,
//! open-ended or suffix), parsed against a blob's length.

use http::StatusCode;
use http::header::HeaderValue;

/// A `Range` of a blob that is neither stored nor being filled, starting further in than this,
/// goes upstream as a range instead of starting a fill: a fill from the start would make the
/// client wait for, and hoard download, everything before its first byte. 4 MiB is well under a
/// second at typical registry speeds.
pub const RANGE_FILL_AHEAD: u64 = 4 << 20;

/// The status and byte span `[start, end)` a request asks of a blob of `len` bytes.
pub fn span(range: Option<&HeaderValue>, len: u64) -> Result<(StatusCode, u64, u64), &'static str> {
    match range.map(|r| parse_range(r, len)) {
        None => Ok((StatusCode::OK, 0, len)),
        Some(Ok((first, last))) => Ok((StatusCode::PARTIAL_CONTENT, first, last + 1)),
        Some(Err(reason)) => Err(reason),
    }
}

/// Parses a single `bytes=` range into an inclusive `(first, last)` within `len`.
pub fn parse_range(value: &HeaderValue, len: u64) -> Result<(u64, u64), &'static str> {
    let text = value.to_str().map_err(|_| "Range header is not text")?;
    let spec = text
        .trim()
        .strip_prefix("bytes=")
        .ok_or("Range must be bytes=first-last")?;
    if spec.contains(',') {
        return Err("only a single byte range is supported");
    }
    let (first, last) = spec
        .split_once('-')
        .ok_or("Range must be bytes=first-last")?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| "Range bounds must be numbers")
    };
    let (first, last) = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => return Err("Range must be bytes=first-last"),
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || len == 0 {
                return Err("Range is not satisfiable");
            }
            (len - suffix.min(len), len - 1)
        }
        (false, true) => (number(first)?, len.saturating_sub(1)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            if last < first {
                return Err("Range ends before it starts");
            }
            (first, last.min(len.saturating_sub(1)))
        }
    };
    if first >= len {
        return Err("Range is not satisfiable");
    }
    Ok((first, last))
}

/// Whether a `Range` starts too far into a blob for a fill to be worth starting: beyond
/// [`RANGE_FILL_AHEAD`], or a suffix (`bytes=-N`: the end of a blob of unknown length).
pub fn far_range(value: &HeaderValue) -> bool {
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|text| text.trim().strip_prefix("bytes="))
    else {
        return false; // not a byte range: the fill path answers it with a 416
    };
    let first = spec.split([',', '-']).next().unwrap_or_default().trim();
    first.is_empty() || first.parse::<u64>().is_ok_and(|s| s > RANGE_FILL_AHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_far_into_a_blob_are_told_apart() {
        let far = |s: &'static str| far_range(&HeaderValue::from_static(s));
        assert!(!far("bytes=0-0"));
        assert!(!far("bytes=4194304-"));
        assert!(far("bytes=4194305-4194305"));
        assert!(far("bytes=-10"), "a suffix is the end of the blob");
        assert!(
            !far("bytes=0-1,9999999999-"),
            "multiple ranges: the fill path refuses"
        );
        assert!(!far("items=99999999-"));
        assert!(!far("bytes=x-"));
    }

    #[test]
    fn ranges_parse_within_the_length() {
        let r = |s: &'static str, len| parse_range(&HeaderValue::from_static(s), len);
        assert_eq!(r("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(r("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(r("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(r("bytes=-1000", 100), Ok((0, 99)));
        assert_eq!(r("bytes=50-1000", 100), Ok((50, 99)));
        assert!(r("bytes=100-", 100).is_err());
        assert!(r("bytes=9-0", 100).is_err());
        assert!(r("bytes=0-1,5-6", 100).is_err());
        assert!(r("items=0-1", 100).is_err());
        assert!(r("bytes=-0", 100).is_err());
        assert!(r("bytes=x-y", 100).is_err());
    }
}
