//! TLS: hoard's certificate authority, the leaf certificates it mints for intercepted hosts, and
//! the roots hoard trusts upstream.

mod ca;
mod leaf;
mod roots;

pub use ca::{CaError, CertificateAuthority};
pub use roots::{RootsError, root_store};
