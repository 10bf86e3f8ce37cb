use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crispy_chunker::{CopyChunker, CopyChunkerConfig};
use crispy_core::{
    Chunk, ChunkDuration, ChunkMetadata, ChunkSink, ClockSource, PacketSource, PutOutcome,
    SourceId, StoredManifest, sequence_ranges,
};
use crispy_signer::Sealer;
use crispy_sink::{Spool, SpoolEntry, SpoolError};
use crispy_source::{
    FileSource, SourceError, SyntheticConfig, SyntheticSource, TranscodeConfig, TranscodeSource,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::reader::{
    ChainStart, LiveCamera, Outbox, ReaderFailure, ReaderMsg, Sealing, Timeline, Upload,
    apply_probe, grid_offset_ms, read_live, read_to_end,
};
use crate::{
    Backoff, ChunkReport, Observer, PipelineError, PipelineOptions, RunSummary, Shutdown,
    SourceJob, SourceSpec, SourceStarted, SpoolOptions, UploadStage,
};

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
        self.source_id
            .clone()
            .unwrap_or_else(|| SourceId::from_file_stem(&self.path))
    }
}

/// Runs one file to the end: every chunk is stored in `sink` before this returns `Ok`.
///
/// On a damaged file, the complete chunks read before the damage are stored, then
/// [`PipelineError::Source`] is returned.
pub async fn run_file<S>(
    job: FileRun,
    sink: Arc<S>,
    observer: Arc<dyn Observer>,
) -> Result<RunSummary, PipelineError>
where
    S: ChunkSink + 'static,
{
    let source = SourceJob {
        source_id: job.effective_source_id(),
        spec: SourceSpec::File(job.path),
        chunk: job.chunk,
        prefix: None,
    };
    let options = PipelineOptions {
        max_in_flight: job.max_in_flight,
        ..PipelineOptions::default()
    };
    let mut summaries = run_sources(vec![source], sink, options, Shutdown::new(), observer).await?;
    summaries
        .pop()
        .ok_or_else(|| PipelineError::Internal("no summary for the file".to_owned()))
}

/// How long a live source's start waits for the sink to give its last manifest (where the
/// sequence and hash chain continue) before going on from the spool's.
const LAST_MANIFEST_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sink said of a live source's last stored manifest at start.
enum Stored {
    /// It answered: this manifest, or none (the source is new to the sink).
    Known(Option<Box<StoredManifest>>),
    /// It failed or did not answer in time.
    Unknown,
}

