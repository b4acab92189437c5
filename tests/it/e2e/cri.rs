//! The kubelet's way to an image: containerd's CRI plugin, asked over gRPC on containerd's socket
//! (`runtime.v1.ImageService/PullImage`, as the kubelet asks it), pulls through hoard on a node set
//! up as the node-setup DaemonSets set one up: by hoard's registry mirror (the hosts.toml and the
//! `config_path` that `/setup/containerd?mode=mirror` writes) or by hoard as containerd's HTTPS
//! proxy (the systemd drop-in of `/setup/containerd`). Then with a pod's pull secret in the
//! request, from a registry that demands a login, through a hoard with no account there.
//!
//! Same programs, folders and skipping rules as the other e2e tests; see `README.md`.

use std::fs;
use std::time::{Duration, Instant};

use super::auth::{
    USER, assert_log_keeps_secrets, basic, random_password, start_htpasswd_registry,
};
use super::harness;
use super::mirror::start_mirror_hoard;
use harness::{
    Context as _, Cri, HOARD_PROC, HoardOptions, PullAuth, REGISTRY_HOST, REPOSITORY, Result, fail,
    json_string, path_str, registry_blob_gets,
};

/// Where the mirror flavour of the setup script puts the registries' hosts.toml, on the node.
const CERTS_D: &str = "/etc/containerd/certs.d";

#[test]
fn cri_pulls_through_the_mirror_the_setup_script_configured_and_again_without_upstream_blob_gets()
-> Result {
    pulls_cold_then_warm("cri-mirror", mirror_node, "mirror")
}

#[test]
fn cri_pulls_through_hoard_as_the_proxy_the_setup_script_configured_and_again_without_upstream_blob_gets()
-> Result {
    pulls_cold_then_warm("cri-proxy", proxy_node, "proxy")
}

/// A containerd with its CRI plugin on, `name`d in the scene, set up for `hoard` by one of
/// hoard's setup scripts.
type NodeSetup =
    fn(&mut harness::Scene, &harness::Tools, &harness::Hoard, &str) -> Result<harness::Containerd>;

/// The test `test`: an open registry, hoard, a containerd set up by `node`, and
/// [`cold_then_warm`] through hoard's listener `via`.
fn pulls_cold_then_warm(test: &str, node: NodeSetup, via: &str) -> Result {
    harness::run(test, &cri_tools(), true, |scene, tools| {
        let pki = harness::make_pki(scene, tools)?;
        let registry = harness::start_registry(scene, tools, &pki)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let hoard = start_mirror_hoard(scene, &pki, &registry, "", Vec::new())?;
        let ctd = node(scene, tools, &hoard, "ctd")?;
        let cri = Cri::connect(&ctd)?;
        cold_then_warm(scene, tools, &ctd, &cri, &pushed, via)
    })
}

