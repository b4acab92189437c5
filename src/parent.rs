//! The parent proxy (`upstream.proxy`, `upstream.no_proxy`), for a hoard behind a corporate proxy
//! or one abroad: upstream connections are dialled through it with HTTP CONNECT or SOCKS5, so TLS
//! to the registry stays end to end and the parent sees host names and encrypted bytes only.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

use crate::access::{Cidr, basic_header};
use crate::config::{Config, is_dns_name};

/// Largest CONNECT response head hoard reads from an HTTP parent. Squid and its kind send a
/// status line and a few headers (~200 bytes); 16 KiB leaves room for a chatty one and still
/// bounds what a broken parent can make hoard hold.
const MAX_HEAD: usize = 16 << 10;

/// How hoard speaks to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
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
    protocol: Protocol,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
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

    /// Opens a stream to `host:port` through the parent: once this returns, the bytes on it are
    /// the destination's. `timeout` bounds the whole dial, the parent's own connect included.
    pub async fn dial(&self, host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        // The name goes into a request line: nothing that could end it.
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name"),
            ));
        }
        let dial = async {
            let stream = self.connect().await?;
            match self.protocol {
                Protocol::HttpConnect => self.http_connect(stream, host, port).await,
                Protocol::Socks5 => self.socks5_connect(stream, host, port).await,
            }
        };
        match tokio::time::timeout(timeout, dial).await {
            Ok(result) => result,
            Err(_) => Err(self.error(
                io::ErrorKind::TimedOut,
                format!("no connection to {host}:{port} within {timeout:?}"),
            )),
        }
    }

    /// The TCP connection to the parent itself. Made here rather than by tokio-socks, which
    /// would resolve the parent's name with a blocking call on a runtime thread.
    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.error(e.kind(), format!("cannot connect: {e}")))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn http_connect(
        &self,
        mut stream: TcpStream,
        host: &str,
        port: u16,
    ) -> io::Result<TcpStream> {
        let target = authority(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.credentials {
            request.push_str("Proxy-Authorization: ");
            request.push_str(&basic_header(user, password));
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let head = read_head(&mut stream)
            .await
            .map_err(|e| self.error(e.kind(), format!("CONNECT {target}: {e}")))?;
        match status_line(&head) {
            Some((200..=299, _)) => Ok(stream),
            Some((status, reason)) => Err(self.error(
                io::ErrorKind::ConnectionRefused,
                format!("answered {status} {reason} to CONNECT {target}"),
            )),
            None => Err(self.error(
                io::ErrorKind::InvalidData,
                format!("answered CONNECT {target} with something other than HTTP"),
            )),
        }
    }

    async fn socks5_connect(
        &self,
        stream: TcpStream,
        host: &str,
        port: u16,
    ) -> io::Result<TcpStream> {
        // A name stays a name (ATYP 3) for the parent to resolve; a literal address goes as one.
        let target = (host, port);
        let result = match &self.credentials {
            Some((user, password)) => {
                Socks5Stream::connect_with_password_and_socket(stream, target, user, password).await
            }
            None => Socks5Stream::connect_with_socket(stream, target).await,
        };
        result.map(Socks5Stream::into_inner).map_err(|e| {
            let kind = match &e {
                tokio_socks::Error::Io(io) => io.kind(),
                _ => io::ErrorKind::ConnectionRefused,
            };
            self.error(
                kind,
                format!("SOCKS5 CONNECT {}: {e}", authority(host, port)),
            )
        })
    }

    /// An error that names the parent, so a log line says which hop failed.
    fn error(&self, kind: io::ErrorKind, message: String) -> io::Error {
        io::Error::new(kind, format!("parent proxy {self}: {message}"))
    }
}

/// Reads an HTTP response head up to its blank line and not one byte further: what follows is
/// the destination's (a parent sends nothing more before the client speaks, but it may). Bytes
/// are peeked first and consumed only up to the end of the head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = vec![0; 2048];
    loop {
        let peeked = stream.peek(&mut buf).await?;
        if peeked == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before a response",
            ));
        }
        let before = head.len();
        head.extend_from_slice(buf.get(..peeked).unwrap_or_default());
        // The blank line may straddle two reads.
        let from = before.saturating_sub(3);
        let end = head
            .get(from..)
            .and_then(|tail| tail.windows(4).position(|w| w == b"\r\n\r\n"))
            .map(|at| from + at + 4);
        let take = end.map_or(peeked, |end| end - before);
        stream
            .read_exact(buf.get_mut(..take).unwrap_or_default())
            .await?;
        if let Some(end) = end {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response head over {MAX_HEAD} bytes"),
            ));
        }
    }
}

