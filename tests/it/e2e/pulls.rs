//! Pulls through hoard from an open registry: skopeo byte for byte, dockerd, and a hoard whose
//! parent proxy is another hoard; again from the cache once the registry is down.
//!
//! Each test has its own folder, ports and processes, so they run in parallel (but two dockerds
//! never do). A missing program (or, for dockerd, not being root) skips a test with a `skipped:`
//! line, or fails it when `CI=true`. See `../README.md`.

use std::time::Duration;

use super::harness;

use harness::{HOARD_PROC, HoardOptions, REGISTRY_HOST, REPOSITORY, Result, fail, sha256};

#[test]
fn skopeo_copies_through_hoard_byte_for_byte_and_from_cache_when_registry_is_down() -> Result {
    harness::run("skopeo", &harness::SKOPEO_TOOLS, false, |scene, tools| {
        let pki = harness::make_pki(scene, tools)?;
        let registry = harness::start_registry(scene, tools, &pki)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let hoard = harness::start_hoard(scene, &pki, &registry)?;

        let cold = harness::skopeo_copy_via_hoard(scene, tools, &hoard, &pushed.tag, "cold")?;
        cold.check_matches(&pushed)?;

        registry.stop_and_let_tags_expire(scene)?;
        let warm = harness::skopeo_copy_via_hoard(scene, tools, &hoard, &pushed.tag, "warm")?;
        assert_eq!(
            warm.digest, pushed.manifest_digest,
            "digest of the copy from cache"
        );
        assert_eq!(warm.manifest, pushed.manifest);
        Ok(())
    })
}

#[test]
fn skopeo_copies_through_a_hoard_whose_parent_proxy_is_another_hoard() -> Result {
    harness::run(
        "skopeo-parent",
        &harness::SKOPEO_TOOLS,
        false,
        |scene, tools| {
            let pki = harness::make_pki(scene, tools)?;
            let registry = harness::start_registry(scene, tools, &pki)?;
            let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
            // The parent only tunnels, to the registry by its resolve entry; the child intercepts
            // gcr.io and has no way there but the parent.
            let parent = harness::start_hoard_with(
                scene,
                &pki,
                &registry,
                &HoardOptions {
                    name: "parent".to_owned(),
                    intercept: false,
                    ..HoardOptions::default()
                },
            )?;
            let child = harness::start_hoard_with(
                scene,
                &pki,
                &registry,
                &HoardOptions {
                    pin_registry: false,
                    extra_toml: format!("proxy = \"{}\"\n", parent.proxy_url),
                    ..HoardOptions::default()
                },
            )?;

            let copied = harness::skopeo_copy_via_hoard(scene, tools, &child, &pushed.tag, "copy")?;
            assert_eq!(copied.digest, pushed.manifest_digest, "digest of the copy");
            assert_eq!(copied.manifest, pushed.manifest);
            let mut blob_bytes = 0;
            for digest in pushed.layer_digests.iter().chain([&pushed.config_digest]) {
                let blob = std::fs::read(copied.dir.join(digest.trim_start_matches("sha256:")))?;
                assert_eq!(&sha256(&blob), digest, "blob {digest} in the copy");
                blob_bytes += blob.len();
            }
            let cold = requests(scene);
            assert!(
                cold.iter().filter(|l| l.contains("cache=MISS")).count() >= 4,
                "the child filled its cache:\n{}",
                cold.join("\n")
            );

            // The child's connections close when it stops; the parent then logs each tunnel.
            scene.stop(HOARD_PROC)?;
            let tunnelled = |scene: &harness::Scene| -> usize {
                scene
                    .log(&parent.name)
                    .lines()
                    .filter(|l| l.contains("tunnel closed") && l.contains("gcr.io:443"))
                    .filter_map(|l| {
                        l.split("bytes=")
                            .nth(1)?
                            .split(' ')
                            .next()?
                            .parse::<usize>()
                            .ok()
                    })
                    .sum()
            };
            harness::wait_for(
                "the parent to log its tunnels",
                Duration::from_secs(10),
                || Ok(tunnelled(scene) >= blob_bytes),
            )
        },
    )
}

#[test]
fn dockerd_pulls_through_hoard_and_again_from_cache_when_registry_is_down() -> Result {
    harness::run("dockerd", &harness::DOCKERD_TOOLS, true, |scene, tools| {
        let pki = harness::make_pki(scene, tools)?;
        let registry = harness::start_registry(scene, tools, &pki)?;
        let pushed = harness::build_and_push(scene, tools, &pki, &registry, "v1")?;
        let hoard = harness::start_hoard(scene, &pki, &registry)?;
        let docker = harness::start_docker(scene, tools, &hoard)?;

        let by_tag = format!("{REGISTRY_HOST}/{REPOSITORY}:{}", pushed.tag);
        let by_digest = format!("{REGISTRY_HOST}/{REPOSITORY}@{}", pushed.manifest_digest);
        let expect_image = |scene: &mut harness::Scene, reference: &str| -> Result {
            docker.expect_image(scene, tools, reference, &pushed, &by_digest)
        };

        docker.pull(scene, tools, &by_tag)?;
        expect_image(scene, &by_tag)?;
        let cold = requests(scene);
        assert!(
            cold.iter().filter(|l| l.contains("cache=MISS")).count() >= 3,
            "the cold pull filled the cache:\n{}",
            cold.join("\n")
        );

        registry.stop_and_let_tags_expire(scene)?;
        docker.rmi(scene, tools, &by_tag)?;
        if docker.inspect(scene, tools, &by_tag)?.is_some() {
            return fail("the image is still there after docker rmi");
        }
        docker.pull(scene, tools, &by_tag)?;
        expect_image(scene, &by_tag)?;

        docker.rmi(scene, tools, &by_tag)?;
        docker.pull(scene, tools, &by_digest)?;
        expect_image(scene, &by_digest)?;

        // Everything after the registry went away came from hoard's disk.
        let warm = &requests(scene)[cold.len()..];
        eprintln!("e2e: hoard's log of the cold pull:\n{}", cold.join("\n"));
        eprintln!("e2e: hoard's log of the warm pulls:\n{}", warm.join("\n"));
        let blob_hits = warm
            .iter()
            .filter(|l| l.contains("/blobs/") && l.contains("cache=HIT"))
            .count();
        assert_eq!(blob_hits, 2 * 4, "config + 3 layers, twice, from the store");
        assert!(
            warm.iter()
                .all(|l| l.contains("cache=HIT") || l.contains("cache=STALE")),
            "warm pulls only hit the cache:\n{}",
            warm.join("\n")
        );
        Ok(())
    })
}

/// hoard's access-log lines so far.
fn requests(scene: &harness::Scene) -> Vec<String> {
    scene.access_log(HOARD_PROC)
}
