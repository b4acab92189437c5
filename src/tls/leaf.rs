//! Leaf certificates: one minted per intercepted host on first use, signed by hoard's CA, and the
//! TLS server configs made from them kept in an LRU.

use std::sync::Arc;

use lru::LruCache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

use super::ca::{CaError, CertificateAuthority};

impl CertificateAuthority {
    /// Leaf certificates minted since start.
    pub(crate) fn minted(&self) -> u64 {
        self.minted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A TLS server config presenting a leaf for `host`, minted on first use.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Some(config) = self.lock().get(&host) {
            return Ok(config.clone());
        }
        let names = std::slice::from_ref(&host);
        let leaf = self.leaf(names)?;
        if self.constrained {
            self.check_covers(&leaf, names)?;
        }
        let config = Arc::new(self.config(leaf)?);
        self.minted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().put(host, config.clone());
        Ok(config)
    }

    /// Whether a leaf for `host` would be accepted by a client trusting the CA: a CA created with
    /// name constraints does not cover a host added to `intercept.hosts` later. An unconstrained
    /// CA covers every host, and a covered host's leaf is then kept ready.
    pub(crate) fn covers(&self, host: &str) -> bool {
        !self.constrained || !matches!(self.server_config(host), Err(CaError::NotCovered { .. }))
    }

    /// A TLS server config presenting one leaf for all of `names` (DNS names or IP addresses),
    /// minted now: the mirror listener's certificate. Each name is checked as a client would
    /// check it: a CA created with name constraints for other names cannot serve them.
    pub(crate) fn server_config_for(&self, names: &[String]) -> Result<Arc<ServerConfig>, CaError> {
        let leaf = self.leaf(names)?;
        self.check_covers(&leaf, names)?;
        self.minted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Arc::new(self.config(leaf)?))
    }

    /// Verifies `leaf` for each of `names` against the CA alone, name constraints included.
    fn check_covers(
        &self,
        leaf: &CertificateDer<'static>,
        names: &[String],
    ) -> Result<(), CaError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|err| rustls::Error::General(err.to_string()))?;
        for name in names {
            let not_covered = |reason: String| CaError::NotCovered {
                name: name.clone(),
                reason,
            };
            let server_name =
                ServerName::try_from(name.clone()).map_err(|err| not_covered(err.to_string()))?;
            verifier
                .verify_server_cert(leaf, &[], &server_name, &[], UnixTime::now())
                .map_err(|err| not_covered(err.to_string()))?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<ServerConfig>>> {
        // A panic while holding this lock cannot leave the cache inconsistent: take it anyway.
        self.leaves.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server config presenting `leaf` and the CA.
    fn config(&self, leaf: CertificateDer<'static>) -> Result<ServerConfig, CaError> {
        let chain = vec![leaf, self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        server_config(self.provider.clone(), chain, key)
    }

    /// A leaf for `names`, signed by the CA. The common name is the first DNS name, or none:
    /// OpenSSL checks a common name that looks like an address against the CA's DNS name
    /// constraints, and refuses it.
    fn leaf(&self, names: &[String]) -> Result<CertificateDer<'static>, CaError> {
        let mut params = CertificateParams::default();
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        params.distinguished_name = DistinguishedName::new();
        if let Some(dns) = names
            .iter()
            .find(|name| name.parse::<std::net::IpAddr>().is_err())
        {
            params
                .distinguished_name
                .push(DnType::CommonName, dns.clone());
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        // 397 days: the longest validity browsers and Apple's TLS stack accept for a leaf.
        params.not_after = now + Duration::days(397);
        params.serial_number = Some(self.serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        Ok(params
            .signed_by(&self.leaf_key, &self.issuer)?
            .der()
            .clone())
    }

    fn serial(&self) -> Result<SerialNumber, CaError> {
        let mut bytes = [0u8; 16];
        self.provider
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        bytes[0] &= 0x7f; // keep the serial positive
        Ok(SerialNumber::from_slice(&bytes))
    }
}

/// A TLS server config for a certificate chain and its key, offering h2 and HTTP/1.1.
pub(super) fn server_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, CaError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS server config from an operator's PEM files: the certificate chain, leaf first, and
/// its private key.
pub(crate) fn server_config_from_files(
    provider: Arc<rustls::crypto::CryptoProvider>,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<ServerConfig>, CaError> {
    use rustls_pki_types::pem::PemObject as _;
    let bad = |path: &std::path::Path, what| CaError::BadPem {
        path: path.to_owned(),
        what,
    };
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|_| bad(cert, "certificate chain"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| bad(key, "private key"))?;
    Ok(Arc::new(server_config(provider, chain, key)?))
}
