//! The upstream: the Distribution registry (`docker-registry`) over TLS, open or behind htpasswd
//! or token auth.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    Context as _, Pki, REPOSITORY, Result, START_TIMEOUT, Scene, TAG_TTL, Tools, accepts, fail,
    free_port, json_string, path_str, wait_for,
};

/// A running `docker-registry`.
pub(crate) struct Registry {
    /// Its loopback port.
    pub port: u16,
    /// `user:password` for skopeo's `--creds` when the registry checks an htpasswd file.
    pub creds: Option<String>,
}

/// How the registry authenticates its clients.
pub(crate) enum RegistryAuth {
    /// Everyone may pull and push.
    None,
    /// HTTP Basic against an htpasswd file holding one bcrypt line for `user`.
    Htpasswd {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Bearer tokens (JWTs) issued by a token server, verified against `rootcertbundle`.
    Token {
        /// The token server's URL, sent in the registry's challenge.
        realm: String,
        /// The registry's service name: the `service` in the challenge and the tokens' `aud`.
        service: String,
        /// The tokens' `iss`.
        issuer: String,
        /// PEM certificates the tokens' signing certificate (`x5c`) must chain to.
        rootcertbundle: PathBuf,
    },
}

/// Process name of the registry in the scene (for [`Scene::stop`]).
pub(crate) const REGISTRY_PROC: &str = "registry";

/// Starts `docker-registry serve` with TLS, no auth, storage in the scene.
pub(crate) fn start_registry(scene: &mut Scene, tools: &Tools, pki: &Pki) -> Result<Registry> {
    start_registry_with(scene, tools, pki, &RegistryAuth::None)
}

/// Starts `docker-registry serve` with TLS and `auth`, storage in the scene (the same folder every
/// time, so a registry restarted with other settings serves what was pushed before).
pub(crate) fn start_registry_with(
    scene: &mut Scene,
    tools: &Tools,
    pki: &Pki,
    auth: &RegistryAuth,
) -> Result<Registry> {
    let port = free_port();
    let storage = scene.dir("registry")?;
    let (auth_yaml, creds) = match auth {
        RegistryAuth::None => (String::new(), None),
        RegistryAuth::Htpasswd { user, password } => {
            // Distribution checks it with Go's bcrypt, which takes $2b$ and $2y$ alike; cost 4 is
            // the minimum, enough for a test and fast.
            let hash = bcrypt::hash(password, 4).context("bcrypt")?;
            let htpasswd = scene.path("registry.htpasswd");
            fs::write(&htpasswd, format!("{user}:{hash}\n"))
                .context("writing the htpasswd file")?;
            let yaml = format!(
                "auth:\n  htpasswd:\n    realm: hoard-e2e\n    path: {}\n",
                json_string(path_str(&htpasswd)?)
            );
            (yaml, Some(format!("{user}:{password}")))
        }
        RegistryAuth::Token {
            realm,
            service,
            issuer,
            rootcertbundle,
        } => {
            let yaml = format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                json_string(realm),
                json_string(service),
                json_string(issuer),
                json_string(path_str(rootcertbundle)?),
            );
            (yaml, None)
        }
    };
    let config = scene.path("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {crt}\n    key: {key}\n\
             {auth_yaml}",
            storage = path_str(&storage)?,
            crt = path_str(&pki.server_crt)?,
            key = path_str(&pki.server_key)?,
        ),
    )
    .context("writing registry.yml")?;
    let mut command = tools.command("docker-registry");
    command.arg("serve").arg(&config);
    // REGISTRY_* variables override the file.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(var);
        }
    }
    scene.spawn(REGISTRY_PROC, command, Duration::ZERO)?;
    wait_for("the registry to listen", START_TIMEOUT, || {
        scene.check_running(REGISTRY_PROC)?;
        Ok(accepts(port))
    })?;
    Ok(Registry { port, creds })
}

impl Registry {
    /// `docker://127.0.0.1:<port>/<repo>:<tag>`, the registry's own address.
    pub(crate) fn reference(&self, tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{REPOSITORY}:{tag}", self.port)
    }

    /// Whether the registry still accepts connections.
    pub(crate) fn is_up(&self) -> bool {
        accepts(self.port)
    }

    /// Stops the registry and waits long enough for hoard's cached tags to be stale, so the next
    /// pull has to try the upstream, find it down and serve from the cache.
    pub(crate) fn stop_and_let_tags_expire(&self, scene: &mut Scene) -> Result {
        scene.stop(REGISTRY_PROC)?;
        if self.is_up() {
            return fail("the registry still accepts connections after being stopped");
        }
        std::thread::sleep(TAG_TTL + Duration::from_millis(1500));
        Ok(())
    }
}

/// The blob GETs the registry has answered so far (its access log).
pub(crate) fn registry_blob_gets(scene: &Scene) -> usize {
    let blob_get = format!("\"GET /v2/{REPOSITORY}/blobs/sha256:");
    scene
        .log(REGISTRY_PROC)
        .lines()
        .filter(|l| l.contains(&blob_get))
        .count()
}
