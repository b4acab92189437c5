//! The registry-mirror listener (`[mirror]`): hoard's one store served as a registry mirror, for
//! hosts that must not trust an intercepting CA. containerd `hosts.toml`, dockerd
//! `registry-mirrors` and podman/CRI-O `registries.conf` mirrors point at it; each request is
//! admitted and mapped to its upstream registry by the listener edge ([`crate::edge`]) and
//! answered by the same registry rules as intercepted traffic (`answer.rs`).
//!
//! Plain HTTP, or TLS with the operator's certificate or a leaf from hoard's CA for
//! `mirror.names`; HTTP/1.1, and h2 over TLS by ALPN. Connections count against limits of their
//! own with the proxy's numbers, and close when idle as intercepted ones do.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::access::limits::ConnectionLimits;
use crate::config::{MirrorConfig, MirrorTls};
use crate::edge::{Listener, Registry, Role};
use crate::hoard::Hoard;
use crate::telemetry::Via;

mod answer;

pub(crate) use answer::Mirrored;

/// The TLS server config the mirror presents, `None` for plain HTTP. Read or minted once, at
/// start: a certificate that cannot be used stops hoard.
fn tls_config(mirror: &MirrorConfig, hoard: &Hoard) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    use anyhow::Context as _;
    Ok(match &mirror.tls {
        MirrorTls::Plain => None,
        MirrorTls::Files { cert, key } => Some(
            crate::tls::server_config_from_files(crate::crypto_provider(), cert, key)
                .context("mirror.tls_cert")?,
        ),
        MirrorTls::Minted(names) => Some(
            hoard
                .ca
                .server_config_for(names)
                .context("minting the mirror's certificate (mirror.names)")?,
        ),
    })
}

/// Binds the mirror's listener when `[mirror]` is on: its certificate and address must work, or
/// hoard does not start.
pub(crate) async fn bind(hoard: &Hoard) -> anyhow::Result<Option<Listener>> {
    let config = hoard.config();
    let Some(mirror) = config.mirror.as_ref() else {
        return Ok(None);
    };
    let tls = tls_config(mirror, hoard)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let limits = ConnectionLimits::new(
        config.proxy.connections.max,
        config.proxy.connections.per_client,
    );
    let listener = Listener::bind(
        mirror.listen,
        "mirror.listen",
        Role::Client(Via::Mirror),
        limits,
        tls,
    )
    .await?;
    let addr = listener.local_addr()?;
    tracing::info!(addr = %format!("{scheme}://{addr}"), "registry mirror listening");
    Ok(Some(listener))
}

/// The mirror's requests, each answered for the registry it names.
pub(crate) fn service() -> Arc<Registry<Mirrored>> {
    Arc::new(Registry(Arc::new(Mirrored)))
}
