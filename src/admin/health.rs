//! `/healthz`: up, the store writable, the CA key readable and still the CA's.

use http::StatusCode;

use crate::hoard::Hoard;

/// 200 when hoard can do its job; 503 naming what is wrong otherwise: the status and the text
/// to answer with.
pub(super) fn health(hoard: &Hoard) -> (StatusCode, String) {
    let mut problems = Vec::new();
    if !hoard.store.writable() {
        problems.push("the cache folder is not writable".to_owned());
    }
    if let Some(problem) = hoard.ca.key_file_problem() {
        problems.push(format!("CA key: {problem}"));
    }
    if problems.is_empty() {
        (
            StatusCode::OK,
            "ok: up, store writable, CA key readable\n".into(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {}\n", problems.join("; ")),
        )
    }
}
