//! Operator commands that work on a cache folder: `hoard cache …` and `hoard warm`; and on the
//! CA folder: `hoard ca …`. The ones that talk to a running hoard find it with [`running`].
//!
//! They run beside a serving hoard, so they never write into the store: they read entry files
//! and delete whole files (hoard checks for a file before it serves it, and refetches what is
//! gone), and they never touch `tmp/`, where fills are in progress. The files they write are
//! the pins file (`pin.rs`), which hoard only reads, and what `hoard cache import` adds: whole,
//! checked entries renamed into place from a staging folder of its own in `hoard-tmp/`, which a
//! running hoard admits at its next reconcile. Every path they build comes
//! from a parsed digest, a checked repository name and tag, and a checked host (see [`disk`]).

pub mod ca;
pub mod disk;
pub mod export;
mod export_write;
pub mod imageref;
pub mod import;
mod import_commit;
mod layout_tar;
pub mod ls;
pub mod manifest;
pub mod pin;
pub mod prune;
mod pull;
pub mod rm;
pub mod running;
pub mod stats;
pub mod verify;
pub mod warm;
mod warm_error;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Classify, Side};

/// How a command ended when it did not fail outright.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything went as asked: exit status 0.
    Done,
    /// The command finished but found trouble (corrupt entries, unknown images, failed pulls):
    /// exit status 1.
    Trouble,
    /// The input was refused as bad (a tampered or malformed archive): exit status 2, as for bad
    /// usage.
    Refused,
}

impl Outcome {
    /// `Trouble` if `trouble`, else `Done`.
    pub(crate) fn from_trouble(trouble: bool) -> Outcome {
        if trouble {
            Outcome::Trouble
        } else {
            Outcome::Done
        }
    }
}

/// Errors that stop an operator command.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
    /// The CA could not be read or written (`hoard ca …`).
    #[error("{0}")]
    Ca(String),
    /// The shared tier failed (`hoard cache prune --s3`).
    #[error(transparent)]
    Tier(#[from] crate::tier::TierError),
}

/// A command's disk and output errors are hoard's own; the shared tier's are its own.
impl Classify for OpsError {
    fn side(&self) -> Side {
        match self {
            OpsError::Tier(err) => err.side(),
            _ => Side::Internal,
        }
    }
}

/// Wraps a file-system error with what was being done to which path.
pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> OpsError {
    let path = path.to_owned();
    move |source| OpsError::Io {
        action,
        path,
        source,
    }
}

/// A time as RFC 3339 in UTC, to the second: `2024-05-01T12:34:56Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let t = time::OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Where to reach a hoard listening on `listen`: a wildcard listener is reached on loopback.
pub(crate) fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Installs aws-lc-rs as the process's rustls provider, which reqwest uses.
pub(crate) fn install_crypto_provider() {
    // An error only says that a provider is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_print_as_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        let reach = |text: &str| text.parse().map(|addr| reachable(addr).to_string()).ok();
        assert_eq!(reach("0.0.0.0:3128").as_deref(), Some("127.0.0.1:3128"));
        assert_eq!(reach("[::]:3128").as_deref(), Some("[::1]:3128"));
        assert_eq!(reach("10.0.0.1:80").as_deref(), Some("10.0.0.1:80"));
    }
}
