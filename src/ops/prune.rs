//! `hoard cache prune`: removes entries (blobs, manifests and tag records) not used for a while,
//! and the least recently used ones until the cache fits a size, as hoard's own eviction counts
//! them. "Used" is the file's mtime, which hoard sets when it serves an entry or reads a tag.
//! Tag files whose manifests are all gone afterwards go too (hoard would refetch the tag
//! anyway), so `hoard cache ls` lists only what can be served. Pinned images (`cache.pin`, `hoard
//! cache pin`) stay, as they do from hoard's own eviction.
//!
//! `hoard cache prune --s3` prunes the shared tier instead ([`run_s3`]), and leaves the local
//! disk alone. There "used" is the newer of an object's upload and its use record (`tier`).

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use indicatif::HumanBytes;

use crate::config::S3Config;
use crate::oci::{Digest, RepoPattern};
use crate::ops::disk::{
    CacheDir, Entry, Guard, Kind, Removal, TagFile, modified, remove_if_unchanged,
};
use crate::ops::{OpsError, Outcome, rfc3339};
use crate::store::{Key, pinned_keys, read_pins};
use crate::tier::{Kind as TierKind, S3Tier};

/// What to prune.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// Remove entries not used for this long.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used entries until blobs, manifests and tag records take
    /// at most this many bytes.
    pub max_size: Option<u64>,
    /// Report what would go, remove nothing.
    pub dry_run: bool,
}

/// A file prune may remove: a blob or manifest, or a tag record.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Entry(Entry),
    Tag(TagFile),
}

impl Item {
    fn path(&self) -> &Path {
        match self {
            Item::Entry(entry) => &entry.path,
            Item::Tag(tag) => &tag.path,
        }
    }

    fn meta(&self) -> &Metadata {
        match self {
            Item::Entry(entry) => &entry.meta,
            Item::Tag(tag) => &tag.meta,
        }
    }

    fn size(&self) -> u64 {
        self.meta().len()
    }

    fn modified(&self) -> SystemTime {
        modified(self.meta())
    }

    /// `blob <digest>`, `manifest <digest>`, `tag <registry/repository:tag>`.
    fn describe(&self) -> String {
        match self {
            Item::Entry(entry) => format!("{} {}", entry.kind.as_str(), entry.digest),
            Item::Tag(tag) => format!("tag {}", tag.name()),
        }
    }
}

/// The items to remove, least recently used first: all older than the cutoff, then the
/// oldest until the rest fits `max_size`. Pinned items are never chosen (their bytes still
/// count).
pub(crate) fn select(
    mut items: Vec<Item>,
    now: SystemTime,
    options: &PruneOptions,
    pinned: &dyn Fn(&Item) -> bool,
) -> Vec<Item> {
    items.sort_by(|a, b| a.modified().cmp(&b.modified()).then(a.path().cmp(b.path())));
    let cutoff = options.older_than.and_then(|age| now.checked_sub(age));
    let mut total: u64 = items.iter().map(Item::size).sum();
    let mut chosen = Vec::new();
    for item in items {
        let old = cutoff.is_some_and(|cutoff| item.modified() < cutoff);
        let over = options.max_size.is_some_and(|max| total > max);
        // Sorted oldest first: once an item is neither old nor needed to fit, none after is.
        if !old && !over {
            break;
        }
        if pinned(&item) {
            continue;
        }
        total -= item.size();
        chosen.push(item);
    }
    chosen
}

