//! Stream facts without decoding.
//!
//! - [`SpsProbe`] reads the displayed resolution from the codec's parameter sets (H.264 SPS via
//!   `h264-reader`, H.265 by a small checked reader, with cropping applied) and implements
//!   [`crispy_core::ResolutionProbe`]; [`SpsReport`] adds profile, level, chroma format, bit
//!   depth and the VUI frame rate.
//! - [`Mp4Probe`] reads a finished MP4 chunk's video track (codec, size, duration, samples,
//!   keyframes) with the `mp4` crate, for `crispy verify` and `crispy probe`.
//! - [`StreamStats`] accumulates packet facts (frames, keyframes, GOP lengths, duration) for
//!   `crispy probe`, and renders a [`ProbeReport`].
//!
//! ```
//! use crispy_core::{EncodedPacket, Rational};
//! use crispy_probe::StreamStats;
//!
//! let mut stats = StreamStats::new(Rational::new(1, 30));
//! for i in 0..90 {
//!     stats.record(&EncodedPacket { data: Default::default(), pts: i, dts: i, duration: 1,
//!                                   keyframe: i % 30 == 0, discard: false });
//! }
//! assert_eq!(stats.frames(), 90);
//! assert_eq!(stats.gop_frames(), Some((30, 30)));
//! assert_eq!(stats.duration_ms(), 3000);
//! ```

mod h265;
mod mp4probe;
mod sps;
mod stats;

pub use mp4probe::{Mp4Probe, Mp4Report};
pub use sps::{ProbeError, SpsProbe, SpsReport};
pub use stats::{ProbeReport, StreamStats};
