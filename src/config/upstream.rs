//! `[upstream]`: how hoard reaches registries, and its own credentials for them.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::duration_key;
use super::error::ConfigError;
use super::groups::Groups;
use super::htpasswd::Htpasswd;
use super::shaping::{LimitSection, Shaping, shaping};
use crate::net::{NoProxy, Parent, ParentUrl};
use crate::oci::registry_key;

/// `[upstream]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    #[serde(default)]
    pub extra_ca_files: Vec<PathBuf>,
    #[serde(default)]
    pub resolve: HashMap<String, String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    #[serde(default)]
    pub credentials: Vec<CredentialSection>,
    pub proxy: Option<ParentUrl>,
    #[serde(default)]
    pub no_proxy: Vec<String>,
    /// The most hoard reads from all registries per second, like `40Mbit`.
    pub max_rate: Option<String>,
    #[serde(default)]
    pub limits: Vec<LimitSection>,
}

/// `[[upstream.credentials]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    pub host: String,
    /// Where the account comes from: `"static"` (default), `"docker-config"`, `"helper"`,
    /// `"gcp-metadata"` or `"azure-identity"`.
    pub source: Option<String>,
    /// For `source = "helper"`: the docker credential helper's name (`ecr-login` runs
    /// `docker-credential-ecr-login` from `PATH`).
    pub helper: Option<String>,
    /// For `source = "docker-config"`: a docker `config.json` (or a mounted
    /// `kubernetes.io/dockerconfigjson` Secret).
    pub config_file: Option<PathBuf>,
    /// For `source = "azure-identity"`: the IMDS address, `host` or `host:port` (plain http;
    /// default `169.254.169.254`).
    pub endpoint: Option<String>,
    /// For `source = "azure-identity"`: the client id of a user-assigned managed identity
    /// (default: the system-assigned one).
    pub client_id: Option<String>,
    /// For `source = "azure-identity"`: the Entra tenant named in the registry's token exchange.
    pub tenant: Option<String>,
    #[serde(default)]
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Who hoard lends this account to: proxy users, `"@group"`s, or `"*"`.
    pub lend_to: Option<Vec<String>>,
}

/// `[upstream]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// What the upstream clients are built from: a reload that changes it builds new ones.
    pub clients: UpstreamClients,
    /// Longest silence allowed while reading an upstream body.
    pub read_timeout: Duration,
    /// hoard's own credentials per registry host.
    pub credentials: Vec<Credential>,
    /// How fast hoard reads from registries, and how many fills each gets at once.
    pub shaping: Shaping,
}

/// The settings the upstream clients are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamClients {
    /// PEM files trusted for upstream TLS in addition to the system and webpki roots.
    pub extra_ca_files: Vec<PathBuf>,
    /// Fixed upstream addresses by host name, instead of DNS.
    pub resolve: HashMap<String, SocketAddr>,
    /// Time allowed for an upstream TCP connect.
    pub connect_timeout: Duration,
    /// The proxy upstream connections go through (`upstream.proxy`); `None`: straight.
    pub parent: Option<Parent>,
    /// Destinations reached straight even with a parent (`upstream.no_proxy`).
    pub no_proxy: NoProxy,
    /// Whether tunnels and plain forwards may reach private and loopback addresses
    /// (`proxy.allow_private_destinations`: the guarded client is built with it).
    pub allow_private_destinations: bool,
}

/// Credentials hoard uses for a registry when the client sends none.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `host`, or `host:port` unless the port is 443, lowercase.
    pub host: String,
    pub username: String,
    pub password: String,
    /// No account: hoard answers a registry's Bearer challenge with an anonymous pull token
    /// (as Docker Hub hands out), and a Basic one not at all. The mirror's stand-in for a
    /// client that logs in to no registry.
    pub anonymous: bool,
    /// Who hoard lends this account to (`lend_to`).
    pub lend_to: LendTo,
    /// Where the account comes from.
    pub source: CredentialSource,
}

