//! `hoard serve`: logging set up, the server started, then signals: SIGTERM or SIGINT stop it
//! after a grace period, SIGHUP reloads the config file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hoard::config::{Config, Overrides};
use hoard::error::Chain;
use hoard::ops::running::{Addresses, Noted};

/// Runs until SIGTERM or SIGINT, then lets transfers in progress finish (`proxy.shutdown_grace`).
/// SIGHUP reloads the config file; a config that does not load is refused and the old one stays.
pub(crate) fn serve(
    config: Config,
    path: Option<PathBuf>,
    overrides: Overrides,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    init_logging(&config);
    hoard::runtime()?.block_on(async {
        // Handlers first: a signal that arrives while hoard starts must not kill it.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut grace = config.proxy.shutdown_grace;
        let cache_dir = config.cache.dir.clone();
        let server = hoard::Server::start(config).await?;
        // Removed when it drops, after the shutdown below.
        let _noted = note_addresses(&server, &cache_dir);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                _ = hangup.recv() => match reload(&server, path.as_deref(), &overrides) {
                    Ok(new_grace) => grace = new_grace,
                    Err(err) => tracing::error!(error = %Chain(err.as_ref()), "reload refused; the running configuration stays"),
                },
            }
        }
        tracing::info!(?grace, "stopping: no new connections, waiting for transfers in progress");
        server.shutdown(grace).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Notes the listeners' real addresses in the cache folder, where `hoard cache stats` and
/// `hoard warm` look when the config's `proxy.listen` does not answer (`--listen`, port 0).
fn note_addresses(server: &hoard::Server, cache_dir: &Path) -> Option<Noted> {
    let addresses = Addresses {
        pid: std::process::id(),
        proxy: server.local_addr(),
        admin: server.admin_addr(),
        mirror: server.mirror_addr(),
    };
    match addresses.note(cache_dir) {
        Ok(noted) => Some(noted),
        Err(err) => {
            tracing::warn!(error = %err, "cannot note the listeners' addresses in the cache folder; `hoard cache stats` and `hoard warm` look only at proxy.listen");
            None
        }
    }
}

/// Reads the config file again and puts it in force; returns its shutdown grace.
fn reload(
    server: &hoard::Server,
    path: Option<&Path>,
    overrides: &Overrides,
) -> anyhow::Result<Duration> {
    let config = Config::load(path, overrides.clone())?;
    let grace = config.proxy.shutdown_grace;
    server.reload(config)?;
    Ok(grace)
}

/// Text or JSON lines on stderr; the level from `RUST_LOG` if set, else `log.level`.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        hoard::config::LogFormat::Json => logs.json().init(),
        hoard::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
