//! hoard's registry accounts as `Basic` logins, from wherever `source` says: a static account as
//! configured; a sourced one (a docker config file, a credential helper, a cloud's metadata
//! service) kept until shortly before it expires, asked again once when the registry refuses it,
//! and asked by one request at a time per account. Each source's failures are counted and kept
//! for the status page, never with a secret.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;

use super::sources::ask;
use crate::config::{Credential, CredentialSource};
use crate::upstream::Upstream;

/// How long a login is used when nothing says it expires: a static account's, and a remembered
/// `Basic` answer's at most (bounds how long a changed password goes unnoticed).
const BASIC_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest a sourced account is kept, whatever its source says.
const MAX_KEEP: Duration = Duration::from_secs(12 * 3600);

/// How long to keep an account that lasts `lifetime`: shortly before it expires (a tenth, and
/// at least a minute, taken off), so that it is never used as it runs out.
fn keep_for(lifetime: Duration) -> Duration {
    let lifetime = lifetime.min(MAX_KEEP);
    lifetime.saturating_sub((lifetime / 10).max(Duration::from_secs(60)))
}

/// A sourced account's login, until when it is used, and (for a config file) the file's state it
/// was read from: a rewritten file is read again at once.
#[derive(Debug)]
struct Kept {
    login: HeaderValue,
    until: Instant,
    file: Option<FileStamp>,
}

/// A file's modification time and length.
type FileStamp = (Option<SystemTime>, u64);

async fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok(), meta.len()))
}

/// How a credential's source has fared: what the status page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SourceHealth {
    /// Times the source gave no account, since start.
    pub(crate) failures: u64,
    /// Why it last failed (never quoting a secret), cleared by its next success.
    pub(crate) last_error: Option<String>,
    /// When it last gave an account.
    pub(crate) last_ok: Option<SystemTime>,
}

type Key = (String, CredentialSource);

/// The sourced accounts kept, one ask at a time per account, and each source's health.
#[derive(Debug, Default)]
pub(crate) struct Accounts {
    kept: Mutex<HashMap<Key, Kept>>,
    asking: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    health: Mutex<BTreeMap<(String, &'static str), SourceHealth>>,
}

impl Accounts {
    /// hoard's account for `credential` as a `Basic` `Authorization` value (marked sensitive),
    /// and how long to use it: `None` for the anonymous stand-in, or when its source gives none
    /// (logged and counted). A sourced account is the one kept, unless it is `refused` (the
    /// registry just said no to it): then its source is asked again.
    pub(super) async fn login(
        &self,
        upstream: &Upstream,
        credential: &Credential,
        refused: Option<&HeaderValue>,
    ) -> Option<(HeaderValue, Duration)> {
        if credential.anonymous {
            return None;
        }
        if credential.source == CredentialSource::Static {
            let login = basic(&credential.username, &credential.password)?;
            return Some((login, BASIC_LIFETIME));
        }
        let key = (credential.host.clone(), credential.source.clone());
        // One ask of a source at a time per account: the requests that wait take its answer.
        let asking = lock(&self.asking).entry(key.clone()).or_default().clone();
        let _turn = asking.lock().await;
        if let Some(kept) = self.kept(&key).await
            && Some(&kept.0) != refused
        {
            return Some(kept);
        }
        let file = match &credential.source {
            CredentialSource::DockerConfig(path) => stamp(path).await,
            _ => None,
        };
        let sourced = ask(upstream, credential).await;
        let mut health = lock(&self.health);
        let health = health
            .entry((credential.host.clone(), credential.source.name()))
            .or_default();
        let sourced = match sourced {
            Ok(sourced) => sourced,
            Err(why) => {
                tracing::warn!(host = %credential.host, source = credential.source.name(), %why, "no account from the credential's source");
                upstream
                    .metrics()
                    .credential_source_failure(&credential.host, credential.source.name());
                health.failures += 1;
                health.last_error = Some(why);
                return None;
            }
        };
        health.last_error = None;
        health.last_ok = Some(SystemTime::now());
        let login = basic(&sourced.username, &sourced.password)?;
        let keep = keep_for(sourced.lifetime);
        if let Some(until) = Instant::now().checked_add(keep) {
            let kept = Kept {
                login: login.clone(),
                until,
                file,
            };
            lock(&self.kept).insert(key, kept);
        }
        Some((login, keep.min(BASIC_LIFETIME)))
    }

    /// The kept login for `key` and how long it has left, unless it ran out or its file changed.
    async fn kept(&self, key: &Key) -> Option<(HeaderValue, Duration)> {
        let (login, left, file) = {
            let kept = lock(&self.kept);
            let kept = kept.get(key)?;
            let left = kept.until.checked_duration_since(Instant::now())?;
            (kept.login.clone(), left, kept.file)
        };
        if let CredentialSource::DockerConfig(path) = &key.1
            && stamp(path).await != file
        {
            return None;
        }
        Some((login, left.min(BASIC_LIFETIME)))
    }

    /// Each sourced credential's health, by host and source name.
    pub(crate) fn health(&self) -> BTreeMap<(String, &'static str), SourceHealth> {
        lock(&self.health).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Basic` for an account, marked sensitive so that no log or debug output shows it.
fn basic(username: &str, password: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&crate::http::basic_header(username, password)).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_kept_until_shortly_before_they_expire() {
        let secs = Duration::from_secs;
        assert_eq!(
            keep_for(secs(3600)),
            secs(3240),
            "an hour's token: a tenth off"
        );
        assert_eq!(keep_for(secs(300)), secs(240), "at least a minute off");
        assert_eq!(keep_for(secs(30)), Duration::ZERO, "too short to keep");
        assert_eq!(keep_for(secs(u64::MAX)), secs(12 * 3600 - 4320));
    }
}
