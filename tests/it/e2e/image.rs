//! The container image, built without a registry: `contrib/image/build-rootfs` makes the
//! Dockerfile's runtime file system with mmdebstrap (its Debian part cached under
//! `~/.cache/hoard-ci/rootfs`), adds the hoard binary cargo built for these tests and imports it
//! into the test's dockerd with the Dockerfile's settings. The container runs as the image says
//! (tini as PID 1, uid 10001, its HEALTHCHECK) with a test config mounted over
//! /etc/hoard/config.toml, and skopeo pulls through it. See `README.md` in this folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::harness;

use harness::{
    Context as _, Docker, Hoard, Pki, Pushed, REGISTRY_HOST, REGISTRY_PROC, REPOSITORY, Result,
    Scene, Tools, fail, path_str,
};

const IMAGE: &str = "hoard:e2e";
const CONTAINER: &str = "hoard-e2e";
/// The scene's process name for the container's log (`logs/hoard-container.log`).
const CONTAINER_LOG: &str = "hoard-container";
/// The port the image's HEALTHCHECK asks (`http://127.0.0.1:3128/healthz`). The container shares
/// the host's network (the test dockerd has no bridge, and every test connection stays on
/// loopback), so this port is the host's.
const PORT: u16 = 3128;
/// The first build of the Debian part downloads and installs ~110 packages.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn image_runs_hoard_under_tini_as_uid_10001_healthy_and_proxies_a_pull() -> Result {
    // dockerd's, mmdebstrap for the rootfs and curl for hoard's CA.
    let needs: Vec<_> = harness::DOCKERD_TOOLS
        .into_iter()
        .chain(["mmdebstrap", "curl"])
        .collect();
    harness::run("image", &needs, true, |scene, tools| {
        let _port = claim_port()?;
        let pki = harness::make_pki(scene, tools)?;
        let registry = harness::start_registry(scene, tools, &pki)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let docker = harness::start_docker_with(scene, tools, None)?;
        let cli = Cli { tools, docker };

        let outcome = exercise(scene, &cli, &pki, registry.port, &pushed);
        // For the log dump on failure, and the access-log checks.
        let log = cli.logs(scene).unwrap_or_default();
        fs::write(scene.path(&format!("logs/{CONTAINER_LOG}.log")), log)?;
        outcome?;
        check_pull_went_through_hoard(scene, &pushed)
    })
}

/// Builds and imports the image, runs it, checks its processes, pulls through it and stops it.
fn exercise(
    scene: &mut Scene,
    cli: &Cli<'_>,
    pki: &Pki,
    registry_port: u16,
    pushed: &Pushed,
) -> Result {
    let rootfs = build_and_import(scene, cli)?;
    check_image_config(scene, cli)?;
    run_container(scene, cli, pki, registry_port)?;
    check_processes(scene, cli)?;
    let hoard = fetch_ca(scene, cli)?;
    let copied = harness::skopeo_copy_via_hoard(scene, cli.tools, &hoard, &pushed.tag, "copy")?;
    copied.check_matches(pushed)?;

    let image_size = cli.run(scene, &["image", "inspect", "--format", "{{.Size}}", IMAGE])?;
    eprintln!(
        "e2e: image {IMAGE}: {} bytes; rootfs tarball {} bytes, of which the hoard binary ({}) {} \
         bytes",
        image_size.trim(),
        rootfs.tarball,
        rootfs.binary.display(),
        rootfs.binary_size,
    );

    // SIGTERM goes to tini, which hands it on: hoard drains and exits 0 (not 137, killed).
    cli.run(scene, &["stop", "--time", "20", CONTAINER])?;
    let exit = cli.run(
        scene,
        &["inspect", "--format", "{{.State.ExitCode}}", CONTAINER],
    )?;
    if exit.trim() != "0" {
        return fail(format!(
            "the container exited {} on docker stop",
            exit.trim()
        ));
    }
    let log = cli.logs(scene)?;
    if !log.contains("all connections and fills finished") {
        return fail(format!("hoard did not drain on docker stop:\n{log}"));
    }
    Ok(())
}

/// The docker CLI of the test's dockerd.
struct Cli<'a> {
    tools: &'a Tools,
    docker: Docker,
}

