//! `[store]`: only `[store.s3]` for now, the optional S3-API bucket a fleet of hoards shares
//! as a second tier behind each one's disk. Off unless the section is present.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::units::parse_duration;

/// `[store]` as written: only its `[store.s3]` table for now.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub s3: Option<S3Section>,
}

/// `[store.s3]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_http: bool,
    pub retention: Option<String>,
}

/// `[store]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The S3-API tier the hoards of a fleet share (`[store.s3]`); `None`: off.
    pub s3: Option<S3Config>,
}

/// The shared S3-API tier: where the bucket is and how hoard signs its requests.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `scheme://host[:port]` of an S3-compatible engine (SeaweedFS, Ceph RGW, MinIO …), without
    /// a trailing `/`, addressed path-style; `None`: AWS S3 itself.
    pub endpoint: Option<String>,
    /// The bucket (it must exist: hoard does not create it).
    pub bucket: String,
    /// The region requests are signed for.
    pub region: String,
    /// Folder of hoard's objects in the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// The access key; `None` on AWS: the instance's or pod's own (metadata service, web
    /// identity).
    pub credentials: Option<S3Credentials>,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: bool,
    /// How long an object no node uploaded or served stays before `hoard cache prune --s3`
    /// removes it; `None`: only when asked with `--older-than` (`--unused-for`).
    pub retention: Option<Duration>,
}

/// An S3 access key.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The key's id (`AKIA…` on AWS).
    pub access_key_id: String,
    /// The key's secret: never logged (`Debug` leaves it out).
    pub secret_access_key: String,
    /// A session token, for temporary keys (`AWS_SESSION_TOKEN`; only with keys from the
    /// environment).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Credentials({}, secret redacted)", self.access_key_id)
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|c| &c.access_key_id),
            )
            .field("allow_http", &self.allow_http)
            .field("retention", &self.retention)
            .finish()
    }
}

/// The environment variables read for the access key when the files are not configured.
pub(super) const ENV_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub(super) const ENV_SECRET: &str = "AWS_SECRET_ACCESS_KEY";
const ENV_TOKEN: &str = "AWS_SESSION_TOKEN";

/// `[store]`: `None` unless `[store.s3]` is present. `env` reads an environment variable (the
/// process's, or a test's stand-in); the key files, when configured, win over it.
pub(super) fn store(
    section: StoreSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StoreConfig, ConfigError> {
    Ok(StoreConfig {
        s3: section.s3.map(|s3| s3_tier(s3, env)).transpose()?,
    })
}

/// `[store.s3]`, checked.
fn s3_tier(
    section: S3Section,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Config, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let allow_http = section.allow_http;
    let endpoint = section
        .endpoint
        .as_deref()
        .map(|text| endpoint(text, allow_http))
        .transpose()?;
    let bucket = section.bucket.as_deref().map(str::trim).unwrap_or_default();
    if bucket.is_empty() {
        return Err(invalid(
            "store.s3.bucket",
            "missing: name the bucket the hoards share".into(),
        ));
    }
    if !valid_bucket(bucket) {
        return Err(invalid(
            "store.s3.bucket",
            format!("{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.' and '-')"),
        ));
    }
    let region = section.region.unwrap_or_else(|| "us-east-1".to_owned());
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "store.s3.region",
            format!("{region:?} is not a region like us-east-1"),
        ));
    }
    let prefix = prefix(section.prefix.as_deref().unwrap_or_default())?;
    let credentials = credentials(
        section.access_key_id_file.as_deref(),
        section.secret_access_key_file.as_deref(),
        env,
    )?;
    if credentials.is_none() && endpoint.is_some() {
        return Err(invalid(
            "store.s3.access_key_id_file",
            format!(
                "an endpoint other than AWS needs an access key: set access_key_id_file and \
                 secret_access_key_file, or {ENV_KEY_ID} and {ENV_SECRET}"
            ),
        ));
    }
    let retention = section
        .retention
        .map(|text| parse_duration(&text))
        .transpose()
        .map_err(|message| invalid("store.s3.retention", message))?;
    Ok(S3Config {
        endpoint,
        bucket: bucket.to_owned(),
        region,
        prefix,
        credentials,
        allow_http,
        retention,
    })
}