/// Runs every source until files end and live sources are shut down, sharing one bounded
/// upload stage. Returns one summary per source, in `jobs` order.
///
/// Files are opened before anything starts, so a bad file fails the run at once. After
/// `shutdown` triggers, readers send their partial chunks and uploads get
/// `options.drain_timeout` to finish.
pub async fn run_sources<S>(
    jobs: Vec<SourceJob>,
    sink: Arc<S>,
    options: PipelineOptions,
    shutdown: Shutdown,
    observer: Arc<dyn Observer>,
) -> Result<Vec<RunSummary>, PipelineError>
where
    S: ChunkSink + 'static,
{
    let started = Instant::now();
    match &options.signing_key {
        Some(key) => tracing::info!(key_id = key.key_id(), "manifests are signed"),
        None => tracing::info!("manifests are hashed and chained but not signed (no signing key)"),
    }
    let (spool, recovered) = open_spool(&options.spool)?;
    let spool = Arc::new(spool);
    if !recovered.is_empty() {
        tracing::warn!(
            chunks = recovered.len(),
            bytes = spool.used_bytes(),
            spool = %spool.dir().display(),
            "uploading the chunks an earlier run left in the spool first"
        );
    }
    let (tx, mut rx) = mpsc::channel(jobs.len().max(2));
    let mut summaries: HashMap<SourceId, RunSummary> = HashMap::new();
    let mut latencies: HashMap<SourceId, Latencies> = HashMap::new();
    let mut threads = Vec::with_capacity(jobs.len());
    let order: Vec<SourceId> = jobs.iter().map(|j| j.source_id.clone()).collect();
    let files_only = !jobs.iter().any(|j| j.spec.is_live());

    // A live source continues the sequence and hash chain of its last stored chunk; a file
    // run starts its own chain. The sources' lookups run at once, each bounded: a store that
    // does not answer must not hold the cameras off one after another.
    let lookups = futures::future::join_all(jobs.iter().map(|job| {
        let sink = Arc::clone(&sink);
        async move {
            if !job.spec.is_live() {
                return None;
            }
            let lookup = sink.last_manifest(job.prefix.as_deref(), &job.source_id);
            Some(
                match tokio::time::timeout(LAST_MANIFEST_LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(m)) => Stored::Known(m.map(Box::new)),
                    Ok(Err(e)) => {
                        tracing::warn!(
                            source = %job.source_id,
                            "cannot read the sink's last manifest ({e}); continuing from the \
                             spool's, if any"
                        );
                        Stored::Unknown
                    }
                    Err(_) => {
                        tracing::warn!(
                            source = %job.source_id,
                            timeout_ms = LAST_MANIFEST_LOOKUP_TIMEOUT.as_millis() as u64,
                            "the sink did not give its last manifest in time; continuing from \
                             the spool's, if any"
                        );
                        Stored::Unknown
                    }
                },
            )
        }
    }))
    .await;
    for (job, stored) in jobs.into_iter().zip(lookups) {
        summaries.insert(
            job.source_id.clone(),
            RunSummary::empty(job.source_id.clone()),
        );
        // A live source whose last stored manifest is unknown (the sink did not say) and not
        // in the spool either starts a new chain, flagged `prev_unknown` so that nobody
        // mistakes it for the source's first chunk ever (`crispy verify` reports it).
        let mut prev_unknown = false;
        let sink_answered = matches!(stored, Some(Stored::Known(_)));
        let resume = stored.and_then(|stored| {
            // The spool may hold newer chunks than the sink (an outage before a restart).
            // Newer by time, not by sequence: a chain that started again at 0 elsewhere (a
            // `prev_unknown` start) is newer than the old chain this spool remembers.
            let spooled = spool.last_manifest(&job.source_id);
            match stored {
                Stored::Known(Some(a)) => Some(match spooled {
                    Some(b)
                        if (b.metadata.end_time, b.metadata.sequence)
                            > (a.metadata.end_time, a.metadata.sequence) =>
                    {
                        b
                    }
                    _ => *a,
                }),
                Stored::Known(None) => spooled,
                Stored::Unknown => {
                    prev_unknown = spooled.is_none();
                    spooled
                }
            }
        });
        if prev_unknown {
            tracing::warn!(
                source = %job.source_id,
                "starting a new hash chain at sequence 0 without knowing the sink's last \
                 manifest; its first manifest says so (prev_unknown), and `crispy verify` \
                 reports where it follows earlier chunks"
            );
        }
        let (first_sequence, prev_link, restarted_after) = match &resume {
            Some(stored) => {
                let m = &stored.metadata;
                tracing::info!(
                    source = %job.source_id,
                    last_sequence = m.sequence,
                    last_object = %m.object,
                    "continuing the sequence and hash chain of the last stored chunk"
                );
                // The link is to the text as stored (as `crispy verify` reads it), which may
                // come from another version of crispy, with members this one lacks or adds.
                let link = crispy_signer::canonical_bytes_of_json(&stored.json)
                    .map(|c| crispy_signer::sha256_hex(&c))
                    .unwrap_or_else(|| crispy_signer::manifest_sha256(m));
                (m.sequence + 1, Some(link), Some(m.end_time))
            }
            None => (0, None, None),
        };
        // Drops an earlier run kept in the spool because it ended before a manifest recorded
        // them: this run's first manifest records them, and its chunks are numbered after them.
        let kept = spool
            .kept_drops(&job.source_id)
            .filter(|_| job.spec.is_live())
            .map(|kept| {
                let resumed = resume.as_ref().map(|r| &r.metadata);
                kept_drops_apply(kept, prev_link.as_deref(), resumed, sink_answered)
            });
        let (first_sequence, adopted) = match kept {
            Some(Ok(kept)) if !kept.sequences.is_empty() => {
                tracing::warn!(
                    source = %job.source_id,
                    chunks = kept.sequences.len(),
                    sequences = %sequence_ranges(&kept.sequences),
                    "chunks an earlier run dropped are recorded in this run's first manifest"
                );
                let after = kept.sequences.last().map_or(0, |s| s + 1);
                (first_sequence.max(after), Some(kept))
            }
            Some(outcome) => {
                if let Err(stale) = outcome {
                    tracing::warn!(
                        source = %job.source_id,
                        sequences = %sequence_ranges(&stale.sequences),
                        "ignoring the spool's record of chunks an earlier run dropped: the sink \
                         holds newer chunks of this source than that record knows"
                    );
                }
                if let Err(e) = spool.forget_drops(&job.source_id) {
                    tracing::warn!(source = %job.source_id, "{e}");
                }
                (first_sequence, None)
            }
            None => (first_sequence, None),
        };
        if job.spec.is_live() {
            spool.start_live_source(&job.source_id, prev_link.clone(), adopted);
        }
        let out = Outbox::new(
            Arc::clone(&sink),
            job.prefix.clone(),
            ChainStart {
                restarted_after,
                prev_unknown,
            },
            Sealing {
                tx: tx.clone(),
                sealer: Sealer::new(options.signing_key.clone(), prev_link.clone()),
                spool: Arc::clone(&spool),
                live: job.spec.is_live(),
                shutdown: shutdown.clone(),
            },
            job.source_id.as_str(),
        )
        .map_err(|e| PipelineError::Internal(format!("spawning the sealing thread: {e}")))?;
        let observer = Arc::clone(&observer);
        let shutdown = shutdown.clone();
        let name = format!("read-{}", job.source_id);
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(f)
                .map_err(|e| PipelineError::Internal(format!("spawning reader thread: {e}")))
        };
        match job.spec {
            SourceSpec::File(path) => {
                let parts = open_file(
                    &job.source_id,
                    path,
                    job.chunk,
                    (options.align_wall, options.exact_cuts),
                    observer.as_ref(),
                )
                .await?;
                threads.push(spawn_to_end(
                    &job.source_id,
                    &name,
                    parts,
                    out,
                    observer,
                    shutdown,
                    false,
                )?);
            }
            SourceSpec::TranscodeFile(path, config) => {
                let parts = open_transcode(
                    &job.source_id,
                    path,
                    config,
                    job.chunk,
                    options.align_wall,
                    observer.as_ref(),
                )
                .await?;
                threads.push(spawn_to_end(
                    &job.source_id,
                    &name,
                    parts,
                    out,
                    observer,
                    shutdown,
                    false,
                )?);
            }
            SourceSpec::Synthetic(config) => {
                let parts = open_synthetic(
                    &job.source_id,
                    config,
                    job.chunk,
                    first_sequence,
                    options.align_wall,
                    &shutdown,
                    observer.as_ref(),
                )
                .await?;
                threads.push(spawn_to_end(
                    &job.source_id,
                    &name,
                    parts,
                    out,
                    observer,
                    shutdown,
                    true,
                )?);
            }
            SourceSpec::Rtsp(config) => {
                let camera = LiveCamera {
                    source_id: job.source_id,
                    config,
                    transcode: None,
                    chunk: job.chunk,
                    first_sequence,
                };
                let options = options.clone();
                threads.push(spawn(Box::new(move || {
                    read_live(camera, out, observer.as_ref(), &shutdown, &options)
                }))?);
            }
            SourceSpec::TranscodeRtsp(config, transcode) => {
                let camera = LiveCamera {
                    source_id: job.source_id,
                    config,
                    transcode: Some(transcode),
                    chunk: job.chunk,
                    first_sequence,
                };
                let options = options.clone();
                threads.push(spawn(Box::new(move || {
                    read_live(camera, out, observer.as_ref(), &shutdown, &options)
                }))?);
            }
        }
    }
    drop(tx);

    let max_in_flight = options.max_in_flight.max(1);
    let mut backlog: VecDeque<Upload> = recovered
        .into_iter()
        .map(|entry| Upload {
            entry,
            data: None,
            ready_at: None,
        })
        .collect();
    // Each task gives back the bytes it held, for the memory account.
    let mut uploads: JoinSet<(u64, Result<ChunkReport, PipelineError>)> = JoinSet::new();
    let mut failure: Option<PipelineError> = None;
    // Damaged spool entries (set aside at open, or on read-back), added up: the run goes on
    // and reports them at its end, unless another failure has to be reported instead.
    let mut damaged: Option<PipelineError> = spool.damaged_at_open().first().map(|first| {
        PipelineError::Spool(SpoolError::Damaged {
            dir: spool.dir().display().to_string(),
            count: spool.damaged_at_open().len(),
            first: first.clone(),
            kept_in: spool.dir().join("conflicts").display().to_string(),
        })
    });
    let mut readers_done = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Chunk bytes held in memory by this stage: backlog items that kept their payload, and
    // every upload in flight.
    let (mut queued_bytes, mut in_flight_bytes) = (0u64, 0u64);
    // A sink failure (a conflict) stops new uploads even when another error came first.
    let mut sink_failed = false;
    // The run's first put goes alone: a file run again with other settings (another
    // `--chunk`) conflicts on its first chunk, and then nothing of the other cut is written.
    let mut first_put_done = false;
    loop {
        let limit = if first_put_done { max_in_flight } else { 1 };
        while uploads.len() < limit && !sink_failed {
            let Some(item) = backlog.pop_front() else {
                break;
            };
            let bytes = item.entry.bytes;
            if item.data.is_some() {
                queued_bytes -= bytes;
            }
            if !spool.begin_upload(&item.entry) {
                continue; // dropped from the full spool before its turn
            }
            in_flight_bytes += bytes;
            let task = upload(
                item,
                Arc::clone(&sink),
                Arc::clone(&spool),
                UploadSettings {
                    retry_min: options.retry_min,
                    retry_max: options.retry_max,
                    signed_url_ttl: options.signed_url_ttl,
                    stop_on_lasting: files_only,
                },
                Arc::clone(&observer),
            );
            uploads.spawn(async move { (bytes, task.await) });
        }
        observer.upload_stage(&UploadStage {
            queued: backlog.len(),
            in_flight: uploads.len(),
            bytes_in_memory: queued_bytes + in_flight_bytes,
        });
        if readers_done && uploads.is_empty() && (backlog.is_empty() || sink_failed) {
            break;
        }
        if readers_done && shutdown.is_triggered() && drain_deadline.is_none() {
            drain_deadline = Some(tokio::time::Instant::now() + options.drain_timeout);
        }
        let deadline = drain_deadline;
        // Once the readers are done, only uploads wake this loop; those retrying a dead
        // store never finish, so the shutdown itself must, to start the drain deadline.
        let awaiting_shutdown = readers_done && drain_deadline.is_none();
        tokio::select! {
            () = shutdown.triggered(), if awaiting_shutdown => {}
            msg = rx.recv(), if !readers_done => match msg {
                Some(ReaderMsg::Accepted(item)) => {
                    let mut item = *item;
                    if backlog.len() >= max_in_flight {
                        // Waiting its turn: the bytes are in the spool, not held in memory.
                        item.data = None;
                    } else {
                        queued_bytes += item.entry.bytes;
                    }
                    backlog.push_back(item);
                    queued_bytes -= forget_dropped(&mut backlog, &spool);
                }
                Some(ReaderMsg::Dropped(list)) => {
                    for (id, _) in list {
                        summaries
                            .entry(id.clone())
                            .or_insert_with(|| RunSummary::empty(id))
                            .dropped += 1;
                    }
                }
                Some(ReaderMsg::Failed(f)) => {
                    failure.get_or_insert(match f {
                        ReaderFailure::Source {
                            error,
                            discarded_frames,
                        } => PipelineError::Source {
                            error,
                            chunks_stored: 0,
                            discarded_frames,
                        },
                        ReaderFailure::Chunker(e) => e.into(),
                        ReaderFailure::Signer(e) => e.into(),
                        ReaderFailure::Spool(e) => e.into(),
                    });
                }
                Some(ReaderMsg::GaveNothing(id, fault)) => {
                    summaries
                        .entry(id.clone())
                        .or_insert_with(|| RunSummary::empty(id))
                        .gave_nothing = Some(fault);
                }
                Some(ReaderMsg::Unfinished(id, read_ms)) => {
                    // The reader's word and its sealing thread's: the earlier point counts.
                    let s = summaries
                        .entry(id.clone())
                        .or_insert_with(|| RunSummary::empty(id));
                    s.unfinished_at_ms = Some(s.unfinished_at_ms.map_or(read_ms, |r| r.min(read_ms)));
                }
                None => readers_done = true,
            },
            Some(done) = uploads.join_next(), if !uploads.is_empty() => {
                first_put_done = true;
                let done = done.map(|(bytes, result)| {
                    in_flight_bytes -= bytes;
                    result
                });
                if let Err(e) = account(done, &mut summaries, &mut latencies) {
                    if matches!(e, PipelineError::Sink { .. }) {
                        let shown = crispy_core::redact::redact_urls(&e.to_string()).into_owned();
                        tracing::error!("{shown}; stopping every source");
                        sink_failed = true;
                        shutdown.trigger_because("the sink refused a chunk");
                        // Nothing more goes into a store that refused a chunk: the puts still
                        // in flight stop too (each is create-only and whole, or absent; a
                        // spooled chunk stays in the spool).
                        uploads.abort_all();
                        while let Some(done) = uploads.join_next().await {
                            // Those that finished first are stored: count them.
                            if let Ok((_, Ok(report))) = done {
                                let _ = account(Ok(Ok(report)), &mut summaries, &mut latencies);
                            }
                        }
                        in_flight_bytes = 0;
                    }
                    match (&mut damaged, e) {
                        (
                            Some(PipelineError::Spool(SpoolError::Damaged { count, .. })),
                            PipelineError::Spool(SpoolError::Damaged { count: more, .. }),
                        ) => *count += more,
                        (d, e @ PipelineError::Spool(SpoolError::Damaged { .. })) => {
                            d.get_or_insert(e);
                        }
                        (_, e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
            }
            () = sleep_until_some(deadline) => {
                uploads.abort_all();
                while uploads.join_next().await.is_some() {}
                let pending = spool.len();
                let dir = spool.dir().display().to_string();
                let in_memory = spool.is_in_memory();
                tracing::error!(
                    pending,
                    spool = %dir,
                    "drain timeout: {}",
                    crate::error::left_behind(pending, &dir, in_memory)
                );
                failure.get_or_insert(PipelineError::DrainTimeout {
                    timeout: options.drain_timeout,
                    pending,
                    spool: dir,
                    in_memory,
                });
                break;
            }
        }
    }
    spool.close();
    for t in threads {
        t.join()
            .map_err(|_| PipelineError::Internal("a reader thread panicked".to_owned()))?;
    }

    // Drops no stored manifest records: this run stored no chunk of the source after them.
    for crispy_sink::UnrecordedDrops {
        source_id: id,
        sequences,
        kept,
    } in spool.unrecorded_drops()
    {
        if !kept && !spool.is_in_memory() {
            tracing::error!(
                source = %id,
                sequences = %sequence_ranges(&sequences),
                spool = %spool.dir().display(),
                "dropped chunks that no manifest records, and that the spool could not keep \
                 (see the error above): nothing records this loss, and the source's next run \
                 may number chunks with these sequences"
            );
        } else if spool.is_in_memory() {
            tracing::error!(
                source = %id,
                sequences = %sequence_ranges(&sequences),
                "dropped chunks that no manifest records: the run ended before storing another \
                 chunk of this source, and a spool in memory keeps nothing for the next run"
            );
        } else {
            tracing::warn!(
                source = %id,
                sequences = %sequence_ranges(&sequences),
                spool = %spool.dir().display(),
                "dropped chunks that no manifest records yet are kept in the spool: the \
                 source's next run with this spool records them in its first manifest"
            );
        }
    }

    let wall = started.elapsed();
    // Sources that only had chunks of an earlier run in the spool get no summary of their own.
    let others: u64 = summaries
        .iter()
        .filter(|(id, _)| !order.contains(id))
        .map(|(_, s)| s.recovered)
        .sum();
    if others > 0 {
        tracing::info!(
            chunks = others,
            "stored the chunks of other sources that an earlier run left in the spool"
        );
    }
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        let mut s = summaries
            .remove(&id)
            .unwrap_or_else(|| RunSummary::empty(id));
        s.wall = wall;
        if let Some(h) = latencies.get(&s.source_id).filter(|h| !h.is_empty()) {
            s.latency_p50 = Some(std::time::Duration::from_micros(h.value_at_quantile(0.5)));
            s.latency_p99 = Some(std::time::Duration::from_micros(h.value_at_quantile(0.99)));
        }
        tracing::info!(
            source = %s.source_id,
            chunks = s.chunks,
            already_present = s.already_present,
            dropped = s.dropped,
            recovered = s.recovered,
            frames = s.frames,
            bytes = s.bytes,
            media_ms = s.media_ms,
            wall_ms = wall.as_millis() as u64,
            frames_per_s = s.frames_per_second().round(),
            latency_p50_ms = s.latency_p50.map(tenth_ms),
            latency_p99_ms = s.latency_p99.map(tenth_ms),
            stopped_before_end_ms = s.unfinished_at_ms,
            "run finished"
        );
        out.push(s);
    }
    if let (Some(_), Some(d)) = (&failure, &damaged) {
        // Reported here, since the other failure decides the exit code.
        tracing::error!("{d}");
    }
    if let Some(mut e) = failure.or(damaged) {
        let stored: u64 = out.iter().map(|s| s.chunks).sum();
        if let PipelineError::Source { chunks_stored, .. }
        | PipelineError::Sink { chunks_stored, .. } = &mut e
        {
            *chunks_stored = stored;
        }
        return Err(e);
    }
    Ok(out)
}

/// Starts the thread that reads a file-like source (file, transcode, synthetic) to its end.
fn spawn_to_end<S, P>(
    id: &SourceId,
    name: &str,
    (source, chunker, timeline): (P, CopyChunker, Timeline),
    out: Outbox<S>,
    observer: Arc<dyn Observer>,
    shutdown: Shutdown,
    flush_on_shutdown: bool,
) -> Result<std::thread::JoinHandle<()>, PipelineError>
where
    S: ChunkSink + 'static,
    P: PacketSource<Error = SourceError> + 'static,
{
    let id = id.clone();
    let tx = out.tx.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _named = crispy_source::log_source(id.as_str());
            let unfinished = read_to_end(
                source,
                chunker,
                timeline,
                out,
                observer.as_ref(),
                &shutdown,
                flush_on_shutdown,
            );
            if let Some(read_ms) = unfinished {
                let _ = tx.blocking_send(ReaderMsg::Unfinished(id, read_ms));
            }
        })
        .map_err(|e| PipelineError::Internal(format!("spawning reader thread: {e}")))
}

