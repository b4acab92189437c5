//! Requests between peers, signed with the fleet's shared secret (`hoard-fleet-v2`):
//! HMAC-SHA-256 (aws-lc-rs, the crypto hoard's TLS already uses) over the method, the path and
//! query, how the requester reaches the registry and whether it lent its client hoard's account,
//! the time, a random nonce, and the request's `Range`, `Accept` and `Authorization`. The secret
//! itself never crosses the network; a signature is good once ([`super::replay`]), within
//! [`MAX_SKEW`] of its time. A `v1` signature (no nonce) is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use http::header::{ACCEPT, AUTHORIZATION, RANGE};
use http::{HeaderMap, HeaderValue};

use super::replay::Replays;

/// The header that carries a peer request's time and signature: `<unix seconds> <hex>`.
pub(crate) const SIGNATURE: &str = "hoard-fleet-signature";

/// How far a request's time may be from the receiver's clock.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(60);

/// What is signed, besides the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// What the request is for, and how the requester reaches the registry.
    pub mode: Mode,
    /// The request's headers: its `Range`, `Accept` and `Authorization` are signed.
    pub headers: &'a HeaderMap,
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
    fn message(&self, time: u64, nonce: &[u8; 16]) -> Vec<u8> {
        let mut message = format!(
            "hoard-fleet-v2\n{}\n{}\n{}\n{time}\n{}",
            self.method,
            self.path_and_query,
            self.mode.as_str(),
            const_hex::encode(nonce)
        )
        .into_bytes();
        for name in [RANGE, ACCEPT, AUTHORIZATION] {
            message.push(b'\n');
            message.extend_from_slice(name.as_str().as_bytes());
            for value in self.headers.get_all(&name) {
                message.push(b'\t');
                message.extend_from_slice(value.as_bytes());
            }
        }
        message
    }
}

/// The signature header for `request`, made now: `<unix seconds> <nonce hex> <tag hex>`.
pub(crate) fn sign(secret: &[u8], request: Signed<'_>) -> HeaderValue {
    let time = unix_now();
    let mut nonce = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut nonce);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &request.message(time, &nonce));
    let text = format!(
        "{time} {} {}",
        const_hex::encode(nonce),
        const_hex::encode(tag.as_ref())
    );
    // Digits, spaces and hex: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0 0 0"))
}

/// Checks a request's signature header, and that it was not used before (`replays`); `Err` is
/// the reason to refuse it.
pub(crate) fn verify(
    secret: &[u8],
    request: Signed<'_>,
    header: Option<&HeaderValue>,
    replays: &Replays,
) -> Result<(), &'static str> {
    let header = header.ok_or("no fleet signature: only peers of this fleet may ask here")?;
    let text = header
        .to_str()
        .map_err(|_| "the fleet signature is not text")?;
    let parts: Vec<&str> = text.split(' ').collect();
    let (time, nonce, hex) = match parts.as_slice() {
        [time, nonce, hex] => (time, nonce, hex),
        [_, _] => {
            return Err(
                "a v1 fleet signature: every node of the fleet must run this hoard version",
            );
        }
        _ => return Err("the fleet signature is not `<time> <nonce> <hex>`"),
    };
    let time: u64 = time
        .parse()
        .map_err(|_| "the fleet signature's time is not a number")?;
    let now = unix_now();
    if now.abs_diff(time) > MAX_SKEW.as_secs() {
        return Err("the fleet signature is too old or from the future (check the clocks)");
    }
    let mut nonce_bytes = [0u8; 16];
    const_hex::decode_to_slice(nonce, &mut nonce_bytes)
        .map_err(|_| "the fleet signature's nonce is not 32 hex digits")?;
    let tag = decode_hex(hex).ok_or("the fleet signature is not hex")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &request.message(time, &nonce_bytes), &tag).map_err(
        |_| "the fleet signature does not match (is fleet.secret_file the same on every node?)",
    )?;
    if !replays.first_use(nonce_bytes, time, now, MAX_SKEW) {
        return Err("this fleet signature was used before (a replayed request)");
    }
    Ok(())
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

    fn request<'a>(path: &'a str, headers: &'a HeaderMap) -> Signed<'a> {
        Signed {
            method: "GET",
            path_and_query: path,
            mode: Mode::Mirror { lent: false },
            headers,
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
    fn a_signed_request_verifies_once_and_nothing_else_does() {
        let none = HeaderMap::new();
        let path = "/v2/a/blobs/sha256:00?ns=gcr.io";
        let header = sign(SECRET, request(path, &none));
        let verify_with = |request: Signed<'_>, header: Option<&HeaderValue>| {
            verify(SECRET, request, header, &Replays::default())
        };
        assert_eq!(verify_with(request(path, &none), Some(&header)), Ok(()));
        // Another path, another mode, another Range, another secret, no header, garbage.
        assert!(
            verify_with(
                request("/v2/b/blobs/sha256:00?ns=gcr.io", &none),
                Some(&header)
            )
            .is_err()
        );
        let proxy = Signed {
            mode: Mode::Proxy { lent: true },
            ..request(path, &none)
        };
        assert!(verify_with(proxy, Some(&header)).is_err());
        let mut ranged = HeaderMap::new();
        ranged.insert(RANGE, HeaderValue::from_static("bytes=0-9"));
        assert!(verify_with(request(path, &ranged), Some(&header)).is_err());
        let replays = Replays::default();
        assert!(
            verify(
                b"another secret!!",
                request(path, &none),
                Some(&header),
                &replays
            )
            .is_err()
        );
        assert!(verify_with(request("/", &none), None).is_err());
        for bad in [
            "",
            "x",
            "1 zz",
            "1 2 zz",
            "99999999999999999999 00 00",
            "ü 00 00",
        ] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                verify_with(request("/", &none), Some(&value)).is_err(),
                "{bad}"
            );
        }
        // Good once: the same signature again is a replay.
        assert_eq!(
            verify(SECRET, request(path, &none), Some(&header), &replays),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, request(path, &none), Some(&header), &replays),
            Err("this fleet signature was used before (a replayed request)")
        );
    }

    #[test]
    fn an_old_or_v1_signature_is_refused() {
        let none = HeaderMap::new();
        let old = unix_now() - MAX_SKEW.as_secs() - 10;
        let nonce = [7u8; 16];
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let tag = hmac::sign(&key, &request("/", &none).message(old, &nonce));
        let header = HeaderValue::from_str(&format!(
            "{old} {} {}",
            const_hex::encode(nonce),
            const_hex::encode(tag.as_ref())
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let replays = Replays::default();
        assert_eq!(
            verify(SECRET, request("/", &none), Some(&header), &replays),
            Err("the fleet signature is too old or from the future (check the clocks)")
        );
        let v1 =
            HeaderValue::from_str(&format!("{} 00", unix_now())).unwrap_or_else(|e| panic!("{e}"));
        let refused = verify(SECRET, request("/", &none), Some(&v1), &replays);
        assert!(refused.is_err_and(|why| why.contains("v1")));
    }
}
