//! The state every connection shares: the configuration in force, the CA, the store, the
//! upstream clients, the metrics and the registry's in-flight work. Built once at start; a reload
//! swaps the configuration and, when their settings changed, the upstream clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::{ArcSwap, Guard};

use crate::access::limits::ConnectionLimits;
use crate::access::{FillSlots, HostSlots, ProxyAuth};
use crate::config::{Config, LendTo, TagTtl};
use crate::fleet::Fleet;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::tier::S3Tier;
use crate::tls::{CertificateAuthority, root_store};
use crate::upstream::Upstream;
use crate::upstream::auth::RegistryAuth;

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub(crate) struct Hoard {
    config: ArcSwap<Config>,
    /// The proxy users' checker, made anew from `config.proxy.users` by every reload.
    proxy_auth: RwLock<Option<Arc<ProxyAuth>>>,
    pub ca: CertificateAuthority,
    pub store: Store,
    upstream: RwLock<Arc<Upstream>>,
    pub metrics: Arc<Metrics>,
    pub registry_auth: Arc<RegistryAuth>,
    /// Blob fills running, against `cache.max_fills` and `cache.max_fills_per_client`.
    pub fill_slots: FillSlots,
    /// Blob fetches running per registry (`[[upstream.limits]]` `max_fills`).
    pub(crate) host_slots: HostSlots,
    /// The rate limits' buckets (`upstream.max_rate`, `[[upstream.limits]]`).
    pub(crate) shaper: crate::upstream::shape::Shaper,
    /// The time tags are judged fresh by.
    pub clock: Clock,
    /// The other hoards of the fleet (`[fleet]`); `None`: this one is alone.
    pub(crate) fleet: Option<Arc<Fleet>>,
    /// The S3-API bucket the fleet shares (`[store.s3]`); `None`: off.
    pub(crate) tier: Option<Arc<S3Tier>>,
    /// The intercepted host patterns the CA's name constraints leave out: tunnelled, and
    /// warned about, until `hoard ca renew` and a restart.
    uncovered: RwLock<Vec<String>>,
    /// Each listener's connection limits, so that a shutdown can close idle connections.
    listeners: Mutex<Vec<Arc<ConnectionLimits>>>,
}

/// The time hoard judges a tag's freshness by: the system's, plus an offset that only tests move
/// (see [`crate::Server::clock`]), so that a test of `cache.tag_ttl` need not sleep through it.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicU64,
}

impl Clock {
    /// Now, by this clock.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Whether something fetched at `fetched` is younger than `ttl` (an immutable tag always is).
    pub fn is_fresh(&self, fetched: SystemTime, ttl: TagTtl) -> bool {
        match ttl {
            TagTtl::Immutable => true,
            TagTtl::For(ttl) => self
                .now()
                .duration_since(fetched)
                .is_ok_and(|age| age < ttl),
        }
    }
}

impl Hoard {
    /// The configuration in force (replaced as a whole by a reload).
    pub(crate) fn config(&self) -> Guard<Arc<Config>> {
        self.config.load()
    }

