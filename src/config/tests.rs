//! Tests of [`Config::resolve`] across sections: defaults, keys named in errors, and settings
//! one section's value changes in another.

use std::time::Duration;

use super::{AuthOnHit, Config, ConfigError, FileConfig, MirrorTls, Overrides};

#[test]
fn fill_limits_must_allow_a_fill() {
    let resolve = |cache: &str| {
        let file = toml::from_str::<FileConfig>(&format!("[cache]\n{cache}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        Config::resolve(file, Overrides::default())
    };
    for (cache, key) in [
        ("max_fills = 0", "cache.max_fills"),
        ("max_fills_per_client = 0", "cache.max_fills_per_client"),
        (
            "abandoned_fill_grace = \"soon\"",
            "cache.abandoned_fill_grace",
        ),
        ("max_blob_size = \"big\"", "cache.max_blob_size"),
        ("pin = [\"gcr.io\"]", "cache.pin"),
    ] {
        let err = resolve(cache)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with(key), "{cache}: {err}");
    }
    let config = resolve("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (config.cache.fills.max, config.cache.fills.per_client),
        (64, 16)
    );
    assert_eq!(config.cache.fills.abandoned_grace, Duration::from_secs(10));
    assert!(!config.cache.fills.finish_abandoned);
    // Half of max_size (20 GiB) unless set.
    assert_eq!(config.cache.fills.max_blob_size, 10 << 30);
    let config = resolve("max_size = \"1GiB\"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.cache.fills.max_blob_size, 512 << 20);
    let config = resolve("max_blob_size = \"3MiB\"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.cache.fills.max_blob_size, 3 << 20);
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = toml::from_str::<FileConfig>("[cache]\nmax_sise = \"1GiB\"\n")
        .err()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(err.contains("max_sise"), "{err}");
}

fn config_from(text: &str) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: "test".into(),
        message: e.message().to_owned(),
    })?;
    Config::resolve(file, Overrides::default())
}

#[test]
fn shared_deployments_default_to_safer_settings() {
    let auth_on_hit = |text: &str| config_from(text).map(|c| c.cache.auth_on_hit).ok();
    let credentials =
        "[[upstream.credentials]]\nhost = \"gcr.io\"\nusername = \"u\"\npassword = \"p\"\n";
    let wide = "[proxy]\nlisten = \"0.0.0.0:3128\"\nallow_clients = [\"10.0.0.0/8\"]\n";
    assert_eq!(auth_on_hit(""), Some(AuthOnHit::None));
    assert_eq!(auth_on_hit(credentials), Some(AuthOnHit::Upstream));
    assert_eq!(auth_on_hit(wide), Some(AuthOnHit::Upstream));
    let explicit = format!("{wide}[cache]\nauth_on_hit = \"none\"\n");
    assert_eq!(auth_on_hit(&explicit), Some(AuthOnHit::None));

    let constrained = |text: &str| config_from(text).map(|c| c.ca.name_constraints).ok();
    assert_eq!(constrained(""), Some(true));
    assert_eq!(constrained("[ca]\nname_constraints = false\n"), Some(false));
    assert_eq!(
        config_from("").map(|c| c.proxy.forward_ports).ok(),
        Some(vec![80])
    );
}

#[test]
fn a_parent_url_in_the_file_shows_no_password() {
    let text = "http://alice:hunter2@proxy:3128";
    let file: Result<FileConfig, _> = toml::from_str(&format!("[upstream]\nproxy = \"{text}\"\n"));
    let shown = format!("{file:?}");
    assert!(
        shown.contains("proxy:3128") && !shown.contains("hunter2"),
        "{shown}"
    );
}

fn resolve_text(toml: &str) -> Result<Config, String> {
    let file = toml::from_str::<FileConfig>(toml).map_err(|e| e.to_string())?;
    Config::resolve(file, Overrides::default()).map_err(|e| e.to_string())
}

