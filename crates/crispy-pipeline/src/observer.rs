use std::time::Duration;

use crispy_core::{ChunkMetadata, PutOutcome, SourceId, StreamInfo};

/// A source that began delivering.
#[derive(Debug, Clone)]
pub struct SourceStarted {
    /// The source's id.
    pub source_id: SourceId,
    /// What the source is, for display (a path; never a secret).
    pub display: String,
    /// Its video stream.
    pub info: StreamInfo,
    /// Media duration when known (files), for progress.
    pub duration_ms: Option<u64>,
}

/// One chunk that reached the sink.
#[derive(Debug, Clone)]
pub struct ChunkReport {
    /// Its final metadata (the manifest).
    pub metadata: ChunkMetadata,
    /// Time spent storing chunk and manifest.
    pub upload: Duration,
    /// Whether it was written now or found already present.
    pub outcome: PutOutcome,
    /// From the chunker handing the chunk over (just after its last packet was read) to its
    /// object being readable in the sink; `None` for a chunk recovered from an earlier run.
    pub latency: Option<Duration>,
}

/// Totals of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The source's id.
    pub source_id: SourceId,
    /// Chunks of this run stored.
    pub chunks: u64,
    /// Of `chunks`, those that were already present (an earlier, interrupted run stored them).
    pub already_present: u64,
    /// Chunks of this source dropped from a full spool (live sources) during this run, before
    /// they were stored.
    pub dropped: u64,
    /// Chunks an earlier run of this source left in the spool, stored by this run (not
    /// counted in `chunks`, `frames`, `bytes` or `media_ms`).
    pub recovered: u64,
    /// Frames in the stored chunks.
    pub frames: u64,
    /// Bytes in the stored chunks.
    pub bytes: u64,
    /// Media time in the stored chunks, in ms.
    pub media_ms: u64,
    /// Wall time of the run.
    pub wall: Duration,
    /// Median chunk latency (see [`ChunkReport::latency`]), when any chunk was measured.
    pub latency_p50: Option<Duration>,
    /// 99th percentile chunk latency.
    pub latency_p99: Option<Duration>,
    /// A live camera that stored no chunk in the whole run (it was retried until the run
    /// was stopped): why its last attempt failed. `None` otherwise.
    pub gave_nothing: Option<CameraFault>,
    /// A file whose end a shutdown kept from being stored: about how far it got, in ms of
    /// media time (its complete chunks up to there are stored, the rest is not; the same run
    /// again stores it). `None` for a file stored to its end and for live sources.
    pub unfinished_at_ms: Option<u64>,
}

/// Why a live camera gave no chunk: its last attempt's problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraFault {
    /// What kind of problem it was.
    pub kind: CameraFaultKind,
    /// The problem in words (URLs without credentials).
    pub message: String,
}

/// Kinds of [`CameraFault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CameraFaultKind {
    /// The camera refused the credentials (401).
    Credentials,
    /// The camera has no stream at that path (404).
    NoSuchStream,
    /// The stream's codec cannot be stream-copied into MP4.
    Codec,
    /// Anything else: unreachable, stalled, broke off, a stream that cannot be chunked.
    Other,
}

impl CameraFault {
    /// The fault a camera's source error describes.
    pub fn from_source(e: &crispy_source::SourceError) -> Self {
        use crispy_source::SourceError;
        let kind = match e {
            SourceError::Unauthorized { .. } => CameraFaultKind::Credentials,
            SourceError::RemoteNotFound { .. } => CameraFaultKind::NoSuchStream,
            _ => CameraFaultKind::Other,
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }

    /// The fault a chunker error on a camera's stream describes.
    pub fn from_chunker(e: &crispy_chunker::ChunkerError) -> Self {
        let kind = match e {
            crispy_chunker::ChunkerError::UnsupportedCodec { .. } => CameraFaultKind::Codec,
            _ => CameraFaultKind::Other,
        };
        Self {
            kind,
            message: format!("cannot chunk this camera's stream: {e}"),
        }
    }
}

impl std::fmt::Display for CameraFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl RunSummary {
    /// Zero totals for `source_id`.
    pub fn empty(source_id: SourceId) -> Self {
        Self {
            source_id,
            chunks: 0,
            already_present: 0,
            dropped: 0,
            recovered: 0,
            frames: 0,
            bytes: 0,
            media_ms: 0,
            wall: Duration::ZERO,
            latency_p50: None,
            latency_p99: None,
            gave_nothing: None,
            unfinished_at_ms: None,
        }
    }

    /// Frames processed per wall-clock second.
    pub fn frames_per_second(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 { self.frames as f64 / s } else { 0.0 }
    }
}

/// The upload stage's load, reported whenever it may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStage {
    /// Chunks accepted into the spool, waiting for an upload slot.
    pub queued: usize,
    /// Uploads in progress (at most `max_in_flight`).
    pub in_flight: usize,
    /// Chunk and manifest bytes this stage holds in memory (the rest waits on disk).
    pub bytes_in_memory: u64,
}

/// Receives pipeline events, e.g. to draw a progress bar. All methods default to nothing.
pub trait Observer: Send + Sync {
    /// The upload stage's load (called often: keep it cheap).
    fn upload_stage(&self, _stage: &UploadStage) {}
    /// A source opened.
    fn started(&self, _event: &SourceStarted) {}
    /// The reader reached `media_ms` into the source.
    fn progress(&self, _media_ms: u64) {}
    /// A chunk was stored.
    fn chunk_stored(&self, _report: &ChunkReport) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}
