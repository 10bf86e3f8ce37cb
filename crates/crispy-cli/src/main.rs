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

use clap::error::ErrorKind;
use crispy_core::redact::{escape_controls, is_escaped};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
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

/// A command line clap refused (or `--help`, `--version`). With JSON logs asked for, a
/// mistake is one JSON line like every other error, with `exit_code`; otherwise clap's own
/// text.
fn usage_error(e: &clap::Error) -> ExitCode {
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational {
        e.exit();
    }
    if !json_logs_requested() {
        // clap quotes what it refused: a camera URL with its password, a store URL with a
        // key. Written redacted (without colours) when it holds one.
        let text = match escaped_usage_text() {
            Some(text) => text,
            None => {
                let plain = e.render().to_string();
                if crispy_core::redact::redact_urls(&plain) == plain {
                    e.exit();
                }
                plain
            }
        };
        use std::io::Write;
        let _ = write!(
            std::io::stderr(),
            "{}",
            crispy_core::redact::redact_urls(&text)
        );
        return ExitCode::from(exit::USAGE);
    }
    let global = cli::Global {
        log_format: cli::LogFormat::Json,
        verbose: 0,
        quiet: false,
    };
    let _bar = logging::init(&global);
    // clap's message up to its first blank line (the missing arguments included), without
    // the usage and hints after it.
    let rendered = e.to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = message.join(" ");
    let text = joined.strip_prefix("error: ").unwrap_or(&joined);
    tracing::error!(exit_code = exit::USAGE, "{text}");
    ExitCode::from(exit::USAGE)
}

/// clap's text for a refused command line whose arguments hold control characters (a file
/// name or id with a newline or an escape sequence), without colours: the command line is
/// parsed again with those characters written as escapes, so that whatever clap quotes
/// (a value, an option's name, part of either) cannot forge lines or move the terminal's
/// cursor. `None` when no argument holds one (clap prints its text itself).
fn escaped_usage_text() -> Option<String> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !args.iter().skip(1).any(|a| a.contains(is_escaped)) {
        return None;
    }
    let escaped: Vec<String> = args
        .iter()
        .map(|a| escape_controls(a).into_owned())
        .collect();
    Some(match cli::Cli::try_parse_args(&escaped) {
        Err(e) => e.render().to_string(),
        // Refused for the characters themselves.
        Ok(_) => {
            let odd: Vec<String> = args
                .iter()
                .skip(1)
                .filter(|a| a.contains(is_escaped))
                .map(|a| format!("'{}'", escape_controls(a)))
                .collect();
            format!(
                "error: invalid argument {}\n\nFor more information, try '--help'.\n",
                odd.join(", ")
            )
        }
    })
}

/// Whether the command line or the environment asks for JSON logs, read without clap (which
/// has just refused the command line).
fn json_logs_requested() -> bool {
    // Lossy: a name that is not UTF-8 must not make this panic.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let flag = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    flag || std::env::var("CRISPY_LOG_FORMAT").is_ok_and(|v| v == "json")
}

/// `crispy keygen --out PATH`.
fn keygen(args: &cli::KeygenArgs) -> anyhow::Result<()> {
    // `--out k.pub` would put the private key where its public half is expected (and
    // the public one in `k.pub.pub`): a private key shared as the public one.
    if args.out.extension().is_some_and(|e| e == "pub") {
        return Err(exit::UsageError(format!(
            "keygen --out {}: --out names the private key; the public key is written next to \
             it with .pub added (give the path without .pub)",
            crispy_core::redact::escape_controls(&args.out.display().to_string())
        ))
        .into());
    }
    let key_id = crispy_signer::generate_keypair(&args.out)?;
    output::to_stdout(|out| {
        let private = args.out.display().to_string();
        let public = crispy_signer::public_key_path(&args.out)
            .display()
            .to_string();
        writeln!(
            out,
            "wrote {} (private, mode 0600) and {} (public); key id {key_id}",
            crispy_core::redact::escape_controls(&private),
            crispy_core::redact::escape_controls(&public)
        )
    })
}
