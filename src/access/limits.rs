//! Connection bounds: how many client connections hoard holds at once, in total
//! (`proxy.max_connections`) and per client address (`proxy.max_connections_per_client`), which
//! connection gives way when the total is reached, and when a connection counts as idle.
//!
//! Every accepted connection gets a [`Ticket`] that lives as long as the connection does: the
//! front door's task holds it, and a CONNECT hands it to the tunnel or intercept task, so a
//! connection counts for its whole life. At the total limit the oldest connection with no request
//! in flight (no head yet, an idle keep-alive, an intercepted connection between requests) is
//! told to close so the new one can be served, as nginx and HAProxy do; a flood of silent
//! connections therefore cannot lock other clients out. Per request, a connection touches only
//! its own atomics; the shared lock is taken once when a connection opens and once when it
//! closes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::http::{Body, BoxError};

/// `busy` of a connection chosen to make room: it takes no more requests.
const EVICTED: usize = usize::MAX;

/// The connection registry.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max: usize,
    per_client: usize,
    epoch: Instant,
    state: Mutex<State>,
    /// Signalled when a connection closes, or (while `waiting`) when its last request ends,
    /// for an accept that waits for room.
    freed: Notify,
    /// Whether an accept waits for room. Read on every request's end, written only when the
    /// limit is reached: the line stays shared in every core's cache.
    waiting: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    per_client: HashMap<IpAddr, usize>,
    /// Every open connection by the order it came in: the first evictable one is the oldest.
    by_age: BTreeMap<u64, (IpAddr, Arc<Slot>)>,
    next_id: u64,
}

/// A connection's slot in the registry: what the two share.
#[derive(Debug)]
struct Slot {
    /// Requests in flight (a tunnel counts as one for its life), or [`EVICTED`].
    busy: AtomicUsize,
    /// Milliseconds from [`ConnectionLimits::epoch`] to the last sign of life.
    last_active: AtomicU64,
    /// Becomes `true` when the connection must close to make room.
    evicted: watch::Sender<bool>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client address holds `proxy.max_connections_per_client` already.
    PerClient,
    /// `proxy.max_connections` are open and every one has a request in flight.
    Full,
}

impl ConnectionLimits {
    /// A registry for at most `max` connections, `per_client` of them from one address.
    pub(crate) fn new(max: usize, per_client: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max,
            per_client,
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            waiting: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a connection from `ip` now, closing the oldest connection with no request in
    /// flight if the total limit is reached. The `bool` says whether one was closed.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Ticket, bool), Refusal> {
        let key = client_key(ip);
        let mut state = self.lock();
        if state.per_client.get(&key).copied().unwrap_or(0) >= self.per_client {
            return Err(Refusal::PerClient);
        }
        let mut evicted = false;
        if state.open >= self.max {
            let victim = state
                .by_age
                .iter()
                .find(|(_, (_, shared))| shared.try_evict())
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(Refusal::Full);
            };
            state.forget(victim);
            evicted = true;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.open += 1;
        *state.per_client.entry(key).or_insert(0) += 1;
        let shared = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            evicted: watch::Sender::new(false),
        });
        state.by_age.insert(id, (key, shared.clone()));
        let ticket = Ticket(Arc::new(Registration {
            limits: self.clone(),
            id,
            shared,
        }));
        Ok((ticket, evicted))
    }

    /// Admits a connection from `ip`, waiting while every open connection has a request in
    /// flight (the next ones wait in the listen backlog meanwhile).
    pub(crate) async fn admit_or_wait(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<(Ticket, bool), Refusal> {
        match self.admit(ip) {
            Err(Refusal::Full) => {}
            other => return other,
        }
        // From here a request that ends leaves a permit, so none is missed between the
        // attempt and the wait (both sides use SeqCst: the flag, then `busy`; `busy`, then the
        // flag).
        self.waiting.store(true, Ordering::SeqCst);
        let admitted = loop {
            let freed = self.freed.notified();
            match self.admit(ip) {
                Err(Refusal::Full) => freed.await,
                other => break other,
            }
        };
        self.waiting.store(false, Ordering::SeqCst);
        admitted
    }

    /// Closes every connection with no request in flight (at shutdown: a keep-alive connection
    /// that waits for its next request, a fleet peer's pooled one, would otherwise hold the
    /// shutdown for its whole grace). Returns how many.
    pub(crate) fn close_idle(&self) -> usize {
        let mut state = self.lock();
        let idle: Vec<u64> = state
            .by_age
            .iter()
            .filter(|(_, (_, shared))| shared.try_evict())
            .map(|(id, _)| *id)
            .collect();
        for id in &idle {
            state.forget(*id);
        }
        idle.len()
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().open
    }
}

impl State {
    /// Stops counting connection `id`. `false` if it was not counted (evicted already).
    fn forget(&mut self, id: u64) -> bool {
        let Some((key, _)) = self.by_age.remove(&id) else {
            return false;
        };
        self.open = self.open.saturating_sub(1);
        if let Some(count) = self.per_client.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_client.remove(&key);
            }
        }
        true
    }
}

impl Slot {
    /// Marks the connection evicted if it has no request in flight.
    fn try_evict(&self) -> bool {
        let idle = self
            .busy
            .compare_exchange(0, EVICTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if idle {
            self.evicted.send_replace(true);
        }
        idle
    }
}

/// The address connections are counted by: IPv4 addresses as they are, IPv6 by /64 (one host
/// or one small network usually has a whole /64).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

#[derive(Debug)]
struct Registration {
    limits: Arc<ConnectionLimits>,
    id: u64,
    shared: Arc<Slot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.limits.lock().forget(self.id) {
            self.limits.freed.notify_one();
        }
    }
}