/// Runs a blocking source constructor for `id` off the async threads.
async fn open_blocking<T: Send + 'static>(
    id: &SourceId,
    open: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, PipelineError> {
    let id = id.clone();
    tokio::task::spawn_blocking(move || {
        let _named = crispy_source::log_source(id.as_str());
        open()
    })
    .await
    .map_err(|e| PipelineError::Internal(format!("open task: {e}")))?
    .map_err(|error| PipelineError::Source {
        error,
        chunks_stored: 0,
        discarded_frames: 0,
    })
}

/// Opens a file and prepares its chunker and timeline (on a blocking thread).
async fn open_file(
    id: &SourceId,
    path: PathBuf,
    chunk: ChunkDuration,
    (align_wall, exact_cuts): (bool, bool),
    observer: &dyn Observer,
) -> Result<(FileSource, CopyChunker, Timeline), PipelineError> {
    let shown = path.display().to_string();
    let mtime = modified(&path);
    let source = open_blocking(id, move || FileSource::open(path)).await?;
    let mut info = source.stream_info().clone();
    apply_probe(id, &mut info);
    let (origin, clock) = clock_origin(source.creation_time(), mtime, source.duration_secs());
    observer.started(&SourceStarted {
        source_id: id.clone(),
        display: shown.clone(),
        info: info.clone(),
        duration_ms: source.duration_secs().map(|s| (s * 1000.0).round() as u64),
    });
    tracing::info!(
        source = %id,
        file = %shown,
        codec = %info.codec,
        resolution = %format_args!("{}x{}", info.width, info.height),
        fps = info.frame_rate.map(|r| r.as_f64()).unwrap_or(0.0),
        chunk = %chunk,
        clock = %clock,
        "source opened"
    );
    let mut config = CopyChunkerConfig::new(id.clone(), chunk);
    config.align_offset_ms = align_wall.then(|| grid_offset_ms(origin, chunk));
    config.exact_cuts = exact_cuts;
    config.display_matrix = source.display_matrix();
    let chunker = CopyChunker::new(&info, config)?;
    Ok((source, chunker, Timeline::new(origin, clock)))
}

