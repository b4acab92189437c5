//! Who may use hoard and how much of it: connection limits per client and in total (with idle
//! timeouts and eviction of the oldest idle connection), blob fills per client and in total, and
//! proxy logins (htpasswd, bcrypt).

pub(crate) mod accept;
pub(crate) mod fills;
pub(crate) mod limits;
pub(crate) mod login;

pub(crate) use fills::{ClientAddr, FillSlot, FillSlots, HostSlot, HostSlots};
pub(crate) use login::{AuthVerdict, ProxyAuth, User};
