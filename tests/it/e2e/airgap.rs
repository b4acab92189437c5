//! Air-gapped transfer with real programs: two images (one an index of two platforms) exported
//! from a hoard filled from the Distribution registry, read by skopeo as an `oci-archive:`,
//! imported into a fresh hoard whose registry is gone, and pulled from it by skopeo and dockerd,
//! byte for byte. See `README.md` in this folder.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::harness::{
    self, Context as _, HoardOptions, Pki, Pushed, REGISTRY_HOST, REPOSITORY, Registry, Result,
    fail, sha256,
};
use crate::common::HOARD_BIN;

/// skopeo pushes and reads, curl puts the index, ctr imports the tar, dockerd pulls.
const TOOLS: [&str; 10] = [
    "openssl",
    "tar",
    "gzip",
    "docker-registry",
    "skopeo",
    "curl",
    "containerd",
    "ctr",
    "dockerd",
    "docker",
];

const STEP_TIMEOUT: Duration = Duration::from_secs(120);

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[test]
fn images_exported_from_one_hoard_are_pulled_from_another_whose_registry_is_gone() -> Result {
    harness::run("airgap", &TOOLS, true, |scene, tools| {
        let pki = harness::make_pki(scene, tools)?;
        let registry = harness::start_registry(scene, tools, &pki)?;
        let amd64 = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let arm64 = harness::build_and_push(scene, tools, &pki, &registry, "arm64")?;
        let index = push_index(scene, tools, &pki, &registry, "multi", &amd64, &arm64)?;
        let near = harness::start_hoard(scene, &pki, &registry)?;
        // v1 is in near's cache; the index and its arm64 image are pulled by the export.
        harness::skopeo_copy_via_hoard(scene, tools, &near, "v1", "near-v1")?
            .check_matches(&amd64)?;

        let tar = scene.path("images.tar");
        let v1 = format!("{REGISTRY_HOST}/{REPOSITORY}:v1");
        let multi = format!("{REGISTRY_HOST}/{REPOSITORY}:multi");
        let exported = hoard(
            scene,
            "hoard cache export",
            &["cache", "export", &v1, &multi, "--output", &text(&tar)?],
            &near.config,
        )?;
        eprintln!("e2e: {exported}");

        // The tar is what skopeo reads as an oci-archive, by the full reference. (skopeo 1.9
        // finds only OCI-typed images by name: the index here; v1 is a Docker manifest.)
        let mut inspect = harness::skopeo(scene, tools)?;
        inspect
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}:{multi}", text(&tar)?));
        let raw = scene.exec("skopeo inspect oci-archive:", &mut inspect, STEP_TIMEOUT)?;
        if sha256(&raw) != index {
            return fail(format!("skopeo read {} for {multi}", sha256(&raw)));
        }
        let from_tar = scene.path("from-tar");
        let mut copy = harness::skopeo(scene, tools)?;
        copy.arg("copy")
            .arg(format!("oci-archive:{}:{multi}", text(&tar)?))
            .arg(format!("dir:{}", text(&from_tar)?));
        scene.exec("skopeo copy oci-archive:", &mut copy, STEP_TIMEOUT)?;
        let manifest = fs::read(from_tar.join("manifest.json")).context("reading manifest.json")?;
        if manifest != amd64.manifest {
            return fail("skopeo copied another manifest out of the tar than the one pushed");
        }

        // And what containerd imports, naming the images by io.containerd.image.name.
        let ctd = harness::start_containerd(scene, tools, "ctd-import")?;
        let ctr = |scene: &mut harness::Scene, what: &str, args: &[&str]| {
            let mut command = tools.command("ctr");
            command
                .arg("--address")
                .arg(&ctd.sock)
                .args(["-n", "airgap"]);
            scene.exec(what, command.args(args), STEP_TIMEOUT)
        };
        ctr(
            scene,
            "ctr image import",
            &["image", "import", &text(&tar)?],
        )?;
        let listed =
            String::from_utf8_lossy(&ctr(scene, "ctr image ls", &["image", "ls"])?).into_owned();
        for (name, digest) in [(&v1, &amd64.manifest_digest), (&multi, &index)] {
            let row = listed
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name));
            if !row.is_some_and(|row| row.contains(digest.as_str())) {
                return fail(format!("ctr image ls has no {name} at {digest}:\n{listed}"));
            }
        }
        scene.stop(&ctd.name)?;

        // The far side: the registry is gone; its host name still resolves to the closed port.
        registry.stop_and_let_tags_expire(scene)?;
        let import_config = scene.dir("far")?.join("import.toml");
        fs::write(
            &import_config,
            format!("[cache]\ndir = \"{}\"\n", text(&scene.path("far/cache"))?),
        )
        .context("writing import.toml")?;
        let imported = hoard(
            scene,
            "hoard cache import",
            &["cache", "import", &text(&tar)?],
            &import_config,
        )?;
        eprintln!("e2e: {imported}");
        let far = harness::start_hoard_with(
            scene,
            &pki,
            &registry,
            &HoardOptions {
                name: "far".to_owned(),
                cache_toml: "auth_on_hit = \"upstream\"".to_owned(),
                ..HoardOptions::default()
            },
        )?;

        harness::skopeo_copy_via_hoard(scene, tools, &far, "v1", "far-v1")?
            .check_matches(&amd64)?;
        harness::skopeo_copy_via_hoard(scene, tools, &far, "multi", "far-multi")?
            .check_matches(&amd64)?;
        copy_all_platforms(scene, tools, &far, &index, &[&amd64, &arm64])?;

        let docker = harness::start_docker(scene, tools, &far)?;
        let by_digest = |digest: &str| format!("{REGISTRY_HOST}/{REPOSITORY}@{digest}");
        docker.pull(scene, tools, &v1)?;
        docker.expect_image(
            scene,
            tools,
            &v1,
            &amd64,
            &by_digest(&amd64.manifest_digest),
        )?;
        docker.pull(scene, tools, &multi)?;
        docker.expect_image(scene, tools, &multi, &amd64, &by_digest(&index))?;

        let served = scene.access_log("far");
        eprintln!("e2e: far's access log:\n{}", served.join("\n"));
        if served.iter().any(|l| l.contains("cache=MISS")) {
            return fail("the far hoard missed: everything should have come from the import");
        }
        Ok(())
    })
}

