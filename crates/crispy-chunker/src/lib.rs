//! Stream-copy chunking of encoded video into standalone MP4 files.
//!
//! [`CopyChunker`] groups packets (decode order) into chunks that start on a keyframe and close
//! at the first keyframe at or after the requested duration. Each chunk is muxed by
//! [`mp4::write_mp4`] into a complete, "fast start" MP4 (`ftyp`, `moov`, one `mdat`) whose
//! timescale is the source's time base, so durations are exact: sample durations come from DTS
//! deltas, composition offsets from PTS − DTS, and an edit list makes presentation start at
//! the chunk's first frame.
//!
//! Why not the `mp4` crate's writer? In 0.14 its `hvcC` box is a stub (no parameter sets, so
//! `hvc1` output is undecodable) and it writes no edit list; we write the few boxes a video
//! track needs ourselves and use the `mp4` crate's reader in tests as an independent check.
//!
//! ```
//! use bytes::Bytes;
//! use crispy_chunker::{CopyChunker, CopyChunkerConfig};
//! use crispy_core::{Chunker, ChunkDuration, Codec, EncodedPacket, Rational, SourceId, StreamInfo};
//!
//! // A fake H.264 stream: avcC with one SPS and PPS, 30 fps, keyframe every 15 frames.
//! let avcc = Bytes::from_static(&[1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0xc0, 0x1e,
//!                                  1, 0, 2, 0x68, 0xce]);
//! let info = StreamInfo {
//!     codec: Codec::H264, profile: None, width: 320, height: 240,
//!     time_base: Rational::new(1, 90_000), frame_rate: Some(Rational::new(30, 1)),
//!     extradata: avcc, duration: None, frame_count: None,
//! };
//! let config = CopyChunkerConfig::new(SourceId::new("cam")?, "1s".parse()?);
//! let mut chunker = CopyChunker::new(&info, config)?;
//! let mut chunks = Vec::new();
//! for i in 0..60i64 {
//!     let packet = EncodedPacket { data: Bytes::from_static(&[0, 0, 0, 1, 0x65]), pts: i * 3000,
//!                                  dts: i * 3000, duration: 3000, keyframe: i % 15 == 0,
//!                                  discard: false };
//!     chunks.extend(chunker.push(packet)?);
//! }
//! chunks.extend(chunker.finish()?);
//! assert_eq!(chunks.len(), 2);
//! assert_eq!(chunks[0].metadata.frame_count, 30);
//! assert_eq!(chunks[0].metadata.duration_ms, 1000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config_record;
mod copy;
mod error;
pub mod mp4;

pub use copy::{CopyChunker, CopyChunkerConfig};
pub use error::ChunkerError;