impl Cli<'_> {
    /// `docker <args>`: its stdout.
    fn run(&self, scene: &mut Scene, args: &[&str]) -> Result<String> {
        self.run_with_stderr(scene, args).map(|(stdout, _)| stdout)
    }

    /// What the container has logged: `docker logs` writes the container's stdout and stderr to
    /// its own.
    fn logs(&self, scene: &mut Scene) -> Result<String> {
        let (stdout, stderr) = self.run_with_stderr(scene, &["logs", CONTAINER])?;
        Ok(stdout + &stderr)
    }

    fn run_with_stderr(&self, scene: &mut Scene, args: &[&str]) -> Result<(String, String)> {
        let what = format!("docker {}", args.join(" "));
        let mut command = self.docker.cli(self.tools);
        command.args(args);
        let (status, stdout, stderr) = scene.exec_status(&what, &mut command, CONTAINER_TIMEOUT)?;
        if !status.success() {
            return fail(format!("{what} failed ({status}):\n{stderr}"));
        }
        Ok((String::from_utf8_lossy(&stdout).into_owned(), stderr))
    }
}

/// What `build-rootfs` made.
struct Rootfs {
    /// The binary in the image: the one cargo built for the tests (a debug build under
    /// `cargo test`).
    binary: PathBuf,
    binary_size: u64,
    /// Size of the tarball imported (the Debian part, the binary and the config).
    tarball: u64,
}

/// Runs `contrib/image/build-rootfs --import` as the documentation says, with the binary under
/// test and the cache in `~/.cache/hoard-ci/rootfs`.
fn build_and_import(scene: &mut Scene, cli: &Cli<'_>) -> Result<Rootfs> {
    let home = std::env::var_os("HOME").context("HOME is not set (the rootfs cache is in it)")?;
    let cache = Path::new(&home).join(".cache/hoard-ci/rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/image/build-rootfs");
    let binary = PathBuf::from(crate::common::HOARD_BIN);
    let tarball = scene.path("rootfs.tar");
    let mut build = std::process::Command::new(&script);
    cli.docker.environment(&mut build);
    // mmdebstrap and its hooks call chroot and the like, which a non-login PATH may lack.
    let path = std::env::var("PATH").unwrap_or_default();
    build.env("PATH", format!("{path}:/usr/local/sbin:/usr/sbin:/sbin"));
    for var in ["HOARD_IMAGE_MIRROR", "HOARD_IMAGE_SECURITY_MIRROR"] {
        if let Some(value) = std::env::var_os(var) {
            build.env(var, value);
        }
    }
    build
        .arg("--cache")
        .arg(&cache)
        .args(["--import", IMAGE])
        .arg(&binary)
        .arg(&tarball);
    let output = scene.exec("contrib/image/build-rootfs", &mut build, BUILD_TIMEOUT)?;
    let output = String::from_utf8_lossy(&output);
    for line in output.lines().filter(|l| l.starts_with("build-rootfs:")) {
        eprintln!("e2e: {line}");
    }
    Ok(Rootfs {
        binary_size: fs::metadata(&binary)?.len(),
        binary,
        tarball: fs::metadata(&tarball)?.len(),
    })
}

/// The imported image carries the Dockerfile's settings (taken from it by `build-rootfs`).
fn check_image_config(scene: &mut Scene, cli: &Cli<'_>) -> Result {
    let config = cli.run(
        scene,
        &["image", "inspect", "--format", "{{json .Config}}", IMAGE],
    )?;
    let config: serde_json::Value = serde_json::from_str(&config)?;
    let expected = serde_json::json!({
        "User": "10001:10001",
        "WorkingDir": "/var/lib/hoard",
        "Entrypoint": ["/usr/bin/tini", "--", "/usr/local/bin/hoard"],
        "Cmd": ["serve"],
        "ExposedPorts": { "3128/tcp": {} },
        "Volumes": { "/var/lib/hoard/ca": {}, "/var/lib/hoard/cache": {} },
    });
    for (key, value) in expected.as_object().context("expected settings")? {
        if config[key] != *value {
            return fail(format!(
                "image config {key} is {}, not {value}",
                config[key]
            ));
        }
    }
    let env = config["Env"].to_string();
    let health = &config["Healthcheck"];
    if !env.contains("\"HOARD_CONFIG=/etc/hoard/config.toml\"")
        || !health["Test"]
            .to_string()
            .contains("\"http://127.0.0.1:3128/healthz\"")
        || health["Interval"] != 30_000_000_000_u64
    {
        return fail(format!("image config Env or Healthcheck: {config}"));
    }
    Ok(())
}

