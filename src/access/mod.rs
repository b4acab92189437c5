//! Who may use hoard and how much of it: connection limits per client and in total (with idle
//! timeouts and eviction of the oldest idle connection), blob fills per client and in total, and
//! proxy logins (htpasswd, bcrypt).

pub mod accept;
pub mod fills;
pub mod limits;
pub mod login;

pub use fills::{ClientAddr, FillSlot, FillSlots};
pub use login::{AuthVerdict, ProxyAuth};
