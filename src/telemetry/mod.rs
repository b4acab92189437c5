//! What hoard tells its operators: the access log, the Prometheus metrics, and the activity the
//! status page shows (the last hour, recent and most pulled images).

pub mod access_log;
pub mod activity;
pub mod metrics;

pub use activity::Activity;
pub use metrics::{
    AuthFailure, ConnectionRefused, FillSkipped, Metrics, PeerFailure, TierRead, TierWrite,
    sum_series,
};

use crate::http::CacheStatus;

/// Which listener a request came in on: the `via` label of request metrics, and the status
/// page's split of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
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
pub(crate) enum Source {
    /// The store: hits, revalidated and stale tags.
    Cache,
    /// An upstream: misses and bypassed requests.
    Upstream,
    /// A CONNECT tunnel, bytes copied untouched.
    Tunnel,
    /// hoard itself (errors, `/ca.crt`).
    Local,
}

impl Source {
    /// Where the bytes of a response answered with `status` came from.
    pub(crate) fn of(status: CacheStatus) -> Source {
        match status {
            CacheStatus::Hit | CacheStatus::Revalidated | CacheStatus::Stale => Source::Cache,
            CacheStatus::Miss | CacheStatus::Bypass => Source::Upstream,
            CacheStatus::Tunnel => Source::Tunnel,
            CacheStatus::Local => Source::Local,
        }
    }

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Upstream => "upstream",
            Source::Tunnel => "tunnel",
            Source::Local => "local",
        }
    }
}
