use crispy_chunker::ChunkerError;
use crispy_signer::SignerError;
use crispy_source::SourceError;

/// Errors that end a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source could not be opened or read. Chunks completed before the failure were
    /// uploaded first.
    #[error("{error}{}", discarded_note(error, *.discarded_frames, *.chunks_stored))]
    Source {
        /// The source's error (shown in this error's message, not as its `source()`).
        error: SourceError,
        /// Chunks stored before the failure.
        chunks_stored: u64,
        /// Frames of the incomplete chunk in progress, not uploaded.
        discarded_frames: u64,
    },
    /// The stream cannot be chunked.
    #[error(transparent)]
    Chunker(#[from] ChunkerError),
    /// A chunk could not be sealed.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// A chunk could not be stored.
    #[error("{error}")]
    Sink {
        /// The sink's error (shown in this error's message, not as its `source()`).
        error: Box<dyn std::error::Error + Send + Sync>,
        /// Chunks stored before the failure.
        chunks_stored: u64,
    },
    /// After shutdown, uploads did not finish within the drain timeout.
    #[error(
        "uploads did not finish within the drain timeout ({timeout:?}); {}",
        left_behind(*.pending, .spool, *.in_memory)
    )]
    DrainTimeout {
        /// The timeout.
        timeout: std::time::Duration,
        /// Chunks left in the spool.
        pending: usize,
        /// The spool directory.
        spool: String,
        /// The spool was in memory (local and memory sinks): what is left is lost.
        in_memory: bool,
    },
    /// The spool cannot be used (in use by another process, not writable, full disk).
    #[error(transparent)]
    Spool(#[from] crispy_sink::SpoolError),
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A pipeline thread or task ended abnormally (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

fn discarded_note(error: &SourceError, discarded: u64, stored: u64) -> String {
    if let SourceError::Undecodable { .. } = error {
        // Found at the end: every chunk, with every frame that could be decoded, is stored.
        format!("; the {stored} chunk(s) holding every other frame were stored")
    } else if let SourceError::CorruptPackets { .. } = error {
        format!("; all {stored} chunk(s) were stored")
    } else if discarded == 0 && stored == 0 {
        String::new()
    } else {
        format!(
            "; {stored} complete chunk(s) before the failure were stored, {discarded} frame(s) \
             of the incomplete chunk after them were not"
        )
    }
}

/// What becomes of the chunks a drain timeout leaves behind.
pub(crate) fn left_behind(pending: usize, spool: &str, in_memory: bool) -> String {
    if in_memory {
        format!(
            "{pending} chunk(s) were held in memory (a local or memory sink keeps no spool on \
             disk) and are lost: run the source again to store them"
        )
    } else {
        format!("{pending} chunk(s) stay in the spool {spool} and are uploaded on the next start")
    }
}
