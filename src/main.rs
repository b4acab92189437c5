//! The `hoard` command: parse the command line, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hoard::config::{Config, Overrides};

/// A caching HTTPS proxy for container registries.
#[derive(Debug, Parser)]
#[command(name = "hoard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// TOML config file (see config.toml.example); flags below override it.
        #[arg(long, short, env = "HOARD_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:3128].
        #[arg(long)]
        listen: Option<String>,
        /// Folder of the CA certificate and key [default: ca].
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Folder of the cache [default: cache].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// How long a tag is served without asking the registry, e.g. 10m [default: 10m].
        #[arg(long)]
        tag_ttl: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hoard: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Command::Serve {
        config,
        listen,
        ca_dir,
        cache_dir,
        tag_ttl,
    } = cli.command;
    let overrides = Overrides {
        listen,
        ca_dir,
        cache_dir,
        tag_ttl,
    };
    let config = match Config::load(config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("hoard: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = hoard::Server::start(config).await?;
        tokio::select! {
            result = server.wait() => result,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                Ok(())
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("hoard=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
