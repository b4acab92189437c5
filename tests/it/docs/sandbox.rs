//! The sandbox the docs' shell blocks see: a temporary folder as working folder and `HOME`, a
//! `hoard serve` started there on free loopback ports (proxy, admin listener, plain mirror), and
//! `hoard` on `PATH`. The addresses the docs write are rewritten to the sandbox's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{HOARD_BIN, HoardProcess, free_port};

/// Fields drop in order: hoard is stopped before its folder is removed.
pub(super) struct Sandbox {
    hoard: HoardProcess,
    dir: tempfile::TempDir,
    bin: tempfile::TempDir,
    config: PathBuf,
    admin: u16,
    mirror: u16,
}

impl Sandbox {
    /// Starts hoard in a new sandbox and waits until it answers.
    pub(super) async fn start() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("hoard-docs-")
            .tempdir()
            .unwrap();
        let (proxy, admin, mirror) = (free_port(), free_port(), free_port());
        let config = dir.path().join("config.toml");
        let root = dir.path().display();
        std::fs::write(
            &config,
            format!(
                "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\n[ca]\ndir = \"{root}/ca\"\n\
                 [cache]\ndir = \"{root}/cache\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [mirror]\nlisten = \"127.0.0.1:{mirror}\"\n"
            ),
        )
        .unwrap();
        // Started in the sandbox, as an operator starts it in its folder.
        let in_dir = r#"cd "$(dirname "$1")" && exec "$0" serve --config "$1""#;
        let mut hoard = HoardProcess::spawn(&config, proxy, Some(in_dir));
        hoard.wait_healthy().await;
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(HOARD_BIN, bin.path().join("hoard")).unwrap();
        Sandbox {
            hoard,
            dir,
            bin,
            config,
            admin,
            mirror,
        }
    }

    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sandbox's port for a port the docs write: 3128 (proxy), 9128 (admin), 5000 (mirror).
    pub(super) fn port_for(&self, documented: u16) -> Option<u16> {
        match documented {
            3128 => Some(self.hoard.port),
            9128 => Some(self.admin),
            5000 => Some(self.mirror),
            _ => None,
        }
    }

    /// A block's text with the documented addresses made the sandbox's, and `cargo run
    /// --release --` made `hoard`.
    pub(super) fn rewrite(&self, text: &str) -> String {
        let proxy = format!("127.0.0.1:{}", self.hoard.port);
        let mirror = format!("127.0.0.1:{}", self.mirror);
        text.replace("cargo run --release --", "hoard")
            .replace("127.0.0.1:3128", &proxy)
            .replace("hoard:3128", &proxy)
            .replace("127.0.0.1:9128", &format!("127.0.0.1:{}", self.admin))
            .replace("127.0.0.1:5000", &mirror)
            .replace("hoard:5000", &mirror)
    }

    /// Runs `script` with `bash -euo pipefail` in the sandbox, in an environment of its own (no
    /// proxy variables of the test's).
    pub(super) fn run(&self, script: &str) -> Output {
        let path = std::env::var("PATH").unwrap_or_default();
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(self.dir())
            .env_clear()
            .env("PATH", format!("{}:{path}", self.bin.path().display()))
            .env("HOME", self.dir())
            .env("HOARD_CONFIG", &self.config)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// What hoard logged so far.
    pub(super) fn log(&self) -> String {
        self.hoard.log()
    }
}
