//! `hoard cache stats`: what the cache holds, and, when hoard is running, its hit ratio since
//! start (read from `GET /stats` on the proxy port, found by [`super::running`]).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use indicatif::HumanBytes;
use serde::{Deserialize, Serialize};

use crate::ops::disk::{CacheDir, Kind};
use crate::ops::running::proxy_address;
use crate::ops::{OpsError, Outcome, install_crypto_provider};

/// How long to wait for a running hoard to answer.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// Statuses that were answered from the store.
const SERVED_FROM_CACHE: [&str; 3] = ["HIT", "REVALIDATED", "STALE"];

/// Count and bytes of one kind of entry.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
}

/// The counters hoard serves at `/stats`: by cache status, requests and bytes sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub requests: HashMap<String, u64>,
    pub bytes: HashMap<String, u64>,
}

/// Requests (or bytes) served from the store, and those plus misses.
fn served(counts: &HashMap<String, u64>) -> (u64, u64) {
    let get = |status: &str| counts.get(status).copied().unwrap_or(0);
    let hits: u64 = SERVED_FROM_CACHE.iter().map(|s| get(s)).sum();
    (hits, hits + get("MISS"))
}

/// The fraction of cacheable traffic served from the store:
/// (HIT + REVALIDATED + STALE) / (those + MISS); `None` before any.
pub(crate) fn hit_ratio(counts: &HashMap<String, u64>) -> Option<f64> {
    let (hits, total) = served(counts);
    (total > 0).then(|| hits as f64 / total as f64)
}

/// The `--json` form.
#[derive(Debug, Serialize)]
struct Report {
    cache_dir: String,
    blobs: Usage,
    manifests: Usage,
    /// Tag records: one small file per tag.
    tags: Usage,
    /// Bytes of blobs, manifests and tag records: what `cache.max_size` limits.
    bytes: u64,
    proxy: String,
    running: bool,
    hit_ratio: HitRatio,
    /// hoard's counters as served, absent when it is not running.
    counters: Option<Counters>,
}

#[derive(Debug, Serialize)]
struct HitRatio {
    requests: Option<f64>,
    bytes: Option<f64>,
}

/// Prints entries, bytes and the hit ratio; `listen` is hoard's proxy address from the config
/// (where hoard is looked for first, then at the address it noted in the cache folder).
pub async fn run(
    dir: &CacheDir,
    listen: SocketAddr,
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome, OpsError> {
    let usage = |kind| -> Result<Usage, OpsError> {
        let entries = dir.entries(kind)?;
        Ok(Usage {
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size()).sum(),
        })
    };
    let (blobs, manifests) = (usage(Kind::Blob)?, usage(Kind::Manifest)?);
    let tags = dir.tags()?;
    let tags = Usage {
        entries: tags.len() as u64,
        bytes: tags.iter().map(|t| t.meta.len()).sum(),
    };
    let proxy = proxy_address(listen, dir.root()).await;
    let counters = fetch_counters(proxy).await;
    let report = Report {
        cache_dir: dir.root().display().to_string(),
        blobs,
        manifests,
        tags,
        bytes: blobs.bytes + manifests.bytes + tags.bytes,
        proxy: proxy.to_string(),
        running: counters.is_some(),
        hit_ratio: HitRatio {
            requests: counters.as_ref().and_then(|c| hit_ratio(&c.requests)),
            bytes: counters.as_ref().and_then(|c| hit_ratio(&c.bytes)),
        },
        counters,
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        print_text(&report, out)?;
    }
    Ok(Outcome::Done)
}

fn print_text(report: &Report, out: &mut dyn Write) -> Result<(), OpsError> {
    let line = |name: &str, usage: Usage| {
        format!(
            "{name:<10} {:>8} entries  {:>12}",
            usage.entries,
            HumanBytes(usage.bytes).to_string()
        )
    };
    let total = Usage {
        entries: report.blobs.entries + report.manifests.entries + report.tags.entries,
        bytes: report.bytes,
    };
    writeln!(out, "{:<10} {}", "cache", report.cache_dir)?;
    writeln!(out, "{}", line("blobs", report.blobs))?;
    writeln!(out, "{}", line("manifests", report.manifests))?;
    writeln!(out, "{}", line("tags", report.tags))?;
    writeln!(out, "{}", line("total", total))?;
    let Some(counters) = &report.counters else {
        writeln!(out, "hoard is not running at {}", report.proxy)?;
        return Ok(());
    };
    let Some(requests) = report.hit_ratio.requests else {
        writeln!(
            out,
            "hit ratio  no cacheable requests since hoard at {} started",
            report.proxy
        )?;
        return Ok(());
    };
    let (hits, total) = served(&counters.requests);
    let bytes = report
        .hit_ratio
        .bytes
        .map(|b| format!(", {:.1}% of bytes", b * 100.0))
        .unwrap_or_default();
    writeln!(
        out,
        "hit ratio  {:.1}% of requests ({hits} of {total}){bytes}, since hoard at {} started",
        requests * 100.0,
        report.proxy
    )?;
    Ok(())
}

/// Asks a running hoard for its counters; `None` if nothing answers sensibly within a second.
async fn fetch_counters(proxy: SocketAddr) -> Option<Counters> {
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(STATS_TIMEOUT)
        .build()
        .ok()?;
    let response = client
        .get(format!("http://{proxy}/stats"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_ratio_counts_revalidated_and_stale_as_hits() {
        let counts: HashMap<String, u64> = [
            ("HIT", 5),
            ("REVALIDATED", 1),
            ("STALE", 2),
            ("MISS", 2),
            ("BYPASS", 90),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(hit_ratio(&counts), Some(0.8));
        assert_eq!(hit_ratio(&HashMap::new()), None);
    }
}
