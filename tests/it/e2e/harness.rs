//! Support for the end-to-end tests: real programs (openssl, tar, gzip, the Distribution registry,
//! skopeo, containerd, dockerd and hoard itself) started on loopback inside one temporary folder per
//! test, stopped by PID, with their logs printed when a test fails.
//!
//! Nothing here writes outside the test's folder except what dockerd 20.10 insists on
//! (`/run/docker/plugins`, an empty folder).

#![allow(
    dead_code,
    reason = "each test binary that loads this file uses a different part of it"
)]

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The registry host the tests pull from; hoard intercepts it and resolves it to the test registry.
pub const REGISTRY_HOST: &str = "gcr.io";
/// Repository the test image is pushed to.
pub const REPOSITORY: &str = "project/image";
/// hoard's `cache.tag_ttl` in the tests; the "registry down" steps wait longer than this so the
/// tag is stale and hoard has to fall back to its cache.
pub const TAG_TTL: Duration = Duration::from_secs(1);

/// The programs a test with skopeo as the client needs.
pub const SKOPEO_TOOLS: [&str; 5] = ["openssl", "tar", "gzip", "docker-registry", "skopeo"];
/// The programs a test with dockerd as the client needs (skopeo still pushes the image).
pub const DOCKERD_TOOLS: [&str; 8] = [
    "openssl",
    "tar",
    "gzip",
    "docker-registry",
    "skopeo",
    "containerd",
    "dockerd",
    "docker",
];

const START_TIMEOUT: Duration = Duration::from_secs(20);
const PULL_TIMEOUT: Duration = Duration::from_secs(180);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Errors: a message with its context, printed as is (not as an escaped Debug string) by the test
// harness when a test returns Err.

/// A test failure with a readable message.
pub struct Failure(String);

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
pub type Result<T = ()> = std::result::Result<T, Failure>;

/// Builds a [`Failure`] from a message.
pub fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(Failure(message.into()))
}