/// Opens a file for transcoding (on a blocking thread); chunks are cut at every keyframe,
/// which the encoder places exactly on the boundaries.
async fn open_transcode(
    id: &SourceId,
    path: PathBuf,
    mut config: TranscodeConfig,
    chunk: ChunkDuration,
    align_wall: bool,
    observer: &dyn Observer,
) -> Result<(TranscodeSource, CopyChunker, Timeline), PipelineError> {
    let shown = path.display().to_string();
    // The same origin as a stream copy of the file: a re-run writes the same names.
    let mtime = modified(&path);
    let probe_path = path.clone();
    let (creation_time, duration_s) = open_blocking(id, move || {
        FileSource::open(probe_path)
            .map(|f| (f.creation_time().map(str::to_owned), f.duration_secs()))
    })
    .await?;
    let (origin, clock) = clock_origin(creation_time.as_deref(), mtime, duration_s);
    if align_wall {
        config.grid_offset_ms = Some(grid_offset_ms(origin, chunk));
    }
    let settings = config.to_string();
    let source = open_blocking(id, move || TranscodeSource::open(path, config)).await?;
    let info = source.stream_info().clone();
    observer.started(&SourceStarted {
        source_id: id.clone(),
        display: shown.clone(),
        info: info.clone(),
        duration_ms: None,
    });
    tracing::info!(
        source = %id,
        file = %shown,
        resolution = %format_args!("{}x{}", info.width, info.height),
        chunk = %chunk,
        settings = %settings,
        "transcoding"
    );
    let mut chunker_config = CopyChunkerConfig::new(id.clone(), chunk);
    chunker_config.cut_at_every_keyframe = true;
    chunker_config.align_offset_ms = align_wall.then_some(0);
    chunker_config.display_matrix = source.display_matrix();
    let chunker = CopyChunker::new(&info, chunker_config)?;
    Ok((source, chunker, Timeline::new(origin, clock)))
}

