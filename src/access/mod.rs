//! Who may use hoard and how much of it: connection limits per client and in total (with idle
//! timeouts and eviction of the oldest idle connection), and proxy logins (htpasswd, bcrypt).

pub mod limits;
pub mod login;

pub use limits::{Limits, Ticket};
pub use login::{AuthVerdict, ProxyAuth};
