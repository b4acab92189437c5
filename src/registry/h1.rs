//! HTTP/1.1 registry connections that hold no hyper state while they wait for the next request.
//! A hyper connection keeps a read and a write buffer (8 KiB or more each) for its whole life;
//! thousands of idle keep-alive clients would pin them all. So each HTTP/1.1 connection is served
//! in turns: a hyper connection is made when the client's bytes arrive, serves requests, and is
//! set down (its buffers freed) once it is idle, with the stream lent back:
//!
//! - *idle* is: no request in flight ([`Ticket::at_rest`]), the last request had no body (so hyper
//!   read it whole), everything written was flushed, and hyper's last read found nothing to read
//!   ([`Watch`]). hyper reads only after it has parsed every whole request head it holds, so it
//!   then holds at most the start of the next head.
//! - it is set down once idle for [`SET_DOWN_AFTER`] (at once if it served no request yet), by
//!   `graceful_shutdown`, which closes an idle hyper connection at once (nothing is sent: the
//!   response before it is complete) and hands back the bytes it held; they are replayed
//!   ([`Replay`]) to the next hyper connection, made when more bytes arrive.
//! - `proxy.header_read_timeout` for the next head runs from the end of the last request (or the
//!   connection's start) across the turns, as it did in hyper alone: waiting here, then in each
//!   turn until its first request (a client sending a head a few bytes at a time gets no more);
//!   hyper times the heads after that.
//!
//! Before a turn is made, the heads already read are offered to the quick path: a plain `GET`
//! or `HEAD` that memory answers whole (`quick.rs`) is answered here, its head parsed in place
//! and its answer written at once (`http/plain_get.rs`), with no hyper connection at all; the
//! first head it does not take (and everything after it) goes to a turn. So a keep-alive
//! client asking for small hits costs one read and one write each.
//!
//! A client that opens with the h2 preface (h2 without TLS) is left to hyper's auto connection.

use std::convert::Infallible;
use std::future::{Future as _, poll_fn};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::access::limits::Ticket;
use crate::http::plain_get::{self, Parsed};
use crate::http::replay::{Replay, Watch};
use crate::http::{Body, BoxError};

use super::h2::PREFACE;
use super::quick::{Ask, Quick, Sending};

/// How long a turn that served requests stays idle before it is set down: a client asking
/// again at once (the next blob of a pull, a benchmark's next request) keeps its hyper
/// connection; an idle one holds it this long at most.
const SET_DOWN_AFTER: Duration = Duration::from_millis(50);

/// How much a waiting connection reads at once: a request head whole, as a rule. The buffer is
/// on the stack only while a read is polled, not in the waiting connection's task.
const READ_SIZE: usize = 4096;

/// A stream an HTTP/1.1 connection is served on.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<I: AsyncRead + AsyncWrite + Unpin + Send> Io for I {}

/// A connection's service, as each turn borrows it: its futures are boxed (hyper keeps room
/// for one in each turn).
pub(super) trait Serves:
    Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Unpin> + Unpin
{
}

impl<S> Serves for S where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Unpin>
        + Unpin
{
}

/// The requests a connection's service was called for.
#[derive(Debug, Default)]
pub(super) struct Requests {
    calls: AtomicUsize,
    with_body: AtomicBool,
}

impl Requests {
    /// Notes a request (its head parsed), and whether a body follows it.
    pub(super) fn called(&self, with_body: bool) {
        self.with_body.store(with_body, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The hyper settings of each turn.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    /// `proxy.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `proxy.max_header_size`.
    pub max_buf_size: usize,
}

/// How an HTTP/1.1 connection ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// It is over (the stream was shut down, or the client closed it).
    Closed,
    /// The client opened with (the start of) the h2 preface: these bytes, read already.
    H2(Vec<u8>),
}

/// Serves HTTP/1.1 requests on `io` with `service`, in turns (see the module docs), until the
/// client or hyper closes the connection. `requests` is what `service` notes each request in.
pub(super) async fn serve<I: Io>(
    io: &mut I,
    service: &impl Serves,
    quick: &impl Quick,
    requests: &Requests,
    ticket: &Ticket,
    settings: Settings,
    client: IpAddr,
) -> Result<Ended, BoxError> {
    let mut ahead = Vec::new();
    let mut deadline = Instant::now() + settings.header_read_timeout;
    // One timer for the connection's life, moved on only when it fires before the deadline:
    // a request answered costs no timer of its own.
    let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
    let mut first = true;
    loop {
        if !read_more(io, &mut ahead, timer.as_mut(), deadline).await? {
            let _ = io.shutdown().await;
            return Ok(Ended::Closed);
        }
        if std::mem::take(&mut first) && opens_h2(&ahead) {
            return Ok(Ended::H2(ahead));
        }
        let (answered, next) = answer_quickly(io, &mut ahead, quick, &settings, client).await?;
        if answered > 0 {
            deadline = Instant::now() + settings.header_read_timeout;
        }
        if next == Next::Read {
            continue;
        }
        let calls = requests.calls();
        match turn(
            &mut *io, ahead, service, requests, ticket, settings, deadline,
        )
        .await?
        {
            Some(left) => ahead = left,
            None => {
                let _ = io.shutdown().await;
                return Ok(Ended::Closed);
            }
        }
        if requests.calls() != calls {
            deadline = Instant::now() + settings.header_read_timeout;
        }
    }
}

/// What a connection does after the quick path.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Read more: everything read was answered, or what is left is the start of a head.
    Read,
    /// Give what is left to a hyper turn.
    Turn,
}