#[test]
fn the_mirror_is_off_unless_it_has_an_address() {
    let config = resolve_text("").unwrap_or_else(|e| panic!("{e}"));
    assert!(config.mirror.is_none());
    let config =
        resolve_text("[mirror]\nlisten = \"127.0.0.1:5000\"").unwrap_or_else(|e| panic!("{e}"));
    let mirror = config.mirror.unwrap_or_else(|| panic!("no mirror"));
    assert_eq!(mirror.tls, MirrorTls::Plain);
    assert_eq!(mirror.default_registry, "registry-1.docker.io");
    assert!(!mirror.forward_authorization);
}

#[test]
fn bad_mirror_settings_name_their_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap_or_else(|e| panic!("{e}"));
    let junk = junk.display();
    for (mirror, key) in [
        ("listen = \"5000\"", "mirror.listen"),
        ("listen = \"0.0.0.0:5000\"", "mirror.listen"),
        (
            "listen = \"127.0.0.1:0\"\ntls_cert = \"/x\"",
            "mirror.tls_cert",
        ),
        (
            &format!("listen = \"127.0.0.1:0\"\ntls_cert = \"{junk}\"\ntls_key = \"{junk}\""),
            "mirror.tls_cert",
        ),
        (
            &format!(
                "listen = \"127.0.0.1:0\"\ntls_cert = \"{junk}\"\ntls_key = \"{junk}\"\nnames = [\"a\"]"
            ),
            "mirror.names",
        ),
        (
            "listen = \"127.0.0.1:0\"\nnames = [\"a b\"]",
            "mirror.names",
        ),
        (
            "listen = \"127.0.0.1:0\"\nregistries = [\"*\"]",
            "mirror.registries",
        ),
        (
            "listen = \"127.0.0.1:0\"\ndefault_registry = \"a/b\"",
            "mirror.default_registry",
        ),
    ] {
        let err = resolve_text(&format!("[mirror]\n{mirror}"))
            .err()
            .unwrap_or_default();
        assert!(err.starts_with(key), "{mirror}: {err}");
    }
}

#[test]
fn a_wide_mirror_needs_logins_or_an_allow_list_and_counts_as_shared() {
    let config = resolve_text(
        "[proxy]\nallow_clients = [\"10.0.0.0/8\"]\n[mirror]\nlisten = \"0.0.0.0:5000\"\n\
             names = [\"hoard.internal\", \"10.0.0.5\"]",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mirror = config.mirror.unwrap_or_else(|| panic!("no mirror"));
    assert_eq!(
        mirror.tls,
        MirrorTls::Minted(vec!["hoard.internal".into(), "10.0.0.5".into()])
    );
    assert_eq!(config.cache.auth_on_hit, AuthOnHit::Upstream);
}

#[test]
fn a_reload_names_only_the_changed_keys_that_need_a_restart() {
    let base = "[proxy]\nmax_connections = 10\n[cache]\nmax_size = \"1GiB\"\n";
    let old = config_from(base).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old.restart_keys(&old), Vec::<&str>::new());
    let new = config_from(&format!(
        "{base}max_fills = 3\n[intercept]\nhosts = [\"quay.io\"]\n[log]\nlevel = \"debug\"\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old.restart_keys(&new), ["log.level"]);
    let new = config_from(
        "[proxy]\nmax_connections = 11\nmax_connections_per_client = 3\n\
         [cache]\nmax_size = \"1GiB\"\nmin_free = \"1MiB\"\n[mirror]\nlisten = \"127.0.0.1:5000\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        old.restart_keys(&new),
        [
            "proxy.max_connections",
            "proxy.max_connections_per_client",
            "cache.min_free",
            "mirror.listen",
            "mirror.tls_cert, tls_key, names",
        ]
    );
}

#[test]
fn sections_compare_by_content() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:$2y$04$abcdefghijklmnopqrstuu\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "[proxy]\nauth_file = {:?}\n[upstream]\nresolve = {{ \"gcr.io\" = \"10.0.0.1:443\" }}\n",
        users.display().to_string()
    );
    let (a, b) = (config_from(&text), config_from(&text));
    let (Ok(a), Ok(b)) = (a, b) else {
        panic!("{text}");
    };
    // Each load salts its own dummy hash; the users are what counts.
    assert_eq!(a, b);
    let moved =
        config_from(&text.replace("10.0.0.1", "10.0.0.2")).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a.upstream.clients, moved.upstream.clients);
    assert_eq!(a.proxy, moved.proxy);
}
