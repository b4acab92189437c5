//! The load client of `bench/small.sh`'s proxy-port rows (issue 25): N keep-alive clients, each
//! one CONNECT through hoard's proxy port and TLS to the intercepted name inside it (trusting
//! hoard's CA), all connected before the clock starts, then the same GET over and over for a
//! fixed time. Prints one line, `requests=… seconds=… rps=… p50_ms=… p99_ms=…`, and fails
//! (exit 1, naming what) when any answer is not 200 with the expected body size, so a row cannot
//! pass on errors.
//!
//! ```sh
//! cargo bench --bench small_requests -- --proxy 127.0.0.1:3128 --ca /var/lib/hoard/ca/ca.crt \
//!     --url https://registry.example/v2/app/manifests/v1 --size 527 \
//!     --header 'Accept: application/vnd.oci.image.manifest.v1+json' --clients 64 --seconds 5 [--h2]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// The longest CONNECT answer read before giving up on it.
const MAX_CONNECT_ANSWER: usize = 8 * 1024;

struct Args {
    proxy: String,
    ca: PathBuf,
    url: Uri,
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
    size: usize,
    clients: usize,
    duration: Duration,
    h2: bool,
}

fn main() -> Result<()> {
    let args = Arc::new(parse_args()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (lats, seconds) = runtime.block_on(run(Arc::clone(&args)))?;
    let n = lats.len();
    ensure!(n > 0, "no request finished in {seconds:.2} s");
    println!(
        "requests={n} seconds={seconds:.3} rps={:.0} p50_ms={:.3} p99_ms={:.3}",
        n as f64 / seconds,
        percentile(&lats, 50.0),
        percentile(&lats, 99.0)
    );
    Ok(())
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        proxy: String::new(),
        ca: PathBuf::new(),
        url: Uri::default(),
        headers: Vec::new(),
        size: 0,
        clients: 64,
        duration: Duration::from_secs(5),
        h2: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" || flag == "--h2" {
            // `cargo bench` passes --bench to a harness-less bench.
            a.h2 |= flag == "--h2";
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--proxy" => a.proxy = value,
            "--ca" => a.ca = value.into(),
            "--url" => a.url = value.parse().context("--url")?,
            "--size" => a.size = value.parse().context("--size")?,
            "--clients" => a.clients = value.parse().context("--clients")?,
            "--seconds" => {
                a.duration = Duration::from_secs_f64(value.parse().context("--seconds")?)
            }
            "--header" => {
                let (k, v) = value
                    .split_once(':')
                    .context("--header wants 'Name: value'")?;
                a.headers.push((k.trim().parse()?, v.trim().parse()?));
            }
            _ => bail!("unknown option {flag}"),
        }
    }
    ensure!(
        !a.proxy.is_empty() && a.url.host().is_some(),
        "--proxy and --url are required"
    );
    ensure!(a.clients > 0, "--clients must be at least 1");
    Ok(a)
}

/// Connects every client, then lets them all loop until the time is up: each client's latencies
/// (µs) together, and the seconds from the common start to the last client's end.
async fn run(args: Arc<Args>) -> Result<(Vec<u32>, f64)> {
    let tls = tls_connector(&args)?;
    let barrier = Arc::new(Barrier::new(args.clients + 1));
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let (args, tls, barrier) = (Arc::clone(&args), tls.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let conn = connect(&args, &tls).await;
            barrier.wait().await;
            client(&args, conn?).await
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut lats = Vec::new();
    for t in tasks {
        lats.extend(t.await??);
    }
    lats.sort_unstable();
    Ok((lats, start.elapsed().as_secs_f64()))
}

fn tls_connector(args: &Args) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).context("--ca")? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(hoard::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if args.h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One keep-alive connection: CONNECT host:port through the proxy, TLS inside it.
async fn connect(args: &Args, tls: &tokio_rustls::TlsConnector) -> Result<Sender> {
    let host = args.url.host().context("--url has no host")?;
    let authority = format!("{host}:{}", args.url.port_u16().unwrap_or(443));
    let mut tcp = TcpStream::connect(&args.proxy)
        .await
        .context("connecting to the proxy")?;
    tcp.set_nodelay(true)?;
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        ensure!(
            answer.len() < MAX_CONNECT_ANSWER,
            "the CONNECT answer has no end"
        );
        answer.push(tcp.read_u8().await.context("reading the CONNECT answer")?);
    }
    ensure!(
        answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200"),
        "CONNECT refused: {}",
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
    );
    let name = ServerName::try_from(host.to_owned())?;
    let io = TokioIo::new(
        tls.connect(name, tcp)
            .await
            .context("TLS through the tunnel")?,
    );
    if args.h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Sender::H1(send))
    }
}

/// GETs the URL until the time is up; each request's latency in µs.
async fn client(args: &Args, mut sender: Sender) -> Result<Vec<u32>> {
    let end = Instant::now() + args.duration;
    let path = args.url.path_and_query().map_or("/", |p| p.as_str());
    let host = args.url.authority().context("--url has no host")?.as_str();
    let mut lats = Vec::new();
    while Instant::now() < end {
        let mut req = Request::get(path).body(Empty::<Bytes>::new())?;
        if let Sender::H2(_) = sender {
            *req.uri_mut() = args.url.clone();
        } else {
            req.headers_mut().insert(header::HOST, host.parse()?);
        }
        for (k, v) in &args.headers {
            req.headers_mut().insert(k, v.clone());
        }
        let t0 = Instant::now();
        let resp = match &mut sender {
            Sender::H1(s) => s.send_request(req).await?,
            Sender::H2(s) => s.send_request(req).await?,
        };
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        ensure!(status == StatusCode::OK, "HTTP {status} for {}", args.url);
        ensure!(
            body.len() == args.size,
            "{} bytes instead of {} for {}",
            body.len(),
            args.size,
            args.url
        );
        lats.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(lats)
}

/// The p-th percentile of sorted latencies (µs), in ms: the nearest-rank value.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}
