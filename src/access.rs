//! Who may use hoard, and where hoard may connect for them: proxy authentication (htpasswd with
//! bcrypt), the client allow-list, and the destination guard that keeps tunnels and plain
//! forwards away from loopback, private and link-local addresses (no SSRF through the proxy).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::HeaderMap;
use http::header::PROXY_AUTHORIZATION;
use sha2::Digest as _;
use tokio::sync::Semaphore;

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

/// The password of the dummy hash an unknown user is checked against. Whatever matches it, an
/// unknown user is still refused.
const DUMMY_PASSWORD: &str = "hoard: no such user";

/// bcrypt cost of the dummy hash when no user's cost can be read.
const DEFAULT_COST: u32 = 10;

/// Users allowed to use the proxy, from an htpasswd file with bcrypt hashes (`htpasswd -B`).
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash at the users' highest cost: an unknown user is checked against it, so that a
    /// wrong user name costs the same time as a wrong password and names cannot be probed.
    dummy: String,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

impl Htpasswd {
    /// Reads the file; every line must be `user:$2y$…` (or `$2b$`, `$2a$`). Comments (`#`) and
    /// blank lines are skipped. Errors name the line, never its hash.
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Htpasswd::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses htpasswd text.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {} is not user:hash", number + 1));
            };
            if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {} ({user}) is not a bcrypt hash; make it with htpasswd -B",
                    number + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err("no users in it".into());
        }
        let dummy = dummy_hash(users.values().filter_map(|hash| cost_of(hash)).max());
        Ok(Htpasswd { users, dummy })
    }
}

