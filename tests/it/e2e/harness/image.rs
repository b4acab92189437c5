//! The test image: an OCI layout written by hand, pushed with skopeo as Docker v2 schema 2.

use std::fs::{self, File};
use std::io::Read;
use std::process::Command;

use super::{
    COMMAND_TIMEOUT, Context as _, PULL_TIMEOUT, Pki, REPOSITORY, Registry, Result, Scene, Tools,
    fail, path_str, sha256,
};

/// What was pushed to the registry.
pub(crate) struct Pushed {
    /// The tag.
    pub tag: String,
    /// Digest of the manifest as stored by the registry.
    pub manifest_digest: String,
    /// The manifest bytes as served by the registry.
    pub manifest: Vec<u8>,
    /// Digest of the image config: dockerd's image ID.
    pub config_digest: String,
    /// Digests of the compressed layers.
    pub layer_digests: Vec<String>,
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        "s390x" => "s390x",
        _ => "amd64",
    }
}

/// `len` bytes from /dev/urandom.
pub(crate) fn urandom(len: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes)
}

/// Writes a three-layer image (random content, so every run is new to every cache) as an OCI
/// layout, pushes it with skopeo as Docker v2 schema 2 and reads back what the registry stored.
pub(crate) fn build_and_push(
    scene: &mut Scene,
    tools: &Tools,
    pki: &Pki,
    registry: &Registry,
    tag: &str,
) -> Result<Pushed> {
    let layout = scene.dir("image/layout")?;
    let blobs = scene.dir("image/layout/blobs/sha256")?;
    let work = scene.dir("image/work")?;
    let nonce = const_hex::encode(urandom(8)?);

    let store = |bytes: &[u8]| -> Result<(String, usize)> {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        fs::write(blobs.join(hex), bytes).context("writing a blob")?;
        Ok((digest, bytes.len()))
    };

    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    let mut history = Vec::new();
    for i in 1..=3 {
        let root = work.join(format!("layer{i}"));
        let data = root.join(format!("hoard-e2e/layer{i}"));
        fs::create_dir_all(&data).context("creating layer content")?;
        fs::write(
            data.join("random.bin"),
            urandom(200 * 1024 + i * 64 * 1024)?,
        )
        .context("writing layer content")?;
        fs::write(
            data.join("hello.txt"),
            format!("layer {i} of test image {nonce}\n"),
        )
        .context("writing layer content")?;
        let tar = work.join(format!("layer{i}.tar"));
        scene.exec_text(
            "tar layer",
            tools
                .command("tar")
                .args(["--owner=0", "--group=0", "--numeric-owner"])
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("hoard-e2e"),
        )?;
        let gz = scene.exec(
            "gzip layer",
            tools.command("gzip").args(["-n", "-c"]).arg(&tar),
            COMMAND_TIMEOUT,
        )?;
        diff_ids.push(sha256(&fs::read(&tar).context("reading a layer tar")?));
        let (digest, size) = store(&gz)?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": size,
        }));
        history.push(serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("hoard e2e layer {i}"),
        }));
    }

    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": docker_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/hoard-e2e/layer1/hello.txt"],
            "Labels": { "hoard.e2e.nonce": nonce },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    }))?;
    let (config_digest, config_size) = store(&config)?;
    let layer_digests = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or_default().to_owned())
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    }))?;
    let (oci_manifest_digest, manifest_size) = store(&manifest)?;
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": oci_manifest_digest,
                "size": manifest_size,
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        }))?,
    )
    .context("writing index.json")?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .context("writing oci-layout")?;

    let digest_file = scene.path("image/pushed.digest");
    let mut push = skopeo(scene, tools)?;
    push.args(["copy", "--format", "v2s2", "--dest-cert-dir"])
        .arg(&pki.ca_cert_dir)
        .arg("--digestfile")
        .arg(&digest_file);
    if let Some(creds) = &registry.creds {
        push.arg("--dest-creds").arg(creds);
    }
    push.arg(format!("oci:{}:{tag}", path_str(&layout)?))
        .arg(registry.reference(tag));
    scene.exec("skopeo push to the registry", &mut push, PULL_TIMEOUT)?;
    let manifest_digest = fs::read_to_string(&digest_file)
        .context("reading the push digest file")?
        .trim()
        .to_owned();

    let mut inspect = skopeo(scene, tools)?;
    inspect
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&pki.ca_cert_dir);
    if let Some(creds) = &registry.creds {
        inspect.arg("--creds").arg(creds);
    }
    inspect.arg(registry.reference(tag));
    let stored = scene.exec(
        "skopeo inspect --raw on the registry",
        &mut inspect,
        COMMAND_TIMEOUT,
    )?;
    if sha256(&stored) != manifest_digest {
        return fail(format!(
            "the registry's manifest hashes to {}, skopeo pushed {manifest_digest}",
            sha256(&stored)
        ));
    }
    eprintln!("e2e: pushed {REPOSITORY}:{tag} = {manifest_digest}");
    Ok(Pushed {
        tag: tag.to_owned(),
        manifest_digest,
        manifest: stored,
        config_digest,
        layer_digests,
    })
}

/// skopeo with the machine's policy, registries.conf and credentials replaced by the scene's own:
/// no registry credentials at all unless a command passes `--creds`.
pub(crate) fn skopeo(scene: &Scene, tools: &Tools) -> Result<Command> {
    let conf = scene.path("registries.conf");
    if !conf.exists() {
        fs::write(&conf, "").context("writing an empty registries.conf")?;
    }
    let auth = scene.path("auth.json");
    if !auth.exists() {
        fs::write(&auth, "{}\n").context("writing an empty auth.json")?;
    }
    let tmp = scene.dir("skopeo-tmp")?;
    let home = scene.dir("skopeo-home")?;
    let mut command = tools.command("skopeo");
    command
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .env("REGISTRY_AUTH_FILE", auth)
        // No ~/.docker/config.json or $XDG_RUNTIME_DIR/containers/auth.json of the machine's.
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &home)
        .arg("--insecure-policy")
        .arg("--tmpdir")
        .arg(tmp);
    Ok(command)
}
