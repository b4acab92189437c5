//! `[fleet]`: the other hoards this one shares upstream fetches with, off unless
//! `fleet.peers` is set.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::check::changed;
use super::error::ConfigError;
use super::units::parse_duration;
use crate::net::split_authority;

/// `[fleet]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    pub peers: Option<PeersSection>,
    #[serde(rename = "self")]
    pub self_addr: Option<String>,
    pub listen: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub peer_timeout: Option<String>,
}

/// `fleet.peers`: a list of `host:port`, or one DNS name (`host:port`) that resolves to all nodes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PeersSection {
    List(Vec<String>),
    Dns(String),
}

/// A fleet of hoards: each blob, manifest and tag has one owner among the peers, which alone
/// fetches it from the registry; the others read it from the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub peers: Peers,
    /// This node as the peers name it (`host:port`); `None` with DNS peers: the resolved
    /// address that is one of this host's own.
    pub self_addr: Option<String>,
    /// Where the peer endpoint listens.
    pub listen: SocketAddr,
    /// The shared secret requests between peers are signed with.
    pub secret: Secret,
    /// How long a node waits for the owner's response headers (and at most for the
    /// connection) before it asks the registry itself.
    pub peer_timeout: Duration,
}

impl FleetConfig {
    /// The keys whose change only a restart puts in force (the peer endpoint binds at start;
    /// the peers and the secret follow a reload); `None` is a node alone.
    pub(super) fn restart_keys(
        old: Option<&FleetConfig>,
        new: Option<&FleetConfig>,
    ) -> Vec<&'static str> {
        changed([(
            "fleet (on or off), fleet.listen",
            old.map(|f| f.listen) != new.map(|f| f.listen),
        )])
    }
}

/// Who the peers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// A fixed list of `host:port`, as the nodes name each other.
    List(Vec<String>),
    /// A DNS name resolved now and then (a Kubernetes headless Service); every address it
    /// resolves to is a node, at `port`.
    Dns { host: String, port: u16 },
}

/// The fleet's shared secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Arc<[u8]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A secret shorter than this is refused: it is the only thing between the peer endpoint and
/// anyone who can reach it.
const MIN_SECRET: usize = 16;

/// The default for `fleet.peer_timeout`: the owner answers a miss's headers once the registry
/// has answered its own request, which a slow registry (a token round trip, a redirect) may take
/// a few seconds for.
const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// `[fleet]`, or `None` when `fleet.peers` is unset.
pub(super) fn fleet(section: FleetSection) -> Result<Option<FleetConfig>, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let Some(peers) = section.peers else {
        return match (&section.self_addr, &section.listen, &section.secret_file) {
            (None, None, None) => Ok(None),
            _ => Err(invalid(
                "fleet.peers",
                "a fleet needs its peers (a list of host:port, or one DNS name:port)".into(),
            )),
        };
    };
    let peers = match peers {
        PeersSection::List(list) => {
            let list = list
                .iter()
                .map(|peer| peer_addr(peer).map_err(|m| invalid("fleet.peers", m)))
                .collect::<Result<Vec<_>, _>>()?;
            if list.is_empty() {
                return Err(invalid("fleet.peers", "the list is empty".into()));
            }
            Peers::List(list)
        }
        PeersSection::Dns(name) => {
            let (host, port) = host_port(&name).map_err(|m| invalid("fleet.peers", m))?;
            Peers::Dns { host, port }
        }
    };
    let self_addr = match section.self_addr {
        Some(text) => Some(peer_addr(&text).map_err(|m| invalid("fleet.self", m))?),
        None => None,
    };
    match (&peers, &self_addr) {
        (Peers::List(list), Some(me)) if !list.contains(me) => {
            return Err(invalid(
                "fleet.self",
                format!("{me} is not one of fleet.peers"),
            ));
        }
        (Peers::List(_), None) => {
            return Err(invalid(
                "fleet.self",
                "with a list of peers, say which one this node is".into(),
            ));
        }
        _ => {}
    }
    let Some(listen) = section.listen else {
        return Err(invalid(
            "fleet.listen",
            "the address of the peer endpoint is needed, e.g. 0.0.0.0:3129".into(),
        ));
    };
    let listen: SocketAddr = listen.parse().map_err(|_| {
        invalid(
            "fleet.listen",
            format!("{listen:?} is not an address like 0.0.0.0:3129"),
        )
    })?;
    let Some(path) = section.secret_file else {
        return Err(invalid(
            "fleet.secret_file",
            "peers sign their requests with a shared secret: give a file holding it \
             (e.g. `openssl rand -hex 32`)"
                .into(),
        ));
    };
    let text = std::fs::read(&path).map_err(|err| {
        invalid(
            "fleet.secret_file",
            format!("cannot read {}: {err}", path.display()),
        )
    })?;
    let secret = text.trim_ascii();
    if secret.len() < MIN_SECRET {
        return Err(invalid(
            "fleet.secret_file",
            format!(
                "{} holds {} bytes; at least {MIN_SECRET} are needed (e.g. `openssl rand -hex 32`)",
                path.display(),
                secret.len()
            ),
        ));
    }
    let peer_timeout = match section.peer_timeout {
        None => DEFAULT_PEER_TIMEOUT,
        Some(text) => parse_duration(&text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                invalid(
                    "fleet.peer_timeout",
                    format!("{text:?} is not a duration like 5s"),
                )
            })?,
    };
    Ok(Some(FleetConfig {
        peers,
        self_addr,
        listen,
        secret: Secret(secret.into()),
        peer_timeout,
    }))
}