/// Answers the heads at the start of `ahead` that the quick path takes, one after the other
/// (a client may pipeline), dropping each from `ahead`: how many, and what next.
async fn answer_quickly<I: Io>(
    io: &mut I,
    ahead: &mut Vec<u8>,
    quick: &impl Quick,
    settings: &Settings,
    client: IpAddr,
) -> Result<(usize, Next), BoxError> {
    let mut answered = 0;
    while !ahead.is_empty() {
        let (sending, len) = match plain_get::parse(ahead, settings.max_buf_size) {
            Parsed::Partial => return Ok((answered, Next::Read)),
            Parsed::Other => return Ok((answered, Next::Turn)),
            Parsed::Get { get, len } => match quick.answer(&Ask { get, client }) {
                Some(sending) => (sending, len),
                None => return Ok((answered, Next::Turn)),
            },
        };
        ahead.drain(..len);
        send(io, sending).await?;
        answered += 1;
    }
    Ok((answered, Next::Read))
}

/// Writes a quick answer whole (its head and body in one write, as a rule) and logs it.
async fn send<I: Io>(io: &mut I, sending: Sending) -> Result<(), BoxError> {
    let Sending {
        response,
        line,
        busy,
    } = sending;
    let head = plain_get::encode_head(&response);
    let body = response.body();
    let (mut head_left, mut body_left) = (&head[..], &body[..]);
    let written = async {
        while !head_left.is_empty() || !body_left.is_empty() {
            let slices = [io::IoSlice::new(head_left), io::IoSlice::new(body_left)];
            let n = io.write_vectored(&slices).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            let from_head = n.min(head_left.len());
            head_left = &head_left[from_head..];
            body_left = body_left.get(n - from_head..).unwrap_or_default();
        }
        io.flush().await
    }
    .await;
    let sent = (body.len() - body_left.len()) as u64;
    line.sent(sent, written.is_ok());
    drop(busy);
    Ok(written?)
}

/// Reads what the client sends next onto `ahead`, by `deadline` (`timer` fires at or before
/// it); false at the end of the stream.
async fn read_more<I: AsyncRead + Unpin>(
    io: &mut I,
    ahead: &mut Vec<u8>,
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
) -> Result<bool, BoxError> {
    let read = poll_fn(|cx| {
        let mut buf = [std::mem::MaybeUninit::uninit(); READ_SIZE];
        let mut buf = ReadBuf::uninit(&mut buf);
        if let Poll::Ready(read) = Pin::new(&mut *io).poll_read(cx, &mut buf) {
            read?;
            ahead.extend_from_slice(buf.filled());
            return Poll::Ready(Ok(buf.filled().len()));
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(head_timed_out()));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    });
    Ok(read.await? > 0)
}

/// Whether `ahead` is the h2 preface, or as much of it as arrived.
fn opens_h2(ahead: &[u8]) -> bool {
    let n = ahead.len().min(PREFACE.len());
    n > 0 && ahead[..n] == PREFACE[..n]
}

/// The error hyper gives for a head not read in time.
fn head_timed_out() -> BoxError {
    io::Error::new(io::ErrorKind::TimedOut, "read header from client timeout").into()
}

/// One hyper connection on `io`, `ahead` read first, its first request head due by `deadline`
/// (hyper times the later ones): the bytes it held when it was set down idle, or `None` when it
/// closed (the client's or hyper's doing).
async fn turn<I: Io>(
    io: &mut I,
    ahead: Vec<u8>,
    service: &impl Serves,
    requests: &Requests,
    ticket: &Ticket,
    settings: Settings,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, BoxError> {
    let watch = Watch::default();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_buf_size);
    let io = TokioIo::new(Replay::new(io, ahead, Some(&watch)));
    // Boxed: it exists only while the turn does, not in the waiting connection's task.
    let mut connection = Box::new(builder.serve_connection(io, service));
    // Until the turn's first request: its head's deadline. After: when an idle spell set it
    // down, so a client that asks again at once finds the same hyper connection.
    let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
    let calls = requests.calls();
    let (mut idle_since_request, mut set_down) = (false, false);
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(done) = connection.poll_without_shutdown(cx) {
                return Poll::Ready(done.map_err(BoxError::from));
            }
            let first = requests.calls() == calls;
            if first && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(head_timed_out()));
            }
            let idle =
                watch.quiet() && ticket.at_rest() && !requests.with_body.load(Ordering::Relaxed);
            if !first && idle && !idle_since_request {
                timer.as_mut().reset(Instant::now() + SET_DOWN_AFTER);
            }
            idle_since_request = idle && !first;
            // A turn that has served no request holds the start of a head at most: at once.
            let due = first || timer.as_mut().poll(cx).is_ready();
            if set_down || !idle || !due {
                return Poll::Pending;
            }
            std::pin::Pin::new(&mut *connection).graceful_shutdown();
            set_down = true;
        }
    })
    .await?;
    if !set_down {
        return Ok(None);
    }
    let parts = connection.into_parts();
    let mut left = parts.read_buf.to_vec();
    left.extend(parts.io.into_inner().into_ahead());
    Ok(Some(left))
}
