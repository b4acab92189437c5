//! `Route::parse`, the request-path classifier: whatever it extracts from a path is a valid
//! repository, tag or digest, and so safe to use in a cache key or a file path. And
//! `registry_auth::lends_credentials`: hoard's credentials go to reads of pull routes only.
#![no_main]

use hoard::oci::{Reference, Route, valid_repository, valid_tag};
use hoard::upstream::auth::lends_credentials;
use http::Method;
use libfuzzer_sys::fuzz_target;

fn check_repository(path: &str, repo: &str) {
    assert!(valid_repository(repo), "{path:?}: repository {repo:?}");
    assert!(
        !repo.contains(['%', '\\', '\0']),
        "{path:?}: repository {repo:?}"
    );
    assert!(
        repo.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        "{path:?}: repository {repo:?} has an empty, . or .. component"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let route = Route::parse(path);
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert!(!lends_credentials(&method, path), "{method} {path:?}");
    }
    if lends_credentials(&Method::GET, path) {
        let read = match &route {
            Route::Ping | Route::Blob { .. } | Route::Manifest { .. } => true,
            Route::Referrers { .. } => true,
            Route::Other => path.ends_with("/tags/list"),
            Route::Invalid(_) => false,
        };
        assert!(read, "GET {path:?} lent credentials");
    }
    let rebuilt = match &route {
        // Ping, Other (forwarded untouched) and Invalid (answered 400) carry nothing from the path.
        Route::Ping | Route::Other => return,
        Route::Invalid(reason) => {
            assert!(!reason.is_empty(), "{path:?}: Invalid without a reason");
            return;
        }
        Route::Blob { repo, digest } => {
            check_repository(path, repo);
            format!("/v2/{repo}/blobs/{digest}")
        }
        Route::Referrers { repo, subject } => {
            check_repository(path, repo);
            format!("/v2/{repo}/referrers/{subject}")
        }
        Route::Manifest { repo, reference } => {
            check_repository(path, repo);
            match reference {
                Reference::Tag(tag) => {
                    assert!(valid_tag(tag), "{path:?}: tag {tag:?}");
                    format!("/v2/{repo}/manifests/{tag}")
                }
                Reference::Digest(digest) => format!("/v2/{repo}/manifests/{digest}"),
            }
        }
    };
    // Nothing is dropped or rewritten on the way: the parts are exactly the path.
    assert_eq!(rebuilt, path);
});
