//! End-to-end tests of mirror mode: clients that know hoard only as a registry mirror (plain HTTP
//! on loopback, no proxy, no CA of hoard's) pull through its `[mirror]` listener: containerd by
//! `hosts.toml` (`?ns=gcr.io`), dockerd by `registry-mirrors` (Docker Hub, token auth answered by
//! hoard anonymously) and skopeo by a `registries.conf` mirror (`<mirror>/gcr.io/...`).
//!
//! Same programs, folders and skipping rules as the other e2e tests; see `../README.md`.

mod containerd;
mod dockerd;

use super::harness;
use harness::{
    HOARD_PROC, HoardOptions, REGISTRY_HOST, REPOSITORY, Result, Route, fail, registry_blob_gets,
};

/// hoard's `[mirror]` lines beyond `listen`: gcr.io is in `intercept.hosts` already.
const MIRROR_LINES: &str = "";

#[test]
fn skopeo_copies_through_the_mirror_by_registries_conf_byte_for_byte() -> Result {
    harness::run(
        "skopeo-mirror",
        &harness::SKOPEO_TOOLS,
        false,
        |scene, tools| {
            let pki = harness::make_pki(scene, tools)?;
            let registry = harness::start_registry(scene, tools, &pki)?;
            let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
            let hoard = start_mirror_hoard(scene, &pki, &registry, MIRROR_LINES, Vec::new())?;

            let copied =
                harness::skopeo_copy_by(scene, tools, &Route::Mirror(&hoard), &pushed.tag, "copy")?;
            copied.check_matches(&pushed)?;

            // Every request of the copy came in on the mirror port and went to gcr.io: the
            // manifest by tag, and the config and three layers filled from the registry.
            let lines = requests(scene);
            eprintln!("e2e: hoard's log of the copy:\n{}", lines.join("\n"));
            let proxied: Vec<&String> = lines.iter().filter(|l| !via_mirror(l)).collect();
            if !proxied.is_empty() {
                return fail(format!("requests not via the mirror: {proxied:#?}"));
            }
            let manifest = format!("/{REPOSITORY}/manifests/{}", pushed.tag);
            let manifests = lines
                .iter()
                .filter(|l| {
                    l.contains(&format!(" host={REGISTRY_HOST} "))
                        && l.contains(&manifest)
                        && l.contains(" status=200 ")
                })
                .count();
            assert!(
                manifests >= 1,
                "the manifest came through the mirror:\n{}",
                lines.join("\n")
            );
            let filled = blob_lines(&lines, REGISTRY_HOST, "MISS");
            assert_eq!(filled, 4, "config + 3 layers filled through the mirror");
            Ok(())
        },
    )
}

/// A hoard intercepting gcr.io (resolved to `registry`) with a `[mirror]` listener holding
/// `mirror_lines`, and more `upstream.resolve` entries.
pub(super) fn start_mirror_hoard(
    scene: &mut harness::Scene,
    pki: &harness::Pki,
    registry: &harness::Registry,
    mirror_lines: &str,
    resolve: Vec<(String, u16)>,
) -> Result<harness::Hoard> {
    harness::start_hoard_with(
        scene,
        pki,
        registry,
        &HoardOptions {
            resolve,
            mirror: Some(mirror_lines.to_owned()),
            ..HoardOptions::default()
        },
    )
}

/// hoard's access-log lines so far.
fn requests(scene: &harness::Scene) -> Vec<String> {
    scene.access_log(HOARD_PROC)
}

/// Whether an access-log line is of a request that came in on the mirror listener.
fn via_mirror(line: &str) -> bool {
    line.contains(" via=mirror ")
}

/// Whether an access-log line is of a request answered from hoard's store (or by hoard itself,
/// as `/v2/` is), with no upstream request.
fn from_store(line: &str) -> bool {
    ["cache=HIT ", "cache=STALE ", "cache=LOCAL "]
        .iter()
        .any(|cache| line.contains(cache))
}

/// How many of `lines` are blob GETs through the mirror for `host` with `cache=<status>`.
fn blob_lines(lines: &[String], host: &str, status: &str) -> usize {
    harness::logged_blob_gets(lines, "mirror", host, status)
}
