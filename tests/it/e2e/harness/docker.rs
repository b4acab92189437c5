//! dockerd (with its own containerd) with every path inside the scene, pulling only through hoard.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{
    COMMAND_TIMEOUT, Context as _, Hoard, PULL_TIMEOUT, Pushed, Result, Route, START_TIMEOUT,
    Scene, Tools, fail, path_str, start_containerd, wait_for,
};

/// A running dockerd (with its own containerd) whose only way to the registry is hoard.
pub(crate) struct Docker {
    host: String,
    cli_config: PathBuf,
}

/// Starts containerd and dockerd with every path inside the scene, `HTTPS_PROXY` pointing at hoard
/// and `SSL_CERT_FILE` holding only hoard's CA.
pub(crate) fn start_docker(scene: &mut Scene, tools: &Tools, hoard: &Hoard) -> Result<Docker> {
    start_docker_with(scene, tools, Some(&Route::Proxy(hoard)))
}

/// Starts containerd and dockerd with every path inside the scene, reaching registries by `route`:
/// through the mirror, by `registry-mirrors` in daemon.json and no proxy (for Docker Hub images
/// only; should the mirror fail, dockerd's fallback to Docker Hub itself has nowhere to go).
/// Without a route dockerd reaches no registry at all (for images it is given, `docker import`).
pub(crate) fn start_docker_with(
    scene: &mut Scene,
    tools: &Tools,
    route: Option<&Route<'_>>,
) -> Result<Docker> {
    let containerd = start_containerd(scene, tools, "containerd")?;

    let dk = scene.dir("dk")?;
    let sock = dk.join("docker.sock");
    let daemon_json = dk.join("daemon.json");
    // deprecated-key-path keeps dockerd 20.10 from writing /etc/docker/key.json.
    let mut daemon = serde_json::json!({ "deprecated-key-path": path_str(&dk.join("key.json"))? });
    if let Some(Route::Mirror(hoard)) = route {
        daemon["registry-mirrors"] =
            serde_json::json!([format!("http://{}", hoard.mirror_addr()?)]);
    }
    fs::write(&daemon_json, format!("{daemon}\n")).context("writing daemon.json")?;

    let mut dockerd = tools.command("dockerd");
    dockerd
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", &dk);
    if let Some(Route::Proxy(hoard)) = route {
        // Only hoard's CA: a pull can succeed only through hoard's minted certificate.
        let bundle = dk.join("hoard-ca-bundle.crt");
        fs::copy(&hoard.ca_crt, &bundle).context("copying hoard's CA")?;
        dockerd
            .env("HTTPS_PROXY", &hoard.proxy_url)
            .env("SSL_CERT_FILE", &bundle);
    }
    dockerd
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
        .arg(&containerd.sock)
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
    pub(crate) fn cli(&self, tools: &Tools) -> Command {
        let mut command = tools.command("docker");
        self.environment(&mut command);
        command
    }

    /// Gives `command` (the docker CLI, or a script that runs it) an environment of its own that
    /// points the docker CLI at this dockerd.
    pub(crate) fn environment(&self, command: &mut Command) {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.cli_config)
            .env("DOCKER_CONFIG", &self.cli_config)
            .env("DOCKER_HOST", &self.host);
    }

    /// `docker pull <reference>`.
    pub(crate) fn pull(&self, scene: &mut Scene, tools: &Tools, reference: &str) -> Result<()> {
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
    pub(crate) fn inspect(
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

    /// Fails unless docker has the image `reference` with the pushed config as its ID and
    /// `repo_digest` among its RepoDigests.
    pub(crate) fn expect_image(
        &self,
        scene: &mut Scene,
        tools: &Tools,
        reference: &str,
        pushed: &Pushed,
        repo_digest: &str,
    ) -> Result {
        let Some((id, repo_digests)) = self.inspect(scene, tools, reference)? else {
            return fail(format!("docker has no image {reference} after pulling it"));
        };
        if id != pushed.config_digest {
            return fail(format!(
                "the image ID of {reference} is {id}, the pushed config is {}",
                pushed.config_digest
            ));
        }
        if !repo_digests.iter().any(|d| d == repo_digest) {
            return fail(format!(
                "RepoDigests of {reference} are {repo_digests:?}, expected {repo_digest}"
            ));
        }
        Ok(())
    }

    /// `docker rmi <reference>`.
    pub(crate) fn rmi(&self, scene: &mut Scene, tools: &Tools, reference: &str) -> Result<()> {
        scene.exec_text(
            &format!("docker rmi {reference}"),
            self.cli(tools).args(["rmi", reference]),
        )?;
        Ok(())
    }
}
