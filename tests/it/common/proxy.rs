//! hoard started in-process against the fixture registry, built from a test config:
//! `Proxy::builder(&registry).cache("tag_ttl = \"1s\"").start().await`, or a config file for the
//! binary with `.write_config(dir, listen)`.

use std::path::{Path, PathBuf};

use super::registry::Registry;
use super::{CDN, REGISTRY};

/// hoard started in-process against a fixture registry.
pub(crate) struct Proxy {
    pub server: hoard::Server,
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

/// A test config for hoard: the fixture registry's names pinned to it and intercepted, its CA
/// trusted, and extra TOML lines for any section.
pub(crate) struct ProxyBuilder<'a> {
    registry: &'a Registry,
    dir: Option<tempfile::TempDir>,
    proxy: String,
    ca: String,
    cache: String,
    upstream: String,
    mirror: String,
    fleet: String,
    admin: Option<String>,
    admin_extra: String,
    upstream_cas: Vec<String>,
    tail: String,
    intercept: Option<String>,
    resolve: Option<String>,
}

impl Proxy {
    /// A config intercepting `registry.test` and resolving it and `cdn.test` to `registry`.
    pub(crate) fn builder(registry: &Registry) -> ProxyBuilder<'_> {
        ProxyBuilder {
            registry,
            dir: None,
            proxy: String::new(),
            ca: String::new(),
            cache: String::new(),
            upstream: String::new(),
            mirror: String::new(),
            fleet: String::new(),
            admin: None,
            admin_extra: String::new(),
            upstream_cas: Vec::new(),
            tail: String::new(),
            intercept: None,
            resolve: None,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Waits until no fill is in progress: a client has a blob's last bytes a moment before the
    /// blob is synced and in the store.
    pub(crate) async fn settled(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.server.fills_in_progress() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "fills still in progress after 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Path of a stored blob.
    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.cache_dir()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    }

    /// `http://<mirror address>`: the plain-HTTP mirror listener.
    /// The body of a GET of `path` on the admin listener (`/metrics`, `/` …).
    pub(crate) async fn admin(&self, path: &str) -> String {
        let admin = self.server.admin_addr().unwrap();
        reqwest::get(format!("http://{admin}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub(crate) fn mirror_url(&self) -> String {
        let addr = self.server.mirror_addr().expect("the mirror listener runs");
        format!("http://{addr}")
    }

    /// A client builder through hoard trusting only hoard's CA.
    pub(crate) fn client_builder(&self) -> reqwest::ClientBuilder {
        client_builder_via(&self.url(), &self.ca_pem)
    }

    /// A client through hoard trusting only hoard's CA; `h2` picks the protocol by ALPN.
    pub(crate) fn client(&self, h2: bool) -> reqwest::Client {
        client_via(&self.url(), &self.ca_pem, h2)
    }
}

impl ProxyBuilder<'_> {
    /// Adds TOML lines to `[proxy]`.
    pub(crate) fn proxy(mut self, toml: &str) -> Self {
        push_line(&mut self.proxy, toml);
        self
    }

    /// Lets CONNECTs reach the fixture registry by its address, so it can be tunnelled to
    /// (`connect_ports` and `allow_private_destinations` in `[proxy]`).
    pub(crate) fn tunnels_to_registry(self) -> Self {
        let port = self.registry.addr.port();
        self.proxy(&format!(
            "connect_ports = [443, {port}]\nallow_private_destinations = true"
        ))
    }

    /// Adds TOML lines to `[ca]`.
    pub(crate) fn ca(mut self, toml: &str) -> Self {
        push_line(&mut self.ca, toml);
        self
    }

    /// Adds TOML lines to `[cache]` (e.g. `tag_ttl = "1s"`).
    pub(crate) fn cache(mut self, toml: &str) -> Self {
        push_line(&mut self.cache, toml);
        self
    }

    /// Adds TOML lines to `[upstream]` (`[[upstream.credentials]]` tables fit here too).
    pub(crate) fn upstream(mut self, toml: &str) -> Self {
        push_line(&mut self.upstream, toml);
        self
    }

    /// Adds TOML lines to `[mirror]`; `listen = "127.0.0.1:0"` starts the mirror listener.
    pub(crate) fn mirror(mut self, toml: &str) -> Self {
        push_line(&mut self.mirror, toml);
        self
    }

    /// Trusts this CA (PEM) upstream too, beside the fixture registry's: a parent hoard's, whose
    /// leaves an edge hoard sees when the parent intercepts.
    pub(crate) fn upstream_ca(mut self, pem: &str) -> Self {
        self.upstream_cas.push(pem.to_owned());
        self
    }

    /// Adds TOML at the end of the file, whole tables (`[store.s3]`, say).
    pub(crate) fn tail(mut self, toml: &str) -> Self {
        push_line(&mut self.tail, toml);
        self
    }

    /// `admin.listen` instead of `127.0.0.1:0`: a test of a process must know the port.
    pub(crate) fn admin(mut self, listen: &str) -> Self {
        self.admin = Some(listen.to_owned());
        self
    }

    /// Adds TOML lines to `[admin]`.
    pub(crate) fn admin_toml(mut self, toml: &str) -> Self {
        push_line(&mut self.admin_extra, toml);
        self
    }

    /// Adds TOML lines to `[fleet]`.
    pub(crate) fn fleet(mut self, toml: &str) -> Self {
        push_line(&mut self.fleet, toml);
        self
    }

    /// `intercept.hosts` instead of `["registry.test"]`.
    pub(crate) fn intercept(mut self, hosts: &str) -> Self {
        self.intercept = Some(hosts.to_owned());
        self
    }

    /// `upstream.resolve` instead of the registry and CDN names pinned to the fixture; `"{}"`
    /// leaves hoard no way to the fixture but a parent proxy.
    pub(crate) fn resolve(mut self, table: &str) -> Self {
        self.resolve = Some(table.to_owned());
        self
    }

    /// Keeps hoard's CA and cache in `dir` (a store from an earlier run) instead of a new folder.
    pub(crate) fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Writes the config with hoard's CA and cache under `dir`, listening on `listen`, and
    /// returns its path (`dir/config.toml`).
    pub(crate) fn write_config(&self, dir: &Path, listen: &str) -> PathBuf {
        let upstream_ca = dir.join("upstream-ca.crt");
        std::fs::write(&upstream_ca, &self.registry.ca.pem).unwrap();
        let mut cas = vec![format!("\"{}\"", upstream_ca.display())];
        for (i, pem) in self.upstream_cas.iter().enumerate() {
            let path = dir.join(format!("upstream-ca-{i}.crt"));
            std::fs::write(&path, pem).unwrap();
            cas.push(format!("\"{}\"", path.display()));
        }
        let pinned = format!(
            r#"{{ "{REGISTRY}" = "{addr}", "{CDN}" = "{addr}" }}"#,
            addr = self.registry.addr
        );
        let text = format!(
            r#"
[proxy]
listen = "{listen}"
{proxy_extra}
[ca]
dir = "{ca}"
{ca_extra}
[cache]
dir = "{cache}"
{cache_extra}
[intercept]
hosts = {intercept}
[upstream]
extra_ca_files = [{cas}]
resolve = {resolve}
connect_timeout = "2s"
{upstream_extra}
[admin]
listen = "{admin}"
{admin_extra}
{mirror}
{fleet}
{tail}"#,
            proxy_extra = self.proxy,
            admin = self.admin.as_deref().unwrap_or("127.0.0.1:0"),
            admin_extra = self.admin_extra,
            ca_extra = self.ca,
            cache_extra = self.cache,
            upstream_extra = self.upstream,
            mirror = if self.mirror.is_empty() {
                String::new()
            } else {
                format!("[mirror]\n{}", self.mirror)
            },
            tail = self.tail,
            fleet = if self.fleet.is_empty() {
                String::new()
            } else {
                format!("[fleet]\n{}", self.fleet)
            },
            intercept = self
                .intercept
                .clone()
                .unwrap_or_else(|| format!(r#"["{REGISTRY}"]"#)),
            resolve = self.resolve.as_deref().unwrap_or(&pinned),
            ca = dir.join("ca").display(),
            cache = dir.join("cache").display(),
            cas = cas.join(", "),
        );
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts hoard in-process on a port of its own.
    pub(crate) async fn start(mut self) -> Proxy {
        let dir = match self.dir.take() {
            Some(dir) => dir,
            None => tempfile::tempdir().unwrap(),
        };
        let path = self.write_config(dir.path(), "127.0.0.1:0");
        let config = hoard::Config::load(Some(&path), Default::default()).unwrap();
        let server = hoard::Server::start(config).await.unwrap();
        let ca_pem = std::fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap();
        Proxy {
            server,
            dir,
            ca_pem,
        }
    }
}

fn push_line(section: &mut String, toml: &str) {
    section.push_str(toml);
    section.push('\n');
}

/// A client builder through the proxy at `proxy_url`, trusting only `ca_pem`.
pub(crate) fn client_builder_via(proxy_url: &str, ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy_url).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
}

/// A client through the proxy at `proxy_url`, trusting only `ca_pem`.
pub(crate) fn client_via(proxy_url: &str, ca_pem: &str, h2: bool) -> reqwest::Client {
    let builder = client_builder_via(proxy_url, ca_pem);
    let builder = if h2 { builder } else { builder.http1_only() };
    builder.build().unwrap()
}