/// Prunes (or with `dry_run`, lists what would be pruned), one line per file and a summary.
/// What the `pins` (`cache.pin`, and the pins file is read here) keep is left alone.
pub fn run(
    dir: &CacheDir,
    options: &PruneOptions,
    pins: &[RepoPattern],
    out: &mut dyn Write,
) -> Result<Outcome, OpsError> {
    let verb = if options.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut items: Vec<Item> = dir.all_entries()?.into_iter().map(Item::Entry).collect();
    items.extend(dir.tags()?.into_iter().map(Item::Tag));
    let mut patterns = pins.to_vec();
    patterns.extend(read_pins(dir.root()));
    let kept = pinned_keys(dir.root(), &patterns);
    let pinned = |item: &Item| {
        kept.contains(&match item {
            Item::Entry(entry) if entry.kind == Kind::Blob => Key::Blob(entry.digest.clone()),
            Item::Entry(entry) => Key::Manifest(entry.digest.clone()),
            Item::Tag(tag) => Key::tag(&tag.registry, &tag.repository, &tag.tag),
        })
    };
    let chosen = select(items, SystemTime::now(), options, &pinned);
    let mut removed_manifests: HashSet<Digest> = HashSet::new();
    let mut removed_tags: HashSet<PathBuf> = HashSet::new();
    let (mut files, mut tags, mut freed) = (0u64, 0u64, 0u64);
    for item in &chosen {
        if !options.dry_run {
            match remove_if_unchanged(item.path(), item.meta(), Guard::Unchanged)? {
                Removal::Removed => {}
                Removal::Gone => continue,
                Removal::Changed => {
                    writeln!(out, "kept {} (used meanwhile)", item.describe())?;
                    continue;
                }
            }
        }
        match item {
            Item::Entry(entry) => {
                files += 1;
                if entry.kind == Kind::Manifest {
                    removed_manifests.insert(entry.digest.clone());
                }
            }
            Item::Tag(tag) => {
                tags += 1;
                removed_tags.insert(tag.path.clone());
            }
        }
        freed += item.size();
        writeln!(
            out,
            "{verb} {} ({}, last used {})",
            item.describe(),
            HumanBytes(item.size()),
            rfc3339(item.modified())
        )?;
    }
    let stored = |digest: &Digest| {
        !removed_manifests.contains(digest) && dir.entry(Kind::Manifest, digest).is_some()
    };
    for tag in dir.tags()? {
        if removed_tags.contains(&tag.path) || tag.lines.iter().any(|line| stored(&line.digest)) {
            continue;
        }
        if !options.dry_run
            && remove_if_unchanged(&tag.path, &tag.meta, Guard::Unchanged)? != Removal::Removed
        {
            continue;
        }
        tags += 1;
        freed += tag.meta.len();
        writeln!(out, "{verb} tag {} (no manifest left)", tag.name())?;
    }
    writeln!(
        out,
        "{verb} {files} entries and {tags} tags, {} {}",
        HumanBytes(freed),
        if options.dry_run { "to free" } else { "freed" }
    )?;
    Ok(Outcome::Done)
}