/// Builds a synthetic source (on a blocking thread); its clock is the receive clock.
async fn open_synthetic(
    id: &SourceId,
    mut config: SyntheticConfig,
    chunk: ChunkDuration,
    first_sequence: u64,
    align_wall: bool,
    shutdown: &Shutdown,
    observer: &dyn Observer,
) -> Result<(SyntheticSource, CopyChunker, Timeline), PipelineError> {
    let flag = shutdown.flag();
    if align_wall {
        config.align_ms = Some(chunk.as_millis());
    } else {
        config.chunk_ms = Some(chunk.as_millis());
    }
    let shown = format!("lavfi:{}", config.graph);
    let source = open_blocking(id, move || SyntheticSource::open(&config, flag)).await?;
    let info = source.stream_info().clone();
    observer.started(&SourceStarted {
        source_id: id.clone(),
        display: shown.clone(),
        info: info.clone(),
        duration_ms: None,
    });
    tracing::info!(
        source = %id,
        graph = %shown,
        resolution = %format_args!("{}x{}", info.width, info.height),
        chunk = %chunk,
        "synthetic source started"
    );
    let mut chunker_config = CopyChunkerConfig::new(id.clone(), chunk);
    chunker_config.first_sequence = first_sequence;
    // Keyframes sit exactly on the boundaries (the UTC grid's or every chunk length's): cut
    // at each.
    chunker_config.cut_at_every_keyframe = true;
    if align_wall {
        chunker_config.align_offset_ms = Some(0);
    }
    let chunker = CopyChunker::new(&info, chunker_config)?;
    let epoch = DateTime::<Utc>::from(source.epoch());
    Ok((
        source,
        chunker,
        Timeline::anchored(epoch, 0, ClockSource::Receive),
    ))
}

/// Adds a signed GET URL valid for `ttl` to the chunk's manifest (outside its canonical
/// form, so the signature and chain are unchanged). A sink that cannot sign leaves it out,
/// with a warning.
async fn with_signed_url<S: ChunkSink>(
    sink: &S,
    mut chunk: Chunk,
    manifest: bytes::Bytes,
    ttl: std::time::Duration,
) -> (Chunk, bytes::Bytes) {
    match sink.signed_url(&chunk.metadata.object, ttl).await {
        Ok(Some(url)) => {
            let expires_at = Utc::now()
                + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::days(7));
            let signed = crispy_core::SignedUrl { url, expires_at };
            // Added to the text as sealed (a chunk recovered from the spool may have been
            // sealed by another version, with members this one would write differently).
            let manifest = with_member(&manifest, "signed_url", &signed)
                .map(bytes::Bytes::from)
                .unwrap_or(manifest);
            chunk.metadata.signed_url = Some(signed);
            (chunk, manifest)
        }
        Ok(None) => (chunk, manifest),
        Err(e) => {
            tracing::warn!(object = %chunk.metadata.object, "no signed URL: {e}");
            (chunk, manifest)
        }
    }
}

/// `manifest` (a JSON object) with the member `name` set to `value`, every other member as it
/// is. Outside the canonical form, like `signed_url`, it leaves signature and chain intact.
/// `None` when the text is not a JSON object.
fn with_member(manifest: &[u8], name: &str, value: &impl serde::Serialize) -> Option<Vec<u8>> {
    let mut parsed: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let object = parsed.as_object_mut()?;
    let value = serde_json::to_value(value).ok()?;
    if object.contains_key(name) {
        // Replaced: the members come out in name order, their values unchanged.
        object.insert(name.to_owned(), value);
        return serde_json::to_vec_pretty(&parsed).ok();
    }
    // Appended to the text, so the members keep the order they were written in.
    let text = std::str::from_utf8(manifest).ok()?.trim_end();
    let body = text.strip_suffix('}')?.trim_end();
    let value = serde_json::to_string_pretty(&value)
        .ok()?
        .replace('\n', "\n  ");
    let separator = if object.is_empty() { "" } else { "," };
    let name = serde_json::to_string(name).ok()?;
    Some(format!("{body}{separator}\n  {name}: {value}\n}}").into_bytes())
}

/// Opens the spool: the sink's own directory under `dir`, or one in memory.
fn open_spool(o: &SpoolOptions) -> Result<(Spool, Vec<SpoolEntry>), PipelineError> {
    Ok(match &o.dir {
        Some(dir) => Spool::open(dir, &o.sink_key, o.max_bytes)?,
        None => (
            Spool::in_memory(o.max_bytes.min(MEMORY_SPOOL_MAX)),
            Vec::new(),
        ),
    })
}