/// `scheme://host[:port]`, nothing after it but an optional `/`. Plain HTTP only with
/// `allow_http`: SigV4 signs requests but does not hide them, so objects and the bucket's
/// layout would cross the network in the clear.
fn endpoint(text: &str, allow_http: bool) -> Result<String, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "store.s3.endpoint",
        message,
    };
    let text = text.trim();
    let uri: http::Uri = text
        .parse()
        .map_err(|_| invalid(format!("{text:?} is not a URL like https://s3.example.com")))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    let Some(authority) = uri.authority() else {
        return Err(invalid(format!(
            "{text:?} is not a URL like https://s3.example.com"
        )));
    };
    if !matches!(scheme, "http" | "https")
        || authority.as_str().contains('@')
        || authority.host().is_empty()
        || !matches!(uri.path(), "" | "/")
        || uri.query().is_some()
    {
        return Err(invalid(format!(
            "{text:?} is not a URL like https://s3.example.com (http or https, a host, \
             an optional port, no path)"
        )));
    }
    if scheme == "http" && !allow_http {
        return Err(invalid(format!(
            "{text} is plain HTTP: requests are signed but not encrypted, so blobs and the \
             bucket's layout travel in the clear; use https, or set store.s3.allow_http = true \
             on a network you trust (such as loopback)"
        )));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// An S3 bucket name as AWS allows it for new buckets; path-style addressing puts it in the URL
/// path, so anything else is refused.
fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-'])
}

