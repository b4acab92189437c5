//! A GET to a cloud's metadata service (GCP's metadata server, Azure's IMDS), as the clouds' own
//! client libraries ask it: plain http to a link-local (or loopback) address, straight, never
//! through `upstream.proxy`, and to an address the destination guard would refuse to clients.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long a metadata service may take; it answers in milliseconds.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer larger than this is not a token answer.
const MAX_ANSWER: usize = 64 << 10;

/// The body of the 200 answer to `GET url` with the `header` the service wants (its guard
/// against requests forged through a proxy). `service` names it in errors ("the metadata server
/// metadata.google.internal"); no error quotes the answer.
pub(super) async fn get(url: &str, header: (&str, &str), service: &str) -> Result<Bytes, String> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(header.0, header.1)
        .body(Empty::<Bytes>::new())
        .map_err(|_| format!("{service} has no usable address"))?;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let ask = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach {service}: {e}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("{service} answered {}", response.status()));
        }
        Ok(Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| format!("cannot read {service}'s answer"))?
            .to_bytes())
    };
    tokio::time::timeout(METADATA_TIMEOUT, ask)
        .await
        .map_err(|_| format!("{service} did not answer in time"))?
}
