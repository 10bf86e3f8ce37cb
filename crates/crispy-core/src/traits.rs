use async_trait::async_trait;
use bytes::Bytes;

use crate::{Chunk, ChunkMetadata, EncodedPacket, SourceId, StoredManifest, StreamInfo};

/// A source of encoded video packets in decode order (a file, a camera).
///
/// Sources block; the pipeline runs each on its own thread.
pub trait PacketSource: Send {
    /// What can go wrong while reading.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The video stream the packets belong to.
    fn stream_info(&self) -> &StreamInfo;

    /// The next packet, or `None` at the end of the stream.
    fn next_packet(&mut self) -> Result<Option<EncodedPacket>, Self::Error>;

    /// Asked once after [`next_packet`](Self::next_packet) returned `None`: damage met while
    /// reading that did not stop it (packets a decoder had to skip), to be reported once every
    /// chunk is stored. Sources that stop at the first damage have none (the default).
    fn damage_at_end(&mut self) -> Option<Self::Error> {
        None
    }
}

/// Groups packets into standalone chunks.
pub trait Chunker: Send {
    /// What can go wrong while chunking.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Feeds one packet; returns a chunk when this packet closed one.
    fn push(&mut self, packet: EncodedPacket) -> Result<Option<Chunk>, Self::Error>;

    /// Ends the stream; returns the last, partial chunk if any frames are pending.
    fn finish(&mut self) -> Result<Option<Chunk>, Self::Error>;
}

/// Width and height of a stream, read from its parameter sets.
pub trait ResolutionProbe: Send + Sync {
    /// What can go wrong while probing.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The displayed `(width, height)` of `info`'s stream.
    fn resolution(&self, info: &StreamInfo) -> Result<(u32, u32), Self::Error>;
}

/// Completes a chunk's metadata with its content hash (and, where configured, a signature)
/// and renders the manifest.
pub trait MetadataSigner: Send {
    /// What can go wrong while signing.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Fills `chunk.metadata`'s integrity fields and returns the manifest bytes to store.
    fn seal(&mut self, chunk: &mut Chunk) -> Result<Bytes, Self::Error>;
}

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// The objects were written now.
    Created,
    /// Identical objects were already there (a retried upload); nothing was overwritten.
    AlreadyPresent,
}

/// Stores chunks and their manifests.
#[async_trait]
pub trait ChunkSink: Send + Sync {
    /// What can go wrong while storing.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Where the chunk described by `metadata` will be stored (its `object` field).
    fn object_path(&self, metadata: &ChunkMetadata) -> String;

    /// Like [`Self::object_path`], for a source that has its own (validated) `prefix` inside
    /// the sink. By default the prefix goes in front of the sink's path.
    fn object_path_in(&self, prefix: &str, metadata: &ChunkMetadata) -> String {
        format!("{prefix}/{}", self.object_path(metadata))
    }

    /// The newest manifest stored for `source_id` (under the source's own `prefix`, if
    /// any), with its stored text: where a restarted live source continues its sequence and
    /// hash chain. Sinks that cannot be read back return `None`.
    async fn last_manifest(
        &self,
        prefix: Option<&str>,
        source_id: &SourceId,
    ) -> Result<Option<StoredManifest>, Self::Error> {
        let _ = (prefix, source_id);
        Ok(None)
    }

    /// Stores the chunk payload at `chunk.metadata.object` and `manifest` beside it.
    async fn put(&self, chunk: &Chunk, manifest: Bytes) -> Result<PutOutcome, Self::Error>;

    /// A time-limited signed GET URL for `object`, valid for `ttl`; `None` where the sink
    /// cannot sign (local directories, memory).
    async fn signed_url(
        &self,
        object: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, Self::Error> {
        let _ = (object, ttl);
        Ok(None)
    }

    /// True when trying `error`'s put again cannot succeed (a conflicting object, a damaged
    /// upload, a malformed name): the pipeline stops retrying it. By default every error is
    /// worth another try.
    fn is_permanent(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// True when `error` lasts until someone acts, though retrying is not pointless (a local
    /// directory that became read-only or not permitted, a file where a folder should be):
    /// a run over a file stops on it, since the file can be run again once it is fixed;
    /// live sources keep retrying, so they go on by themselves once it is. By default no
    /// error is.
    fn is_lasting(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }
}
