//! Byte ranges: the `Range` forms registries and their clients use (`bytes=first-last`,
//! open-ended or suffix, one or several), parsed against a blob's length as RFC 9110 §14.2 says.

use std::ops::Range;

use http::header::HeaderValue;

/// A `Range` of a blob that is neither stored nor being filled, starting further in than this,
/// goes upstream as a range instead of starting a fill: a fill from the start would make the
/// client wait for, and hoard download, everything before its first byte. 4 MiB is well under a
/// second at typical registry speeds.
pub const RANGE_FILL_AHEAD: u64 = 4 << 20;

/// Ranges a request may ask for at once; past them the whole blob is the answer (as nginx's
/// `max_ranges`). Lazy-pulling snapshotters ask for a few chunks of a layer at a time.
pub const MAX_RANGES: usize = 16;

/// What a request asks of a blob of known length: byte spans are `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// The whole blob: no `Range`, or more than [`MAX_RANGES`] of them.
    Whole,
    /// One span: a `206` with a `Content-Range`.
    One(Range<u64>),
    /// Two or more spans, ascending, neither overlapping nor adjacent: a `206`
    /// `multipart/byteranges`.
    Many(Vec<Range<u64>>),
}

/// What `range` (if any) asks of a blob of `len` bytes. Unsatisfiable ranges are dropped;
/// overlapping or adjacent ones are merged, in ascending order. Bad syntax, or no satisfiable
/// range left, is an error (answered with a `416`).
pub fn ranges(range: Option<&HeaderValue>, len: u64) -> Result<Ranges, &'static str> {
    let Some(value) = range else {
        return Ok(Ranges::Whole);
    };
    let specs = specs(value)?;
    if specs.len() > MAX_RANGES {
        return Ok(Ranges::Whole);
    }
    let mut spans: Vec<Range<u64>> = specs.into_iter().filter_map(|s| s.within(len)).collect();
    spans.sort_by_key(|span| span.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    match merged.len() {
        0 => Err("Range is not satisfiable"),
        1 => Ok(Ranges::One(merged.swap_remove(0))),
        _ => Ok(Ranges::Many(merged)),
    }
}

/// One range as written.
#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `first-` or `first-last` (inclusive; `None`: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl Spec {
    /// The span `[start, end)` this range asks of `len` bytes; `None` if it is unsatisfiable.
    fn within(self, len: u64) -> Option<Range<u64>> {
        match self {
            Spec::From(first, _) if first >= len => None,
            Spec::From(first, last) => Some(first..last.map_or(len, |l| l.min(len - 1) + 1)),
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => (len > 0).then(|| len - n.min(len)..len),
        }
    }
}

/// The ranges of a `bytes=` header, in order. Empty list elements are skipped (RFC 9110
/// §5.6.1.2); anything else that is not a range makes the whole header bad.
fn specs(value: &HeaderValue) -> Result<Vec<Spec>, &'static str> {
    const SYNTAX: &str = "Range must be bytes=first-last[,first-last...]";
    let text = value.to_str().map_err(|_| "Range header is not text")?;
    let set = text.trim().strip_prefix("bytes=").ok_or(SYNTAX)?;
    let number = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("Range bounds must be numbers");
        }
        s.parse::<u64>().map_err(|_| "Range bounds must be numbers")
    };
    let mut specs = Vec::new();
    for element in set.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (first, last) = element.split_once('-').ok_or(SYNTAX)?;
        let spec = match (first.trim().is_empty(), last.trim().is_empty()) {
            (true, true) => return Err(SYNTAX),
            (true, false) => Spec::Suffix(number(last)?),
            (false, true) => Spec::From(number(first)?, None),
            (false, false) => {
                let (first, last) = (number(first)?, number(last)?);
                if last < first {
                    return Err("Range ends before it starts");
                }
                Spec::From(first, Some(last))
            }
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(SYNTAX);
    }
    Ok(specs)
}

