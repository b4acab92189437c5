//! hoard's registry accounts from their sources (issue 22, item 3): a docker config file, a
//! credential helper on `PATH`, the GCP metadata server; each kept until shortly before it
//! expires, asked again once when the registry refuses it, its failures counted and shown, its
//! secrets never logged.

use super::lending::{ACCOUNT, private_registry};
use super::*;

use std::path::Path;

/// `[[upstream.credentials]]` for the fixture registry with these lines.
fn credentials(lines: &str) -> String {
    format!("[[upstream.credentials]]\nhost = \"{REGISTRY}\"\n{lines}\n")
}

/// Writes `docker-credential-test` into `dir/bin`, a helper that answers the next of `secrets`
/// (the last one over and over) for user [`ACCOUNT`]`.0`, and writes each host it is asked for to
/// `dir/asked`. Returns `dir/bin`, to put on `PATH`.
fn credential_helper(dir: &Path, secrets: &[&str]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = dir.join("asked");
    let cases: String = secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| format!("  {i}) secret={secret} ;;\n"))
        .collect();
    let script = format!(
        "#!/bin/sh\nread -r host || true\necho \"$host\" >> \"{asked}\"\n\
         n=$(($(wc -l < \"{asked}\") - 1))\ncase $n in\n{cases}  *) secret={last} ;;\nesac\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"%s\"}}' \"$host\" \"$secret\"\n",
        asked = asked.display(),
        last = secrets.last().unwrap(),
        user = ACCOUNT.0,
    );
    let helper = bin.join("docker-credential-test");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The hosts the helper of [`credential_helper`] was asked for, in order.
