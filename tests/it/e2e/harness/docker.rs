//! containerd and dockerd with every path inside the scene, pulling only through hoard.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{
    COMMAND_TIMEOUT, Context as _, Hoard, PULL_TIMEOUT, Result, START_TIMEOUT, Scene, Tools,
    json_string, path_str, wait_for,
};

/// A running dockerd (with its own containerd) whose only way to the registry is hoard.
pub struct Docker {
    host: String,
    cli_config: PathBuf,
}

/// Starts containerd and dockerd with every path inside the scene, `HTTPS_PROXY` pointing at hoard
/// and `SSL_CERT_FILE` holding only hoard's CA.
pub fn start_docker(scene: &mut Scene, tools: &Tools, hoard: &Hoard) -> Result<Docker> {
    let ctd = scene.dir("ctd")?;
    let ctd_sock = ctd.join("containerd.sock");
    let ctd_config = ctd.join("config.toml");
    fs::write(
        &ctd_config,
        format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {sock}\n\
             [ttrpc]\n  address = {ttrpc}\n\
             [debug]\n  address = \"\"\n  level = \"info\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = {opt}\n",
            root = json_string(path_str(&ctd.join("root"))?),
            state = json_string(path_str(&ctd.join("state"))?),
            sock = json_string(path_str(&ctd_sock)?),
            ttrpc = json_string(path_str(&ctd.join("containerd.sock.ttrpc"))?),
            opt = json_string(path_str(&ctd.join("opt"))?),
        ),
    )
    .context("writing containerd's config.toml")?;
    let mut containerd = tools.command("containerd");
    containerd.arg("--config").arg(&ctd_config);
    scene.spawn("containerd", containerd, Duration::from_secs(10))?;
    wait_for("containerd's socket", START_TIMEOUT, || {
        scene.check_running("containerd")?;
        Ok(UnixStream::connect(&ctd_sock).is_ok())
    })?;

    let dk = scene.dir("dk")?;
    let sock = dk.join("docker.sock");
    let daemon_json = dk.join("daemon.json");
    // deprecated-key-path keeps dockerd 20.10 from writing /etc/docker/key.json.
    fs::write(
        &daemon_json,
        format!(
            "{{\"deprecated-key-path\": {}}}\n",
            json_string(path_str(&dk.join("key.json"))?)
        ),
    )
    .context("writing daemon.json")?;
    // Only hoard's CA: a pull can succeed only through hoard's minted certificate.
    let bundle = dk.join("hoard-ca-bundle.crt");
    fs::copy(&hoard.ca_crt, &bundle).context("copying hoard's CA")?;

    let mut dockerd = tools.command("dockerd");
    dockerd
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", &dk)
        .env("HTTPS_PROXY", &hoard.proxy_url)
        .env("SSL_CERT_FILE", &bundle)
        .arg("--config-file")
        .arg(&daemon_json)
        .arg("--data-root")
        .arg(dk.join("data"))
        .arg("--exec-root")
        .arg(dk.join("exec"))
        .arg("--pidfile")
        .arg(dk.join("docker.pid"))
        .arg("--host")
        .arg(format!("unix://{}", path_str(&sock)?))
        .arg("--containerd")
        .arg(&ctd_sock)
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ])
        .arg("--log-level=debug");
    scene.spawn("dockerd", dockerd, Duration::from_secs(20))?;

    let docker = Docker {
        host: format!("unix://{}", path_str(&sock)?),
        cli_config: scene.dir("docker-cli")?,
    };
    wait_for("dockerd's API", START_TIMEOUT, || {
        scene.check_running("dockerd")?;
        if UnixStream::connect(&sock).is_err() {
            return Ok(false);
        }
        let (status, _, _) = scene.exec_status(
            "docker version",
            docker
                .cli(tools)
                .args(["version", "--format", "{{.Server.Version}}"]),
            COMMAND_TIMEOUT,
        )?;
        Ok(status.success())
    })?;
    let driver = scene.exec_text(
        "docker info",
        docker.cli(tools).args(["info", "--format", "{{.Driver}}"]),
    )?;
    eprintln!("e2e: dockerd up, storage driver {}", driver.trim());
    Ok(docker)
}

impl Docker {
    /// The docker CLI talking to this dockerd (and no other configuration).
    pub fn cli(&self, tools: &Tools) -> Command {
        let mut command = tools.command("docker");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.cli_config)
            .env("DOCKER_CONFIG", &self.cli_config)
            .env("DOCKER_HOST", &self.host);
        command
    }

    /// `docker pull <reference>`.
    pub fn pull(&self, scene: &mut Scene, tools: &Tools, reference: &str) -> Result<()> {
        let output = scene.exec(
            &format!("docker pull {reference}"),
            self.cli(tools).args(["pull", reference]),
            PULL_TIMEOUT,
        )?;
        eprintln!(
            "e2e: docker pull {reference}:\n{}",
            String::from_utf8_lossy(&output).trim()
        );
        Ok(())
    }

    /// `docker image inspect`: the image ID and repo digests, or None if there is no such image.
    pub fn inspect(
        &self,
        scene: &mut Scene,
        tools: &Tools,
        reference: &str,
    ) -> Result<Option<(String, Vec<String>)>> {
        let (status, stdout, _) = scene.exec_status(
            &format!("docker image inspect {reference}"),
            self.cli(tools).args(["image", "inspect", reference]),
            COMMAND_TIMEOUT,
        )?;
        if !status.success() {
            return Ok(None);
        }
        let parsed: serde_json::Value = serde_json::from_slice(&stdout)?;
        let image = &parsed[0];
        let id = image["Id"].as_str().context("inspect: no Id")?.to_owned();
        let digests = image["RepoDigests"]
            .as_array()
            .context("inspect: no RepoDigests")?
            .iter()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect();
        Ok(Some((id, digests)))
    }

    /// `docker rmi <reference>`.
    pub fn rmi(&self, scene: &mut Scene, tools: &Tools, reference: &str) -> Result<()> {
        scene.exec_text(
            &format!("docker rmi {reference}"),
            self.cli(tools).args(["rmi", reference]),
        )?;
        Ok(())
    }
}