/// What of a live source's drops that an earlier run kept (`kept`) still applies to a run
/// continuing from `prev_link`, the link to `resumed`: `Ok` with what its first manifest
/// must record (possibly nothing), `Err` with the record when it is stale.
///
/// The record applies when it was kept after the manifest the run continues from; or while
/// that manifest was being accepted, by a run that stopped before the record could follow it
/// (`accepting`: then what that manifest records, or what comes after it, no longer
/// applies); or when the sink did not say what it holds, so that nothing shows it to be
/// stale. It is stale when the sink holds newer chunks than it knows (stored by another
/// spool's run, whose chunks may carry its numbers).
fn kept_drops_apply(
    mut kept: crispy_sink::PendingDrops,
    prev_link: Option<&str>,
    resumed: Option<&ChunkMetadata>,
    sink_answered: bool,
) -> Result<crispy_sink::PendingDrops, crispy_sink::PendingDrops> {
    if kept.after.as_deref() == prev_link {
        return Ok(kept);
    }
    if kept.accepting.is_some() && kept.accepting.as_deref() == prev_link {
        if let Some(m) = resumed {
            kept.sequences
                .retain(|s| *s < m.sequence && !m.dropped_sequences.contains(s));
        }
        return Ok(kept);
    }
    if sink_answered { Err(kept) } else { Ok(kept) }
}

/// The most an in-memory spool holds, whatever `--spool-max` says.
const MEMORY_SPOOL_MAX: u64 = 512 << 20;

/// Sleeps until `deadline`; forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Uploads one spooled chunk, retrying with capped exponential backoff and jitter for as
/// long as it takes (the chunk is safe in the spool meanwhile); removes it from the spool
/// once the sink confirmed it. A permanent error (a conflicting object) sets the entry
/// aside and ends the run.
#[derive(Debug, Clone, Copy)]
struct UploadSettings {
    retry_min: std::time::Duration,
    retry_max: std::time::Duration,
    signed_url_ttl: Option<std::time::Duration>,
    /// Stop on an error that lasts until someone acts ([`ChunkSink::is_lasting`]): a run of
    /// files only, which can be run again once the sink is fixed.
    stop_on_lasting: bool,
}

async fn upload<S: ChunkSink + 'static>(
    item: Upload,
    sink: Arc<S>,
    spool: Arc<Spool>,
    settings: UploadSettings,
    observer: Arc<dyn Observer>,
) -> Result<ChunkReport, PipelineError> {
    let Upload {
        entry,
        data,
        ready_at,
    } = item;
    let (chunk, manifest) = match data {
        Some(d) => d,
        None => {
            let spool2 = Arc::clone(&spool);
            let entry2 = entry.clone();
            let read = tokio::task::spawn_blocking(move || spool2.read(&entry2))
                .await
                .map_err(|e| PipelineError::Internal(format!("spool read task: {e}")))?;
            // An entry that cannot be read back, or whose bytes are not the ones its manifest
            // describes, is set aside (never uploaded as if it were whole, never retried
            // forever, never silently deleted) and the run reports it.
            let unreadable = |what: String| {
                let aside = spool.set_aside(&entry);
                tracing::error!(kept_in = %aside.display(), "spool: {what}");
                PipelineError::Spool(SpoolError::Damaged {
                    dir: spool.dir().display().to_string(),
                    count: 1,
                    first: what,
                    kept_in: aside.display().to_string(),
                })
            };
            let (payload, manifest) = match read {
                Ok(d) => d,
                Err(e) => return Err(unreadable(e.to_string())),
            };
            let metadata: ChunkMetadata = match serde_json::from_slice(&manifest) {
                Ok(m) => m,
                Err(e) => {
                    return Err(unreadable(format!(
                        "spooled manifest {} is unreadable: {e}",
                        entry.manifest_path.display()
                    )));
                }
            };
            // Read back from disk: the bytes must still be the ones hashed and signed.
            let hashed = if spool.is_in_memory() {
                (metadata.bytes, metadata.sha256.clone())
            } else {
                let payload = payload.clone();
                tokio::task::spawn_blocking(move || {
                    (
                        payload.len() as u64,
                        crispy_signer::payload_sha256_hex(&payload),
                    )
                })
                .await
                .map_err(|e| PipelineError::Internal(format!("spool hash task: {e}")))?
            };
            if hashed != (metadata.bytes, metadata.sha256.clone()) {
                return Err(unreadable(format!(
                    "spooled chunk {} is damaged: {} bytes with SHA-256 {}, its manifest says \
                     {} bytes with SHA-256 {}",
                    entry.chunk_path.display(),
                    hashed.0,
                    hashed.1,
                    metadata.bytes,
                    metadata.sha256
                )));
            }
            (Chunk { payload, metadata }, manifest)
        }
    };
    let (chunk, manifest) = match settings.signed_url_ttl {
        Some(ttl) => with_signed_url(sink.as_ref(), chunk, manifest, ttl).await,
        None => (chunk, manifest),
    };
    let t0 = Instant::now();
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    let mut attempt = 0u32;
    let outcome = loop {
        attempt += 1;
        match sink.put(&chunk, manifest.clone()).await {
            Ok(outcome) => break outcome,
            Err(e) if sink.is_permanent(&e) => {
                let aside = spool.set_aside(&entry);
                tracing::error!(
                    object = %chunk.metadata.object,
                    kept_in = %aside.display(),
                    "{}",
                    crispy_core::redact::redact_urls(&e.to_string())
                );
                return Err(PipelineError::Sink {
                    error: Box::new(e),
                    chunks_stored: 0,
                });
            }
            Err(e) if settings.stop_on_lasting && sink.is_lasting(&e) => {
                // Files can be run again once the sink is fixed: the chunk stays in a disk
                // spool for that run, and goes with a spool in memory (the file still holds it).
                if spool.is_in_memory() {
                    spool.remove(&entry);
                }
                return Err(PipelineError::Sink {
                    error: Box::new(e),
                    chunks_stored: 0,
                });
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let kept = if spool.is_in_memory() {
                    "the chunk is kept in memory meanwhile, lost if the process ends"
                } else {
                    "the chunk is safe in the spool"
                };
                tracing::warn!(
                    source = %chunk.metadata.source_id,
                    sequence = chunk.metadata.sequence,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "upload failed, will retry ({kept}): {}",
                    // Stores' errors quote the URLs they used; an endpoint may hold credentials.
                    crispy_core::redact::redact_urls(&e.to_string())
                );
                tokio::time::sleep(delay).await;
            }
        }
    };
    let upload = t0.elapsed();
    let latency = ready_at.map(|t| t.elapsed());
    spool.remove(&entry);
    let m = &chunk.metadata;
    tracing::info!(
        source = %m.source_id,
        sequence = m.sequence,
        object = %m.object,
        resolution = %format_args!("{}x{}", m.width, m.height),
        duration_ms = m.duration_ms,
        frames = m.frame_count,
        bytes = m.bytes,
        upload_ms = tenth_ms(upload),
        attempts = attempt,
        latency_ms = latency.map(tenth_ms),
        discontinuity = m.discontinuity,
        already_present = outcome == PutOutcome::AlreadyPresent,
        signed_url = m.signed_url.as_ref().map(|u| u.url.as_str()),
        "chunk stored"
    );
    let report = ChunkReport {
        metadata: chunk.metadata,
        upload,
        outcome,
        latency,
    };
    observer.chunk_stored(&report);
    Ok(report)
}

