//! Idle HTTP/1.1 keep-alive connections (hoard sets their hyper state down between requests):
//! the next request is served however it arrives (after a pause, split across writes with a
//! pause between, pipelined), on the mirror and in an intercepted tunnel alike; an idle or
//! dribbling client still closes at `proxy.header_read_timeout`; h2 opened by its preface on the
//! plain mirror is still served.

use super::*;

/// One client connection, with what it read past the response it was reading.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Reads more, within 5 s; false when the peer closed.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("no answer within 5 s");
        let n = read.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response's head and body (none after a `HEAD`, by content-length otherwise).
    async fn answer(&mut self, to_head: bool) -> (String, Vec<u8>) {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.fill().await, "closed mid-head: {:?}", self.buf);
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let length = if to_head { 0 } else { content_length(&head) };
        while self.buf.len() < end + length {
            assert!(self.fill().await, "closed mid-body");
        }
        let body = self.buf[end..end + length].to_vec();
        self.buf.drain(..end + length);
        (head, body)
    }

    /// The next response's status line (its body, by content-length, read past).
    async fn response(&mut self) -> String {
        let (head, _) = self.answer(false).await;
        head.lines().next().unwrap_or_default().to_owned()
    }

    async fn closed(&mut self) -> bool {
        closed_within(&mut self.stream, Duration::from_secs(5)).await
    }
}

/// A response head's `content-length`.
fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"))
}

const PAUSE: Duration = Duration::from_millis(300);

/// A hoard in front of `registry`, with a plain mirror listener.
async fn with_mirror(registry: &Registry) -> Proxy {
    Proxy::builder(registry)
        .mirror("listen = \"127.0.0.1:0\"")
        .start()
        .await
}