/// PUTs an OCI image index of `amd64` (linux/amd64) and `arm64` (linux/arm64) as `tag`, with
/// curl straight to the registry; returns its digest.
fn push_index(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    pki: &Pki,
    registry: &Registry,
    tag: &str,
    amd64: &Pushed,
    arm64: &Pushed,
) -> Result<String> {
    let entry = |pushed: &Pushed, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": pushed.manifest_digest,
            "size": pushed.manifest.len(),
            "platform": { "os": "linux", "architecture": arch },
        })
    };
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry(amd64, "amd64"), entry(arm64, "arm64")],
    }))?;
    let file = scene.path("index.json");
    fs::write(&file, &list).context("writing the image index")?;
    let url = format!(
        "https://127.0.0.1:{}/v2/{REPOSITORY}/manifests/{tag}",
        registry.port
    );
    scene.exec(
        "curl PUT the image index",
        tools
            .command("curl")
            .args([
                "--fail",
                "--silent",
                "--show-error",
                "-X",
                "PUT",
                "--cacert",
            ])
            .arg(&pki.ca_crt)
            .args(["-H", &format!("Content-Type: {OCI_INDEX}")])
            .arg("--data-binary")
            .arg(format!("@{}", text(&file)?))
            .arg(url),
        STEP_TIMEOUT,
    )?;
    Ok(sha256(&list))
}

/// `skopeo copy --all` of the index through `hoard` into a `dir:`: the index byte for byte, and
/// every platform's config and layers, checked against their digests.
fn copy_all_platforms(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    hoard: &harness::Hoard,
    index: &str,
    images: &[&Pushed],
) -> Result {
    let dir = scene.path("far-all");
    let mut copy = harness::skopeo(scene, tools)?;
    copy.env("HTTPS_PROXY", &hoard.proxy_url)
        .args(["copy", "--all", "--src-cert-dir"])
        .arg(&hoard.ca_cert_dir)
        .arg(format!("docker://{REGISTRY_HOST}/{REPOSITORY}@{index}"))
        .arg(format!("dir:{}", text(&dir)?));
    scene.exec("skopeo copy --all through far", &mut copy, STEP_TIMEOUT)?;
    let top = fs::read(dir.join("manifest.json")).context("reading manifest.json")?;
    if sha256(&top) != index {
        return fail(format!("skopeo --all copied the index as {}", sha256(&top)));
    }
    let wanted = images
        .iter()
        .flat_map(|image| image.layer_digests.iter().chain([&image.config_digest]));
    for digest in wanted {
        let path = dir.join(digest.trim_start_matches("sha256:"));
        let bytes = fs::read(&path).context(format!("reading {}", path.display()))?;
        if sha256(&bytes) != *digest {
            return fail(format!("{} is {}", path.display(), sha256(&bytes)));
        }
    }
    Ok(())
}

/// Runs `hoard <args> --config <config>`; its stdout, or a failure with its stderr.
fn hoard(scene: &mut harness::Scene, what: &str, args: &[&str], config: &Path) -> Result<String> {
    let mut command = Command::new(HOARD_BIN);
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("HTTPS_PROXY")
        .env_remove("HOARD_CONFIG");
    let out = scene.exec(what, &mut command, STEP_TIMEOUT)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn text(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .context(format!("{} is not UTF-8", path.display()))
}
