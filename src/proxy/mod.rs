//! The proxy listener: the front door, CONNECT (intercepted or tunnelled), plain `http://`
//! forwarding, and the setup scripts it serves (made in [`crate::edge::setup`]).

mod forward;
pub(crate) mod front;
mod intercept;
mod tunnel;

pub(crate) use front::{Front, bind};
