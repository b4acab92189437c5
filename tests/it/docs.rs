//! The documentation is checked, so that it cannot drift from hoard: every fenced block of
//! README.md and docs/*.md says by its info string how it is checked, and is run or parsed
//! here; links between the pages lead to files and headings that exist; config.toml.example
//! names every key hoard's config accepts. docs/development.md ("Checked documentation") is the
//! operator's account of these rules.

mod blocks;
mod config;
mod sandbox;
mod shell;

use std::collections::BTreeMap;
use std::process::Command;

use blocks::{Block, Kind, docs, resolve_link, root, scan};
use sandbox::Sandbox;

use crate::common::HOARD_BIN;

/// Every block of every page.
fn all_blocks() -> Vec<Block> {
    docs().iter().flat_map(|doc| scan(doc).blocks).collect()
}

/// The blocks of one kind; panics if there are none, so that no check passes on nothing.
fn blocks_of(kind: Kind) -> Vec<Block> {
    let found: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|b| b.kind == Some(kind))
        .collect();
    assert!(!found.is_empty(), "no {kind:?} block in the docs");
    found
}

/// Panics with every failure, one per line, if there is any.
fn assert_none(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} {what}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whether a program is on `PATH`.
fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (returns false) when `programs` are missing, or panics under `CI=true`.
fn have(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !on_path(p)).collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("missing programs: {}", missing.join(", "));
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: cannot run with CI=true: {reason}"
    );
    eprintln!("skipped: {test}: {reason}");
    false
}

#[test]
fn every_block_says_how_it_is_checked() {
    let mut failures = Vec::new();
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    for doc in docs() {
        let scan = scan(&doc);
        failures.extend(scan.malformed);
        for block in scan.blocks {
            match block.kind {
                Some(kind) => *counts.entry(kind).or_default() += 1,
                None => failures.push(format!(
                    "{}: info string {:?} is none of sh, sh host, sh cluster, toml, toml other, \
                     json, ini, yaml, text or none",
                    block.at, block.info
                )),
            }
        }
    }
    println!("docs blocks by kind: {counts:?}");
    assert_none("blocks that escape the docs checks", &failures);
    for kind in [Kind::Run, Kind::Host, Kind::Cluster, Kind::HoardToml] {
        assert!(counts.contains_key(&kind), "no {kind:?} block");
    }
}

#[tokio::test]
async fn sh_blocks_run_in_a_sandbox_with_hoard() {
    if !have(
        "sh_blocks_run_in_a_sandbox_with_hoard",
        &["bash", "curl", "openssl"],
    ) {
        return;
    }
    let mut failures = Vec::new();
    let blocks = blocks_of(Kind::Run);
    for block in &blocks {
        let sandbox = Sandbox::start().await;
        let script = sandbox.rewrite(&block.body);
        let output = sandbox.run(&script);
        if !output.status.success() {
            failures.push(format!(
                "{}: {} in {}\n--- script\n{script}--- stdout\n{}--- stderr\n{}--- hoard's log\n{}",
                block.at,
                output.status,
                sandbox.dir().display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                sandbox.log(),
            ));
        }
    }
    println!("ran {} sh blocks", blocks.len());
    assert_none("sh blocks failed", &failures);
}

