//! A plain `GET` or `HEAD`, for the registry's quick path: a `GET` or `HEAD` with nothing that
//! would make its answer other than a whole object (no body, range or condition, no connection
//! management), whether hyper parsed it, hoard's h2 front decoded it (`registry/h2/`) or an
//! HTTP/1.1 head is parsed here in place (with httparse, hyper's own parser, for
//! `registry/h1.rs`); and a whole response's head written out as hyper would write it. Anything
//! else is left to hyper, which answers it (or its error) as it always did.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    ACCEPT, CONNECTION, CONTENT_LENGTH, EXPECT, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderName, Method, Request, Response};

/// Request headers that ask for part of an object or for it conditionally.
pub const PARTIAL_OR_CONDITIONAL: [HeaderName; 6] = [
    RANGE,
    IF_MATCH,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
];

/// A `GET` or `HEAD` that asks for a whole object and nothing else.
#[derive(Debug)]
pub struct PlainGet<'a> {
    /// A `HEAD`, else a `GET`.
    pub head: bool,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, if any.
    pub query: Option<&'a str>,
    /// The values of the `Accept` headers.
    pub accept: Vec<&'a str>,
}

impl<'a> PlainGet<'a> {
    /// `request` as a [`PlainGet`]; `None` when it is not a `GET` or `HEAD`, or asks for part of
    /// an object or for it conditionally. (hyper has dealt with the connection's headers.)
    pub fn of<B>(request: &'a Request<B>) -> Option<PlainGet<'a>> {
        let head = match *request.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        let headers = request.headers();
        if PARTIAL_OR_CONDITIONAL
            .iter()
            .any(|name| headers.contains_key(name))
        {
            return None;
        }
        let accept = headers
            .get_all(ACCEPT)
            .iter()
            .map(|value| value.to_str().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(PlainGet {
            head,
            path: request.uri().path(),
            query: request.uri().query(),
            accept,
        })
    }

    /// A request of `method` for `target` with `headers` (names in any case) as a
    /// [`PlainGet`]; `None` when it is not a `GET` or `HEAD` of an origin-form target that
    /// asks for a whole object with nothing else: no body, connection header, range or
    /// condition. The one check for HTTP/1.1 heads parsed here and for h2 requests
    /// (`registry/h2`).
    pub fn of_parts<'h>(
        method: &[u8],
        target: &'a [u8],
        headers: impl Iterator<Item = (&'h [u8], &'a [u8])>,
    ) -> Option<PlainGet<'a>> {
        let head = match method {
            b"GET" => false,
            b"HEAD" => true,
            _ => return None,
        };
        if !target.starts_with(b"/") || !target.iter().all(|&b| in_uri(b)) {
            return None;
        }
        // All ASCII, as `in_uri` holds.
        let target = std::str::from_utf8(target).ok()?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut accept = Vec::new();
        for (name, value) in headers {
            if REFUSED
                .iter()
                .chain(&PARTIAL_OR_CONDITIONAL)
                .any(|refused| name.eq_ignore_ascii_case(refused.as_str().as_bytes()))
            {
                return None;
            }
            if name.eq_ignore_ascii_case(ACCEPT.as_str().as_bytes()) {
                accept.push(std::str::from_utf8(value).ok()?);
            }
        }
        Some(PlainGet {
            head,
            path,
            query,
            accept,
        })
    }

    /// The method.
    pub fn method(&self) -> Method {
        if self.head { Method::HEAD } else { Method::GET }
    }
}

/// Headers a quick request may carry at most; more, and hyper takes it.
const MAX_HEADERS: usize = 32;

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A plain `GET` or `HEAD`, `len` bytes of head and no body.
    Get { get: PlainGet<'a>, len: usize },
    /// The start of a head, within the size limit: more bytes are needed to say.
    Partial,
    /// Anything else (another method, a body, a header the quick path does not take, an
    /// error): for hyper.
    Other,
}

/// Parses the head at the start of `buf`, of at most `limit` bytes (`proxy.max_header_size`).
pub fn parse(buf: &[u8], limit: usize) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= limit => len,
        Ok(httparse::Status::Partial) if buf.len() <= limit => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    if request.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Parsed::Other;
    };
    let headers = request.headers.iter().map(|h| (h.name.as_bytes(), h.value));
    match PlainGet::of_parts(method.as_bytes(), target.as_bytes(), headers) {
        Some(get) => Parsed::Get { get, len },
        None => Parsed::Other,
    }
}