fn helper_asked(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("asked"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_account_can_come_from_a_docker_config_file_read_again_when_rewritten() {
    init();
    let registry = Registry::start().await;
    private_registry(&registry);
    registry.require("team/other", "Bearer tok");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    // Written after hoard starts: the file is read when the account is needed.
    let proxy = Proxy::builder(&registry)
        .upstream(&credentials(&format!(
            "source = \"docker-config\"\nconfig_file = \"{}\"",
            file.display()
        )))
        .start()
        .await;
    let write = |user: &str, password: &str| {
        let auth = hoard::http::basic_header(user, password);
        let auth = auth.strip_prefix("Basic ").unwrap().to_owned();
        std::fs::write(
            &file,
            format!(r#"{{"auths":{{"https://{REGISTRY}/v2/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
    };
    write(ACCOUNT.0, ACCOUNT.1);
    let client = proxy.client(false);
    pulls_private_blob(&client, &registry, "team/private").await;
    let first = hoard::http::basic_header(ACCOUNT.0, ACCOUNT.1);
    assert_eq!(registry.token_logins(), [Some(first)]);
    // A rotated Secret: the registry takes only the new password, and the next token is asked
    // with it.
    registry.forget();
    let rotated = hoard::http::basic_header(ACCOUNT.0, "rotated");
    registry.serve_token_to(&rotated, r#"{"token":"tok","expires_in":300}"#);
    write(ACCOUNT.0, "rotated");
    pulls_private_blob(&client, &registry, "team/other").await;
    assert_eq!(registry.token_logins(), [Some(rotated)]);
}

#[test]
fn a_docker_config_source_takes_no_password_and_unknown_sources_are_refused() {
    let block = |lines: &str| format!("[[upstream.credentials]]\nhost = \"gcr.io\"\n{lines}\n");
    for (lines, needle) in [
        ("source = \"docker-config\"", "needs config_file"),
        (
            "source = \"docker-config\"\nconfig_file = \"/x\"\nusername = \"u\"",
            "no username or password",
        ),
        ("source = \"helper\"\nhelper = \"../x\"", "needs helper"),
        ("source = \"vault\"", "vault"),
        ("password = \"p\"", "give username"),
    ] {
        assert_config_error(&serve_with(&block(lines)), needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_can_come_from_a_docker_credential_helper_on_path_kept_between_tokens() {
    init();
    let registry = Registry::start().await;
    private_registry(&registry);
    registry.require("team/other", "Bearer tok");
    let dir = tempfile::tempdir().unwrap();
    let bin = credential_helper(dir.path(), &[ACCOUNT.1]);
    let config =
        Proxy::builder(&registry).upstream(&credentials("source = \"helper\"\nhelper = \"test\""));
    let script = format!(
        "PATH=\"{}:$PATH\" exec \"$0\" serve --config \"$1\"",
        bin.display()
    );
    let hoard = start_process(config, dir.path(), &script).await;
    pulls_private_blob(&hoard.client(), &registry, "team/private").await;
    pulls_private_blob(&hoard.client(), &registry, "team/other").await;
    assert_eq!(registry.token_logins().len(), 2, "a token per repository");
    assert_eq!(
        helper_asked(dir.path()),
        [REGISTRY],
        "the helper was asked once, for the registry, and its answer kept"
    );
    assert!(
        !hoard.log().contains(ACCOUNT.1),
        "the secret never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_files_cred_helpers_are_asked_and_a_refused_secret_is_asked_again_once() {
    init();
    let registry = Registry::start().await;
    private_registry(&registry);
    let dir = tempfile::tempdir().unwrap();
    // The helper's first secret is stale: the token service refuses it (401).
    let bin = credential_helper(dir.path(), &["stale-secret", ACCOUNT.1]);
    let file = dir.path().join("config.json");
    std::fs::write(
        &file,
        format!(r#"{{"auths":{{}},"credHelpers":{{"{REGISTRY}":"test"}}}}"#),
    )
    .unwrap();
    let config = Proxy::builder(&registry).upstream(&credentials(&format!(
        "source = \"docker-config\"\nconfig_file = \"{}\"",
        file.display()
    )));
    let script = format!(
        "PATH=\"{}:$PATH\" exec \"$0\" serve --config \"$1\"",
        bin.display()
    );
    let hoard = start_process(config, dir.path(), &script).await;
    pulls_private_blob(&hoard.client(), &registry, "team/private").await;
    assert_eq!(helper_asked(dir.path()), [REGISTRY, REGISTRY]);
    let stale = hoard::http::basic_header(ACCOUNT.0, "stale-secret");
    let good = hoard::http::basic_header(ACCOUNT.0, ACCOUNT.1);
    assert_eq!(registry.token_logins(), [Some(stale), Some(good)]);
    let log = hoard.log();
    assert!(!log.contains("stale-secret") && !log.contains(ACCOUNT.1));
}

/// Whether a (lowercased) request head is the GCP metadata server's token request as Google's
/// clients send it.
fn gcp_token_request(head: &str) -> bool {
    head.starts_with("get /computemetadata/v1/instance/service-accounts/default/token")
        && head.contains("metadata-flavor: google")
}

/// A registry whose token service takes the metadata token `token` (tokens lasting
/// `token_expires_in` s), a metadata server giving `tokens` lasting `expires_in` s, and hoard on
/// it as a process.
async fn gcp_hoard(
    dir: &Path,
    token: &str,
    token_expires_in: u64,
    tokens: &'static [&'static str],
    expires_in: u64,
) -> (Registry, HoardProcess, Arc<AtomicUsize>) {
    init();
    let registry = Registry::start().await;
    registry.require("team/private", "Bearer tok");
    registry.require("team/other", "Bearer tok");
    registry.serve_token_to(
        &hoard::http::basic_header("oauth2accesstoken", token),
        &format!(r#"{{"token":"tok","expires_in":{token_expires_in}}}"#),
    );
    let bodies = tokens
        .iter()
        .map(|token| {
            format!(
                r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer"}}"#
            )
        })
        .collect();
    let (metadata, asked) = metadata_server(gcp_token_request, bodies).await;
    let config = Proxy::builder(&registry).upstream(&credentials("source = \"gcp-metadata\""));
    let script = format!("GCE_METADATA_HOST={metadata} exec \"$0\" serve --config \"$1\"");
    let hoard = start_process(config, dir, &script).await;
    (registry, hoard, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gcp_metadata_token_is_kept_until_shortly_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    // An hour's token: kept across the registry's own (1 s) tokens.
    let (registry, hoard, asked) =
        gcp_hoard(dir.path(), "ya29.hour", 1, &["ya29.hour"], 3599).await;
    pulls_private_blob(&hoard.client(), &registry, "team/private").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pulls_private_blob(&hoard.client(), &registry, "team/other").await;
    assert_eq!(registry.token_logins().len(), 2);
    assert_eq!(asked.load(SeqCst), 1, "one token from the metadata server");
    assert!(!hoard.log().contains("ya29.hour"), "never in the log");
    // A 61 s token is kept 1 s (a minute before it expires): asked again after that.
    let dir = tempfile::tempdir().unwrap();
    let (registry, hoard, asked) =
        gcp_hoard(dir.path(), "ya29.short", 1, &["ya29.short"], 61).await;
    pulls_private_blob(&hoard.client(), &registry, "team/private").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pulls_private_blob(&hoard.client(), &registry, "team/other").await;
    assert_eq!(asked.load(SeqCst), 2, "asked again before it expired");
    assert!(!hoard.log().contains("ya29.short"), "never in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcp_token_the_registry_refuses_is_asked_for_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, hoard, asked) =
        gcp_hoard(dir.path(), "ya29.new", 300, &["ya29.old", "ya29.new"], 3599).await;
    pulls_private_blob(&hoard.client(), &registry, "team/private").await;
    assert_eq!(asked.load(SeqCst), 2, "the refused token replaced at once");
    let log = hoard.log();
    assert!(!log.contains("ya29.old") && !log.contains("ya29.new"));
}

#[tokio::test]
async fn a_failing_source_is_counted_and_shown_on_the_status_page() {
    init();
    let registry = Registry::start().await;
    private_registry(&registry);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let proxy = Proxy::builder(&registry)
        .upstream(&credentials(&format!(
            "source = \"docker-config\"\nconfig_file = \"{}\"",
            missing.display()
        )))
        .start()
        .await;
    let digest = registry.add_blob(fresh_blob(BLOB_SIZE));
    let got = proxy
        .client(false)
        .get(blob_path("team/private", &digest))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 401, "no account: the registry's own answer");
    let metrics = proxy.admin("/metrics").await;
    let series = format!(
        "hoard_credential_source_failures_total{{host=\"{REGISTRY}\",source=\"docker-config\"}}"
    );
    assert_eq!(sample(&metrics, &series), 1.0, "{metrics}");
    let page = proxy.admin("/").await;
    let accounts = page
        .split("<table id=\"accounts\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no accounts table:\n{page}"));
    assert!(accounts.contains(REGISTRY), "{accounts}");
    assert!(accounts.contains("docker-config"), "{accounts}");
    assert!(
        accounts.contains("failing (1 failures): cannot read"),
        "{accounts}"
    );
}