    /// The proxy users' checker in force, if `proxy.auth_file` is set.
    pub(crate) fn proxy_auth(&self) -> Option<Arc<ProxyAuth>> {
        self.proxy_auth
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The upstream clients in force (replaced as a whole by a reload that changes them).
    pub(crate) fn upstream(&self) -> Arc<Upstream> {
        self.upstream
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The intercepted host patterns the CA cannot sign for (see [`Hoard::reload`]).
    pub(crate) fn uncovered(&self) -> Vec<String> {
        self.uncovered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers a listener's connection limits (each listener calls it once, at start).
    pub(crate) fn listening(&self, limits: &Arc<ConnectionLimits>) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(limits.clone());
    }

    /// Closes every client connection with no request in flight, on every listener; a shutdown
    /// does it over and over, as the others finish theirs.
    pub(crate) fn close_idle_connections(&self) -> usize {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|limits| limits.close_idle())
            .sum()
    }

    /// Puts a reloaded configuration in force for the requests that follow. When the upstream
    /// settings changed (trust, resolve overrides, parent proxy, timeouts, the guard), new
    /// upstream clients with fresh connection pools take over; requests in flight finish on the
    /// old ones. What is bound or opened at start (listeners, the CA, the store) keeps its
    /// start-up settings until a restart. If the new clients cannot be built, nothing changes.
    pub(crate) fn reload(&self, config: Config) -> anyhow::Result<()> {
        if self.config().upstream.clients != config.upstream.clients {
            let upstream = upstream_for(&config, self.metrics.clone())?;
            *self.upstream.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(upstream);
            tracing::info!(parent = ?config.upstream.clients.parent, "upstream settings changed; new upstream connections use them");
        }
        self.metrics.set_intercepted(config.intercept.clone());
        *self.uncovered.write().unwrap_or_else(|e| e.into_inner()) =
            uncovered(&self.ca, &config, &self.metrics);
        if let (Some(fleet), Some(peers)) = (&self.fleet, &config.fleet) {
            fleet.reconfigure(peers);
        }
        *self.proxy_auth.write().unwrap_or_else(|e| e.into_inner()) = proxy_auth_for(&config);
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// Loads the CA, opens the store and builds the upstream client.
    pub(crate) fn new(config: Config) -> anyhow::Result<Hoard> {
        log_lending(&config);
        let provider = crate::crypto_provider();
        // A new CA signs the intercepted hosts and the mirror's own names, nothing else.
        let constrain_to = config.ca_constraints();
        let ca =
            CertificateAuthority::load_or_create(&config.ca.dir, provider.clone(), constrain_to)
                .context("loading the CA")?;
        let store =
            Store::open(&config.cache.dir, config.cache.limits).context("opening the cache")?;
        let metrics: Arc<Metrics> = Arc::default();
        metrics.set_intercepted(config.intercept.clone());
        metrics.ca_expiry.set(ca.not_after());
        let uncovered = RwLock::new(uncovered(&ca, &config, &metrics));
        let upstream = upstream_for(&config, metrics.clone())?;
        let fleet = config
            .fleet
            .as_ref()
            .map(|fleet| Arc::new(Fleet::new(fleet, metrics.clone())));
        let tier = match &config.store.s3 {
            Some(s3) => Some(Arc::new(S3Tier::new(s3).context("store.s3")?)),
            None => None,
        };
        Ok(Hoard {
            proxy_auth: RwLock::new(proxy_auth_for(&config)),
            config: ArcSwap::from_pointee(config),
            ca,
            store,
            upstream: RwLock::new(Arc::new(upstream)),
            metrics,
            registry_auth: Arc::default(),
            fill_slots: FillSlots::default(),
            host_slots: HostSlots::default(),
            shaper: Default::default(),
            clock: Clock::default(),
            fleet,
            tier,
            uncovered,
            listeners: Mutex::default(),
        })
    }
}

/// Says, at start, which of hoard's registry accounts are not lent to every client, and why.
fn log_lending(config: &Config) {
    for credential in &config.upstream.credentials {
        let host = credential.host.as_str();
        match &credential.lend_to {
            LendTo::Everyone => {}
            LendTo::Users(users) if users.is_empty() => tracing::warn!(
                host,
                "hoard's account is lent to nobody: lend_to is empty, or absent on a shared \
                 hoard (a listener beyond loopback, or proxy.auth_file); clients use their own \
                 credentials. lend_to = [\"*\"] lends it to every client as before"
            ),
            LendTo::Users(users) => {
                tracing::info!(
                    host,
                    ?users,
                    "hoard's account is lent only to these users (lend_to)"
                )
            }
        }
    }
}

/// The intercepted host patterns `ca` cannot sign for (a `*.domain` pattern is tried on the
/// domain itself), warned about once each time the configuration is loaded.
fn uncovered(ca: &CertificateAuthority, config: &Config, metrics: &Metrics) -> Vec<String> {
    let uncovered: Vec<String> = config
        .intercept
        .names()
        .filter(|name| !ca.covers(name.trim_start_matches("*.")))
        .collect();
    metrics
        .ca_uncovered_hosts
        .set(i64::try_from(uncovered.len()).unwrap_or(i64::MAX));
    if !uncovered.is_empty() {
        tracing::warn!(hosts = ?uncovered, "hoard's CA is limited to other names (ca.name_constraints): these hosts are tunnelled, not intercepted; run `hoard ca renew` and restart, then give clients the new ca.crt");
    }
    uncovered
}

/// The upstream clients a configuration asks for.
fn upstream_for(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Upstream> {
    let clients = &config.upstream.clients;
    let roots = root_store(&clients.extra_ca_files).context("setting up the upstream client")?;
    Upstream::new(clients, roots, crate::crypto_provider(), metrics)
        .context("setting up the upstream client")
}

/// A checker for the configuration's proxy users, with no logins remembered yet.
fn proxy_auth_for(config: &Config) -> Option<Arc<ProxyAuth>> {
    config
        .proxy
        .users
        .as_ref()
        .map(|users| Arc::new(ProxyAuth::new(users.clone())))
}