/// Where one of hoard's registry accounts comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// `username` and `password` (or `password_file`), as configured.
    Static,
    /// The `auths` entry for the host in a docker `config.json`, read again each time the
    /// account is needed, so a rewritten file (a rotated Secret) takes effect at once.
    DockerConfig(PathBuf),
    /// What a docker credential helper (`docker-credential-<name> get`) says, asked each time the
    /// account is needed.
    Helper(String),
    /// The VM's service-account token from the GCP metadata server.
    GcpMetadata,
    /// An ACR refresh token for the VM's managed identity: its Entra token from IMDS, exchanged
    /// at the registry.
    AzureIdentity(AzureIdentity),
}

impl CredentialSource {
    /// The `source` value that names it.
    pub fn name(&self) -> &'static str {
        match self {
            CredentialSource::Static => "static",
            CredentialSource::DockerConfig(_) => "docker-config",
            CredentialSource::Helper(_) => "helper",
            CredentialSource::GcpMetadata => "gcp-metadata",
            CredentialSource::AzureIdentity(_) => "azure-identity",
        }
    }
}

/// Which managed identity `source = "azure-identity"` asks IMDS for, and where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AzureIdentity {
    /// The IMDS address: `host` or `host:port`, asked over plain http.
    pub endpoint: String,
    /// A user-assigned identity's client id; `None`: the VM's system-assigned identity.
    pub client_id: Option<String>,
    /// The Entra tenant sent with the exchange, if any.
    pub tenant: Option<String>,
}

/// Where IMDS answers on every Azure VM.
const IMDS_ENDPOINT: &str = "169.254.169.254";

/// Who hoard lends one of its registry accounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LendTo {
    /// Every client (`lend_to = ["*"]`).
    Everyone,
    /// These proxy users (groups resolved); empty: nobody.
    Users(BTreeSet<String>),
}

impl LendTo {
    /// Whether a request by `user` (the hoard login it gave, if any) may use the account.
    pub fn lends_to(&self, user: Option<&str>) -> bool {
        match self {
            LendTo::Everyone => true,
            LendTo::Users(users) => user.is_some_and(|user| users.contains(user)),
        }
    }
}

/// What `lend_to` is resolved against: the proxy users and groups, and what an absent `lend_to`
/// means.
pub(super) struct Lenders<'a> {
    pub(super) users: Option<&'a Htpasswd>,
    pub(super) groups: &'a Groups,
    /// `lend_to` absent means `"*"` (a hoard only this host reaches, with no logins) or nobody.
    pub(super) default_everyone: bool,
}

impl Credential {
    /// The anonymous stand-in for `host` (see [`Credential::anonymous`]).
    pub(crate) fn anonymous(host: &str) -> Credential {
        Credential {
            host: host.to_owned(),
            username: String::new(),
            password: String::new(),
            anonymous: true,
            lend_to: LendTo::Everyone,
            source: CredentialSource::Static,
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential({}@{}, password redacted{})",
            self.username,
            self.host,
            if self.anonymous { ", anonymous" } else { "" }
        )
    }
}

impl UpstreamConfig {
    /// hoard's credentials for `host_key` (`host` or `host:port`) lent to `user` (the hoard
    /// login of the request, if any): the first block for the host whose `lend_to` includes it.
    pub(crate) fn credential_for(&self, host_key: &str, user: Option<&str>) -> Option<&Credential> {
        self.credentials
            .iter()
            .find(|c| c.host == host_key && c.lend_to.lends_to(user))
    }

    /// hoard's first credentials for `host_key`, to whoever asks: for a fleet node's request,
    /// when the node says it lent the account.
    pub(crate) fn any_credential_for(&self, host_key: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.host == host_key)
    }
}

