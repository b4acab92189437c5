//! The fleet (`[fleet]`): several hoards that fetch each object from the registry once between
//! them. Every blob and manifest digest, and every tag, has one owner among the peers
//! (`ring.rs`); a node that misses something a peer owns reads it from that peer's endpoint
//! (the mirror's API, for peers only; see `crate::peer`), with requests signed by the
//! fleet's shared secret (`sign.rs`). When the owner cannot answer in time, the node asks the
//! registry itself: a bounded duplicate, counted.
//!
//! This module knows the peers and talks to them; what is asked, and when, is the registry
//! cache's business (`crate::registry`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{self, Peers, Secret};
use crate::http::{Body, empty_body};
use crate::telemetry::{Metrics, PeerFailure};

mod replay;
use replay::Replays;
mod ring;
pub(crate) mod sign;
mod trace;

pub(crate) use ring::Ring;
pub(crate) use sign::{Mode, Signed};
pub(crate) use trace::{TRACEPARENT, TraceParent};

/// The header a peer endpoint puts on a refusal of its own (as opposed to a registry's answer it
/// relays): the requester then asks the registry itself.
pub(crate) const REFUSED: &str = "hoard-fleet-refused";

/// The header that says how the requester reaches the registry (signed with the request).
pub(crate) const MODE: &str = "hoard-fleet-mode";

/// Where a peer endpoint serves its node's metrics to the other peers (signed, mode
/// [`Mode::Stats`]).
pub(crate) const METRICS_PATH: &str = "/fleet/metrics";

/// The most of a peer's metrics read.
const MAX_METRICS: usize = 4 << 20;

/// How often a DNS name for the peers is resolved again.
const DNS_REFRESH: Duration = Duration::from_secs(10);

/// An idle connection to a peer is kept this long.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// The peers, the secret and a client to reach them.
#[derive(Debug)]
pub(crate) struct Fleet {
    state: RwLock<Arc<State>>,
    client: Client<HttpConnector, Body>,
    /// Each peer's last answer: `true` when it came.
    health: Mutex<HashMap<String, bool>>,
    metrics: Arc<Metrics>,
    /// The signatures of peer requests accepted lately: each is good once.
    replays: Replays,
}

/// What a reload may change.
#[derive(Debug)]
struct State {
    ring: Ring,
    /// This node as the peers name it; `None` until a DNS name for the peers has resolved to one
    /// of this host's addresses.
    me: Option<String>,
    config: config::FleetConfig,
}

/// Why the owner did not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("peer {peer}: {error}")]
    Unreachable {
        peer: String,
        error: hyper_util::client::legacy::Error,
    },
    #[error("peer {peer} sent no response headers within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
    #[error("peer {peer} refused: {reason}")]
    Refused { peer: String, reason: String },
    #[error("peer {peer}: not a valid request URI")]
    BadUri { peer: String },
}

impl PeerError {
    /// The metric label of this failure.
    pub(crate) fn kind(&self) -> PeerFailure {
        match self {
            PeerError::Unreachable { .. } | PeerError::BadUri { .. } => PeerFailure::Unreachable,
            PeerError::Timeout { .. } => PeerFailure::Timeout,
            PeerError::Refused { .. } => PeerFailure::Refused,
        }
    }
}

impl Fleet {
    /// A fleet on `config`; with a DNS name for the peers, the ring stays empty (this node owns
    /// everything) until [`Fleet::refresh`] has resolved it.
    pub(crate) fn new(config: &config::FleetConfig, metrics: Arc<Metrics>) -> Fleet {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.peer_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Fleet {
            state: RwLock::new(Arc::new(State::new(config.clone()))),
            client,
            health: Mutex::default(),
            metrics,
            replays: Replays::default(),
        }
    }

    fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a reloaded `[fleet]` in force: a changed list of peers moves only the keys the
    /// added or removed peers win or held.
    pub(crate) fn reconfigure(&self, config: &config::FleetConfig) {
        let old = self.state();
        if old.config == *config {
            return;
        }
        let mut state = State::new(config.clone());
        if let (Peers::Dns { .. }, Peers::Dns { .. }) = (&old.config.peers, &config.peers) {
            // Keep what the name resolved to until the next refresh.
            state.ring = old.ring.clone();
            state.me = old.me.clone().or(state.me);
        }
        tracing::info!(peers = ?state.ring.peers(), me = ?state.me, "fleet peers changed");
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }

    /// The peer that owns `key`, unless it is this node (or the fleet has no peers yet).
    pub(crate) fn owner(&self, key: &str) -> Option<String> {
        let state = self.state();
        let me = state.me.as_deref()?;
        let owner = state.ring.owner(key)?;
        (owner != me).then(|| owner.to_owned())
    }

    /// Checks a peer request's signature (and that it is not a replay); `Err` is the reason to
    /// refuse it.
    pub(crate) fn verify(
        &self,
        request: Signed<'_>,
        header: Option<&HeaderValue>,
    ) -> Result<(), &'static str> {
        sign::verify(&self.secret().0, request, header, &self.replays)
    }

    /// The secret requests are signed with.
    pub(crate) fn secret(&self) -> Secret {
        self.state().config.secret.clone()
    }

    /// Asks `peer` for `path_and_query` (a registry path with `?ns=`), signed, and waits at most
    /// `fleet.peer_timeout` for its response headers. A refusal of the peer's own is an error;
    /// a registry answer it relays (a 404, say) is not.
    pub(crate) async fn send(
        &self,
        peer: &str,
        method: Method,
        path_and_query: &str,
        mode: Mode,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, PeerError> {
        let result = self
            .request(peer, method, path_and_query, mode, headers)
            .await;
        match &result {
            Ok(_) => self.metrics.peer_read(),
            Err(err) => self.metrics.duplicate_fetch(err.kind()),
        }
        result
    }

    /// `peer`'s own metrics (the Prometheus text of its counters), for the fleet's figures on
    /// the status page; waits at most `fleet.peer_timeout` for all of it.
    pub(crate) async fn metrics_of(&self, peer: &str) -> Result<String, PeerError> {
        let timeout = self.state().config.peer_timeout;
        let read = async {
            let response = self
                .request(
                    peer,
                    Method::GET,
                    METRICS_PATH,
                    Mode::Stats,
                    HeaderMap::new(),
                )
                .await?;
            let body = Limited::new(response.into_body(), MAX_METRICS)
                .collect()
                .await
                .map_err(|error| PeerError::Refused {
                    peer: peer.to_owned(),
                    reason: format!("reading its metrics: {error}"),
                })?;
            Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(PeerError::Timeout {
                    peer: peer.to_owned(),
                    timeout,
                })
            })
    }

    /// One signed request to `peer`, its response headers within `fleet.peer_timeout`; the peer
    /// is marked up or down by the outcome.
    async fn request(
        &self,
        peer: &str,
        method: Method,
        path_and_query: &str,
        mode: Mode,
        mut headers: HeaderMap,
    ) -> Result<Response<Incoming>, PeerError> {
        let state = self.state();
        let uri: Uri = format!("http://{peer}{path_and_query}")
            .parse()
            .map_err(|_| PeerError::BadUri {
                peer: peer.to_owned(),
            })?;
        let signed = Signed {
            method: method.as_str(),
            path_and_query,
            mode,
            headers: &headers,
        };
        let signature = sign::sign(&state.config.secret.0, signed);
        headers.insert(sign::SIGNATURE, signature);
        headers.insert(MODE, HeaderValue::from_static(mode.as_str()));
        headers.remove(HOST);
        let mut request = Request::new(empty_body());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let timeout = state.config.peer_timeout;
        let result = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(PeerError::Timeout {
                peer: peer.to_owned(),
                timeout,
            }),
            Ok(Err(error)) => Err(PeerError::Unreachable {
                peer: peer.to_owned(),
                error,
            }),
            Ok(Ok(response)) => match response.headers().get(REFUSED) {
                Some(reason) => Err(PeerError::Refused {
                    peer: peer.to_owned(),
                    reason: String::from_utf8_lossy(reason.as_bytes()).into_owned(),
                }),
                None => Ok(response),
            },
        };
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.to_owned(), result.is_ok());
        result
    }

    /// The peers and whether each answered last time it was asked (`None`: not asked yet); this
    /// node is marked.
    pub(crate) fn peers(&self) -> Vec<PeerStatus> {
        let state = self.state();
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        state
            .ring
            .peers()
            .iter()
            .map(|peer| PeerStatus {
                name: peer.clone(),
                me: state.me.as_deref() == Some(peer.as_str()),
                up: health.get(peer).copied(),
            })
            .collect()
    }

    /// Sets the peer gauges (before a scrape).
    pub(crate) fn update_metrics(&self) {
        let peers = self.peers();
        let down = peers.iter().filter(|p| p.up == Some(false)).count();
        self.metrics.set_peers(peers.len() - down, down);
    }

    /// Resolves a DNS name for the peers now and every few seconds, as long as `fleet` lives.
    pub(crate) async fn refresh(fleet: std::sync::Weak<Fleet>) {
        loop {
            let Some(live) = fleet.upgrade() else {
                return;
            };
            let state = live.state();
            if let Peers::Dns { host, port } = &state.config.peers {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => live.resolved(addrs.collect()),
                    Err(error) => {
                        tracing::warn!(%host, %error, "cannot resolve the fleet's peers; keeping the last answer");
                    }
                }
            }
            drop((live, state));
            tokio::time::sleep(DNS_REFRESH).await;
        }
    }

    /// Takes a DNS answer for the peers as the ring.
    fn resolved(&self, addrs: Vec<SocketAddr>) {
        let old = self.state();
        let peers: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        let me = old.config.self_addr.clone().or_else(|| {
            addrs
                .iter()
                .find(|addr| is_local(addr))
                .map(SocketAddr::to_string)
        });
        let ring = Ring::new(peers);
        if ring == old.ring && me == old.me {
            return;
        }
        if me.is_none() {
            tracing::warn!(peers = ?ring.peers(), "none of the fleet's addresses is this host's; set fleet.self");
        }
        tracing::info!(peers = ?ring.peers(), ?me, "fleet peers resolved");
        let state = State {
            ring,
            me,
            config: old.config.clone(),
        };
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }
}

