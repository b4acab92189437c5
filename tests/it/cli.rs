//! The `hoard` binary's command line: bad usage and bad config are one line and exit code 2.

use std::process::Command;

use crate::common::{HOARD_BIN, JsonHoard, assert_config_error, serve_with};

#[test]
fn unknown_config_keys_are_named() {
    let output = serve_with("[cache]\nmax_sise = \"1GiB\"\n");
    assert_config_error(&output, "max_sise");
}

#[test]
fn bad_config_values_say_which_key() {
    assert_config_error(
        &serve_with("[cache]\ntag_ttl = \"soon\"\n"),
        "cache.tag_ttl",
    );
    assert_config_error(
        &serve_with("[cache]\nmax_size = \"9 parsecs\"\n"),
        "cache.max_size",
    );
    assert_config_error(
        &serve_with("[proxy]\nlisten = \"everywhere\"\n"),
        "proxy.listen",
    );
    assert_config_error(
        &serve_with("[intercept]\nhosts = [\"a/b\"]\n"),
        "intercept.hosts",
    );
    assert_config_error(
        &serve_with("[upstream]\nresolve = { \"gcr.io\" = \"x\" }\n"),
        "upstream.resolve",
    );
    assert_config_error(&serve_with("[proxy\n"), "config file");
}

#[test]
fn bad_freshness_rules_are_one_line_naming_the_entry() {
    let rule = |body: &str| serve_with(&format!("[[cache.freshness]]\n{body}\n"));
    for (body, says) in [
        (
            "match = \"gcr.io/a\"\ntag_ttl = \"5m\"\nimmutable = true",
            "cache.freshness: entry 1: \"gcr.io/a\" sets both tag_ttl and immutable",
        ),
        (
            "match = \"gcr.io/a\"",
            "cache.freshness: entry 1: \"gcr.io/a\" sets neither tag_ttl nor immutable",
        ),
        (
            "match = \"gcr.io/a:v 1\"\nimmutable = true",
            "is not a tag pattern",
        ),
        (
            "match = \"gcr.io\"\nimmutable = true",
            "is not registry/repository",
        ),
        ("tag_ttl = \"5m\"", "needs match"),
        ("match = \"gcr.io/a\"\ntag_ttl = \"soon\"", "tag_ttl"),
        ("match = \"gcr.io/a\"\nttl = \"5m\"", "ttl"),
    ] {
        assert_config_error(&rule(body), says);
    }
    // The second entry is named as such.
    let second = serve_with(
        "[[cache.freshness]]\nmatch = \"gcr.io/a\"\nimmutable = true\n\
         [[cache.freshness]]\nmatch = \"gcr.io/*b\"\nimmutable = true\n",
    );
    assert_config_error(&second, "cache.freshness: entry 2:");
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let output = Command::new(HOARD_BIN)
        .args(["serve", "--config", "/nonexistent/hoard.toml"])
        .output()
        .unwrap();
    assert_config_error(&output, "/nonexistent/hoard.toml");
}

#[test]
fn bad_usage_exits_2() {
    let output = Command::new(HOARD_BIN).arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_example_config_is_valid_and_complete() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"))
            .unwrap();
    let parsed: hoard::config::FileConfig = toml::from_str(&example).unwrap();
    let config = hoard::config::Config::resolve(parsed, Default::default()).unwrap();
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:3128");
    assert_eq!(config.cache.tag_ttl, std::time::Duration::from_secs(600));
    assert!(config.intercept.matches("registry-1.docker.io"));
}