/// Runs the image on the host's network with a test config over the shipped one (listening on
/// loopback only, intercepting gcr.io as it ships, resolving it to the test registry and trusting
/// the test CA), and waits for docker to call it healthy: the image's own check command, run
/// every second instead of every 30 s.
fn run_container(scene: &mut Scene, cli: &Cli<'_>, pki: &Pki, registry_port: u16) -> Result {
    let shipped =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/config.toml"))
            .context("reading contrib/config.toml")?;
    let config = shipped.replace(
        "listen = \"0.0.0.0:3128\"",
        &format!("listen = \"127.0.0.1:{PORT}\""),
    );
    if config == shipped {
        return fail("contrib/config.toml no longer listens on 0.0.0.0:3128");
    }
    let config = format!(
        "{config}\n[upstream]\nextra_ca_files = [\"/etc/hoard/test-ca.crt\"]\n\
         resolve = {{ \"{REGISTRY_HOST}\" = \"127.0.0.1:{registry_port}\" }}\n"
    );
    let config_file = scene.path("container-config.toml");
    fs::write(&config_file, config).context("writing the container's config")?;
    let mounts = [
        format!("{}:/etc/hoard/config.toml:ro", path_str(&config_file)?),
        format!("{}:/etc/hoard/test-ca.crt:ro", path_str(&pki.ca_crt)?),
    ];
    cli.run(
        scene,
        &[
            "run",
            "--detach",
            "--name",
            CONTAINER,
            "--network",
            "host",
            "--health-interval",
            "1s",
            "--volume",
            &mounts[0],
            "--volume",
            &mounts[1],
            IMAGE,
        ],
    )?;
    harness::wait_for("the container to be healthy", CONTAINER_TIMEOUT, || {
        let state = cli.run(
            scene,
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.Health.Status}}",
                CONTAINER,
            ],
        )?;
        match state.trim() {
            "running healthy" => Ok(true),
            "running starting" => Ok(false),
            other => fail(format!("the container is {other}")),
        }
    })?;
    let mounts = cli.run(
        scene,
        &[
            "inspect",
            "--format",
            "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}",
            CONTAINER,
        ],
    )?;
    for mount in ["volume:/var/lib/hoard/ca ", "volume:/var/lib/hoard/cache "] {
        if !mounts.contains(mount) {
            return fail(format!("the container's mounts lack {mount}: {mounts}"));
        }
    }
    Ok(())
}

/// tini is the container's PID 1 and runs `hoard serve` as its only child, both as uid and gid
/// 10001 (read from the host's /proc).
fn check_processes(scene: &mut Scene, cli: &Cli<'_>) -> Result {
    let pid = cli.run(scene, &["inspect", "--format", "{{.State.Pid}}", CONTAINER])?;
    let pid = pid.trim();
    let init = Process::read(pid)?;
    init.expect(
        &["/usr/bin/tini", "--", "/usr/local/bin/hoard", "serve"],
        true,
    )?;
    let children = Process::children_of(pid)?;
    let [hoard] = children.as_slice() else {
        return fail(format!("tini has {} children, not one", children.len()));
    };
    hoard.expect(&["/usr/local/bin/hoard", "serve"], false)?;
    eprintln!(
        "e2e: the container runs {:?} as PID 1 and {:?}, both as uid 10001",
        init.cmdline, hoard.cmdline
    );
    Ok(())
}

/// A process of the container, seen from the host.
struct Process {
    status: String,
    cmdline: Vec<String>,
}

