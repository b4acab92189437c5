//! TLS: hoard's certificate authority, the leaf certificates it mints for intercepted hosts, and
//! the roots hoard trusts upstream.

mod ca;
mod leaf;
mod roots;

pub use ca::CertificateAuthority;
pub use leaf::server_config_from_files;
pub use roots::root_store;
