//! hoard's certificate authority: loaded from (or created in) `ca.dir`, with the name constraints
//! a new CA is limited to, and the health check of its key file. Leaves are minted in `leaf.rs`.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Classify, Side};
use lru::LruCache;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, GeneralSubtree,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

/// Leaf TLS configs kept ready: one per intercepted host, so 1024 covers any realistic set.
const LEAF_CACHE_SIZE: usize = 1024;

/// Errors loading the CA or minting a leaf.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} holds no usable {what}")]
    BadPem { path: PathBuf, what: &'static str },
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    #[error("tls setup failed")]
    Tls(#[from] rustls::Error),
    #[error(
        "hoard's CA cannot sign for {name} ({reason}): it was created limited to other names \
         (ca.name_constraints); move ca/ away and restart to create one that covers them, \
         and give clients the new ca.crt"
    )]
    NotCovered { name: String, reason: String },
}

/// The CA's files and certificates are hoard's own business: a failure is internal.
impl Classify for CaError {
    fn side(&self) -> Side {
        Side::Internal
    }
}

/// The CA: its certificate (served at `/ca.crt`), its signing key, and the minted leaves.
pub(crate) struct CertificateAuthority {
    /// Where `ca.key` was read from, for the health check.
    pub(super) key_path: PathBuf,
    /// The signing key's public half, to tell that `ca.key` still holds it.
    pub(super) public_key: Vec<u8>,
    pub(super) ca_pem: String,
    pub(super) ca_der: CertificateDer<'static>,
    pub(super) issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf, made at start: signing is then ~18 µs instead of ~40 µs.
    pub(super) leaf_key: KeyPair,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) leaves: Mutex<LruCache<String, Arc<ServerConfig>>>,
    pub(super) minted: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads `dir/ca.crt` and `dir/ca.key`, creating both (ECDSA P-256, 10 years, key mode 0600)
    /// when neither exists. A new CA is limited to signing `constrain_to` (host names, `*.domain`
    /// patterns, IP addresses) when that is given.
    pub(crate) fn load_or_create(
        dir: &Path,
        provider: Arc<CryptoProvider>,
        constrain_to: Option<Vec<String>>,
    ) -> Result<Self, CaError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if !cert_path.exists() && !key_path.exists() {
            create(dir, &cert_path, &key_path, constrain_to)?;
        }
        let ca_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| CaError::BadPem {
            path: key_path.clone(),
            what: "private key",
        })?;
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| CaError::BadPem {
                path: cert_path.clone(),
                what: "certificate",
            })?;
        let public_key = key.public_key_raw().to_vec();
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(|_| CaError::BadPem {
            path: cert_path,
            what: "CA certificate matching ca.key",
        })?;
        Ok(CertificateAuthority {
            key_path,
            public_key,
            ca_pem,
            ca_der,
            issuer,
            leaf_key: KeyPair::generate()?,
            provider,
            leaves: Mutex::new(LruCache::new(
                NonZeroUsize::new(LEAF_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
            minted: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether `ca.key` on disk can still be read and holds the key hoard signs with: a key file
    /// deleted, made unreadable or replaced under a running hoard would make the next start fail,
    /// so `/healthz` reports it now. Reads one small file.
    pub(crate) fn key_file_problem(&self) -> Option<String> {
        let pem = match read(&self.key_path) {
            Ok(pem) => pem,
            Err(err) => return Some(err.to_string()),
        };
        match KeyPair::from_pem(&pem) {
            Ok(key) if key.public_key_raw() == self.public_key.as_slice() => None,
            Ok(_) => Some(format!(
                "{} no longer holds the key hoard signs with",
                self.key_path.display()
            )),
            Err(_) => Some(format!(
                "{} holds no usable private key",
                self.key_path.display()
            )),
        }
    }

    /// The CA certificate in PEM, for `/ca.crt`.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

/// Constraints that let the CA sign only the given names: a DNS subtree per host (which covers
/// its subdomains, so `*.pkg.dev` becomes `pkg.dev`), exactly the given IP addresses, and no
/// other IP address at all (IP names are unconstrained unless an IP subtree is present).
fn name_constraints(names: &[String]) -> NameConstraints {
    let mut permitted = Vec::new();
    let mut ips = false;
    for name in names {
        match name.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => {
                ips = true;
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::V4(
                    ip.octets(),
                    [255; 4],
                )));
            }
            Ok(std::net::IpAddr::V6(ip)) => {
                ips = true;
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::V6(
                    ip.octets(),
                    [255; 16],
                )));
            }
            Err(_) => permitted.push(GeneralSubtree::DnsName(
                name.trim_start_matches("*.").to_owned(),
            )),
        }
    }
    let excluded = if ips {
        Vec::new()
    } else {
        vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ]
    };
    NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|error| CaError::Io {
        action: "read",
        path: path.to_owned(),
        error,
    })
}

fn create(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    constrain_to: Option<Vec<String>>,
) -> Result<(), CaError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |error| CaError::Io {
            action,
            path,
            error,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "hoard registry proxy CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "hoard");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = constrain_to.map(|names| name_constraints(&names));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3652);
    let cert = params.self_signed(&key)?;

    // The key first, created 0600 from the start so it is never readable by others.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(key_path).map_err(io("create", key_path))?;
    file.write_all(key.serialize_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", key_path))?;
    std::fs::write(cert_path, cert.pem()).map_err(io("write", cert_path))?;
    Ok(())
}
