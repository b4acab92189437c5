//! The token server: `GET /token?service=...&scope=...` over TLS with Basic credentials (or none,
//! for anonymous pulls as Docker Hub grants them), answered with `{"token": JWT, "expires_in": ...}`
//! (the Docker token protocol). A blocking thread per
//! connection, one request per connection.

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls_pki_types::PrivateKeyDer;

use super::token::TokenSigner;
use super::*;

/// Who gets tokens.
pub(in crate::e2e) enum Grant {
    /// `USER` with this password, any action asked for.
    Password(String),
    /// Clients without credentials, pull only: Docker Hub's answer to anonymous clients.
    AnonymousPull,
}

/// What the token server was asked.
#[derive(Debug, Clone)]
pub(in crate::e2e) struct TokenRequest {
    /// The request line (method and target).
    pub(in crate::e2e) line: String,
    /// Whether the request was one the server grants: the configured Basic credentials, or no
    /// `Authorization` at all for [`Grant::AnonymousPull`].
    pub(in crate::e2e) authorized: bool,
    /// Whether it came without `Authorization`.
    pub(in crate::e2e) anonymous: bool,
    /// The `scope` parameters, in order.
    pub(in crate::e2e) scopes: Vec<String>,
    /// The token handed out, if any.
    pub(in crate::e2e) token: Option<String>,
}

pub(in crate::e2e) struct TokenServer {
    pub(in crate::e2e) port: u16,
    pub(super) signer: Arc<TokenSigner>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
}

struct TokenService {
    signer: Arc<TokenSigner>,
    /// The `Authorization: Basic` value granted, or None: anonymous pulls only.
    expected_basic: Option<String>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    /// Listens on a loopback port with `crt`/`key`, granting tokens as `grant` says.
    pub(super) fn start(
        crt: &Path,
        key: &Path,
        signer: TokenSigner,
        grant: &Grant,
    ) -> Result<TokenServer> {
        let certs = CertificateDer::pem_file_iter(crt)
            .context("reading the token server's certificate")?
            .collect::<std::result::Result<Vec<_>, _>>()
            .context("parsing the token server's certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).context("reading the token server's key")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the token server's certificate")?;
        let config = Arc::new(config);

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding")?;
        let port = listener.local_addr().context("local_addr")?.port();
        let signer = Arc::new(signer);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let service = Arc::new(TokenService {
            signer: signer.clone(),
            expected_basic: match grant {
                Grant::Password(password) => Some(basic(USER, password)),
                Grant::AnonymousPull => None,
            },
            requests: requests.clone(),
        });
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                let service = service.clone();
                std::thread::spawn(move || {
                    if let Err(e) = service.serve(config, stream) {
                        eprintln!("e2e: token server: {e:?}");
                    }
                });
            }
        });
        eprintln!("e2e: token server on 127.0.0.1:{port}");
        Ok(TokenServer {
            port,
            signer,
            requests,
            stop,
        })
    }

    pub(in crate::e2e) fn requests(&self) -> Vec<TokenRequest> {
        self.requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

impl TokenService {
    fn serve(&self, config: Arc<rustls::ServerConfig>, tcp: TcpStream) -> Result {
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn = rustls::ServerConnection::new(config).context("TLS server")?;
        let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .context("reading the request line")?;
        let line = line.trim_end().to_owned();
        let mut authorization = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).context("reading a header")? == 0 {
                break;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("authorization")
            {
                authorization = Some(value.trim().to_owned());
            }
        }

        let (status, body, request) = self.answer(&line, authorization.as_deref())?;
        if let Some(request) = request
            && let Ok(mut requests) = self.requests.lock()
        {
            requests.push(request);
        }
        let challenge = if status == 401 {
            "WWW-Authenticate: Basic realm=\"hoard-e2e-token\"\r\n"
        } else {
            ""
        };
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Bad Request",
        };
        let tls = reader.get_mut();
        write!(
            tls,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{challenge}Connection: close\r\n\r\n{body}",
            body.len()
        )
        .context("writing the answer")?;
        tls.conn.send_close_notify();
        tls.flush().context("flushing the answer")?;
        let _ = tls.sock.shutdown(Shutdown::Write);
        Ok(())
    }

    /// The status, body and record of one request.
    fn answer(
        &self,
        line: &str,
        authorization: Option<&str>,
    ) -> Result<(u16, String, Option<TokenRequest>)> {
        let mut parts = line.split(' ');
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return Ok((400, "{}".to_owned(), None));
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/token" {
            return Ok((404, "{}".to_owned(), None));
        }
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect();
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_owned))
            .collect();
        let service_ok = params.iter().any(|(k, v)| k == "service" && v == SERVICE);
        let anonymous = authorization.is_none();
        let authorized = match &self.expected_basic {
            Some(expected) => authorization
                .and_then(|value| value.split_once(' '))
                .is_some_and(|(scheme, creds)| {
                    scheme.eq_ignore_ascii_case("basic") && creds.trim() == expected
                }),
            None => anonymous,
        };
        let mut request = TokenRequest {
            line: format!("{method} {path}?{}", query_text(&params)),
            authorized,
            anonymous,
            scopes: scopes.clone(),
            token: None,
        };
        if method != "GET" || !service_ok {
            return Ok((400, "{}".to_owned(), Some(request)));
        }
        if !authorized {
            return Ok((
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong credentials"}]}"#.to_owned(),
                Some(request),
            ));
        }
        let token = match self.expected_basic {
            Some(_) => self.signer.token(USER, &scopes)?,
            None => self.signer.token("", &pull_only(&scopes))?,
        };
        request.token = Some(token.clone());
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME,
        })
        .to_string();
        Ok((200, body, Some(request)))
    }
}

/// hoard asked for the pull scope of the test repository once, and for no scope twice: it kept
/// its tokens and reused them.
pub(in crate::e2e) fn assert_one_token_per_scope(requests: &[TokenRequest]) {
    let pull_scope = format!("repository:{}:pull", harness::REPOSITORY);
    let pulls = requests
        .iter()
        .filter(|r| r.scopes.contains(&pull_scope))
        .count();
    assert_eq!(
        pulls, 1,
        "one token for {pull_scope}, kept and reused: {requests:#?}"
    );
    for (i, request) in requests.iter().enumerate() {
        assert!(
            !requests[..i].iter().any(|r| r.scopes == request.scopes),
            "a token for the same scope was fetched twice: {requests:#?}"
        );
    }
}

/// `scopes` with every action but `pull` taken away, as Docker Hub grants anonymous clients.
fn pull_only(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter_map(|scope| {
            let (resource, actions) = scope.rsplit_once(':')?;
            actions
                .split(',')
                .any(|action| action == "pull")
                .then(|| format!("{resource}:pull"))
        })
        .collect()
}

/// The query as decoded, for a readable failure message.
fn query_text(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes `%XX` escapes and `+` (a space in a query).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
