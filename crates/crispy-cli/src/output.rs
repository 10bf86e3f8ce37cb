//! A command's output on stdout.

use std::io::{self, Write};

use anyhow::Context;

/// Writes a command's output to stdout, buffered, flushed at the end.
///
/// A reader that went away (`crispy verify … | head`) ends the output quietly: the command
/// still finishes and its exit code still says what it found. Any other write error is one.
pub fn to_stdout(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to standard output"),
    }
}
