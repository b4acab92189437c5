//! How the fixture registry answers: manifests (whole or stalled), blobs (whole, ranged, slow,
//! stalled, cut, redirected, without a length, endless or longer than their length), tokens,
//! ACR's token exchange, uploads and the CDN's redirect hops.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;

use super::{Mode, Seen, State};
use crate::common::{CDN, DOCKER_V2, REGISTRY, sha256};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY_INDEX: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

pub(super) type FixtureBody = BoxBody<Bytes, std::io::Error>;

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<FixtureBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

fn redirect(status: StatusCode, location: &str) -> Response<FixtureBody> {
    let mut response = respond(status, "");
    response
        .headers_mut()
        .insert("location", location.parse().unwrap());
    response
}

/// A request with a body (a manifest PUT, a token exchange POST): read whole, seen, answered.
pub(super) async fn with_body(
    req: Request<Incoming>,
    state: &Mutex<State>,
) -> Response<FixtureBody> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        method: parts.method.to_string(),
        host: parts.uri.host().unwrap_or(REGISTRY).to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        authorization: authorization.clone(),
        headers: parts.headers.clone(),
    });
    match parts.uri.path() {
        "/oauth2/exchange" => exchange(&state, &bytes),
        _ => put_manifest(&mut state, &parts, authorization.as_deref(), bytes),
    }
}

/// `POST /oauth2/exchange`, as ACR answers it: the refresh token that
/// [`super::Registry::serve_exchange`] set, for a form with `grant_type=access_token`, this
/// registry as `service` and the expected `access_token`; 401 for anything else.
fn exchange(state: &State, form: &[u8]) -> Response<FixtureBody> {
    let Some((expected, refresh_token)) = &state.exchange else {
        return respond(StatusCode::NOT_FOUND, "no token exchange here");
    };
    let form = String::from_utf8_lossy(form);
    let url = reqwest::Url::parse(&format!("https://{REGISTRY}/?{form}")).unwrap();
    let field = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let good = field("grant_type").as_deref() == Some("access_token")
        && field("service").as_deref() == Some(REGISTRY)
        && field("access_token").as_ref() == Some(expected);
    match good {
        true => respond(
            StatusCode::OK,
            format!(r#"{{"refresh_token":"{refresh_token}"}}"#),
        ),
        false => respond(
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
        ),
    }
}

/// `PUT /v2/<repo>/manifests/<tag>`: stored under the tag and its digest, 201 with the digest.
fn put_manifest(
    state: &mut State,
    parts: &http::request::Parts,
    authorization: Option<&str>,
    bytes: Bytes,
) -> Response<FixtureBody> {
    let Some((repo, tag)) = parts
        .uri
        .path()
        .strip_prefix("/v2/")
        .and_then(|rest| rest.rsplit_once("/manifests/"))
    else {
        return respond(StatusCode::NOT_FOUND, "unknown path");
    };
    if denied(state, repo, authorization) {
        return unauthorized();
    }
    let media_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DOCKER_V2)
        .to_owned();
    let digest = sha256(&bytes);
    for reference in [tag, digest.as_str()] {
        state.manifests.insert(
            (repo.to_owned(), reference.to_owned()),
            (media_type.clone(), bytes.clone()),
        );
    }
    let mut response = respond(StatusCode::CREATED, "");
    response
        .headers_mut()
        .insert("docker-content-digest", digest.parse().unwrap());
    response
}

