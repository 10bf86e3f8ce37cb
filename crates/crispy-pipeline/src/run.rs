use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crispy_chunker::{CopyChunker, CopyChunkerConfig};
use crispy_core::{
    Chunk, ChunkDuration, ChunkSink, Chunker, ClockSource, MetadataSigner, PacketSource,
    PutOutcome, ResolutionProbe, SourceId, StreamInfo,
};
use crispy_probe::SpsProbe;
use crispy_signer::Sha256Sealer;
use crispy_source::FileSource;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::{ChunkReport, Observer, PipelineError, RunSummary, SourceStarted};

/// Chunks buffered between the reader thread and the upload stage.
const CHANNEL_CHUNKS: usize = 2;
/// Packets between two progress events.
const PROGRESS_EVERY: u64 = 64;

/// What to run: one video file, stream-copied into chunks.
#[derive(Debug, Clone)]
pub struct FileRun {
    /// The video file.
    pub path: PathBuf,
    /// Source id; defaults to the sanitized file stem.
    pub source_id: Option<SourceId>,
    /// Requested chunk length.
    pub chunk: ChunkDuration,
    /// Uploads in flight at once (at least 1).
    pub max_in_flight: usize,
}

impl FileRun {
    /// Defaults: 3 s chunks, 6 uploads in flight, id from the file name.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            source_id: None,
            chunk: ChunkDuration::default(),
            max_in_flight: 6,
        }
    }

    /// The id this run will use.
    pub fn effective_source_id(&self) -> SourceId {
        self.source_id.clone().unwrap_or_else(|| {
            let stem = self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            SourceId::sanitize(&stem)
        })
    }
}

enum ReaderMsg {
    Chunk(Box<Chunk>),
    Failed(ReaderFailure),
}

enum ReaderFailure {
    Source {
        error: crispy_source::SourceError,
        discarded_frames: u64,
    },
    Chunker(crispy_chunker::ChunkerError),
}

/// Runs `job` to the end: every chunk is stored in `sink` before this returns `Ok`.
///
/// On a damaged source, the complete chunks read before the damage are stored, then
/// [`PipelineError::Source`] is returned.
pub async fn run_file<S>(
    job: FileRun,
    sink: Arc<S>,
    observer: Arc<dyn Observer>,
) -> Result<RunSummary, PipelineError>
where
    S: ChunkSink + 'static,
{
    let started = Instant::now();
    let source_id = job.effective_source_id();
    let path = job.path.clone();
    let source = tokio::task::spawn_blocking(move || FileSource::open(path))
        .await
        .map_err(|e| PipelineError::Internal(format!("open task: {e}")))?
        .map_err(|error| PipelineError::Source {
            error,
            chunks_stored: 0,
            discarded_frames: 0,
        })?;

    let mut info = source.stream_info().clone();
    apply_probe(&source_id, &mut info);
    let (origin, clock) = clock_origin(source.creation_time());
    let duration_ms = source.duration_secs().map(|s| (s * 1000.0).round() as u64);
    observer.started(&SourceStarted {
        source_id: source_id.clone(),
        display: job.path.display().to_string(),
        info: info.clone(),
        duration_ms,
    });
    tracing::info!(
        source = %source_id,
        file = %job.path.display(),
        codec = %info.codec,
        resolution = %format_args!("{}x{}", info.width, info.height),
        fps = info.frame_rate.map(|r| r.as_f64()).unwrap_or(0.0),
        chunk = %job.chunk,
        clock = ?clock,
        "source opened"
    );

    let chunker = CopyChunker::new(&info, CopyChunkerConfig::new(source_id.clone(), job.chunk))?;
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let reader_observer = Arc::clone(&observer);
    let reader = std::thread::Builder::new()
        .name(format!("read-{source_id}"))
        .spawn(move || read_loop(source, chunker, tx, reader_observer.as_ref()))
        .map_err(|e| PipelineError::Internal(format!("spawning reader thread: {e}")))?;

    let permits = Arc::new(Semaphore::new(job.max_in_flight.max(1)));
    let mut uploads: JoinSet<Result<ChunkReport, PipelineError>> = JoinSet::new();
    let mut summary = RunSummary {
        source_id: source_id.clone(),
        chunks: 0,
        already_present: 0,
        frames: 0,
        bytes: 0,
        media_ms: 0,
        wall: Duration::ZERO,
    };
    let mut failure: Option<PipelineError> = None;
    let mut first_pts: Option<i64> = None;
    while let Some(msg) = rx.recv().await {
        let mut chunk = match msg {
            ReaderMsg::Chunk(c) => *c,
            ReaderMsg::Failed(f) => {
                failure = Some(match f {
                    ReaderFailure::Source {
                        error,
                        discarded_frames,
                    } => PipelineError::Source {
                        error,
                        chunks_stored: 0,
                        discarded_frames,
                    },
                    ReaderFailure::Chunker(e) => e.into(),
                });
                break;
            }
        };
        let m = &mut chunk.metadata;
        let base = *first_pts.get_or_insert(m.start_pts);
        let offset_ms = m.time_base.ticks_to_millis(m.start_pts - base);
        m.start_time = origin + chrono::Duration::milliseconds(offset_ms);
        m.end_time = m.start_time + chrono::Duration::milliseconds(m.duration_ms as i64);
        m.clock = clock;
        m.object = sink.object_path(m);

        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        let sink = Arc::clone(&sink);
        let observer = Arc::clone(&observer);
        uploads.spawn(async move {
            let _permit = permit;
            store_chunk(chunk, sink.as_ref(), observer.as_ref()).await
        });
        while let Some(done) = uploads.try_join_next() {
            if let Err(e) = account(done, &mut summary) {
                failure.get_or_insert(e);
            }
        }
        if failure.is_some() {
            break;
        }
    }
    // Stop the reader (it sees the closed channel) and wait for uploads in flight.
    drop(rx);
    while let Some(done) = uploads.join_next().await {
        if let Err(e) = account(done, &mut summary) {
            failure.get_or_insert(e);
        }
    }
    reader
        .join()
        .map_err(|_| PipelineError::Internal("reader thread panicked".to_owned()))?;
    summary.wall = started.elapsed();

    if let Some(mut e) = failure {
        match &mut e {
            PipelineError::Source { chunks_stored, .. }
            | PipelineError::Sink { chunks_stored, .. } => {
                *chunks_stored = summary.chunks;
            }
            _ => {}
        }
        return Err(e);
    }
    tracing::info!(
        source = %summary.source_id,
        chunks = summary.chunks,
        already_present = summary.already_present,
        frames = summary.frames,
        bytes = summary.bytes,
        media_ms = summary.media_ms,
        wall_ms = summary.wall.as_millis() as u64,
        frames_per_s = format_args!("{:.0}", summary.frames_per_second()),
        "run finished"
    );
    Ok(summary)
}

