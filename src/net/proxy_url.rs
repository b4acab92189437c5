//! Proxy URLs: a parent proxy as `upstream.proxy` names it (`http://` or `socks5://`, with
//! optional percent-encoded credentials), parsed and shown without its password.

use std::fmt;
use std::net::IpAddr;

use super::host::{authority, is_dns_name, split_host_port};

/// How hoard speaks to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `CONNECT host:port HTTP/1.1`, then the destination's bytes.
    HttpConnect,
    /// SOCKS5 CONNECT with the destination's name, so the parent resolves it (`socks5h`).
    Socks5,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpConnect => "http",
            Protocol::Socks5 => "socks5",
        }
    }
}

/// `upstream.proxy` as written, which may hold a password: `Debug` shows it redacted.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct ParentUrl(pub String);

impl fmt::Debug for ParentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

/// A parent proxy: `http://[user:password@]host:port` or `socks5://…`. Shown (`Display`) without
/// its credentials, and `Debug` redacts the password, so it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Parent {
    pub(crate) protocol: Protocol,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<(String, String)>,
}

impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.protocol.as_str();
        write!(f, "{scheme}://{}", authority(&self.host, self.port))
    }
}

impl fmt::Debug for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some((user, _)) => write!(f, "Parent({self}, user {user:?}, password redacted)"),
            None => write!(f, "Parent({self})"),
        }
    }
}

impl Parent {
    /// Parses a parent's URL. `socks5h://` is taken as `socks5://`: hoard always hands the parent
    /// the destination's name. The user and password are percent-decoded. Messages never repeat
    /// the password.
    pub fn parse(text: &str) -> Result<Parent, String> {
        let text = text.trim();
        let shown = redact(text);
        let bad = |why: &str| {
            format!(
                "{shown:?} {why}; expected http://[user:password@]host:port or \
                 socks5://[user:password@]host:port"
            )
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad("has no scheme"));
        };
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "http" => Protocol::HttpConnect,
            "socks5" | "socks5h" => Protocol::Socks5,
            _ => return Err(bad(&format!("has the unsupported scheme {scheme:?}"))),
        };
        // A trailing slash is how many write proxy URLs (`HTTPS_PROXY=http://proxy:3128/`).
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("has a path"));
        }
        let (userinfo, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, rest),
        };
        let (host, port) = split_host_port(host_port).ok_or_else(|| bad("needs host:port"))?;
        if !is_dns_name(&host) && host.parse::<IpAddr>().is_err() {
            return Err(bad("has no usable host"));
        }
        let credentials = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |part| percent_decode(part).ok_or_else(|| bad("has a bad %-escape"));
                Some((decode(user)?, decode(password)?))
            }
            None => None,
        };
        // RFC 1929: both are 1 to 255 bytes.
        if protocol == Protocol::Socks5
            && let Some((user, password)) = &credentials
            && ![user, password]
                .iter()
                .all(|s| (1..=255).contains(&s.len()))
        {
            return Err(bad(
                "needs a SOCKS5 user and password of 1 to 255 bytes each",
            ));
        }
        Ok(Parent {
            protocol,
            host,
            port,
            credentials,
        })
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next()?, bytes.next()?];
        let hex = std::str::from_utf8(&hex).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        out.push(u8::from_str_radix(hex, 16).ok()?);
    }
    String::from_utf8(out).ok()
}

/// The URL with what comes before its host's `@` replaced, so an error can quote it.
fn redact(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => text.to_owned(),
        },
        None if text.contains('@') => "***".to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Parent, String> {
        Parent::parse(text)
    }

    #[test]
    fn parent_urls_parse_with_decoded_credentials() {
        let parent = parse("http://us%65r:p%40ss%20word@Proxy.Corp:3128/");
        assert_eq!(
            parent.as_ref().map(|p| p.credentials.clone()),
            Ok(Some(("user".to_owned(), "p@ss word".to_owned())))
        );
        assert_eq!(
            parent.as_ref().map(|p| p.to_string()),
            Ok("http://proxy.corp:3128".to_owned())
        );
        let socks = parse("socks5h://[::1]:1080");
        assert_eq!(
            socks.map(|p| (p.protocol, p.to_string())),
            Ok((Protocol::Socks5, "socks5://[::1]:1080".to_owned()))
        );
        assert!(parse("socks5://10.0.0.1:1080").is_ok());
    }

    #[test]
    fn bad_parent_urls_are_refused_without_the_password() {
        for bad in [
            "ftp://x:21",
            "http://",
            "http://proxy",
            "http://proxy:0",
            "http://proxy:3128/path",
            "http://proxy:3128?x",
            "proxy:3128",
            "http://:3128",
            "http://a b:3128",
            "http://user:secret%zz@proxy:3128",
            "socks5://user@proxy:1080",
        ] {
            let err = parse(bad).err().unwrap_or_default();
            assert!(!err.is_empty(), "{bad} was accepted");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn debug_redacts_the_password() {
        let text = "http://alice:hunter2@proxy:3128";
        let parent = parse(text).map(|p| format!("{p:?}"));
        let shown = parent.unwrap_or_default();
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        let shown = format!("{:?}", ParentUrl(text.to_owned()));
        assert!(
            shown.contains("proxy:3128") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
