//! The first run, as a newcomer meets it: start-up lines that say where the CA and the cache are
//! and where every listener is; refused CONNECTs in the access log like every other request; and
//! `hoard cache stats` finding a hoard started with `--listen`.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{HOARD_BIN, HoardProcess, JsonHoard, free_port};

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Every line hoard logged before the access line of a `/healthz` asked of it: its start-up.
fn start_up_lines(hoard: &mut JsonHoard) -> Vec<Value> {
    let (answer, _, before) = hoard.ask(HEALTHZ);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    hoard.started.iter().cloned().chain(before).collect()
}

/// The fields of the line whose message starts with `start`.
fn fields(lines: &[Value], start: &str) -> Value {
    lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(start))
        })
        .unwrap_or_else(|| panic!("no {start:?} line in {lines:#?}"))["fields"]
        .clone()
}

/// The answer to `GET path` on a plain HTTP listener at `addr`.
fn http_get(addr: &str, path: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

/// `hoard <args> --config <dir>/config.toml`, run in `dir`; its exit code and stdout.
fn hoard_in(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(HOARD_BIN)
        .args(args)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .current_dir(dir)
        .env_remove("HOARD_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn the_start_up_lines_say_where_the_ca_and_the_cache_are_and_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    // The folders as hoard sees them from its working folder (the temp folder may be a link).
    let real = dir.path().canonicalize().unwrap();
    let toml = "[admin]\nlisten = \"127.0.0.1:0\"\n[mirror]\nlisten = \"127.0.0.1:0\"\n";
    let mut first = JsonHoard::start(dir.path(), toml);
    let lines = start_up_lines(&mut first);
    let (code, printed) = hoard_in(dir.path(), &["ca", "fingerprint"]);
    assert_eq!(code, Some(0));
    let fingerprint = printed.trim_end();
    let hex = fingerprint.strip_prefix("sha256:").unwrap();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{fingerprint}"
    );

    assert_eq!(
        lines[0]["fields"]["message"], "hoard listening",
        "{lines:#?}"
    );
    let listening = fields(&lines, "hoard listening");
    assert_eq!(listening["addr"], format!("127.0.0.1:{}", first.port));
    assert_eq!(listening["ca"], fingerprint);
    let ca = fields(&lines, "CA created: clients must trust this certificate");
    assert_eq!(ca["path"], real.join("ca/ca.crt").display().to_string());
    assert_eq!(ca["fingerprint"], fingerprint);
    let cache = fields(&lines, "cache folder");
    assert_eq!(cache["dir"], real.join("cache").display().to_string());
    assert_eq!(cache["entries"], 0);
    // Each listener's line names where it answers.
    for (listener, path, answer) in [
        ("admin listening", "/healthz", "HTTP/1.1 200"),
        ("registry mirror listening", "/v2/", "HTTP/1.1 "),
    ] {
        let addr = fields(&lines, listener)["addr"]
            .as_str()
            .unwrap()
            .to_owned();
        let addr = addr.strip_prefix("http://").unwrap();
        assert!(http_get(addr, path).starts_with(answer), "{listener}");
    }
    drop(first);

    // The next start loads the same CA and says so.
    let mut second = JsonHoard::start(dir.path(), toml);
    let lines = start_up_lines(&mut second);
    let ca = fields(&lines, "CA loaded");
    assert_eq!(ca["path"], real.join("ca/ca.crt").display().to_string());
    assert_eq!(ca["fingerprint"], fingerprint);
    let created = lines.iter().any(|line| {
        line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("CA created"))
    });
    assert!(!created, "{lines:#?}");
}

#[test]
fn a_refused_connect_has_an_access_log_line_with_its_status_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let mut hoard = JsonHoard::start(
        dir.path(),
        &format!("[upstream]\nresolve = {{ \"gone.test\" = \"127.0.0.1:{closed}\" }}\n"),
    );
    for (target, status, reason) in [
        (
            "127.0.0.1:9",
            403,
            "CONNECT to port 9 is not allowed (proxy.connect_ports)",
        ),
        (
            "127.0.0.1:443",
            403,
            "proxy.allow_private_destinations does not allow",
        ),
        ("gone.test", 400, "CONNECT needs host:port"),
        ("gone.test:443", 502, "cannot connect to gone.test:443"),
    ] {
        let request =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        let (answer, line, _) = hoard.ask(request.as_bytes());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(answer.contains(reason), "{answer}");
        let fields = &line["fields"];
        assert_eq!(fields["message"], "request", "{line}");
        assert_eq!(fields["method"], "CONNECT", "{line}");
        assert_eq!(fields["host"], target, "{line}");
        assert_eq!(fields["status"], status, "{line}");
        assert_eq!(fields["via"], "proxy", "{line}");
        let error = fields["error"].as_str().unwrap();
        assert!(error.contains(reason), "{line}");
        assert!(!error.contains(&closed.to_string()), "{line}");
    }
}

/// A hoard started with `--listen` elsewhere than its config's `proxy.listen` notes its real
/// addresses in the cache folder; `hoard cache stats` finds it there, and a clean exit removes
/// the note.
#[tokio::test]
async fn cache_stats_finds_a_hoard_started_with_listen_by_its_noted_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (configured, port) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{configured}\"\n[admin]\nlisten = \"off\"\n\
             [ca]\ndir = \"{ca}\"\n[cache]\ndir = \"{cache}\"\n",
            ca = dir.path().join("ca").display(),
            cache = dir.path().join("cache").display(),
        ),
    )
    .unwrap();
    let script = format!("exec \"$0\" serve --config \"$1\" --listen 127.0.0.1:{port}");
    let mut hoard = HoardProcess::spawn(&dir.path().join("config.toml"), port, Some(&script));
    hoard.wait_logged("hoard listening").await;
    // Noted once every listener is bound, right after that line.
    let noted = dir.path().join("cache/.hoard-addresses");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !noted.exists() {
        assert!(std::time::Instant::now() < deadline, "{}", hoard.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let note: Value = serde_json::from_str(&std::fs::read_to_string(&noted).unwrap()).unwrap();
    assert_eq!(note["proxy"], format!("127.0.0.1:{port}"));
    assert_eq!(note["pid"], hoard.child.id());
    let stats = |dir: &Path| {
        let (code, stdout) = hoard_in(dir, &["cache", "stats", "--json"]);
        assert_eq!(code, Some(0));
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let found = stats(dir.path());
    assert_eq!(found["running"], true, "{found}");
    assert_eq!(found["proxy"], format!("127.0.0.1:{port}"), "{found}");

    hoard.signal("TERM");
    hoard.wait_drained_exit().await;
    assert!(!noted.exists(), "a clean exit removes the note");
    let stopped = stats(dir.path());
    assert_eq!(stopped["running"], false, "{stopped}");
    assert_eq!(
        stopped["proxy"],
        format!("127.0.0.1:{configured}"),
        "{stopped}"
    );
}
