//! containerd on its own, pulling with `ctr image pull --hosts-dir` whose `gcr.io/hosts.toml`
//! names hoard's mirror as a plain-HTTP host: containerd sends `?ns=gcr.io` with each request.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

#[test]
fn containerd_pulls_through_the_mirror_by_hosts_toml_and_from_cache_when_registry_is_down() -> Result
{
    harness::run("ctr-mirror", &harness::CTR_TOOLS, true, |scene, tools| {
        let pki = harness::make_pki(scene, tools)?;
        let registry = harness::start_registry(scene, tools, &pki)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let hoard = start_mirror_hoard(scene, &pki, &registry, MIRROR_LINES, Vec::new())?;
        let hosts_dir = write_hosts_dir(scene, &hoard)?;
        let ctd = harness::start_containerd(scene, tools, "ctd")?;
        let reference = format!("{REGISTRY_HOST}/{REPOSITORY}:{}", pushed.tag);
        let blobs: Vec<&String> = pushed
            .layer_digests
            .iter()
            .chain([&pushed.config_digest, &pushed.manifest_digest])
            .collect();

        // Cold: hoard fills its cache from the registry.
        pull_and_check(scene, tools, &ctd, &hosts_dir, &reference, &pushed)?;
        let content = ctd.content(scene, tools, "default")?;
        let missing: Vec<_> = blobs.iter().filter(|d| !content.contains(d)).collect();
        if !missing.is_empty() {
            return fail(format!(
                "containerd's content store lacks {missing:?} after the pull"
            ));
        }
        let cold = requests(scene);
        eprintln!("e2e: hoard's log of the cold pull:\n{}", cold.join("\n"));
        assert_eq!(
            blob_lines(&cold, REGISTRY_HOST, "MISS"),
            4,
            "config + 3 layers filled through the mirror"
        );
        assert!(
            cold.iter().all(|l| via_mirror(l)),
            "every request came via the mirror:\n{}",
            cold.join("\n")
        );
        let upstream_blob_gets = registry_blob_gets(scene);
        assert!(
            upstream_blob_gets >= 4,
            "the registry served the blobs to hoard ({upstream_blob_gets} GETs in its log)"
        );

        // Warm, from a fresh state: containerd has to fetch every blob again, and hoard serves
        // them from its store without asking the registry.
        forget_image(scene, tools, &ctd, &reference, &blobs)?;
        pull_and_check(scene, tools, &ctd, &hosts_dir, &reference, &pushed)?;
        let warm = requests(scene)[cold.len()..].to_vec();
        eprintln!("e2e: hoard's log of the warm pull:\n{}", warm.join("\n"));
        assert_eq!(
            blob_lines(&warm, REGISTRY_HOST, "HIT"),
            4,
            "config + 3 layers fetched again, from hoard's store"
        );
        assert_eq!(
            registry_blob_gets(scene),
            upstream_blob_gets,
            "no blob GET reached the registry during the warm pull"
        );

        // The registry down and the tag stale: still pulled, from the cache alone.
        registry.stop_and_let_tags_expire(scene)?;
        forget_image(scene, tools, &ctd, &reference, &blobs)?;
        let before = requests(scene).len();
        pull_and_check(scene, tools, &ctd, &hosts_dir, &reference, &pushed)?;
        let down = requests(scene)[before..].to_vec();
        eprintln!(
            "e2e: hoard's log with the registry down:\n{}",
            down.join("\n")
        );
        assert_eq!(
            blob_lines(&down, REGISTRY_HOST, "HIT"),
            4,
            "config + 3 layers from the store"
        );
        assert!(
            down.iter().all(|l| via_mirror(l) && from_store(l)),
            "with the registry down, everything came from the store via the mirror:\n{}",
            down.join("\n")
        );
        Ok(())
    })
}

/// `<scene>/hosts/gcr.io/hosts.toml`: gcr.io served by hoard's mirror (plain HTTP) for pull and
/// resolve; `server` stays gcr.io itself, which containerd falls back to and cannot reach.
fn write_hosts_dir(scene: &harness::Scene, hoard: &harness::Hoard) -> Result<PathBuf> {
    let hosts_dir = scene.dir("hosts")?;
    let registry_dir = scene.dir(&format!("hosts/{REGISTRY_HOST}"))?;
    fs::write(
        registry_dir.join("hosts.toml"),
        format!(
            "server = \"https://{REGISTRY_HOST}\"\n\n\
             [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            hoard.mirror_addr()?
        ),
    )?;
    Ok(hosts_dir)
}

/// `ctr image pull`, then the image must point at the pushed manifest.
fn pull_and_check(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    ctd: &harness::Containerd,
    hosts_dir: &Path,
    reference: &str,
    pushed: &harness::Pushed,
) -> Result {
    ctd.pull(scene, tools, hosts_dir, reference)?;
    let digest = ctd.image_digest(scene, tools, reference)?;
    if digest.as_deref() != Some(pushed.manifest_digest.as_str()) {
        return fail(format!(
            "ctr image ls shows {reference} at {digest:?}, the registry holds {}",
            pushed.manifest_digest
        ));
    }
    Ok(())
}

/// Removes the image, and with it (by containerd's garbage collection, which `--sync` waits for)
/// every blob of it, so the next pull has to fetch them all again.
fn forget_image(
    scene: &mut harness::Scene,
    tools: &harness::Tools,
    ctd: &harness::Containerd,
    reference: &str,
    blobs: &[&String],
) -> Result {
    ctd.remove_image(scene, tools, reference)?;
    let content = ctd.content(scene, tools, "default")?;
    let kept: Vec<_> = blobs.iter().filter(|d| content.contains(d)).collect();
    if !kept.is_empty() {
        return fail(format!(
            "containerd kept {kept:?} after ctr image rm --sync: the next pull would not fetch them"
        ));
    }
    Ok(())
}
