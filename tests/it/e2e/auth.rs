//! End-to-end tests of upstream credentials (`[[upstream.credentials]]`): the Distribution registry
//! (`docker-registry`) demands a login, first with an htpasswd file (Basic), then with tokens from a
//! token server of our own (Bearer, JWTs signed with ES256); clients that have no credentials pull
//! through hoard, which answers the registry's challenges with the configured ones.
//!
//! Same programs, folders and skipping rules as `tests/e2e.rs`; see `tests/e2e/README.md`.

use super::harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use harness::{
    Context as _, HoardOptions, REGISTRY_HOST, REGISTRY_PROC, REPOSITORY, RegistryAuth, Result,
    TAG_TTL, fail,
};

const HOARD: &str = env!("CARGO_BIN_EXE_hoard");

/// The account hoard is configured with.
const USER: &str = "alice";
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
fn random_password() -> Result<String> {
    Ok(format!(
        "pw-{}",
        const_hex::encode(harness::random_bytes(12)?)
    ))
}

/// `Authorization: Basic` value for `user:password`: must not show up in hoard's logs either.
fn basic(user: &str, password: &str) -> String {
    STANDARD.encode(format!("{user}:{password}"))
}

/// Fails if any of `secrets` occurs in the log of the hoard process `name`.
fn assert_log_keeps_secrets(scene: &harness::Scene, name: &str, secrets: &[(&str, &str)]) {
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
                Path::new(HOARD),
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
                Path::new(HOARD),
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
            assert_eq!(copied.digest, pushed.manifest_digest, "digest of the pull");
            assert_eq!(copied.manifest, pushed.manifest, "manifest bytes");
            for digest in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
                let blob = std::fs::read(copied.dir.join(digest.trim_start_matches("sha256:")))?;
                assert_eq!(&harness::sha256_digest(&blob), digest, "blob {digest}");
            }

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
fn start_htpasswd_registry(
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
        Path::new(HOARD),
        pki,
        registry,
        &HoardOptions {
            resolve,
            extra_toml: credentials_toml(&format!("password = {}", harness::json_string(password))),
            ..HoardOptions::default()
        },
    )
}

/// The programs of the write test: skopeo's, and curl as the client that writes.
const WRITE_TOOLS: [&str; 6] = [
    "openssl",
    "tar",
    "gzip",
    "docker-registry",
    "skopeo",
    "curl",
];

