//! hoard, the program under test, started as a binary; and skopeo pulling through it, by its
//! proxy port or its mirror listener.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::HOARD_BIN;

use super::{
    Context as _, PULL_TIMEOUT, Pki, Pushed, REGISTRY_HOST, REPOSITORY, Registry, Result, Route,
    START_TIMEOUT, Scene, TAG_TTL, Tools, accepts, fail, free_port, json_string, path_str, sha256,
    skopeo, wait_for,
};

/// A running hoard.
pub(crate) struct Hoard {
    /// Its process name in the scene (for [`Scene::log`]).
    pub name: String,
    /// `http://127.0.0.1:<port>`, the value for `HTTPS_PROXY`.
    pub proxy_url: String,
    /// hoard's CA certificate (written by hoard at start).
    pub ca_crt: PathBuf,
    /// A folder holding only a copy of hoard's `ca.crt` (skopeo's `--src-cert-dir`).
    pub ca_cert_dir: PathBuf,
    /// The port of the mirror listener, when [`HoardOptions::mirror`] asked for one.
    pub mirror_port: Option<u16>,
    /// Its config file (`hoard ca fingerprint -c`).
    pub config: PathBuf,
}

/// Process name of hoard in the scene.
pub(crate) const HOARD_PROC: &str = "hoard";

/// What varies between the hoards of the tests.
pub(crate) struct HoardOptions {
    /// Process name, also the name of its folder in the scene (so one scene can run several).
    pub name: String,
    /// More `upstream.resolve` entries: host name to a loopback port.
    pub resolve: Vec<(String, u16)>,
    /// Whether hoard intercepts [`REGISTRY_HOST`]; a parent proxy that only tunnels does not.
    pub intercept: bool,
    /// Whether `upstream.resolve` sends [`REGISTRY_HOST`] to the registry; without it, hoard's
    /// only way there is a parent proxy (`upstream.proxy` in `extra_toml`).
    pub pin_registry: bool,
    /// TOML appended to the config file (after the `[upstream]` table, so `[[upstream.credentials]]`
    /// entries fit here).
    pub extra_toml: String,
    /// With `Some(lines)`, a `[mirror]` table listening on a free loopback port (plain HTTP),
    /// holding these lines too (`registries = [...]`, ...).
    pub mirror: Option<String>,
    /// More lines of the `[cache]` table (`max_size = ...`, `pin = [...]`).
    pub cache_toml: String,
}

impl Default for HoardOptions {
    fn default() -> Self {
        HoardOptions {
            name: HOARD_PROC.to_owned(),
            resolve: Vec::new(),
            intercept: true,
            pin_registry: true,
            extra_toml: String::new(),
            mirror: None,
            cache_toml: String::new(),
        }
    }
}

/// Starts `hoard serve --config FILE` intercepting [`REGISTRY_HOST`], resolved to the registry.
pub(crate) fn start_hoard(scene: &mut Scene, pki: &Pki, registry: &Registry) -> Result<Hoard> {
    start_hoard_with(scene, pki, registry, &HoardOptions::default())
}

/// Like [`start_hoard`], with the [`HoardOptions`].
pub(crate) fn start_hoard_with(
    scene: &mut Scene,
    pki: &Pki,
    registry: &Registry,
    options: &HoardOptions,
) -> Result<Hoard> {
    let name = options.name.as_str();
    let port = free_port();
    let ca_dir = scene.path(&format!("{name}/ca"));
    let cache_dir = scene.path(&format!("{name}/cache"));
    let config = scene.dir(name)?.join("hoard.toml");
    let mut resolve = Vec::new();
    if options.pin_registry {
        resolve.push(format!(
            "\"{REGISTRY_HOST}\" = \"127.0.0.1:{}\"",
            registry.port
        ));
    }
    let intercept = if options.intercept {
        format!("\"{REGISTRY_HOST}\"")
    } else {
        String::new()
    };
    for (host, port) in &options.resolve {
        resolve.push(format!("{} = \"127.0.0.1:{port}\"", json_string(host)));
    }
    let mirror_port = options.mirror.as_ref().map(|_| free_port());
    let mirror = match (&options.mirror, mirror_port) {
        (Some(lines), Some(port)) => format!("[mirror]\nlisten = \"127.0.0.1:{port}\"\n{lines}\n"),
        _ => String::new(),
    };
    fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\n\
             [ca]\ndir = {ca}\n\
             [cache]\ndir = {cache}\ntag_ttl = \"{ttl}s\"\n{cache_toml}\n\
             [intercept]\nhosts = [{intercept}]\n\
             [upstream]\nextra_ca_files = [{extra}]\n\
             resolve = {{ {resolve} }}\n\
             {extra_toml}\n{mirror}",
            ca = json_string(path_str(&ca_dir)?),
            cache = json_string(path_str(&cache_dir)?),
            ttl = TAG_TTL.as_secs(),
            extra = json_string(path_str(&pki.ca_crt)?),
            resolve = resolve.join(", "),
            extra_toml = options.extra_toml,
            cache_toml = options.cache_toml,
        ),
    )
    .context("writing hoard.toml")?;

    let mut command = Command::new(HOARD_BIN);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "hoard=debug,info")
        .env("RUST_BACKTRACE", "1")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy");
    scene.spawn(name, command, Duration::from_secs(5))?;
    let ca_crt = ca_dir.join("ca.crt");
    wait_for("hoard to listen and write ca/ca.crt", START_TIMEOUT, || {
        scene.check_running(name)?;
        Ok(accepts(port)
            && mirror_port.is_none_or(accepts)
            && fs::metadata(&ca_crt).is_ok_and(|m| m.len() > 0))
    })?;

    let ca_cert_dir = scene.dir(&format!("{name}-ca-certs"))?;
    fs::copy(&ca_crt, ca_cert_dir.join("ca.crt")).context("copying hoard's CA")?;
    eprintln!("e2e: {name} listening on 127.0.0.1:{port}");
    if let Some(mirror_port) = mirror_port {
        eprintln!("e2e: {name}'s mirror listening on 127.0.0.1:{mirror_port}");
    }
    Ok(Hoard {
        name: name.to_owned(),
        proxy_url: format!("http://127.0.0.1:{port}"),
        ca_crt,
        ca_cert_dir,
        mirror_port,
        config,
    })
}

