//! hoard: a caching HTTPS forward proxy for container registries.
//!
//! Layers, bottom to top; each imports only what is below it (`.ci/layers` checks this):
//! - vocabulary, no I/O: [`oci`] (digests, routes, media types, ranges, auth challenges, registry
//!   names), [`net`]
//!   (hosts, patterns, address blocks, proxy URLs), [`http`] (bodies, hoard-made responses,
//!   headers, idle timeout, h2 write batching), [`error`];
//! - [`config`] (file sections, validation per section, units) and [`telemetry`] (metrics,
//!   access log, the status page's activity);
//! - services that never import each other: [`tls`] (CA, leaves, roots), [`store`] (the disk),
//!   [`tier`] (the S3-API bucket a fleet shares), [`upstream`] (the client, parent proxy,
//!   redirects, registry auth), [`access`] (connection limits, proxy logins), [`fleet`] (the
//!   peers of a fleet: who owns what, signed requests);
//! - [`hoard`]: the state every connection shares;
//! - [`registry`]: the OCI rules (what to serve from the store, what to fill, what to revalidate);
//! - [`edge`]: what every client listener shares: the socket with its connection limits, TLS
//!   and `via` label, the one accept loop, the TLS handshake, admission (allow-list, logins,
//!   429), the mapping of a registry-API request to its registry, and the server's stop signal;
//! - listeners, which never import each other: [`proxy`] (front door, CONNECT, tunnel,
//!   intercept, plain forward, setup scripts), [`mirror`] (the registry-mirror listener),
//!   [`peer`] (the fleet's peer endpoint) and [`admin`] (metrics, health, readiness, status
//!   page);
//! - [`server`] wires them; [`ops`] holds the operator commands and uses only the lower layers.

pub(crate) mod access;
pub(crate) mod admin;
pub mod config;
pub(crate) mod edge;
pub mod error;
pub(crate) mod fleet;
pub(crate) mod hoard;
pub mod http;
pub(crate) mod mirror;
pub mod net;
pub mod oci;
pub mod ops;
pub(crate) mod peer;
pub(crate) mod proxy;
pub(crate) mod registry;
pub mod server;
pub mod store;
pub(crate) mod telemetry;
pub mod tier;
pub(crate) mod tls;
pub mod upstream;

pub use config::Config;
pub use server::Server;

/// The crypto provider: aws-lc-rs, the only one in the tree.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The tokio runtime the commands run on: multi-threaded, with I/O and timers.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
