//! Where a sourced account comes from: each `source` of `[[upstream.credentials]]` asked for the
//! account now, with how long the source says it lasts.

use std::time::Duration;

use crate::config::{Credential, CredentialSource};
use crate::upstream::Upstream;

use super::docker_config::{self, FromFile};
use super::{azure, gcp, helper};

/// How long a credential helper's answer lasts: its protocol does not say (ECR's tokens last
/// 12 h, gcr's an hour), so it is asked again after a few minutes, and at once on a refusal.
const HELPER_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// An account as its source gave it, and how long the source says it lasts.
pub(super) struct Sourced {
    pub(super) username: String,
    pub(super) password: String,
    pub(super) lifetime: Duration,
}

/// The account `credential`'s source gives for its host now, or why there is none (never
/// quoting a secret).
pub(super) async fn ask(upstream: &Upstream, credential: &Credential) -> Result<Sourced, String> {
    let host = credential.host.as_str();
    let sourced = |(username, password), lifetime| Sourced {
        username,
        password,
        lifetime,
    };
    match &credential.source {
        CredentialSource::Static => Ok(sourced(
            (credential.username.clone(), credential.password.clone()),
            Duration::MAX,
        )),
        // Kept until the file changes.
        CredentialSource::DockerConfig(path) => match docker_config::account(path, host).await? {
            FromFile::Account(username, password) => {
                Ok(sourced((username, password), Duration::MAX))
            }
            FromFile::Helper(name) => Ok(sourced(
                helper::account(&name, &server_url(host)).await?,
                HELPER_LIFETIME,
            )),
        },
        CredentialSource::Helper(name) => Ok(sourced(
            helper::account(name, &server_url(host)).await?,
            HELPER_LIFETIME,
        )),
        CredentialSource::GcpMetadata => {
            let (username, password, lifetime) = gcp::account().await?;
            Ok(sourced((username, password), lifetime))
        }
        CredentialSource::AzureIdentity(identity) => {
            let (username, password, lifetime) = azure::account(upstream, identity, host).await?;
            // An exchange that says nothing of its lifetime: an hour, as Entra's tokens last.
            let lifetime = lifetime.unwrap_or(Duration::from_secs(3600));
            Ok(sourced((username, password), lifetime))
        }
    }
}

/// The server URL docker gives a credential helper for a registry: Docker Hub's is its index
/// URL, any other registry's its host (and port).
fn server_url(host: &str) -> String {
    match host {
        "registry-1.docker.io" => "https://index.docker.io/v1/".to_owned(),
        host => host.to_owned(),
    }
}
