//! The access log: one line per request, written when its response body ends (or is dropped),
//! so the byte count and duration are what the client really got.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::http::{Body, BoxError};
use crate::http::{CacheStatus, ErrorReason};
use crate::telemetry::Metrics;

/// The target of access log lines, as it was before the module moved: `RUST_LOG` filters and
/// log searches name it.
pub(crate) const TARGET: &str = "hoard::log";

/// What a log line says about the request, captured before the handler runs.
#[derive(Debug, Clone)]
pub(crate) struct RequestInfo {
    pub metrics: Arc<Metrics>,
    pub host: String,
    pub method: Method,
    pub path: String,
    pub start: Instant,
    /// The listener the request came in on.
    pub via: crate::telemetry::Via,
    /// The hoard user the request logged in as (proxy user or mirror login); empty when none.
    pub user: String,
    /// Whether one of hoard's registry accounts was lent to the request (`lend_to`).
    pub lent: bool,
}

/// Wraps a response so that its log line is written when the body is finished or dropped.
pub(crate) fn logged(info: RequestInfo, response: Response<Body>) -> Response<Body> {
    // hyper stops polling a body once Content-Length bytes are out, so "complete" is judged by
    // the count as well as by the end of the stream.
    let expected = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let line = Line::of(info, &response);
    response.map(|body| {
        LoggedBody {
            inner: body,
            expected,
            line: Some(line),
        }
        .boxed()
    })
}

/// The log line of a response sent whole by hoard itself (not through hyper), to be written
/// once it is sent.
pub(crate) struct Unsent(Line);

impl Unsent {
    /// The line of `response`, answering the request `info` describes.
    pub(crate) fn of<B>(info: RequestInfo, response: &Response<B>) -> Unsent {
        Unsent(Line::of(info, response))
    }

    /// Writes the line: `bytes` of the body were sent, all of it when `complete`.
    pub(crate) fn sent(mut self, bytes: u64, complete: bool) {
        self.0.bytes = bytes;
        self.0.write(complete);
    }
}

struct Line {
    info: RequestInfo,
    status: StatusCode,
    cache: CacheStatus,
    bytes: u64,
    error: Option<String>,
    /// The request's span: the body ends outside it, and the line is written inside it again.
    span: tracing::Span,
}

impl Line {
    /// The line of `response`, before any of its body is sent. The handler states the cache
    /// status as a response extension; none means [`CacheStatus::Local`].
    fn of<B>(info: RequestInfo, response: &Response<B>) -> Line {
        let extensions = response.extensions();
        Line {
            info,
            status: response.status(),
            cache: extensions
                .get::<CacheStatus>()
                .copied()
                .unwrap_or(CacheStatus::Local),
            bytes: 0,
            error: extensions
                .get::<ErrorReason>()
                .map(|reason| reason.0.clone()),
            span: tracing::Span::current(),
        }
    }

    fn write(self, complete: bool) {
        let metrics = &self.info.metrics;
        let via = self.info.via;
        metrics.record(via, self.cache, self.bytes);
        metrics.activity().note_request(
            via,
            &self.info.host,
            &self.info.path,
            self.status.as_u16(),
            self.cache,
        );
        let ms = self.info.start.elapsed().as_secs_f64() * 1000.0;
        let _span = self.span.enter();
        tracing::info!(
            target: TARGET,
            host = %self.info.host,
            method = %self.info.method,
            path = %self.info.path,
            status = self.status.as_u16(),
            bytes = self.bytes,
            ms = format_args!("{ms:.1}"),
            cache = %self.cache.as_str(),
            via = %via.as_str(),
            user = %self.info.user,
            lent = self.info.lent,
            complete,
            error = self.error.as_deref().unwrap_or(""),
            "request"
        );
    }
}

struct LoggedBody {
    inner: Body,
    expected: Option<u64>,
    line: Option<Line>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(line)) = (frame.data_ref(), self.line.as_mut()) {
                    line.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(mut line) = self.line.take() {
                    line.error = Some(error.to_string());
                    line.write(false);
                }
            }
            Poll::Ready(None) => {
                if let Some(line) = self.line.take() {
                    line.write(true);
                }
            }
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            // An empty body (HEAD, 304) may never be polled: it is complete all the same.
            let complete = self.inner.is_end_stream()
                || self.expected.is_some_and(|expected| line.bytes >= expected);
            line.write(complete);
        }
    }
}
