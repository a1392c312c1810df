//! The `portier` binary: parse, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use portier::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit with 2 here
    // A server spreads its clients over every core; a one-connection client
    // starts faster on one thread.
    let mut builder = if cli.serves_many() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("portier: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli.run());
    // A read of stdin may still be blocking a thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portier: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