/// Adds what was being done to an error (`.context("reading x")?`).
pub trait Context<T> {
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

// ---------------------------------------------------------------------------------------------
// Prerequisites and the skipping policy.

/// Absolute paths of the external programs a test uses.
pub struct Tools(HashMap<&'static str, PathBuf>);

impl Tools {
    /// A command for `tool`, with proxy variables removed so nothing leaks in from the caller's
    /// environment (the tests set `HTTPS_PROXY` themselves where they want it).
    pub fn command(&self, tool: &str) -> Command {
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
/// variable `CI` is `true`: then it fails, so CI cannot go green without running it.
pub fn run(
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
        reasons.push("needs root (dockerd)".to_owned());
    }
    if !reasons.is_empty() {
        let reason = reasons.join("; ");
        if std::env::var("CI").as_deref() == Ok("true") {
            return fail(format!("{test}: cannot run with CI=true: {reason}"));
        }
        eprintln!("skipped: {test}: {reason}");
        return Ok(());
    }

    let mut scene = Scene::new(test)?;
    let outcome = body(&mut scene, &Tools(found));
    if outcome.is_err() {
        scene.dump_logs();
    }
    outcome
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
// A scene: one temporary folder, the processes started in it, their logs.

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

/// One test's temporary folder and the long-running processes started in it. Dropping it stops
/// the processes (last started first), unmounts whatever is still mounted below the folder and
/// removes the folder.
pub struct Scene {
    procs: Vec<Proc>,
    logs: PathBuf,
    commands: usize,
    root: tempfile::TempDir,
}

impl Scene {
    fn new(test: &str) -> Result<Scene> {
        // Under /tmp rather than $TMPDIR: unix socket paths must stay under 108 bytes, and
        // dockerd's overlay2 needs a real file system under its data root.
        let root = tempfile::Builder::new()
            .prefix(&format!("hoard-e2e-{}-", &test[..test.len().min(12)]))
            .tempdir_in("/tmp")
            .context("creating the test folder under /tmp")?;
        let logs = root.path().join("logs");
        fs::create_dir(&logs).context("creating the logs folder")?;
        Ok(Scene {
            procs: Vec::new(),
            logs,
            commands: 0,
            root,
        })
    }

    /// A path inside the test folder.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    /// A new folder inside the test folder.
    pub fn dir(&self, relative: &str) -> Result<PathBuf> {
        let dir = self.path(relative);
        fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Starts a long-running process with stdout and stderr in `logs/<name>.log` (appended to, so
    /// a process restarted under the same name keeps the earlier log). `grace` is how long
    /// [`Scene::stop`] waits after SIGTERM before SIGKILL (zero: SIGKILL at once).
    pub fn spawn(&mut self, name: &str, mut command: Command, grace: Duration) -> Result<()> {
        let log = self.logs.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .context(format!("opening {}", log.display()))?;
        let err = out.try_clone().context("cloning a log file handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context(format!("starting {name}: {command:?}"))?;
        eprintln!("e2e: started {name} (pid {})", child.id());
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
            grace,
        });
        Ok(())
    }

    /// Fails if the process `name` has exited.
    pub fn check_running(&mut self, name: &str) -> Result<()> {
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .context(format!("no process named {name}"))?;
        match proc.child.try_wait().context(format!("polling {name}"))? {
            None => Ok(()),
            Some(status) => fail(format!(
                "{name} exited early ({status}); its log:\n{}",
                tail(&proc.log, 40)
            )),
        }
    }

    /// Stops the process `name` by its PID and waits for it.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let index = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .context(format!("no process named {name}"))?;
        let mut proc = self.procs.remove(index);
        terminate(&mut proc);
        Ok(())
    }

    /// Runs a short command to completion (killed after `timeout`); stdout and stderr are kept in
    /// `logs/`. Fails unless it exits with status 0.
    pub fn exec(
        &mut self,
        what: &str,
        command: &mut Command,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let (status, stdout, stderr) = self.exec_status(what, command, timeout)?;
        if !status.success() {
            return fail(format!(
                "{what} failed ({status}): {command:?}\nstderr:\n{stderr}\nstdout:\n{}",
                String::from_utf8_lossy(&stdout)
            ));
        }
        Ok(stdout)
    }

    /// Like [`Scene::exec`] with the default timeout, returning stdout as text.
    pub fn exec_text(&mut self, what: &str, command: &mut Command) -> Result<String> {
        let stdout = self.exec(what, command, COMMAND_TIMEOUT)?;
        String::from_utf8(stdout).context(format!("{what}: stdout is not UTF-8"))
    }

    /// Runs a command to completion and returns its status, stdout and stderr whatever the status.
    pub fn exec_status(
        &mut self,
        what: &str,
        command: &mut Command,
        timeout: Duration,
    ) -> Result<(ExitStatus, Vec<u8>, String)> {
        self.commands += 1;
        let stem = format!("cmd{:02}-{}", self.commands, slug(what));
        let out_path = self.logs.join(format!("{stem}.out"));
        let err_path = self.logs.join(format!("{stem}.err"));
        let out = File::create(&out_path).context("creating a command log")?;
        let err = File::create(&err_path).context("creating a command log")?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context(format!("{what}: starting {command:?}"))?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().context(format!("{what}: waiting"))? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return fail(format!(
                    "{what} did not finish within {timeout:?}: {command:?}\nstderr:\n{}",
                    tail(&err_path, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = fs::read(&out_path).context("reading a command's stdout")?;
        let stderr = String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default()).into_owned();
        Ok((status, stdout, stderr))
    }

    /// What a process started with [`Scene::spawn`] has logged so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(&self.logs) else {
            return;
        };
        // The long-running processes' logs; a failed command's stderr is in its error already.
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        for path in paths {
            eprintln!("===== {} =====\n{}", path.display(), tail(&path, 60));
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        while let Some(mut proc) = self.procs.pop() {
            terminate(&mut proc);
        }
        unmount_below(self.root.path());
    }
}

fn terminate(proc: &mut Proc) {
    if matches!(proc.child.try_wait(), Ok(Some(_))) {
        return;
    }
    if !proc.grace.is_zero() {
        let pid = proc.child.id().to_string();
        let sent = Command::new(find_program("kill").unwrap_or_else(|| "/bin/kill".into()))
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            let deadline = Instant::now() + proc.grace;
            while Instant::now() < deadline {
                if matches!(proc.child.try_wait(), Ok(Some(_))) {
                    eprintln!("e2e: stopped {}", proc.name);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = proc.child.kill();
    let _ = proc.child.wait();
    eprintln!("e2e: killed {}", proc.name);
}

/// Unmounts everything mounted at or below `root` (deepest first). dockerd normally cleans up on
/// SIGTERM; this is for when it was killed.
fn unmount_below(root: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return;
    };
    let root = root.to_string_lossy().into_owned();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(unescape_mount_path)
        .filter(|p| *p == root || p.starts_with(&format!("{root}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    let umount = find_program("umount").unwrap_or_else(|| "/bin/umount".into());
    for point in points {
        let unmounted = Command::new(&umount)
            .arg(&point)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new(&umount).args(["-l", &point]).status();
        }
    }
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", const_hex::encode(&Sha256::digest(bytes)[..]))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding port 0")?;
    Ok(listener.local_addr().context("local_addr")?.port())
}

/// Waits until `check` returns true, failing after `timeout` with `what`.
pub fn wait_for(
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

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Fails if `host` resolves into loopback: dockerd would then treat it as an insecure registry and
/// skip certificate checks, and the test would prove nothing about hoard's certificates.
pub fn ensure_not_loopback(host: &str) -> Result<()> {
    let loopback = (host, 443)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.ip().is_loopback()));
    match loopback {
        Some(addr) => fail(format!(
            "{host} resolves to {addr} on this machine: dockerd would skip TLS checks for it"
        )),
        None => Ok(()),
    }
}

/// `text` as a JSON string literal, which is also a TOML basic string and a YAML double-quoted one.
pub fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// `path` as UTF-8, or a failure naming it.
pub fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .context(format!("path is not UTF-8: {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Test PKI, made by the openssl CLI at test time.

/// The test CA and the upstream registry's certificate (for `gcr.io` and 127.0.0.1).
pub struct Pki {
    /// The test CA certificate (PEM); hoard trusts it through `upstream.extra_ca_files`.
    pub ca_crt: PathBuf,
    /// The test CA's private key, for [`make_server_cert`].
    pub ca_key: PathBuf,
    /// A folder holding only `ca.crt`, for skopeo's `--cert-dir` when talking to the registry.
    pub ca_cert_dir: PathBuf,
    /// The registry's certificate and key.
    pub server_crt: PathBuf,
    /// The registry's private key.
    pub server_key: PathBuf,
}

/// Generates a P-256 CA and a server certificate signed by it.
pub fn make_pki(scene: &mut Scene, tools: &Tools) -> Result<Pki> {
    let dir = scene.dir("pki")?;
    let ca_key = dir.join("test-ca.key");
    let ca_crt = dir.join("test-ca.crt");
    scene.exec_text(
        "openssl make test CA",
        tools
            .command("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=hoard e2e test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt),
    )?;

    // skopeo's cert dirs take *.crt as CAs, and a *.key without a matching *.cert is an error:
    // give it a folder holding nothing but the CA certificate.
    let ca_cert_dir = scene.dir("pki/test-ca-certs")?;
    fs::copy(&ca_crt, ca_cert_dir.join("ca.crt")).context("copying the test CA")?;
    let mut pki = Pki {
        ca_crt,
        ca_key,
        ca_cert_dir,
        server_crt: PathBuf::new(),
        server_key: PathBuf::new(),
    };
    let (server_crt, server_key) = make_server_cert(
        scene,
        tools,
        &pki,
        "server",
        &format!("DNS:{REGISTRY_HOST},IP:127.0.0.1"),
    )?;
    pki.server_crt = server_crt;
    pki.server_key = server_key;
    Ok(pki)
}

/// A P-256 server certificate signed by the test CA for `subject_alt_names` (openssl syntax,
/// `DNS:a,IP:b`), as `pki/<stem>.crt` and `pki/<stem>.key`.
pub fn make_server_cert(
    scene: &mut Scene,
    tools: &Tools,
    pki: &Pki,
    stem: &str,
    subject_alt_names: &str,
) -> Result<(PathBuf, PathBuf)> {
    let dir = scene.dir("pki")?;
    let key = dir.join(format!("{stem}.key"));
    let csr = dir.join(format!("{stem}.csr"));
    let crt = dir.join(format!("{stem}.crt"));
    let ext = dir.join(format!("{stem}.ext"));
    fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName={subject_alt_names}\n"
        ),
    )
    .context("writing the extensions file")?;
    scene.exec_text(
        &format!("openssl make {stem} key"),
        tools
            .command("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", &format!("/CN={stem}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    )?;
    scene.exec_text(
        &format!("openssl sign {stem} cert"),
        tools
            .command("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&pki.ca_crt)
            .arg("-CAkey")
            .arg(&pki.ca_key)
            .arg("-CAserial")
            .arg(dir.join("test-ca.srl"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt),
    )?;
    Ok((crt, key))
}

// ---------------------------------------------------------------------------------------------
// The upstream: the Distribution registry over TLS.

/// A running `docker-registry`.
pub struct Registry {
    /// Its loopback port.
    pub port: u16,
    /// `user:password` for skopeo's `--creds` when the registry checks an htpasswd file.
    pub creds: Option<String>,
}

/// How the registry authenticates its clients.
pub enum RegistryAuth {
    /// Everyone may pull and push.
    None,
    /// HTTP Basic against an htpasswd file holding one bcrypt line for `user`.
    Htpasswd {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Bearer tokens (JWTs) issued by a token server, verified against `rootcertbundle`.
    Token {
        /// The token server's URL, sent in the registry's challenge.
        realm: String,
        /// The registry's service name: the `service` in the challenge and the tokens' `aud`.
        service: String,
        /// The tokens' `iss`.
        issuer: String,
        /// PEM certificates the tokens' signing certificate (`x5c`) must chain to.
        rootcertbundle: PathBuf,
    },
}

/// Process name of the registry in the scene (for [`Scene::stop`]).
pub const REGISTRY_PROC: &str = "registry";

/// Starts `docker-registry serve` with TLS, no auth, storage in the scene.
pub fn start_registry(scene: &mut Scene, tools: &Tools, pki: &Pki) -> Result<Registry> {
    start_registry_with(scene, tools, pki, &RegistryAuth::None)
}

/// Starts `docker-registry serve` with TLS and `auth`, storage in the scene (the same folder every
/// time, so a registry restarted with other settings serves what was pushed before).
pub fn start_registry_with(
    scene: &mut Scene,
    tools: &Tools,
    pki: &Pki,
    auth: &RegistryAuth,
) -> Result<Registry> {
    let port = free_port()?;
    let storage = scene.dir("registry")?;
    let (auth_yaml, creds) = match auth {
        RegistryAuth::None => (String::new(), None),
        RegistryAuth::Htpasswd { user, password } => {
            // Distribution checks it with Go's bcrypt, which takes $2b$ and $2y$ alike; cost 4 is
            // the minimum, enough for a test and fast.
            let hash = bcrypt::hash(password, 4).context("bcrypt")?;
            let htpasswd = scene.path("registry.htpasswd");
            fs::write(&htpasswd, format!("{user}:{hash}\n"))
                .context("writing the htpasswd file")?;
            let yaml = format!(
                "auth:\n  htpasswd:\n    realm: hoard-e2e\n    path: {}\n",
                json_string(path_str(&htpasswd)?)
            );
            (yaml, Some(format!("{user}:{password}")))
        }
        RegistryAuth::Token {
            realm,
            service,
            issuer,
            rootcertbundle,
        } => {
            let yaml = format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                json_string(realm),
                json_string(service),
                json_string(issuer),
                json_string(path_str(rootcertbundle)?),
            );
            (yaml, None)
        }
    };
    let config = scene.path("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {crt}\n    key: {key}\n\
             {auth_yaml}",
            storage = path_str(&storage)?,
            crt = path_str(&pki.server_crt)?,
            key = path_str(&pki.server_key)?,
        ),
    )
    .context("writing registry.yml")?;
    let mut command = tools.command("docker-registry");
    command.arg("serve").arg(&config);
    // REGISTRY_* variables override the file.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(var);
        }
    }
    scene.spawn(REGISTRY_PROC, command, Duration::ZERO)?;
    wait_for("the registry to listen", START_TIMEOUT, || {
        scene.check_running(REGISTRY_PROC)?;
        Ok(accepts(port))
    })?;
    Ok(Registry { port, creds })
}

impl Registry {
    /// `docker://127.0.0.1:<port>/<repo>:<tag>`, the registry's own address.
    pub fn reference(&self, tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{REPOSITORY}:{tag}", self.port)
    }

    /// Whether the registry still accepts connections.
    pub fn is_up(&self) -> bool {
        accepts(self.port)
    }
}

// ---------------------------------------------------------------------------------------------
// The test image: an OCI layout written by hand, pushed as Docker v2 schema 2.

/// What was pushed to the registry.
pub struct Pushed {
    /// The tag.
    pub tag: String,
    /// Digest of the manifest as stored by the registry.
    pub manifest_digest: String,
    /// The manifest bytes as served by the registry.
    pub manifest: Vec<u8>,
    /// Digest of the image config: dockerd's image ID.
    pub config_digest: String,
    /// Digests of the compressed layers.
    pub layer_digests: Vec<String>,
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        "s390x" => "s390x",
        _ => "amd64",
    }
}

/// `len` bytes from /dev/urandom.
pub fn random_bytes(len: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes)
}

/// Writes a three-layer image (random content, so every run is new to every cache) as an OCI
/// layout, pushes it with skopeo as Docker v2 schema 2 and reads back what the registry stored.
pub fn build_and_push(
    scene: &mut Scene,
    tools: &Tools,
    pki: &Pki,
    registry: &Registry,
    tag: &str,
) -> Result<Pushed> {
    let layout = scene.dir("image/layout")?;
    let blobs = scene.dir("image/layout/blobs/sha256")?;
    let work = scene.dir("image/work")?;
    let nonce = const_hex::encode(random_bytes(8)?);

    let store = |bytes: &[u8]| -> Result<(String, usize)> {
        let digest = sha256_digest(bytes);
        let hex = digest.trim_start_matches("sha256:");
        fs::write(blobs.join(hex), bytes).context("writing a blob")?;
        Ok((digest, bytes.len()))
    };

    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    let mut history = Vec::new();
    for i in 1..=3 {
        let root = work.join(format!("layer{i}"));
        let data = root.join(format!("hoard-e2e/layer{i}"));
        fs::create_dir_all(&data).context("creating layer content")?;
        fs::write(
            data.join("random.bin"),
            random_bytes(200 * 1024 + i * 64 * 1024)?,
        )
        .context("writing layer content")?;
        fs::write(
            data.join("hello.txt"),
            format!("layer {i} of test image {nonce}\n"),
        )
        .context("writing layer content")?;
        let tar = work.join(format!("layer{i}.tar"));
        scene.exec_text(
            "tar layer",
            tools
                .command("tar")
                .args(["--owner=0", "--group=0", "--numeric-owner"])
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("hoard-e2e"),
        )?;
        let gz = scene.exec(
            "gzip layer",
            tools.command("gzip").args(["-n", "-c"]).arg(&tar),
            COMMAND_TIMEOUT,
        )?;
        diff_ids.push(sha256_digest(
            &fs::read(&tar).context("reading a layer tar")?,
        ));
        let (digest, size) = store(&gz)?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": size,
        }));
        history.push(serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("hoard e2e layer {i}"),
        }));
    }

    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": docker_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/hoard-e2e/layer1/hello.txt"],
            "Labels": { "hoard.e2e.nonce": nonce },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    }))?;
    let (config_digest, config_size) = store(&config)?;
    let layer_digests = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or_default().to_owned())
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    }))?;
    let (oci_manifest_digest, manifest_size) = store(&manifest)?;
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": oci_manifest_digest,
                "size": manifest_size,
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        }))?,
    )
    .context("writing index.json")?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .context("writing oci-layout")?;

    let digest_file = scene.path("image/pushed.digest");
    let mut push = skopeo(scene, tools)?;
    push.args(["copy", "--format", "v2s2", "--dest-cert-dir"])
        .arg(&pki.ca_cert_dir)
        .arg("--digestfile")
        .arg(&digest_file);
    if let Some(creds) = &registry.creds {
        push.arg("--dest-creds").arg(creds);
    }
    push.arg(format!("oci:{}:{tag}", path_str(&layout)?))
        .arg(registry.reference(tag));
    scene.exec("skopeo push to the registry", &mut push, PULL_TIMEOUT)?;
    let manifest_digest = fs::read_to_string(&digest_file)
        .context("reading the push digest file")?
        .trim()
        .to_owned();

    let mut inspect = skopeo(scene, tools)?;
    inspect
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&pki.ca_cert_dir);
    if let Some(creds) = &registry.creds {
        inspect.arg("--creds").arg(creds);
    }
    inspect.arg(registry.reference(tag));
    let stored = scene.exec(
        "skopeo inspect --raw on the registry",
        &mut inspect,
        COMMAND_TIMEOUT,
    )?;
    if sha256_digest(&stored) != manifest_digest {
        return fail(format!(
            "the registry's manifest hashes to {}, skopeo pushed {manifest_digest}",
            sha256_digest(&stored)
        ));
    }
    eprintln!("e2e: pushed {REPOSITORY}:{tag} = {manifest_digest}");
    Ok(Pushed {
        tag: tag.to_owned(),
        manifest_digest,
        manifest: stored,
        config_digest,
        layer_digests,
    })
}

