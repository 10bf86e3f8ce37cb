//! Stream facts without decoding.
//!
//! - [`SpsProbe`] reads the displayed resolution from the codec's parameter sets (H.264 SPS via
//!   `h264-reader`, with cropping applied) and implements [`crispy_core::ResolutionProbe`].
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
//!                                   keyframe: i % 30 == 0 });
//! }
//! assert_eq!(stats.frames(), 90);
//! assert_eq!(stats.gop_frames(), Some((30, 30)));
//! assert_eq!(stats.duration_ms(), 3000);
//! ```

mod sps;
mod stats;

pub use sps::{ProbeError, SpsProbe};
pub use stats::{ProbeReport, StreamStats};