#[test]
fn cri_pull_credentials_reach_a_login_registry_through_the_mirror_and_the_proxy() -> Result {
    harness::run("cri-auth", &cri_tools(), true, |scene, tools| {
        let password = random_password()?;
        let pki = harness::make_pki(scene, tools)?;
        let registry = start_htpasswd_registry(scene, tools, &pki, &password)?;
        // One image per way in, so each authenticated pull fills hoard from the registry and
        // none is answered from what the other one cached.
        let by_mirror = harness::build_and_push(scene, tools, &pki, &registry, "mirror")?;
        let by_proxy = harness::build_and_push(scene, tools, &pki, &registry, "proxy")?;
        // No [[upstream.credentials]]: the only credentials are those in the pull requests.
        let forward = "forward_authorization = true";
        let hoard = start_mirror_hoard(scene, &pki, &registry, forward, Vec::new())?;
        let mirror_ctd = mirror_node(scene, tools, &hoard, "ctd-m")?;
        let proxy_ctd = proxy_node(scene, tools, &hoard, "ctd-p")?;
        let ways = [
            (Cri::connect(&mirror_ctd)?, &by_mirror, "mirror"),
            (Cri::connect(&proxy_ctd)?, &by_proxy, "proxy"),
        ];
        let asked = [hoard.mirror_addr()?, REGISTRY_HOST.to_owned()];

        // Without credentials the registry's 401 reaches containerd from the host it asked (the
        // mirror, or gcr.io through the proxy), and the pull fails.
        for ((cri, pushed, via), host) in ways.iter().zip(&asked) {
            let refused = cri.pull(&reference(pushed), None)?;
            let Err(status) = refused else {
                return fail(format!(
                    "CRI pulled {} through the {via} without credentials",
                    reference(pushed)
                ));
            };
            eprintln!("e2e: CRI pull via the {via} without credentials: {status}");
            let from_host = format!("pulling from host {host} failed");
            assert!(
                status.message().contains(&from_host)
                    && status.message().contains("401 Unauthorized"),
                "the pull through the {via} must fail on the registry's 401: {status}"
            );
        }
        let auth = PullAuth {
            user: USER,
            password: &password,
        };
        for (cri, pushed, via) in &ways {
            let reference = reference(pushed);
            let image_id = cri
                .pull(&reference, Some(&auth))?
                .context(format!("CRI pull via the {via} with credentials"))?;
            check_image(cri, &reference, &image_id, pushed)?;
            // Every blob came from the registry, asked with the pull's credentials.
            let lines = scene.access_log(HOARD_PROC);
            assert_eq!(
                harness::logged_blob_gets(&lines, via, REGISTRY_HOST, "MISS"),
                4,
                "config + 3 layers filled through the {via}"
            );
            assert_eq!(
                registry_authorized_gets(scene, &pushed.layer_digests),
                3,
                "the registry let each layer through to {USER}, logged in by the pull's credentials"
            );
        }
        let secrets = [
            ("password", password.as_str()),
            ("Basic credentials", &basic(USER, &password)),
        ];
        assert_log_keeps_secrets(scene, HOARD_PROC, &secrets);

        // A mirror without forward_authorization drops the pull's credentials: the registry's
        // 401 again, whatever containerd sends.
        let dropping = harness::start_hoard_with(
            scene,
            &pki,
            &registry,
            &HoardOptions {
                name: "hoard-drop".to_owned(),
                mirror: Some(String::new()),
                ..HoardOptions::default()
            },
        )?;
        let dropping_ctd = mirror_node(scene, tools, &dropping, "ctd-d")?;
        let refused = Cri::connect(&dropping_ctd)?.pull(&reference(&by_mirror), Some(&auth))?;
        let Err(status) = refused else {
            return fail("CRI pulled through a mirror that drops Authorization");
        };
        assert!(
            status.message().contains("401 Unauthorized"),
            "without forward_authorization the registry's 401 stays: {status}"
        );
        Ok(())
    })
}

/// ctr's programs, and curl, which fetches hoard's setup script as the node-setup DaemonSets do.
fn cri_tools() -> Vec<&'static str> {
    [harness::CTR_TOOLS.as_slice(), &["curl"]].concat()
}

/// containerd `name` with its CRI plugin on, and a config.toml in the folder `<name>-node` (the
/// node's file system) that `/setup/containerd?mode=mirror` has edited to read the hosts.toml it
/// wrote there: gcr.io from hoard's mirror.
fn mirror_node(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    hoard: &harness::Hoard,
    name: &str,
) -> Result<harness::Containerd> {
    let node = scene.dir(&format!("{name}-node"))?;
    let config = scene
        .dir(&format!("{name}-node/etc/containerd"))?
        .join("config.toml");
    fs::write(&config, harness::containerd_config(scene, name, true)?)
        .context("writing the node's config.toml")?;
    harness::run_containerd_setup(scene, tools, hoard, "?mode=mirror", &node)?;
    let edited = fs::read_to_string(&config).context("reading the edited config.toml")?;
    let on_node = format!("config_path = \"{CERTS_D}\"");
    if !edited.contains(&on_node) {
        return fail(format!(
            "the setup script did not point the CRI plugin at {CERTS_D}:\n{edited}"
        ));
    }
    // The node's /etc/containerd/certs.d is below the folder here: the one change made to what
    // the script wrote (a DaemonSet's --root /host needs none).
    let certs_d = node.join(CERTS_D.trim_start_matches('/'));
    let here = format!("config_path = {}", json_string(path_str(&certs_d)?));
    fs::write(&config, edited.replace(&on_node, &here)).context("writing config.toml")?;
    let hosts_toml = certs_d.join(REGISTRY_HOST).join("hosts.toml");
    let hosts = fs::read_to_string(&hosts_toml).context(format!(
        "reading {}, which the setup script writes",
        hosts_toml.display()
    ))?;
    let mirror = format!("[host.\"http://{}\"]", hoard.mirror_addr()?);
    if !hosts.contains(&mirror) {
        return fail(format!("{} lacks {mirror}:\n{hosts}", hosts_toml.display()));
    }
    harness::launch_containerd(scene, tools, name, &config, &[])
}

