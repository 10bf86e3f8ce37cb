//! `crispy`: cut video files (and, later, cameras) into exactly-timed MP4 chunks with
//! manifests, and store them in object storage. The binary only parses arguments, sets up
//! logging and calls the library crates; see `crispy --help`.

mod cli;
mod exit;
mod logging;
mod probe;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let progress = logging::init(&cli.global);
    let result = match cli.command {
        cli::Command::Run(args) => run::run(*args, progress),
        cli::Command::Probe(args) => probe::probe(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::code_for(&err);
            let message = exit::describe(&err);
            if cli.global.log_is_json() {
                tracing::error!(exit_code = code, "{message}");
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::from(code)
        }
    }
}
