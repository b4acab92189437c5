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

/// How long a new CA lasts: 3 × 365 days, at most 3 years, so a lost key is not good for a decade.
const CA_DAYS: i64 = 3 * 365;

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
    /// Whether the CA carries name constraints: then each host is checked before it is served.
    pub(super) constrained: bool,
    /// When the CA certificate expires, in seconds since the Unix epoch.
    pub(super) not_after: i64,
    /// Whether this start created the CA (clients have yet to trust it) or loaded it.
    pub(super) created: bool,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads `dir/ca.crt` and `dir/ca.key`, creating both (ECDSA P-256, 3 years, key mode 0600)
    /// when neither exists. A new CA is limited to signing `constrain_to` (host names, `*.domain`
    /// patterns, IP addresses) when that is given.
    pub(crate) fn load_or_create(
        dir: &Path,
        provider: Arc<CryptoProvider>,
        constrain_to: Option<Vec<String>>,
    ) -> Result<Self, CaError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let created = !cert_path.exists() && !key_path.exists();
        if created {
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
        let (constrained, not_after) = x509_parser::parse_x509_certificate(&ca_der)
            .ok()
            .and_then(|(_, cert)| {
                let constrained = cert.name_constraints().ok()?.is_some();
                Some((constrained, cert.validity().not_after.timestamp()))
            })
            .ok_or_else(|| CaError::BadPem {
                path: cert_path.clone(),
                what: "CA certificate",
            })?;
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
            constrained,
            not_after,
            created,
        })
    }

    /// `sha256:<hex>` of the CA certificate's DER: what clients check a setup script against.
    pub(crate) fn fingerprint(&self) -> String {
        fingerprint(&self.ca_der)
    }

    /// Whether this start created the CA rather than loaded it.
    pub(crate) fn created(&self) -> bool {
        self.created
    }

    /// When the CA certificate expires, in seconds since the Unix epoch.
    pub(crate) fn not_after(&self) -> i64 {
        self.not_after
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

/// `sha256:<64 lowercase hex>` of a certificate's DER.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", const_hex::encode(sha2::Sha256::digest(der)))
}

/// The fingerprint of `dir/ca.crt`, or `None` when there is no such file.
pub(crate) fn fingerprint_of(dir: &Path) -> Result<Option<String>, CaError> {
    let cert_path = dir.join("ca.crt");
    if !cert_path.exists() {
        return Ok(None);
    }
    let pem = read(&cert_path)?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| CaError::BadPem {
        path: cert_path,
        what: "certificate",
    })?;
    Ok(Some(fingerprint(&der)))
}

/// Constraints that let the CA sign only the given names: a DNS subtree per host (which covers
/// its subdomains, so `*.pkg.dev` becomes `pkg.dev`), exactly the given IP addresses, and no
/// other IP address at all (IP names are unconstrained unless an IP subtree is present).
fn name_constraints(names: &[String]) -> NameConstraints {
    let mut permitted = Vec::new();
    let (mut v4, mut v6) = (false, false);
    for name in names {
        match name.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => {
                v4 = true;
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::V4(
                    ip.octets(),
                    [255; 4],
                )));
            }
            Ok(std::net::IpAddr::V6(ip)) => {
                v6 = true;
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
    // A family with no permitted address is excluded whole: a permitted IPv4 address alone
    // would otherwise leave every IPv6 address open, and the other way round.
    let mut excluded = Vec::new();
    if !v4 {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])));
    }
    if !v6 {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])));
    }
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

/// Writes a new CA (a new key) into `dir`, replacing `ca.crt` and `ca.key`: both are written
/// beside them under temporary names, then renamed into place, so a reader sees the old pair or
/// the new one. A running hoard keeps its CA; the next start uses the new one. Gives the new
/// fingerprint.
pub(crate) fn renew(dir: &Path, constrain_to: Option<Vec<String>>) -> Result<String, CaError> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (new_cert, new_key) = (dir.join(".ca.crt.new"), dir.join(".ca.key.new"));
    for stale in [&new_cert, &new_key] {
        // Left by a renewal that stopped half-way; absent is the usual case.
        let _ = std::fs::remove_file(stale);
    }
    let der = create(dir, &new_cert, &new_key, constrain_to)?;
    for (from, to) in [(&new_key, &key_path), (&new_cert, &cert_path)] {
        std::fs::rename(from, to).map_err(io("replace", to))?;
    }
    Ok(fingerprint(&der))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CaError {
    let path = path.to_owned();
    move |error| CaError::Io {
        action,
        path,
        error,
    }
}

/// Creates a new CA: the key at `key_path` (mode 0600), the certificate at `cert_path`, whose
/// DER it gives.
fn create(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    constrain_to: Option<Vec<String>>,
) -> Result<Vec<u8>, CaError> {
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
    params.not_after = now + Duration::days(CA_DAYS);
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
    let mut file = std::fs::File::create(cert_path).map_err(io("create", cert_path))?;
    file.write_all(cert.pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", cert_path))?;
    Ok(cert.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_all() -> GeneralSubtree {
        GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4]))
    }

    fn v6_all() -> GeneralSubtree {
        GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16]))
    }

    #[test]
    fn an_ip_family_no_name_uses_stays_excluded() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let only_dns = name_constraints(&names(&["gcr.io"]));
        assert_eq!(only_dns.excluded_subtrees, vec![v4_all(), v6_all()]);
        let with_v4 = name_constraints(&names(&["gcr.io", "10.0.0.5"]));
        assert_eq!(with_v4.excluded_subtrees, vec![v6_all()]);
        let with_v6 = name_constraints(&names(&["fd00::5"]));
        assert_eq!(with_v6.excluded_subtrees, vec![v4_all()]);
        let both = name_constraints(&names(&["10.0.0.5", "fd00::5"]));
        assert!(both.excluded_subtrees.is_empty());
    }
}
