//! TLS: hoard's certificate authority, the leaf certificates it mints for intercepted hosts, and
//! the roots hoard trusts upstream.

mod ca;
mod leaf;
mod roots;

pub(crate) use ca::{CertificateAuthority, fingerprint_of, renew};
pub(crate) use leaf::server_config_from_files;
pub(crate) use roots::root_store;