/// Requests on one keep-alive connection, after pauses, split, pipelined; then one that asks
/// to close it.
async fn exercise<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S, host: &str) {
    let mut client = Client::new(stream);
    let get = format!("GET /v2/ HTTP/1.1\r\nhost: {host}\r\n\r\n");
    client.send(&get).await;
    assert_eq!(client.response().await, "HTTP/1.1 200 OK");
    for _ in 0..2 {
        tokio::time::sleep(PAUSE).await;
        client.send(&get).await;
        assert_eq!(client.response().await, "HTTP/1.1 200 OK", "after a pause");
    }
    // A head split across two writes with a pause between, twice in a row, at different places.
    for at in [11, get.len() - 3] {
        tokio::time::sleep(PAUSE).await;
        client.send(&get[..at]).await;
        tokio::time::sleep(PAUSE).await;
        client.send(&get[at..]).await;
        assert_eq!(client.response().await, "HTTP/1.1 200 OK", "split at {at}");
    }
    // Pipelined: two whole requests and the start of a third in one write, the rest later.
    let head = format!("HEAD /v2/ HTTP/1.1\r\nhost: {host}\r\n\r\n");
    client.send(&format!("{get}{head}{}", &get[..20])).await;
    assert_eq!(client.response().await, "HTTP/1.1 200 OK");
    let headed = loop {
        if let Some(at) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(client.fill().await);
    };
    let status = String::from_utf8_lossy(&client.buf[..headed]).into_owned();
    assert!(status.starts_with("HTTP/1.1 200 OK"), "{status}");
    client.buf.drain(..headed);
    tokio::time::sleep(PAUSE).await;
    client.send(&get[20..]).await;
    assert_eq!(
        client.response().await,
        "HTTP/1.1 200 OK",
        "pipelined, split"
    );
    // Asked to close: answered, then closed.
    tokio::time::sleep(PAUSE).await;
    client
        .send(&format!(
            "GET /v2/ HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(client.response().await, "HTTP/1.1 200 OK");
    assert!(client.closed().await, "still open after connection: close");
}

#[tokio::test]
async fn idle_keepalive_connections_serve_their_next_requests_however_they_arrive() {
    init();
    let registry = Registry::start().await;
    let proxy = with_mirror(&registry).await;
    let mirror = proxy.server.mirror_addr().unwrap();
    exercise(
        TcpStream::connect(mirror).await.unwrap(),
        &mirror.to_string(),
    )
    .await;
    let tcp = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    exercise(intercepted_over(&proxy, tcp).await, REGISTRY).await;
}

#[tokio::test]
async fn idle_and_dribbling_keepalive_connections_close_at_header_read_timeout() {
    init();
    let registry = Registry::start().await;
    let proxy = Proxy::builder(&registry)
        .proxy("header_read_timeout = \"1s\"")
        .mirror("listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let mirror = proxy.server.mirror_addr().unwrap();
    let get = format!("GET /v2/ HTTP/1.1\r\nhost: {mirror}\r\n\r\n");

    // Idle after a request: open at 0.6 s, closed by hoard soon after 1 s.
    let mut idle = Client::new(TcpStream::connect(mirror).await.unwrap());
    idle.send(&get).await;
    assert_eq!(idle.response().await, "HTTP/1.1 200 OK");
    let start = std::time::Instant::now();
    assert!(!closed_within(&mut idle.stream, Duration::from_millis(600)).await);
    assert!(
        idle.closed().await,
        "an idle connection outlived header_read_timeout"
    );
    let after = start.elapsed();
    assert!(after < Duration::from_secs(3), "closed after {after:?}");

    // A request then a head sent a few bytes at a time, never finished: closed like the idle one,
    // though each write comes well within the timeout.
    let mut slow = Client::new(TcpStream::connect(mirror).await.unwrap());
    slow.send(&get).await;
    assert_eq!(slow.response().await, "HTTP/1.1 200 OK");
    let start = std::time::Instant::now();
    let mut closed = false;
    for piece in "GET /v2/ HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .as_bytes()
        .chunks(2)
    {
        if slow.stream.write_all(piece).await.is_err()
            || closed_within(&mut slow.stream, Duration::from_millis(150)).await
        {
            closed = true;
            break;
        }
    }
    let after = start.elapsed();
    assert!(closed, "a dribbling head was still read after {after:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&after),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn the_plain_mirror_still_serves_h2_to_a_client_that_opens_with_its_preface() {
    init();
    let registry = Registry::start().await;
    let proxy = with_mirror(&registry).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..2 {
        let ping = client
            .get(format!("{}/v2/", proxy.mirror_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(ping.version(), reqwest::Version::HTTP_2);
        assert_eq!(ping.status(), 200);
        tokio::time::sleep(PAUSE).await;
    }
}

/// Hits answered from memory on the connection itself (no hyper): pipelined with requests hyper
/// answers (a range), each in order and whole, with the headers hyper's answer has, each
/// counted as a hit; and a pipelined request after them in the same write still answered.
#[tokio::test]
async fn hits_from_memory_are_answered_in_order_among_the_others() {
    init();
    let registry = Registry::start().await;
    let blob = fresh_blob(4096);
    let digest = registry.add_blob(blob.clone());
    let proxy = with_mirror(&registry).await;
    let mirror = proxy.server.mirror_addr().unwrap();
    let path = format!("/v2/p/app/blobs/{digest}?ns={REGISTRY}");
    // A miss that fills, then a hit read from the file, which memory keeps.
    for _ in 0..2 {
        let got = reqwest::get(format!("http://{mirror}{path}"))
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap(), blob);
    }
    let hits = |metrics: &str| {
        sample(
            metrics,
            "hoard_requests_total{cache=\"HIT\",via=\"mirror\"}",
        )
    };
    let before = hits(&proxy.admin("/metrics").await);

    let mut client = Client::new(TcpStream::connect(mirror).await.unwrap());
    let get = format!("GET {path} HTTP/1.1\r\nhost: {mirror}\r\n\r\n");
    let head = format!("HEAD {path} HTTP/1.1\r\nhost: {mirror}\r\n\r\n");
    let range = format!("GET {path} HTTP/1.1\r\nhost: {mirror}\r\nrange: bytes=0-9\r\n\r\n");
    client.send(&format!("{get}{head}{range}{get}")).await;
    let (first, body) = client.answer(false).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert_eq!(body, blob, "the GET's body");
    for line in [
        format!("docker-content-digest: {digest}\r\n"),
        format!("etag: \"{digest}\"\r\n"),
        "content-length: 4096\r\n".to_owned(),
        "accept-ranges: bytes\r\n".to_owned(),
        "date: ".to_owned(),
    ] {
        assert!(first.contains(&line), "{line:?} missing from {first}");
    }
    let (headed, body) = client.answer(true).await;
    assert!(headed.starts_with("HTTP/1.1 200 OK\r\n"), "{headed}");
    assert_eq!(content_length(&headed), 4096);
    assert!(body.is_empty());
    let (ranged, body) = client.answer(false).await;
    assert!(ranged.starts_with("HTTP/1.1 206 "), "{ranged}");
    assert_eq!(body, blob[..10]);
    let (last, body) = client.answer(false).await;
    assert!(last.starts_with("HTTP/1.1 200 OK\r\n"), "{last}");
    assert_eq!(body, blob, "the last GET's body");
    // Nothing more was sent than the four answers.
    assert!(!closed_within(&mut client.stream, Duration::from_millis(200)).await);
    assert!(client.buf.is_empty(), "{:?}", client.buf);
    // Each is a hit in the metrics (the range too), logged once it was sent.
    let after = hits(&proxy.admin("/metrics").await);
    assert_eq!(after - before, 4.0, "hits counted");
    assert_eq!(
        registry.count("GET", &digest),
        1,
        "the registry was asked once"
    );
}
