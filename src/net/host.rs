//! Host names and `host:port` authorities: what a valid name is, and IPv6 brackets handled in
//! one place.

/// A DNS name of letters, digits, hyphens and dots (no empty labels).
pub fn is_dns_name(name: &str) -> bool {
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
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host:port` or `[v6]:port`, the host lowercase and unbracketed; the port must be there.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once(']')?;
            (host, port.strip_prefix(':')?)
        }
        None => text.rsplit_once(':')?,
    };
    let port = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// `host` without the brackets of an IPv6 literal (`[::1]` → `::1`); anything else unchanged.
pub fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}