#[test]
fn anonymous_writes_through_hoard_get_the_registrys_401_and_change_nothing() -> Result {
    harness::run("anon-writes", &WRITE_TOOLS, false, |scene, tools| {
        let password = random_password()?;
        let pki = harness::make_pki(scene, tools)?;
        let registry = start_htpasswd_registry(scene, tools, &pki, &password)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let hoard = start_hoard_with_password(scene, &pki, &registry, &password, Vec::new())?;
        // A pull through hoard: hoard now holds a login for the repository.
        harness::skopeo_copy_via_hoard(scene, tools, &hoard, &pushed.tag, "pulled")?;

        // Anyone who can reach hoard, without credentials, tries to upload a blob, repoint the
        // tag and delete the image.
        let blob = harness::random_bytes(1000)?;
        let blob_digest = harness::sha256_digest(&blob);
        let blob_file = scene.path("attack.blob");
        std::fs::write(&blob_file, &blob).context("writing the blob")?;
        let mut manifest: serde_json::Value = serde_json::from_slice(&pushed.manifest)?;
        manifest["annotations"] = serde_json::json!({ "hoard.e2e": "repointed" });
        let manifest_file = scene.path("attack.manifest");
        std::fs::write(&manifest_file, serde_json::to_vec(&manifest)?)
            .context("writing the manifest")?;
        let base = format!("https://{REGISTRY_HOST}/v2/{REPOSITORY}");
        let v2s2 = "application/vnd.docker.distribution.manifest.v2+json";

        let upload = curl_via_hoard(
            scene,
            tools,
            &hoard,
            "POST",
            &format!("{base}/blobs/uploads/"),
            None,
        )?;
        let mut outcomes = vec![("upload POST", upload.clone())];
        if upload.0 == 202 {
            // Let the upload go all the way, as an attacker would.
            let location = upload.1.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("location")
                    .then(|| value.trim().to_owned())
            });
            if let Some(location) = location {
                let location = if location.starts_with('/') {
                    format!("https://{REGISTRY_HOST}{location}")
                } else {
                    location
                };
                let separator = if location.contains('?') { '&' } else { '?' };
                let put = curl_via_hoard(
                    scene,
                    tools,
                    &hoard,
                    "PUT",
                    &format!("{location}{separator}digest={blob_digest}"),
                    Some((&blob_file, "application/octet-stream")),
                )?;
                outcomes.push(("upload PUT", put));
            }
        }
        let repoint = curl_via_hoard(
            scene,
            tools,
            &hoard,
            "PUT",
            &format!("{base}/manifests/{}", pushed.tag),
            Some((&manifest_file, v2s2)),
        )?;
        outcomes.push(("manifest PUT", repoint));
        let delete = curl_via_hoard(
            scene,
            tools,
            &hoard,
            "DELETE",
            &format!("{base}/manifests/{}", pushed.manifest_digest),
            None,
        )?;
        outcomes.push(("manifest DELETE", delete));

        // Nothing changed upstream: the tag still names the pushed manifest, the blob is absent.
        let mut inspect = harness::skopeo(scene, tools)?;
        inspect
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(&pki.ca_cert_dir)
            .arg("--creds")
            .arg(format!("{USER}:{password}"))
            .arg(registry.reference(&pushed.tag));
        let (status, stdout, stderr) = scene.exec_status(
            "skopeo inspect --raw on the registry",
            &mut inspect,
            Duration::from_secs(60),
        )?;
        let (blob_status, _) = https_get(
            &pki.ca_crt,
            registry.port,
            &format!("/v2/{REPOSITORY}/blobs/{blob_digest}"),
            Some(&format!("Basic {}", basic(USER, &password))),
        )?;

        for (what, (status, _)) in &outcomes {
            eprintln!("e2e: {what} through hoard without credentials: {status}");
        }
        eprintln!(
            "e2e: upstream afterwards: tag {} ({}), attack blob {blob_status}",
            harness::sha256_digest(&stdout),
            if status.success() { "present" } else { "gone" },
        );
        for (what, (status, head)) in &outcomes {
            assert_eq!(
                *status, 401,
                "{what} through hoard without credentials:\n{head}"
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"hoard-e2e\""),
                "the 401 is the registry's own:\n{head}"
            );
        }
        assert!(status.success(), "the tag is gone upstream:\n{stderr}");
        assert_eq!(
            harness::sha256_digest(&stdout),
            pushed.manifest_digest,
            "the tag moved upstream"
        );
        assert_eq!(blob_status, 404, "the uploaded blob exists upstream");
        assert_log_keeps_secrets(
            scene,
            &hoard.name,
            &[
                ("password", password.as_str()),
                ("Basic credentials", &basic(USER, &password)),
            ],
        );
        Ok(())
    })
}

/// `curl -X <method> <url>` through hoard with no credentials, trusting hoard's CA only, with
/// `body` (a file and its content type) if given: the status and the response head.
fn curl_via_hoard(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    hoard: &harness::Hoard,
    method: &str,
    url: &str,
    body: Option<(&Path, &str)>,
) -> Result<(u16, String)> {
    let mut curl = tools.command("curl");
    curl.args([
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-w",
        "%{http_code}",
        "-X",
        method,
    ])
    .arg("--proxy")
    .arg(&hoard.proxy_url)
    .arg("--cacert")
    .arg(&hoard.ca_crt);
    match body {
        Some((file, content_type)) => {
            curl.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .arg("--data-binary")
                .arg(format!("@{}", harness::path_str(file)?));
        }
        None => {
            curl.args(["-H", "Content-Length: 0"]);
        }
    }
    curl.arg(url);
    let out = scene.exec_text(&format!("curl {method} via hoard"), &mut curl)?;
    let (head, code) = out.rsplit_once("\r\n").unwrap_or(("", out.as_str()));
    let status = code
        .trim()
        .parse()
        .context(format!("curl printed no status: {out}"))?;
    Ok((status, head.to_owned()))
}

