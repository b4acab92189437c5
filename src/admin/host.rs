//! Which `Host` the admin listener answers (a defence against DNS rebinding: a web page whose
//! name its owner points at 127.0.0.1 must not read the status page through the operator's
//! browser): the address the client connected to, a loopback name or address, or a name in
//! `admin.names`. Any port goes with the first two; a Kubernetes probe names the pod's address.

use std::net::{IpAddr, SocketAddr};

use http::Request;
use http::header::HOST;

/// Why the request's `Host` is not one the admin listener answers; `None` when it is.
pub(super) fn misnamed<B>(
    request: &Request<B>,
    local: Option<SocketAddr>,
    names: &[String],
) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => match request.headers().get(HOST).map(|v| v.to_str()) {
            Some(Ok(host)) => host.to_owned(),
            Some(Err(_)) => return Some("the Host header is not text".to_owned()),
            None => return Some("a request needs a Host header".to_owned()),
        },
    };
    let authority = authority.trim().to_ascii_lowercase();
    if answers(&authority, local, names) {
        return None;
    }
    Some(format!(
        "Host {authority:?} is not this listener's address, a loopback name or one of admin.names"
    ))
}

/// Whether `authority` (lowercase) names this listener.
fn answers(authority: &str, local: Option<SocketAddr>, names: &[String]) -> bool {
    let host = host_of(authority);
    if host == "localhost" || names.iter().any(|n| n == authority || n == host) {
        return true;
    }
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    ip.is_loopback() || local.is_some_and(|local| local.ip() == ip)
}

/// The host of `host[:port]` or `[v6][:port]`, brackets kept.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(host: &'static str) -> bool {
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert(HOST, http::HeaderValue::from_static(host));
        let local = "10.0.0.7:9128".parse().ok();
        misnamed(&request, local, &["hoard.internal".to_owned()]).is_none()
    }

    #[test]
    fn loopback_the_local_address_and_admin_names_are_answered() {
        for host in [
            "localhost",
            "LocalHost:1",
            "127.0.0.1",
            "127.0.0.1:9128",
            "[::1]",
            "[::1]:80",
            "10.0.0.7:9128",
            "10.0.0.7",
            "hoard.internal:9128",
        ] {
            assert!(named(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "10.0.0.8:9128",
            "[::2]:9128",
            "hoard.internal.evil",
            "",
        ] {
            assert!(!named(host), "{host}");
        }
        let bare = Request::new(());
        assert!(misnamed(&bare, None, &[]).is_some());
    }
}
