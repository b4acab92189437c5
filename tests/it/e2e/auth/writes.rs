//! Writes through hoard without credentials: hoard lends its login to pulls only, so an upload, a
//! manifest PUT and a DELETE get the registry's own 401 and change nothing upstream.

use super::*;
use harness::REPOSITORY;

/// The programs of the write test: skopeo's, and curl as the client that writes.
const WRITE_TOOLS: [&str; 6] = [
    "openssl",
    "tar",
    "gzip",
    "docker-registry",
    "skopeo",
    "curl",
];

#[test]
fn anonymous_writes_through_hoard_get_the_registrys_401_and_change_nothing() -> Result {
    harness::run("anon-writes", &WRITE_TOOLS, false, |scene, tools| {
        let password = random_password()?;
        let pki = harness::make_pki(scene, tools)?;
        let registry = start_htpasswd_registry(scene, tools, &pki, &password)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let hoard = start_hoard_with_password(scene, &pki, &registry, &password, Vec::new())?;
        // A pull through hoard: hoard now holds a login for the repository.
        harness::skopeo_copy_via_hoard(scene, tools, &hoard, &pushed.tag, "pulled")?;

        // Anyone who can reach hoard, without credentials, tries to upload a blob, repoint the
        // tag and delete the image.
        let blob = harness::urandom(1000)?;
        let blob_digest = harness::sha256(&blob);
        let blob_file = scene.path("attack.blob");
        std::fs::write(&blob_file, &blob).context("writing the blob")?;
        let mut manifest: serde_json::Value = serde_json::from_slice(&pushed.manifest)?;
        manifest["annotations"] = serde_json::json!({ "hoard.e2e": "repointed" });
        let manifest_file = scene.path("attack.manifest");
        std::fs::write(&manifest_file, serde_json::to_vec(&manifest)?)
            .context("writing the manifest")?;
        let base = format!("https://{REGISTRY_HOST}/v2/{REPOSITORY}");
        let v2s2 = "application/vnd.docker.distribution.manifest.v2+json";

        let upload = curl_via_hoard(
            scene,
            tools,
            &hoard,
            "POST",
            &format!("{base}/blobs/uploads/"),
            None,
        )?;
        let mut outcomes = vec![("upload POST", upload.clone())];
        if upload.0 == 202 {
            // Let the upload go all the way, as an attacker would.
            let location = upload.1.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("location")
                    .then(|| value.trim().to_owned())
            });
            if let Some(location) = location {
                let location = if location.starts_with('/') {
                    format!("https://{REGISTRY_HOST}{location}")
                } else {
                    location
                };
                let separator = if location.contains('?') { '&' } else { '?' };
                let put = curl_via_hoard(
                    scene,
                    tools,
                    &hoard,
                    "PUT",
                    &format!("{location}{separator}digest={blob_digest}"),
                    Some((&blob_file, "application/octet-stream")),
                )?;
                outcomes.push(("upload PUT", put));
            }
        }
        let repoint = curl_via_hoard(
            scene,
            tools,
            &hoard,
            "PUT",
            &format!("{base}/manifests/{}", pushed.tag),
            Some((&manifest_file, v2s2)),
        )?;
        outcomes.push(("manifest PUT", repoint));
        let delete = curl_via_hoard(
            scene,
            tools,
            &hoard,
            "DELETE",
            &format!("{base}/manifests/{}", pushed.manifest_digest),
            None,
        )?;
        outcomes.push(("manifest DELETE", delete));

        // Nothing changed upstream: the tag still names the pushed manifest, the blob is absent.
        let mut inspect = harness::skopeo(scene, tools)?;
        inspect
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(&pki.ca_cert_dir)
            .arg("--creds")
            .arg(format!("{USER}:{password}"))
            .arg(registry.reference(&pushed.tag));
        let (status, stdout, stderr) = scene.exec_status(
            "skopeo inspect --raw on the registry",
            &mut inspect,
            Duration::from_secs(60),
        )?;
        let (blob_status, _) = https_get(
            &pki.ca_crt,
            registry.port,
            &format!("/v2/{REPOSITORY}/blobs/{blob_digest}"),
            Some(&format!("Basic {}", basic(USER, &password))),
        )?;

        for (what, (status, _)) in &outcomes {
            eprintln!("e2e: {what} through hoard without credentials: {status}");
        }
        eprintln!(
            "e2e: upstream afterwards: tag {} ({}), attack blob {blob_status}",
            harness::sha256(&stdout),
            if status.success() { "present" } else { "gone" },
        );
        for (what, (status, head)) in &outcomes {
            assert_eq!(
                *status, 401,
                "{what} through hoard without credentials:\n{head}"
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"hoard-e2e\""),
                "the 401 is the registry's own:\n{head}"
            );
        }
        assert!(status.success(), "the tag is gone upstream:\n{stderr}");
        assert_eq!(
            harness::sha256(&stdout),
            pushed.manifest_digest,
            "the tag moved upstream"
        );
        assert_eq!(blob_status, 404, "the uploaded blob exists upstream");
        assert_log_keeps_secrets(
            scene,
            &hoard.name,
            &[
                ("password", password.as_str()),
                ("Basic credentials", &basic(USER, &password)),
            ],
        );
        Ok(())
    })
}

/// `curl -X <method> <url>` through hoard with no credentials, trusting hoard's CA only, with
/// `body` (a file and its content type) if given: the status and the response head.
fn curl_via_hoard(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    hoard: &harness::Hoard,
    method: &str,
    url: &str,
    body: Option<(&Path, &str)>,
) -> Result<(u16, String)> {
    let mut curl = tools.command("curl");
    curl.args([
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-w",
        "%{http_code}",
        "-X",
        method,
    ])
    .arg("--proxy")
    .arg(&hoard.proxy_url)
    .arg("--cacert")
    .arg(&hoard.ca_crt);
    match body {
        Some((file, content_type)) => {
            curl.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .arg("--data-binary")
                .arg(format!("@{}", harness::path_str(file)?));
        }
        None => {
            curl.args(["-H", "Content-Length: 0"]);
        }
    }
    curl.arg(url);
    let out = scene.exec_text(&format!("curl {method} via hoard"), &mut curl)?;
    let (head, code) = out.rsplit_once("\r\n").unwrap_or(("", out.as_str()));
    let status = code
        .trim()
        .parse()
        .context(format!("curl printed no status: {out}"))?;
    Ok((status, head.to_owned()))
}
