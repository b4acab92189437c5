//! End-to-end test of a fleet: three hoard processes in one fleet, each with a mirror listener,
//! in front of one Distribution registry; ten skopeo copies of a cold image at once, spread
//! over the three, fetch each blob from the registry once (its access log says so).

use std::fs;

use super::harness;
use harness::{Context as _, HoardOptions, REPOSITORY, Result, Route, START_TIMEOUT, fail};

#[test]
fn ten_skopeo_copies_over_three_nodes_get_each_blob_from_the_registry_once() -> Result {
    harness::run("fleet", &harness::SKOPEO_TOOLS, false, |scene, tools| {
        let pki = harness::make_pki(scene, tools)?;
        let registry = harness::start_registry(scene, tools, &pki)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;

        let secret = scene.path("fleet.secret");
        fs::write(&secret, "e2e-fleet-secret-0123456789abcdef").context("writing the secret")?;
        let ports: Vec<u16> = (0..3).map(|_| harness::free_port()).collect();
        let peers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let mut nodes = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let fleet = format!(
                "[fleet]\npeers = [{}]\nself = \"127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n\
                 secret_file = {}\n",
                peers.join(", "),
                harness::json_string(harness::path_str(&secret)?),
            );
            let options = HoardOptions {
                name: format!("hoard-{i}"),
                mirror: Some(String::new()),
                extra_toml: fleet,
                ..HoardOptions::default()
            };
            nodes.push(harness::start_hoard_with(scene, &pki, &registry, &options)?);
            harness::wait_for("the peer endpoint", START_TIMEOUT, || {
                Ok(harness::accepts(*port))
            })?;
        }

        let copies: Vec<(Route<'_>, String)> = (0..10)
            .map(|c| (Route::Mirror(&nodes[c % 3]), format!("copy-{c}")))
            .collect();
        let copied = harness::skopeo_copies_at_once(scene, tools, &copies, &pushed.tag)?;
        for copy in &copied {
            copy.check_matches(&pushed)?;
        }

        // The registry's access log: one GET per blob, whichever node owned it.
        let log = scene.log(harness::REGISTRY_PROC);
        for digest in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
            let get = format!("\"GET /v2/{REPOSITORY}/blobs/{digest} ");
            let gets = log.lines().filter(|l| l.contains(&get)).count();
            if gets != 1 {
                return fail(format!(
                    "{gets} registry GETs of {digest} for ten copies over three nodes; \
                     the registry's log:\n{log}"
                ));
            }
        }
        // Every node served its clients, and the nodes read from each other.
        let mut peer_reads = 0;
        for i in 0..3 {
            let lines = scene.access_log(&format!("hoard-{i}"));
            if !lines.iter().any(|l| l.contains(" via=mirror ")) {
                return fail(format!("hoard-{i} served no copy"));
            }
            peer_reads += lines.iter().filter(|l| l.contains(" via=fleet ")).count();
        }
        if peer_reads == 0 {
            return fail("no node read from another");
        }
        Ok(())
    })
}