impl Hoard {
    /// `127.0.0.1:<port>` of the mirror listener.
    pub(crate) fn mirror_addr(&self) -> Result<String> {
        let port = self
            .mirror_port
            .context(format!("{} was started without [mirror]", self.name))?;
        Ok(format!("127.0.0.1:{port}"))
    }
}

/// How many of `lines` (hoard's access log) are GETs of a blob of [`REPOSITORY`] at `host` that
/// came in `via` its `proxy` or `mirror` listener, logged `cache=<status>`.
pub(crate) fn logged_blob_gets(lines: &[String], via: &str, host: &str, status: &str) -> usize {
    let via = format!(" via={via} ");
    let host = format!(" host={host} ");
    let blobs = format!("/{REPOSITORY}/blobs/sha256:");
    let cache = format!(" cache={status} ");
    lines
        .iter()
        .filter(|l| {
            l.contains(&via)
                && l.contains(&host)
                && l.contains(" method=GET ")
                && l.contains(&blobs)
                && l.contains(&cache)
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// skopeo through hoard.

/// What `skopeo copy docker://gcr.io/... dir:OUT` through hoard produced.
pub(crate) struct Copied {
    /// The digest skopeo recorded with `--digestfile`.
    pub digest: String,
    /// `manifest.json` as written to the `dir:` destination (byte for byte what was served).
    pub manifest: Vec<u8>,
    /// The `dir:` destination.
    pub dir: PathBuf,
}

/// Copies `gcr.io/project/image:<tag>` through hoard into `dir:<scene>/<name>`, verifying TLS
/// against hoard's CA only.
pub(crate) fn skopeo_copy_via_hoard(
    scene: &mut Scene,
    tools: &Tools,
    hoard: &Hoard,
    tag: &str,
    name: &str,
) -> Result<Copied> {
    skopeo_copy_by(scene, tools, &Route::Proxy(hoard), tag, name)
}

/// Copies `gcr.io/project/image:<tag>` into `dir:<scene>/<name>` by `route`.
pub(crate) fn skopeo_copy_by(
    scene: &mut Scene,
    tools: &Tools,
    route: &Route<'_>,
    tag: &str,
    name: &str,
) -> Result<Copied> {
    match try_skopeo_copy_by(scene, tools, route, tag, name)? {
        Ok(copied) => Ok(copied),
        Err(stderr) => fail(format!(
            "skopeo copy via {} ({name}) failed:\n{stderr}",
            route.describe()
        )),
    }
}

/// Like [`skopeo_copy_via_hoard`], but a failing skopeo is an outcome (`Err` with its stderr),
/// not a failed step.
pub(crate) fn try_skopeo_copy_via_hoard(
    scene: &mut Scene,
    tools: &Tools,
    hoard: &Hoard,
    tag: &str,
    name: &str,
) -> Result<std::result::Result<Copied, String>> {
    try_skopeo_copy_by(scene, tools, &Route::Proxy(hoard), tag, name)
}

/// Like [`skopeo_copy_by`], but a failing skopeo is an outcome (`Err` with its stderr), not a
/// failed step.
///
/// Through the mirror, skopeo gets a `registries.conf` of its own whose `gcr.io` entry has the
/// mirror as `<mirror address>/gcr.io`, plain HTTP (`insecure`), and no proxy: should the
/// mirror fail, skopeo's fallback to `gcr.io` itself has nowhere to go.
pub(super) fn try_skopeo_copy_by(
    scene: &mut Scene,
    tools: &Tools,
    route: &Route<'_>,
    tag: &str,
    name: &str,
) -> Result<std::result::Result<Copied, String>> {
    let (mut copy, copied) = skopeo_copy_command(scene, tools, route, tag, name)?;
    let (status, _, stderr) = scene.exec_status(
        &format!("skopeo copy via {} ({name})", route.describe()),
        &mut copy,
        PULL_TIMEOUT,
    )?;
    if !status.success() {
        return Ok(Err(format!("{status}\n{stderr}")));
    }
    copied.read().map(Ok)
}

/// Runs one `skopeo copy` per `(route, name)` at once, and fails unless every one succeeds.
pub(crate) fn skopeo_copies_at_once(
    scene: &mut Scene,
    tools: &Tools,
    copies: &[(Route<'_>, String)],
    tag: &str,
) -> Result<Vec<Copied>> {
    let mut commands = Vec::new();
    let mut outcomes = Vec::new();
    for (route, name) in copies {
        let (command, copied) = skopeo_copy_command(scene, tools, route, tag, name)?;
        commands.push(command);
        outcomes.push(copied);
    }
    let results = scene.exec_all("skopeo copies at once", commands, PULL_TIMEOUT)?;
    for ((status, _, stderr), (_, name)) in results.iter().zip(copies) {
        if !status.success() {
            return fail(format!("skopeo copy {name} failed ({status}):\n{stderr}"));
        }
    }
    outcomes.into_iter().map(PendingCopy::read).collect()
}

/// A `skopeo copy` about to run, and where its result will be.
pub(super) struct PendingCopy {
    dir: PathBuf,
    digest_file: PathBuf,
}

impl PendingCopy {
    fn read(self) -> Result<Copied> {
        Ok(Copied {
            digest: fs::read_to_string(&self.digest_file)
                .context("reading the digest file")?
                .trim()
                .to_owned(),
            manifest: fs::read(self.dir.join("manifest.json")).context("reading manifest.json")?,
            dir: self.dir,
        })
    }
}

/// The `skopeo copy` of `gcr.io/project/image:<tag>` into `dir:<scene>/<name>` by `route`.
fn skopeo_copy_command(
    scene: &mut Scene,
    tools: &Tools,
    route: &Route<'_>,
    tag: &str,
    name: &str,
) -> Result<(Command, PendingCopy)> {
    let dir = scene.path(name);
    let digest_file = scene.path(&format!("{name}.digest"));
    let mut copy = skopeo(scene, tools)?;
    match route {
        Route::Proxy(hoard) => {
            copy.env("HTTPS_PROXY", &hoard.proxy_url)
                .args(["copy", "--src-cert-dir"])
                .arg(&hoard.ca_cert_dir);
        }
        Route::Mirror(hoard) => {
            let conf = scene.path(&format!("{name}.registries.conf"));
            fs::write(
                &conf,
                format!(
                    "[[registry]]\nprefix = \"{REGISTRY_HOST}\"\nlocation = \"{REGISTRY_HOST}\"\n\n\
                     [[registry.mirror]]\nlocation = \"{}/{REGISTRY_HOST}\"\ninsecure = true\n",
                    hoard.mirror_addr()?
                ),
            )
            .context("writing registries.conf")?;
            copy.arg("--registries-conf").arg(&conf).arg("copy");
        }
    }
    copy.arg("--digestfile")
        .arg(&digest_file)
        .arg(format!("docker://{REGISTRY_HOST}/{REPOSITORY}:{tag}"))
        .arg(format!("dir:{}", path_str(&dir)?));
    Ok((copy, PendingCopy { dir, digest_file }))
}

impl Copied {
    /// Fails unless the copy is `pushed` byte for byte: the digest skopeo recorded, the
    /// manifest, and every blob.
    pub(crate) fn check_matches(&self, pushed: &Pushed) -> Result {
        if self.digest != pushed.manifest_digest || self.manifest != pushed.manifest {
            return fail(format!(
                "{}: skopeo copied {} ({} bytes of manifest), the registry holds {} ({} bytes)",
                self.dir.display(),
                self.digest,
                self.manifest.len(),
                pushed.manifest_digest,
                pushed.manifest.len()
            ));
        }
        for digest in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
            let path = self.dir.join(digest.trim_start_matches("sha256:"));
            let blob = fs::read(&path).context(format!("reading {}", path.display()))?;
            if sha256(&blob) != *digest {
                return fail(format!(
                    "blob {digest} in {} is {}",
                    path.display(),
                    sha256(&blob)
                ));
            }
        }
        Ok(())
    }
}
