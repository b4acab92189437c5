//! `source = "helper"`: hoard's account for a registry from a docker credential helper, the
//! protocol `docker login` uses: `docker-credential-<name> get`, found on `PATH`, is given the
//! registry's server URL on stdin and answers `{"ServerURL","Username","Secret"}` on stdout
//! (`amazon-ecr-credential-helper` for ECR, `docker-credential-gcr`, `docker-credential-acr-env`).
//! A helper that takes longer than [`HELPER_TIMEOUT`] is killed. Errors never quote its output.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use crate::config::valid_helper_name;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a helper may take: ECR's asks AWS for a token, a few seconds at most.
const HELPER_TIMEOUT: Duration = Duration::from_secs(15);

/// The most of a helper's answer read.
const MAX_OUTPUT: u64 = 64 << 10;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    username: String,
    secret: String,
}

/// The user name and secret `docker-credential-<helper>` gives for `host`.
pub(super) async fn account(helper: &str, host: &str) -> Result<(String, String), String> {
    if !valid_helper_name(helper) {
        return Err(format!("{helper:?} is not a credential helper's name"));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program} (on PATH?): {e}"))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(host.as_bytes())
                .await
                .map_err(|e| format!("{program}: cannot write the host: {e}"))?;
        }
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(MAX_OUTPUT)
                .read_to_end(&mut out)
                .await
                .map_err(|e| format!("{program}: cannot read its answer: {e}"))?;
        }
        let status = child.wait().await.map_err(|e| format!("{program}: {e}"))?;
        if !status.success() {
            return Err(format!("{program} get failed ({status}) for {host}"));
        }
        let answer: Answer = serde_json::from_slice(&out)
            .map_err(|_| format!("{program} answered no Username and Secret for {host}"))?;
        Ok((answer.username, answer.secret))
    };
    tokio::time::timeout(HELPER_TIMEOUT, run)
        .await
        .map_err(|_| format!("{program} took over {} s", HELPER_TIMEOUT.as_secs()))?
}
