//! Authentication against registries, on two fronts:
//! - hoard's own credentials (`[[upstream.credentials]]`), used when a client sends no
//!   `Authorization`, and only to pull (GET and HEAD of the ping, manifests, blobs, tag lists and
//!   referrers): hoard answers the registry's own challenge itself (never a redirect target's),
//!   Basic or the Bearer token flow for a `pull` scope, and keeps tokens until they expire
//!   (`tokens.rs`). The account itself comes from its source (`accounts.rs`, `sources.rs`), kept
//!   until shortly before it expires and asked for again once when the registry refuses it. A
//!   push, a tag change or a delete goes with the client's credentials or with none;
//! - `cache.auth_on_hit = "upstream"` (`on_hit.rs`): whether a client may have a cached manifest
//!   or blob, as the registry's [`Verdict`] on the client's own credentials.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Response, StatusCode, Uri};
use hyper::body::Incoming;
use sha2::Digest as _;

use crate::config::{Credential, CredentialSource};
use crate::oci::Challenge;
use crate::upstream::{Origin, Upstream, UpstreamError};
use accounts::Accounts;
use tokens::{NoToken, fetch_token, pull_only, pull_scope};

mod accounts;
pub(crate) use accounts::SourceHealth;
mod azure;
mod docker_config;
mod gcp;
mod helper;
mod metadata;
mod on_hit;
pub(crate) use on_hit::Asker;
mod sources;
mod tokens;

pub use tokens::lends_credentials;

/// Bound on remembered tokens and verdicts; past it the oldest half is dropped.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug)]
struct Remembered {
    header: HeaderValue,
    until: Instant,
}

/// The registry's word on whether a client may have a cached blob or manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The registry accepted the client's credentials for the object. `asked`: it said so just
    /// now, not from memory, so the object is known to be in the route's repository.
    Allowed { asked: bool },
    /// The registry refused: the client gets its status, and its challenge if it sent one.
    Refused {
        status: StatusCode,
        challenge: Option<HeaderValue>,
    },
    /// The registry cannot be asked right now (unreachable, 5xx, 429): the object may go only to
    /// a credential the registry accepted before for a repository the object comes from (see
    /// [`RegistryAuth::allowed_before`]).
    Unreachable,
}

/// A verdict and when the registry gave it.
#[derive(Debug, Clone)]
struct Judged {
    verdict: Verdict,
    at: Instant,
}

/// Tokens and verdicts, shared by all connections.
#[derive(Debug, Default)]
pub(crate) struct RegistryAuth {
    /// (registry host, scope) → `Authorization` value hoard uses.
    tokens: Mutex<HashMap<(String, String), Remembered>>,
    /// sha256(client credential, host, path) → the registry's answer.
    verdicts: Mutex<HashMap<[u8; 32], Judged>>,
    /// sha256(client credential, host, repository name) → when last allowed, for offline
    /// serving.
    allowed_repos: Mutex<HashMap<[u8; 32], Instant>>,
    /// hoard's own accounts, from their sources.
    accounts: Accounts,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn bounded<K, V>(map: &mut HashMap<K, V>, age: impl Fn(&V) -> Instant) {
    if map.len() >= MAX_REMEMBERED {
        let mut ages: Vec<Instant> = map.values().map(&age).collect();
        ages.sort();
        let cutoff = ages[ages.len() / 2];
        map.retain(|_, v| age(v) > cutoff);
    }
}

/// Whether a request to a registry follows its redirects.
#[derive(Clone, Copy)]
enum Hops {
    Follow,
    /// The registry's own answer, a redirect included, is the answer.
    OriginOnly,
}

impl RegistryAuth {
    /// Sends a body-less request to a registry. When the client sent no `Authorization`, the
    /// request is a pull ([`lends_credentials`]) and hoard has `credential` for the registry,
    /// hoard authenticates: with a remembered token first, else by answering the registry's 401
    /// challenge and sending again. A 401 from a redirect target is passed on unanswered.
    pub(crate) async fn send_following(
        &self,
        upstream: &Upstream,
        credential: Option<&Credential>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_authenticated(upstream, credential, method, uri, headers, Hops::Follow)
            .await
    }

