//! hoard in-process against a fixture registry over real TLS, with reqwest through the proxy in
//! HTTP/1.1 and h2: the registry cache rules, tunnels, plain forwarding and the front door.

mod blobs;
mod forward;
mod freshness;
mod manifests;
mod ranges;
mod redirects;

use crate::common::*;

const BLOB_SIZE: usize = 300 << 10;

fn blob_path(repo: &str, digest: &str) -> String {
    url(&format!("/v2/{repo}/blobs/{digest}"))
}

/// Pulls a whole image (tag, then its blobs) and returns the manifest bytes.
async fn pull(client: &reqwest::Client, repo: &str, tag: &str, blobs: &[String]) -> bytes::Bytes {
    let ping = client.get(url("/v2/")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
    let manifest = client
        .get(url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", DOCKER_V2)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    let manifest = manifest.bytes().await.unwrap();
    for digest in blobs {
        let blob = client.get(blob_path(repo, digest)).send().await.unwrap();
        assert_eq!(blob.status(), 200);
        assert_eq!(crate::common::sha256(&blob.bytes().await.unwrap()), *digest);
    }
    manifest
}
