//! `source = "gcp-metadata"`: an access token of the VM's (or GKE workload's) service account
//! from the GCP metadata server, as Google's client libraries get it: `GET
//! /computeMetadata/v1/instance/service-accounts/default/token` with `Metadata-Flavor: Google`,
//! on `$GCE_METADATA_HOST` (default `metadata.google.internal`), used as the password of the
//! user `oauth2accesstoken`. The call goes straight to the metadata server (`metadata.rs`).

use std::time::Duration;

use serde::Deserialize;

/// The user name GCR and Artifact Registry take an access token with.
const TOKEN_USER: &str = "oauth2accesstoken";

#[derive(Deserialize)]
struct Token {
    access_token: String,
    /// Seconds; an hour when absent (what the metadata server gives).
    expires_in: Option<u64>,
}

/// The user name and access token the metadata server gives now, and how long the token lasts.
pub(super) async fn account() -> Result<(String, String, Duration), String> {
    let host = std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "metadata.google.internal".to_owned());
    let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
    let server = format!("the metadata server {host}");
    let body = super::metadata::get(&url, ("metadata-flavor", "Google"), &server).await?;
    let token: Token =
        serde_json::from_slice(&body).map_err(|_| format!("{server} gave no access_token"))?;
    let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
    Ok((TOKEN_USER.to_owned(), token.access_token, lifetime))
}
