//! Intercepted CONNECTs: TLS terminated with a leaf minted for the host, then HTTP/1.1 or h2 (by
//! ALPN) served to the registry cache.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;

use crate::access::limits::{Activity, Ending, Held, Ticket};
use tracing::{Instrument as _, Span};

use crate::error::Chain;
use crate::hoard::Hoard;
use crate::http::BoxError;
use crate::http::write_batch::Coalesce;
use crate::telemetry::access_log::{RequestInfo, logged};

/// Time allowed for the client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// h2 flow-control windows. A stream runs at most at window / RTT; hyper's defaults are small
/// for multi-GiB blobs. 8 MiB per stream and 32 MiB per connection keep a blob at disk speed
/// while the memory one connection can pin stays bounded.
const H2_STREAM_WINDOW: u32 = 8 << 20;
const H2_CONNECTION_WINDOW: u32 = 32 << 20;

/// An HTTP/1.1 or h2 connection being served.
type Served<'a> =
    Pin<Box<dyn GracefulConnection<Error = BoxError, Output = Result<(), BoxError>> + Send + 'a>>;

/// Time an intercepted connection closed for idleness gets to say goodbye (an h2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Terminates TLS on an upgraded CONNECT to `host:port` from `client` and serves registry
/// requests on it. The
/// ticket keeps the connection counted against the connection limits; the connection closes
/// when no request has been in flight for `proxy.idle_timeout`, or at once when it is evicted.
pub async fn serve(
    upgraded: Upgraded,
    host: String,
    port: u16,
    hoard: Arc<Hoard>,
    ticket: Ticket,
    client: std::net::IpAddr,
) {
    let config = match hoard.ca.server_config(&host) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%host, error = %Chain(&error), "cannot mint a certificate");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(TokioIo::new(upgraded)));
    // A connection still in its handshake has no request in flight: it may be evicted.
    let handshake = tokio::select! {
        done = handshake => done,
        () = ticket.evicted() => {
            tracing::debug!(%host, "closed in the TLS handshake to make room");
            return;
        }
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            // Typically a client that does not trust hoard's CA: say so where an operator looks.
            tracing::warn!(%host, %error, "TLS handshake with client failed (does it trust hoard's CA?)");
            return;
        }
        Err(_) => {
            tracing::debug!(%host, "TLS handshake timed out");
            return;
        }
    };

    let target = crate::registry::Target::new(&host, port);
    let Some(target) = target else {
        tracing::warn!(%host, "not a usable registry host name");
        return;
    };
    let target = Arc::new(target);
    let config = hoard.config();
    let (header_read_timeout, max_header_size, idle_timeout) = (
        config.header_read_timeout,
        config.max_header_size,
        config.idle_timeout,
    );
    // hyper runs each h2 stream in a task of its own: the request span names its parent.
    let connection_span = Span::current();
    let service = hyper::service::service_fn({
        let ticket = ticket.clone();
        move |mut request: hyper::Request<hyper::body::Incoming>| {
            let span = tracing::info_span!(
                parent: &connection_span,
                "request",
                method = %request.method(),
                path = %request.uri().path(),
            );
            request
                .extensions_mut()
                .insert(crate::access::ClientAddr(client));
            let hoard = hoard.clone();
            let target = target.clone();
            let busy = ticket.busy();
            async move {
                let Some(busy) = busy else {
                    return Ok::<_, Infallible>(crate::http::making_room());
                };
                let info = RequestInfo {
                    metrics: hoard.metrics.clone(),
                    host: target.authority().to_owned(),
                    method: request.method().clone(),
                    path: request.uri().path().to_owned(),
                    start: Instant::now(),
                };
                let limit = hoard.config().max_header_size;
                let response = match crate::http::head_too_large(&request, limit) {
                    Some(too_big) => too_big,
                    None => crate::registry::handle(request, &target, &hoard).await,
                };
                let response = logged(info, response);
                Ok(response.map(|body| Held::new(body, busy).boxed()))
            }
            .instrument(span)
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(max_header_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30));
    // h2 writes a frame at a time; gathering them gives TLS full records and the socket large
    // writes. HTTP/1.1 already writes whole body chunks.
    let connection: Served<'_> = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let io = TokioIo::new(Coalesce::new(tls));
        Box::pin(builder.serve_connection(io, service))
    } else {
        Box::pin(builder.serve_connection(TokioIo::new(tls), service))
    };
    let served = until_ended(connection, &ticket, idle_timeout).await;
    if let Err(error) = served {
        tracing::debug!(%host, %error, "intercepted connection ended");
    }
}

/// Serves `connection` until it ends, is evicted (closed at once: it has no request in flight),
/// or has had no request in flight for `idle_timeout` (closed gracefully). hoard's own h2 PINGs
/// move bytes but are not requests, so they do not keep a connection open.
async fn until_ended(
    mut connection: Served<'_>,
    ticket: &Ticket,
    idle_timeout: Duration,
) -> Result<(), BoxError> {
    let ending = tokio::select! {
        served = connection.as_mut() => return served,
        ending = ticket.ended(idle_timeout, Activity::Requests) => ending,
    };
    tracing::debug!(reason = ?ending, "closing intercepted connection");
    if ending == Ending::Evicted {
        return Ok(());
    }
    connection.as_mut().graceful_shutdown();
    tokio::time::timeout(CLOSE_GRACE, connection)
        .await
        .unwrap_or(Ok(()))
}
