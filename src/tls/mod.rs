//! TLS: hoard's certificate authority, the leaf certificates it mints for intercepted hosts, and
//! the roots hoard trusts upstream.

mod ca;
mod leaf;
mod roots;

pub use ca::CertificateAuthority;
pub use roots::root_store;
