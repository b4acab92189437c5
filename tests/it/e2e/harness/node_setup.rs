//! hoard's containerd setup scripts run as the Kubernetes node-setup DaemonSets run them
//! (`contrib/kubernetes/node-setup*.yaml`): fetched from hoard's proxy port with curl, the CA
//! checked against `hoard ca fingerprint` (`--ca-sha256`), run with `--root` against a folder of
//! the scene that stands for the node's file system.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::HOARD_BIN;

use super::{COMMAND_TIMEOUT, Context as _, Hoard, Result, Scene, Tools, fail};

/// The drop-in the proxy flavour writes for containerd's systemd unit, under the node's root.
pub(crate) const PROXY_DROP_IN: &str = "etc/systemd/system/containerd.service.d/http-proxy.conf";

/// Runs hoard's `/setup/containerd<query>` (`""` for hoard as containerd's proxy,
/// `"?mode=mirror"` for its registry mirror) with `--root <node> --ca-sha256 <fingerprint>`;
/// what the script printed.
pub(crate) fn run_containerd_setup(
    scene: &mut Scene,
    tools: &Tools,
    hoard: &Hoard,
    query: &str,
    node: &Path,
) -> Result<String> {
    let fingerprint = scene
        .exec_text(
            "hoard ca fingerprint",
            Command::new(HOARD_BIN)
                .args(["ca", "fingerprint", "-c"])
                .arg(&hoard.config),
        )?
        .trim()
        .to_owned();
    let script = scene.path(&format!(
        "setup-containerd{}.sh",
        query.replace(['?', '='], "-")
    ));
    scene.exec(
        &format!("curl /setup/containerd{query}"),
        tools
            .command("curl")
            .args(["-fsS", "--noproxy", "*", "-o"])
            .arg(&script)
            .arg(format!("{}/setup/containerd{query}", hoard.proxy_url)),
        COMMAND_TIMEOUT,
    )?;
    let said = scene.exec_text(
        &format!("sh setup-containerd{query} --root"),
        Command::new("sh")
            .arg(&script)
            .arg("--root")
            .arg(node)
            .args(["--ca-sha256", &fingerprint])
            .env_remove("HOARD_SETUP_ROOT")
            .env_remove("HOARD_CA_SHA256")
            .env_remove("HOARD_PROXY_USER")
            .env_remove("HOARD_NO_PROXY"),
    )?;
    if !said.contains(&format!("CA fingerprint checked: {fingerprint}")) {
        return fail(format!(
            "the setup script did not check the CA against {fingerprint}:\n{said}"
        ));
    }
    eprintln!(
        "e2e: /setup/containerd{query} --root {}:\n{said}",
        node.display()
    );
    Ok(said)
}

/// The variables of the proxy flavour's systemd drop-in (`Environment="VAR=value"` lines, `%%`
/// undone as systemd does), for containerd's environment.
pub(crate) fn drop_in_environment(node: &Path) -> Result<Vec<(String, String)>> {
    let path = node.join(PROXY_DROP_IN);
    let text = fs::read_to_string(&path).context(format!("reading {}", path.display()))?;
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Environment=\"")?.strip_suffix('"'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(var, value)| (var.to_owned(), value.replace("%%", "%")))
        .collect();
    if !env.iter().any(|(var, _)| var == "HTTPS_PROXY") {
        return fail(format!("no HTTPS_PROXY in {}:\n{text}", path.display()));
    }
    Ok(env)
}