    /// [`send_following`](Self::send_following), or the same at the registry alone (a redirect
    /// is its answer).
    async fn send_authenticated(
        &self,
        upstream: &Upstream,
        credential: Option<&Credential>,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
        hops: Hops,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let send = |method, uri, headers| async move {
            match hops {
                Hops::Follow => upstream.send_following(method, uri, headers).await,
                Hops::OriginOnly => upstream.send_at_origin(method, uri, headers).await,
            }
        };
        let Some(credential) = credential.filter(|_| {
            !headers.contains_key(AUTHORIZATION) && lends_credentials(&method, uri.path())
        }) else {
            return send(method, uri, headers).await;
        };
        let scope = pull_scope(uri.path()).unwrap_or_default();
        let key = (credential.host.clone(), scope.clone());
        if let Some(header) = self.remembered(&key) {
            headers.insert(AUTHORIZATION, header);
        }
        let response = send(method.clone(), uri.clone(), headers.clone()).await?;
        // Only the registry's own challenge is answered: a CDN host that a blob redirects to
        // gets neither hoard's credentials nor a token fetched on its say-so.
        let from_origin = response.extensions().get::<Origin>() == Some(&Origin(true));
        if response.status() != StatusCode::UNAUTHORIZED || !from_origin {
            return Ok(response);
        }
        let Some(challenge) = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
        else {
            return Ok(response);
        };
        let sourced = credential.source != CredentialSource::Static;
        let answer = match challenge {
            Challenge::Basic => {
                let Some((login, lifetime)) = self.accounts.login(upstream, credential, None).await
                else {
                    return Ok(response); // the client sees the registry's 401
                };
                headers.insert(AUTHORIZATION, login.clone());
                let response = send(method.clone(), uri.clone(), headers.clone()).await?;
                // A refused sourced account is asked of its source again, once.
                let refused = response.status() == StatusCode::UNAUTHORIZED && sourced;
                let again = match refused {
                    true => {
                        self.accounts
                            .login(upstream, credential, Some(&login))
                            .await
                    }
                    false => None,
                };
                let Some((login, lifetime)) = again else {
                    if response.status() != StatusCode::UNAUTHORIZED {
                        self.remember(key, login, lifetime);
                    }
                    return Ok(response);
                };
                (login, lifetime)
            }
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                // A challenge asking for more than a pull gets a pull token or nothing.
                let scope = asked.filter(|asked| pull_only(asked)).unwrap_or(scope);
                if !pull_only(&scope) {
                    return Ok(response);
                }
                let login = self.accounts.login(upstream, credential, None).await;
                if login.is_none() && !credential.anonymous {
                    return Ok(response); // its source gave no account: logged
                }
                let host = credential.host.as_str();
                let service = service.as_deref();
                let login = login.map(|(login, _)| login);
                let token =
                    match fetch_token(upstream, host, login.clone(), &realm, service, &scope).await
                    {
                        // A refused sourced account is asked of its source again, once.
                        Err(NoToken::Refused) if sourced => {
                            let again = self.accounts.login(upstream, credential, login.as_ref());
                            match again.await {
                                Some((login, _)) => {
                                    fetch_token(
                                        upstream,
                                        host,
                                        Some(login),
                                        &realm,
                                        service,
                                        &scope,
                                    )
                                    .await
                                }
                                None => Err(NoToken::Failed),
                            }
                        }
                        token => token,
                    };
                let Ok(token) = token else {
                    return Ok(response); // the client sees the registry's 401
                };
                token
            }
        };
        let (header, lifetime) = answer;
        self.remember(key, header.clone(), lifetime);
        headers.insert(AUTHORIZATION, header);
        send(method, uri, headers).await
    }

    /// Remembers the `Authorization` that opened `key` (registry host, scope) for `lifetime`.
    fn remember(&self, key: (String, String), header: HeaderValue, lifetime: Duration) {
        if let Some(until) = Instant::now().checked_add(lifetime) {
            let mut tokens = lock(&self.tokens);
            bounded(&mut tokens, |r| r.until);
            tokens.insert(key, Remembered { header, until });
        }
    }

    /// The remembered `Authorization` for a forwarded request that is a pull
    /// ([`lends_credentials`]): no retry is possible. Anything else goes with the client's own
    /// credentials or with none.
    pub(crate) fn preauthorize(
        &self,
        credential: Option<&Credential>,
        method: &Method,
        path: &str,
        headers: &mut HeaderMap,
    ) {
        let Some(credential) = credential
            .filter(|_| !headers.contains_key(AUTHORIZATION) && lends_credentials(method, path))
        else {
            return;
        };
        let key = (
            credential.host.clone(),
            pull_scope(path).unwrap_or_default(),
        );
        if let Some(header) = self.remembered(&key) {
            headers.insert(AUTHORIZATION, header);
        }
    }

    /// How each sourced account's source has fared, by registry host and source name.
    pub(crate) fn source_health(
        &self,
    ) -> std::collections::BTreeMap<(String, &'static str), SourceHealth> {
        self.accounts.health()
    }

    fn remembered(&self, key: &(String, String)) -> Option<HeaderValue> {
        let tokens = lock(&self.tokens);
        let remembered = tokens.get(key)?;
        (remembered.until > Instant::now()).then(|| remembered.header.clone())
    }
}

/// The sha256 of `parts`, each prefixed by its length: a map key that keeps no credential in
/// the clear.
fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}
