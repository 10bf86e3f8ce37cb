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
mod reencode;
mod rtsp;
mod synthetic;
mod transcode;

pub use error::SourceError;
pub use ffi::{LogSourceGuard, log_source};
pub use file::FileSource;
pub use rtsp::{RtspConfig, RtspSource, RtspTransport};
pub use synthetic::{SyntheticConfig, SyntheticSource};
pub use transcode::{
    LiveTranscoder, MAX_BITRATE_KBPS, TranscodeConfig, TranscodeSource, X264_PRESETS,
};

/// A live camera connection as the pipeline drives it: packets plus what it needs to put
/// them on the wall clock and to report on the camera.
pub trait CameraSource: crispy_core::PacketSource<Error = SourceError> {
    /// The camera URL as it may be shown (no credentials).
    fn display_url(&self) -> &str;
    /// Wall-clock time (µs since the Unix epoch) of timestamp zero, from RTCP sender
    /// reports, once one has arrived.
    fn rtcp_start_time_us(&self) -> Option<i64>;
    /// When the first packet delivered by this connection was received.
    fn first_packet_received(&self) -> Option<std::time::SystemTime>;
    /// Packets read from the camera so far.
    fn packets_read(&self) -> u64;
    /// What the camera sends (its codec and size). The same as the packets' stream in copy
    /// mode; the decoder's input when transcoding.
    fn camera_info(&self) -> &crispy_core::StreamInfo {
        self.stream_info()
    }
}

/// Initialises FFmpeg once per process and routes its log lines into `tracing` (target `ffmpeg`).
///
/// Every source calls this; calling it again is cheap.
pub fn init() {
    ffi::init();
}

/// Makes glibc's allocator give large blocks (128 KiB and more: chunk payloads, FFmpeg's
/// probe buffers) straight back to the system when they are freed, instead of keeping them in
/// per-thread heaps. With many cameras, each on its own threads, those heaps otherwise hold
/// about a chunk's worth of freed memory per camera: 32 simulated cameras went from 78 MiB to
/// 55 MiB of anonymous memory, at no measurable CPU cost (`cargo xtask cameras`).
///
/// The price is a page fault per fresh page of every such block: reading a file at full speed
/// (a chunk every few milliseconds) took a quarter longer, so `crispy run` calls this only when
/// it runs live sources. A process-wide setting, left to the application. Does nothing where
/// the C library is not glibc.
pub fn release_large_blocks_eagerly() {
    ffi::release_large_blocks_eagerly();
}
