//! Host setup in one command: `GET /setup/docker`, `/setup/containerd` and `/setup/podman` on the
//! proxy port answer a POSIX shell script that trusts hoard's CA and points that engine at hoard
//! (`curl -fsSL http://hoard:3128/setup/docker | sudo sh`).
//!
//! The script carries everything it needs (the CA, the intercepted hosts, the proxy address) and
//! no secret. Whatever of the request ends up in it is validated first: the script runs as root.
//! `?mode=mirror` serves the flavour for hoard's registry mirror instead ([`mirror`]).

mod mirror;
mod script;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode};

use crate::hoard::Hoard;
use crate::http::CacheStatus;
use crate::http::error;
use crate::http::{Body, full_body};
use mirror::MirrorScript;
use script::{Engine, ProxyAddr, Script};

/// Which way the engine uses hoard: as its HTTPS proxy (`?mode=proxy`, the default) or as a
/// registry mirror (`?mode=mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Proxy,
    Mirror,
}

impl Mode {
    /// The `mode` of a query string; `None` for a mode that is neither. Other parameters are
    /// ignored, as they always were.
    fn from_query(query: Option<&str>) -> Option<Mode> {
        let mut mode = Mode::Proxy;
        for pair in query.unwrap_or_default().split('&') {
            mode = match pair.split_once('=') {
                Some(("mode", "proxy")) => Mode::Proxy,
                Some(("mode", "mirror")) => Mode::Mirror,
                Some(("mode", _)) => return None,
                _ => mode,
            };
        }
        Some(mode)
    }
}

/// Whether `request` asks for a mirror-mode setup script (`GET /setup/<engine>?mode=mirror`),
/// which the mirror listener serves too, without a login, as the proxy port does.
pub(crate) fn asks_for_mirror_script<B>(request: &Request<B>) -> bool {
    request.method() == http::Method::GET
        && request.uri().path().starts_with("/setup/")
        && Mode::from_query(request.uri().query()) == Some(Mode::Mirror)
}

