//! Which registry a mirror request is for, and the path to ask it: the three ways clients name
//! the upstream registry to a mirror.
//! - containerd (`hosts.toml`) adds `?ns=<registry>`;
//! - podman and CRI-O (`registries.conf` mirrors with a path) put the registry first in the
//!   path: `/v2/gcr.io/proj/app/manifests/v1`;
//! - dockerd (`registry-mirrors`) names none: the default registry, Docker Hub unless set.
//!
//! Docker Hub's one-component names get `library/`, as Docker Hub's own clients do.

use crate::oci::{DOCKER_HUB, names_a_registry, registry_key, valid_repository};

/// A mirror request, mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routed {
    /// `/v2/`: answered by hoard itself.
    Ping,
    /// A registry call: the registry key (lowercase `host[:port]`, Docker Hub as
    /// `registry-1.docker.io`) and the path and query to send it.
    Registry { registry: String, path: String },
}

/// The API calls that follow a repository name, and the path of each.
const CALLS: [&str; 4] = ["/manifests/", "/blobs/", "/tags/list", "/referrers/"];

/// Maps a request path and query; `Err` is the reason for a 400 (or 404 beyond `/v2/`).
pub(crate) fn map(path: &str, query: Option<&str>, default: &str) -> Result<Routed, String> {
    if path == "/v2/" || path == "/v2" {
        return Ok(Routed::Ping);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Err("a registry mirror serves the registry API under /v2/".into());
    };
    let (ns, query) = split_ns(query.unwrap_or(""))?;
    let (registry, rest) = match ns {
        Some(ns) => (key(&ns)?, rest),
        None => match rest.split_once('/') {
            Some((first, after)) if names_a_registry(first) => (key(first)?, after),
            _ => (default.to_owned(), rest),
        },
    };
    let (name, call) = split_name(rest).ok_or_else(|| {
        "not a registry call: /v2/<name>/manifests/, /blobs/, /tags/list or /referrers/".to_owned()
    })?;
    if call.starts_with("/blobs/uploads") {
        return Err("a registry mirror takes no pushes".into());
    }
    let with_library;
    let name = if registry == DOCKER_HUB && !name.contains('/') {
        with_library = format!("library/{name}");
        &with_library
    } else {
        name
    };
    if !valid_repository(name) {
        return Err(format!("{name:?} is not a repository name"));
    }
    let mut path = String::with_capacity("/v2/?".len() + name.len() + call.len() + query.len());
    for part in ["/v2/", name, call] {
        path.push_str(part);
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    Ok(Routed::Registry { registry, path })
}

/// The registry key of a registry named by a client.
fn key(name: &str) -> Result<String, String> {
    registry_key(name).ok_or_else(|| format!("{name:?} is not a registry host"))
}

/// The repository name and the call after it (`/manifests/v1`), split at the last call marker:
/// a repository may itself hold `blobs` or `manifests` as a component.
fn split_name(rest: &str) -> Option<(&str, &str)> {
    // Every marker starts at a '/': the rightmost '/' that starts one is where the call is.
    let at = rest
        .rmatch_indices('/')
        .map(|(at, _)| at)
        .find(|&at| CALLS.iter().any(|call| rest[at..].starts_with(call)))
        .filter(|at| *at > 0)?;
    Some(rest.split_at(at))
}

/// `ns` taken out of a query (percent-decoded; given twice, refused), and the rest of the query
/// as it was.
fn split_ns(query: &str) -> Result<(Option<String>, String), String> {
    let mut ns = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("ns=") {
            Some(_) if ns.is_some() => return Err("ns given twice".into()),
            Some(value) => ns = Some(decode(value).ok_or("ns is not percent-encoded text")?),
            None => rest.push(pair),
        }
    }
    Ok((ns, rest.join("&")))
}

/// Percent-decodes a query value (ASCII only: registry names are).
fn decode(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        let b = match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b'+' => b' ',
            b => b,
        };
        if !b.is_ascii() {
            return None;
        }
        out.push(char::from(b));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(path: &str, query: Option<&str>) -> String {
        match map(path, query, DOCKER_HUB) {
            Ok(Routed::Ping) => "ping".into(),
            Ok(Routed::Registry { registry, path }) => format!("{registry} {path}"),
            Err(reason) => format!("error: {reason}"),
        }
    }

    #[test]
    fn containerd_names_the_registry_in_ns() {
        assert_eq!(
            mapped("/v2/proj/app/manifests/v1", Some("ns=gcr.io")),
            "gcr.io /v2/proj/app/manifests/v1"
        );
        assert_eq!(
            mapped("/v2/library/alpine/blobs/sha256:ab", Some("ns=docker.io")),
            "registry-1.docker.io /v2/library/alpine/blobs/sha256:ab"
        );
        assert_eq!(
            mapped("/v2/x/tags/list", Some("n=10&ns=localhost%3A5000&last=a")),
            "localhost:5000 /v2/x/tags/list?n=10&last=a"
        );
        assert!(mapped("/v2/x/tags/list", Some("ns=a&ns=b")).starts_with("error: ns given twice"));
        assert!(mapped("/v2/x/tags/list", Some("ns=%zz")).starts_with("error:"));
        assert!(mapped("/v2/x/tags/list", Some("ns=a/b")).starts_with("error:"));
    }

    #[test]
    fn podman_puts_the_registry_first_in_the_path() {
        assert_eq!(
            mapped("/v2/gcr.io/proj/app/manifests/v1", None),
            "gcr.io /v2/proj/app/manifests/v1"
        );
        assert_eq!(
            mapped("/v2/docker.io/alpine/manifests/3", None),
            "registry-1.docker.io /v2/library/alpine/manifests/3"
        );
        assert_eq!(
            mapped("/v2/127.0.0.1:5001/a/b/referrers/sha256:00", None),
            "127.0.0.1:5001 /v2/a/b/referrers/sha256:00"
        );
    }

    #[test]
    fn dockerd_names_none_and_gets_the_default_with_library() {
        assert_eq!(mapped("/v2/", None), "ping");
        assert_eq!(mapped("/v2", Some("ns=gcr.io")), "ping");
        assert_eq!(
            mapped("/v2/alpine/manifests/latest", None),
            "registry-1.docker.io /v2/library/alpine/manifests/latest"
        );
        assert_eq!(
            mapped("/v2/user/app/blobs/sha256:1", None),
            "registry-1.docker.io /v2/user/app/blobs/sha256:1"
        );
        assert_eq!(
            map("/v2/app/manifests/v1", None, "gcr.io"),
            Ok(Routed::Registry {
                registry: "gcr.io".into(),
                path: "/v2/app/manifests/v1".into()
            })
        );
    }

    #[test]
    fn what_is_not_a_registry_call_is_refused() {
        for (path, query) in [
            ("/", None),
            ("/v1/x", None),
            ("/v2/_catalog", None),
            ("/v2/x/blobs/uploads/", Some("ns=gcr.io")),
            ("/v2/../x/manifests/v1", None),
            ("/v2/gcr.io/../x/manifests/v1", None),
            ("/v2/Upper/manifests/v1", None),
            ("/v2//manifests/v1", None),
            ("/v2/manifests/v1", None),
        ] {
            let got = mapped(path, query);
            assert!(got.starts_with("error:"), "{path}: {got}");
        }
    }
}