impl Process {
    fn read(pid: &str) -> Result<Process> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .context(format!("reading /proc/{pid}/status"))?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .context(format!("reading /proc/{pid}/cmdline"))?;
        let cmdline = String::from_utf8_lossy(&cmdline)
            .split_terminator('\0')
            .map(str::to_owned)
            .collect();
        Ok(Process { status, cmdline })
    }

    /// The processes whose parent is `pid`.
    fn children_of(pid: &str) -> Result<Vec<Process>> {
        let parent = format!("PPid:\t{pid}\n");
        let mut children = Vec::new();
        for entry in fs::read_dir("/proc").context("listing /proc")?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // Gone already, or not ours to read: not a child of the container's init.
            if let Ok(process) = Process::read(&name)
                && process.status.contains(&parent)
            {
                children.push(process);
            }
        }
        Ok(children)
    }

    /// The value of `field:` in /proc/<pid>/status, split on whitespace.
    fn field(&self, field: &str) -> Vec<&str> {
        self.status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// Fails unless the process runs `cmdline` with every uid and gid 10001, as PID 1 of its
    /// namespace or not.
    fn expect(&self, cmdline: &[&str], pid_1: bool) -> Result {
        if self.cmdline != cmdline {
            return fail(format!("runs {:?}, not {cmdline:?}", self.cmdline));
        }
        for field in ["Uid", "Gid"] {
            let ids = self.field(field);
            if ids.is_empty() || ids.iter().any(|id| *id != "10001") {
                return fail(format!("{cmdline:?} has {field} {ids:?}, not 10001"));
            }
        }
        if (self.field("NSpid").last() == Some(&"1")) != pid_1 {
            return fail(format!(
                "{cmdline:?} has NSpid {:?}: PID 1 of the container should be {}",
                self.field("NSpid"),
                if pid_1 { "it" } else { "tini" }
            ));
        }
        Ok(())
    }
}

/// hoard's CA as clients get it, from `/ca.crt` on the proxy port; it is the one in the CA
/// volume. Returns the hoard to pull through.
fn fetch_ca(scene: &mut Scene, cli: &Cli<'_>) -> Result<Hoard> {
    let ca_cert_dir = scene.dir("container-ca")?;
    let ca_crt = ca_cert_dir.join("ca.crt");
    let url = format!("http://127.0.0.1:{PORT}/ca.crt");
    scene.exec_text(
        "curl hoard's /ca.crt",
        cli.tools
            .command("curl")
            .args(["-fsS", "--noproxy", "*", "-o"])
            .arg(&ca_crt)
            .arg(&url),
    )?;
    let served = fs::read_to_string(&ca_crt).context("reading the fetched CA")?;
    let stored = cli.run(
        scene,
        &["exec", CONTAINER, "cat", "/var/lib/hoard/ca/ca.crt"],
    )?;
    if !served.contains("BEGIN CERTIFICATE") || served != stored {
        return fail(format!(
            "{url} served:\n{served}\nthe CA volume holds:\n{stored}"
        ));
    }
    Ok(Hoard {
        name: CONTAINER.to_owned(),
        proxy_url: format!("http://127.0.0.1:{PORT}"),
        ca_crt,
        ca_cert_dir,
        mirror_port: None,
        // The config the container runs on, as the host sees it.
        config: scene.path("container-config.toml"),
    })
}

/// Each blob skopeo got was filled by the hoard in the container: its access log (`docker logs`)
/// has a 200 with `cache=MISS` for it, and the registry served it.
fn check_pull_went_through_hoard(scene: &mut Scene, pushed: &Pushed) -> Result {
    let lines = scene.access_log(CONTAINER_LOG);
    let registry_log = scene.log(REGISTRY_PROC);
    for digest in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
        let path = format!("/v2/{REPOSITORY}/blobs/{digest}");
        let filled = lines.iter().any(|l| {
            l.contains(&format!(" host={REGISTRY_HOST} "))
                && l.contains(&format!(" path={path} "))
                && l.contains(" status=200 ")
                && l.contains(" cache=MISS ")
        });
        if !filled {
            return fail(format!(
                "no cache=MISS 200 for {path} in the container's access log:\n{}",
                lines.join("\n")
            ));
        }
        if !registry_log.contains(&format!("\"GET {path}")) {
            return fail(format!("the registry's log has no GET {path}"));
        }
    }
    eprintln!("e2e: the container's access log:\n{}", lines.join("\n"));
    Ok(())
}

/// Holds 127.0.0.1:3128 for this test against other test processes on the machine (a file lock
/// in /tmp), and fails at once if something else has it.
fn claim_port() -> Result<fs::File> {
    let lock = fs::File::create(format!("/tmp/hoard-e2e-port-{PORT}.lock"))
        .context("creating the port lock")?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .context("locking the port lock")?;
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", PORT)) {
        return fail(format!(
            "wrong environment for the e2e tests: 127.0.0.1:{PORT} is taken ({e}); the image's \
             HEALTHCHECK asks that port"
        ));
    }
    Ok(lock)
}
