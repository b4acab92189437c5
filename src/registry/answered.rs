//! A registry request's answer, with what its log line names: the one shape every listener's
//! answer takes (`conn.rs`), the quick path's with its body whole (`quick.rs`).

use bytes::Bytes;
use http::Response;

use crate::http::{Body, full_body};
use crate::telemetry::access_log::RequestInfo;

/// A response, with the registry host and path its log line names.
pub(crate) struct Answered<B = Body> {
    pub response: Response<B>,
    /// The registry host; empty when hoard answered for none (`/v2/` on the mirror, a refusal).
    pub host: String,
    /// The path as the registry got it, when it differs from the client's (the mirror's).
    pub path: Option<String>,
    /// The hoard user the request logged in as; empty when none.
    pub user: String,
    /// Whether hoard's account for the registry was lent to the request.
    pub lent: bool,
}

impl<B> Answered<B> {
    /// The response, its registry host, path and borrower noted in `info` for the log line.
    pub(super) fn logged_as(self, info: &mut RequestInfo) -> Response<B> {
        info.host = self.host;
        (info.user, info.lent) = (self.user, self.lent);
        if let Some(path) = self.path {
            info.path = path;
        }
        self.response
    }
}

impl Answered<Bytes> {
    /// The answer with its body as hyper sends it.
    pub(super) fn boxed(self) -> Answered {
        Answered {
            response: self.response.map(full_body),
            host: self.host,
            path: self.path,
            user: self.user,
            lent: self.lent,
        }
    }
}

impl Answered {
    /// A response of the listener's own, for no registry (`/v2/` on the mirror, a refusal).
    pub(crate) fn here(response: Response<Body>) -> Answered {
        Answered {
            response,
            host: String::new(),
            path: None,
            user: String::new(),
            lent: false,
        }
    }
}
