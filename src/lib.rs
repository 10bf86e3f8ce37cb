//! crispy-streamer: cut live cameras and video files into exactly-timed, hashed MP4 chunks
//! and store them in object storage.
//!
//! This facade re-exports the library crates; use them directly for a smaller build.
//!
//! | module | crate | role |
//! |---|---|---|
//! | [`core`] | `crispy-core` | shared types and traits, no I/O |
//! | [`source`] | `crispy-source` | FFmpeg-backed packet sources |
//! | [`chunker`] | `crispy-chunker` | stream-copy chunking into MP4 |
//! | [`probe`] | `crispy-probe` | resolution and stream facts without decoding |
//! | [`signer`] | `crispy-signer` | content hashes and manifests |
//! | [`sink`] | `crispy-sink` | sinks over `object_store` |
//! | [`pipeline`] | `crispy-pipeline` | composes all of the above |
//!
//! See `examples/chunk_file.rs` for a complete program.

pub use crispy_chunker as chunker;
pub use crispy_core as core;
pub use crispy_pipeline as pipeline;
pub use crispy_probe as probe;
pub use crispy_signer as signer;
pub use crispy_sink as sink;
pub use crispy_source as source;

/// The README's code examples compile (checked by the doc tests).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