#[test]
fn skopeo_pulls_a_token_auth_registry_through_hoards_credentials() -> Result {
    harness::run(
        "token-auth",
        &harness::SKOPEO_TOOLS,
        false,
        |scene, tools| {
            let setup = token_auth_setup(scene, tools)?;
            let pushed = &setup.pushed;

            let cold =
                harness::skopeo_copy_via_hoard(scene, tools, &setup.hoard, &pushed.tag, "cold")?;
            assert_eq!(
                cold.digest, pushed.manifest_digest,
                "digest of the cold pull"
            );
            assert_eq!(cold.manifest, pushed.manifest, "manifest bytes");

            // Once the tag is stale, hoard revalidates it upstream: with the token it already has.
            std::thread::sleep(TAG_TTL + Duration::from_millis(1500));
            let warm =
                harness::skopeo_copy_via_hoard(scene, tools, &setup.hoard, &pushed.tag, "warm")?;
            assert_eq!(
                warm.digest, pushed.manifest_digest,
                "digest of the warm pull"
            );
            let log = scene.log(&setup.hoard.name);
            assert!(
                log.lines().any(|l| l.contains("hoard::log: request ")
                    && l.contains("/manifests/")
                    && l.contains("cache=REVALIDATED")),
                "the warm pull revalidated the tag upstream:\n{log}"
            );

            setup.check_tokens_and_logs(scene);
            Ok(())
        },
    )
}