/// The cost in `$2y$10$…`.
fn cost_of(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

fn dummy_hash(cost: Option<u32>) -> String {
    let cost = cost
        .filter(|c| (4..=31).contains(c))
        .unwrap_or(DEFAULT_COST);
    bcrypt::hash(DUMMY_PASSWORD, cost).unwrap_or_default()
}

/// Checks `Proxy-Authorization` against the htpasswd users, remembering successes for a while
/// and failures per client address.
#[derive(Debug)]
pub struct ProxyAuth {
    users: Htpasswd,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    Allowed,
    /// No credentials, or wrong ones: answer 407.
    Denied,
    /// Too many failed logins from this address: answer 429, retry after this long.
    Throttled(Duration),
}

impl ProxyAuth {
    /// A checker for these users.
    pub fn new(users: Htpasswd) -> ProxyAuth {
        ProxyAuth {
            users,
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a request's `Proxy-Authorization: Basic …` from client address `peer`. bcrypt
    /// runs on the blocking pool, at most `BCRYPT_SLOTS` checks at once; an unknown user is
    /// checked against a dummy hash. Past `MAX_FAILURES` failures from `peer`, credentials not
    /// verified before are not checked at all until the window ends.
    pub async fn check(&self, headers: &HeaderMap, peer: IpAddr) -> AuthVerdict {
        let Some(value) = headers.get(PROXY_AUTHORIZATION) else {
            return AuthVerdict::Denied;
        };
        let key: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        if self.recently_verified(&key) {
            return AuthVerdict::Allowed;
        }
        let peer = crate::limits::client_key(peer);
        if let Some(wait) = self.throttled(peer) {
            return AuthVerdict::Throttled(wait);
        }
        let Some((user, password)) = basic_credentials(value.as_bytes()) else {
            self.failed(peer);
            return AuthVerdict::Denied;
        };
        let (hash, known) = match self.users.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (self.users.dummy.clone(), false),
        };
        if !(verify(password, hash).await && known) {
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
        AuthVerdict::Allowed
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

/// Decodes `Basic base64(user:password)`.
pub fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `Basic base64(user:password)`
pub fn basic_header(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// An address block such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix` (a lone address is a /32 or /128).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address block like 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a destination is off limits unless `proxy.allow_private_destinations` is set:
/// unspecified, loopback, private (RFC 1918, unique local), shared (CGNAT), link-local,
/// multicast, broadcast and reserved addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || ip == Ipv4Addr::new(168, 63, 129, 16) // Azure's host endpoint (wireserver)
        || a >= 240 // reserved
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    let embedded_v4 = || Ipv4Addr::from(u32::try_from(u128::from(ip) & 0xffff_ffff).unwrap_or(0));
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed by some)
        || first == 0x2002 // 6to4 2002::/16: relays reach whatever IPv4 address it embeds
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation 2001:db8::/32
        || segments[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || segments[..3] == [0x64, 0xff9b, 1] // local-use NAT64 64:ff9b:1::/48
        || segments[..6] == [0; 6] // IPv4-compatible ::/96 (deprecated)
        // NAT64 64:ff9b::/96 embeds an IPv4 address: judge that one.
        || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_private_v4(embedded_v4()))
}

/// Whether `host` would be read as an IPv4 address by the C resolver (`inet_aton`) without being
/// one in the dotted-quad form hoard checks: `127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.1`.
/// Such a host reaches an address the guard never saw when someone else resolves it.
pub fn is_noncanonical_numeric(host: &str) -> bool {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let Some(last) = trimmed.rsplit('.').next() else {
        return false;
    };
    // As the URL standard has it: a host whose last label is a number is an IPv4 address.
    let numeric = |label: &str| {
        let hex = label
            .strip_prefix("0x")
            .or_else(|| label.strip_prefix("0X"));
        match hex {
            Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    numeric(last) && host.parse::<Ipv4Addr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn private_destinations_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "168.63.129.16",
            "64:ff9b:1::a00:1",
            "fec0::1",
            "2002:7f00:1::1",
            "2001:db8::1",
            "100::1",
            "::127.0.0.1",
        ] {
            assert!(is_private(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "142.250.0.1",
            "2001:4860::8888",
            "64:ff9b::808:808",
            "198.17.255.255",
            "198.20.0.1",
            "168.63.129.17",
            "192.0.3.1",
        ] {
            assert!(!is_private(ip(public)), "{public}");
        }
    }

    #[test]
    fn noncanonical_numeric_hosts_are_recognised() {
        for odd in [
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "127.0.0.01",
            "0x7f000001",
            "10.0.0.1.",
            "1.2.3.4.5",
        ] {
            assert!(is_noncanonical_numeric(odd), "{odd}");
        }
        for fine in ["127.0.0.1", "gcr.io", "1.2.3.4x", "example.com.", "x1.io"] {
            assert!(!is_noncanonical_numeric(fine), "{fine}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let block = Cidr::parse("10.0.0.0/8").unwrap_or(Cidr {
            network: ip("255.255.255.255"),
            prefix: 32,
        });
        assert!(block.contains(ip("10.200.0.1")));
        assert!(block.contains(ip("::ffff:10.0.0.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").is_ok_and(|c| c.contains(ip("1.2.3.4"))));
        assert!(Cidr::parse("fd00::/8").is_ok_and(|c| c.contains(ip("fd12::1"))));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
        assert!(Cidr::parse("127.0.0.1").is_ok_and(|c| c.contains(ip("127.0.0.1"))));
    }

    #[test]
    fn htpasswd_accepts_only_bcrypt() {
        assert!(Htpasswd::parse("alice:$2y$05$abcdefghijklmnopqrstuu\n# comment\n").is_ok());
        let err = Htpasswd::parse("bob:{SHA}secret").err().unwrap_or_default();
        assert!(err.contains("bob") && !err.contains("secret"), "{err}");
        assert!(Htpasswd::parse("").is_err());
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn proxy_auth_checks_basic_credentials() {
        let hash = bcrypt::hash("pw", 4).unwrap_or_default();
        let auth = ProxyAuth::new(
            Htpasswd::parse(&format!("alice:{hash}")).unwrap_or(Htpasswd {
                users: HashMap::new(),
                dummy: String::new(),
            }),
        );
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            if let Ok(v) = value.parse() {
                headers.insert(PROXY_AUTHORIZATION, v);
            }
            headers
        };
        assert_eq!(
            auth.check(&with(&basic_header("alice", "pw")), LOCAL).await,
            AuthVerdict::Allowed
        );
        assert_eq!(
            auth.check(&with(&basic_header("alice", "pw")), LOCAL).await,
            AuthVerdict::Allowed
        );
        assert_eq!(
            auth.check(&with(&basic_header("alice", "no")), LOCAL).await,
            AuthVerdict::Denied
        );
        assert_eq!(
            auth.check(&with(&basic_header("eve", "pw")), LOCAL).await,
            AuthVerdict::Denied
        );
        assert_eq!(
            auth.check(&with("Bearer x"), LOCAL).await,
            AuthVerdict::Denied
        );
        assert_eq!(
            auth.check(&HeaderMap::new(), LOCAL).await,
            AuthVerdict::Denied
        );
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
            let auth = std::sync::Arc::new(ProxyAuth::new(users));
            let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut flood = Vec::new();
            for i in 0..24u8 {
                let (auth, done) = (auth.clone(), done.clone());
                flood.push(tokio::spawn(async move {
                    let mut headers = HeaderMap::new();
                    if let Ok(v) = basic_header("alice", &format!("guess{i}")).parse() {
                        headers.insert(PROXY_AUTHORIZATION, v);
                    }
                    let peer = IpAddr::V4(Ipv4Addr::new(127, 1, 0, i));
                    let verdict = auth.check(&headers, peer).await;
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
