//! Host names and `host:port` authorities: what a valid name is, and IPv6 brackets handled in
//! one place.

/// A DNS name of letters, digits, hyphens and dots (no empty labels).
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The parts of a `host[:port]` authority as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Authority<'a> {
    /// The host without IPv6 brackets, case as written.
    pub host: &'a str,
    /// The port, when one is written.
    pub port: Option<u16>,
    /// Whether the host was in brackets (`[::1]`), as an IPv6 address must be next to a port.
    pub bracketed: bool,
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`. A bare IPv6 address (`::1`) is taken whole
/// as the host, with no port. `None` for an empty host, brackets that do not close, or a port
/// that is not 1 to 65535 written in at most 5 digits. The host itself is not judged: callers
/// say which hosts they accept.
pub(crate) fn split_authority(text: &str) -> Option<Authority<'_>> {
    let (host, port, bracketed) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (host, port, true)
        }
        None => match text.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port), false),
            _ => (text, None, false),
        },
    };
    let port = match port {
        None => None,
        Some(port) if (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(port.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        Some(_) => return None,
    };
    (!host.is_empty()).then_some(Authority {
        host,
        port,
        bracketed,
    })
}

/// `host:port` or `[v6]:port`, the host lowercase and unbracketed; the port must be there.
pub(crate) fn split_host_port(text: &str) -> Option<(String, u16)> {
    let authority = split_authority(text)?;
    Some((authority.host.to_ascii_lowercase(), authority.port?))
}

/// `host` without the brackets of an IPv6 literal (`[::1]` → `::1`); anything else unchanged.
pub(crate) fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_with_and_without_ports_and_brackets() {
        let split = |text| split_authority(text).map(|a| (a.host, a.port, a.bracketed));
        assert_eq!(split("gcr.io"), Some(("gcr.io", None, false)));
        assert_eq!(split("Proxy:3128"), Some(("Proxy", Some(3128), false)));
        assert_eq!(split("[::1]:443"), Some(("::1", Some(443), true)));
        assert_eq!(split("[::1]"), Some(("::1", None, true)));
        assert_eq!(
            split("::1"),
            Some(("::1", None, false)),
            "a bare v6 address has no port"
        );
        for bad in [
            "",
            ":80",
            "[::1",
            "[::1]x",
            "[::1]:",
            "host:",
            "host:0",
            "host:65536",
            "host:+80",
            "host:123456",
            "[]:80",
        ] {
            assert_eq!(split_authority(bad), None, "{bad:?}");
        }
        assert_eq!(
            split_host_port("[FE80::1]:80"),
            Some(("fe80::1".to_owned(), 80))
        );
        assert_eq!(split_host_port("proxy"), None, "the port must be there");
        assert_eq!(unbracket("[::1]"), "::1");
        assert_eq!(unbracket("gcr.io"), "gcr.io");
        assert_eq!(authority("::1", 443), "[::1]:443");
    }
}
