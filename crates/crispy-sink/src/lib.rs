//! Chunk sinks over the `object_store` crate.
//!
//! [`ObjectStoreSink`] holds an `Arc<dyn ObjectStore>` and adds what is ours: deterministic,
//! sortable object names, the manifest beside each chunk, create-only puts (a retried upload
//! never overwrites; an identical object already there counts as success), and chunk facts as
//! object metadata where the store supports it.
//!
//! Object layout (see `docs/manifest.md`):
//! `<prefix>/<source_id>/<yyyy>/<mm>/<dd>/<yyyymmddTHHMMSS.mmmZ>-<sequence:08>.mp4` and the
//! manifest at the same path ending in `.json`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use crispy_sink::ObjectStoreSink;
//!
//! let sink = ObjectStoreSink::from_url("memory://bucket/footage")?;
//! sink.preflight().await?;
//! assert_eq!(sink.display_url(), "memory://bucket/footage");
//! # Ok(()) }
//! ```

mod error;
mod local;
mod naming;
mod open;
mod sink;
mod spool;

pub use error::SinkError;
pub use naming::{
    chunk_object_path, is_object_path, manifest_path_for, object_source, object_start,
};
pub use open::{Backend, SinkOptions};
pub use sink::{ObjectStoreSink, Walked, clean_prefix};
pub use spool::{Accepted, PendingDrops, Spool, SpoolEntry, SpoolError, UnrecordedDrops};
