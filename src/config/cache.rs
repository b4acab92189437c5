//! `[cache]`: the store on disk, how long tags are trusted, who gets cached objects, and the
//! limits on blob fills.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::{changed, count_key, duration_key, size_key};
use super::error::ConfigError;
use crate::oci::RepoPattern;

use super::freshness::{FreshnessRule, FreshnessSection, TagFreshness, rules, tag_freshness};

/// `[cache]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub dir: Option<PathBuf>,
    pub max_size: Option<String>,
    pub max_blob_size: Option<String>,
    pub min_free: Option<String>,
    pub memory: Option<String>,
    pub tag_ttl: Option<String>,
    pub auth_on_hit: Option<String>,
    pub max_fills: Option<usize>,
    pub max_fills_per_client: Option<usize>,
    pub abandoned_fill_grace: Option<String>,
    #[serde(default)]
    pub finish_abandoned_fills: bool,
    /// `[[cache.freshness]]`: tag TTLs by pattern.
    #[serde(default)]
    pub freshness: Vec<FreshnessSection>,
    /// `cache.pin`: images kept from eviction.
    #[serde(default)]
    pub pin: Vec<String>,
}

/// `[cache]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Folder of the content store and tag map.
    pub dir: PathBuf,
    /// What the store may use of its disk.
    pub limits: CacheLimits,
    /// How long a tag → digest mapping is served without asking the upstream, unless a
    /// freshness rule says otherwise.
    pub tag_ttl: Duration,
    /// `[[cache.freshness]]`: tag TTLs and immutable tags by pattern, first match wins.
    pub freshness: Vec<FreshnessRule>,
    /// `cache.pin`: images (`registry/repo-path[:tag]`) whose manifests and blobs are kept
    /// from eviction.
    pub pin: Vec<RepoPattern>,
    /// Who gets cached objects.
    pub auth_on_hit: AuthOnHit,
    /// How many blob fills may run, and what becomes of one nobody reads.
    pub fills: FillLimits,
}

/// What the store may use of its disk (set when the store opens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// `cache.max_size`: size limit of the store in bytes, fills in progress included.
    pub max_size: u64,
    /// `cache.min_free`: free space the store leaves on its file system, in bytes.
    pub min_free: u64,
    /// `cache.memory`: bytes of small blobs and manifests (64 KiB or less each) also kept in
    /// memory, so that a hit on one touches no file; 0 keeps none.
    pub memory: u64,
}

/// Blob fills: how many run at once, and what becomes of one nobody reads any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillLimits {
    /// `cache.max_fills`: fills running at once; past it a blob is streamed to its client
    /// without being kept.
    pub max: usize,
    /// `cache.max_fills_per_client`: fills one client address may have started that still run.
    pub per_client: usize,
    /// `cache.abandoned_fill_grace`: how long a fill nobody reads waits for a reader before it
    /// stops.
    pub abandoned_grace: Duration,
    /// `cache.finish_abandoned_fills`: whether a fill nobody reads goes on to the end anyway.
    pub finish_abandoned: bool,
    /// `cache.max_blob_size`: the largest upstream `Content-Length` a fill keeps; a larger blob,
    /// or one without a length, is streamed to its client without being kept.
    pub max_blob_size: u64,
}

/// Whether a cached object is served to any client, or only to clients the upstream accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOnHit {
    /// Anyone who can reach hoard gets what is cached.
    None,
    /// A client gets a cached object only after the upstream accepted its credentials for it.
    Upstream,
}

impl CacheConfig {
    /// How long `repo:tag` of `registry` (a registry key) is trusted, and the rule that says so;
    /// `tag` is `None` for a referrers list. The one place tag freshness is decided.
    pub fn tag_freshness(&self, registry: &str, repo: &str, tag: Option<&str>) -> TagFreshness<'_> {
        tag_freshness(&self.freshness, self.tag_ttl, registry, repo, tag)
    }

    /// The keys whose change only a restart puts in force (the store opens with them).
    pub(super) fn restart_keys(&self, new: &CacheConfig) -> Vec<&'static str> {
        let (old_limits, new_limits) = (self.limits, new.limits);
        changed([
            ("cache.dir", self.dir != new.dir),
            ("cache.max_size", old_limits.max_size != new_limits.max_size),
            ("cache.min_free", old_limits.min_free != new_limits.min_free),
            ("cache.memory", old_limits.memory != new_limits.memory),
        ])
    }
}

/// `[cache]`, with `--cache-dir` and `--tag-ttl` over the file. `shared` (a listener is beyond
/// loopback or hoard holds registry credentials of its own) makes `auth_on_hit = "upstream"`
/// the default.
pub(super) fn cache(
    section: CacheSection,
    cli_dir: Option<PathBuf>,
    cli_tag_ttl: Option<String>,
    shared: bool,
) -> Result<CacheConfig, ConfigError> {
    let max_size = size_key("cache.max_size", section.max_size, 20 << 30)?;
    let max_blob_size = size_key("cache.max_blob_size", section.max_blob_size, max_size / 2)?;
    let min_free = size_key("cache.min_free", section.min_free, 1 << 30)?;
    let memory = size_key("cache.memory", section.memory, 64 << 20)?;
    let tag_ttl = duration_key("cache.tag_ttl", cli_tag_ttl.or(section.tag_ttl), 600)?;
    let auth_on_hit = match section.auth_on_hit.as_deref() {
        None if shared => AuthOnHit::Upstream,
        None | Some("none") => AuthOnHit::None,
        Some("upstream") => AuthOnHit::Upstream,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "cache.auth_on_hit",
                message: format!("{other:?} is not \"none\" or \"upstream\""),
            });
        }
    };
    Ok(CacheConfig {
        dir: cli_dir.or(section.dir).unwrap_or_else(|| "cache".into()),
        limits: CacheLimits {
            max_size,
            min_free,
            memory,
        },
        tag_ttl,
        freshness: rules(section.freshness)?,
        pin: pins(&section.pin)?,
        auth_on_hit,
        fills: FillLimits {
            max: count_key("cache.max_fills", section.max_fills, 64)?,
            per_client: count_key(
                "cache.max_fills_per_client",
                section.max_fills_per_client,
                16,
            )?,
            abandoned_grace: duration_key(
                "cache.abandoned_fill_grace",
                section.abandoned_fill_grace,
                10,
            )?,
            finish_abandoned: section.finish_abandoned_fills,
            max_blob_size,
        },
    })
}

/// `cache.pin`, parsed.
fn pins(patterns: &[String]) -> Result<Vec<RepoPattern>, ConfigError> {
    patterns
        .iter()
        .map(|text| {
            RepoPattern::parse(text).map_err(|message| ConfigError::Invalid {
                key: "cache.pin",
                message,
            })
        })
        .collect()
}
