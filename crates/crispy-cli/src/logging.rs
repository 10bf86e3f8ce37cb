//! Logging setup: text or JSON lines on stderr, cooperating with the progress bar.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::Global;

/// Initialises `tracing`; returns the progress bar (hidden unless stderr is a terminal and
/// logs are text).
pub fn init(global: &Global) -> ProgressBar {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "warn",
        // object_store logs each of its own HTTP retries at INFO; our `upload failed, will
        // retry` line already says what happened, once per attempt.
        (false, 0) => "info,object_store=warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let interactive = std::io::stderr().is_terminal() && !global.log_is_json() && !global.quiet;
    let bar = if interactive {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let writer = BarWriter(bar.clone());
    // A log line that cannot be written (stderr closed: a dead pipe, a restarted journal)
    // is lost, and that is all: reporting it would itself write to stderr, and a panic there
    // would stop whatever thread was logging (a camera's reader, the signal handler).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false)
        .with_ansi(interactive);
    if global.log_is_json() {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.compact().init();
    }
    bar
}

/// Styles the bar once the media length is known.
pub fn style_bar(bar: &ProgressBar, total_ms: u64) {
    bar.set_length(total_ms);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
}

/// Writes log lines above the progress bar instead of through it. A line stderr does not
/// take is dropped: logging never fails the program.
#[derive(Clone)]
struct BarWriter(ProgressBar);

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The last line of defence for secrets: errors quoted from libraries (object_store,
        // FFmpeg) name the URLs they used, and a custom endpoint may carry credentials. (Query
        // parameters are left: a signed URL logged on purpose must stay usable.)
        let redacted;
        let line = match std::str::from_utf8(buf) {
            Ok(text) if text.contains("://") => {
                redacted = crispy_core::redact::redact_userinfo(text);
                redacted.as_bytes()
            }
            _ => buf,
        };
        if self.0.is_hidden() {
            let _ = std::io::stderr().write_all(line);
        } else {
            self.0.suspend(|| {
                let _ = std::io::stderr().write_all(line);
            });
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes `text` to stderr; like a log line, it is dropped when stderr does not take it
/// (where `eprintln!` would panic).
pub fn to_stderr(text: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{text}");
}
