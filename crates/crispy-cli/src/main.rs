//! `crispy`: cut video files (and, later, cameras) into exactly-timed MP4 chunks with
//! manifests, and store them in object storage. The binary only parses arguments, sets up
//! logging and calls the library crates; see `crispy --help`.

mod cli;
mod exit;
mod logging;
mod output;
mod probe;
mod run;
mod verify;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let progress = logging::init(&cli.global);
    let result = match cli.command {
        cli::Command::Run(args) => run::run(*args, progress),
        cli::Command::Probe(args) => probe::probe(args),
        cli::Command::Verify(args) => verify::verify(args),
        cli::Command::Keygen(args) => keygen(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::code_for(&err);
            let message = exit::describe(&err);
            if cli.global.log_is_json() {
                tracing::error!(exit_code = code, "{message}");
            } else {
                logging::to_stderr(format_args!("error: {message}"));
            }
            ExitCode::from(code)
        }
    }
}

/// `crispy keygen --out PATH`.
fn keygen(args: &cli::KeygenArgs) -> anyhow::Result<()> {
    let key_id = crispy_signer::generate_keypair(&args.out)?;
    output::to_stdout(|out| {
        writeln!(
            out,
            "wrote {} (private, mode 0600) and {} (public); key id {key_id}",
            args.out.display(),
            crispy_signer::public_key_path(&args.out).display()
        )
    })
}
