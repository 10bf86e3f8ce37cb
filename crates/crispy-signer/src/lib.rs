//! Content hashes and manifests for chunks.
//!
//! [`Sha256Sealer`] implements [`crispy_core::MetadataSigner`]: it hashes the chunk payload
//! (SHA-256), records size and hash in the metadata, and renders the JSON manifest stored
//! beside the chunk. Signatures (Ed25519, HMAC) and the per-source hash chain build on this.
//!
//! ```
//! use bytes::Bytes;
//! use crispy_core::{Chunk, MetadataSigner};
//! # fn metadata() -> crispy_core::ChunkMetadata {
//! #     serde_json::from_str(r#"{"schema":"crispy.manifest/1","source_id":"cam","sequence":0,
//! #       "object":"cam/x.mp4","start_time":"2026-01-01T00:00:00.000Z",
//! #       "end_time":"2026-01-01T00:00:03.000Z","clock":"run-start","start_pts":0,
//! #       "time_base":"1/90000","duration_ts":270000,"duration_ms":3000,"requested_ms":3000,
//! #       "frame_count":90,"fps":30.0,"width":640,"height":360,"codec":"h264","profile":null,
//! #       "keyframe_aligned":true,"discontinuity":false,"bytes":0,"sha256":""}"#).unwrap()
//! # }
//! let mut chunk = Chunk { payload: Bytes::from_static(b"abc"), metadata: metadata() };
//! let manifest = crispy_signer::Sha256Sealer.seal(&mut chunk)?;
//! assert_eq!(chunk.metadata.sha256,
//!            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
//! assert!(std::str::from_utf8(&manifest)?.contains("\"bytes\": 3"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use bytes::Bytes;
use crispy_core::{Chunk, MetadataSigner};
use sha2::{Digest, Sha256};

/// Errors raised while sealing a chunk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The metadata is not ready to be sealed.
    #[error("chunk {sequence} of {source_id} cannot be sealed: {reason}")]
    Incomplete {
        /// Source of the chunk.
        source_id: String,
        /// Sequence number of the chunk.
        sequence: u64,
        /// What is missing.
        reason: &'static str,
    },
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hashes chunks and renders unsigned manifests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256Sealer;

impl MetadataSigner for Sha256Sealer {
    type Error = SignerError;

    fn seal(&mut self, chunk: &mut Chunk) -> Result<Bytes, SignerError> {
        let m = &mut chunk.metadata;
        if m.object.is_empty() {
            return Err(SignerError::Incomplete {
                source_id: m.source_id.to_string(),
                sequence: m.sequence,
                reason: "its object path is not set",
            });
        }
        m.bytes = chunk.payload.len() as u64;
        m.sha256 = sha256_hex(&chunk.payload);
        Ok(Bytes::from(m.to_json()))
    }
}
