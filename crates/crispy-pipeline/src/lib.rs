//! Composes source → chunker → probe → signer → sink into a running pipeline.
//!
//! Reading and chunking run on a dedicated OS thread per source (FFmpeg calls block); chunks
//! cross a small bounded channel to the async side, where each is completed (times, object
//! path), hashed, and uploaded, with at most `max_in_flight` uploads at once. A full channel
//! slows the reader down, so memory stays bounded.
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

mod error;
mod observer;
mod run;

pub use error::PipelineError;
pub use observer::{ChunkReport, NoopObserver, Observer, RunSummary, SourceStarted};
pub use run::{FileRun, run_file};