/// The status code and reason of `HTTP/1.x NNN reason`.
fn status_line(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // A reason is for a log line: printable and short.
    let reason: String = parts
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    Some((code.parse().ok()?, reason))
}

/// `host:port`, with an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host:port` or `[v6]:port`, the host lowercase and unbracketed; the port must be there.
fn split_host_port(text: &str) -> Option<(String, u16)> {
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

/// Destinations that skip the parent (`upstream.no_proxy`), with curl's rules: a name matches
/// itself and its subdomains (a leading dot changes nothing), an address or address block
/// matches destinations given as literal addresses, and `*` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    names: Vec<String>,
    blocks: Vec<Cidr>,
}

impl NoProxy {
    /// Parses the entries; an error names the entry.
    pub fn parse(entries: &[String]) -> Result<NoProxy, String> {
        let mut out = NoProxy::default();
        for entry in entries {
            let text = entry.trim().to_ascii_lowercase();
            let bare = text.trim_start_matches('[').trim_end_matches(']');
            let name = text.trim_start_matches('.');
            if text == "*" {
                out.all = true;
            } else if bare.parse::<IpAddr>().is_ok() || text.contains('/') {
                out.blocks.push(Cidr::parse(bare)?);
            } else if is_dns_name(name) {
                out.names.push(name.to_owned());
            } else {
                return Err(format!(
                    "{entry:?} is not a host name, address, address block or \"*\""
                ));
            }
        }
        Ok(out)
    }

    /// Whether connections to `host` (no port) go straight.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.blocks.iter().any(|block| block.contains(ip));
        }
        self.names.iter().any(|name| {
            host.strip_suffix(name.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        })
    }
}

/// Which way each upstream connection goes: through the parent, or straight when there is no
/// parent, the host is in `no_proxy`, or `upstream.resolve` pins its address (the operator chose
/// where it is, and the parent would resolve the name itself).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    parent: Option<Parent>,
    no_proxy: NoProxy,
    pinned: HashSet<String>,
}

impl Routes {
    /// The routes of a configuration.
    pub fn new(config: &Config) -> Routes {
        Routes {
            parent: config.parent.clone(),
            no_proxy: config.no_proxy.clone(),
            pinned: config.resolve.keys().cloned().collect(),
        }
    }

    /// The parent to dial `host` (no port) through, or `None` to connect straight.
    pub fn parent_for(&self, host: &str) -> Option<&Parent> {
        let parent = self.parent.as_ref()?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let direct =
            self.pinned.contains(&bare.to_ascii_lowercase()) || self.no_proxy.matches(bare);
        (!direct).then_some(parent)
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
        let file: Result<crate::config::FileConfig, _> =
            toml::from_str(&format!("[upstream]\nproxy = \"{text}\"\n"));
        let shown = format!("{file:?}");
        assert!(
            shown.contains("proxy:3128") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn no_proxy_follows_curl() {
        let entries: Vec<String> = ["internal.example", ".corp.example", "10.0.0.0/8", "::1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let list = NoProxy::parse(&entries).unwrap_or_default();
        assert!(list.matches("internal.example"));
        assert!(list.matches("registry.internal.example"));
        assert!(!list.matches("notinternal.example"));
        assert!(list.matches("corp.example"));
        assert!(list.matches("a.b.Corp.Example."));
        assert!(list.matches("10.1.2.3"));
        assert!(list.matches("[::1]"));
        assert!(!list.matches("11.1.2.3"));
        assert!(!list.matches("gcr.io"));
        let all = NoProxy::parse(&["*".to_owned()]).unwrap_or_default();
        assert!(all.matches("gcr.io") && all.matches("8.8.8.8"));
        assert!(NoProxy::parse(&["a/b".to_owned()]).is_err());
        assert!(NoProxy::parse(&["*.example".to_owned()]).is_err());
    }

    #[tokio::test]
    async fn a_connect_head_is_read_to_its_blank_line_and_no_further() {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        tokio::spawn(async move {
            if let Ok((mut peer, _)) = listener.accept().await {
                // The head in two pieces that split the blank line, then the destination's bytes.
                let _ = peer.write_all(b"HTTP/1.1 200 OK\r\nX: y\r\n\r").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = peer.write_all(b"\nhello").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return;
        };
        let head = read_head(&mut stream).await.unwrap_or_default();
        assert_eq!(head, b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n");
        assert_eq!(status_line(&head), Some((200, "OK".to_owned())));
        let mut rest = [0; 5];
        assert!(stream.read_exact(&mut rest).await.is_ok());
        assert_eq!(&rest, b"hello");
    }
}