/// Chunk latencies of one source, in microseconds (1 µs to 1 hour, 3 significant digits).
type Latencies = hdrhistogram::Histogram<u64>;

fn account(
    done: Result<Result<ChunkReport, PipelineError>, tokio::task::JoinError>,
    summaries: &mut HashMap<SourceId, RunSummary>,
    latencies: &mut HashMap<SourceId, Latencies>,
) -> Result<(), PipelineError> {
    let report = done.map_err(|e| PipelineError::Internal(format!("upload task: {e}")))??;
    let m = &report.metadata;
    if let Some(l) = report.latency {
        if !latencies.contains_key(&m.source_id)
            && let Ok(h) = Latencies::new_with_bounds(1, 3_600_000_000, 3)
        {
            latencies.insert(m.source_id.clone(), h);
        }
        if let Some(h) = latencies.get_mut(&m.source_id) {
            h.saturating_record(u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        }
    }
    let summary = summaries
        .entry(m.source_id.clone())
        .or_insert_with(|| RunSummary::empty(m.source_id.clone()));
    if report.latency.is_none() {
        // Recovered from the spool: an earlier run's chunk, not this run's work.
        summary.recovered += 1;
        return Ok(());
    }
    summary.chunks += 1;
    summary.frames += m.frame_count;
    summary.bytes += m.bytes;
    summary.media_ms += m.duration_ms;
    if report.outcome == PutOutcome::AlreadyPresent {
        summary.already_present += 1;
    }
    Ok(())
}

/// Wall-clock origin of a file: its `creation_time` tag, else now.
/// Forgets queued uploads whose chunks a full spool dropped meanwhile (they would be skipped
/// at their turn anyway), once they are at least half the queue: during a long outage a live
/// source drops a chunk for every one it adds, and the queue would otherwise grow without
/// bound. Amortized O(1) per chunk. Returns the payload bytes the forgotten items held.
fn forget_dropped(backlog: &mut VecDeque<Upload>, spool: &Spool) -> u64 {
    if backlog.len() <= 2 * spool.len() + 16 {
        return 0;
    }
    let mut freed = 0;
    backlog.retain(|item| {
        let keep = spool.is_pending(&item.entry);
        if !keep && item.data.is_some() {
            freed += item.entry.bytes;
        }
        keep
    });
    freed
}

/// The wall-clock origin of a file's chunks: its `creation_time` tag; else its modification
/// time minus its duration, so that a re-run gives the same times and object names; else the
/// run's start.
fn clock_origin(
    creation_time: Option<&str>,
    modified: Option<std::time::SystemTime>,
    duration_s: Option<f64>,
) -> (DateTime<Utc>, ClockSource) {
    if let Some(t) = creation_time.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        return (t.with_timezone(&Utc), ClockSource::File);
    }
    let from_mtime = modified.zip(duration_s).and_then(|(m, d)| {
        let end = DateTime::<Utc>::from(m);
        // Whole milliseconds, like every time in a manifest.
        let ms = chrono::Duration::milliseconds((d * 1000.0).round() as i64);
        let start = end.checked_sub_signed(ms)?;
        DateTime::from_timestamp_millis(start.timestamp_millis())
    });
    match from_mtime {
        Some(t) => (t, ClockSource::FileMtime),
        None => (Utc::now(), ClockSource::RunStart),
    }
}

