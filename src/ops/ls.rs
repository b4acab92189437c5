//! `hoard cache ls`: the tagged images in the cache (registry/repository:tag → digest, size,
//! last used, whether it is pinned, and how long the tag is trusted by which
//! `[[cache.freshness]]` rule), as an aligned table or as JSON.

use std::io::Write;

use indicatif::HumanBytes;
use serde::Serialize;

use crate::config::CacheConfig;
use crate::oci::Digest;
use crate::ops::disk::{CacheDir, Kind, modified};
use crate::ops::{OpsError, Outcome, rfc3339};
use crate::store::read_pins;

/// One tag → manifest mapping, as listed. The JSON form has exactly these keys.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Image {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// Bytes of the image: config plus layers for an image manifest; for an index, the sum over
    /// its platform manifests that are stored; the manifest's own size when neither is known.
    pub size: u64,
    /// The newer mtime of the tag file and the manifest file, RFC 3339 in UTC.
    pub last_used: String,
    /// Whether `cache.pin` or the pins file (`hoard cache pin`) keeps it from eviction.
    pub pinned: bool,
    /// How long the tag is trusted: `5m`, or `immutable`.
    pub tag_ttl: String,
    /// The `[[cache.freshness]]` rule that says so (its pattern, registry as hoard keys it);
    /// `null`: the global `cache.tag_ttl`.
    pub freshness_rule: Option<String>,
}

/// Every tag mapping in the cache, sorted by name (a tag has one mapping per media type), with
/// its freshness by `cache`'s rules.
pub(crate) fn images(dir: &CacheDir, cache: &CacheConfig) -> Result<Vec<Image>, OpsError> {
    let mut pins = cache.pin.clone();
    pins.extend(read_pins(dir.root()));
    let mut out = Vec::new();
    for tag in dir.tags()? {
        let freshness = cache.tag_freshness(&tag.registry, &tag.repository, Some(&tag.tag));
        let pinned = pins
            .iter()
            .any(|p| p.matches_tag(&tag.registry, &tag.repository, &tag.tag));
        for line in &tag.lines {
            let manifest_used = dir
                .entry(Kind::Manifest, &line.digest)
                .map(|e| e.modified());
            let last_used =
                manifest_used.map_or(modified(&tag.meta), |m| m.max(modified(&tag.meta)));
            out.push(Image {
                registry: tag.registry.clone(),
                repository: tag.repository.clone(),
                tag: tag.tag.clone(),
                digest: line.digest.to_string(),
                media_type: line.media_type.clone(),
                size: image_size(dir, &line.digest, line.size),
                last_used: rfc3339(last_used),
                pinned,
                tag_ttl: freshness.ttl.as_text(),
                freshness_rule: freshness.rule.map(|rule| rule.pattern.to_string()),
            });
        }
    }
    Ok(out)
}

/// See [`Image::size`]; `manifest_size` is the fallback.
fn image_size(dir: &CacheDir, digest: &Digest, manifest_size: u64) -> u64 {
    let Some(manifest) = dir.manifest(digest) else {
        return manifest_size;
    };
    if !manifest.is_index() {
        return manifest.doc.image_size();
    }
    let platforms: Vec<u64> = manifest
        .doc
        .children()
        .filter_map(|child| dir.manifest(&child))
        .filter(|child| !child.is_index())
        .map(|child| child.doc.image_size())
        .collect();
    if platforms.is_empty() {
        manifest_size
    } else {
        platforms.iter().sum()
    }
}

/// Prints the images as a table with a header row, or as a JSON array with `json`.
pub fn run(
    dir: &CacheDir,
    cache: &CacheConfig,
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome, OpsError> {
    let images = images(dir, cache)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &images).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(Outcome::Done);
    }
    let rows: Vec<[String; 6]> = images
        .iter()
        .map(|i| {
            let rule = i.freshness_rule.as_deref().unwrap_or("cache.tag_ttl");
            [
                format!("{}/{}:{}", i.registry, i.repository, i.tag),
                i.digest.clone(),
                HumanBytes(i.size).to_string(),
                i.last_used.clone(),
                if i.pinned { "yes" } else { "no" }.to_owned(),
                format!("{} ({rule})", i.tag_ttl),
            ]
        })
        .collect();
    let header = [
        "IMAGE",
        "DIGEST",
        "SIZE",
        "LAST USED",
        "PINNED",
        "FRESHNESS",
    ]
    .map(str::to_owned);
    let mut widths = [0; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for [image, digest, size, used, pinned, fresh] in std::iter::once(&header).chain(&rows) {
        let [w0, w1, w2, w3, w4, _] = widths;
        writeln!(
            out,
            "{image:<w0$}  {digest:<w1$}  {size:>w2$}  {used:<w3$}  {pinned:<w4$}  {fresh}"
        )?;
    }
    Ok(Outcome::Done)
}