/// skopeo with the machine's policy, registries.conf and credentials replaced by the scene's own:
/// no registry credentials at all unless a command passes `--creds`.
pub fn skopeo(scene: &Scene, tools: &Tools) -> Result<Command> {
    let conf = scene.path("registries.conf");
    if !conf.exists() {
        fs::write(&conf, "").context("writing an empty registries.conf")?;
    }
    let auth = scene.path("auth.json");
    if !auth.exists() {
        fs::write(&auth, "{}\n").context("writing an empty auth.json")?;
    }
    let tmp = scene.dir("skopeo-tmp")?;
    let home = scene.dir("skopeo-home")?;
    let mut command = tools.command("skopeo");
    command
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .env("REGISTRY_AUTH_FILE", auth)
        // No ~/.docker/config.json or $XDG_RUNTIME_DIR/containers/auth.json of the machine's.
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &home)
        .arg("--insecure-policy")
        .arg("--tmpdir")
        .arg(tmp);
    Ok(command)
}

// ---------------------------------------------------------------------------------------------
// hoard, the program under test.

/// A running hoard.
pub struct Hoard {
    /// Its process name in the scene (for [`Scene::log`]).
    pub name: String,
    /// `http://127.0.0.1:<port>`, the value for `HTTPS_PROXY`.
    pub proxy_url: String,
    /// hoard's CA certificate (written by hoard at start).
    pub ca_crt: PathBuf,
    /// A folder holding only a copy of hoard's `ca.crt` (skopeo's `--src-cert-dir`).
    pub ca_cert_dir: PathBuf,
}