#[test]
fn a_wide_listener_without_auth_or_allow_list_refuses_to_start() {
    let output = serve_with("[proxy]\nlisten = \"0.0.0.0:0\"\n");
    assert_config_error(&output, "open proxy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("proxy.auth_file") && stderr.contains("proxy.allow_clients"));
}

#[test]
fn a_wide_listener_starts_when_opened_on_purpose_or_guarded() {
    use std::io::{BufRead, BufReader};
    for proxy in ["open = true", "allow_clients = [\"10.0.0.0/8\"]"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        // No admin listener: its default port may be held by another hoard on this machine.
        std::fs::write(
            &path,
            format!("[proxy]\nlisten = \"0.0.0.0:0\"\n{proxy}\n[admin]\nlisten = \"off\"\n"),
        )
        .unwrap();
        let mut child = Command::new(HOARD_BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let first = BufReader::new(stderr).lines().next().unwrap().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(first.contains("hoard listening"), "{proxy}: {first}");
    }
}

#[test]
fn bad_access_settings_say_which_key() {
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("htpasswd");
    std::fs::write(&weak, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let output = serve_with(&format!("[proxy]\nauth_file = \"{}\"\n", weak.display()));
    assert_config_error(&output, "proxy.auth_file");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("W6ph5"),
        "no hash in the message"
    );
    assert_config_error(
        &serve_with("[proxy]\nallow_clients = [\"10.0.0.0/40\"]\n"),
        "proxy.allow_clients",
    );
    assert_config_error(
        &serve_with("[cache]\nauth_on_hit = \"maybe\"\n"),
        "cache.auth_on_hit",
    );
    assert_config_error(
        &serve_with("[[upstream.credentials]]\nhost = \"gcr.io\"\nusername = \"u\"\n"),
        "password",
    );
    let secret = serve_with(
        "[[upstream.credentials]]\nhost = \"gcr.io\"\nusername = \"u\"\npassword = \"hunter2\"\npassword_file = \"/x\"\n",
    );
    assert_config_error(&secret, "upstream.credentials");
    assert!(!String::from_utf8_lossy(&secret.stderr).contains("hunter2"));
}

/// Starts hoard with JSON logs, sends `request` to its proxy port, and returns the answer, the
/// first log line and the request's log line.
fn json_logged(request: &[u8]) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut hoard = JsonHoard::start(dir.path(), "");
    let (answer, line, _) = hoard.ask(request);
    (answer, hoard.started[0].to_string(), line.to_string())
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (answer, first, line) =
        json_logged(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["fields"]["message"], "hoard listening");
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(line["fields"]["path"], "/healthz");
    assert_eq!(line["fields"]["cache"], "LOCAL");
    assert_config_error(&serve_with("[log]\nformat = \"xml\"\n"), "log.format");
}

#[test]
fn the_access_log_never_shows_a_password_from_the_url() {
    // Refused (port 9 is not in proxy.forward_ports), and logged all the same.
    let (answer, _, line) = json_logged(
        b"GET http://alice:hunter2@127.0.0.1:9/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["fields"]["host"], "127.0.0.1:9", "{line}");
    assert!(
        !line.contains("hunter2") && !line.contains("alice"),
        "{line}"
    );
}

#[test]
fn a_cache_dir_that_is_not_hoards_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    std::fs::write(home.join("tmp/draft.txt"), b"keep me").unwrap();
    std::fs::write(home.join("photo.jpg"), b"keep me too").unwrap();
    for cache_dir in [home.as_path(), std::path::Path::new("/")] {
        let output = serve_with(&format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"off\"\n[cache]\ndir = \"{}\"\n",
            cache_dir.display()
        ));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("not hoard's cache folder"), "{stderr}");
    }
    assert_eq!(
        std::fs::read(home.join("tmp/draft.txt")).unwrap(),
        b"keep me"
    );
    assert!(home.join("photo.jpg").exists());
}

#[test]
fn a_log_line_names_its_connection_and_request_and_says_why_it_failed() {
    let (answer, _, line) = json_logged(
        b"GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    let spans = parsed["spans"].as_array().cloned().unwrap_or_default();
    let span = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} span in {line}"))
    };
    assert!(
        span("conn")["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert_eq!(span("request")["host"], "127.0.0.1:9", "{line}");
    assert_eq!(span("request")["method"], "GET", "{line}");
    assert!(
        parsed["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("proxy.forward_ports")),
        "the one log line of a refused request says why: {line}"
    );
}
