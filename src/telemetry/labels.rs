//! The labels of hoard's metrics: which listener ([`Via`]), where bytes came from ([`BytesFrom`]),
//! and the reasons and results counted (closed sets, each an enum with `as_str()`), with the
//! label set of each family (a `#[derive(EncodeLabelSet)]` struct), so that a label name or value
//! cannot be misspelt at a call site.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::http::CacheStatus;

/// Which listener a request came in on: the `via` label of request metrics, and the status
/// page's split of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Via {
    /// The proxy port: intercepted CONNECTs, tunnels, plain forwards.
    Proxy,
    /// The registry-mirror listener (`[mirror]`).
    Mirror,
    /// The fleet's peer endpoint (`[fleet]`): other hoards reading what this one owns.
    Fleet,
}

impl Via {
    /// Every listener, in the order the status page lists them; `via as usize` indexes it.
    pub(crate) const ALL: [Via; 3] = [Via::Proxy, Via::Mirror, Via::Fleet];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Proxy => "proxy",
            Via::Mirror => "mirror",
            Via::Fleet => "fleet",
        }
    }
}

/// Where the body bytes of a response came from: the `source` label of
/// `hoard_response_bytes_total` and the two lines of the status page's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BytesFrom {
    /// The store: hits, revalidated and stale tags.
    Cache,
    /// An upstream: misses and bypassed requests.
    Upstream,
    /// A CONNECT tunnel, bytes copied untouched.
    Tunnel,
    /// hoard itself (errors, `/ca.crt`).
    Local,
}

impl BytesFrom {
    /// Where the bytes of a response answered with `status` came from.
    pub(crate) fn of(status: CacheStatus) -> BytesFrom {
        match status {
            CacheStatus::Hit | CacheStatus::Revalidated | CacheStatus::Stale => BytesFrom::Cache,
            CacheStatus::Miss | CacheStatus::Bypass => BytesFrom::Upstream,
            CacheStatus::Tunnel => BytesFrom::Tunnel,
            CacheStatus::Local => BytesFrom::Local,
        }
    }

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BytesFrom::Cache => "cache",
            BytesFrom::Upstream => "upstream",
            BytesFrom::Tunnel => "tunnel",
            BytesFrom::Local => "local",
        }
    }
}

/// Why a client's request was refused: the `reason` label of `hoard_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AuthFailure {
    /// No or wrong proxy login.
    ProxyAuth,
    /// Too many failed proxy logins from the client's address.
    Throttled,
    /// The client's address is not in `proxy.allow_clients`.
    AllowList,
}

impl AuthFailure {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthFailure::ProxyAuth => "proxy_auth",
            AuthFailure::Throttled => "throttled",
            AuthFailure::AllowList => "allow_list",
        }
    }
}

/// Why the connection limits refused or closed a connection: the `reason` label of
/// `hoard_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConnectionRefused {
    /// Over `proxy.max_connections_per_client`.
    PerClient,
    /// At `proxy.max_connections` with no idle connection to close.
    Full,
    /// An idle connection closed at `proxy.max_connections` to admit a new one.
    Evicted,
}

impl ConnectionRefused {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnectionRefused::PerClient => "per_client",
            ConnectionRefused::Full => "full",
            ConnectionRefused::Evicted => "evicted",
        }
    }
}

/// Why a blob miss did not become a fill: the `reason` label of `hoard_fills_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FillSkipped {
    /// The range asked for starts far into the blob; it went upstream as a range.
    FarRange,
    /// At `cache.max_fills`.
    MaxFills,
    /// At `cache.max_fills_per_client`.
    MaxFillsPerClient,
    /// The upstream gave no `Content-Length`: streamed to the client, not kept.
    NoLength,
    /// The upstream's `Content-Length` is above `cache.max_blob_size`: streamed, not kept.
    TooBig,
}

impl FillSkipped {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FillSkipped::FarRange => "far_range",
            FillSkipped::MaxFills => "max_fills",
            FillSkipped::MaxFillsPerClient => "max_fills_per_client",
            FillSkipped::NoLength => "no_length",
            FillSkipped::TooBig => "too_big",
        }
    }
}

