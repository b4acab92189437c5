//! The `hoard` command: parse the command line and run it. The subcommands are in `cli.rs`, the
//! serve loop in `serve.rs`, and everything they run in the library.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod serve;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
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
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hoard: {}", hoard::error::Chain(err.as_ref()));
            // A cache.dir that is not hoard's to use is a configuration problem.
            let misconfigured = err.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<hoard::store::StoreError>(),
                    Some(hoard::store::StoreError::NotOurs { .. })
                )
            });
            if misconfigured {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