/// Process name of hoard in the scene.
pub const HOARD_PROC: &str = "hoard";

/// What varies between the hoards of the tests.
pub struct HoardOptions {
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
}

impl Default for HoardOptions {
    fn default() -> Self {
        HoardOptions {
            name: HOARD_PROC.to_owned(),
            resolve: Vec::new(),
            intercept: true,
            pin_registry: true,
            extra_toml: String::new(),
        }
    }
}

/// Starts `hoard serve --config FILE` intercepting [`REGISTRY_HOST`], resolved to the registry.
pub fn start_hoard(
    scene: &mut Scene,
    binary: &Path,
    pki: &Pki,
    registry: &Registry,
) -> Result<Hoard> {
    start_hoard_with(scene, binary, pki, registry, &HoardOptions::default())
}

/// Like [`start_hoard`], with the [`HoardOptions`].
pub fn start_hoard_with(
    scene: &mut Scene,
    binary: &Path,
    pki: &Pki,
    registry: &Registry,
    options: &HoardOptions,
) -> Result<Hoard> {
    let name = options.name.as_str();
    let port = free_port()?;
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
    fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\n\
             [ca]\ndir = {ca}\n\
             [cache]\ndir = {cache}\ntag_ttl = \"{ttl}s\"\n\
             [intercept]\nhosts = [{intercept}]\n\
             [upstream]\nextra_ca_files = [{extra}]\n\
             resolve = {{ {resolve} }}\n\
             {extra_toml}",
            ca = json_string(path_str(&ca_dir)?),
            cache = json_string(path_str(&cache_dir)?),
            ttl = TAG_TTL.as_secs(),
            extra = json_string(path_str(&pki.ca_crt)?),
            resolve = resolve.join(", "),
            extra_toml = options.extra_toml,
        ),
    )
    .context("writing hoard.toml")?;

    let mut command = Command::new(binary);
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
        Ok(accepts(port) && fs::metadata(&ca_crt).is_ok_and(|m| m.len() > 0))
    })?;

    let ca_cert_dir = scene.dir(&format!("{name}-ca-certs"))?;
    fs::copy(&ca_crt, ca_cert_dir.join("ca.crt")).context("copying hoard's CA")?;
    eprintln!("e2e: {name} listening on 127.0.0.1:{port}");
    Ok(Hoard {
        name: name.to_owned(),
        proxy_url: format!("http://127.0.0.1:{port}"),
        ca_crt,
        ca_cert_dir,
    })
}

