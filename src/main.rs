//! The `portier` binary: parse, run, map errors to exit codes.

use std::process::ExitCode;

mod cli;
mod signals;

use cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => return fail(&e),
    };
    // Sockets systemd (or a parent) bound for us, taken before any thread starts.
    let handed_in = match cli.takes_sockets() {
        true => match portier::listen::sockets_from_env() {
            Ok(sockets) => sockets,
            Err(e) => return fail(&e),
        },
        false => Vec::new(),
    };
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
            portier::sink::say(&format!("cannot start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli.run(handed_in));
    // A read of stdin may still be blocking a thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Says what went wrong in one line and picks the exit code (2 for usage).
fn fail(error: &portier::error::Error) -> ExitCode {
    portier::sink::say(&error.to_string());
    ExitCode::from(error.exit_code())
}