/// containerd `name` with its CRI plugin on, in the environment that `/setup/containerd` (the
/// proxy flavour) writes to the systemd drop-in in the folder `<name>-node`: hoard as its
/// `HTTPS_PROXY`. The CRI plugin's registry `config_path` stays empty, as containerd 1.x has it
/// by default, so the script's certs.d is not read: containerd trusts hoard's CA through the
/// system store, where the script puts it for update-ca-certificates. `SSL_CERT_FILE` naming the
/// script's copy stands for that store: hoard's CA is all this containerd trusts.
fn proxy_node(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    hoard: &harness::Hoard,
    name: &str,
) -> Result<harness::Containerd> {
    let node = scene.dir(&format!("{name}-node"))?;
    harness::run_containerd_setup(scene, tools, hoard, "", &node)?;
    let mut env = harness::drop_in_environment(&node)?;
    let proxy = env.iter().find(|(var, _)| var == "HTTPS_PROXY");
    if proxy.map(|(_, url)| url) != Some(&hoard.proxy_url) {
        return fail(format!(
            "the drop-in's HTTPS_PROXY is {proxy:?}, hoard is {}",
            hoard.proxy_url
        ));
    }
    let system_ca = node.join("usr/local/share/ca-certificates/hoard.crt");
    env.push(("SSL_CERT_FILE".to_owned(), path_str(&system_ca)?.to_owned()));
    let config = scene.dir(name)?.join("config.toml");
    fs::write(&config, harness::containerd_config(scene, name, true)?)
        .context("writing config.toml")?;
    harness::launch_containerd(scene, tools, name, &config, &env)
}

/// Pulls `pushed` by CRI, removes it (`RemoveImage`, after which containerd's content store has
/// none of its blobs) and pulls it again. Each pull must give the pushed image; the first fills
/// hoard from the registry (`cache=MISS`), the second comes from hoard's store (`cache=HIT`) with
/// no blob GET reaching the registry. The times and the registry's blob GETs are printed.
fn cold_then_warm(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    ctd: &harness::Containerd,
    cri: &Cri,
    pushed: &harness::Pushed,
    via: &str,
) -> Result {
    let reference = reference(pushed);
    let blobs: Vec<&String> = pushed
        .layer_digests
        .iter()
        .chain([&pushed.config_digest, &pushed.manifest_digest])
        .collect();

    let pushed_gets = registry_blob_gets(scene);
    let (cold, cold_lines) = timed_pull(scene, cri, &reference, pushed)?;
    let cold_gets = registry_blob_gets(scene) - pushed_gets;
    assert_eq!(
        harness::logged_blob_gets(&cold_lines, via, REGISTRY_HOST, "MISS"),
        4,
        "config + 3 layers filled through the {via}:\n{}",
        cold_lines.join("\n")
    );
    assert!(
        cold_gets >= 4,
        "the registry served the blobs to hoard ({cold_gets} GETs in its log)"
    );

    cri.remove(&reference)?;
    if let Some(image) = cri.status(&reference)? {
        return fail(format!(
            "ImageStatus still shows {image:?} after RemoveImage"
        ));
    }
    let content = ctd.content(scene, tools, "k8s.io")?;
    let kept: Vec<_> = blobs.iter().filter(|d| content.contains(d)).collect();
    if !kept.is_empty() {
        return fail(format!(
            "containerd kept {kept:?} after RemoveImage: the next pull would not fetch them"
        ));
    }

    let (warm, warm_lines) = timed_pull(scene, cri, &reference, pushed)?;
    let warm_gets = registry_blob_gets(scene) - pushed_gets - cold_gets;
    assert_eq!(
        harness::logged_blob_gets(&warm_lines, via, REGISTRY_HOST, "HIT"),
        4,
        "config + 3 layers fetched again, from hoard's store:\n{}",
        warm_lines.join("\n")
    );
    assert_eq!(
        warm_gets, 0,
        "no blob GET reached the registry during the second pull"
    );
    eprintln!(
        "e2e: CRI PullImage via hoard's {via}: first {cold:.2?} ({cold_gets} blob GETs at the \
         registry), second after RemoveImage {warm:.2?} ({warm_gets} blob GETs at the registry)"
    );
    Ok(())
}

