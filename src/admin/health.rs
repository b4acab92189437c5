//! `/healthz`: up, the store writable, the CA key readable and still the CA's.

use http::{Response, StatusCode};

use super::text;
use crate::hoard::Hoard;
use crate::http::Body;

/// 200 when hoard can do its job; 503 naming what is wrong otherwise.
pub(super) fn health(hoard: &Hoard) -> Response<Body> {
    let mut problems = Vec::new();
    if !hoard.store.writable() {
        problems.push("the cache folder is not writable".to_owned());
    }
    if let Some(problem) = hoard.ca.key_file_problem() {
        problems.push(format!("CA key: {problem}"));
    }
    if problems.is_empty() {
        text(
            StatusCode::OK,
            "ok: up, store writable, CA key readable\n".into(),
        )
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {}\n", problems.join("; ")),
        )
    }
}