#[test]
fn dockerd_pulls_a_token_auth_registry_through_hoards_credentials() -> Result {
    harness::run(
        "dockerd-token",
        &harness::DOCKERD_TOOLS,
        true,
        |scene, tools| {
            harness::ensure_not_loopback(REGISTRY_HOST)?;
            let setup = token_auth_setup(scene, tools)?;
            let pushed = &setup.pushed;
            let docker = harness::start_docker(scene, tools, &setup.hoard)?;

            // No `docker login`: the CLI's config folder is empty, and dockerd has no credentials.
            let by_tag = format!("{REGISTRY_HOST}/{REPOSITORY}:{}", pushed.tag);
            docker.pull(scene, tools, &by_tag)?;
            let Some((id, repo_digests)) = docker.inspect(scene, tools, &by_tag)? else {
                return fail(format!("docker has no image {by_tag} after pulling it"));
            };
            assert_eq!(id, pushed.config_digest, "image ID");
            let by_digest = format!("{REGISTRY_HOST}/{REPOSITORY}@{}", pushed.manifest_digest);
            assert!(
                repo_digests.contains(&by_digest),
                "RepoDigests are {repo_digests:?}, expected {by_digest}"
            );

            setup.check_tokens_and_logs(scene);
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The token-auth scene: an image pushed to an open registry, the same storage served again behind
// token auth, our token server, and a hoard with credentials.

struct TokenAuthSetup {
    password: String,
    pushed: harness::Pushed,
    hoard: harness::Hoard,
    token_server: TokenServer,
}

fn token_auth_setup(scene: &mut harness::Scene, tools: &harness::Tools) -> Result<TokenAuthSetup> {
    let password = random_password()?;
    let pki = harness::make_pki(scene, tools)?;
    let (auth_crt, auth_key) =
        harness::make_server_cert(scene, tools, &pki, "auth", &format!("DNS:{AUTH_HOST}"))?;
    let signer = TokenSigner::new()?;
    let bundle = scene.path("token-signer.pem");
    std::fs::write(&bundle, &signer.cert_pem).context("writing the token signer's certificate")?;
    let token_server = TokenServer::start(&auth_crt, &auth_key, signer, &password)?;

    // skopeo would have to reach the token server by its name to push through token auth, and
    // only hoard resolves that name: push while the registry is open, then serve the same storage
    // behind token auth.
    let open = harness::start_registry(scene, tools, &pki)?;
    let pushed = harness::build_and_push(scene, tools, &pki, &open, "v1")?;
    scene.stop(REGISTRY_PROC)?;
    let registry = harness::start_registry_with(
        scene,
        tools,
        &pki,
        &RegistryAuth::Token {
            realm: format!("https://{AUTH_HOST}/token"),
            service: SERVICE.to_owned(),
            issuer: ISSUER.to_owned(),
            rootcertbundle: bundle,
        },
    )?;
    check_registry_takes_tokens(&pki.ca_crt, registry.port, &token_server.signer)?;

    let resolve = vec![(AUTH_HOST.to_owned(), token_server.port)];
    let hoard = start_hoard_with_password(scene, &pki, &registry, &password, resolve)?;
    Ok(TokenAuthSetup {
        password,
        pushed,
        hoard,
        token_server,
    })
}

impl TokenAuthSetup {
    /// Every token request carried the right credentials, the pull scope was asked for once (hoard
    /// kept the token), and neither the password nor a token is in hoard's log.
    fn check_tokens_and_logs(&self, scene: &harness::Scene) {
        let requests = self.token_server.requests();
        for request in &requests {
            eprintln!(
                "e2e: token request {} (credentials {})",
                request.line,
                if request.authorized { "right" } else { "wrong" }
            );
        }
        assert!(
            requests.iter().all(|r| r.authorized),
            "hoard sent wrong or no credentials to the token server: {requests:#?}"
        );
        let pull_scope = format!("repository:{REPOSITORY}:pull");
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

        let mut secrets = vec![
            ("password".to_owned(), self.password.clone()),
            ("Basic credentials".to_owned(), basic(USER, &self.password)),
        ];
        for request in &requests {
            if let Some(token) = &request.token {
                secrets.push(("token".to_owned(), token.clone()));
                // The signature alone is the secret part; the claims are public anyway.
                let signature = token.rsplit('.').next().unwrap_or(token);
                secrets.push(("token signature".to_owned(), signature.to_owned()));
            }
        }
        let secrets: Vec<(&str, &str)> = secrets
            .iter()
            .map(|(what, secret)| (what.as_str(), secret.as_str()))
            .collect();
        assert_log_keeps_secrets(scene, &self.hoard.name, &secrets);
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens as Distribution 2.8 verifies them (registry/auth/token/token.go): a JWT whose header
// carries the signing certificate in `x5c`, which must verify against the registry's
// `rootcertbundle` (Go's x509 Verify: a self-signed certificate that is itself in the bundle
// does), signed with ES256 as the fixed-size r||s, with `iss`, `aud` and `exp`/`nbf` checked and
// `access` listing what may be done.

struct TokenSigner {
    key: EcdsaKeyPair,
    /// The self-signed certificate of `key`, DER, for `x5c`.
    cert_der: Vec<u8>,
    /// The same, PEM, for the registry's `rootcertbundle`.
    cert_pem: String,
}

impl TokenSigner {
    fn new() -> Result<TokenSigner> {
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
            .context("generating the token signing key")?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref())
            .context("loading the token signing key")?;
        let rcgen_key = rcgen::KeyPair::try_from(pkcs8.as_ref())
            .context("loading the token signing key into rcgen")?;
        let cert = rcgen::CertificateParams::new(vec!["hoard-test-token-signer".to_owned()])
            .context("certificate parameters")?
            .self_signed(&rcgen_key)
            .context("self-signing the token signer's certificate")?;
        Ok(TokenSigner {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        })
    }

    /// A token for `subject` granting `scopes` (`repository:<name>:<action>,...`).
    fn token(&self, subject: &str, scopes: &[String]) -> Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock")?
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({
                    "type": kind,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now,
            "iat": now,
            "jti": const_hex::encode(harness::random_bytes(8)?),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .context("signing a token")?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// Before hoard is involved: the registry refuses an anonymous client with a Bearer challenge
/// naming our token server, and takes a token of ours. A failure here is the test's, not hoard's.
fn check_registry_takes_tokens(ca_crt: &Path, port: u16, signer: &TokenSigner) -> Result {
    let manifest = format!("/v2/{REPOSITORY}/manifests/v1");
    let (status, head) = https_get(ca_crt, port, &manifest, None)?;
    let challenge = format!("bearer realm=\"https://{AUTH_HOST}/token\"");
    if status != 401 || !head.to_ascii_lowercase().contains(&challenge) {
        return fail(format!(
            "the token-auth registry answered an anonymous GET with:\n{head}"
        ));
    }
    let token = signer.token("self-check", &[format!("repository:{REPOSITORY}:pull")])?;
    let (status, head) = https_get(ca_crt, port, &manifest, Some(&format!("Bearer {token}")))?;
    if status != 200 {
        return fail(format!(
            "the registry refuses the token server's tokens (see its log):\n{head}"
        ));
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// The token server: `GET /token?service=...&scope=...` over TLS with Basic credentials, answered
// with `{"token": JWT, "expires_in": ...}` (the Docker token protocol). A blocking thread per
// connection, one request per connection.

/// What the token server was asked.
#[derive(Debug, Clone)]
struct TokenRequest {
    /// The request line (method and target).
    line: String,
    /// Whether the Basic credentials were the configured ones.
    authorized: bool,
    /// The `scope` parameters, in order.
    scopes: Vec<String>,
    /// The token handed out, if any.
    token: Option<String>,
}

struct TokenServer {
    port: u16,
    signer: Arc<TokenSigner>,
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
    fn start(crt: &Path, key: &Path, signer: TokenSigner, password: &str) -> Result<TokenServer> {
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

    fn requests(&self) -> Vec<TokenRequest> {
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
