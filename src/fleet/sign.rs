//! Requests between peers, signed with the fleet's shared secret: HMAC-SHA-256 (aws-lc-rs, the
//! crypto hoard's TLS already uses) over the method, the path and query, how the requester
//! reaches the registry and the time. The secret itself never crosses the network; a signature
//! is good for one such request within [`MAX_SKEW`] of its time, for an object any peer may read
//! anyway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use http::HeaderValue;

/// The header that carries a peer request's time and signature: `<unix seconds> <hex>`.
pub(crate) const SIGNATURE: &str = "hoard-fleet-signature";

/// How far a request's time may be from the receiver's clock.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(300);

/// What is signed, besides the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// What the request is for, and how the requester reaches the registry.
    pub mode: Mode,
}

/// What a signed request is for: a registry read, how the requester reaches the registry and
/// whether it lent its client hoard's account (`lend_to`: the owner never lends more), or the
/// peer's metrics. On the wire (the `hoard-fleet-mode` header and the signed text): `proxy`,
/// `proxy+lent`, `mirror`, `mirror+lent`, `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A registry read for a client with its own credentials (an intercepted connection).
    Proxy {
        /// Whether the node lent the client hoard's account.
        lent: bool,
    },
    /// A registry read with hoard's credentials, or anonymous (the mirror).
    Mirror {
        /// Whether the node lent the client hoard's account.
        lent: bool,
    },
    /// The peer's own metrics ([`super::METRICS_PATH`]).
    Stats,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Proxy { lent: false },
        Mode::Proxy { lent: true },
        Mode::Mirror { lent: false },
        Mode::Mirror { lent: true },
        Mode::Stats,
    ];

    /// The wire string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Proxy { lent: false } => "proxy",
            Mode::Proxy { lent: true } => "proxy+lent",
            Mode::Mirror { lent: false } => "mirror",
            Mode::Mirror { lent: true } => "mirror+lent",
            Mode::Stats => "stats",
        }
    }

    /// The mode a wire string names.
    pub(crate) fn parse(text: &[u8]) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str().as_bytes() == text)
    }

    /// Whether the requester lent its client hoard's account.
    pub(crate) fn lent(self) -> bool {
        matches!(
            self,
            Mode::Proxy { lent: true } | Mode::Mirror { lent: true }
        )
    }
}

impl Signed<'_> {
    fn message(&self, time: u64) -> String {
        format!(
            "hoard-fleet-v1\n{}\n{}\n{}\n{time}",
            self.method,
            self.path_and_query,
            self.mode.as_str()
        )
    }
}

/// The signature header for `request`, made now.
pub(crate) fn sign(secret: &[u8], request: Signed<'_>) -> HeaderValue {
    let time = unix_now();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, request.message(time).as_bytes());
    let mut text = format!("{time} ");
    for byte in tag.as_ref() {
        text.push_str(&format!("{byte:02x}"));
    }
    // Digits, a space and hex: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0 0"))
}

/// Checks a request's signature header; `Err` is the reason to refuse it.
pub(crate) fn verify(
    secret: &[u8],
    request: Signed<'_>,
    header: Option<&HeaderValue>,
) -> Result<(), &'static str> {
    let header = header.ok_or("no fleet signature: only peers of this fleet may ask here")?;
    let (time, hex) = header
        .to_str()
        .ok()
        .and_then(|text| text.split_once(' '))
        .ok_or("the fleet signature is not `<time> <hex>`")?;
    let time: u64 = time
        .parse()
        .map_err(|_| "the fleet signature's time is not a number")?;
    let now = unix_now();
    if now.abs_diff(time) > MAX_SKEW.as_secs() {
        return Err("the fleet signature is too old or from the future (check the clocks)");
    }
    let tag = decode_hex(hex).ok_or("the fleet signature is not hex")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, request.message(time).as_bytes(), &tag).map_err(
        |_| "the fleet signature does not match (is fleet.secret_file the same on every node?)",
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    fn request(path: &str) -> Signed<'_> {
        Signed {
            method: "GET",
            path_and_query: path,
            mode: Mode::Mirror { lent: false },
        }
    }

    #[test]
    fn modes_keep_their_wire_strings() {
        for (mode, text) in [
            (Mode::Proxy { lent: false }, "proxy"),
            (Mode::Proxy { lent: true }, "proxy+lent"),
            (Mode::Mirror { lent: false }, "mirror"),
            (Mode::Mirror { lent: true }, "mirror+lent"),
            (Mode::Stats, "stats"),
        ] {
            assert_eq!(mode.as_str(), text);
            assert_eq!(Mode::parse(text.as_bytes()), Some(mode));
        }
        assert_eq!(Mode::parse(b"Mirror"), None);
        assert_eq!(Mode::parse(b""), None);
    }

    #[test]
    fn a_signed_request_verifies_and_nothing_else_does() {
        let header = sign(SECRET, request("/v2/a/blobs/sha256:00?ns=gcr.io"));
        assert_eq!(
            verify(
                SECRET,
                request("/v2/a/blobs/sha256:00?ns=gcr.io"),
                Some(&header)
            ),
            Ok(())
        );
        // Another path, another mode, another secret, no header, garbage.
        assert!(
            verify(
                SECRET,
                request("/v2/b/blobs/sha256:00?ns=gcr.io"),
                Some(&header)
            )
            .is_err()
        );
        let proxy = Signed {
            mode: Mode::Proxy { lent: true },
            ..request("/v2/a/blobs/sha256:00?ns=gcr.io")
        };
        assert!(verify(SECRET, proxy, Some(&header)).is_err());
        assert!(
            verify(
                b"another secret!!",
                request("/v2/a/blobs/sha256:00?ns=gcr.io"),
                Some(&header)
            )
            .is_err()
        );
        assert!(verify(SECRET, request("/"), None).is_err());
        for bad in ["", "x", "1 zz", "99999999999999999999 00", "1 0", "ü 00"] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert!(verify(SECRET, request("/"), Some(&value)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_old_signature_is_refused() {
        let old = unix_now() - MAX_SKEW.as_secs() - 10;
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let tag = hmac::sign(&key, request("/").message(old).as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let header =
            HeaderValue::from_str(&format!("{old} {hex}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            verify(SECRET, request("/"), Some(&header)),
            Err("the fleet signature is too old or from the future (check the clocks)")
        );
    }
}