/// Reads packets and chunks them until the end, a failure, or the consumer going away.
fn read_loop(
    mut source: FileSource,
    mut chunker: CopyChunker,
    tx: mpsc::Sender<ReaderMsg>,
    observer: &dyn Observer,
) {
    let tb = source.stream_info().time_base;
    let mut first_dts = None;
    loop {
        let packet = match source.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(error) => {
                let discarded_frames = chunker.pending_frames() as u64;
                let _ = tx.blocking_send(ReaderMsg::Failed(ReaderFailure::Source {
                    error,
                    discarded_frames,
                }));
                return;
            }
        };
        if source.packets_read() % PROGRESS_EVERY == 0 {
            let first = *first_dts.get_or_insert(packet.dts);
            observer.progress(tb.ticks_to_millis(packet.dts - first).max(0) as u64);
        }
        first_dts.get_or_insert(packet.dts);
        match chunker.push(packet) {
            Ok(None) => {}
            Ok(Some(chunk)) => {
                if tx.blocking_send(ReaderMsg::Chunk(Box::new(chunk))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(ReaderMsg::Failed(ReaderFailure::Chunker(e)));
                return;
            }
        }
    }
    match chunker.finish() {
        Ok(Some(chunk)) => {
            let _ = tx.blocking_send(ReaderMsg::Chunk(Box::new(chunk)));
        }
        Ok(None) => {}
        Err(e) => {
            let _ = tx.blocking_send(ReaderMsg::Failed(ReaderFailure::Chunker(e)));
        }
    }
}

async fn store_chunk<S: ChunkSink>(
    mut chunk: Chunk,
    sink: &S,
    observer: &dyn Observer,
) -> Result<ChunkReport, PipelineError> {
    let manifest = Sha256Sealer.seal(&mut chunk)?;
    let t0 = Instant::now();
    let outcome = sink
        .put(&chunk, manifest)
        .await
        .map_err(|e| PipelineError::Sink {
            error: Box::new(e),
            chunks_stored: 0,
        })?;
    let upload = t0.elapsed();
    let m = &chunk.metadata;
    tracing::info!(
        source = %m.source_id,
        sequence = m.sequence,
        object = %m.object,
        resolution = %format_args!("{}x{}", m.width, m.height),
        duration_ms = m.duration_ms,
        frames = m.frame_count,
        bytes = m.bytes,
        upload_ms = format_args!("{:.1}", upload.as_secs_f64() * 1000.0),
        already_present = outcome == PutOutcome::AlreadyPresent,
        "chunk stored"
    );
    let report = ChunkReport {
        metadata: chunk.metadata,
        upload,
        outcome,
    };
    observer.chunk_stored(&report);
    Ok(report)
}

fn account(
    done: Result<Result<ChunkReport, PipelineError>, tokio::task::JoinError>,
    summary: &mut RunSummary,
) -> Result<(), PipelineError> {
    let report = done.map_err(|e| PipelineError::Internal(format!("upload task: {e}")))??;
    summary.chunks += 1;
    summary.frames += report.metadata.frame_count;
    summary.bytes += report.metadata.bytes;
    summary.media_ms += report.metadata.duration_ms;
    if report.outcome == PutOutcome::AlreadyPresent {
        summary.already_present += 1;
    }
    Ok(())
}

/// Uses the parameter sets' resolution, warning when FFmpeg's stream info disagrees.
fn apply_probe(source_id: &SourceId, info: &mut StreamInfo) {
    match SpsProbe.resolution(info) {
        Ok((w, h)) if (w, h) != (info.width, info.height) => {
            tracing::warn!(
                source = %source_id,
                sps = %format_args!("{w}x{h}"),
                ffmpeg = %format_args!("{}x{}", info.width, info.height),
                "resolution in the parameter sets differs from FFmpeg's stream info; using the SPS"
            );
            info.width = w;
            info.height = h;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(source = %source_id, "resolution probe failed, using FFmpeg's: {e}")
        }
    }
}

/// Wall-clock origin of a file: its `creation_time` tag, else now.
fn clock_origin(creation_time: Option<&str>) -> (DateTime<Utc>, ClockSource) {
    creation_time
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (t.with_timezone(&Utc), ClockSource::File))
        .unwrap_or_else(|| (Utc::now(), ClockSource::RunStart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_origin_prefers_the_creation_tag() {
        let (t, c) = clock_origin(Some("2024-05-01T10:20:30.000000Z"));
        assert_eq!(c, ClockSource::File);
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:20:30+00:00");
        assert_eq!(clock_origin(Some("garbage")).1, ClockSource::RunStart);
        assert_eq!(clock_origin(None).1, ClockSource::RunStart);
    }
}
