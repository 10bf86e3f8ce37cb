/// Errors raised while chunking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkerError {
    /// The codec cannot be stream-copied into MP4 by this chunker.
    #[error(
        "codec {codec} cannot be stream-copied into MP4 chunks (supported: h264, hevc); \
         use --mode transcode"
    )]
    UnsupportedCodec {
        /// FFmpeg's codec name.
        codec: String,
    },
    /// The codec configuration (SPS/PPS/VPS) is missing or malformed.
    #[error("invalid {codec} decoder configuration: {reason}")]
    BadConfig {
        /// Codec name.
        codec: String,
        /// What is wrong.
        reason: String,
    },
    /// The stream's time base cannot be used as an MP4 timescale.
    #[error("time base {time_base} cannot be used as an MP4 timescale")]
    BadTimeBase {
        /// The time base, `num/den`.
        time_base: String,
    },
    /// A chunk would exceed what a 32-bit sample table can describe.
    #[error("chunk too large: {reason}")]
    TooLarge {
        /// What overflowed.
        reason: String,
    },
}