impl State {
    fn new(config: config::FleetConfig) -> State {
        let (ring, me) = match &config.peers {
            Peers::List(list) => (Ring::new(list.clone()), config.self_addr.clone()),
            Peers::Dns { .. } => (Ring::default(), config.self_addr.clone()),
        };
        State { ring, me, config }
    }
}

/// A peer as the status page shows it.
#[derive(Debug, Clone)]
pub(crate) struct PeerStatus {
    pub name: String,
    pub me: bool,
    pub up: Option<bool>,
}

/// Whether `addr`'s IP is one of this host's: only then can a socket bind to it.
fn is_local(addr: &SocketAddr) -> bool {
    std::net::TcpListener::bind((addr.ip(), 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_fleet(self_addr: Option<&str>) -> Fleet {
        let config = config::FleetConfig {
            peers: Peers::Dns {
                host: "hoard-peers.test".into(),
                port: 3129,
            },
            self_addr: self_addr.map(str::to_owned),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret: Secret(Arc::from(&b"0123456789abcdef"[..])),
            peer_timeout: Duration::from_secs(1),
        };
        Fleet::new(&config, Arc::default())
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[tokio::test]
    async fn a_dns_name_becomes_the_ring_and_this_node_is_the_address_it_can_bind() {
        let fleet = dns_fleet(None);
        // Before the name resolves, this node owns everything.
        assert_eq!(fleet.owner("sha256:00"), None);
        // 192.0.2.0/24 is documentation space: no host has it, so it cannot be bound here.
        fleet.resolved(vec![addr("192.0.2.7:3129"), addr("127.0.0.1:3129")]);
        let peers = fleet.peers();
        let names: Vec<_> = peers.iter().map(|p| (p.name.as_str(), p.me)).collect();
        assert_eq!(names, [("127.0.0.1:3129", true), ("192.0.2.7:3129", false)]);
        // Some keys are the other node's now.
        let other = (0..100)
            .filter_map(|i| fleet.owner(&format!("sha256:{i:064x}")))
            .collect::<Vec<_>>();
        assert!(!other.is_empty() && other.iter().all(|o| o == "192.0.2.7:3129"));
    }

    #[tokio::test]
    async fn fleet_self_wins_over_the_address_test() {
        let fleet = dns_fleet(Some("192.0.2.7:3129"));
        fleet.resolved(vec![addr("192.0.2.7:3129"), addr("127.0.0.1:3129")]);
        let me: Vec<_> = fleet
            .peers()
            .into_iter()
            .filter(|p| p.me)
            .map(|p| p.name)
            .collect();
        assert_eq!(me, ["192.0.2.7:3129"]);
    }
}
