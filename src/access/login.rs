//! Proxy logins: `Proxy-Authorization` checked against the htpasswd users with bcrypt, successes
//! remembered for a while, failures counted per client address (past a limit, a 429).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use sha2::Digest as _;
use tokio::sync::Semaphore;

use crate::config::Htpasswd;
use crate::http::basic_credentials;

/// How long a verified `Proxy-Authorization` is trusted without running bcrypt again
/// (~80 ms of CPU per check at cost 10). Short enough that a removed user is out within minutes.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(300);

/// Verified credentials remembered at most (by SHA-256 of the header, never the header itself).
const AUTH_CACHE_SIZE: usize = 4096;

/// Failed proxy logins allowed per client address in [`FAILURE_WINDOW`]; past them, logins from
/// that address that would need bcrypt get 429 until the window ends. Credentials verified
/// before still work. 10 a minute is plenty for a person mistyping and for a misconfigured
/// client retrying, and caps a guesser at 14,400 guesses a day per address.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Client addresses whose failures are remembered at most.
const FAILURE_MAP_SIZE: usize = 4096;

/// bcrypt checks running at once: half the cores, 1 to 4. Each takes a thread of the blocking
/// pool for ~80 ms (cost 10); bounding them leaves that pool to the disk reads that serve cache
/// hits, and the other cores to the connections, during a flood of bad passwords.
static BCRYPT_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Semaphore::new((cores / 2).clamp(1, 4))
});

/// A hoard user (of `proxy.auth_file`) a request logged in as: on the proxy port, the proxy
/// login of its connection; on the mirror, its `Authorization`. Decides which of hoard's
/// registry accounts are lent to the request (`lend_to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User(pub String);

/// Checks `Proxy-Authorization` against the htpasswd users, remembering successes for a while
/// and failures per client address.
#[derive(Debug)]
pub(crate) struct ProxyAuth {
    users: Arc<Htpasswd>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// Failed logins from one client address in the window that began at `since`.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// The result of a proxy authentication check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthVerdict {
    /// A good login, by this user.
    Allowed(User),
    /// No credentials, or wrong ones: answer 407.
    Denied,
    /// Too many failed logins from this address: answer 429, retry after this long.
    Throttled(Duration),
}

