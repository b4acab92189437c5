//! The status page at `/`: what the cache holds, the last hour minute by minute and per listener
//! (proxy, mirror, fleet), the tag freshness rules, recent and most pulled images. Plain HTML and an inline SVG chart, no scripts.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::config::{CacheConfig, CredentialSource, LendTo, TagTtl};
use crate::hoard::Hoard;
use crate::http::CacheStatus;
use crate::telemetry::Via;
use crate::telemetry::activity::{Minute, Traffic};

/// Bytes as a short human figure.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page: hit ratio, bytes saved, store use, most pulled and recent images, a chart
/// of bytes from cache against bytes from upstream over the last hour, and that hour's traffic
/// through the proxy port beside the mirror's. Plain HTML and an inline SVG: no scripts,
/// nothing fetched from elsewhere.
pub(super) fn status_page(hoard: &Hoard, fleet_figures: Option<&str>) -> String {
    let m = hoard.metrics.activity();
    let (hits, hit_bytes) = [
        CacheStatus::Hit,
        CacheStatus::Revalidated,
        CacheStatus::Stale,
    ]
    .iter()
    .map(|s| m.count(*s))
    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let (misses, miss_bytes) = m.count(CacheStatus::Miss);
    let ratio = |a: u64, b: u64| {
        if a + b == 0 {
            "–".to_owned()
        } else {
            format!("{:.1}%", 100.0 * a as f64 / (a + b) as f64)
        }
    };
    let usage = hoard.store.usage();
    let limit = hoard.store.limits().max_size;
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>hoard</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
h1 {{ font-size: 1.6em; margin-bottom: .2em; }} h2 {{ font-size: 1.1em; margin-top: 2em; }}
.cards {{ display: flex; gap: 1em; flex-wrap: wrap; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .8em 1.2em; min-width: 10em; }}
.card b {{ display: block; font-size: 1.6em; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ text-align: left; padding: .25em .6em; border-bottom: 1px solid #eee; }}
.cache {{ fill: #2a9d8f; }} .upstream {{ fill: #e76f51; }}
.legend span {{ display: inline-block; width: .8em; height: .8em; margin: 0 .3em 0 1em; }}
</style></head><body>
<h1>hoard</h1>
<p>Caching proxy for container registries, listening on {listen}{mirror}.</p>
<div class="cards">
<div class="card" id="hit-ratio"><b>{req_ratio}</b>hit ratio (requests)</div>
<div class="card"><b>{byte_ratio}</b>hit ratio (bytes)</div>
<div class="card" id="bytes-saved"><b>{saved}</b>served from cache</div>
<div class="card"><b>{fetched}</b>fetched from registries</div>
<div class="card" id="store-use"><b>{used}</b>of {limit} in {entries} entries, {memory} of them also in memory</div>
</div>
"#,
        listen = hoard.config().proxy.listen,
        mirror = hoard
            .config()
            .mirror
            .as_ref()
            .map_or(String::new(), |m| format!(
                ", as a registry mirror on {}",
                m.listen
            )),
        req_ratio = ratio(hits, misses),
        byte_ratio = ratio(hit_bytes, miss_bytes),
        saved = human(hit_bytes),
        fetched = human(miss_bytes),
        used = human(usage.bytes),
        limit = human(limit),
        entries = usage.entries,
        memory = human(usage.memory),
    );
    page.push_str(&ca_section(hoard));
    page.push_str(&accounts_table(hoard));
    page.push_str(&freshness_table(&hoard.config().cache));
    let totals: Vec<Traffic> = m.history().iter().map(Minute::total).collect();
    page.push_str(&chart(&totals));
    page.push_str(&by_listener(&m.last_hour()));
    if let Some(fleet) = &hoard.fleet {
        page.push_str(&fleet_table(&fleet.peers(), hoard.metrics.fleet_counts()));
    }
    if let Some(figures) = fleet_figures {
        page.push_str(figures);
    }
    if hoard.tier.is_some() {
        page.push_str(&tier_table(hoard.metrics.tier_counts()));
    }

    page.push_str("<h2>Most pulled images</h2>\n<table id=\"most-pulled\"><tr><th>image</th><th>pulls</th></tr>\n");
    let popular = m.most_pulled(10);
    if popular.is_empty() {
        page.push_str("<tr><td colspan=\"2\">none yet</td></tr>\n");
    }
    for (image, pulls) in popular {
        let _ = writeln!(page, "<tr><td>{}</td><td>{pulls}</td></tr>", escape(&image));
    }
    page.push_str("</table>\n<h2>Recent pulls</h2>\n<table id=\"recent\"><tr><th>when</th><th>image</th><th>cache</th><th>via</th></tr>\n");
    let recent = m.recent_pulls();
    if recent.is_empty() {
        page.push_str("<tr><td colspan=\"4\">none yet</td></tr>\n");
    }
    for pull in recent {
        let ago = SystemTime::now()
            .duration_since(pull.at)
            .map_or(0, |d| d.as_secs());
        let _ = writeln!(
            page,
            "<tr><td>{ago} s ago</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&pull.image),
            pull.cache.as_str(),
            pull.via.as_str()
        );
    }
    page.push_str("</table>\n<p><a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">health</a></p>\n</body></html>\n");
    page
}

/// The `[[cache.freshness]]` rules in the order they are tried, then the default they fall back
/// to. Absent when there are none.
fn freshness_table(cache: &CacheConfig) -> String {
    if cache.freshness.is_empty() {
        return String::new();
    }
    let mut table = String::from(
        "<h2>Tag freshness</h2>\n<table id=\"freshness\"><tr><th>tags</th><th>trusted for</th></tr>\n",
    );
    for rule in &cache.freshness {
        let _ = writeln!(
            table,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(&rule.pattern.to_string()),
            rule.ttl.as_text()
        );
    }
    let _ = writeln!(
        table,
        "<tr><td>any other (cache.tag_ttl)</td><td>{}</td></tr>\n</table>",
        TagTtl::For(cache.tag_ttl).as_text()
    );
    table
}

/// hoard's registry accounts: where each comes from, whom it is lent to, and how its source has
/// fared (failures and the last reason; never a secret). Absent when there are none.
fn accounts_table(hoard: &Hoard) -> String {
    let config = hoard.config();
    if config.upstream.credentials.is_empty() {
        return String::new();
    }
    let health = hoard.registry_auth.source_health();
    let mut out = String::from(
        "<h2>Registry accounts</h2>\n<table id=\"accounts\"><tr><th>registry</th><th>source</th>\
         <th>lent to</th><th>state</th></tr>\n",
    );
    for credential in &config.upstream.credentials {
        let source = credential.source.name();
        let lent = match &credential.lend_to {
            LendTo::Everyone => "everyone".to_owned(),
            LendTo::Users(users) if users.is_empty() => "nobody".to_owned(),
            LendTo::Users(users) => users.iter().cloned().collect::<Vec<_>>().join(", "),
        };
        let state = match health.get(&(credential.host.clone(), source)) {
            _ if credential.source == CredentialSource::Static => "configured".to_owned(),
            None => "not asked yet".to_owned(),
            Some(h) => match &h.last_error {
                Some(why) => format!("failing ({} failures): {why}", h.failures),
                None => {
                    let ago = h
                        .last_ok
                        .and_then(|at| SystemTime::now().duration_since(at).ok())
                        .map_or(0, |d| d.as_secs());
                    format!("ok, asked {ago} s ago ({} failures)", h.failures)
                }
            },
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{source}</td><td>{}</td><td>{}</td></tr>",
            escape(&credential.host),
            escape(&lent),
            escape(&state)
        );
    }
    out.push_str("</table>\n");
    out
}

/// The last hour through each listener: requests, bytes from cache and from upstream.
/// The CA's fingerprint (what `--ca-sha256` of a setup script checks), and warnings: expiry
/// within 60 days, intercepted hosts its name constraints leave out.
fn ca_section(hoard: &Hoard) -> String {
    // 60 days: time to renew the CA and hand clients the new one.
    const WARN_BEFORE_S: i64 = 60 * 86_400;
    let mut out = format!(
        "<p id=\"ca\">CA fingerprint: <code id=\"ca-fingerprint\">{}</code> (check a setup \
         script with <code>--ca-sha256</code>)</p>\n",
        hoard.ca.fingerprint()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let left = hoard.ca.not_after() - now;
    if left < WARN_BEFORE_S {
        let _ = writeln!(
            out,
            "<p class=\"warning\" id=\"ca-expiry\">warning: hoard's CA expires in {} days: \
             run <code>hoard ca renew</code>, restart, and give clients the new ca.crt</p>",
            left / 86_400
        );
    }
    let uncovered = hoard.uncovered();
    if !uncovered.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"warning\" id=\"ca-uncovered\">warning: hoard's CA cannot sign for {} \
             (ca.name_constraints), so they are tunnelled, not intercepted: run <code>hoard ca \
             renew</code> and restart</p>",
            escape(&uncovered.join(", "))
        );
    }
    out
}

fn by_listener(last_hour: &[Traffic; Via::ALL.len()]) -> String {
    let mut table = String::from(
        "<h2>By listener, last hour</h2>\n<table id=\"via\"><tr><th>via</th><th>requests</th>\
         <th>from cache</th><th>from upstream</th></tr>\n",
    );
    for (via, t) in Via::ALL.iter().zip(last_hour) {
        let _ = writeln!(
            table,
            "<tr id=\"via-{via}\"><td>{via}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.requests,
            human(t.from_cache),
            human(t.from_upstream),
            via = via.as_str(),
        );
    }
    table.push_str("</table>\n");
    table
}

/// The fleet's peers, this node marked, each up or down by its last answer; and what this node
/// read from owners against what it asked the registry for instead.
fn fleet_table(peers: &[crate::fleet::PeerStatus], (reads, duplicates): (u64, u64)) -> String {
    let mut table = format!(
        "<h2>Fleet</h2>\n<p id=\"fleet-counts\">{reads} reads from owners, {duplicates} \
         duplicate fetches from the registry (owner unreachable, slow or refusing)</p>\n\
         <table id=\"fleet\"><tr><th>peer</th><th>state</th></tr>\n",
    );
    for peer in peers {
        let state = match (peer.me, peer.up) {
            (true, _) => "this node",
            (false, None) => "not asked yet",
            (false, Some(true)) => "up",
            (false, Some(false)) => "down",
        };
        let _ = writeln!(
            table,
            "<tr><td>{}</td><td>{state}</td></tr>",
            escape(&peer.name)
        );
    }
    table.push_str("</table>\n");
    table
}

/// A column of the fleet's figures: its heading, and the series summed for it with the labels
/// they must have.
type Figure = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The fleet's figures, column by column.
const FLEET_FIGURES: [Figure; 7] = [
    (
        "fetched for peers (owner misses)",
        "hoard_requests_total",
        &[("via", "fleet"), ("cache", "MISS")],
    ),
    (
        "served peers from cache (owner hits)",
        "hoard_requests_total",
        &[("via", "fleet"), ("cache", "HIT")],
    ),
    ("read from owners", "hoard_fleet_peer_reads_total", &[]),
    (
        "duplicate fetches",
        "hoard_fleet_duplicate_fetches_total",
        &[],
    ),
    ("tier hits", "hoard_tier_reads_total", &[("result", "hit")]),
    (
        "tier uploads",
        "hoard_tier_writes_total",
        &[("result", "created")],
    ),
    ("registry requests", "hoard_upstream_requests_total", &[]),
];

/// The fleet's figures node by node and in all: each peer's counters read from its peer
/// endpoint (within `fleet.peer_timeout`, all peers at once), this node's its own. `None` when
/// this node is in no fleet.
pub(super) async fn fleet_figures(hoard: &Hoard) -> Option<String> {
    let fleet = hoard.fleet.clone()?;
    let peers = fleet.peers();
    let mut asks = tokio::task::JoinSet::new();
    let mut nodes: Vec<(usize, String, Option<String>)> = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        if peer.me {
            nodes.push((i, peer.name, Some(hoard.metrics.encode())));
            continue;
        }
        let fleet = fleet.clone();
        asks.spawn(async move {
            let text = fleet.metrics_of(&peer.name).await.ok();
            (i, peer.name, text)
        });
    }
    while let Some(asked) = asks.join_next().await {
        if let Ok(node) = asked {
            nodes.push(node);
        }
    }
    nodes.sort_by_key(|node| node.0);
    let mut table = String::from(
        "<h2>The fleet, all nodes</h2>\n<table id=\"fleet-figures\"><tr><th>node</th>",
    );
    for (heading, ..) in FLEET_FIGURES {
        let _ = write!(table, "<th>{heading}</th>");
    }
    table.push_str("</tr>\n");
    let mut total = [0u64; FLEET_FIGURES.len()];
    let mut answered = 0;
    for (_, name, text) in &nodes {
        let _ = write!(table, "<tr><td>{}</td>", escape(name));
        match text {
            Some(text) => {
                answered += 1;
                for (sum, (_, series, labels)) in total.iter_mut().zip(FLEET_FIGURES) {
                    let value = crate::telemetry::sum_series(text, series, labels);
                    *sum += value;
                    let _ = write!(table, "<td>{value}</td>");
                }
            }
            None => {
                let _ = write!(
                    table,
                    "<td colspan=\"{}\">no answer</td>",
                    FLEET_FIGURES.len()
                );
            }
        }
        table.push_str("</tr>\n");
    }
    let _ = write!(
        table,
        "<tr id=\"fleet-total\"><td>fleet ({answered} of {} nodes)</td>",
        nodes.len()
    );
    for sum in total {
        let _ = write!(table, "<td>{sum}</td>");
    }
    table.push_str("</tr>\n</table>\n");
    Some(table)
}

/// The shared S3 tier's reads and writes since start.
fn tier_table(
    ([hit, miss, failed, corrupt], [created, there, unwritten]): ([u64; 4], [u64; 3]),
) -> String {
    format!(
        "<h2>Shared tier</h2>\n<table id=\"tier\"><tr><th></th><th>ok</th><th>not there</th>\
         <th>failed</th><th>corrupt</th></tr>\n\
         <tr><td>reads</td><td>{hit}</td><td>{miss}</td><td>{failed}</td><td>{corrupt}</td></tr>\n\
         <tr><td>uploads</td><td>{created}</td><td>{there} already there</td><td>{unwritten}</td>\
         <td>–</td></tr>\n</table>\n"
    )
}

/// Stacked bars per minute: bytes from cache and from upstream.
fn chart(history: &[Traffic]) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 160.0;
    let peak = history
        .iter()
        .map(|m| m.from_cache + m.from_upstream)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bar = WIDTH / history.len().max(1) as f64;
    let mut svg = format!(
        "<h2>Bytes served, last hour</h2>\n<svg id=\"chart\" role=\"img\" aria-label=\"bytes from cache and from upstream per minute\" viewBox=\"0 0 {WIDTH} {}\" width=\"100%\">\n",
        HEIGHT + 20.0
    );
    for (i, minute) in history.iter().enumerate() {
        let x = i as f64 * bar;
        let cache = minute.from_cache as f64 / peak * HEIGHT;
        let upstream = minute.from_upstream as f64 / peak * HEIGHT;
        let _ = writeln!(
            svg,
            "<rect class=\"cache\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{cache:.1}\"><title>{} from cache</title></rect>\
             <rect class=\"upstream\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{upstream:.1}\"><title>{} from upstream</title></rect>",
            HEIGHT - cache,
            bar * 0.8,
            human(minute.from_cache),
            HEIGHT - cache - upstream,
            bar * 0.8,
            human(minute.from_upstream),
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\" font-size=\"12\">−60 min</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">now · peak {}/min</text>\n</svg>\n\
         <p class=\"legend\"><span class=\"cache\" style=\"background:#2a9d8f\"></span>from cache<span style=\"background:#e76f51\"></span>from upstream</p>\n",
        HEIGHT + 16.0,
        WIDTH,
        HEIGHT + 16.0,
        human(peak as u64)
    );
    svg
}
