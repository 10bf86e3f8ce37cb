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
    #[error("source {path:?} is not a regular file (a directory, a device or a pipe)")]
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
    #[error(
        "source file {path:?} is not a video file FFmpeg can read ({source}{})",
        if said.is_empty() { String::new() } else { format!(": {said}") }
    )]
    NotMedia {
        /// The path as given.
        path: PathBuf,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
        /// What FFmpeg's log said while it tried (empty when nothing).
        said: String,
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
    /// Transcode mode: the decoder could not read some packets of a file, and their frames are
    /// missing from the chunks (every other frame was stored).
    #[error(
        "source file {path:?} is damaged: the decoder could not read {count} of its {packets} \
         video packets (the first around packet {first}), so their frames are missing from the chunks"
    )]
    Undecodable {
        /// The path as given.
        path: PathBuf,
        /// Video packets read.
        packets: u64,
        /// Packets the decoder refused.
        count: u64,
        /// The first refused packet, counting from 1. Approximate: a frame-threaded decoder
        /// reports a packet's failure a few packets later.
        first: u64,
    },
    /// Copy mode: packets of a file are damaged (FFmpeg flagged them incomplete, as when an
    /// MPEG-TS packet is lost, or their NAL unit lengths do not fit them, as where garbage
    /// overwrote a frame); they were stored as read and the file read to its end.
    #[error(
        "source file {path:?} is damaged: {count} of its {packets} video packets are incomplete \
         or corrupt (the first is packet {first}); they were kept as read, and their frames may \
         not show cleanly"
    )]
    CorruptPackets {
        /// The path as given.
        path: PathBuf,
        /// Video packets read.
        packets: u64,
        /// Packets flagged as damaged.
        count: u64,
        /// The first of them, counting from 1.
        first: u64,
    },
    /// Transcode mode: libx264 cannot encode the stream as asked (a picture larger than it
    /// takes, settings it refuses, an FFmpeg built without it). Nothing is wrong with the
    /// source's data.
    #[error("cannot transcode {input}: {reason}")]
    Encoder {
        /// The path as given, or the URL without credentials.
        input: String,
        /// What libx264 (or our check before it) said.
        reason: String,
    },
    /// A live source URL that cannot be used.
    #[error("invalid source URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, credentials removed.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Connecting to a live source failed (refused, unreachable, bad stream description).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL, credentials removed.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The camera rejected the credentials (RTSP 401/403).
    #[error("{url} rejected the credentials (401 Unauthorized): check the username and password")]
    Unauthorized {
        /// The URL, credentials removed.
        url: String,
    },
    /// The camera has no stream at this path (RTSP 404).
    #[error("{url} has no such stream (404 Not Found): check the path")]
    RemoteNotFound {
        /// The URL, credentials removed.
        url: String,
    },
    /// No data arrived within the stall timeout.
    #[error("{url} stalled: nothing received for {timeout_ms} ms")]
    Stalled {
        /// The URL, credentials removed.
        url: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// A live stream broke off.
    #[error("{url} disconnected after {packets} video packets: {reason}")]
    Disconnected {
        /// The URL, credentials removed.
        url: String,
        /// Packets read in this connection.
        packets: u64,
        /// What FFmpeg reported.
        reason: String,
    },
    /// Reading stopped because shutdown was requested.
    #[error("stopped: shutdown requested")]
    Shutdown,
}

impl SourceError {
    /// True for failures a camera will not heal by itself soon (wrong credentials, wrong
    /// path, a stream that cannot be used): reconnects then use the slower schedule.
    pub fn is_configuration_problem(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::RemoteNotFound { .. } | Self::BadStream { .. }
        )
    }

    /// True when the error came from the data (not from the file's absence or permissions).
    pub fn is_bad_data(&self) -> bool {
        matches!(
            self,
            Self::Empty { .. }
                | Self::NotMedia { .. }
                | Self::NoVideo { .. }
                | Self::BadStream { .. }
                | Self::Damaged { .. }
                | Self::Undecodable { .. }
                | Self::CorruptPackets { .. }
        )
    }
}
