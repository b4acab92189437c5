//! hoard as a real process: `hoard serve` started on a config, killed and reaped on drop,
//! signalled by PID; and the binary run once for its exit code and output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::proxy::client_via;

/// The hoard binary cargo built for these tests.
pub(crate) const HOARD_BIN: &str = env!("CARGO_BIN_EXE_hoard");

/// A `hoard serve` process that is killed and reaped when dropped, whatever the test's outcome.
pub(crate) struct HoardProcess {
    pub child: Child,
    pub port: u16,
    /// The config file it was started with.
    pub config: PathBuf,
    /// The folder of its config, holding `ca/` and `cache/`.
    dir: PathBuf,
    log: PathBuf,
}

impl HoardProcess {
    /// Starts `hoard serve --config <config>` (through `sh -c script` when given, with the binary
    /// and the config as `$0` and `$1`), listening on `port`, with its stderr in a new
    /// `hoard-<n>.log` next to the config (so each start's log can be read on its own). Returns
    /// at once: wait with [`HoardProcess::wait_logged`] or [`HoardProcess::wait_healthy`].
    pub(crate) fn spawn(config: &Path, port: u16, script: Option<&str>) -> HoardProcess {
        let dir = config.parent().unwrap().to_owned();
        let mut command = match script {
            Some(script) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script).arg(HOARD_BIN).arg(config);
                c
            }
            None => {
                let mut c = Command::new(HOARD_BIN);
                c.arg("serve").arg("--config").arg(config);
                c
            }
        };
        let log = (0..)
            .map(|n| dir.join(format!("hoard-{n}.log")))
            .find(|p| !p.exists())
            .unwrap();
        let child = command
            .env_remove("HOARD_CONFIG")
            .env("RUST_LOG", "hoard=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        HoardProcess {
            child,
            port,
            config: config.to_owned(),
            dir,
            log,
        }
    }

    /// Waits for the process to exit (at most 10 s) and checks that it drained cleanly: exit
    /// code 0, and its word that every connection and fill finished.
    pub(crate) async fn wait_drained_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "hoard did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "{status}");
        let log = self.log();
        assert!(log.contains("all connections and fills finished"), "{log}");
    }

    /// Waits until hoard logs `line`, failing if it exits or takes over 20 s.
    pub(crate) async fn wait_logged(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(line) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hoard exited while starting ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "hoard did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until hoard answers `/healthz`, which it does only after the store is open.
    pub(crate) async fn wait_healthy(&mut self) {
        let plain = reqwest::Client::builder().no_proxy().build().unwrap();
        let health = format!("{}/healthz", self.url());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hoard exited at start ({status}):\n{}", self.log());
            }
            if let Ok(response) = plain.get(&health).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hoard did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client through this hoard, trusting the CA it wrote.
    pub(crate) fn client(&self) -> reqwest::Client {
        let ca = std::fs::read_to_string(self.dir.join("ca/ca.crt")).unwrap();
        client_via(&self.url(), &ca, false)
    }

    /// A client through this hoard logged in as `user` with `password`, trusting its CA.
    pub(crate) fn client_as(&self, user: &str, password: &str) -> reqwest::Client {
        let ca = std::fs::read_to_string(self.dir.join("ca/ca.crt")).unwrap();
        let login = reqwest::Proxy::all(self.url())
            .unwrap()
            .basic_auth(user, password);
        reqwest::Client::builder()
            .proxy(login)
            .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }

    /// Sends signal `name` (`HUP`, `TERM`) to the process by its PID.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What this start of hoard has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HoardProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `hoard serve --config <file holding config>` in a scratch folder until it exits.
pub(crate) fn serve_with(config: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(HOARD_BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

/// Asserts a refused start: exit code 2 and one line on stderr that contains `needle`.
pub(crate) fn assert_config_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
}

/// `hoard serve` with JSON logs on a port of its own, its config and folders in `dir`, and its
/// stderr read line by line. Killed and reaped when dropped.
pub(crate) struct JsonHoard {
    child: Child,
    pub port: u16,
    /// The lines logged up to `hoard listening`, that one included.
    pub started: Vec<serde_json::Value>,
    /// Its stderr's lines, read by a thread of their own so that a line that never comes fails
    /// the test instead of hanging it.
    lines: std::sync::mpsc::Receiver<String>,
}

impl JsonHoard {
    /// Starts hoard in `dir` (relative `ca` and `cache` folders) with `[proxy] listen` on a free
    /// port, no admin listener unless `toml` (extra lines after `[proxy]`, whole sections
    /// allowed) sets one, and JSON logs. Returns once it has logged `hoard listening`.
    pub(crate) fn start(dir: &Path, toml: &str) -> JsonHoard {
        use std::io::BufRead as _;
        let port = super::free_port();
        let path = dir.join("config.toml");
        let admin = if toml.contains("[admin]") {
            ""
        } else {
            "[admin]\nlisten = \"off\"\n"
        };
        std::fs::write(
            &path,
            format!(
                "[log]\nformat = \"json\"\n{admin}[proxy]\nlisten = \"127.0.0.1:{port}\"\n{toml}\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(HOARD_BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("HOARD_CONFIG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut hoard = JsonHoard {
            child,
            port,
            started: Vec::new(),
            lines,
        };
        while hoard
            .started
            .last()
            .is_none_or(|line| line["fields"]["message"] != "hoard listening")
        {
            let line = hoard.next_line();
            hoard.started.push(line);
        }
        hoard
    }

    /// The next log line, parsed; fails if none comes within 20 s.
    pub(crate) fn next_line(&mut self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("hoard logged no further line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Sends `request` (which asks for `Connection: close`) to the proxy port; the whole answer,
    /// its access-log line and the lines logged before it.
    pub(crate) fn ask(
        &mut self,
        request: &[u8],
    ) -> (String, serde_json::Value, Vec<serde_json::Value>) {
        use std::io::{Read as _, Write as _};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        tcp.write_all(request).unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        let mut before = Vec::new();
        loop {
            let line = self.next_line();
            if line["target"] == "hoard::log" {
                return (answer, line, before);
            }
            before.push(line);
        }
    }
}

impl Drop for JsonHoard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
