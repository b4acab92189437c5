//! A small `multipart/byteranges` reader (RFC 9110 §14.6) for checking hoard's answers to
//! several ranges part by part against the blob they come from.

use std::ops::Range;

use bytes::Bytes;

/// Checks a `206 multipart/byteranges` answer: its `Content-Length` is its body's length, and it
/// holds exactly `spans` of `blob`, in order, each as an `application/octet-stream` part with
/// its `Content-Range`.
pub(crate) async fn assert_byteranges(
    response: reqwest::Response,
    blob: &[u8],
    spans: &[Range<usize>],
) {
    assert_eq!(response.status(), 206);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart/byteranges: {content_type}"))
        .to_owned();
    let length: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), length, "Content-Length is the body's length");
    let parts = parts(&body, &boundary);
    assert_eq!(parts.len(), spans.len(), "one part per span");
    for (part, span) in parts.iter().zip(spans) {
        assert_eq!(part.content_type, "application/octet-stream");
        let content_range = format!("bytes {}-{}/{}", span.start, span.end - 1, blob.len());
        assert_eq!(part.content_range, content_range);
        assert!(
            part.bytes[..] == blob[span.clone()],
            "{content_range}: bytes differ"
        );
    }
}

/// One part of a `multipart/byteranges` body.
struct Part {
    content_type: String,
    content_range: String,
    bytes: Bytes,
}

/// Reads the parts of a body: each part's length comes from its `Content-Range`, so a boundary
/// inside the bytes cannot cut them. Panics on anything that is not the framing.
fn parts(body: &Bytes, boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut at = expect(body, 0, &delimiter);
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--\r\n") {
            assert_eq!(at + 4, body.len(), "nothing after the closing delimiter");
            return parts;
        }
        at = expect(body, at, "\r\n");
        let (mut content_type, mut content_range) = (String::new(), String::new());
        loop {
            let end = at + find(&body[at..], b"\r\n").expect("a header line ends");
            let line = std::str::from_utf8(&body[at..end]).unwrap();
            at = end + 2;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.trim().to_owned(),
                "content-range" => content_range = value.trim().to_owned(),
                other => panic!("unexpected part header {other}"),
            }
        }
        let (first, last) = content_range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(span, _)| span.split_once('-'))
            .expect("Content-Range: bytes a-b/len");
        let len = last.parse::<usize>().unwrap() - first.parse::<usize>().unwrap() + 1;
        let bytes = body.slice(at..at + len);
        at = expect(body, at + len, &format!("\r\n{delimiter}"));
        parts.push(Part {
            content_type,
            content_range,
            bytes,
        });
    }
}

fn expect(body: &[u8], at: usize, text: &str) -> usize {
    assert!(
        body[at..].starts_with(text.as_bytes()),
        "expected {text:?} at byte {at}"
    );
    at + text.len()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
