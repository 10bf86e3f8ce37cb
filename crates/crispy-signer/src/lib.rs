//! Content hashes, hash chains and signatures for chunk manifests.
//!
//! [`Sealer`] implements [`crispy_core::MetadataSigner`] for one source: it hashes the chunk
//! payload (SHA-256), links the manifest to the previous one of the same source
//! (`prev_sha256`, the SHA-256 of its [canonical form](canonical_bytes)), signs the canonical
//! form when a [`SigningKey`] is configured (Ed25519 or HMAC-SHA256), and renders the JSON
//! manifest stored beside the chunk. [`VerifyingKeys`] checks such signatures.
//!
//! ```
//! use crispy_core::{Chunk, MetadataSigner, Payload};
//! # fn metadata() -> crispy_core::ChunkMetadata {
//! #     serde_json::from_str(r#"{"schema":"crispy.manifest/1","source_id":"cam","sequence":0,
//! #       "object":"cam/x.mp4","start_time":"2026-01-01T00:00:00.000Z",
//! #       "end_time":"2026-01-01T00:00:03.000Z","clock":"run-start","start_pts":0,
//! #       "time_base":"1/90000","duration_ts":270000,"duration_ms":3000,"requested_ms":3000,
//! #       "frame_count":90,"fps":30.0,"width":640,"height":360,"codec":"h264","profile":null,
//! #       "keyframe_aligned":true,"discontinuity":false,"bytes":0,"sha256":""}"#).unwrap()
//! # }
//! let key = crispy_signer::SigningKey::hmac(b"a shared secret of 32 bytes.....")?;
//! let mut sealer = crispy_signer::Sealer::new(Some(std::sync::Arc::new(key)), None);
//! let mut first = Chunk { payload: Payload::from(&b"abc"[..]), metadata: metadata() };
//! sealer.seal(&mut first)?;
//! assert_eq!(first.metadata.sha256,
//!            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
//! assert_eq!(first.metadata.prev_sha256, None);
//! let mut second = Chunk { payload: Payload::from(&b"def"[..]), metadata: metadata() };
//! second.metadata.sequence = 1;
//! sealer.seal(&mut second)?;
//! assert_eq!(second.metadata.prev_sha256,
//!            Some(crispy_signer::manifest_sha256(&first.metadata)));
//! assert_eq!(second.metadata.signature.as_ref().map(|s| s.alg.as_str()), Some("hmac-sha256"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod keys;

use std::sync::Arc;

use bytes::Bytes;
use crispy_core::{Chunk, ChunkMetadata, MetadataSigner, Payload};
use sha2::{Digest, Sha256};

pub use keys::{
    ED25519, HMAC_SHA256, KeyError, MIN_HMAC_SECRET, SigningKey, VerifyError, VerifyingKeys,
    ed25519_key_id, generate_keypair, hmac_key_id, public_key_path,
};

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

/// SHA-256 of a chunk's bytes as lowercase hex, hashed part by part (no copy).
pub fn payload_sha256_hex(payload: &Payload) -> String {
    let mut hasher = Sha256::new();
    for part in payload.parts() {
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The canonical byte form of a manifest, the bytes that are hashed for the chain and
/// signed: RFC 8785 (JSON Canonicalization Scheme) serialization of the manifest object
/// without its `signature` and `signed_url` members (the URL is added at upload time). Any
/// language with a JCS library can rebuild it from the stored JSON.
pub fn canonical_bytes(m: &ChunkMetadata) -> Vec<u8> {
    // Plain data with string keys: serializing to a value and to JCS cannot fail.
    let mut value = serde_json::to_value(m).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("signature");
        object.remove("signed_url");
    }
    serde_jcs::to_vec(&value).unwrap_or_default()
}

/// The canonical form of a stored manifest, rebuilt from its JSON text: every member but
/// `signature` and `signed_url`, including members this version does not know. A member
/// added after signing therefore breaks the signature and the chain, as the format promises.
/// `None` when the text is not a JSON object.
pub fn canonical_bytes_of_json(json: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let object = value.as_object_mut()?;
    object.remove("signature");
    object.remove("signed_url");
    serde_jcs::to_vec(&value).ok()
}

/// SHA-256 (lowercase hex) of a manifest's canonical form: the next manifest's
/// `prev_sha256`.
pub fn manifest_sha256(m: &ChunkMetadata) -> String {
    sha256_hex(&canonical_bytes(m))
}

/// Seals the chunks of one source, in order: content hash, chain link, signature.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: Option<Arc<SigningKey>>,
    prev: Option<String>,
}

impl Sealer {
    /// A sealer signing with `key` (unsigned manifests when `None`), whose first manifest
    /// links to `prev` (the canonical SHA-256 of the source's last stored manifest; `None`
    /// starts a chain).
    pub fn new(key: Option<Arc<SigningKey>>, prev: Option<String>) -> Self {
        Self { key, prev }
    }

    /// The canonical SHA-256 of the last manifest sealed (or the starting link).
    pub fn last_link(&self) -> Option<&str> {
        self.prev.as_deref()
    }
}

