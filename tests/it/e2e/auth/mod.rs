//! End-to-end tests of upstream credentials (`[[upstream.credentials]]`): the Distribution registry
//! (`docker-registry`) demands a login, first with an htpasswd file (Basic), then with tokens from a
//! token server of our own (Bearer, JWTs signed with ES256); clients that have no credentials pull
//! through hoard, which answers the registry's challenges with the configured ones.
//!
//! Same programs, folders and skipping rules as the other e2e tests; see `../README.md`.

mod token;
mod token_server;
mod writes;

pub(super) use token::token_registry;
pub(super) use token_server::{Grant, TokenRequest, assert_one_token_per_scope};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

use super::harness;
use harness::{Context as _, HoardOptions, REGISTRY_HOST, RegistryAuth, Result, fail};

/// The account hoard is configured with.
pub(super) const USER: &str = "alice";
/// The token server's host name: in the registry's realm and in hoard's `upstream.resolve`.
const AUTH_HOST: &str = "auth.test";
/// The registry's `service`, the tokens' audience.
const SERVICE: &str = "hoard-test";
/// The tokens' issuer.
const ISSUER: &str = "hoard-test-issuer";
/// Lifetime of the tokens, as `expires_in` (seconds): far longer than a test, so one token serves
/// every pull of a test if hoard keeps it.
const TOKEN_LIFETIME: u64 = 300;

/// A fresh password per test, so finding it in a log cannot be a coincidence.
pub(super) fn random_password() -> Result<String> {
    Ok(format!("pw-{}", const_hex::encode(harness::urandom(12)?)))
}

/// `Authorization: Basic` value for `user:password`: must not show up in hoard's logs either.
pub(super) fn basic(user: &str, password: &str) -> String {
    STANDARD.encode(format!("{user}:{password}"))
}

/// Fails if any of `secrets` occurs in the log of the hoard process `name`.
pub(super) fn assert_log_keeps_secrets(
    scene: &harness::Scene,
    name: &str,
    secrets: &[(&str, &str)],
) {
    let log = scene.log(name);
    assert!(!log.is_empty(), "{name} logged nothing");
    for (what, secret) in secrets {
        assert!(
            !log.contains(secret),
            "{name}'s log contains the {what} ({secret})"
        );
    }
}

/// `[[upstream.credentials]]` for the registry, with `password` set to the given TOML value line.
fn credentials_toml(password_line: &str) -> String {
    format!(
        "[[upstream.credentials]]\nhost = \"{REGISTRY_HOST}\"\nusername = \"{USER}\"\n{password_line}\n"
    )
}

#[test]
fn skopeo_pulls_a_basic_auth_registry_through_hoards_credentials() -> Result {
    harness::run(
        "basic-auth",
        &harness::SKOPEO_TOOLS,
        false,
        |scene, tools| {
            let password = random_password()?;
            let pki = harness::make_pki(scene, tools)?;
            let registry = start_htpasswd_registry(scene, tools, &pki, &password)?;
            // The registry itself turns away a client without credentials.
            let (status, _, stderr) = scene.exec_status(
                "skopeo inspect on the registry without credentials",
                harness::skopeo(scene, tools)?
                    .args(["inspect", "--raw", "--cert-dir"])
                    .arg(&pki.ca_cert_dir)
                    .arg(registry.reference("anything")),
                Duration::from_secs(60),
            )?;
            assert!(
                !status.success() && stderr.contains("unauthorized"),
                "the htpasswd registry must refuse anonymous clients ({status}):\n{stderr}"
            );
            let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;

            // Without credentials, hoard hands the registry's 401 to the client.
            let bare = harness::start_hoard_with(
                scene,
                &pki,
                &registry,
                &HoardOptions {
                    name: "hoard-bare".to_owned(),
                    ..HoardOptions::default()
                },
            )?;
            let outcome =
                harness::try_skopeo_copy_via_hoard(scene, tools, &bare, &pushed.tag, "bare")?;
            let Err(stderr) = outcome else {
                return fail("skopeo pulled through a hoard without credentials");
            };
            assert!(
                stderr.contains("unauthorized") || stderr.contains("401"),
                "the failure must be the registry's 401:\n{stderr}"
            );

            // With credentials (the password from a file, trailing newline and all), the same
            // credential-less skopeo gets the image.
            let password_file = scene.path("alice.password");
            std::fs::write(&password_file, format!("{password}\n"))
                .context("writing the password file")?;
            let hoard = harness::start_hoard_with(
                scene,
                &pki,
                &registry,
                &HoardOptions {
                    extra_toml: credentials_toml(&format!(
                        "password_file = {}",
                        harness::json_string(harness::path_str(&password_file)?)
                    )),
                    ..HoardOptions::default()
                },
            )?;
            let copied =
                harness::skopeo_copy_via_hoard(scene, tools, &hoard, &pushed.tag, "pulled")?;
            copied.check_matches(&pushed)?;

            let secrets = [
                ("password", password.as_str()),
                ("Basic credentials", &basic(USER, &password)),
            ];
            assert_log_keeps_secrets(scene, &hoard.name, &secrets);
            Ok(())
        },
    )
}

/// The Distribution registry checking an htpasswd file that holds `USER` with `password`.
pub(super) fn start_htpasswd_registry(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    pki: &harness::Pki,
    password: &str,
) -> Result<harness::Registry> {
    harness::start_registry_with(
        scene,
        tools,
        pki,
        &RegistryAuth::Htpasswd {
            user: USER.to_owned(),
            password: password.to_owned(),
        },
    )
}

/// hoard with `[[upstream.credentials]]` for the registry: `USER` and `password`, and more
/// `upstream.resolve` entries.
fn start_hoard_with_password(
    scene: &mut harness::Scene,
    pki: &harness::Pki,
    registry: &harness::Registry,
    password: &str,
    resolve: Vec<(String, u16)>,
) -> Result<harness::Hoard> {
    harness::start_hoard_with(
        scene,
        pki,
        registry,
        &HoardOptions {
            resolve,
            extra_toml: credentials_toml(&format!("password = {}", harness::json_string(password))),
            ..HoardOptions::default()
        },
    )
}

/// A blocking one-shot `GET https://127.0.0.1:<port><path>`: the status and the response head.
fn https_get(
    ca_crt: &Path,
    port: u16,
    path: &str,
    authorization: Option<&str>,
) -> Result<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_crt).context("reading the test CA")? {
        roots
            .add(cert.context("parsing the test CA")?)
            .context("adding the test CA")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).context("TLS client")?;
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).context("connecting")?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .context("sending a request to the registry")?;
    let mut response = Vec::new();
    if let Err(e) = tls.read_to_end(&mut response) {
        // A peer that closes without close_notify still sent its whole answer.
        if e.kind() != std::io::ErrorKind::UnexpectedEof || response.is_empty() {
            return fail(format!("reading the registry's answer: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context(format!("no status line in the registry's answer:\n{head}"))?;
    Ok((status, head))
}