/// Answers `GET /setup/<engine>[?mode=proxy|mirror]`: the script, 404 for an unknown engine, 400
/// for another mode or a `Host` header that is not a host[:port], 409 for `mode=mirror` with the
/// mirror off or on port 0.
pub(crate) fn respond<B>(request: &Request<B>, hoard: &Hoard) -> Response<Body> {
    let path = request.uri().path();
    let name = path.strip_prefix("/setup/").unwrap_or(path);
    let Some(engine) = Engine::from_name(name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "no setup script for {name:?}: there are /setup/docker, /setup/containerd and \
                 /setup/podman"
            ),
        );
    };
    let Some(mode) = Mode::from_query(request.uri().query()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "mode is proxy (the default: hoard as the engine's HTTPS proxy) or mirror (hoard's \
             registry mirror): /setup/containerd?mode=mirror",
        );
    };
    let config = hoard.config();
    let host_header = request.headers().get(HOST);
    let proxy = match host_header {
        Some(value) => value.to_str().ok().and_then(ProxyAddr::parse),
        None => ProxyAddr::from_listen(config.proxy.listen),
    };
    let Some(proxy) = proxy else {
        return error(
            StatusCode::BAD_REQUEST,
            "the Host header must be host[:port] (a DNS name or an IP address): it becomes the \
             proxy address in the setup script",
        );
    };
    let ca_pem = hoard.ca.ca_pem();
    let script = match mode {
        Mode::Proxy => Script::new(engine, proxy, ca_pem, &config).render(),
        Mode::Mirror => {
            let from_header = host_header.is_some();
            match MirrorScript::new(engine, proxy, from_header, ca_pem, &config) {
                Ok(script) => script.render(),
                Err(reason) => return error(StatusCode::CONFLICT, reason),
            }
        }
    };
    let mut response = Response::new(full_body(script));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/x-shellscript"),
    );
    // The script depends on the Host header and the config: never reuse one.
    headers.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(CacheStatus::Local);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<String> {
        ProxyAddr::parse(text).map(|a| a.authority())
    }

    #[test]
    fn host_headers_are_host_and_port_or_nothing() {
        assert_eq!(addr("hoard:3128").as_deref(), Some("hoard:3128"));
        assert_eq!(
            addr("Hoard.Example.COM").as_deref(),
            Some("hoard.example.com:80")
        );
        assert_eq!(addr("10.0.0.5:3128").as_deref(), Some("10.0.0.5:3128"));
        assert_eq!(addr("[fd00::1]:3128").as_deref(), Some("[fd00::1]:3128"));
        assert_eq!(addr("[::1]").as_deref(), Some("[::1]:80"));
        for bad in [
            "",
            ":3128",
            "hoard:",
            "hoard:0",
            "hoard:65536",
            "hoard:+80",
            "fd00::1",
            "[nonsense]:1",
            "hoard;reboot",
            "$(reboot)",
            "hoard:3128 x",
            "a'b",
            "user@hoard:3128",
            "hoard/x",
        ] {
            assert_eq!(addr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn wildcard_listeners_are_not_an_address() {
        assert_eq!(ProxyAddr::from_listen(([0, 0, 0, 0], 3128).into()), None);
        let v6 = ProxyAddr::from_listen("[::1]:3128".parse().unwrap_or(([0; 4], 0).into()));
        assert_eq!(v6.map(|a| a.authority()).as_deref(), Some("[::1]:3128"));
    }

    #[test]
    fn scripts_name_exact_hosts_and_wildcards_apart() {
        let script = Script {
            engine: Engine::Containerd,
            proxy: ProxyAddr::parse("[fd00::1]:3128").unwrap_or(ProxyAddr {
                host: String::new(),
                port: 0,
            }),
            ca_pem: "-----BEGIN CERTIFICATE-----\r\nAAAA\r\n-----END CERTIFICATE-----\r\n",
            patterns: vec!["gcr.io".into(), "*.pkg.dev".into()],
            auth_required: true,
        }
        .render();
        assert!(script.contains("\nHOSTS='gcr.io'\n"), "{script}");
        assert!(script.contains("\nWILDCARDS='*.pkg.dev'\n"), "{script}");
        assert!(script.contains("\nPROXY_HOSTPORT='[fd00::1]:3128'\n"));
        assert!(script.contains("\nNO_PROXY_BASE='localhost,127.0.0.0/8,::1,fd00::1'\n"));
        assert!(script.contains("\nAUTH_REQUIRED=1\n"));
        assert!(script.contains("\nAAAA\n-----END CERTIFICATE-----\nHOARD_CA_PEM\n"));
        for placeholder in [
            "@ENGINE@",
            "@PROXY@",
            "@HOSTS@",
            "@CA_PEM@",
            "@AUTH_REQUIRED@",
        ] {
            assert!(
                !script.contains(placeholder),
                "{placeholder} left in the script"
            );
        }
        assert!(script.ends_with("main \"$@\"\n"));
    }

    #[test]
    fn the_mode_comes_from_the_query_and_is_proxy_by_default() {
        for (query, mode) in [
            (None, Some(Mode::Proxy)),
            (Some(""), Some(Mode::Proxy)),
            (Some("x=1"), Some(Mode::Proxy)),
            (Some("mode=proxy"), Some(Mode::Proxy)),
            (Some("mode=mirror"), Some(Mode::Mirror)),
            (Some("x=1&mode=mirror"), Some(Mode::Mirror)),
            (Some("mode=Mirror"), None),
            (Some("mode="), None),
        ] {
            assert_eq!(Mode::from_query(query), mode, "{query:?}");
        }
    }

    /// `?mode=proxy` and no mode serve the script as it was before mirror mode (plus the
    /// `--ca-sha256` check since): these bytes.
    #[test]
    fn proxy_scripts_are_unchanged_by_mirror_mode() {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        for engine in [Engine::Docker, Engine::Containerd, Engine::Podman] {
            let script = Script {
                engine,
                proxy: ProxyAddr::parse("hoard.example:3128").unwrap_or(ProxyAddr {
                    host: String::new(),
                    port: 0,
                }),
                ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                patterns: vec![
                    "gcr.io".into(),
                    "registry-1.docker.io".into(),
                    "*.pkg.dev".into(),
                ],
                auth_required: false,
            };
            hash.update(script.render().as_bytes());
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ea888d2e9b39ff662931b96e031d93515f1265e1961460d653f8e2fb7df45bda"
        );
    }
}