/// `[upstream]` and its `[[upstream.credentials]]`; `allow_private_destinations` is the
/// `[proxy]` key the guarded client is built with.
pub(super) fn upstream(
    section: UpstreamSection,
    allow_private_destinations: bool,
    lenders: &Lenders<'_>,
) -> Result<UpstreamConfig, ConfigError> {
    let connect_timeout = duration_key("upstream.connect_timeout", section.connect_timeout, 10)?;
    let read_timeout = duration_key("upstream.read_timeout", section.read_timeout, 30)?;
    let mut resolve = HashMap::new();
    for (host, addr) in section.resolve {
        let parsed = addr.parse().map_err(|_| ConfigError::Invalid {
            key: "upstream.resolve",
            message: format!("{addr:?} for {host:?} is not an address like 10.1.2.3:443"),
        })?;
        resolve.insert(host.to_ascii_lowercase(), parsed);
    }
    let parent = section
        .proxy
        .as_ref()
        .map(|url| Parent::parse(&url.0))
        .transpose()
        .map_err(|message| ConfigError::Invalid {
            key: "upstream.proxy",
            message,
        })?;
    let no_proxy = NoProxy::parse(&section.no_proxy).map_err(|message| ConfigError::Invalid {
        key: "upstream.no_proxy",
        message,
    })?;
    let credentials = section
        .credentials
        .into_iter()
        .map(|section| credential(section, lenders))
        .collect::<Result<Vec<_>, _>>()?;
    let shaping = shaping(section.max_rate, section.limits)?;
    Ok(UpstreamConfig {
        clients: UpstreamClients {
            extra_ca_files: section.extra_ca_files,
            resolve,
            connect_timeout,
            parent,
            no_proxy,
            allow_private_destinations,
        },
        read_timeout,
        credentials,
        shaping,
    })
}

/// One `[[upstream.credentials]]`: a registry host and exactly one of a password or a file
/// holding it.
fn credential(
    section: CredentialSection,
    lenders: &Lenders<'_>,
) -> Result<Credential, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "upstream.credentials",
        message,
    };
    // As hoard keys registries: lowercase, port 443 dropped, Docker Hub's names folded.
    let host = registry_key(section.host.trim())
        .ok_or_else(|| invalid(format!("{:?} is not a registry host", section.host)))?;
    let source = section.source.as_deref().unwrap_or("static");
    if source != "azure-identity"
        && (section.endpoint.is_some() || section.client_id.is_some() || section.tenant.is_some())
    {
        return Err(invalid(format!(
            "{host}: endpoint, client_id and tenant are for source = \"azure-identity\""
        )));
    }
    let (source, username, password) = match source {
        "static" => {
            if section.config_file.is_some() || section.helper.is_some() {
                return Err(invalid(format!(
                    "{host}: config_file and helper are for source = \"docker-config\" and \"helper\""
                )));
            }
            if section.username.is_empty() {
                return Err(invalid(format!("{host}: give username (and a password)")));
            }
            let password = static_password(&host, section.password, section.password_file)
                .map_err(&invalid)?;
            (CredentialSource::Static, section.username, password)
        }
        "docker-config" => {
            no_static_account(&section, &host, "docker-config").map_err(&invalid)?;
            let file = section.config_file.ok_or_else(|| {
                invalid(format!(
                    "{host}: source = \"docker-config\" needs config_file"
                ))
            })?;
            (
                CredentialSource::DockerConfig(file),
                String::new(),
                String::new(),
            )
        }
        "helper" => {
            no_static_account(&section, &host, "helper").map_err(&invalid)?;
            let helper = section
                .helper
                .filter(|name| valid_helper_name(name))
                .ok_or_else(|| {
                    invalid(format!(
                        "{host}: source = \"helper\" needs helper, a name like \"ecr-login\""
                    ))
                })?;
            (
                CredentialSource::Helper(helper),
                String::new(),
                String::new(),
            )
        }
        "gcp-metadata" => {
            no_static_account(&section, &host, "gcp-metadata").map_err(&invalid)?;
            (CredentialSource::GcpMetadata, String::new(), String::new())
        }
        "azure-identity" => {
            no_static_account(&section, &host, "azure-identity").map_err(&invalid)?;
            let identity =
                azure_identity(&section).map_err(|why| invalid(format!("{host}: {why}")))?;
            (
                CredentialSource::AzureIdentity(identity),
                String::new(),
                String::new(),
            )
        }
        other => {
            return Err(invalid(format!(
                "{host}: source {other:?} is not one this hoard has (\"static\", \"docker-config\", \"helper\", \"gcp-metadata\", \"azure-identity\")"
            )));
        }
    };
    let lend_to = lend_to(&host, section.lend_to, lenders)?;
    Ok(Credential {
        host,
        username,
        password,
        anonymous: false,
        lend_to,
        source,
    })
}

