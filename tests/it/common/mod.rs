//! Test fixtures: a small registry over real TLS (certificate from a CA minted at test time),
//! a plain HTTP echo server, hoard started in-process or as a process, reqwest clients through
//! it, raw sockets, SeaweedFS as an S3-API engine, and the lock that keeps heavy tests apart.

mod byteranges;
mod echo;
mod process;
mod proxy;
mod registry;
pub(crate) mod seaweed;
pub(crate) mod serial;
mod tls;
pub(crate) mod verified;
mod wire;

use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use sha2::Digest as _;

pub(crate) use byteranges::assert_byteranges;
pub(crate) use echo::echo_server;
pub(crate) use process::{HOARD_BIN, HoardProcess, JsonHoard, assert_config_error, serve_with};
pub(crate) use proxy::{Proxy, ProxyBuilder, client_builder_via, client_via};
pub(crate) use registry::{Image, Mode, Registry, Seen};
pub(crate) use tls::TestCa;
pub(crate) use wire::{connect_from, raw, raw_head, raw_whole, read_some};

pub(crate) const REGISTRY: &str = "registry.test";
pub(crate) const CDN: &str = "cdn.test";
pub(crate) const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Installs the crypto provider and the log subscriber once per process (`RUST_LOG` or
/// `hoard=debug`, into the test's captured output).
pub(crate) fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("hoard=debug")),
        )
        .with_test_writer()
        .try_init();
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", const_hex::encode(sha2::Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rand crate.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

static SEED: AtomicU16 = AtomicU16::new(1);

/// Random bytes that differ between calls.
pub(crate) fn fresh_blob(len: usize) -> Bytes {
    random_bytes(len, u64::from(SEED.fetch_add(1, Ordering::Relaxed)) * 7919)
}

/// Where [`free_port`] looks next (each pick moves on, so no two picks of this process meet).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A loopback port that was free a moment ago, for a server the test starts later (hoard binds it
/// with SO_REUSEADDR, so a restart can take it again right after a kill). Picked below the
/// kernel's ephemeral range: a port there can become the local end of an outgoing connection
/// between the pick and the bind (SeaweedFS failed to start on one that way).
pub(crate) fn free_port() -> u16 {
    const LOW: u16 = 20_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|first| *first > LOW + 1_000)
        .unwrap_or(32_768);
    let span = high - LOW;
    // Processes of the suite at once (a test's own `hoard` runs, another `cargo test`) start
    // apart.
    let start = (std::process::id() % u32::from(span)) as u16;
    loop {
        let step = NEXT_PORT.fetch_add(1, Ordering::Relaxed) % span;
        let port = LOW + (start + step) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The value of a sample line `name{labels} value` in a metrics exposition, 0 if absent.
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Total size of the files under `dir`, recursively.
pub(crate) fn disk_usage(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `https://registry.test<path>`: a URL on the intercepted fixture registry.
pub(crate) fn url(path: &str) -> String {
    format!("https://{REGISTRY}{path}")
}

/// A fleet peer request's `hoard-fleet-signature` value: `mode` (`proxy`, `mirror`, `stats`)
/// signed with `secret` at `time`, as a peer signs it.
pub(crate) fn signature(secret: &[u8], method: &str, path: &str, mode: &str, time: u64) -> String {
    signature_with(secret, method, path, mode, time, &fresh_nonce(), "")
}

/// A random nonce of a signature, in hex.
pub(crate) fn fresh_nonce() -> String {
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).unwrap();
    nonce.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`signature`] with its nonce given, over a request whose `Range` is `range` (empty: none) and
/// whose `Accept` is reqwest's own `*/*`.
pub(crate) fn signature_with(
    secret: &[u8],
    method: &str,
    path: &str,
    mode: &str,
    time: u64,
    nonce: &str,
    range: &str,
) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let range = if range.is_empty() {
        String::new()
    } else {
        format!("\t{range}")
    };
    let message = format!(
        "hoard-fleet-v2\n{method}\n{path}\n{mode}\n{time}\n{nonce}\nrange{range}\naccept\t*/*\nauthorization"
    );
    let tag = hmac::sign(&key, message.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{time} {nonce} {hex}")
}

/// Unix seconds now, for [`signature`].
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