/// The prefix without leading or trailing `/`; each segment plain (no `.`, `..`, or characters
/// S3 keys would need escaped).
fn prefix(text: &str) -> Result<String, ConfigError> {
    let prefix = text.trim().trim_matches('/');
    let bad = prefix.split('/').any(|segment| {
        matches!(segment, "." | "..")
            || (!prefix.is_empty() && segment.is_empty())
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    if bad {
        return Err(ConfigError::Invalid {
            key: "store.s3.prefix",
            message: format!(
                "{text:?} is not a prefix like \"hoard\" or \"fleet/a\" (segments of A-Z, a-z, \
                 0-9, '.', '-' and '_')"
            ),
        });
    }
    Ok(prefix.to_owned())
}

/// The access key: from both files if configured (a missing or empty file is an error), else
/// from the environment, else none.
fn credentials(
    id_file: Option<&Path>,
    secret_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<S3Credentials>, ConfigError> {
    match (id_file, secret_file) {
        (Some(id_file), Some(secret_file)) => Ok(Some(S3Credentials {
            access_key_id: key_file("store.s3.access_key_id_file", id_file)?,
            secret_access_key: key_file("store.s3.secret_access_key_file", secret_file)?,
            session_token: None,
        })),
        (Some(_), None) | (None, Some(_)) => Err(ConfigError::Invalid {
            key: if id_file.is_some() {
                "store.s3.secret_access_key_file"
            } else {
                "store.s3.access_key_id_file"
            },
            message: "give both access_key_id_file and secret_access_key_file".into(),
        }),
        (None, None) => {
            let value = |name| env(name).filter(|v| !v.trim().is_empty());
            match (value(ENV_KEY_ID), value(ENV_SECRET)) {
                (Some(id), Some(secret)) => Ok(Some(S3Credentials {
                    access_key_id: id.trim().to_owned(),
                    secret_access_key: secret.trim().to_owned(),
                    session_token: value(ENV_TOKEN).map(|t| t.trim().to_owned()),
                })),
                (None, None) => Ok(None),
                _ => Err(ConfigError::Invalid {
                    key: "store.s3.access_key_id_file",
                    message: format!("{ENV_KEY_ID} and {ENV_SECRET} must be set together"),
                }),
            }
        }
    }
}

/// One line of a key file, trimmed; an unreadable or empty file is an error.
fn key_file(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key,
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let value = text.trim();
    if value.is_empty() || value.contains(['\n', '\r']) {
        return Err(ConfigError::Invalid {
            key,
            message: format!("{} must hold the key on one line", path.display()),
        });
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, env: &[(&str, &str)]) -> Result<Option<S3Config>, String> {
        let section: StoreSection = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let env = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        store(section, &env)
            .map(|store| store.s3)
            .map_err(|e| e.to_string())
    }

    const KEYS: [(&str, &str); 2] = [(ENV_KEY_ID, "id"), (ENV_SECRET, "secret")];

    #[test]
    fn the_tier_is_off_without_its_section_and_has_defaults() {
        assert_eq!(resolve("", &KEYS), Ok(None));
        let config = resolve("[s3]\nbucket = \"hoard\"\nprefix = \"/fleet/a/\"\n", &[])
            .ok()
            .flatten();
        let Some(config) = config else {
            panic!("no config");
        };
        assert_eq!(config.endpoint, None);
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.prefix, "fleet/a");
        assert_eq!(config.credentials, None);
        assert_eq!(config.retention, None);
        let local = "[s3]\nbucket = \"hoard\"\nendpoint = \"http://127.0.0.1:8333/\"\n\
                     allow_http = true\nretention = \"30d\"\n";
        let config = resolve(local, &KEYS).ok().flatten();
        let Some(config) = config else {
            panic!("no config");
        };
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(config.retention, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(
            config.credentials.map(|c| c.access_key_id).as_deref(),
            Some("id")
        );
        assert!(!format!("{:?}", resolve(local, &KEYS)).contains("secret"));
    }

    #[test]
    fn bad_settings_name_their_key_on_one_line() {
        let cases = [
            ("[s3]\nregion = \"eu-west-1\"\n", "store.s3.bucket: missing"),
            ("[s3]\nbucket = \"a/b\"\n", "store.s3.bucket:"),
            (
                "[s3]\nbucket = \"hoard\"\nendpoint = \"http://127.0.0.1:8333\"\n",
                "store.s3.endpoint: http://127.0.0.1:8333 is plain HTTP",
            ),
            (
                "[s3]\nbucket = \"hoard\"\nendpoint = \"https://s3.test/path\"\n",
                "store.s3.endpoint:",
            ),
            (
                "[s3]\nbucket = \"hoard\"\nendpoint = \"ftp://s3.test\"\n",
                "store.s3.endpoint:",
            ),
            (
                "[s3]\nbucket = \"hoard\"\nprefix = \"a/../b\"\n",
                "store.s3.prefix:",
            ),
            (
                "[s3]\nbucket = \"hoard\"\nretention = \"soon\"\n",
                "store.s3.retention:",
            ),
            (
                "[s3]\nbucket = \"hoard\"\nregion = \"\"\n",
                "store.s3.region:",
            ),
            (
                "[s3]\nbucket = \"hoard\"\naccess_key_id_file = \"/nonexistent/id\"\n\
                 secret_access_key_file = \"/nonexistent/secret\"\n",
                "store.s3.access_key_id_file: cannot read /nonexistent/id",
            ),
            (
                "[s3]\nbucket = \"hoard\"\naccess_key_id_file = \"/nonexistent/id\"\n",
                "store.s3.secret_access_key_file: give both",
            ),
            ("[s3]\nbucket = \"hoard\"\nbukcet = \"x\"\n", "bukcet"),
        ];
        for (text, needle) in cases {
            let err = resolve(text, &KEYS).err().unwrap_or_default();
            assert!(err.contains(needle), "{text}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let custom = "[s3]\nbucket = \"hoard\"\nendpoint = \"https://s3.test\"\n";
        let err = resolve(custom, &[]).err().unwrap_or_default();
        assert!(err.starts_with("store.s3.access_key_id_file:"), "{err}");
        let err = resolve(custom, &KEYS[..1]).err().unwrap_or_default();
        assert!(err.contains("must be set together"), "{err}");
    }

    #[test]
    fn key_files_win_over_the_environment() {
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
        assert!(std::fs::write(&id, "file-id\n").is_ok());
        assert!(std::fs::write(&secret, "file-secret\n").is_ok());
        let text = format!(
            "[s3]\nbucket = \"hoard\"\naccess_key_id_file = {:?}\nsecret_access_key_file = {:?}\n",
            id.display().to_string(),
            secret.display().to_string()
        );
        let credentials = resolve(&text, &KEYS)
            .ok()
            .flatten()
            .and_then(|c| c.credentials);
        assert_eq!(
            credentials,
            Some(S3Credentials {
                access_key_id: "file-id".into(),
                secret_access_key: "file-secret".into(),
                session_token: None,
            })
        );
    }
}