// ---------------------------------------------------------------------------------------------
// skopeo through hoard.

/// What `skopeo copy docker://gcr.io/... dir:OUT` through hoard produced.
pub struct Copied {
    /// The digest skopeo recorded with `--digestfile`.
    pub digest: String,
    /// `manifest.json` as written to the `dir:` destination (byte for byte what was served).
    pub manifest: Vec<u8>,
    /// The `dir:` destination.
    pub dir: PathBuf,
}

/// Copies `gcr.io/project/image:<tag>` through hoard into `dir:<scene>/<name>`, verifying TLS
/// against hoard's CA only.
pub fn skopeo_copy_via_hoard(
    scene: &mut Scene,
    tools: &Tools,
    hoard: &Hoard,
    tag: &str,
    name: &str,
) -> Result<Copied> {
    match try_skopeo_copy_via_hoard(scene, tools, hoard, tag, name)? {
        Ok(copied) => Ok(copied),
        Err(stderr) => fail(format!(
            "skopeo copy via {} ({name}) failed:\n{stderr}",
            hoard.name
        )),
    }
}

/// Like [`skopeo_copy_via_hoard`], but a failing skopeo is an outcome (`Err` with its stderr),
/// not a failed step.
pub fn try_skopeo_copy_via_hoard(
    scene: &mut Scene,
    tools: &Tools,
    hoard: &Hoard,
    tag: &str,
    name: &str,
) -> Result<std::result::Result<Copied, String>> {
    let dir = scene.path(name);
    let digest_file = scene.path(&format!("{name}.digest"));
    let mut copy = skopeo(scene, tools)?;
    copy.env("HTTPS_PROXY", &hoard.proxy_url)
        .args(["copy", "--src-cert-dir"])
        .arg(&hoard.ca_cert_dir)
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(format!("docker://{REGISTRY_HOST}/{REPOSITORY}:{tag}"))
        .arg(format!("dir:{}", path_str(&dir)?));
    let (status, _, stderr) = scene.exec_status(
        &format!("skopeo copy via {} ({name})", hoard.name),
        &mut copy,
        PULL_TIMEOUT,
    )?;
    if !status.success() {
        return Ok(Err(format!("{status}\n{stderr}")));
    }
    Ok(Ok(Copied {
        digest: fs::read_to_string(&digest_file)
            .context("reading the digest file")?
            .trim()
            .to_owned(),
        manifest: fs::read(dir.join("manifest.json")).context("reading manifest.json")?,
        dir,
    }))
}

// ---------------------------------------------------------------------------------------------
// containerd and dockerd.

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
