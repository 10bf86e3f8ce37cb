//! Composes source → chunker → probe → signer → sink into a running pipeline.
//!
//! Each source reads and chunks on its own OS thread (FFmpeg calls block) and completes its
//! chunks' metadata (wall-clock times, object path). Chunks from every source cross one small
//! bounded channel to a shared upload stage, where each is hashed into a manifest and stored,
//! with at most `max_in_flight` uploads at once across all sources. A full channel slows the
//! readers down, so memory stays bounded.
//!
//! Files end at their last packet. Live cameras run until [`Shutdown`] is triggered: they
//! reconnect after end of stream, errors and stalls, with capped exponential backoff and
//! jitter, continuing the sequence and flagging the first chunk after a gap.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use crispy_pipeline::{FileRun, NoopObserver, run_file};
//! use crispy_sink::ObjectStoreSink;
//!
//! let sink = Arc::new(ObjectStoreSink::from_url("memory://")?);
//! let summary = run_file(FileRun::new("clip.mp4"), sink, Arc::new(NoopObserver)).await?;
//! println!("{} chunks, {:.0} frames/s", summary.chunks, summary.frames_per_second());
//! # Ok(()) }
//! ```

mod backoff;
pub mod config;
mod error;
mod job;
mod observer;
mod reader;
mod run;
mod shutdown;
pub mod verify;

pub use backoff::Backoff;
pub use error::PipelineError;
pub use job::{PipelineOptions, SourceJob, SourceSpec, SpoolOptions};
pub use observer::{
    CameraFault, CameraFaultKind, ChunkReport, NoopObserver, Observer, RunSummary, SourceStarted,
    UploadStage,
};
pub use run::{FileRun, run_file, run_sources};
pub use shutdown::Shutdown;

/// The shortest stall timeout accepted: below it, a camera between two frames would count as
/// stalled and be reconnected.
pub const MIN_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