pub(super) fn answer(
    req: Request<Incoming>,
    state: &Mutex<State>,
    mode: &Mutex<Mode>,
) -> Response<FixtureBody> {
    let host = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h).to_owned())
        })
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        method: req.method().to_string(),
        host: host.clone(),
        path: path.clone(),
        query: req.uri().query().map(str::to_owned),
        authorization: authorization.clone(),
        headers: req.headers().clone(),
    });
    let mode = *mode.lock().unwrap();
    match mode {
        Mode::Down => return respond(StatusCode::SERVICE_UNAVAILABLE, "down"),
        Mode::RateLimited => return respond(StatusCode::TOO_MANY_REQUESTS, "slow down"),
        _ => {}
    }
    let head = req.method() == http::Method::HEAD;
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let range = range.as_deref();

    if host == CDN {
        if path.starts_with("/cdn/locked/") {
            let mut response = respond(StatusCode::UNAUTHORIZED, "");
            response.headers_mut().insert(
                "www-authenticate",
                format!(r#"Bearer realm="https://{CDN}/token",service="{CDN}""#)
                    .parse()
                    .unwrap(),
            );
            return response;
        }
        // Hops 2 and 3 of a redirect chain, then the bytes.
        if let Some(digest) = path.strip_prefix("/cdn/a/") {
            return redirect(StatusCode::FOUND, &format!("/cdn/b/{digest}"));
        }
        if let Some(digest) = path.strip_prefix("/cdn/b/final-") {
            return blob_bytes(&state, digest, head, range);
        }
        if let Some(digest) = path.strip_prefix("/cdn/b/") {
            return redirect(StatusCode::MOVED_PERMANENTLY, &format!("final-{digest}"));
        }
        return respond(StatusCode::NOT_FOUND, "no such CDN object");
    }

    if path == "/token"
        && let Some(body) = state.token_body.clone()
    {
        if let Some(account) = &state.token_account
            && authorization.as_deref() != Some(account.as_str())
        {
            // A wrong login is refused, as Docker Hub's token service does; no login gets an
            // anonymous token.
            return match authorization {
                Some(_) => respond(StatusCode::UNAUTHORIZED, "bad login"),
                None => respond(StatusCode::OK, r#"{"token":"anonymous","expires_in":300}"#),
            };
        }
        return respond(StatusCode::OK, body);
    }
    if path == "/v2/" {
        let mut response = respond(StatusCode::OK, "{}");
        response.headers_mut().insert(
            "docker-distribution-api-version",
            "registry/2.0".parse().unwrap(),
        );
        return response;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return respond(StatusCode::NOT_FOUND, "not a registry path");
    };
    if let Some((repo, _)) = rest.split_once("/blobs/uploads") {
        // Uploads: echo how many body bytes arrived (the body is read by hyper before we see
        // it only if we ask; the length header is what the client announced).
        let len = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_owned();
        return respond(StatusCode::ACCEPTED, format!("upload to {repo}: {len}"));
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        if denied(&state, repo, authorization.as_deref()) {
            return unauthorized();
        }
        let location = match mode {
            Mode::Redirect => Some(format!("https://{CDN}/cdn/a/{digest}?sig=abc")),
            Mode::RedirectToChallenge => Some(format!("https://{CDN}/cdn/locked/{digest}")),
            Mode::RedirectToHttp => Some(format!("http://{REGISTRY}/plain/{digest}")),
            _ => None,
        };
        if let Some(location) = location {
            return redirect(StatusCode::TEMPORARY_REDIRECT, &location);
        }
        return match mode {
            Mode::Slow { chunk, delay } => streamed(&state, digest, chunk, delay, None, range),
            Mode::Stall { after } => {
                streamed(&state, digest, after, Duration::ZERO, Some(false), range)
            }
            Mode::Truncate { after } => {
                streamed(&state, digest, after, Duration::ZERO, Some(true), range)
            }
            Mode::NoLength | Mode::Endless | Mode::TooLong { .. } if !head && range.is_none() => {
                unbounded(&state, digest, mode)
            }
            _ => blob_bytes(&state, digest, head, range),
        };
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        if denied(&state, repo, authorization.as_deref()) {
            return unauthorized();
        }
        let Some((media_type, bytes)) = state
            .manifests
            .get(&(repo.to_owned(), reference.to_owned()))
            .cloned()
        else {
            return respond(
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            );
        };
        let len = bytes.len();
        let mut response = if mode == Mode::StallManifests && !head {
            let silent = futures_util::stream::pending::<Result<http_body::Frame<Bytes>, _>>();
            Response::new(StreamBody::new(silent).boxed())
        } else {
            respond(
                StatusCode::OK,
                if head { Bytes::new() } else { bytes.clone() },
            )
        };
        let headers = response.headers_mut();
        headers.insert("content-type", media_type.parse().unwrap());
        headers.insert("docker-content-digest", sha256(&bytes).parse().unwrap());
        headers.insert("content-length", len.into());
        return response;
    }
    if let Some((repo, subject)) = rest.rsplit_once("/referrers/") {
        if denied(&state, repo, authorization.as_deref()) {
            return unauthorized();
        }
        let body = state
            .referrers
            .get(&(repo.to_owned(), subject.to_owned()))
            .cloned()
            .unwrap_or_else(|| Bytes::from_static(EMPTY_INDEX.as_bytes()));
        let mut response = respond(StatusCode::OK, if head { Bytes::new() } else { body });
        response
            .headers_mut()
            .insert("content-type", OCI_INDEX.parse().unwrap());
        return response;
    }
    if rest.ends_with("/tags/list") {
        return respond(StatusCode::OK, r#"{"tags":["latest"]}"#);
    }
    respond(StatusCode::NOT_FOUND, "unknown path")
}

fn denied(state: &State, repo: &str, authorization: Option<&str>) -> bool {
    if let Some(required) = state.tokens.get(repo) {
        return authorization != Some(required.as_str());
    }
    state.private_repos.contains(repo) && authorization.is_none()
}

fn unauthorized() -> Response<FixtureBody> {
    let mut response = respond(
        StatusCode::UNAUTHORIZED,
        r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
    );
    response.headers_mut().insert(
        "www-authenticate",
        format!(r#"Bearer realm="https://{REGISTRY}/token",service="{REGISTRY}""#)
            .parse()
            .unwrap(),
    );
    response
}

/// The span `[start, end)` a `Range: bytes=…` asks of `len` bytes (one range, no checks beyond
/// what the tests send).
fn span_of(range: &str, len: usize) -> (usize, usize) {
    let spec = range.trim().strip_prefix("bytes=").unwrap();
    let (first, last) = spec.split_once('-').unwrap();
    match (first.parse::<usize>(), last.parse::<usize>()) {
        (Ok(first), Ok(last)) => (first, (last + 1).min(len)),
        (Ok(first), Err(_)) => (first, len),
        (Err(_), Ok(suffix)) => (len - suffix.min(len), len),
        _ => panic!("bad range {range}"),
    }
}

/// Makes `response` a 206 for `[start, end)` of `len` bytes.
fn partial(response: &mut Response<FixtureBody>, (start, end): (usize, usize), len: usize) {
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let value = format!("bytes {start}-{}/{len}", end - 1);
    response
        .headers_mut()
        .insert("content-range", value.parse().unwrap());
}

fn blob_bytes(
    state: &State,
    digest: &str,
    head: bool,
    range: Option<&str>,
) -> Response<FixtureBody> {
    let Some(bytes) = state.blobs.get(digest) else {
        return respond(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        );
    };
    let mut bytes = bytes.to_vec();
    if state.corrupt.contains(digest)
        && let Some(b) = bytes.last_mut()
    {
        *b ^= 0xff;
    }
    let total = bytes.len();
    let span = range.map_or((0, total), |r| span_of(r, total));
    let body = if head {
        Vec::new()
    } else {
        bytes[span.0..span.1].to_vec()
    };
    state.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut response = respond(StatusCode::OK, body);
    response
        .headers_mut()
        .insert("content-length", (span.1 - span.0).into());
    if range.is_some() {
        partial(&mut response, span, total);
    }
    response
}

/// A blob sent in pieces of `chunk` bytes with `delay` between them. With `end`, only the first
/// piece is sent, then the body stalls (`Some(false)`) or fails (`Some(true)`).
fn streamed(
    state: &State,
    digest: &str,
    chunk: usize,
    delay: Duration,
    end: Option<bool>,
    range: Option<&str>,
) -> Response<FixtureBody> {
    let Some(whole) = state.blobs.get(digest).cloned() else {
        return respond(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        );
    };
    let total = whole.len();
    let span = range.map_or((0, total), |r| span_of(r, total));
    let bytes = whole.slice(span.0..span.1);
    let len = bytes.len();
    let sent = state.sent.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        let mut offset = 0;
        while offset < len {
            let next = (offset + chunk.max(1)).min(len);
            if tx
                .send(Ok(http_body::Frame::data(bytes.slice(offset..next))))
                .await
                .is_err()
            {
                return;
            }
            sent.fetch_add((next - offset) as u64, Ordering::Relaxed);
            offset = next;
            match end {
                Some(false) => {
                    // Hold the connection open and say nothing more.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                Some(true) => {
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                    return;
                }
                None => tokio::time::sleep(delay).await,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    response.headers_mut().insert("content-length", len.into());
    if range.is_some() {
        partial(&mut response, span, total);
    }
    response
}

/// A whole blob without a `Content-Length` ([`Mode::NoLength`]), under one shorter than it
/// ([`Mode::TooLong`]), or random bytes without end ([`Mode::Endless`]), in 64 KiB frames.
fn unbounded(state: &State, digest: &str, mode: Mode) -> Response<FixtureBody> {
    let Some(whole) = state.blobs.get(digest).cloned() else {
        return respond(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        );
    };
    let frame = 64 << 10;
    let len = whole.len();
    let endless = mode == Mode::Endless;
    let filler = crate::common::fresh_blob(frame);
    let sent = state.sent.clone();
    let stream = futures_util::stream::unfold(0usize, move |offset| {
        let next = if endless {
            Some(filler.clone())
        } else {
            (offset < len).then(|| whole.slice(offset..(offset + frame).min(len)))
        };
        let sent = sent.clone();
        async move {
            let bytes = next?;
            sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let offset = offset + bytes.len();
            Some((Ok(http_body::Frame::data(bytes)), offset))
        }
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    if let Mode::TooLong { short } = mode {
        let declared = len.saturating_sub(short);
        response
            .headers_mut()
            .insert("content-length", declared.into());
    }
    response
}
