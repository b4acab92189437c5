//! Token auth: the registry wants Bearer tokens from a token server of the test's own, which only
//! hoard can reach; skopeo and dockerd pull without credentials of their own.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::token_server::{Grant, TokenServer, assert_one_token_per_scope};
use super::*;
use harness::{REGISTRY_PROC, REPOSITORY, TAG_TTL};

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
            let setup = token_auth_setup(scene, tools)?;
            let pushed = &setup.pushed;
            let docker = harness::start_docker(scene, tools, &setup.hoard)?;

            // No `docker login`: the CLI's config folder is empty, and dockerd has no credentials.
            let by_tag = format!("{REGISTRY_HOST}/{REPOSITORY}:{}", pushed.tag);
            docker.pull(scene, tools, &by_tag)?;
            let by_digest = format!("{REGISTRY_HOST}/{REPOSITORY}@{}", pushed.manifest_digest);
            docker.expect_image(scene, tools, &by_tag, pushed, &by_digest)?;

            setup.check_tokens_and_logs(scene);
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The token-auth scene: an image pushed to an open registry, the same storage served again behind
// token auth, our token server, and a hoard with credentials.

/// A registry behind token auth holding the pushed test image, and our token server.
pub(in crate::e2e) struct TokenRegistry {
    pub(in crate::e2e) pki: harness::Pki,
    pub(in crate::e2e) pushed: harness::Pushed,
    pub(in crate::e2e) registry: harness::Registry,
    pub(in crate::e2e) token_server: TokenServer,
}

impl TokenRegistry {
    /// `upstream.resolve` entry for the token server's name, which only hoard resolves.
    pub(in crate::e2e) fn resolve_auth_host(&self) -> (String, u16) {
        (AUTH_HOST.to_owned(), self.token_server.port)
    }
}

/// Pushes the test image to an open registry, then serves the same storage behind token auth
/// from our token server, which grants tokens as `grant` says.
pub(in crate::e2e) fn token_registry(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    grant: &Grant,
) -> Result<TokenRegistry> {
    let pki = harness::make_pki(scene, tools)?;
    let (auth_crt, auth_key) =
        harness::make_server_cert(scene, tools, &pki, "auth", &format!("DNS:{AUTH_HOST}"))?;
    let signer = TokenSigner::new()?;
    let bundle = scene.path("token-signer.pem");
    std::fs::write(&bundle, &signer.cert_pem).context("writing the token signer's certificate")?;
    let token_server = TokenServer::start(&auth_crt, &auth_key, signer, grant)?;

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
    Ok(TokenRegistry {
        pki,
        pushed,
        registry,
        token_server,
    })
}

struct TokenAuthSetup {
    password: String,
    pushed: harness::Pushed,
    hoard: harness::Hoard,
    token_server: TokenServer,
}

fn token_auth_setup(scene: &mut harness::Scene, tools: &harness::Tools) -> Result<TokenAuthSetup> {
    let password = random_password()?;
    let upstream = token_registry(scene, tools, &Grant::Password(password.clone()))?;
    let resolve = vec![upstream.resolve_auth_host()];
    let hoard =
        start_hoard_with_password(scene, &upstream.pki, &upstream.registry, &password, resolve)?;
    Ok(TokenAuthSetup {
        password,
        pushed: upstream.pushed,
        hoard,
        token_server: upstream.token_server,
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
        assert_one_token_per_scope(&requests);

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

pub(super) struct TokenSigner {
    key: EcdsaKeyPair,
    /// The self-signed certificate of `key`, DER, for `x5c`.
    cert_der: Vec<u8>,
    /// The same, PEM, for the registry's `rootcertbundle`.
    pub(super) cert_pem: String,
}

impl TokenSigner {
    pub(super) fn new() -> Result<TokenSigner> {
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
    pub(super) fn token(&self, subject: &str, scopes: &[String]) -> Result<String> {
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
            "jti": const_hex::encode(harness::urandom(8)?),
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
