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
        (false, 0) => "info",
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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

/// Writes log lines above the progress bar instead of through it.
#[derive(Clone)]
struct BarWriter(ProgressBar);

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.is_hidden() {
            std::io::stderr().write_all(buf)?;
        } else {
            self.0.suspend(|| std::io::stderr().write_all(buf))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
