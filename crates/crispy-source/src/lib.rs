//! FFmpeg-backed packet sources for crispy-streamer.
//!
//! [`RtspSource`] reads a live camera; every blocking call is bounded by a stall timeout and
//! interrupted at once on shutdown, and credentials never appear in its output.
//!
//! [`FileSource`] opens a video file with libavformat and yields the packets of its best video
//! stream in decode order, without decoding them. Payloads are handed over as [`bytes::Bytes`]
//! that keep FFmpeg's own packet buffer alive, so no frame is copied on the way out.
//!
//! All `unsafe` code of the project lives in this crate's `ffi` module.
//!
//! ```no_run
//! use crispy_core::PacketSource;
//! use crispy_source::FileSource;
//!
//! let mut source = FileSource::open("clip.mp4")?;
//! println!("{}x{} {}", source.stream_info().width, source.stream_info().height,
//!          source.stream_info().codec);
//! while let Some(packet) = source.next_packet()? {
//!     println!("pts {} key {}", packet.pts, packet.keyframe);
//! }
//! # Ok::<(), crispy_source::SourceError>(())
//! ```

mod demux;
mod error;
mod ffi;
mod file;
mod interrupt;
mod rtsp;
mod synthetic;
mod transcode;

pub use error::SourceError;
pub use file::FileSource;
pub use rtsp::{RtspConfig, RtspSource, RtspTransport};
pub use synthetic::{SyntheticConfig, SyntheticSource};
pub use transcode::{TranscodeConfig, TranscodeSource};

/// Initialises FFmpeg once per process and routes its log lines into `tracing` (target `ffmpeg`).
///
/// Every source calls this; calling it again is cheap.
pub fn init() {
    ffi::init();
}
