//! Tunnels for CONNECT to hosts hoard does not intercept: the destination's bytes, untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Hoard;
use crate::log::{CacheStatus, Stats};

/// Connects to `host:port` (config overrides first, then DNS), trying each address in turn.
pub async fn connect(hoard: &Hoard, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let addrs = hoard.upstream.resolve(host, port).await?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
    for addr in addrs {
        match connect_one(addr, hoard.config.connect_timeout).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

async fn connect_one(addr: SocketAddr, timeout: std::time::Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Copies bytes both ways until either side closes, then logs one line.
pub async fn run(client: Upgraded, mut server: TcpStream, authority: String, stats: Arc<Stats>) {
    let start = Instant::now();
    let mut client = TokioIo::new(client);
    let result = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let down = result.as_ref().map_or(0, |(_, down)| *down);
    stats.record(CacheStatus::Tunnel, down);
    match result {
        Ok((up, down)) => tracing::info!(
            host = %authority,
            method = %"CONNECT",
            status = 200,
            bytes = down,
            bytes_up = up,
            ms = format_args!("{ms:.1}"),
            cache = %"TUNNEL",
            "tunnel closed"
        ),
        Err(error) => tracing::info!(
            host = %authority,
            method = %"CONNECT",
            ms = format_args!("{ms:.1}"),
            cache = %"TUNNEL",
            error = %error,
            "tunnel ended with an error"
        ),
    }
}