/// Prunes the shared tier of `config` (or with `dry_run`, lists what would be pruned): every
/// manifest and blob that no node uploaded or served within `unused_for` (the newer of its
/// `Last-Modified` and its use record's), with its use record; then the use records whose object
/// is not there. Each record is asked again before its object goes (one HEAD per removal): an
/// object a node served since the listing is kept. One served in the moment between that HEAD
/// and the delete still goes: the next node that misses on it fills it from the registry and
/// uploads it again.
pub async fn run_s3(
    config: &S3Config,
    unused_for: Duration,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Outcome, OpsError> {
    let verb = if dry_run { "would remove" } else { "removed" };
    let tier = S3Tier::new(config)?;
    let cutoff = SystemTime::now()
        .checked_sub(unused_for)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut uses = last_uses(&tier).await?;
    let (mut objects, mut freed, mut records) = (0u64, 0u64, 0u64);
    for kind in [TierKind::Manifest, TierKind::Blob] {
        let label = match kind {
            TierKind::Blob => "blob",
            TierKind::Manifest => "manifest",
        };
        let mut listing = std::pin::pin!(tier.list(kind));
        while let Some(object) = listing.next().await {
            let object = object?;
            let used = uses.remove(&(kind, object.digest.clone()));
            let last_used = used.map_or(object.last_modified, |t| t.max(object.last_modified));
            if last_used >= cutoff {
                continue;
            }
            // The records were listed first: ask again, a node may have served it since.
            let used = tier.used_at(kind, &object.digest).await?.or(used);
            if used.is_some_and(|t| t >= cutoff) {
                writeln!(out, "kept {label} {} (used meanwhile)", object.digest)?;
                continue;
            }
            if !dry_run {
                tier.delete(kind, &object.digest).await?;
                if used.is_some() {
                    tier.delete_used(kind, &object.digest).await?;
                }
            }
            objects += 1;
            records += u64::from(used.is_some());
            freed += object.size;
            writeln!(
                out,
                "{verb} {label} {} ({}, last used {})",
                object.digest,
                HumanBytes(object.size),
                rfc3339(last_used)
            )?;
        }
    }
    // What is left are the records of objects no longer there.
    for (kind, digest) in uses.into_keys() {
        if !dry_run {
            tier.delete_used(kind, &digest).await?;
        }
        records += 1;
    }
    let prefix = if config.prefix.is_empty() {
        String::new()
    } else {
        format!("/{}", config.prefix)
    };
    writeln!(
        out,
        "{verb} {objects} objects from s3://{}{prefix}, {} {}, and {records} use records",
        config.bucket,
        HumanBytes(freed),
        if dry_run { "to free" } else { "freed" }
    )?;
    Ok(Outcome::Done)
}

/// When each object of the tier was last served, by its use record.
async fn last_uses(tier: &S3Tier) -> Result<HashMap<(TierKind, Digest), SystemTime>, OpsError> {
    let mut uses = HashMap::new();
    for kind in [TierKind::Manifest, TierKind::Blob] {
        let mut listing = std::pin::pin!(tier.list_used(kind));
        while let Some(record) = listing.next().await {
            let record = record?;
            uses.insert((kind, record.digest), record.last_modified);
        }
    }
    Ok(uses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of `sizes` whose mtimes are `ages` seconds ago, made as real files.
    fn entries(dir: &std::path::Path, files: &[(u64, u64)], now: SystemTime) -> Vec<Item> {
        files
            .iter()
            .enumerate()
            .filter_map(|(i, (size, age))| {
                let path = dir.join(i.to_string());
                let file = std::fs::File::create(&path).ok()?;
                file.set_len(*size).ok()?;
                file.set_modified(now - Duration::from_secs(*age)).ok()?;
                Some(Item::Entry(Entry {
                    kind: Kind::Blob,
                    digest: Digest::sha256_of(i.to_string().as_bytes()),
                    meta: std::fs::metadata(&path).ok()?,
                    path,
                }))
            })
            .collect()
    }

    fn names(chosen: &[Item]) -> Vec<String> {
        chosen
            .iter()
            .filter_map(|e| e.path().file_name()?.to_str().map(str::to_owned))
            .collect()
    }

    #[test]
    fn oldest_go_first_until_the_rest_fits() {
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        let now = SystemTime::now();
        // 0: 100 B, used 10 s ago; 1: 200 B, 1000 s ago; 2: 300 B, 500 s ago.
        let all = entries(dir.path(), &[(100, 10), (200, 1000), (300, 500)], now);
        assert_eq!(all.len(), 3);
        let prune = |older_than: Option<u64>, max_size: Option<u64>| {
            let options = PruneOptions {
                older_than: older_than.map(Duration::from_secs),
                max_size,
                dry_run: false,
            };
            names(&select(all.clone(), now, &options, &|_| false))
        };
        assert_eq!(prune(None, Some(600)), Vec::<String>::new());
        assert_eq!(prune(None, Some(599)), ["1"]);
        assert_eq!(prune(None, Some(400)), ["1"]);
        assert_eq!(prune(None, Some(399)), ["1", "2"]);
        assert_eq!(prune(None, Some(0)), ["1", "2", "0"]);
        assert_eq!(prune(Some(600), None), ["1"]);
        assert_eq!(prune(Some(100), None), ["1", "2"]);
        assert_eq!(prune(Some(600), Some(350)), ["1", "2"]);
    }
}