/// Whether a `Range` reaches too far into a blob for a fill to be worth starting: one of its
/// ranges starts beyond [`RANGE_FILL_AHEAD`], or is a suffix (`bytes=-N`: the end of a blob of
/// unknown length). More than [`MAX_RANGES`] ranges are not far: the answer is the whole blob.
pub fn far_range(value: &HeaderValue) -> bool {
    let Ok(specs) = specs(value) else {
        return false; // not a byte range: the fill path answers it with a 416
    };
    specs.len() <= MAX_RANGES
        && specs.iter().any(|spec| match *spec {
            Spec::Suffix(_) => true,
            Spec::From(first, _) => first > RANGE_FILL_AHEAD,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_far_into_a_blob_are_told_apart() {
        let far = |s: &str| far_range(&HeaderValue::from_str(s).unwrap_or_else(|e| panic!("{e}")));
        assert!(!far("bytes=0-0"));
        assert!(!far("bytes=4194304-"));
        assert!(far("bytes=4194305-4194305"));
        assert!(far("bytes=-10"), "a suffix is the end of the blob");
        assert!(far("bytes=0-1,9999999999-"), "the furthest range counts");
        assert!(far("bytes=0-1,-5"));
        assert!(!far("bytes=0-1,4096-8191"));
        let many = format!("bytes={}", vec!["99999999-"; 17].join(","));
        assert!(!far(&many), "past the cap: the whole blob");
        assert!(!far("items=99999999-"));
        assert!(!far("bytes=x-"));
    }

    #[test]
    fn ranges_parse_within_the_length() {
        // One range as an inclusive `(first, last)`; anything else an error.
        let r = |s: &'static str, len| match ranges(Some(&HeaderValue::from_static(s)), len)? {
            Ranges::One(span) => Ok((span.start, span.end - 1)),
            Ranges::Whole | Ranges::Many(_) => Err("not a single byte range"),
        };
        assert_eq!(r("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(r("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(r("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(r("bytes=-1000", 100), Ok((0, 99)));
        assert_eq!(r("bytes=50-1000", 100), Ok((50, 99)));
        assert_eq!(r("bytes=0-1,2-3", 100), Ok((0, 3)), "adjacent: merged");
        assert!(r("bytes=100-", 100).is_err());
        assert!(r("bytes=9-0", 100).is_err());
        assert!(r("bytes=0-1,5-6", 100).is_err());
        assert!(r("items=0-1", 100).is_err());
        assert!(r("bytes=-0", 100).is_err());
        assert!(r("bytes=x-y", 100).is_err());
        assert!(r("bytes=+1-2", 100).is_err(), "digits only");
    }

    fn of(s: &str, len: u64) -> Result<Ranges, &'static str> {
        let value = HeaderValue::from_str(s).unwrap_or_else(|e| panic!("{e}"));
        ranges(Some(&value), len)
    }

    #[test]
    fn several_ranges_are_sorted_and_merged() {
        use Ranges::{Many, One, Whole};
        assert_eq!(ranges(None, 10), Ok(Whole));
        assert_eq!(
            of("bytes=0-99,4096-8191", 10_000),
            Ok(Many(vec![0..100, 4096..8192]))
        );
        assert_eq!(
            of("bytes=500-599, 0-9 ,-10", 1000),
            Ok(Many(vec![0..10, 500..600, 990..1000])),
            "ascending, whatever the order asked"
        );
        assert_eq!(
            of("bytes=0-9,5-19,20-29,40-49", 100),
            Ok(Many(vec![0..30, 40..50])),
            "overlapping and adjacent merged"
        );
        assert_eq!(of("bytes=0-9,0-9,0-", 100), Ok(One(0..100)));
        assert_eq!(of("bytes=10-19,,", 100), Ok(One(10..20)), "empty elements");
        assert_eq!(
            of("bytes=0-9,200-300,-0", 100),
            Ok(One(0..10)),
            "unsatisfiable parts dropped"
        );
    }

    #[test]
    fn unsatisfiable_bad_and_too_many_ranges() {
        assert!(of("bytes=200-300,-0", 100).is_err(), "none satisfiable");
        assert!(of("bytes=0-1,5-", 0).is_err(), "nothing in an empty blob");
        assert!(of("bytes=0-1,2-1", 100).is_err(), "one bad range: all bad");
        assert!(of("bytes=0-1,x", 100).is_err());
        assert!(of("bytes=0-1,-", 100).is_err());
        assert!(of("bytes=,", 100).is_err());
        assert!(of("bytes=", 100).is_err());
        let ranges_of = |n: usize| {
            let specs: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 10, i * 10)).collect();
            of(&format!("bytes={}", specs.join(",")), 1000)
        };
        assert!(matches!(ranges_of(16), Ok(Ranges::Many(spans)) if spans.len() == 16));
        assert_eq!(ranges_of(17), Ok(Ranges::Whole), "past the cap: whole");
        assert_eq!(
            of("bytes=1-1,x-y", 10).err(),
            Some("Range bounds must be numbers")
        );
    }
}
