//! The roots hoard trusts upstream: webpki's, the system store's, and `upstream.extra_ca_files`.

use rustls::RootCertStore;

use crate::error::{Classify, Side};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The roots hoard trusts: the compiled-in Mozilla roots, the system store, and `extra` PEM files.
pub(crate) fn root_store(extra: &[std::path::PathBuf]) -> Result<RootCertStore, RootsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, "system roots loaded");
    for path in extra {
        let error = |message: String| RootsError {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(e.to_string()))?;
        if certs.is_empty() {
            return Err(error("no certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| error(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// An `upstream.extra_ca_files` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read extra CA file {path}: {message}")]
pub(crate) struct RootsError {
    path: String,
    message: String,
}

/// `upstream.extra_ca_files` is the operator's input.
impl Classify for RootsError {
    fn side(&self) -> Side {
        Side::Client
    }
}
