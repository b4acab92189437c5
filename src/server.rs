//! The running server: binds the proxy, mirror, peer-endpoint and admin listeners on a
//! [`Hoard`], reconciles the store with the disk now and then, reloads on request and shuts down
//! with a grace period. It owns every task it starts, in one set with one stop signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::config::Config;
use crate::edge::{Stop, StopSender};
use crate::hoard::Hoard;

/// A running proxy: its listeners' addresses and every task serving them. Dropping it stops
/// everything.
#[derive(Debug)]
pub struct Server {
    hoard: Arc<Hoard>,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    mirror_addr: Option<SocketAddr>,
    fleet_addr: Option<SocketAddr>,
    /// The listeners' accept loops, the admin listener, the store's reconcile loop and the
    /// fleet's DNS refresh.
    tasks: JoinSet<()>,
    /// Given at shutdown: every client listener stops accepting, `/readyz` says 503 (on the
    /// admin listener, and on proxy connections still open).
    stop: StopSender,
}

impl Server {
    /// Binds every configured listener and serves in the background.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        // The CA and the store first: a client that can connect gets a working proxy.
        let admin = config.admin.listen;
        let hoard = Arc::new(Hoard::new(config)?);
        // Every socket bound before anything is served: an address that does not bind stops
        // hoard with nothing started.
        let proxy = crate::proxy::bind(&hoard).await?;
        let addr = proxy.local_addr()?;
        announce(&hoard);
        let admin = crate::admin::bind(admin).await?;
        let admin_addr = admin.as_ref().and_then(|admin| admin.local_addr().ok());
        let mirror = crate::mirror::bind(&hoard).await?;
        let mirror_addr = mirror.as_ref().and_then(|m| m.local_addr().ok());
        let peer = crate::peer::bind(&hoard).await?;
        let fleet_addr = peer.as_ref().and_then(|p| p.local_addr().ok());

        let (sender, stop) = Stop::new();
        let mut tasks = JoinSet::new();
        let front = Arc::new(crate::proxy::Front(stop.clone()));
        tasks.spawn(proxy.serve(hoard.clone(), front, stop.clone()));
        if let Some(mirror) = mirror {
            tasks.spawn(mirror.serve(hoard.clone(), crate::mirror::service(), stop.clone()));
        }
        if let Some(peer) = peer {
            tasks.spawn(peer.serve(hoard.clone(), crate::peer::service(), stop.clone()));
        }
        if let Some(fleet) = hoard.fleet.as_ref() {
            tasks.spawn(crate::fleet::Fleet::refresh(Arc::downgrade(fleet)));
        }
        if let Some(admin) = admin {
            tasks.spawn(admin.serve(
                hoard.clone(),
                Arc::new(crate::admin::Admin(stop.clone())),
                stop,
            ));
        }
        tasks.spawn(reconcile_now_and_then(hoard.clone()));
        Ok(Server {
            hoard,
            addr,
            admin_addr,
            mirror_addr,
            fleet_addr,
            tasks,
            stop: sender,
        })
    }

    /// Puts a new configuration in force without dropping a connection (SIGHUP). The intercept
    /// list, credentials, proxy users, allow-list, ports, tag TTL and freshness rules,
    /// auth_on_hit and the `[upstream]` settings take effect for the next requests; addresses,
    /// the CA and the store need a restart. A configuration whose upstream clients cannot be built is refused whole.
    pub fn reload(&self, config: Config) -> anyhow::Result<()> {
        // Judged by the listener that is open, whatever proxy.listen now says.
        config.check_open_proxy(self.addr)?;
        if let Some(mirror) = self.mirror_addr {
            config.check_open_mirror(mirror)?;
        }
        let old = self.hoard.config();
        let restart = old.restart_keys(&config);
        let new_ca_only = old.ca.name_constraints != config.ca.name_constraints;
        self.hoard.reload(config)?;
        for key in restart {
            tracing::warn!(key, "changed, but takes effect only after a restart");
        }
        if new_ca_only {
            tracing::warn!(
                key = "ca.name_constraints",
                "changed, but applies only to a CA hoard creates (delete ca/ and restart)"
            );
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Stops accepting connections on every client listener at once, closes the ones with no
    /// request in flight, and lets the others finish their requests, and the fills they started
    /// reach the store, for at most `grace`. The admin listener answers until the end, with
    /// `/readyz` at 503; then every task stops.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.stop.give();
        let deadline = tokio::time::Instant::now() + grace;
        let busy = || {
            (
                self.hoard.metrics.open_connections(),
                self.fills_in_progress(),
            )
        };
        // Connections waiting for their next request close now, and the others as soon as
        // their requests end (a keep-alive client, a fleet peer's pooled connection).
        while {
            self.hoard.close_idle_connections();
            busy() != (0, 0)
        } && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        match busy() {
            (0, 0) => tracing::info!("all connections and fills finished"),
            (connections, fills) => {
                tracing::warn!(connections, fills, "grace period over; closing the rest")
            }
        }
    }

    /// Blobs being fetched into the store. A fill outlives its first client's response: the
    /// client has its last bytes once they are verified, while the blob is still being synced
    /// to disk; and it counts until its fill slot (`cache.max_fills`) is free again.
    pub fn fills_in_progress(&self) -> usize {
        let store = self.hoard.store.usage().fills;
        store.max(self.hoard.fill_slots.running())
    }

    /// Where the admin listener is, if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the registry-mirror listener is, if it runs.
    pub fn mirror_addr(&self) -> Option<SocketAddr> {
        self.mirror_addr
    }

    /// Where the fleet's peer endpoint is, if this node is in a fleet.
    pub fn fleet_addr(&self) -> Option<SocketAddr> {
        self.fleet_addr
    }

    /// The peer of the fleet that owns `key` (a digest, or `registry/repository:tag`); `None`
    /// when this node does, or is in no fleet.
    pub fn fleet_owner(&self, key: &str) -> Option<String> {
        self.hoard.fleet.as_ref()?.owner(key)
    }

    /// The clock tags are judged fresh by; a test advances it instead of sleeping.
    pub fn clock(&self) -> &crate::hoard::Clock {
        &self.hoard.clock
    }

    /// Reconciles the store with the disk now, as hoard does every minute: entries removed or
    /// added behind its back, and the pins of `cache.pin` and `hoard cache pin`.
    pub async fn reconcile(&self) {
        reconcile(&self.hoard).await;
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until a task ends (none does, unless it panics).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        if let Some(ended) = self.tasks.join_next().await {
            ended?;
        }
        Ok(())
    }
}

