//! The command line: clap's types for every subcommand, and the small steps each one shares
//! (loading the config, exit codes, printing generated text).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use hoard::config::{Config, Overrides, parse_duration, parse_size};
use hoard::ops::disk::CacheDir;
use hoard::ops::export::ExportOptions;
use hoard::ops::imageref::ImageRef;
use hoard::ops::manifest::Platform;
use hoard::ops::pin::PinTarget;
use hoard::ops::prune::PruneOptions;
use hoard::ops::warm::WarmOptions;
use hoard::ops::{self, Outcome};

/// A caching HTTPS proxy for container registries.
#[derive(Debug, Parser)]
#[command(name = "hoard", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the proxy.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
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
    /// Look after the cache folder of a config (safe while hoard serves).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Look after hoard's CA: its fingerprint, and a new one.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Pull images through a running hoard, so that later pulls are served from its cache.
    Warm {
        #[command(flatten)]
        config: ConfigArg,
        /// Images, e.g. alpine, gcr.io/project/app:1.2, localhost:5000/x@sha256:…
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<ImageRef>,
        /// The platform picked from multi-platform images: os/arch[/variant].
        #[arg(long, default_value = "linux/amd64")]
        platform: Platform,
        /// The proxy to pull through [default: http://<proxy.listen of the config>, or where
        /// a running hoard noted its address in the cache folder when nothing answers there].
        #[arg(long, value_name = "URL")]
        proxy: Option<String>,
    },
    /// Print a shell completion script.
    ///
    /// For example: hoard completions bash > /usr/share/bash-completion/completions/hoard
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    ///
    /// For example: hoard man | man -l -
    Man {
        /// Write hoard.1 and a page per subcommand (hoard-serve.1, …) into this folder instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// List the tagged images: registry/repository:tag, digest, size, last used.
    Ls {
        #[command(flatten)]
        config: ConfigArg,
        /// A JSON array instead of a table (last_used in RFC 3339, UTC; size in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Entries and bytes in the cache, and the hit ratio if hoard is running.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every entry; corrupt ones are removed and listed (exit status 1).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove entries not used for a while, or the least recently used beyond a size.
    ///
    /// With --s3, prune the shared tier ([store.s3]) instead of the local cache: objects no node
    /// uploaded or served for --older-than (alias --unused-for; default: store.s3.retention).
    #[command(group = clap::ArgGroup::new("limit").required(true).multiple(true))]
    Prune {
        #[command(flatten)]
        config: ConfigArg,
        /// Remove entries not used for this long, e.g. 30d (with --s3: not uploaded or served by
        /// any node for this long).
        #[arg(long, visible_alias = "unused-for", value_parser = parse_duration, group = "limit")]
        older_than: Option<Duration>,
        /// Remove least recently used entries until the cache is at most this big, e.g. 100GiB.
        #[arg(long, value_parser = parse_size, group = "limit")]
        max_size: Option<u64>,
        /// Prune the shared S3 tier of the config, not the local cache.
        #[arg(long, group = "limit", conflicts_with = "max_size")]
        s3: bool,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove images: their tags, manifests and the blobs no other image uses.
    Rm {
        #[command(flatten)]
        config: ConfigArg,
        /// Images, e.g. alpine:3.20, gcr.io/project/app@sha256:…
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<ImageRef>,
    },
    /// Keep images from eviction, as cache.pin does (a running hoard from its next reconcile).
    Pin {
        #[command(flatten)]
        config: ConfigArg,
        /// Images, e.g. alpine:3.20, or patterns as cache.pin writes them, e.g. gcr.io/team/*:v*
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PinTarget>,
    },
    /// Write images (every platform) from the cache into an OCI image-layout tar, to carry to
    /// a hoard that cannot reach the registry; what the cache lacks is pulled through the
    /// running hoard.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Images, e.g. alpine:3.20, gcr.io/project/app@sha256:…
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<ImageRef>,
        /// The tar to write (written as FILE.tmp, then renamed).
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Pull nothing: an image the cache does not hold whole is an error naming what lacks.
        #[arg(long)]
        offline: bool,
        /// The proxy to pull through, as for `hoard warm`.
        #[arg(long, value_name = "URL", conflicts_with = "offline")]
        proxy: Option<String>,
    },
    /// Add the images of a tar from `hoard cache export` to the cache, every digest checked
    /// first (a bad tar changes nothing: exit status 2); a running hoard serves them from its
    /// next reconcile.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The tar, an OCI image layout whose images are named by their full reference.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Undo `hoard cache pin`; a cache.pin pattern of the config stays (exit status 1).
    Unpin {
        #[command(flatten)]
        config: ConfigArg,
        /// Images or patterns as given to `hoard cache pin`.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PinTarget>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Print the CA's fingerprint (sha256:<hex> of ca.crt's DER), for a setup script's
    /// --ca-sha256; exit status 1 if there is no CA yet.
    Fingerprint {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a new CA (a new key) for the config's intercepted hosts, used from the next start,
    /// and print its fingerprint. Clients need the new ca.crt.
    Renew {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArg {
    /// TOML config file (see config.toml.example).
    #[arg(long, short, env = "HOARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            ca_dir,
            cache_dir,
            tag_ttl,
        } => {
            let overrides = Overrides {
                listen,
                ca_dir,
                cache_dir,
                tag_ttl,
            };
            let Some(loaded) = load_config(&config, overrides.clone()) else {
                return Ok(ExitCode::from(2));
            };
            crate::serve::serve(loaded, config.config, overrides)
        }
        Command::Cache(command) => cache(command),
        Command::Ca(command) => ca(command),
        Command::Warm {
            config,
            images,
            platform,
            proxy,
        } => {
            let Some(config) = load_config(&config, Overrides::default()) else {
                return Ok(ExitCode::from(2));
            };
            let options = WarmOptions { proxy, platform };
            let outcome = hoard::runtime()?.block_on(ops::warm::run(&config, &images, &options));
            Ok(exit_code(outcome))
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hoard", &mut script);
            print_bytes(&script)
        }
        Command::Man { out_dir } => {
            let command = Cli::command();
            if let Some(dir) = out_dir {
                std::fs::create_dir_all(&dir)?;
                clap_mangen::generate_to(command, &dir)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            print_bytes(&page)
        }
    }
}

fn ca(command: CaCommand) -> anyhow::Result<ExitCode> {
    let (CaCommand::Fingerprint { config } | CaCommand::Renew { config }) = &command;
    let Some(config) = load_config(config, Overrides::default()) else {
        return Ok(ExitCode::from(2));
    };
    let mut out = std::io::stdout();
    let outcome = match command {
        CaCommand::Fingerprint { .. } => {
            ops::ca::fingerprint(&config, &mut out, &mut std::io::stderr())?
        }
        CaCommand::Renew { .. } => ops::ca::renew(&config, &mut out)?,
    };
    Ok(exit_code(outcome))
}

fn cache(command: CacheCommand) -> anyhow::Result<ExitCode> {
    let config = match &command {
        CacheCommand::Ls { config, .. }
        | CacheCommand::Stats { config, .. }
        | CacheCommand::Verify { config }
        | CacheCommand::Prune { config, .. }
        | CacheCommand::Rm { config, .. }
        | CacheCommand::Pin { config, .. }
        | CacheCommand::Unpin { config, .. }
        | CacheCommand::Export { config, .. }
        | CacheCommand::Import { config, .. } => config,
    };
    let Some(config) = load_config(config, Overrides::default()) else {
        return Ok(ExitCode::from(2));
    };
    if let CacheCommand::Prune {
        s3: true,
        older_than,
        dry_run,
        ..
    } = command
    {
        return prune_s3(&config, older_than, dry_run);
    }
    if matches!(command, CacheCommand::Import { .. }) {
        // An import may be the first thing a cache folder on the far side of an air gap gets.
        std::fs::create_dir_all(&config.cache.dir)?;
    }
    let dir = CacheDir::open(&config.cache.dir)?;
    let mut out = std::io::stdout();
    let outcome = match command {
        CacheCommand::Ls { json, .. } => ops::ls::run(&dir, &config.cache, json, &mut out)?,
        CacheCommand::Stats { json, .. } => hoard::runtime()?.block_on(ops::stats::run(
            &dir,
            config.proxy.listen,
            json,
            &mut out,
        ))?,
        CacheCommand::Verify { .. } => ops::verify::run(&dir, &mut out)?,
        CacheCommand::Prune {
            older_than,
            max_size,
            dry_run,
            s3: _,
            ..
        } => {
            let options = PruneOptions {
                older_than,
                max_size,
                dry_run,
            };
            ops::prune::run(&dir, &options, &config.cache.pin, &mut out)?
        }
        CacheCommand::Rm { images, .. } => {
            ops::rm::run(&dir, &images, &mut out, &mut std::io::stderr())?
        }
        CacheCommand::Export {
            images,
            output,
            offline,
            proxy,
            ..
        } => {
            let options = ExportOptions {
                output,
                offline,
                proxy,
            };
            let run = ops::export::run(&config, &dir, &images, &options, &mut out);
            hoard::runtime()?.block_on(run)?
        }
        CacheCommand::Import { file, .. } => ops::import::run(&dir, &file, &mut out)?,
        CacheCommand::Pin { images, .. } => ops::pin::pin(&config.cache.dir, &images, &mut out)?,
        CacheCommand::Unpin { images, .. } => ops::pin::unpin(
            &config.cache.dir,
            &config.cache.pin,
            &images,
            &mut out,
            &mut std::io::stderr(),
        )?,
    };
    Ok(exit_code(outcome))
}

/// `hoard cache prune --s3`: the shared tier only, the local disk untouched. A config without
/// `[store.s3]`, or no age to prune by, is a usage error.
fn prune_s3(
    config: &Config,
    older_than: Option<Duration>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let Some(s3) = &config.store.s3 else {
        eprintln!("hoard: --s3 needs a [store.s3] section in the config");
        return Ok(ExitCode::from(2));
    };
    let Some(older_than) = older_than.or(s3.retention) else {
        eprintln!(
            "hoard: --s3 needs --older-than (--unused-for) or store.s3.retention in the config"
        );
        return Ok(ExitCode::from(2));
    };
    let mut out = std::io::stdout();
    let outcome =
        hoard::runtime()?.block_on(ops::prune::run_s3(s3, older_than, dry_run, &mut out))?;
    Ok(exit_code(outcome))
}

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Loads and validates the config; a problem is printed as one line (the caller exits 2).
fn load_config(arg: &ConfigArg, overrides: Overrides) -> Option<Config> {
    match Config::load(arg.config.as_deref(), overrides) {
        Ok(config) => Some(config),
        Err(err) => {
            eprintln!("hoard: {err}");
            None
        }
    }
}

fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Trouble => ExitCode::FAILURE,
        Outcome::Refused => ExitCode::from(2),
    }
}