/// Headers that make a request more than a plain `GET`, or that hyper may refuse it for: a
/// body, or the connection's own (which h2 forbids). [`PARTIAL_OR_CONDITIONAL`] too.
const REFUSED: [HeaderName; 8] = [
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    CONNECTION,
    EXPECT,
    UPGRADE,
    TE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Whether a request target may hold `byte` (RFC 3986: unreserved, reserved and `%`, no
/// fragment), as the URI hyper would parse.
fn in_uri(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=%".contains(&byte)
}

/// The head of `response` as hyper writes it: the status line, its headers and `date`.
pub(crate) fn encode_head(response: &Response<Bytes>) -> Vec<u8> {
    let lines: usize = response
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    // The status line, the date and the blank line take less than 80 bytes.
    let mut out = Vec::with_capacity(lines + 80);
    let status = response.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    with_date(|date| out.extend_from_slice(date.as_bytes()));
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// Calls `f` with the `date` header's value for now (made at most once a second on each
/// thread), as hyper sends it with each response.
pub(crate) fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    DATE.with(|date| f(date.borrow_mut().now()))
}

thread_local! {
    /// The `date` header's value, made at most once a second on each thread.
    static DATE: RefCell<Date> = const { RefCell::new(Date { second: 0, text: String::new() }) };
}

/// An HTTP date and the second it is of.
struct Date {
    second: u64,
    text: String,
}

impl Date {
    /// The date of now.
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> String {
        match parse(head.as_bytes(), 8192) {
            Parsed::Get { get, len } => format!(
                "{} {} {:?} {:?} {}",
                get.method(),
                get.path,
                get.query,
                get.accept,
                len == head.len()
            ),
            Parsed::Partial => "partial".into(),
            Parsed::Other => "other".into(),
        }
    }

    #[test]
    fn plain_gets_and_heads_are_asks() {
        assert_eq!(
            parsed("GET /v2/a/blobs/sha256:00?ns=x HTTP/1.1\r\nHost: h\r\n\r\n"),
            "GET /v2/a/blobs/sha256:00 Some(\"ns=x\") [] true"
        );
        assert_eq!(
            parsed("HEAD /v2/a/manifests/v1 HTTP/1.1\r\naccept: a/b\r\nAccept: c/d\r\n\r\n"),
            "HEAD /v2/a/manifests/v1 None [\"a/b\", \"c/d\"] true"
        );
    }

    #[test]
    fn a_head_cut_short_waits_for_more_within_the_limit() {
        assert_eq!(
            parsed("GET /v2/a/blobs/sha256:00 HTTP/1.1\r\nHo"),
            "partial"
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert!(matches!(parse(long.as_bytes(), 8192), Parsed::Other));
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        for head in [
            "POST /v2/a/blobs/uploads/ HTTP/1.1\r\n\r\n",
            "GET /v2/ HTTP/1.0\r\n\r\n",
            "GET http://h/v2/ HTTP/1.1\r\n\r\n",
            "GET /v2/a#b HTTP/1.1\r\n\r\n",
            "GET /v2/a\"b HTTP/1.1\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert_eq!(parsed(head), "other", "{head:?}");
        }
        let not_text = b"GET /v2/ HTTP/1.1\r\nAccept: \xff\r\n\r\n";
        assert!(matches!(parse(not_text, 8192), Parsed::Other));
        let many: String = (0..40).map(|i| format!("x-{i}: y\r\n")).collect();
        assert_eq!(parsed(&format!("GET /v2/ HTTP/1.1\r\n{many}\r\n")), "other");
    }

    #[test]
    fn a_head_is_written_as_hyper_writes_it() {
        let mut response = Response::new(Bytes::from_static(b"{}"));
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, http::HeaderValue::from(2));
        let head = String::from_utf8_lossy(&encode_head(&response)).into_owned();
        let (start, date) = head.split_once("date: ").unwrap_or((&head, ""));
        assert_eq!(start, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
        assert!(date.ends_with(" GMT\r\n\r\n"), "{date:?}");
        assert!(
            httpdate::parse_http_date(date.trim_end()).is_ok(),
            "{date:?}"
        );
    }
}