/// The start-up lines after `hoard listening`: where the CA is, whether this start created it
/// (then clients have yet to trust it) and its fingerprint, as `hoard ca fingerprint` prints it;
/// and where the cache is. The admin and mirror listeners announce themselves as they bind.
fn announce(hoard: &Hoard) {
    let config = hoard.config();
    let shown = |path: &std::path::Path| {
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string()
    };
    let path = shown(&config.ca.dir.join("ca.crt"));
    let fingerprint = hoard.ca.fingerprint();
    if hoard.ca.created() {
        tracing::info!(
            %path,
            %fingerprint,
            "CA created: clients must trust this certificate (GET /ca.crt on the proxy port, or \
             a setup script from /setup/)"
        );
    } else {
        tracing::info!(%path, %fingerprint, "CA loaded");
    }
    let usage = hoard.store.usage();
    tracing::info!(
        dir = %shown(&config.cache.dir),
        entries = usage.entries,
        bytes = usage.bytes,
        max_size = config.cache.limits.max_size,
        "cache folder"
    );
}

/// How often the store's index is checked against the disk, so that entries removed by
/// `hoard cache prune`/`rm` while hoard runs stop counting against the limit. One scan of 100,000
/// entries takes well under a second of one core's time.
const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Works out what `cache.pin` keeps at start (the store was scanned as it opened), then
/// reconciles every [`RECONCILE_INTERVAL`].
async fn reconcile_now_and_then(hoard: Arc<Hoard>) {
    hoard.store.retain(&hoard.config().cache.pin).await;
    let weak = Arc::downgrade(&hoard);
    drop(hoard);
    loop {
        tokio::time::sleep(RECONCILE_INTERVAL).await;
        let Some(hoard) = weak.upgrade() else {
            return;
        };
        reconcile(&hoard).await;
    }
}

/// Brings the store's index in line with the disk and the pins in force.
async fn reconcile(hoard: &Hoard) {
    let pins = hoard.config().cache.pin.clone();
    hoard.store.reconcile(&pins).await;
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.give();
        self.tasks.abort_all();
    }
}
