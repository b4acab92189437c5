//! The `hoard` binary's command line: bad usage and bad config are one line and exit code 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const HOARD: &str = env!("CARGO_BIN_EXE_hoard");

fn serve_with(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(HOARD)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

fn assert_config_error(output: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
}

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
fn a_missing_config_file_is_a_config_error() {
    let output = Command::new(HOARD)
        .args(["serve", "--config", "/nonexistent/hoard.toml"])
        .output()
        .unwrap();
    assert_config_error(&output, "/nonexistent/hoard.toml");
}

#[test]
fn bad_usage_exits_2() {
    let output = Command::new(HOARD).arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_example_config_is_valid_and_complete() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"))
            .unwrap();
    let parsed: hoard::config::FileConfig = toml::from_str(&example).unwrap();
    let config = hoard::config::Config::resolve(parsed, Default::default()).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:3128");
    assert_eq!(config.tag_ttl, std::time::Duration::from_secs(600));
    assert!(config.intercept.matches("registry-1.docker.io"));
}
