//! `--ca-sha256` (and `HOARD_CA_SHA256`): every setup script, in both modes, checks the CA it
//! carries against the fingerprint the operator got from `hoard ca fingerprint`, before anything
//! else, `--dry-run` included.

use std::process::Command;

use super::{fetch, save, stdout};
use crate::common::{HOARD_BIN, Registry, init};

/// Runs `script` with `args` and `env`, whatever its exit status.
fn run_any(script: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new("sh")
        .arg(script)
        .args(args)
        .env_remove("HOARD_SETUP_ROOT")
        .env_remove("HOARD_CA_SHA256")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test]
async fn setup_scripts_check_the_ca_fingerprint_before_anything_else() {
    init();
    let registry = Registry::start().await;
    let (hoard, _) = super::mirror::plain_mirror(&registry).await;
    let printed = Command::new(HOARD_BIN)
        .args(["ca", "fingerprint", "-c"])
        .arg(hoard.dir.path().join("config.toml"))
        .output()
        .unwrap();
    let right = String::from_utf8(printed.stdout).unwrap().trim().to_owned();
    let hex = right.strip_prefix("sha256:").unwrap().to_owned();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let work = tempfile::tempdir().unwrap();
    for engine in ["docker", "containerd", "podman"] {
        for mode in ["", "?mode=mirror"] {
            let what = format!("{engine}{mode}");
            let script = save(work.path(), engine, fetch(&hoard, &what, None).await);
            let root = work.path().join(format!("root-{engine}"));
            let root_arg = root.to_str().unwrap();

            // A wrong fingerprint, as flag or env, dry run or not: exit 1, nothing written.
            for (args, env) in [
                (vec!["--ca-sha256", wrong.as_str()], vec![]),
                (vec!["--dry-run"], vec![("HOARD_CA_SHA256", wrong.as_str())]),
                // The flag wins over the env.
                (
                    vec!["--ca-sha256", wrong.as_str()],
                    vec![("HOARD_CA_SHA256", right.as_str())],
                ),
            ] {
                let mut all = args.clone();
                all.extend(["--root", root_arg]);
                let out = run_any(&script, &all, &env);
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{what} {all:?}: {err}");
                assert!(
                    err.contains(&format!("expected {wrong}, got {right}")),
                    "{what}: {err}"
                );
                assert!(stdout(&out).is_empty(), "{what}: {}", stdout(&out));
                assert!(!root.exists(), "{what}: a mismatch wrote files");
            }
            // Malformed: exit 2.
            for bad in ["abc", "sha256:xyz", &"0".repeat(63), &format!("{hex}0")] {
                let out = run_any(
                    &script,
                    &["--dry-run", "--ca-sha256", bad, "--root", root_arg],
                    &[],
                );
                assert_eq!(out.status.code(), Some(2), "{what} {bad}");
                assert!(!root.exists());
            }
            // The right one, in every spelling: the script runs.
            let upper = right.to_uppercase();
            let equals = format!("--ca-sha256={hex}");
            for (args, env) in [
                (vec!["--dry-run", "--ca-sha256", right.as_str()], vec![]),
                (vec!["--dry-run", equals.as_str()], vec![]),
                (vec!["--dry-run", "--ca-sha256", upper.as_str()], vec![]),
                (vec!["--dry-run"], vec![("HOARD_CA_SHA256", hex.as_str())]),
                (vec!["--ca-sha256", right.as_str()], vec![]),
            ] {
                let mut all = args.clone();
                all.extend(["--root", root_arg]);
                let out = run_any(&script, &all, &env);
                assert!(
                    out.status.success(),
                    "{what} {all:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(stdout(&out).contains(&format!("CA fingerprint checked: {right}")));
            }
            assert!(root.exists(), "{what}: the checked run wrote nothing");
            // Without it: as before, with a hint.
            let out = run_any(&script, &["--dry-run", "--root", root_arg], &[]);
            assert!(out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-sha256"));
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
}
