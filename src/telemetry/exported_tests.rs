//! The names hoard exports, as the Grafana dashboard (`contrib/grafana-dashboard.json`) and
//! `docs/metrics.md` use them: the dashboard asks for nothing hoard does not export, and covers
//! the fleet, the shared tier and each listener's traffic; the page lists every family, with its
//! labels, and nothing else.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const DASHBOARD: &str = include_str!("../../contrib/grafana-dashboard.json");
const DOCS: &str = include_str!("../../docs/metrics.md");

/// Metrics with a series in every family: prometheus-client leaves a family without one out of
/// the text, its `# HELP` and `# TYPE` lines too, so a scrape of a fresh hoard names only some.
fn every_family() -> String {
    let m = Metrics::new();
    m.record(Via::Proxy, CacheStatus::Hit, 1);
    m.upstream_request("gcr.io", &http::Method::GET, "/v2/p/manifests/v1", 200);
    m.auth_failure(AuthFailure::ProxyAuth);
    m.credential_source_failure("gcr.io", "gcp-metadata");
    m.connection_refused(ConnectionRefused::PerClient);
    m.fill_skipped(FillSkipped::FarRange);
    m.upstream_throttled("gcr.io", std::time::Duration::from_millis(5));
    m.fill_wait("gcr.io", std::time::Duration::from_millis(5));
    m.duplicate_fetch(PeerFailure::Timeout);
    m.set_peers(1, 0);
    m.tier_read(TierRead::Hit);
    m.tier_write(TierWrite::Created);
    m.tier_use_record(TierWrite::Created);
    let text = m.encode();
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let registered = include_str!("metrics.rs")
        .matches("registry.register(")
        .count();
    assert_eq!(families, registered, "a family has no series here:\n{text}");
    text
}

/// The names a scrape holds, each with its label names: a `# TYPE` family's samples (a counter's
/// end in `_total`, a histogram's in `_bucket`, `_sum` and `_count`).
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut names = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels: &mut BTreeSet<String> = names.entry(line[..end].to_owned()).or_default();
        if let Some(set) = line[end..]
            .strip_prefix('{')
            .and_then(|s| s.split('}').next())
        {
            labels.extend(
                set.split(',')
                    .filter_map(|pair| Some(pair.split_once('=')?.0.into())),
            );
        }
    }
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = family.split_once(' ').unwrap_or((family, ""));
        let sampled = match kind {
            "counter" => vec![format!("{name}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .map(|s| format!("{name}{s}"))
                .into(),
            _ => vec![name.to_owned()],
        };
        for sample in sampled {
            assert!(
                names.contains_key(&sample),
                "{sample} has no sample in\n{text}"
            );
        }
    }
    names
}

/// Every `hoard_…` name in `text`.
fn names_in(text: &str) -> Vec<&str> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices("hoard_")
        .filter(|(at, _)| !text[..*at].ends_with(ident))
        .map(|(at, _)| {
            let rest = &text[at..];
            &rest[..rest.find(|c| !ident(c)).unwrap_or(rest.len())]
        })
        .collect()
}

/// Label names an expression groups by (`by (a, b)`) or selects on (`{a="x"}`, `{a=~"x"}`).
fn labels_in(expr: &str) -> Vec<&str> {
    let grouped = expr
        .split("by (")
        .skip(1)
        .filter_map(|s| s.split(')').next());
    let selected = expr.split('{').skip(1).filter_map(|s| s.split('}').next());
    let mut labels: Vec<&str> = grouped.flat_map(|g| g.split(',')).map(str::trim).collect();
    for set in selected {
        labels.extend(set.split(',').filter_map(|m| m.split(['=', '!']).next()));
    }
    labels
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Every target expression of the dashboard, with its panel's title; rows' panels included.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).unwrap_or_else(|e| panic!("{e}"));
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    let mut stack: Vec<&serde_json::Value> = vec![&dashboard];
    while let Some(node) = stack.pop() {
        for panel in node["panels"].as_array().into_iter().flatten() {
            panels.push(panel);
            stack.push(panel);
        }
    }
    let mut exprs = Vec::new();
    for panel in panels.into_iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no target");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default().to_owned();
            assert!(
                !names_in(&expr).is_empty(),
                "{title:?}: {expr:?} names no metric"
            );
            exprs.push((title.clone(), expr));
        }
    }
    exprs
}

#[test]
fn the_dashboard_asks_only_for_what_hoard_exports() {
    let exported = exported(&every_family());
    for (title, expr) in dashboard_exprs() {
        let names = names_in(&expr);
        for name in &names {
            assert!(
                exported.contains_key(*name),
                "{title:?}: {name} is not exported"
            );
        }
        for label in labels_in(&expr) {
            let carried = names.iter().any(|name| exported[*name].contains(label));
            assert!(
                carried,
                "{title:?}: no metric of {expr:?} has the label {label}"
            );
        }
    }
}

#[test]
fn the_dashboard_covers_the_fleet_the_tier_and_each_listener() {
    let exprs = dashboard_exprs();
    let panel_for = |what: &str, covers: &dyn Fn(&str) -> bool| {
        let found = exprs.iter().any(|(_, expr)| covers(expr));
        assert!(found, "no panel for {what}");
    };
    for (what, name) in [
        ("fleet peers", "hoard_fleet_peers"),
        ("reads from owners", "hoard_fleet_peer_reads_total"),
        ("duplicate fetches", "hoard_fleet_duplicate_fetches_total"),
        ("tier reads", "hoard_tier_reads_total"),
        ("tier uploads", "hoard_tier_writes_total"),
        (
            "credential sources",
            "hoard_credential_source_failures_total",
        ),
    ] {
        panel_for(what, &|expr| names_in(expr).contains(&name));
    }
    for name in ["hoard_requests_total", "hoard_response_bytes_total"] {
        panel_for(&format!("{name} by listener"), &|expr| {
            names_in(expr).contains(&name) && labels_in(expr).contains(&"via")
        });
    }
}

/// `docs/metrics.md` has a table row per exported name, `| `name` | type | `label`, … | … |`,
/// with the labels its samples carry.
#[test]
fn the_metrics_page_lists_every_exported_name_with_its_labels() {
    let exported = exported(&every_family());
    let mut documented = BTreeMap::new();
    for row in DOCS.lines().filter(|l| l.starts_with("| `hoard_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        let labels: BTreeSet<String> = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty() && l != "none")
            .collect();
        assert!(
            documented.insert(name.clone(), labels).is_none(),
            "{name} twice"
        );
    }
    assert_eq!(documented, exported);
    // And the panels it describes are the dashboard's.
    for (title, _) in dashboard_exprs() {
        assert!(
            DOCS.contains(&format!("**{title}**")),
            "{title:?} not in docs/metrics.md"
        );
    }
}
