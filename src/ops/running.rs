//! Finding a running hoard: `hoard serve` notes its listeners' addresses in its cache folder
//! ([`ADDRESSES_FILE`]) and removes the note when it exits cleanly, so that `hoard cache stats`
//! and `hoard warm` reach a hoard started with `--listen` (or on port 0) when the config's
//! `proxy.listen` does not answer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ops::reachable;
use crate::store::ADDRESSES_FILE;

/// How long a connection to a listener may take before it counts as not answering: a hoard on
/// this host accepts within microseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The addresses a running hoard listens on, as the file holds them (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// The process that wrote them.
    pub pid: u32,
    /// The proxy listener.
    pub proxy: SocketAddr,
    /// The admin listener, if it runs.
    pub admin: Option<SocketAddr>,
    /// The registry-mirror listener, if it runs.
    pub mirror: Option<SocketAddr>,
}

/// The written file: removed when dropped, that is when hoard exits cleanly.
#[derive(Debug)]
pub struct Noted(PathBuf);

impl Drop for Noted {
    fn drop(&mut self) {
        // Already gone (an operator removed it) is as good as removed.
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Addresses {
    /// Writes them into `cache_dir`, replacing what a killed hoard left there.
    pub fn note(&self, cache_dir: &Path) -> std::io::Result<Noted> {
        let path = cache_dir.join(ADDRESSES_FILE);
        let mut text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(&path, text)?;
        Ok(Noted(path))
    }

    /// What a running hoard noted in `cache_dir`; `None` when there is no readable note.
    pub(crate) fn read(cache_dir: &Path) -> Option<Addresses> {
        let text = std::fs::read_to_string(cache_dir.join(ADDRESSES_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Where to reach hoard's proxy: at `listen` (the config's `proxy.listen`) if something accepts
/// there, else at the address a running hoard noted in `cache_dir` if that accepts, else at
/// `listen` all the same (the caller then says nothing answers there).
pub(crate) async fn proxy_address(listen: SocketAddr, cache_dir: &Path) -> SocketAddr {
    let configured = reachable(listen);
    if answers(configured).await {
        return configured;
    }
    match Addresses::read(cache_dir) {
        Some(noted) if answers(reachable(noted.proxy)).await => reachable(noted.proxy),
        _ => configured,
    }
}

async fn answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_noted_address_is_used_only_when_the_configured_one_does_not_answer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let running = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let other = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let closed = {
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        };
        let (running, other) = (
            running.local_addr().unwrap_or_else(|e| panic!("{e}")),
            other.local_addr().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(proxy_address(closed, dir.path()).await, closed);

        let noted = Addresses {
            pid: std::process::id(),
            proxy: running,
            admin: None,
            mirror: None,
        };
        let file = noted.note(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Addresses::read(dir.path()), Some(noted));
        assert_eq!(proxy_address(closed, dir.path()).await, running);
        assert_eq!(proxy_address(other, dir.path()).await, other);

        drop(file);
        assert!(!dir.path().join(ADDRESSES_FILE).exists());
        assert_eq!(proxy_address(closed, dir.path()).await, closed);
    }
}