/// Why a node asked the registry itself for something a peer owns: the `reason` label of
/// `hoard_fleet_duplicate_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerFailure {
    /// No connection to the owner.
    Unreachable,
    /// The owner did not answer with headers within `fleet.peer_timeout`.
    Timeout,
    /// The owner refused the request (a wrong secret, a registry it does not serve).
    Refused,
    /// The owner's answer broke off; the rest came from the registry.
    Broken,
}

impl PeerFailure {
    /// Every reason.
    pub(crate) const ALL: [PeerFailure; 4] = [
        PeerFailure::Unreachable,
        PeerFailure::Timeout,
        PeerFailure::Refused,
        PeerFailure::Broken,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PeerFailure::Unreachable => "unreachable",
            PeerFailure::Timeout => "timeout",
            PeerFailure::Refused => "refused",
            PeerFailure::Broken => "broken",
        }
    }
}

/// What a read of the shared S3 tier found: the `result` label of `hoard_tier_reads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TierRead {
    /// The bucket had it.
    Hit,
    /// The bucket did not have it.
    Miss,
    /// The bucket could not be asked.
    Error,
    /// What the bucket had did not match its digest (it is deleted there).
    Corrupt,
}

impl TierRead {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TierRead::Hit => "hit",
            TierRead::Miss => "miss",
            TierRead::Error => "error",
            TierRead::Corrupt => "corrupt",
        }
    }
}

/// What an upload to the shared S3 tier did: the `result` label of `hoard_tier_writes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TierWrite {
    /// Written.
    Created,
    /// Another node had written it (a conditional create that found it).
    AlreadyThere,
    /// Failed.
    Error,
}

impl TierWrite {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TierWrite::Created => "created",
            TierWrite::AlreadyThere => "already_there",
            TierWrite::Error => "error",
        }
    }
}

/// Label values written as their `as_str()`: prometheus-client's derive would write the
/// variant's Rust name (`ProxyAuth`), not the snake_case or upper-case word hoard exposes.
macro_rules! label_value_as_str {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}

label_value_as_str!(
    CacheStatus,
    BytesFrom,
    Via,
    AuthFailure,
    ConnectionRefused,
    FillSkipped,
    PeerFailure,
    TierRead,
    TierWrite
);

/// `hoard_requests_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) cache: CacheStatus,
    pub(super) via: Via,
}

/// `hoard_response_bytes_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct BytesLabels {
    pub(super) source: BytesFrom,
    pub(super) via: Via,
}

/// `hoard_registry_manifest_gets_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct HostLabel {
    /// An intercepted host, its `*.domain` pattern, or `other`.
    pub(super) host: String,
}

/// `hoard_upstream_requests_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct UpstreamLabels {
    /// As in [`HostLabel`].
    pub(super) host: String,
    /// The response's status; 0: no response.
    pub(super) status: u16,
}

/// `hoard_auth_failures_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct AuthFailureLabel {
    pub(super) reason: AuthFailure,
}

/// `hoard_connections_refused_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ConnectionRefusedLabel {
    pub(super) reason: ConnectionRefused,
}

/// `hoard_fills_skipped_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct FillSkippedLabel {
    pub(super) reason: FillSkipped,
}

/// `hoard_fleet_duplicate_fetches_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct PeerFailureLabel {
    pub(super) reason: PeerFailure,
}

/// `hoard_tier_reads_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct TierReadLabel {
    pub(super) result: TierRead,
}

/// `hoard_tier_writes_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct TierWriteLabel {
    pub(super) result: TierWrite,
}

/// `hoard_fleet_peers`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct PeerStateLabel {
    pub(super) state: &'static str,
}

/// `hoard_credential_source_failures_total`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CredentialSourceLabels {
    /// The registry host of a `[[upstream.credentials]]` block (configured, so bounded).
    pub(super) host: String,
    /// Its `source`.
    pub(super) source: &'static str,
}