impl MetadataSigner for Sealer {
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
        m.sha256 = payload_sha256_hex(&chunk.payload);
        m.prev_sha256 = self.prev.take();
        m.signature = None;
        let canonical = canonical_bytes(m);
        m.signature = self.key.as_ref().map(|k| k.sign(&canonical));
        self.prev = Some(sha256_hex(&canonical));
        Ok(Bytes::from(m.to_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> ChunkMetadata {
        serde_json::from_str(
            r#"{"schema":"crispy.manifest/1","source_id":"cam","sequence":0,
            "object":"cam/x.mp4","start_time":"2026-01-01T00:00:00.000Z",
            "end_time":"2026-01-01T00:00:03.000Z","clock":"run-start","start_pts":0,
            "time_base":"1/90000","duration_ts":270000,"duration_ms":3000,"requested_ms":3000,
            "frame_count":90,"fps":30.0,"width":640,"height":360,"codec":"h264","profile":null,
            "keyframe_aligned":true,"discontinuity":false,"bytes":0,"sha256":""}"#,
        )
        .expect("metadata")
    }

    #[test]
    fn a_payload_hashes_as_its_bytes_in_one_piece() {
        let parts: Vec<Bytes> = (0u8..50)
            .map(|i| Bytes::from(vec![i; 3 * usize::from(i)]))
            .collect();
        let payload = Payload::from_parts(parts);
        assert_eq!(
            payload_sha256_hex(&payload),
            sha256_hex(&payload.to_bytes())
        );
        // The SHA-256 of the empty string: a payload with no parts still hashes.
        assert_eq!(
            payload_sha256_hex(&Payload::default()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn canonical_form_is_jcs_without_the_signature() {
        let mut m = metadata();
        m.fps = 29.97;
        let plain = String::from_utf8(canonical_bytes(&m)).expect("utf8");
        // Sorted keys, no whitespace, ECMAScript numbers (30.0 would print as 30).
        assert!(plain.starts_with(r#"{"aligned":false,"bytes":0,"clock":"run-start","codec":"h264","discontinuity":false,"duration_ms":3000,"duration_ts":270000,"end_time":"2026-01-01T00:00:03.000Z","fps":29.97,"frame_count":90,"gap_ms":null,"#), "{plain}");
        assert!(
            plain.ends_with(
                r#""start_time":"2026-01-01T00:00:00.000Z","time_base":"1/90000","width":640}"#
            ),
            "{plain}"
        );
        assert!(!plain.contains("signature"));
        m.signature = SigningKey::hmac(b"0123456789abcdef")
            .map(|k| k.sign(b"x"))
            .ok();
        assert_eq!(canonical_bytes(&m), plain.as_bytes(), "signature excluded");
        m.fps = 30.0;
        assert!(
            String::from_utf8(canonical_bytes(&m))
                .expect("utf8")
                .contains(r#""fps":30,"#)
        );
    }

    #[test]
    fn the_stored_text_gives_the_same_canonical_form_and_covers_added_members() {
        let mut m = metadata();
        m.fps = 29.97;
        m.signature = SigningKey::hmac(b"0123456789abcdef")
            .map(|k| k.sign(b"x"))
            .ok();
        let stored = serde_json::to_vec_pretty(&m).expect("json");
        assert_eq!(
            canonical_bytes_of_json(&stored),
            Some(canonical_bytes(&m)),
            "what the writer signed is what a reader rebuilds"
        );
        let mut added: serde_json::Value = serde_json::from_slice(&stored).expect("json");
        added["note"] = "added later".into();
        let added = serde_json::to_vec(&added).expect("json");
        assert_ne!(canonical_bytes_of_json(&added), Some(canonical_bytes(&m)));
        assert_eq!(canonical_bytes_of_json(b"[1, 2]"), None);
    }

    #[test]
    fn chain_links_each_manifest_to_the_previous_canonical_hash() {
        let mut sealer = Sealer::new(None, Some("ab".repeat(32)));
        let mut chunks: Vec<Chunk> = (0..3)
            .map(|i| {
                let mut m = metadata();
                m.sequence = i;
                Chunk {
                    payload: Payload::from(vec![i as u8; 10]),
                    metadata: m,
                }
            })
            .collect();
        for c in &mut chunks {
            let json = sealer.seal(c).expect("seal");
            let back: ChunkMetadata = serde_json::from_slice(&json).expect("json");
            assert_eq!(back, c.metadata, "the stored JSON is the metadata");
            assert_eq!(c.metadata.signature, None, "unsigned without a key");
        }
        assert_eq!(chunks[0].metadata.prev_sha256, Some("ab".repeat(32)));
        assert_eq!(
            chunks[1].metadata.prev_sha256,
            Some(manifest_sha256(&chunks[0].metadata))
        );
        assert_eq!(
            chunks[2].metadata.prev_sha256,
            Some(manifest_sha256(&chunks[1].metadata))
        );
        assert_eq!(
            sealer.last_link(),
            Some(manifest_sha256(&chunks[2].metadata).as_str())
        );
    }
}