/// A peer's `host:port`, lowercase, IPv6 in brackets; the port is required.
fn peer_addr(text: &str) -> Result<String, String> {
    let (host, port) = host_port(text)?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The lowercase host and the port of `host:port`.
fn host_port(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("{text:?} is not host:port");
    let authority = split_authority(text).ok_or_else(bad)?;
    let port = authority.port.ok_or_else(bad)?;
    let host = authority.host.to_ascii_lowercase();
    if host.contains(['/', '@', ' ', '?', '#']) {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml: &str) -> FleetSection {
        toml::from_str(toml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn secret_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap_or_else(|e| panic!("{e}"));
        let path = path.display().to_string();
        (dir, path)
    }

    #[test]
    fn a_list_of_peers_names_this_node_among_them() {
        let (_dir, secret) = secret_file();
        let fleet = fleet(section(&format!(
            r#"peers = ["A.example:3129", "10.0.0.2:3129", "[::1]:3129"]
               self = "a.example:3129"
               listen = "0.0.0.0:3129"
               secret_file = "{secret}""#
        )))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("off"));
        assert_eq!(
            fleet.peers,
            Peers::List(vec![
                "a.example:3129".into(),
                "10.0.0.2:3129".into(),
                "[::1]:3129".into()
            ])
        );
        assert_eq!(fleet.self_addr.as_deref(), Some("a.example:3129"));
        assert_eq!(&*fleet.secret.0, b"0123456789abcdef0123");
        assert_eq!(fleet.peer_timeout, DEFAULT_PEER_TIMEOUT);
    }

    #[test]
    fn one_name_is_resolved_for_the_peers() {
        let (_dir, secret) = secret_file();
        let fleet = fleet(section(&format!(
            r#"peers = "hoard-peers.ci.svc.cluster.local:3129"
               listen = "0.0.0.0:3129"
               secret_file = "{secret}"
               peer_timeout = "2s""#
        )))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("off"));
        assert_eq!(
            fleet.peers,
            Peers::Dns {
                host: "hoard-peers.ci.svc.cluster.local".into(),
                port: 3129
            }
        );
        assert_eq!(fleet.self_addr, None);
        assert_eq!(fleet.peer_timeout, Duration::from_secs(2));
    }

    #[test]
    fn mistakes_are_named_with_their_key() {
        let (_dir, secret) = secret_file();
        let short = _dir.path().join("short");
        std::fs::write(&short, "abc").unwrap_or_else(|e| panic!("{e}"));
        let short = short.display();
        for (toml, key, says) in [
            ("self = \"a:1\"", "fleet.peers", "needs its peers"),
            ("peers = []", "fleet.peers", "empty"),
            ("peers = [\"a\"]", "fleet.peers", "not host:port"),
            ("peers = [\"a:1\", \"b:1\"]", "fleet.self", "say which one"),
            (
                "peers = [\"a:1\"]\nself = \"b:1\"",
                "fleet.self",
                "not one of",
            ),
            (
                "peers = [\"a:1\"]\nself = \"a:1\"",
                "fleet.listen",
                "needed",
            ),
            (
                "peers = [\"a:1\"]\nself = \"a:1\"\nlisten = \"0.0.0.0:1\"",
                "fleet.secret_file",
                "openssl rand",
            ),
            (
                &format!(
                    "peers = [\"a:1\"]\nself = \"a:1\"\nlisten = \"0.0.0.0:1\"\nsecret_file = \"{short}\""
                ),
                "fleet.secret_file",
                "3 bytes",
            ),
            (
                &format!(
                    "peers = [\"a:1\"]\nself = \"a:1\"\nlisten = \"0.0.0.0:1\"\nsecret_file = \"{secret}\"\npeer_timeout = \"0s\""
                ),
                "fleet.peer_timeout",
                "not a duration",
            ),
        ] {
            match fleet(section(toml)) {
                Err(ConfigError::Invalid { key: got, message }) => {
                    assert_eq!(got, key, "{toml}: {message}");
                    assert!(message.contains(says), "{toml}: {message}");
                }
                other => panic!("{toml}: {other:?}"),
            }
        }
    }
}
