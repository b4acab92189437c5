//! One error taxonomy. Every error type of hoard says whose fault it is ([`Side`]): the client's
//! (a bad request, a refused destination, a bad config), the upstream's (unreachable, slow,
//! broken), or hoard's own (the disk, a bug). From the side follows the one status a request gets
//! ([`response`]); the reason goes into the request's access log line, its one log line.
//!
//! Messages follow one rule, so that a chain prints each cause once: an error either writes its
//! cause into its own message and does not expose it as `source()`, or exposes it and leaves it
//! out of the message. [`Chain`] prints an error with its causes.

use std::fmt;

use http::{Response, StatusCode};

use crate::http::{Body, error};

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client asked for something hoard will not or cannot do; or the operator's config
    /// or command line is wrong.
    Client,
    /// The registry (or the network to it) failed: unreachable, too slow, or a broken answer.
    Upstream,
    /// hoard itself failed: the disk, the CA, or a bug.
    Internal,
}

/// An error that knows its [`Side`] and the status a request gets for it.
pub trait Classify: std::error::Error + 'static {
    /// Whose fault it is.
    fn side(&self) -> Side;

    /// The status a request answered with this error gets: by default 400 for the client's
    /// errors, 502 for the upstream's, 500 for hoard's own.
    fn status(&self) -> StatusCode {
        match self.side() {
            Side::Client => StatusCode::BAD_REQUEST,
            Side::Upstream => StatusCode::BAD_GATEWAY,
            Side::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error and each of its causes, once: `outer: cause: root cause`. hoard's own errors follow
/// the rule above; a cause whose text is already written (other crates' errors often repeat
/// their source) is skipped.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let next = error.to_string();
            if !text.contains(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            cause = error.source();
        }
        f.write_str(&text)
    }
}

/// The response to a request that failed with `err`: its status, and its chain as the reason,
/// which the request's access log line carries too (its one log line).
pub fn response(err: &dyn Classify) -> Response<Body> {
    error(err.status(), &Chain(err).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    impl Classify for Outer {
        fn side(&self) -> Side {
            Side::Upstream
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper: {0}")]
    struct Repeating(#[source] Outer);

    #[test]
    fn a_chain_prints_each_cause_once() {
        let err = Outer(std::io::Error::other("root cause"));
        assert_eq!(Chain(&err).to_string(), "outer: root cause");
        let err = Repeating(Outer(std::io::Error::other("root cause")));
        assert_eq!(Chain(&err).to_string(), "wrapper: outer: root cause");
    }

    #[test]
    fn the_side_decides_the_status() {
        let err = Outer(std::io::Error::other("down"));
        let response = response(&err);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }
}