/// An admitted connection. Clones share one registration, released when the last one drops.
#[derive(Debug, Clone)]
pub(crate) struct Ticket(Arc<Registration>);

/// What ends a connection early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Closed to make room for a new connection.
    Evicted,
    /// Idle for `proxy.idle_timeout`.
    Idle,
}

/// What counts as activity for [`Ticket::ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// Requests: a connection is idle when none has been in flight for the timeout (an h2
    /// connection's PINGs do not count).
    Requests,
    /// Bytes moved either way, reported with [`Ticket::touch`] (a tunnel).
    Bytes,
}

impl Ticket {
    /// Marks a request in flight until the guard drops: the connection cannot be evicted
    /// meanwhile. `None` when it was evicted already: the request must not be served (its
    /// place went to another connection), only answered.
    pub(crate) fn busy(&self) -> Option<Busy> {
        let shared = &self.0.shared;
        shared
            .busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b != EVICTED).then(|| b + 1)
            })
            .ok()?;
        self.touch();
        Some(Busy(self.clone()))
    }

    /// Whether no request is in flight (an evicted connection's count no longer says).
    pub(crate) fn at_rest(&self) -> bool {
        self.0.shared.busy.load(Ordering::SeqCst) == 0
    }

    /// Records activity now.
    pub(crate) fn touch(&self) {
        let now = self.0.limits.now_ms();
        self.0.shared.last_active.store(now, Ordering::Relaxed);
    }

    /// Whether the connection was chosen to close.
    #[cfg(test)]
    pub(crate) fn is_evicted(&self) -> bool {
        *self.0.shared.evicted.borrow()
    }

    /// Resolves when the connection is evicted.
    pub(crate) async fn evicted(&self) {
        let mut evicted = self.0.shared.evicted.subscribe();
        // The sender lives as long as `self`: the wait ends only by eviction.
        let _ = evicted.wait_for(|e| *e).await;
    }

    /// Resolves when the connection should close: evicted, or idle for `timeout` by `activity`.
    pub(crate) async fn ended(&self, timeout: Duration, activity: Activity) -> Ending {
        tokio::select! {
            () = self.evicted() => Ending::Evicted,
            () = self.idle(timeout, activity) => Ending::Idle,
        }
    }

    async fn idle(&self, timeout: Duration, activity: Activity) {
        let limits = &self.0.limits;
        let shared = &self.0.shared;
        loop {
            let last = shared.last_active.load(Ordering::Relaxed);
            let deadline = limits.epoch + Duration::from_millis(last) + timeout;
            if Instant::now() < deadline {
                tokio::time::sleep_until(deadline).await;
                continue;
            }
            let busy = shared.busy.load(Ordering::Acquire);
            if activity == Activity::Bytes || busy == 0 || busy == EVICTED {
                return;
            }
            // A request is in flight: it counts as activity until it ends.
            tokio::time::sleep(timeout).await;
        }
    }
}

/// A request in flight on a connection (see [`Ticket::busy`]).
#[derive(Debug)]
pub(crate) struct Busy(Ticket);

impl Drop for Busy {
    fn drop(&mut self) {
        let registration = &(self.0).0;
        let before =
            registration
                .shared
                .busy
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    (b != EVICTED && b > 0).then(|| b - 1)
                });
        self.0.touch();
        // The connection just became evictable: an accept waiting for room can use it.
        if before == Ok(1) && registration.limits.waiting.load(Ordering::SeqCst) {
            registration.limits.freed.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped.
pub(crate) struct Held {
    body: Body,
    _busy: Busy,
}

impl Held {
    /// Wraps `body`.
    pub(crate) fn new(body: Body, busy: Busy) -> Held {
        Held { body, _busy: busy }
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn admit(limits: &Arc<ConnectionLimits>, last: u8) -> (Ticket, bool) {
        let Ok(admitted) = limits.admit(ip(last)) else {
            panic!("127.0.0.{last} not admitted");
        };
        admitted
    }

    #[tokio::test]
    async fn the_oldest_connection_without_a_request_gives_way() {
        let limits = ConnectionLimits::new(3, 2);
        let (tunnel, _) = admit(&limits, 1);
        let pinned = tunnel.busy();
        assert!(pinned.is_some());
        let (oldest_idle, _) = admit(&limits, 1);
        let (younger_idle, _) = admit(&limits, 2);
        assert_eq!(limits.admit(ip(1)).err(), Some(Refusal::PerClient));

        let (new, evicted) = admit(&limits, 3);
        let _new_request = new.busy();
        assert!(evicted);
        assert!(oldest_idle.is_evicted());
        assert!(!younger_idle.is_evicted() && !tunnel.is_evicted());
        assert_eq!(limits.open(), 3);
        // An evicted connection stopped counting when it was chosen, not when it closes.
        assert!(oldest_idle.busy().is_none());
        drop(oldest_idle);
        assert_eq!(limits.open(), 3);
        // Nothing left to evict: the next connection waits.
        let _request = younger_idle.busy();
        assert!(limits.admit(ip(1)).is_err_and(|r| r == Refusal::Full));
    }

    #[tokio::test]
    async fn an_accept_waiting_for_room_gets_it_when_a_request_ends() {
        let limits = ConnectionLimits::new(1, 1);
        let (only, _) = admit(&limits, 1);
        let request = only.busy();
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move { limits.admit_or_wait(ip(2)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "admitted while the only connection was busy"
        );
        drop(request);
        let admitted = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(matches!(admitted, Ok(Ok(true))), "{admitted:?}");
        assert!(only.is_evicted());
    }

    #[test]
    fn ipv6_clients_are_counted_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(ip(0));
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or(ip(0));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(ip(0));
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(ip(0));
        assert_eq!(client_key(mapped), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }
}