#[tokio::test]
async fn host_blocks_name_real_commands_and_endpoints() {
    let sandbox = Sandbox::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut failures = Vec::new();
    let (mut commands, mut urls) = (0, 0);
    for block in blocks_of(Kind::Host) {
        let text = sandbox.rewrite(&block.body);
        for args in shell::hoard_commands(&text) {
            commands += 1;
            let output = Command::new(HOARD_BIN)
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            if !output.status.success() {
                failures.push(format!(
                    "{}: `hoard {}` is no command of hoard's: {}",
                    block.at,
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
        for (port, path) in shell::urls(&block.body, &[3128, 9128, 5000]) {
            urls += 1;
            let local = sandbox.port_for(port).unwrap();
            let url = format!("http://127.0.0.1:{local}{path}");
            let status = http.get(&url).send().await.map(|r| r.status());
            if !status.as_ref().is_ok_and(|s| s.is_success()) {
                failures.push(format!(
                    "{}: hoard does not answer :{port}{path} ({status:?})",
                    block.at
                ));
            }
        }
    }
    println!("host blocks: {commands} hoard commands parsed, {urls} URLs fetched");
    assert!(
        commands > 0 && urls > 0,
        "nothing checked in the host blocks"
    );
    assert_none("host blocks name what hoard does not have", &failures);
}

#[test]
fn toml_blocks_are_hoard_configs() {
    let mut failures = Vec::new();
    let blocks = blocks_of(Kind::HoardToml);
    for block in &blocks {
        let dir = tempfile::tempdir().unwrap();
        if let Err(e) = config::resolve_hoard_config(&block.body, dir.path()) {
            failures.push(format!("{}: {e}\n{}", block.at, block.body));
        }
    }
    println!("resolved {} hoard configs", blocks.len());
    assert_none("toml blocks are not hoard configs", &failures);
}

#[test]
fn other_toml_and_json_blocks_parse() {
    let mut failures = Vec::new();
    for block in blocks_of(Kind::OtherToml) {
        match toml::from_str::<toml::Table>(&block.body) {
            Err(e) => failures.push(format!("{}: not TOML: {}", block.at, e.message())),
            Ok(table) => {
                if let Some(ours) = config::HOARD_TABLES
                    .iter()
                    .find(|t| table.contains_key(**t))
                {
                    failures.push(format!(
                        "{}: [{ours}] is hoard's: a hoard config is ```toml",
                        block.at
                    ));
                }
            }
        }
    }
    for block in blocks_of(Kind::Json) {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&block.body) {
            failures.push(format!("{}: not JSON: {e}", block.at));
        }
    }
    assert_none("blocks do not parse", &failures);
}

#[test]
fn cluster_blocks_render_with_kubectl_kustomize() {
    let kubectl = std::env::var("HOARD_KUBECTL")
        .ok()
        .filter(|k| !k.is_empty());
    if kubectl.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot run with CI=true: HOARD_KUBECTL is not set (.ci/run sets it)"
        );
        eprintln!(
            "skipped: rendering the cluster blocks: HOARD_KUBECTL is not set; checking only that \
             their paths exist"
        );
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for block in blocks_of(Kind::Cluster) {
        for words in shell::commands(&block.body) {
            if words.first().map(String::as_str) != Some("kubectl") {
                failures.push(format!(
                    "{}: `{}` is not kubectl",
                    block.at,
                    words.join(" ")
                ));
                continue;
            }
            for pair in words.windows(2) {
                let (flag, path) = (pair[0].as_str(), pair[1].as_str());
                let full = root().join(path);
                match flag {
                    "-k" | "--kustomize" => {
                        checked += 1;
                        let has_kustomization = ["kustomization.yaml", "kustomization.yml"]
                            .iter()
                            .any(|f| full.join(f).is_file());
                        if !has_kustomization {
                            failures
                                .push(format!("{}: missing: {path}/kustomization.yaml", block.at));
                        } else if let Some(kubectl) = &kubectl {
                            let output = Command::new(kubectl)
                                .arg("kustomize")
                                .arg(&full)
                                .output()
                                .unwrap();
                            if !output.status.success() {
                                failures.push(format!(
                                    "{}: kubectl kustomize {path}: {}",
                                    block.at,
                                    String::from_utf8_lossy(&output.stderr).trim()
                                ));
                            }
                        }
                    }
                    "-f" | "--filename" => {
                        checked += 1;
                        if !full.is_file() {
                            failures.push(format!("{}: missing: {path}", block.at));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(checked > 0, "no -k or -f in the cluster blocks");
    assert_none("cluster blocks name what is not there", &failures);
}

#[test]
fn links_between_the_pages_lead_to_files_and_headings() {
    let pages = docs();
    let anchors: BTreeMap<String, _> = pages
        .iter()
        .map(|doc| (doc.path.clone(), scan(doc).anchors))
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for doc in &pages {
        for (at, target) in scan(doc).links {
            let Some((path, anchor)) = resolve_link(&doc.path, &target) else {
                continue;
            };
            checked += 1;
            let key = path.display().to_string();
            if !root().join(&path).exists() {
                failures.push(format!("{at}: {target}: missing: {key}"));
            } else if let Some(anchor) = anchor
                && anchors.get(&key).is_none_or(|a| !a.contains(&anchor))
            {
                failures.push(format!("{at}: {target}: no heading #{anchor} in {key}"));
            }
        }
    }
    println!("checked {checked} links");
    assert!(checked > 0);
    assert_none("links lead nowhere", &failures);
}

#[test]
fn the_example_config_names_every_key_and_no_other() {
    let (accepted, sections) = config::accepted_keys();
    let example = config::example_keys();
    let missing: Vec<String> = accepted
        .iter()
        .filter(|key| !example.contains_key(*key))
        .map(|(table, key)| format!("[{table}] {key}: accepted by hoard, not in the example"))
        .collect();
    let unknown: Vec<String> = example
        .iter()
        .filter(|(key, _)| !accepted.contains(*key))
        .map(|((table, key), line)| {
            format!("config.toml.example:{line}: [{table}] {key}: not a key hoard accepts")
        })
        .collect();
    // As many sections as the file has tables, and a key for every field read.
    assert!(sections.len() >= config::HOARD_TABLES.len(), "{sections:?}");
    assert!(accepted.len() > 50, "{accepted:?}");
    assert_none("keys differ", &[missing, unknown].concat());
}

#[test]
fn the_readme_and_docs_readme_show_the_same_map() {
    let rows = |path: &str, prefix: &str| -> Vec<String> {
        std::fs::read_to_string(root().join(path))
            .unwrap()
            .lines()
            .filter(|line| line.starts_with("| ["))
            .map(|line| line.replace(&format!("]({prefix}"), "]("))
            .collect()
    };
    let readme = rows("README.md", "docs/");
    assert!(readme.len() > 10, "{readme:?}");
    assert_eq!(readme, rows("docs/README.md", ""));
}