/// A CRI pull of `reference` without credentials that must give `pushed`: how long it took, and
/// the lines hoard logged meanwhile.
fn timed_pull(
    scene: &harness::Scene,
    cri: &Cri,
    reference: &str,
    pushed: &harness::Pushed,
) -> Result<(Duration, Vec<String>)> {
    let logged = scene.access_log(HOARD_PROC).len();
    let started = Instant::now();
    let image_id = cri
        .pull(reference, None)?
        .context(format!("CRI PullImage {reference}"))?;
    let took = started.elapsed();
    check_image(cri, reference, &image_id, pushed)?;
    Ok((took, scene.access_log(HOARD_PROC)[logged..].to_vec()))
}

/// `gcr.io/project/image:<tag>`, as a pod names it.
fn reference(pushed: &harness::Pushed) -> String {
    format!("{REGISTRY_HOST}/{REPOSITORY}:{}", pushed.tag)
}

/// The pull answered `image_id`, and `ImageStatus` of `reference` shows the pushed image: the
/// config's digest as ID, the tag, the manifest's digest, and as size the bytes of the manifest,
/// the config and the layers.
fn check_image(cri: &Cri, reference: &str, image_id: &str, pushed: &harness::Pushed) -> Result {
    if image_id != pushed.config_digest {
        return fail(format!(
            "PullImage answered {image_id}, the pushed config is {}",
            pushed.config_digest
        ));
    }
    let image = cri
        .status(reference)?
        .context(format!("ImageStatus shows no {reference} after the pull"))?;
    let repo_digest = format!("{REGISTRY_HOST}/{REPOSITORY}@{}", pushed.manifest_digest);
    let size = image_size(pushed)?;
    if image.id != pushed.config_digest
        || !image.repo_tags.iter().any(|t| t == reference)
        || !image.repo_digests.contains(&repo_digest)
        || image.size != size
    {
        return fail(format!(
            "ImageStatus {reference}: {image:?}; expected id {}, tag {reference}, digest \
             {repo_digest}, size {size}",
            pushed.config_digest
        ));
    }
    Ok(())
}

/// The bytes of the manifest and of every blob it names: what containerd reports as an image's
/// size.
fn image_size(pushed: &harness::Pushed) -> Result<u64> {
    let manifest: serde_json::Value = serde_json::from_slice(&pushed.manifest)?;
    let blob_sizes = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?
        .iter()
        .chain([&manifest["config"]])
        .map(|blob| blob["size"].as_u64().context("a blob without a size"))
        .sum::<Result<u64>>()?;
    Ok(pushed.manifest.len() as u64 + blob_sizes)
}

/// How many GETs of the blobs `digests` the registry let through its htpasswd check, by its
/// log: it logs `authorized request` once the credentials are right, and it knows no other user
/// than [`USER`].
fn registry_authorized_gets(scene: &harness::Scene, digests: &[String]) -> usize {
    scene
        .log(harness::REGISTRY_PROC)
        .lines()
        .filter(|l| {
            l.contains("msg=\"authorized request\"")
                && l.contains("http.request.method=GET")
                && digests.iter().any(|d| l.contains(&format!("/blobs/{d}")))
        })
        .count()
}
