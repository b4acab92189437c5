//! Leaf certificates: one minted per intercepted host on first use, signed by hoard's CA, and the
//! TLS server configs made from them kept in an LRU.

use std::sync::Arc;

use lru::LruCache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::ca::{CaError, CertificateAuthority};

impl CertificateAuthority {
    /// Leaf certificates minted since start.
    pub fn minted(&self) -> u64 {
        self.minted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A TLS server config presenting a leaf for `host`, minted on first use.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Some(config) = self.lock().get(&host) {
            return Ok(config.clone());
        }
        let config = Arc::new(self.mint(&host)?);
        self.minted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().put(host, config.clone());
        Ok(config)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<ServerConfig>>> {
        // A panic while holding this lock cannot leave the cache inconsistent: take it anyway.
        self.leaves.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, CaError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into()?),
        }];
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, host.to_owned());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        // 397 days: the longest validity browsers and Apple's TLS stack accept for a leaf.
        params.not_after = now + Duration::days(397);
        params.serial_number = Some(self.serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&self.leaf_key, &self.issuer)?;

        let chain = vec![leaf.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
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
