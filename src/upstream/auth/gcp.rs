//! `source = "gcp-metadata"`: an access token of the VM's (or GKE workload's) service account
//! from the GCP metadata server, as Google's client libraries get it: `GET
//! /computeMetadata/v1/instance/service-accounts/default/token` with `Metadata-Flavor: Google`,
//! on `$GCE_METADATA_HOST` (default `metadata.google.internal`), used as the password of the
//! user `oauth2accesstoken`. The call goes straight to the metadata server: never through
//! `upstream.proxy`, and to an address the destination guard would refuse to clients.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// The user name GCR and Artifact Registry take an access token with.
const TOKEN_USER: &str = "oauth2accesstoken";

/// How long the metadata server may take; it answers in milliseconds.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

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
    let request = Request::builder()
        .method(Method::GET)
        .uri(&url)
        .header("metadata-flavor", "Google")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|_| format!("{host:?} is not a metadata server address"))?;
    let client: Client<HttpConnector, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let ask = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the metadata server {host}: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!(
                "the metadata server {host} answered {}",
                response.status()
            ));
        }
        let body = Limited::new(response.into_body(), 64 << 10)
            .collect()
            .await
            .map_err(|_| format!("cannot read the metadata server {host}'s answer"))?
            .to_bytes();
        let token: Token = serde_json::from_slice(&body)
            .map_err(|_| format!("the metadata server {host} gave no access_token"))?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        Ok((TOKEN_USER.to_owned(), token.access_token, lifetime))
    };
    tokio::time::timeout(METADATA_TIMEOUT, ask)
        .await
        .map_err(|_| format!("the metadata server {host} did not answer in time"))?
}