impl ProxyAuth {
    /// A checker for these users.
    pub(crate) fn new(users: Arc<Htpasswd>) -> ProxyAuth {
        ProxyAuth {
            users,
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a login, the `Basic …` value of a request's `Proxy-Authorization` (the proxy
    /// port) or `Authorization` (the mirror), from client address `peer`. bcrypt
    /// runs on the blocking pool, at most `BCRYPT_SLOTS` checks at once; an unknown user is
    /// checked against a dummy hash. Past `MAX_FAILURES` failures from `peer`, credentials not
    /// verified before are not checked at all until the window ends.
    pub(crate) async fn check(&self, login: Option<&HeaderValue>, peer: IpAddr) -> AuthVerdict {
        let Some(value) = login else {
            return AuthVerdict::Denied;
        };
        let key: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        if self.recently_verified(&key)
            && let Some((user, _)) = basic_credentials(value.as_bytes())
        {
            return AuthVerdict::Allowed(User(user));
        }
        let peer = crate::access::limits::client_key(peer);
        if let Some(wait) = self.throttled(peer) {
            return AuthVerdict::Throttled(wait);
        }
        let Some((user, password)) = basic_credentials(value.as_bytes()) else {
            self.failed(peer);
            return AuthVerdict::Denied;
        };
        let (hash, known) = self.users.hash_for(&user);
        if !(verify(password, hash.to_owned()).await && known) {
            self.failed(peer);
            return AuthVerdict::Denied;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= AUTH_CACHE_SIZE {
            verified.retain(|_, at| at.elapsed() < AUTH_CACHE_TTL);
            if verified.len() >= AUTH_CACHE_SIZE {
                verified.clear();
            }
        }
        verified.insert(key, Instant::now());
        AuthVerdict::Allowed(User(user))
    }

    /// How long `peer` must wait before its logins are checked again, if it must.
    fn throttled(&self, peer: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failures.get(&peer)?;
        let elapsed = entry.since.elapsed();
        (entry.count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Counts a failed login from `peer`.
    fn failed(&self, peer: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= FAILURE_MAP_SIZE && !failures.contains_key(&peer) {
            failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
            // Still full: forget the address whose window began first.
            if failures.len() >= FAILURE_MAP_SIZE
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(a, _)| *a)
            {
                failures.remove(&oldest);
            }
        }
        let now = Instant::now();
        let entry = failures.entry(peer).or_insert(Failures {
            count: 0,
            since: now,
        });
        if entry.since.elapsed() >= FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                since: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }

    fn recently_verified(&self, key: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(key)
            .is_some_and(|at| at.elapsed() < AUTH_CACHE_TTL)
    }
}

/// Runs bcrypt on the blocking pool once one of the [`BCRYPT_SLOTS`] is free.
async fn verify(password: String, hash: String) -> bool {
    let Ok(_slot) = BCRYPT_SLOTS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
        .await
        .is_ok_and(|r| r.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::http::basic_header;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn proxy_auth_checks_basic_credentials() {
        let hash = bcrypt::hash("pw", 4).unwrap_or_default();
        let auth = ProxyAuth::new(
            Htpasswd::parse(&format!("alice:{hash}"))
                .map(Arc::new)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let with = |value: &str| HeaderValue::from_str(value).ok();
        assert_eq!(
            auth.check(with(&basic_header("alice", "pw")).as_ref(), LOCAL)
                .await,
            AuthVerdict::Allowed(User("alice".into()))
        );
        assert_eq!(
            auth.check(with(&basic_header("alice", "pw")).as_ref(), LOCAL)
                .await,
            AuthVerdict::Allowed(User("alice".into()))
        );
        assert_eq!(
            auth.check(with(&basic_header("alice", "no")).as_ref(), LOCAL)
                .await,
            AuthVerdict::Denied
        );
        assert_eq!(
            auth.check(with(&basic_header("eve", "pw")).as_ref(), LOCAL)
                .await,
            AuthVerdict::Denied
        );
        assert_eq!(
            auth.check(with("Bearer x").as_ref(), LOCAL).await,
            AuthVerdict::Denied
        );
        assert_eq!(auth.check(None, LOCAL).await, AuthVerdict::Denied);
    }

    #[test]
    fn a_flood_of_bad_passwords_leaves_the_blocking_pool_to_disk_reads() {
        let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .enable_all()
            .build()
        else {
            panic!("no runtime");
        };
        runtime.block_on(async {
            let hash = bcrypt::hash("pw", 8).unwrap_or_default();
            let Ok(users) = Htpasswd::parse(&format!("alice:{hash}")) else {
                panic!("bad htpasswd");
            };
            let auth = std::sync::Arc::new(ProxyAuth::new(Arc::new(users)));
            let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut flood = Vec::new();
            for i in 0..24u8 {
                let (auth, done) = (auth.clone(), done.clone());
                flood.push(tokio::spawn(async move {
                    let login = HeaderValue::from_str(&basic_header("alice", &format!("guess{i}")));
                    let peer = IpAddr::V4(Ipv4Addr::new(127, 1, 0, i));
                    let verdict = auth.check(login.ok().as_ref(), peer).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    verdict
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            // A disk read needs a blocking thread: it gets one while bcrypt is still busy.
            let read = tokio::task::spawn_blocking(|| ()).await;
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            assert!(read.is_ok());
            assert!(
                finished < 8,
                "a blocking task waited for {finished} of 24 bcrypt checks to finish"
            );
            for check in flood {
                assert!(matches!(check.await, Ok(AuthVerdict::Denied)));
            }
        });
    }
}
