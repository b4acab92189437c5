//! The proxy listener: the front door, CONNECT (intercepted or tunnelled), plain `http://`
//! forwarding, and the setup scripts it serves.

mod forward;
pub(crate) mod front;
mod intercept;
pub(crate) mod setup;
mod tunnel;

pub(crate) use front::{Front, bind};
