//! A registry connection being served, wherever it came from (an intercepted CONNECT, the mirror
//! listener, the fleet's peer endpoint): HTTP/1.1 or h2, each request logged and counted against
//! its connection's ticket, the connection closed when idle or evicted.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tracing::{Instrument as _, Span};

use crate::access::ClientAddr;
use crate::access::limits::{Activity, Ending, Held, Ticket};
use crate::fleet::{TRACEPARENT, TraceParent};
use crate::hoard::Hoard;
use crate::http::replay::Replay;
use crate::http::write_batch::Coalesce;
use crate::http::{Body, BoxError, head_too_large, making_room};
use crate::telemetry::Via;
use crate::telemetry::access_log::{RequestInfo, Unsent, logged};

pub(crate) use super::answered::Answered;
use super::quick::{Ask, Quick, Sending};
use super::{h1, h2};

/// h2 flow-control windows. A stream runs at most at window / RTT; hyper's defaults are small
/// for multi-GiB blobs. 8 MiB per stream and 32 MiB per connection keep a blob at disk speed
/// while the memory one connection can pin stays bounded.
const H2_STREAM_WINDOW: u32 = 8 << 20;
const H2_CONNECTION_WINDOW: u32 = 32 << 20;

/// Time a connection closed for idleness gets to say goodbye (an h2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An h2 connection (or HTTP/1.1 on hyper's auto connection) being served.
type Served<'a> =
    Pin<Box<dyn GracefulConnection<Error = BoxError, Output = Result<(), BoxError>> + Send + 'a>>;

/// How the requests of a registry connection are answered.
pub(crate) trait Answer: Send + Sync + 'static {
    /// The response to `request`, and what its log line names.
    fn answer(
        &self,
        request: Request<Incoming>,
        hoard: Arc<Hoard>,
    ) -> impl Future<Output = Answered> + Send;

    /// The answer from memory to `ask` (`quick.rs`), when there is one; the request is then not
    /// given to [`Answer::answer`].
    fn quick(&self, ask: &Ask<'_>, hoard: &Hoard) -> Option<Answered<Bytes>> {
        let _ = (ask, hoard);
        None
    }
}

/// The client of a registry connection: its address and the listener it came in by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client {
    /// The client's address.
    pub ip: IpAddr,
    /// The listener it came in by.
    pub via: Via,
}

/// Serves the registry requests on `io` (h2 when `h2`, else HTTP/1.1) until the connection
/// ends, is evicted (closed at once: it has no request in flight), or has had no request in
/// flight for `proxy.idle_timeout` (closed gracefully). h2 PINGs move bytes but are not
/// requests, so they do not keep a connection open.
pub(crate) async fn serve<I, A>(
    mut io: I,
    h2: bool,
    hoard: Arc<Hoard>,
    ticket: Ticket,
    client: Client,
    answer: Arc<A>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Answer,
{
    let config = hoard.config();
    let settings = h1::Settings {
        header_read_timeout: config.proxy.header_read_timeout,
        max_buf_size: config.proxy.max_header_size,
    };
    let idle_timeout = config.proxy.idle_timeout;
    drop(config);
    let requests = Arc::new(h1::Requests::default());
    let quick = Quickly {
        hoard: hoard.clone(),
        answer: answer.clone(),
        ticket: ticket.clone(),
        client,
        span: Span::current(),
    };
    let service = service(hoard, ticket.clone(), client, answer, requests.clone());
    if h2 {
        // Hits from memory are answered before hyper (`h2/`). h2 writes a frame at a time;
        // gathering them gives TLS full records and the socket large writes. HTTP/1.1 already
        // writes whole body chunks.
        let io = Coalesce::new(h2::Front::new(io, quick, client.ip, settings.max_buf_size));
        return Box::pin(serve_auto(io, service, &ticket, settings, idle_timeout)).await;
    }
    let serving = h1::serve(
        &mut io, &service, &quick, &requests, &ticket, settings, client.ip,
    );
    let served = tokio::select! {
        served = serving => served?,
        ending = ticket.ended(idle_timeout, Activity::Requests) => {
            tracing::debug!(reason = ?ending, "closing registry connection");
            if ending == Ending::Idle {
                let _ = tokio::time::timeout(CLOSE_GRACE, io.shutdown()).await;
            }
            return Ok(());
        }
    };
    let h1::Ended::H2(ahead) = served else {
        return Ok(());
    };
    // h2 without TLS (it opened with the preface): hyper's auto connection behind the front,
    // as if nothing had been read.
    let io = h2::Front::new(
        Replay::new(io, ahead, None),
        quick,
        client.ip,
        settings.max_buf_size,
    );
    Box::pin(serve_auto(io, service, &ticket, settings, idle_timeout)).await
}

/// Serves `io` on hyper's auto connection (h2, or HTTP/1.1 by what the client opens with).
/// Boxed by the callers: an HTTP/1.1 connection's task keeps no room for it.
async fn serve_auto<I>(
    io: I,
    service: impl Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future = Answering,
    > + Clone
    + Send
    + Sync
    + 'static,
    ticket: &Ticket,
    settings: h1::Settings,
    idle_timeout: Duration,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = auto_builder(settings);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    until_ended(Box::pin(connection), ticket, idle_timeout).await
}

/// A request's answer as the service gives it, boxed: hyper keeps room for one per connection.
type Answering = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The service of a registry connection: each request answered by `answer`, logged, and counted
/// against `ticket` (and noted in `requests`) while in flight.
fn service<A: Answer>(
    hoard: Arc<Hoard>,
    ticket: Ticket,
    client: Client,
    answer: Arc<A>,
    requests: Arc<h1::Requests>,
) -> impl Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future = Answering>
+ Clone
+ Unpin
+ Send
+ Sync
+ 'static {
    // hyper runs each h2 stream in a task of its own: the request span names its parent.
    let connection_span = Span::current();
    hyper::service::service_fn(move |mut request: Request<Incoming>| -> Answering {
        requests.called(!hyper::body::Body::is_end_stream(request.body()));
        let span = request_span(&connection_span, request.method(), request.uri().path());
        // A fleet node asking its owner names the trace both nodes log.
        if let Some(trace) = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
        {
            span.record("trace_id", tracing::field::display(trace.trace_id()));
        }
        let (hoard, answer, busy) = (hoard.clone(), answer.clone(), ticket.busy());
        Box::pin(
            async move {
                let Some(busy) = busy else {
                    return Ok::<_, Infallible>(making_room());
                };
                let mut info = RequestInfo {
                    metrics: hoard.metrics.clone(),
                    host: String::new(),
                    method: request.method().clone(),
                    path: request.uri().path().to_owned(),
                    start: Instant::now(),
                    via: client.via,
                    user: String::new(),
                    lent: false,
                };
                let limit = hoard.config().proxy.max_header_size;
                let response = match head_too_large(&request, limit) {
                    Some(too_big) => too_big,
                    None => {
                        let quick = Ask::of(&request, client.ip)
                            .and_then(|ask| answer.quick(&ask, &hoard))
                            .map(Answered::boxed);
                        let answered = match quick {
                            Some(answered) => answered,
                            None => {
                                request.extensions_mut().insert(ClientAddr(client.ip));
                                answer.answer(request, hoard).await
                            }
                        };
                        answered.logged_as(&mut info)
                    }
                };
                let response = logged(info, response);
                Ok(response.map(|body| Held::new(body, busy).boxed()))
            }
            .instrument(span),
        )
    })
}

