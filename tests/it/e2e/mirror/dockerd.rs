//! dockerd with `registry-mirrors` pulling a Docker-Hub-style image: the upstream is
//! `registry-1.docker.io` (hoard resolves it to the test registry), behind token auth whose token
//! server grants anonymous pull tokens, as Docker Hub's does. Neither dockerd nor the CLI has a
//! login; hoard answers the registry's challenge itself.

use super::super::auth::{
    Grant, TokenRequest, assert_log_keeps_secrets, assert_one_token_per_scope, token_registry,
};
use super::*;
use harness::DOCKER_HUB_HOST;

#[test]
fn dockerd_pulls_a_docker_hub_image_through_the_mirror_with_an_anonymous_token() -> Result {
    harness::run(
        "dockerd-mirror",
        &harness::DOCKERD_TOOLS,
        true,
        |scene, tools| {
            let upstream = token_registry(scene, tools, &Grant::AnonymousPull)?;
            let pushed = &upstream.pushed;
            // Docker Hub is the mirror's default registry; it has to be reachable (it is not
            // in intercept.hosts, which holds gcr.io only).
            let resolve = vec![
                (DOCKER_HUB_HOST.to_owned(), upstream.registry.port),
                upstream.resolve_auth_host(),
            ];
            let hoard = start_mirror_hoard(
                scene,
                &upstream.pki,
                &upstream.registry,
                &format!("registries = [\"{DOCKER_HUB_HOST}\"]"),
                resolve,
            )?;
            let docker = harness::start_docker_with(scene, tools, Some(&Route::Mirror(&hoard)))?;

            // A two-component name: Docker Hub's `project/image`, no `library/`.
            let by_tag = format!("{REPOSITORY}:{}", pushed.tag);
            docker.pull(scene, tools, &by_tag)?;
            let by_digest = format!("{REPOSITORY}@{}", pushed.manifest_digest);
            docker.expect_image(scene, tools, &by_tag, pushed, &by_digest)?;

            let lines = requests(scene);
            eprintln!("e2e: hoard's log of the pull:\n{}", lines.join("\n"));
            assert!(
                lines.iter().all(|l| via_mirror(l)),
                "every request came via the mirror:\n{}",
                lines.join("\n")
            );
            assert_eq!(
                blob_lines(&lines, DOCKER_HUB_HOST, "MISS"),
                4,
                "config + 3 layers filled from {DOCKER_HUB_HOST} through the mirror"
            );
            check_anonymous_tokens(scene, &hoard, &upstream.token_server.requests());
            Ok(())
        },
    )
}

/// hoard asked for the pull scope once, without credentials (it has none, and dockerd's would
/// not be forwarded), and no token is in its log.
fn check_anonymous_tokens(
    scene: &harness::Scene,
    hoard: &harness::Hoard,
    requests: &[TokenRequest],
) {
    for request in requests {
        eprintln!(
            "e2e: token request {} ({})",
            request.line,
            if request.anonymous {
                "anonymous"
            } else {
                "with credentials"
            }
        );
    }
    assert!(
        requests.iter().all(|r| r.anonymous && r.authorized),
        "hoard sent credentials to the token server: {requests:#?}"
    );
    assert_one_token_per_scope(requests);
    let tokens: Vec<(&str, &str)> = requests
        .iter()
        .filter_map(|r| r.token.as_deref())
        .map(|token| ("token", token))
        .collect();
    assert_log_keeps_secrets(scene, &hoard.name, &tokens);
}
