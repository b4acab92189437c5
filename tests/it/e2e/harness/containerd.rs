//! containerd with every path inside the scene: under dockerd, or on its own for `ctr`.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{
    COMMAND_TIMEOUT, Context as _, PULL_TIMEOUT, Result, START_TIMEOUT, Scene, Tools, json_string,
    path_str, wait_for,
};

/// A running containerd.
pub(crate) struct Containerd {
    /// Its process name in the scene.
    pub name: String,
    /// Its gRPC socket (`ctr --address`, `dockerd --containerd`).
    pub sock: PathBuf,
}

/// Starts containerd as the process `name`, with root, state, sockets and opt path in the
/// folder `name` of the scene, and the CRI plugin off.
pub(crate) fn start_containerd(scene: &mut Scene, tools: &Tools, name: &str) -> Result<Containerd> {
    let config = scene.dir(name)?.join("config.toml");
    fs::write(&config, containerd_config(scene, name, false)?)
        .context("writing containerd's config.toml")?;
    launch_containerd(scene, tools, name, &config, &[])
}

/// The config.toml of a containerd whose root, state, sockets and opt path are in the folder
/// `name` of the scene. With `cri`, the CRI plugin (the kubelet's way in) is on, its CNI folders
/// are in there too, and its registry section has `config_path = ""`, as `containerd config
/// default` writes it; without, the plugin is off.
pub(crate) fn containerd_config(scene: &Scene, name: &str, cri: bool) -> Result<String> {
    let ctd = scene.dir(name)?;
    let plugins = if cri {
        // The plugin watches conf_dir for a pod network's CNI config, creating the folder if
        // need be, and logs that there is none: image pulls do not need one. Kept in the scene
        // so nothing is created in /etc/cni. The sandbox (pause) image is pulled only for a pod.
        format!(
            concat!(
                "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n",
                "    bin_dir = {bin}\n",
                "    conf_dir = {conf}\n",
                "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n",
                "    config_path = \"\"\n",
            ),
            bin = json_string(path_str(&ctd.join("cni/bin"))?),
            conf = json_string(path_str(&ctd.join("cni/net.d"))?),
        )
    } else {
        String::new()
    };
    let disabled = if cri {
        ""
    } else {
        "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
    };
    Ok(format!(
        "version = 2\n\
         root = {root}\n\
         state = {state}\n\
         {disabled}\
         [grpc]\n  address = {sock}\n\
         [ttrpc]\n  address = {ttrpc}\n\
         [debug]\n  address = \"\"\n  level = \"info\"\n\
         [metrics]\n  address = \"\"\n\
         [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = {opt}\n{plugins}",
        root = json_string(path_str(&ctd.join("root"))?),
        state = json_string(path_str(&ctd.join("state"))?),
        sock = json_string(path_str(&ctd.join("containerd.sock"))?),
        ttrpc = json_string(path_str(&ctd.join("containerd.sock.ttrpc"))?),
        opt = json_string(path_str(&ctd.join("opt"))?),
    ))
}

/// Starts containerd as the process `name` with the config file `config` (one from
/// [`containerd_config`] for the same `name`, perhaps edited) and `env` added to its environment
/// (which has no proxy variables otherwise).
pub(crate) fn launch_containerd(
    scene: &mut Scene,
    tools: &Tools,
    name: &str,
    config: &Path,
    env: &[(String, String)],
) -> Result<Containerd> {
    let sock = scene.dir(name)?.join("containerd.sock");
    let mut containerd = tools.command("containerd");
    containerd.arg("--config").arg(config);
    containerd.envs(env.iter().map(|(var, value)| (var, value)));
    scene.spawn(name, containerd, Duration::from_secs(10))?;
    wait_for("containerd's socket", START_TIMEOUT, || {
        scene.check_running(name)?;
        Ok(UnixStream::connect(&sock).is_ok())
    })?;
    Ok(Containerd {
        name: name.to_owned(),
        sock,
    })
}

impl Containerd {
    /// `ctr` talking to this containerd, in its `default` namespace.
    pub(crate) fn ctr(&self, tools: &Tools) -> Command {
        let mut command = tools.command("ctr");
        command.arg("--address").arg(&self.sock);
        command
    }

    /// `ctr image pull --hosts-dir <hosts_dir> <reference>`: the registry configuration comes
    /// from `<hosts_dir>/<registry>/hosts.toml` only.
    pub(crate) fn pull(
        &self,
        scene: &mut Scene,
        tools: &Tools,
        hosts_dir: &Path,
        reference: &str,
    ) -> Result<()> {
        scene.exec(
            &format!("ctr image pull {reference} ({})", self.name),
            self.ctr(tools)
                .args(["image", "pull", "--hosts-dir"])
                .arg(hosts_dir)
                .arg(reference),
            PULL_TIMEOUT,
        )?;
        eprintln!("e2e: ctr pulled {reference} ({})", self.name);
        Ok(())
    }

    /// The target digest of the image `reference` (`ctr image ls`), or None if there is none.
    pub(crate) fn image_digest(
        &self,
        scene: &mut Scene,
        tools: &Tools,
        reference: &str,
    ) -> Result<Option<String>> {
        let listed = scene.exec_text(
            "ctr image ls",
            self.ctr(tools).args(["image", "ls", "--quiet"]),
        )?;
        if !listed.lines().any(|line| line.trim() == reference) {
            return Ok(None);
        }
        // The columns: REF TYPE DIGEST SIZE PLATFORMS LABELS.
        let table = scene.exec_text("ctr image ls", self.ctr(tools).args(["image", "ls"]))?;
        let digest = table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(reference))
            .and_then(|line| line.split_whitespace().find(|f| f.starts_with("sha256:")))
            .context(format!(
                "no digest for {reference} in ctr image ls:\n{table}"
            ))?;
        Ok(Some(digest.to_owned()))
    }

    /// The digests in the content store of `namespace` (`ctr -n <namespace> content ls`):
    /// `default` is ctr's, `k8s.io` the CRI plugin's.
    pub(crate) fn content(
        &self,
        scene: &mut Scene,
        tools: &Tools,
        namespace: &str,
    ) -> Result<Vec<String>> {
        let listed = scene.exec_text(
            "ctr content ls",
            self.ctr(tools)
                .args(["--namespace", namespace])
                .args(["content", "ls", "--quiet"]),
        )?;
        Ok(listed.lines().map(|l| l.trim().to_owned()).collect())
    }

    /// `ctr image rm --sync`: the image goes, and the garbage collection that frees its content
    /// has run when the command returns.
    pub(crate) fn remove_image(&self, scene: &mut Scene, tools: &Tools, reference: &str) -> Result {
        scene.exec(
            &format!("ctr image rm {reference}"),
            self.ctr(tools).args(["image", "rm", "--sync", reference]),
            COMMAND_TIMEOUT,
        )?;
        Ok(())
    }
}
