//! The one body type hoard sends and forwards, and its empty and whole-bytes forms.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// The error type carried by bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response hoard sends and every request it forwards.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// An empty body.
pub(crate) fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body holding `bytes`.
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
