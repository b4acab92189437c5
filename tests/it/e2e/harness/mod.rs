//! Support for the end-to-end tests: real programs (openssl, tar, gzip, the Distribution registry,
//! skopeo, curl, containerd (by `ctr` or by its CRI plugin over gRPC), dockerd and hoard itself)
//! started on loopback inside one temporary folder per test, stopped by PID, with their logs
//! printed when a test fails.
//!
//! Nothing here writes outside the test's folder except what dockerd 20.10 insists on
//! (`/run/docker/plugins`, an empty folder).

mod containerd;
mod cri;
mod docker;
mod hoard;
mod image;
mod node_setup;
mod pki;
mod registry;
mod scene;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub(super) use crate::common::{free_port, sha256};

pub(super) use self::hoard::{
    HOARD_PROC, Hoard, HoardOptions, logged_blob_gets, skopeo_copies_at_once, skopeo_copy_by,
    skopeo_copy_via_hoard, start_hoard, start_hoard_with, try_skopeo_copy_via_hoard,
};
pub(super) use containerd::{Containerd, containerd_config, launch_containerd, start_containerd};
pub(super) use cri::{Cri, PullAuth};
pub(super) use docker::{Docker, start_docker, start_docker_with};
pub(super) use image::{Pushed, build_and_push, skopeo, urandom};
pub(super) use node_setup::{drop_in_environment, run_containerd_setup};
pub(super) use pki::{Pki, make_pki, make_server_cert};
pub(super) use registry::{
    REGISTRY_PROC, Registry, RegistryAuth, registry_blob_gets, start_registry, start_registry_with,
};
pub(super) use scene::Scene;

/// The registry host the tests pull from; hoard intercepts it and resolves it to the test registry.
pub(super) const REGISTRY_HOST: &str = "gcr.io";
/// Docker Hub's registry host: the upstream of dockerd's `registry-mirrors`, resolved by hoard to
/// the test registry like [`REGISTRY_HOST`].
pub(super) const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// Repository the test image is pushed to.
pub(super) const REPOSITORY: &str = "project/image";
/// hoard's `cache.tag_ttl` in the tests; the "registry down" steps wait longer than this so the
/// tag is stale and hoard has to fall back to its cache.
pub(super) const TAG_TTL: Duration = Duration::from_secs(1);

/// The programs a test with skopeo as the client needs.
pub(super) const SKOPEO_TOOLS: [&str; 5] = ["openssl", "tar", "gzip", "docker-registry", "skopeo"];
/// The programs a test with dockerd as the client needs (skopeo still pushes the image).
pub(super) const DOCKERD_TOOLS: [&str; 8] = [
    "openssl",
    "tar",
    "gzip",
    "docker-registry",
    "skopeo",
    "containerd",
    "dockerd",
    "docker",
];

/// The programs a test with a standalone containerd and `ctr` as the client needs.
pub(super) const CTR_TOOLS: [&str; 7] = [
    "openssl",
    "tar",
    "gzip",
    "docker-registry",
    "skopeo",
    "containerd",
    "ctr",
];

pub(super) const START_TIMEOUT: Duration = Duration::from_secs(20);
const PULL_TIMEOUT: Duration = Duration::from_secs(180);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Errors: a message with its context, printed as is (not as an escaped Debug string) by the test
// harness when a test returns Err.

/// A test failure with a readable message.
pub(super) struct Failure(String);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.to_string())
    }
}

/// Result of a test step.
pub(super) type Result<T = ()> = std::result::Result<T, Failure>;

/// Builds a [`Failure`] from a message.
pub(super) fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(Failure(message.into()))
}

/// Adds what was being done to an error (`.context("reading x")?`).
pub(super) trait Context<T> {
    /// Wraps the error (or `None`) with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Failure(format!("{what}: {e}")))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Failure(what.to_string()))
    }
}

