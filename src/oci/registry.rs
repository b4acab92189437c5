//! Registry names as image references write them: Docker Hub's aliases, and when the first
//! component of a name is a registry host rather than a repository component.

use std::net::Ipv4Addr;

/// The host Docker Hub images are pulled from.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Names that mean Docker Hub in a reference.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", DOCKER_HUB];

/// Whether the first component of an image name is a registry (`gcr.io`, `host:5000`,
/// `localhost`) rather than the first component of a Docker Hub repository, as docker decides.
pub fn names_a_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

/// The canonical registry key of `host[:port]`: lowercase, Docker Hub's aliases folded into
/// [`DOCKER_HUB`], port 443 dropped. `None` unless it is a DNS name or IPv4 address with an
/// optional port from 1 to 65535.
pub fn registry_key(text: &str) -> Option<String> {
    let text = text.to_ascii_lowercase();
    let authority = crate::net::split_authority(&text)?;
    let (host, port) = (authority.host, authority.port.filter(|p| *p != 443));
    if authority.bracketed || !crate::net::is_dns_name(host) && host.parse::<Ipv4Addr>().is_err() {
        return None;
    }
    let host = if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB
    } else {
        host
    };
    Some(match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}
