//! `source = "docker-config"`: hoard's account for a registry read from a docker `config.json`
//! (`~/.docker/config.json`, or a mounted `kubernetes.io/dockerconfigjson` Secret), read again each
//! time the account is needed, so a rewritten file takes effect at once. The `auths` entry for the
//! host is used, keyed as docker writes it (`https://index.docker.io/v1/` for Docker Hub; scheme
//! and path ignored), unless the file sends the host to a credential helper, as docker does:
//! `credHelpers` for the host first, then `credsStore`. Errors never quote the file: it holds
//! secrets.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::oci::registry_key;

/// A config file is small; a bigger one is not a docker config.
const MAX_FILE: u64 = 1 << 20;

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::HashMap<String, String>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// What a config file says of a registry's account.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FromFile {
    /// The user name and password of its `auths` entry.
    Account(String, String),
    /// Ask this credential helper (`docker-credential-<name>`).
    Helper(String),
}

/// What the file at `path` says of the account for `host` (a registry key).
pub(super) async fn account(path: &Path, host: &str) -> Result<FromFile, String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if size > MAX_FILE {
        return Err(format!(
            "{} is over 1 MiB: not a docker config",
            path.display()
        ));
    }
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: DockerConfig = serde_json::from_slice(&text)
        .map_err(|_| format!("{} is not a docker config.json", path.display()))?;
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| auths_key(key).as_deref() == Some(host))
        .map(|(_, helper)| helper)
        .or(config.creds_store.as_ref())
        .filter(|name| !name.is_empty());
    if let Some(helper) = helper {
        return Ok(FromFile::Helper(helper.clone()));
    }
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| auths_key(key).as_deref() == Some(host))
        .map(|(_, entry)| entry)
        .ok_or_else(|| format!("{} has no auths entry for {host}", path.display()))?;
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(FromFile::Account(username.clone(), password.clone()));
    }
    let decoded = entry
        .auth
        .as_deref()
        .and_then(|auth| {
            base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            format!(
                "{}: the entry for {host} has no usable auth",
                path.display()
            )
        })?;
    let (username, password) = decoded.split_once(':').ok_or_else(|| {
        format!(
            "{}: the entry for {host} has no usable auth",
            path.display()
        )
    })?;
    Ok(FromFile::Account(username.to_owned(), password.to_owned()))
}

/// The registry an `auths` key names: `https://index.docker.io/v1/` is Docker Hub, and any
/// scheme and path are ignored.
fn auths_key(key: &str) -> Option<String> {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let authority = key.split('/').next()?;
    registry_key(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_auths_entry_for_the_host_is_used_and_reread() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let write = |text: String| std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        write(format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"gcr.io":{{"username":"_json_key","password":"{{}}"}}}}}}"#
        ));
        let hub = account(&path, "registry-1.docker.io").await;
        assert_eq!(hub, Ok(FromFile::Account("robot".into(), "s3cret".into())));
        let gcr = account(&path, "gcr.io").await;
        assert_eq!(gcr, Ok(FromFile::Account("_json_key".into(), "{}".into())));
        let missing = account(&path, "quay.io").await.err().unwrap_or_default();
        assert!(missing.contains("no auths entry"), "{missing}");
        // Rewritten (a rotated Secret): the next read sees it.
        let rotated = base64::engine::general_purpose::STANDARD.encode("robot:n3w");
        write(format!(
            r#"{{"auths":{{"docker.io":{{"auth":"{rotated}"}}}}}}"#
        ));
        let hub = account(&path, "registry-1.docker.io").await;
        assert_eq!(hub, Ok(FromFile::Account("robot".into(), "n3w".into())));
        // A helper for the host first, then the store for all, as docker asks them.
        write(format!(
            r#"{{"credHelpers":{{"quay.io":"ecr-login"}},"credsStore":"pass","auths":{{"docker.io":{{"auth":"{rotated}"}}}}}}"#
        ));
        let quay = account(&path, "quay.io").await;
        assert_eq!(quay, Ok(FromFile::Helper("ecr-login".into())));
        let hub = account(&path, "registry-1.docker.io").await;
        assert_eq!(hub, Ok(FromFile::Helper("pass".into())));
        write("not json s3cret".into());
        let garbage = account(&path, "quay.io").await.err().unwrap_or_default();
        assert!(
            !garbage.contains("s3cret"),
            "errors never quote the file: {garbage}"
        );
    }
}