/// How a client reaches the registry: only ever through hoard.
pub(super) enum Route<'a> {
    /// hoard's proxy port as `HTTPS_PROXY`, trusting only hoard's CA.
    Proxy(&'a Hoard),
    /// hoard's mirror listener (plain HTTP), configured as the client's registry mirror; no proxy.
    Mirror(&'a Hoard),
}

impl Route<'_> {
    /// "hoard" or "hoard's mirror", for messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Route::Proxy(hoard) => hoard.name.clone(),
            Route::Mirror(hoard) => format!("{}'s mirror", hoard.name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prerequisites and the skipping policy.

/// Absolute paths of the external programs a test uses.
pub(super) struct Tools(HashMap<&'static str, PathBuf>);

impl Tools {
    /// A command for `tool`, with proxy variables removed so nothing leaks in from the caller's
    /// environment (the tests set `HTTPS_PROXY` themselves where they want it).
    pub(super) fn command(&self, tool: &str) -> Command {
        let program = self
            .0
            .get(tool)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(tool));
        let mut command = Command::new(program);
        for var in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            command.env_remove(var);
        }
        command
    }
}

/// Runs `body` in a fresh [`Scene`] if the tools (and root, if asked) are available.
///
/// When something is missing the test prints `skipped: ...` and passes, unless the environment
/// variable `CI` is `true`: then it panics, so CI cannot go green without running it. A machine
/// that would make the test fail for reasons of its own (see [`check_environment`]) panics with
/// one line naming the cause, CI or not.
pub(super) fn run(
    test: &str,
    tools: &[&'static str],
    needs_root: bool,
    body: impl FnOnce(&mut Scene, &Tools) -> Result,
) -> Result {
    let mut missing = Vec::new();
    let mut found = HashMap::new();
    for tool in tools {
        match find_program(tool) {
            Some(path) => {
                found.insert(*tool, path);
            }
            None => missing.push(*tool),
        }
    }
    let mut reasons = Vec::new();
    if !missing.is_empty() {
        reasons.push(format!("missing programs: {}", missing.join(", ")));
    }
    if needs_root && !is_root() {
        reasons.push("needs root (containerd, dockerd)".to_owned());
    }
    if !reasons.is_empty() {
        let reason = reasons.join("; ");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: cannot run with CI=true: {reason}");
        }
        eprintln!("skipped: {test}: {reason}");
        return Ok(());
    }
    let dockerd = tools.contains(&"dockerd");
    check_environment(test, dockerd);
    // Two dockerds (each with its containerd) never ran at once before the tests shared a process;
    // a standalone containerd is a daemon of the same weight.
    let daemon = dockerd || tools.contains(&"containerd");
    let _one_daemon = daemon.then(crate::common::serial::heavy_blocking);

    let mut scene = Scene::new(test)?;
    let outcome = body(&mut scene, &Tools(found));
    if outcome.is_err() {
        scene.dump_logs();
    }
    outcome
}

/// Panics with one line if this machine breaks what the tests assume, so the failure names its
/// cause instead of showing up as a refused connection or a certificate error much later:
/// `/tmp` must take the scene folders (unix sockets in them stay under 108 bytes), loopback
/// must take listeners on port 0, and for dockerd [`REGISTRY_HOST`] must not resolve to loopback
/// (hoard's `upstream.resolve` maps it for hoard only; an `/etc/hosts` entry pointing it at
/// loopback makes dockerd treat it as an insecure registry and skip TLS checks).
pub(super) fn check_environment(test: &str, dockerd: bool) {
    let wrong =
        |cause: String| -> ! { panic!("{test}: wrong environment for the e2e tests: {cause}") };
    if let Err(e) = tempfile::Builder::new()
        .prefix("hoard-e2e-check-")
        .tempdir_in("/tmp")
    {
        wrong(format!("cannot create a folder under /tmp: {e}"));
    }
    if let Err(e) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
        wrong(format!("cannot listen on 127.0.0.1: {e}"));
    }
    if dockerd && let Some(addr) = loopback_address_of(REGISTRY_HOST) {
        wrong(format!(
            "{REGISTRY_HOST} resolves to {} on this machine (/etc/hosts?): dockerd would skip TLS \
             checks for it; remove that mapping",
            addr.ip()
        ));
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // dockerd lives in /usr/sbin on Debian, which a non-login PATH may lack.
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

fn is_root() -> bool {
    // The effective uid is the second field of `Uid:` in /proc/self/status.
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Waits until `check` returns true, failing after `timeout` with `what`.
pub(super) fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return fail(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// A loopback address `host` resolves to on this machine, if any.
fn loopback_address_of(host: &str) -> Option<SocketAddr> {
    (host, 443)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.ip().is_loopback()))
}

/// `text` as a JSON string literal, which is also a TOML basic string and a YAML double-quoted one.
pub(super) fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// `path` as UTF-8, or a failure naming it.
pub(super) fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .context(format!("path is not UTF-8: {}", path.display()))
}
