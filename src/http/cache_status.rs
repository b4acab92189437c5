//! How a request was answered (`HIT`, `MISS`, …), carried in the response's extensions: the word
//! in the access log and the label of the request metrics.

/// How a request was answered, for the log and (later) metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CacheStatus {
    /// Served from the store without asking the upstream.
    Hit,
    /// Fetched from the upstream (and stored, if cacheable).
    Miss,
    /// A tag checked with the upstream and found unchanged; served from the store.
    Revalidated,
    /// Served from the store because the upstream could not be used.
    Stale,
    /// Passed to the upstream without caching.
    Bypass,
    /// A CONNECT tunnel, bytes copied untouched.
    Tunnel,
    /// Answered by hoard itself (errors, `/ca.crt`).
    Local,
}

impl CacheStatus {
    /// Every status, in the order of [`CacheStatus::index`].
    pub(crate) const ALL: [CacheStatus; 7] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Revalidated,
        CacheStatus::Stale,
        CacheStatus::Bypass,
        CacheStatus::Tunnel,
        CacheStatus::Local,
    ];

    /// The label used in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Tunnel => "TUNNEL",
            CacheStatus::Local => "LOCAL",
        }
    }
}
