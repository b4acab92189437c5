//! Network vocabulary, no I/O: host names and `host:port`, intercept patterns, address blocks
//! and the private-address table, proxy URLs and `no_proxy`.

mod addr;
mod host;
mod no_proxy;
mod patterns;
mod proxy_url;

pub use addr::{Cidr, is_noncanonical_numeric, is_private};
pub(crate) use host::{authority, is_dns_name, split_authority, unbracket};
pub use no_proxy::NoProxy;
pub use patterns::HostPatterns;
pub use proxy_url::{Parent, ParentUrl, Protocol};
