//! The token server: `GET /token?service=...&scope=...` over TLS with Basic credentials, answered
//! with `{"token": JWT, "expires_in": ...}` (the Docker token protocol). A blocking thread per
//! connection, one request per connection.

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls_pki_types::PrivateKeyDer;

use super::token::TokenSigner;
use super::*;

/// What the token server was asked.
#[derive(Debug, Clone)]
pub(super) struct TokenRequest {
    /// The request line (method and target).
    pub(super) line: String,
    /// Whether the Basic credentials were the configured ones.
    pub(super) authorized: bool,
    /// The `scope` parameters, in order.
    pub(super) scopes: Vec<String>,
    /// The token handed out, if any.
    pub(super) token: Option<String>,
}

pub(super) struct TokenServer {
    pub(super) port: u16,
    pub(super) signer: Arc<TokenSigner>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
}

struct TokenService {
    signer: Arc<TokenSigner>,
    expected_basic: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    /// Listens on a loopback port with `crt`/`key`, accepting `USER`/`password`.
    pub(super) fn start(
        crt: &Path,
        key: &Path,
        signer: TokenSigner,
        password: &str,
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
            expected_basic: basic(USER, password),
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

    pub(super) fn requests(&self) -> Vec<TokenRequest> {
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
        let authorized = authorization
            .and_then(|value| value.split_once(' '))
            .is_some_and(|(scheme, creds)| {
                scheme.eq_ignore_ascii_case("basic") && creds.trim() == self.expected_basic
            });
        let mut request = TokenRequest {
            line: format!("{method} {path}?{}", query_text(&params)),
            authorized,
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
        let token = self.signer.token(USER, &scopes)?;
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
