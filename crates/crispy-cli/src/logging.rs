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
    let writer = BarWriter {
        bar: bar.clone(),
        colours: interactive,
        json: global.log_is_json(),
    };
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
struct BarWriter {
    bar: ProgressBar,
    /// Lines carry the formatter's own colour codes (a terminal).
    colours: bool,
    /// Lines are JSON objects: their strings escape what must be (a Rust escape in one
    /// would make the line invalid JSON).
    json: bool,
}

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The last line of defence for secrets: errors quoted from libraries (object_store,
        // FFmpeg) name the URLs they used, and a custom endpoint may carry credentials. (Query
        // parameters are left: a signed URL logged on purpose must stay usable.)
        // Each call is one whole event. Names from outside (a file called
        // "x.mp4\n…  INFO forged line") are written as escapes, so one event is one line.
        let text = String::from_utf8_lossy(buf);
        let text = if text.contains("://") {
            std::borrow::Cow::Owned(crispy_core::redact::redact_userinfo(&text).into_owned())
        } else {
            text
        };
        let line = if self.json {
            text
        } else {
            escape_controls(&text, self.colours)
        };
        if self.bar.is_hidden() {
            let _ = std::io::stderr().write_all(line.as_bytes());
        } else {
            self.bar.suspend(|| {
                let _ = std::io::stderr().write_all(line.as_bytes());
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
/// (where `eprintln!` would panic), and control characters in it are escaped.
pub fn to_stderr(text: std::fmt::Arguments<'_>) {
    let text = text.to_string();
    let _ = writeln!(std::io::stderr(), "{}", escape_controls(&text, false));
}

/// `text` with its control characters written as Rust escapes (`\n`, `\r`, `\u{1b}`), so
/// that a name from outside cannot start a line of its own or move a terminal's cursor:
/// all but a final newline, tabs, and (with `colours`) the formatter's own colour codes
/// (`ESC [ digits ; … m`), which only colour what follows.
fn escape_controls(text: &str, colours: bool) -> std::borrow::Cow<'_, str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let needs = |c: char| c.is_control() && c != '\t';
    if !body.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        let len = c.len_utf8();
        if colours && c == '\x1b' {
            let sgr = rest[1..]
                .strip_prefix('[')
                .map(|r| {
                    r.len()
                        - r.trim_start_matches(|d: char| d.is_ascii_digit() || d == ';')
                            .len()
                })
                .filter(|&n| rest[2 + n..].starts_with('m'));
            if let Some(n) = sgr {
                out.push_str(&rest[..3 + n]);
                rest = &rest[3 + n..];
                continue;
            }
        }
        if needs(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
        rest = &rest[len..];
    }
    if body.len() < text.len() {
        out.push('\n');
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn a_line_stays_one_line_whatever_the_names_in_it() {
        let forged = "file=evil\n2026-11-24T00:00:00Z  INFO forged\r\x1b[1A\x1b[2Kx\u{85}y\n";
        let plain = escape_controls(forged, false);
        assert_eq!(
            plain,
            "file=evil\\n2026-11-24T00:00:00Z  INFO forged\\r\\u{1b}[1A\\u{1b}[2Kx\\u{85}y\n"
        );
        assert_eq!(plain.matches('\n').count(), 1);
        // On a terminal the formatter's colours stay; cursor movements do not.
        let coloured = "\x1b[32m INFO\x1b[0m \x1b[2mcrispy:\x1b[0m x\x1b[1Ay\x1b[31mz\n";
        assert_eq!(
            escape_controls(coloured, true),
            "\x1b[32m INFO\x1b[0m \x1b[2mcrispy:\x1b[0m x\\u{1b}[1Ay\x1b[31mz\n"
        );
        assert_eq!(
            escape_controls(coloured, false).matches('\x1b').count(),
            0,
            "no colours asked for: every escape character is shown"
        );
        // Ordinary lines are left as they are, tabs and all.
        assert!(matches!(
            escape_controls("a\tb ünïcode\n", false),
            std::borrow::Cow::Borrowed(_)
        ));
        // A lone escape character at the end, and an unfinished colour code.
        assert_eq!(escape_controls("a\x1b", true), "a\\u{1b}");
        assert_eq!(escape_controls("a\x1b[12", true), "a\\u{1b}[12");
    }
}
