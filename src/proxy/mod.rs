//! The proxy listener: the front door, CONNECT (intercepted or tunnelled), plain `http://`
//! forwarding, and the setup scripts it serves.

mod forward;
pub mod front;
mod intercept;
pub mod setup;
mod tunnel;

pub(crate) use front::{Front, bind};