/// A request's span, within its connection's.
fn request_span(connection: &Span, method: &Method, path: &str) -> Span {
    tracing::info_span!(
        parent: connection,
        "request",
        method = %method,
        path = %path,
        trace_id = tracing::field::Empty,
    )
}

/// A connection's quick answers from memory (`h1.rs`): [`Answer::quick`], logged and counted
/// against the connection's ticket as the service's answers are.
struct Quickly<A> {
    hoard: Arc<Hoard>,
    answer: Arc<A>,
    ticket: Ticket,
    client: Client,
    /// The connection's span.
    span: Span,
}

impl<A: Answer> Quick for Quickly<A> {
    fn answer(&self, ask: &Ask<'_>) -> Option<Sending> {
        let start = Instant::now();
        let method = ask.get.method();
        let span = request_span(&self.span, &method, ask.get.path);
        let _entered = span.enter();
        // An evicted connection's request is for the service to answer (with a refusal).
        let busy = self.ticket.busy()?;
        let answered = self.answer.quick(ask, &self.hoard)?;
        let mut info = RequestInfo {
            metrics: self.hoard.metrics.clone(),
            host: String::new(),
            method,
            path: String::new(),
            start,
            via: self.client.via,
            user: String::new(),
            lent: false,
        };
        if answered.path.is_none() {
            info.path = ask.get.path.to_owned();
        }
        let response = answered.logged_as(&mut info);
        Some(Sending {
            line: Unsent::of(info, &response),
            response,
            busy,
        })
    }
}

/// hyper's auto connection (HTTP/1.1 or h2, by what the client opens with), for h2.
fn auto_builder(settings: h1::Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_buf_size);
    // SETTINGS_MAX_FRAME_SIZE stays at its default (16 KiB): the front (`h2/`) follows only
    // frames of that size, and passes a connection with larger ones to hyper as it is.
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(u32::try_from(settings.max_buf_size).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

async fn until_ended(
    mut connection: Served<'_>,
    ticket: &Ticket,
    idle_timeout: Duration,
) -> Result<(), BoxError> {
    let ending = tokio::select! {
        served = connection.as_mut() => return served,
        ending = ticket.ended(idle_timeout, Activity::Requests) => ending,
    };
    tracing::debug!(reason = ?ending, "closing registry connection");
    if ending == Ending::Evicted {
        return Ok(());
    }
    connection.as_mut().graceful_shutdown();
    tokio::time::timeout(CLOSE_GRACE, connection)
        .await
        .unwrap_or(Ok(()))
}
