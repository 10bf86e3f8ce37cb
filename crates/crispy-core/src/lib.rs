//! Shared types and traits of crispy-streamer.
//!
//! This crate holds the vocabulary every other crate speaks and nothing that does I/O:
//! validated [`SourceId`]s, [`StreamInfo`] and [`EncodedPacket`]s coming out of a source,
//! [`Chunk`]s and their [`ChunkMetadata`] (the manifest), and the small traits a pipeline is
//! composed of: [`PacketSource`], [`Chunker`], [`ResolutionProbe`], [`MetadataSigner`] and
//! [`ChunkSink`].
//!
//! ```
//! use crispy_core::{ChunkDuration, SourceId};
//!
//! let id: SourceId = "lobby-cam_01".parse()?;
//! assert_eq!(id.as_str(), "lobby-cam_01");
//! assert!("../etc".parse::<SourceId>().is_err());
//!
//! let d: ChunkDuration = "2.5s".parse()?;
//! assert_eq!(d.as_millis(), 2500);
//! # Ok::<(), crispy_core::Error>(())
//! ```

pub mod annexb;
mod duration;
mod error;
mod manifest;
mod media;
mod payload;
pub mod redact;
mod secret;
mod source_id;
mod traits;

pub use duration::{ChunkDuration, parse_millis};
pub use error::Error;
pub use manifest::{
    ChunkMetadata, ClockSource, MANIFEST_SCHEMA, ManifestSignature, RunEnd, SignedUrl,
    StoredManifest, sequence_ranges, sequence_runs,
};
pub use media::{Chunk, Codec, EncodedPacket, Rational, StreamInfo, display_rotation};
pub use payload::Payload;
pub use secret::Secret;
pub use source_id::SourceId;
pub use traits::{ChunkSink, Chunker, MetadataSigner, PacketSource, PutOutcome, ResolutionProbe};
