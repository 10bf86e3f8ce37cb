use std::path::PathBuf;

/// Errors raised while opening or reading a source.
///
/// Every variant names the source; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The path does not exist.
    #[error("source file {path:?} does not exist")]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The path exists but is a directory or another non-regular file.
    #[error("source {path:?} is not a regular file (is it a directory?)")]
    NotAFile {
        /// The path as given.
        path: PathBuf,
    },
    /// The file has zero bytes.
    #[error("source file {path:?} is empty (0 bytes)")]
    Empty {
        /// The path as given.
        path: PathBuf,
    },
    /// The file could not be read at all (permissions, I/O).
    #[error("cannot read source file {path:?}: {source}")]
    Io {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// FFmpeg does not recognise the file as media.
    #[error("source file {path:?} is not a video file FFmpeg can read ({source})")]
    NotMedia {
        /// The path as given.
        path: PathBuf,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// The file is media but holds no video stream.
    #[error("source file {path:?} has no video stream (streams found: {found})")]
    NoVideo {
        /// The path as given.
        path: PathBuf,
        /// A short list of what is in the file, e.g. `audio(aac)`.
        found: String,
    },
    /// The video stream lacks facts a chunk needs (time base, dimensions).
    #[error("video stream of {path:?} is unusable: {reason}")]
    BadStream {
        /// The path as given.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Reading failed part-way: the file is truncated or corrupt.
    #[error(
        "source file {path:?} is damaged after {packets} video packets \
         (truncated or corrupt): {reason}"
    )]
    Damaged {
        /// The path as given.
        path: PathBuf,
        /// Video packets read successfully before the damage.
        packets: u64,
        /// What FFmpeg reported.
        reason: String,
    },
}

impl SourceError {
    /// True when the error came from the data (not from the file's absence or permissions).
    pub fn is_bad_data(&self) -> bool {
        matches!(
            self,
            Self::Empty { .. }
                | Self::NotMedia { .. }
                | Self::NoVideo { .. }
                | Self::BadStream { .. }
                | Self::Damaged { .. }
        )
    }
}