/// Whether `name` may name a docker credential helper (`docker-credential-<name>`, run from
/// `PATH`): letters, digits, `-`, `_` and `.`, so that it cannot name a path.
pub fn valid_helper_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A source other than `"static"` gives the account itself: no `username` or password here.
fn no_static_account(section: &CredentialSection, host: &str, source: &str) -> Result<(), String> {
    let given = !section.username.is_empty()
        || section.password.is_some()
        || section.password_file.is_some();
    match given {
        true => Err(format!(
            "{host}: source = \"{source}\" gives the account itself; no username or password here"
        )),
        false => Ok(()),
    }
}

/// The identity of `source = "azure-identity"`: `endpoint` a bare `host` or `host:port` (the
/// scheme is http, the path IMDS's own), `client_id` and `tenant` not empty when given.
fn azure_identity(section: &CredentialSection) -> Result<AzureIdentity, String> {
    let endpoint = section.endpoint.as_deref().unwrap_or(IMDS_ENDPOINT);
    let bare = !endpoint.is_empty()
        && !endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
        && endpoint.parse::<http::uri::Authority>().is_ok();
    if !bare {
        return Err(format!(
            "endpoint {endpoint:?} is not an IMDS address like \"169.254.169.254\" or \"host:port\""
        ));
    }
    let given = |key: &str, value: &Option<String>| match value.as_deref().map(str::trim) {
        Some("") => Err(format!("{key} is empty")),
        value => Ok(value.map(str::to_owned)),
    };
    Ok(AzureIdentity {
        endpoint: endpoint.to_owned(),
        client_id: given("client_id", &section.client_id)?,
        tenant: given("tenant", &section.tenant)?,
    })
}

/// The password of a static account: exactly one of `password` and `password_file`.
fn static_password(
    host: &str,
    password: Option<String>,
    password_file: Option<PathBuf>,
) -> Result<String, String> {
    match (password, password_file) {
        (Some(password), None) => Ok(password),
        (None, Some(path)) => Ok(std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_owned()),
        _ => Err(format!(
            "{host}: give exactly one of password and password_file"
        )),
    }
}

/// `lend_to` of the credentials for `host`: every name a user of `proxy.auth_file` or a group
/// of `proxy.groups_file` (`"@group"`), or `"*"`.
fn lend_to(
    host: &str,
    names: Option<Vec<String>>,
    lenders: &Lenders<'_>,
) -> Result<LendTo, ConfigError> {
    let Some(names) = names else {
        return Ok(match lenders.default_everyone {
            true => LendTo::Everyone,
            false => LendTo::Users(BTreeSet::new()),
        });
    };
    let invalid = |message: String| ConfigError::Invalid {
        key: "upstream.credentials.lend_to",
        message: format!("{host}: {message}"),
    };
    if names.iter().any(|name| name == "*") {
        return Ok(LendTo::Everyone);
    }
    let users = lenders
        .groups
        .users_named(&names, lenders.users)
        .map_err(|message| invalid(format!("{message}, or \"*\" for everyone")))?;
    Ok(LendTo::Users(users))
}