/// The modification time of `path`, if the file system keeps one.
fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Milliseconds rounded to a tenth, as a number (JSON logs keep it numeric).
fn tenth_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A signed URL added to a manifest sealed by another version keeps that version's
    /// members as they are: the canonical form (what signature and chain cover) is unchanged.
    #[test]
    fn a_signed_url_is_added_to_the_manifest_as_sealed() {
        let mut stored: serde_json::Value =
            serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("manifest");
        let object = stored.as_object_mut().expect("object");
        object.remove("run_end"); // written by a version that had no such member
        object.insert("from_a_later_version".into(), serde_json::Value::from(7));
        let stored = serde_json::to_vec_pretty(&stored).expect("json");
        let url = crispy_core::SignedUrl {
            url: "https://example.test/x.mp4?sig=1".to_owned(),
            expires_at: Utc::now(),
        };
        let out = with_member(&stored, "signed_url", &url).expect("added");
        assert_eq!(
            crispy_signer::canonical_bytes_of_json(&out),
            crispy_signer::canonical_bytes_of_json(&stored)
        );
        let back: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(back["signed_url"]["url"], url.url.as_str());
        assert_eq!(back["from_a_later_version"], 7);
        assert!(back.get("run_end").is_none());
        // The members keep their order: the text only grew at its end.
        let text = String::from_utf8(out).expect("utf8");
        let head = String::from_utf8(stored).expect("utf8");
        let head = head.trim_end().trim_end_matches('}').trim_end();
        assert!(text.starts_with(head), "{text}");
        // Set again (a newer URL), it is replaced, not repeated.
        let again = with_member(text.as_bytes(), "signed_url", &url).expect("replaced");
        assert_eq!(
            String::from_utf8(again)
                .expect("utf8")
                .matches("signed_url")
                .count(),
            1
        );
        assert!(with_member(b"[1]", "signed_url", &url).is_none());
    }

    #[test]
    fn the_queue_forgets_dropped_chunks_once_they_are_half_of_it() {
        let spool = Spool::in_memory(10 * 7);
        let meta = |seq: u64| {
            let mut m: ChunkMetadata =
                serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("manifest");
            m.object = "x.mp4".to_owned();
            m.sha256 = format!("{seq:064x}");
            m.sequence = seq;
            m
        };
        let mut backlog = VecDeque::new();
        let mut dropped = 0;
        for seq in 0..100 {
            let accepted = spool
                .accept(
                    &meta(seq),
                    &crispy_core::Payload::from(&b"chunk"[..]),
                    &bytes::Bytes::from_static(b"{}"),
                    true,
                    &|| false,
                )
                .expect("accept");
            dropped += accepted.dropped.len();
            let entry = accepted.entry.expect("held");
            backlog.push_back(Upload {
                entry,
                data: None,
                ready_at: None,
            });
            assert_eq!(forget_dropped(&mut backlog, &spool), 0);
            assert!(backlog.len() <= 2 * spool.len() + 16, "{}", backlog.len());
        }
        assert_eq!(dropped, 90, "a full spool of 10 dropped the rest");
        // What is left in the queue is what is left in the spool, in order, plus at most
        // as many stale items again.
        let pending: Vec<u64> = backlog
            .iter()
            .filter(|u| spool.is_pending(&u.entry))
            .map(|u| u.entry.sequence)
            .collect();
        assert_eq!(pending, (90..100).collect::<Vec<_>>());
    }

    #[test]
    fn clock_origin_prefers_the_creation_tag() {
        let mtime = std::time::UNIX_EPOCH + Duration::from_millis(1_714_558_830_250);
        let (t, c) = clock_origin(Some("2024-05-01T10:20:30.000000Z"), Some(mtime), Some(5.0));
        assert_eq!(c, ClockSource::File);
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:20:30+00:00");
        // Without the tag: the modification time minus the duration, in whole ms.
        let (t, c) = clock_origin(Some("garbage"), Some(mtime), Some(2.0004));
        assert_eq!(c, ClockSource::FileMtime);
        assert_eq!(t.timestamp_millis(), 1_714_558_830_250 - 2000);
        assert_eq!(
            clock_origin(None, Some(mtime), None).1,
            ClockSource::RunStart
        );
        assert_eq!(clock_origin(None, None, Some(2.0)).1, ClockSource::RunStart);
    }

    #[test]
    fn drain_timeout_is_reported() {
        let e = PipelineError::DrainTimeout {
            timeout: Duration::from_secs(3),
            pending: 2,
            spool: "/var/spool/x".into(),
            in_memory: false,
        };
        assert!(e.to_string().contains("3s"), "{e}");
        assert!(
            e.to_string()
                .contains("2 chunk(s) stay in the spool /var/spool/x"),
            "{e}"
        );
        // A local sink's spool is in memory: nothing waits for the next start.
        let e = PipelineError::DrainTimeout {
            timeout: Duration::from_secs(3),
            pending: 2,
            spool: "(memory)".into(),
            in_memory: true,
        };
        assert!(e.to_string().contains("are lost"), "{e}");
        assert!(!e.to_string().contains("next start"), "{e}");
    }

    use crispy_sink::PendingDrops;

    fn resumed(sequence: u64, prev: &str, dropped: &[u64]) -> ChunkMetadata {
        let mut m: ChunkMetadata =
            serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("manifest");
        m.sequence = sequence;
        m.prev_sha256 = Some(prev.to_owned());
        m.dropped_sequences = dropped.to_vec();
        m
    }

    fn kept(after: Option<&str>, sequences: &[u64]) -> PendingDrops {
        PendingDrops {
            after: after.map(str::to_owned),
            accepting: None,
            sequences: sequences.to_vec(),
        }
    }

    fn kept_accepting(after: &str, accepting: &str, sequences: &[u64]) -> PendingDrops {
        PendingDrops {
            accepting: Some(accepting.to_owned()),
            ..kept(Some(after), sequences)
        }
    }

    #[test]
    fn a_record_applies_after_the_manifest_the_run_continues_from() {
        let m = resumed(9, "l8", &[]);
        assert_eq!(
            kept_drops_apply(kept(Some("l9"), &[10, 11]), Some("l9"), Some(&m), true),
            Ok(kept(Some("l9"), &[10, 11]))
        );
        // A new chain (nothing stored) and a record made before any manifest.
        assert_eq!(
            kept_drops_apply(kept(None, &[0, 1]), None, None, true),
            Ok(kept(None, &[0, 1]))
        );
    }

    /// A full spool's accept of 10 kept the drop of 4 (after 8; 9 was dropped itself, so 10
    /// links to 9), made 10 durable, and the process ended before the record could follow
    /// 10: 4 still applies, what 10 records (2, 3, 9) does not.
    #[test]
    fn a_record_kept_while_the_resumed_manifest_was_accepted_applies_minus_what_it_records() {
        let m = resumed(10, "l9", &[2, 3, 9]);
        assert_eq!(
            kept_drops_apply(
                kept_accepting("l8", "l10", &[2, 3, 4, 9]),
                Some("l10"),
                Some(&m),
                true
            ),
            Ok(kept_accepting("l8", "l10", &[4]))
        );
        assert_eq!(
            kept_drops_apply(
                kept_accepting("l8", "l10", &[2, 3, 9]),
                Some("l10"),
                Some(&m),
                true
            ),
            Ok(kept_accepting("l8", "l10", &[]))
        );
        // Numbers at or after the resumed manifest's are its own or later chunks'.
        assert_eq!(
            kept_drops_apply(
                kept_accepting("l8", "l10", &[4, 10, 11]),
                Some("l10"),
                Some(&m),
                false
            ),
            Ok(kept_accepting("l8", "l10", &[4]))
        );
        // Accepted by another run: nothing says that one is this spool's.
        assert_eq!(
            kept_drops_apply(kept(Some("l8"), &[4]), Some("l10"), Some(&m), true),
            Err(kept(Some("l8"), &[4]))
        );
        // Before the accept (the run continues from 8), the record applies whole.
        let m8 = resumed(8, "l7", &[]);
        assert_eq!(
            kept_drops_apply(
                kept_accepting("l8", "l10", &[2, 3, 4, 9]),
                Some("l8"),
                Some(&m8),
                true
            ),
            Ok(kept_accepting("l8", "l10", &[2, 3, 4, 9]))
        );
    }

    #[test]
    fn a_record_older_than_the_sinks_newest_chunk_is_stale_unless_the_sink_was_silent() {
        let m = resumed(20, "l19", &[]);
        assert_eq!(
            kept_drops_apply(kept(Some("l8"), &[4]), Some("l20"), Some(&m), true),
            Err(kept(Some("l8"), &[4]))
        );
        assert_eq!(
            kept_drops_apply(kept(Some("l8"), &[4]), Some("l20"), Some(&m), false),
            Ok(kept(Some("l8"), &[4]))
        );
        assert_eq!(
            kept_drops_apply(kept(Some("l8"), &[4]), None, None, true),
            Err(kept(Some("l8"), &[4]))
        );
    }
}
