//! Source threads: read, chunk, complete each chunk's metadata, hand it to the upload stage.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crispy_chunker::{ChunkerError, CopyChunker, CopyChunkerConfig};
use crispy_core::{
    Chunk, ChunkDuration, ChunkMetadata, ChunkSink, Chunker, ClockSource, Codec, MetadataSigner,
    PacketSource, ResolutionProbe, RunEnd, SourceId, StreamInfo,
};
use crispy_probe::SpsProbe;
use crispy_signer::Sealer;
use crispy_sink::{Accepted, Spool, SpoolEntry, SpoolError};
use crispy_source::{
    CameraSource, LiveTranscoder, RtspConfig, RtspSource, SourceError, TranscodeConfig,
};
use tokio::sync::mpsc;

use crate::{Backoff, CameraFault, Observer, PipelineOptions, Shutdown, SourceStarted};

/// Packets between two progress events.
const PROGRESS_EVERY: u64 = 64;

/// What a source thread sends to the upload stage.
pub(crate) enum ReaderMsg {
    /// A chunk accepted into the spool.
    Accepted(Box<Upload>),
    /// Chunks dropped from a full spool (or not accepted: a full disk), per source.
    Dropped(Vec<(SourceId, u64)>),
    Failed(ReaderFailure),
    /// A live camera stored no chunk in the whole run; why its last attempt failed.
    GaveNothing(SourceId, CameraFault),
    /// A file whose end a shutdown kept from being stored: its reader stopped before the
    /// end, or its sealing thread found the spool closed to a chunk. With the media time (ms)
    /// reached; of several such messages, the earliest counts.
    Unfinished(SourceId, u64),
}

/// A spooled chunk to upload; its bytes ride along when the reader still has them, else
/// they are read back from the spool.
pub(crate) struct Upload {
    pub(crate) entry: SpoolEntry,
    pub(crate) data: Option<(Chunk, bytes::Bytes)>,
    /// When the chunker handed the chunk over (just after its last packet was read), for
    /// the latency metric; `None` for chunks recovered from an earlier run.
    pub(crate) ready_at: Option<std::time::Instant>,
}

/// A source that ended with an error (files only: live sources retry).
pub(crate) enum ReaderFailure {
    Source {
        error: SourceError,
        discarded_frames: u64,
    },
    Chunker(ChunkerError),
    Signer(crispy_signer::SignerError),
    Spool(SpoolError),
}

/// Maps media time to wall-clock time for one connection of a source.
pub(crate) struct Timeline {
    origin: DateTime<Utc>,
    base_pts: Option<i64>,
    clock: ClockSource,
    /// End of the last chunk stamped.
    last_end: Option<DateTime<Utc>>,
}

impl Timeline {
    pub(crate) fn new(origin: DateTime<Utc>, clock: ClockSource) -> Self {
        Self {
            origin,
            base_pts: None,
            clock,
            last_end: None,
        }
    }

    /// A timeline on which `pts` happened at `origin`.
    pub(crate) fn anchored(origin: DateTime<Utc>, pts: i64, clock: ClockSource) -> Self {
        Self {
            origin,
            base_pts: Some(pts),
            clock,
            last_end: None,
        }
    }

    fn stamp(&mut self, m: &mut ChunkMetadata) {
        if m.timestamps_restarted {
            // The chunker saw the source's timestamps restart: the media clock no longer maps
            // to the old origin, so continue from the previous chunk's end.
            self.rebase(m);
        }
        self.place(m);
        // A live source's timestamps that jump forward past the present are a new timestamp
        // base (an encoder restarted), not frames missing: continue from the previous end.
        // The chunker of a camera says so itself (`timestamps_restarted`, from the packets'
        // arrival); this catches a chunk whose end the timeline still places in the future.
        let live = matches!(self.clock, ClockSource::Rtcp | ClockSource::Receive);
        if live
            && m.discontinuity
            && self.last_end.is_some()
            && m.end_time > Utc::now() + chrono::Duration::seconds(2)
        {
            // (The jump is not time missing.)
            m.gap_ms = None;
            self.rebase(m);
            self.place(m);
        }
        self.last_end = Some(m.end_time);
    }

    /// Maps `m`'s media time on from the previous chunk's end: nothing missing before it
    /// (a gap of 0, or what is missing inside it, which its times span).
    fn rebase(&mut self, m: &mut ChunkMetadata) {
        if let Some(end) = self.last_end {
            self.origin = end;
            self.base_pts = Some(m.start_pts);
            m.gap_ms.get_or_insert(0);
        }
    }

    /// Sets `m`'s start and end times from its media time.
    fn place(&mut self, m: &mut ChunkMetadata) {
        let base = *self.base_pts.get_or_insert(m.start_pts);
        let offset_ms = m.time_base.ticks_to_millis(m.start_pts - base);
        m.start_time = self.origin + chrono::Duration::milliseconds(offset_ms);
        // Both ends from the media clock, rounded the same way: one chunk's end is exactly the
        // next one's start.
        let end_ms = m
            .time_base
            .ticks_to_millis(m.start_pts + m.duration_ts - base);
        m.end_time = self.origin + chrono::Duration::milliseconds(end_ms);
        m.clock = self.clock;
    }
}

/// The sending side of one source: completes metadata, seals (hash, chain, signature) in
/// order, and sends.
pub(crate) struct Outbox<S> {
    pub(crate) tx: mpsc::Sender<ReaderMsg>,
    pub(crate) sink: Arc<S>,
    /// The source's own prefix inside the sink.
    pub(crate) prefix: Option<String>,
    /// How the source's chain starts, applied to the first chunk sent.
    pub(crate) start: std::cell::Cell<Option<ChainStart>>,
    /// The source's sealing thread: hashing, signing and spooling happen there, in order,
    /// while this thread reads on.
    seal_tx: Option<std::sync::mpsc::SyncSender<(Chunk, std::time::Instant)>>,
    sealing: Option<std::thread::JoinHandle<()>>,
}

/// How a source's first chunk of the run relates to what it stored before.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChainStart {
    /// A restarted source: the end time of its last stored chunk. The first chunk sent is
    /// flagged as a discontinuity with the gap since then.
    pub(crate) restarted_after: Option<DateTime<Utc>>,
    /// A live source whose last stored manifest could not be learned: the first chunk
    /// starts a new chain and says so (`prev_unknown`).
    pub(crate) prev_unknown: bool,
}

/// What the sealing thread of a source owns.
pub(crate) struct Sealing {
    pub(crate) tx: mpsc::Sender<ReaderMsg>,
    pub(crate) sealer: Sealer,
    /// Where chunks are accepted.
    pub(crate) spool: Arc<Spool>,
    /// Live sources drop their oldest spooled chunks when the spool is full (the spool
    /// records the drops until a manifest does); files wait.
    pub(crate) live: bool,
    pub(crate) shutdown: Shutdown,
}

impl<S: ChunkSink> Outbox<S> {
    /// An outbox whose chunks `sealing` seals on its own thread, named after `name`.
    pub(crate) fn new(
        sink: Arc<S>,
        prefix: Option<String>,
        start: ChainStart,
        sealing: Sealing,
        name: &str,
    ) -> Result<Self, std::io::Error> {
        let tx = sealing.tx.clone();
        // Two chunks in hand-over: the reader runs at most two chunks ahead of hashing.
        let (seal_tx, seal_rx) = std::sync::mpsc::sync_channel(2);
        let handle = std::thread::Builder::new()
            .name(format!("seal-{name}"))
            .spawn(move || sealing.run(seal_rx))?;
        Ok(Self {
            tx,
            sink,
            prefix,
            start: std::cell::Cell::new(Some(start)),
            seal_tx: Some(seal_tx),
            sealing: Some(handle),
        })
    }

    /// Completes `chunk`'s times and object path and sends it; false when the upload stage
    /// is gone.
    fn send(&self, chunk: Chunk, timeline: &mut Timeline) -> bool {
        self.send_with(chunk, timeline, |_| {}).is_some()
    }

    /// Like [`Self::send`], with `adjust` applied after the times are set. Returns the chunk's
    /// end time, `None` when the upload stage is gone.
    fn send_with(
        &self,
        chunk: Chunk,
        timeline: &mut Timeline,
        adjust: impl FnOnce(&mut ChunkMetadata),
    ) -> Option<DateTime<Utc>> {
        self.send_ready(chunk, std::time::Instant::now(), timeline, adjust)
    }

    /// Like [`Self::send_with`], for a chunk the chunker handed over at `ready_at`.
    fn send_ready(
        &self,
        mut chunk: Chunk,
        ready_at: std::time::Instant,
        timeline: &mut Timeline,
        adjust: impl FnOnce(&mut ChunkMetadata),
    ) -> Option<DateTime<Utc>> {
        timeline.stamp(&mut chunk.metadata);
        adjust(&mut chunk.metadata);
        if let Some(start) = self.start.take() {
            let m = &mut chunk.metadata;
            if let Some(prev_end) = start.restarted_after {
                m.discontinuity = true;
                m.gap_ms = Some((m.start_time - prev_end).num_milliseconds().max(0) as u64);
            }
            m.prev_unknown = start.prev_unknown;
        }
        chunk.metadata.object = match &self.prefix {
            Some(prefix) => self.sink.object_path_in(prefix, &chunk.metadata),
            None => self.sink.object_path(&chunk.metadata),
        };
        let end = chunk.metadata.end_time;
        self.seal_tx
            .as_ref()?
            .send((chunk, ready_at))
            .ok()
            .map(|()| end)
    }

    fn fail(&self, failure: ReaderFailure) {
        let _ = self.tx.blocking_send(ReaderMsg::Failed(failure));
    }
}

impl<S> Drop for Outbox<S> {
    fn drop(&mut self) {
        // Closing the hand-over lets the sealing thread finish what it holds, then end.
        self.seal_tx.take();
        if let Some(h) = self.sealing.take() {
            let _ = h.join();
        }
    }
}

impl Sealing {
    /// Seals (content hash, chain link, signature) and spools each chunk, in order, until
    /// the reader closes the hand-over or the upload stage is gone.
    fn run(mut self, chunks: std::sync::mpsc::Receiver<(Chunk, std::time::Instant)>) {
        while let Ok((chunk, ready_at)) = chunks.recv() {
            if !self.seal_one(chunk, ready_at) {
                return;
            }
        }
    }

    fn seal_one(&mut self, mut chunk: Chunk, ready_at: std::time::Instant) -> bool {
        // The source's drops that no accepted manifest records yet: until one does, the
        // spool keeps them (on disk, for the next run, where it can).
        chunk.metadata.dropped_sequences = self.spool.drops_to_record(&chunk.metadata.source_id);
        let manifest = match self.sealer.seal(&mut chunk) {
            Ok(m) => m,
            Err(e) => {
                self.fail(ReaderFailure::Signer(e));
                return false;
            }
        };
        let Some(accepted) = self.accept(&chunk, &manifest) else {
            return false;
        };
        // The chunk itself, when dropped, is the last of `dropped`: refused (a full disk, too
        // large), or with every other chunk of the source being uploaded. The ones before
        // it made room.
        let m = &chunk.metadata;
        let own = accepted
            .dropped
            .last()
            .is_some_and(|(id, seq)| *id == m.source_id && *seq == m.sequence);
        let made_room = match own {
            true => &accepted.dropped[..accepted.dropped.len() - 1],
            false => &accepted.dropped[..],
        };
        if !made_room.is_empty() {
            tracing::error!(
                dropped = made_room.len(),
                chunks = %made_room.iter().map(|(id, seq)| format!("{id}#{seq}"))
                    .collect::<Vec<_>>().join(","),
                spool = %self.spool.dir().display(),
                "SPOOL FULL: dropped the oldest chunks not yet uploaded; the gap is recorded in \
                 the next manifest of each source (raise --spool-max or fix the sink)"
            );
        }
        match (&accepted.refused, own) {
            (Some(e), _) => tracing::error!(
                source = %m.source_id,
                sequence = m.sequence,
                "{e}; chunk dropped, the gap is recorded in the next manifest"
            ),
            (None, true) => tracing::error!(
                source = %m.source_id,
                sequence = m.sequence,
                spool = %self.spool.dir().display(),
                "SPOOL FULL: every other spooled chunk of this source is being uploaded; this \
                 chunk is dropped, the gap is recorded in the next manifest (raise --spool-max \
                 or fix the sink)"
            ),
            (None, false) => {}
        }
        if !accepted.dropped.is_empty()
            && self
                .tx
                .blocking_send(ReaderMsg::Dropped(accepted.dropped))
                .is_err()
        {
            return false;
        }
        match accepted.entry {
            Some(entry) => self
                .tx
                .blocking_send(ReaderMsg::Accepted(Box::new(Upload {
                    entry,
                    data: Some((chunk, manifest)),
                    ready_at: Some(ready_at),
                })))
                .is_ok(),
            None => true,
        }
    }

    fn fail(&self, failure: ReaderFailure) {
        let _ = self.tx.blocking_send(ReaderMsg::Failed(failure));
    }

    /// Puts a sealed chunk into the spool. A file source waits out a full disk; a live
    /// source's chunk that cannot be spooled is dropped by the spool (`refused`, recorded in
    /// its next manifest) and the source goes on reading.
    fn accept(&self, chunk: &Chunk, manifest: &bytes::Bytes) -> Option<Accepted> {
        let m = &chunk.metadata;
        let cancelled = || self.shutdown.is_triggered();
        let mut waiting_logged = false;
        loop {
            match self
                .spool
                .accept(m, &chunk.payload, manifest, self.live, &cancelled)
            {
                Ok(a) => {
                    if waiting_logged {
                        tracing::info!(source = %m.source_id, "spool has room again; ingest resumes");
                    }
                    return Some(a);
                }
                Err(SpoolError::Closed { .. }) => {
                    // A file's chunk not taken at shutdown (files are read again, not
                    // spooled past it): the run did not store the file's end.
                    if !self.live {
                        let read_ms = m.time_base.ticks_to_millis(m.start_pts).max(0) as u64;
                        let _ = self
                            .tx
                            .blocking_send(ReaderMsg::Unfinished(m.source_id.clone(), read_ms));
                    }
                    return None;
                }
                Err(e @ SpoolError::DiskFull { .. }) if !self.live => {
                    if !waiting_logged {
                        tracing::error!(source = %m.source_id, "{e}; waiting for free space");
                        waiting_logged = true;
                    }
                    // `sleep` is true when shutdown came: the chunk cannot wait any longer.
                    if self.shutdown.sleep(std::time::Duration::from_secs(1)) {
                        self.fail(ReaderFailure::Spool(e));
                        return None;
                    }
                }
                Err(e) => {
                    self.fail(ReaderFailure::Spool(e));
                    return None;
                }
            }
        }
    }
}

/// Uses the parameter sets' resolution, warning when FFmpeg's stream info disagrees.
pub(crate) fn apply_probe(source_id: &SourceId, info: &mut StreamInfo) {
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

/// Reads a source to its end (or until shutdown), sending every chunk: files and synthetic
/// streams. Returns how far a file was read (ms of media time) when a shutdown stopped it
/// before its end; `None` when it was read to its end, failed, or is a paced source
/// (`flush_on_shutdown`), for which stopping is its normal end.
pub(crate) fn read_to_end<S: ChunkSink, P: PacketSource<Error = SourceError>>(
    mut source: P,
    mut chunker: CopyChunker,
    mut timeline: Timeline,
    out: Outbox<S>,
    observer: &dyn Observer,
    shutdown: &Shutdown,
    flush_on_shutdown: bool,
) -> Option<u64> {
    let tb = source.stream_info().time_base;
    let mut first_dts = None;
    let mut read_ms = 0u64;
    // Annex B streams (MPEG-TS) carry their parameter sets in-band: a new SPS at a keyframe
    // (two recordings of other sizes joined) starts a chunk described by it, as for cameras.
    let mut info = source.stream_info().clone();
    let mut current_sps = parameter_set(&info.codec, &info.extradata).map(<[u8]>::to_vec);
    let mut packets = 0u64;
    // Whether a shutdown, not the end of the source, ended the reading.
    let mut stopped = false;
    // A file's chunk is sent once the next one is complete: whichever is last can then say
    // it ends the run, even when the chunker has nothing left at the end (frames after a
    // timestamp reset that never reach a keyframe). Paced sources send at once.
    let hold = !flush_on_shutdown;
    let mut held: Option<(Chunk, std::time::Instant)> = None;
    let send_held = |held: &mut Option<(Chunk, std::time::Instant)>,
                     timeline: &mut Timeline,
                     end: Option<RunEnd>| {
        match held.take() {
            Some((chunk, ready_at)) => out
                .send_ready(chunk, ready_at, timeline, |m| m.run_end = end)
                .is_some(),
            None => true,
        }
    };
    loop {
        if shutdown.is_triggered() {
            tracing::info!(
                "stopping ({}): closing the chunk in progress",
                shutdown.reason()
            );
            stopped = true;
            break;
        }
        let packet = match source.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SourceError::Shutdown) => {
                tracing::info!(
                    "stopping ({}): closing the chunk in progress",
                    shutdown.reason()
                );
                stopped = true;
                break;
            }
            Err(error) => {
                // The complete chunks before the damage are stored first.
                if !send_held(&mut held, &mut timeline, None) {
                    return None;
                }
                let discarded_frames = chunker.pending_frames() as u64;
                out.fail(ReaderFailure::Source {
                    error,
                    discarded_frames,
                });
                return None;
            }
        };
        let first = *first_dts.get_or_insert(packet.dts);
        packets += 1;
        read_ms = tb.ticks_to_millis(packet.dts - first).max(0) as u64;
        if packets.is_multiple_of(PROGRESS_EVERY) {
            observer.progress(read_ms);
        }
        let changed = if packet.keyframe && chunker.takes_annex_b() {
            new_parameters(&chunker, &info, &mut current_sps, &packet)
        } else {
            None
        };
        let pushed = match changed {
            // The chunker closes the chunk in progress at this keyframe, as at any cut.
            Some(new_info) => chunker.change_stream(&new_info).and_then(|()| {
                info = new_info;
                chunker.push(packet)
            }),
            None => chunker.push(packet),
        };
        match pushed {
            Ok(None) => {}
            Ok(Some(chunk)) if hold => {
                if !send_held(&mut held, &mut timeline, None) {
                    return None;
                }
                held = Some((chunk, std::time::Instant::now()));
            }
            Ok(Some(chunk)) => {
                if !out.send(chunk, &mut timeline) {
                    return None;
                }
            }
            Err(e) => {
                if send_held(&mut held, &mut timeline, None) {
                    out.fail(ReaderFailure::Chunker(e));
                }
                return None;
            }
        }
    }
    let end = if stopped {
        RunEnd::Stopped
    } else {
        RunEnd::EndOfInput
    };
    if stopped && !flush_on_shutdown {
        // A file can be read again: a partial last chunk would collide with the complete
        // one of the next run (same name, other content). Its last stored chunk then does
        // not mark the run's end, and `crispy verify` reports the file as unfinished.
        tracing::info!(
            partial_frames = chunker.pending_frames(),
            "stopping ({}): partial chunk of a file not stored",
            shutdown.reason()
        );
        send_held(&mut held, &mut timeline, None);
        return Some(read_ms);
    }
    match chunker.finish() {
        Ok(Some(chunk)) => {
            if !send_held(&mut held, &mut timeline, None)
                || out
                    .send_with(chunk, &mut timeline, |m| m.run_end = Some(end))
                    .is_none()
            {
                return None;
            }
        }
        // Nothing left in the chunker: the chunk held is the last.
        Ok(None) => {
            if !send_held(&mut held, &mut timeline, Some(end)) {
                return None;
            }
        }
        Err(e) => {
            if send_held(&mut held, &mut timeline, None) {
                out.fail(ReaderFailure::Chunker(e));
            }
            return None;
        }
    }
    if let Some(error) = source.damage_at_end() {
        out.fail(ReaderFailure::Source {
            error,
            discarded_frames: 0,
        });
    }
    None
}

/// A live camera to run.
pub(crate) struct LiveCamera {
    pub(crate) source_id: SourceId,
    pub(crate) config: RtspConfig,
    /// Transcoder settings; `None` for stream copy.
    pub(crate) transcode: Option<TranscodeConfig>,
    pub(crate) chunk: ChunkDuration,
    /// Sequence number of the first chunk (continuing a restarted source).
    pub(crate) first_sequence: u64,
}

/// Runs a live camera until shutdown: connect, read, and on end of stream, error or stall,
/// send the partial chunk and reconnect with backoff.
pub(crate) fn read_live<S: ChunkSink>(
    camera: LiveCamera,
    out: Outbox<S>,
    observer: &dyn Observer,
    shutdown: &Shutdown,
    options: &PipelineOptions,
) {
    let LiveCamera {
        source_id,
        config,
        transcode,
        chunk,
        first_sequence,
    } = camera;
    let _named = crispy_source::log_source(source_id.as_str());
    let url = config.display_url();
    let mut backoff = Backoff::new(options.reconnect_min, options.reconnect_max);
    let mut next_sequence = first_sequence;
    // End of the last chunk sent, to measure the gap after a reconnect.
    let mut last_end: Option<DateTime<Utc>> = None;
    let mut failures = 0u64;
    // The last reason no chunk came: an operator stopping a camera that never delivered one
    // in this run is told why once more, and the run's exit code says so.
    let mut last_problem: Option<CameraFault> = None;
    while !shutdown.is_triggered() {
        let connect_started = std::time::Instant::now();
        let opened = RtspSource::open(&config, shutdown.flag()).map(|camera| match &transcode {
            None => Ok(Connection::Copy(Box::new(camera))),
            Some(tc) => LiveTranscoder::new(camera, tc.clone(), options.align_wall)
                .map(|t| Connection::Transcode(Box::new(t))),
        });
        let source = match opened.and_then(|r| r) {
            Ok(s) => s,
            Err(SourceError::Shutdown) => break,
            Err(e) => {
                failures += 1;
                let delay = if e.is_configuration_problem() {
                    backoff.next_slow_delay()
                } else {
                    backoff.next_delay()
                };
                tracing::warn!(
                    source = %source_id,
                    url = %url,
                    attempt = failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot open camera: {e}"
                );
                last_problem = Some(CameraFault::from_source(&e));
                shutdown.sleep(delay);
                continue;
            }
        };
        let session = Session {
            source_id: &source_id,
            chunk,
            out: &out,
            observer,
            align_wall: options.align_wall,
            exact_cuts: options.exact_cuts,
            transcoded: transcode.is_some(),
        };
        let outcome = match source {
            Connection::Copy(s) => session.run(*s, next_sequence, last_end, connect_started),
            Connection::Transcode(s) => session.run(*s, next_sequence, last_end, connect_started),
        };
        match outcome {
            Ok(session) => {
                next_sequence = session.next_sequence;
                last_end = session.last_end.or(last_end);
                if session.delivered {
                    backoff.reset();
                    failures = 0;
                }
                // What this connection ended with is the camera's last problem (none when
                // the run was stopped while it streamed).
                last_problem = session.ended_by.as_ref().map(CameraFault::from_source);
            }
            Err(SessionEnd::UploadStageGone) => return,
            Err(SessionEnd::Chunker(e, next, end)) => {
                next_sequence = next.max(next_sequence);
                last_end = end.or(last_end);
                tracing::error!(source = %source_id, url = %url, "cannot chunk this camera's stream: {e}");
                last_problem = Some(CameraFault::from_chunker(&e));
                shutdown.sleep(backoff.next_slow_delay());
                continue;
            }
        }
        if shutdown.is_triggered() {
            break;
        }
        let delay = backoff.next_delay();
        tracing::info!(source = %source_id, url = %url, retry_in_ms = delay.as_millis() as u64, "reconnecting");
        shutdown.sleep(delay);
    }
    if next_sequence > first_sequence {
        tracing::info!(source = %source_id, "camera stopped");
        return;
    }
    match last_problem {
        Some(problem) => {
            tracing::warn!(
                source = %source_id,
                url = %url,
                "camera stopped without a chunk in this run; last problem: {problem}"
            );
            let _ = out
                .tx
                .blocking_send(ReaderMsg::GaveNothing(source_id, problem));
        }
        // Stopped before its first chunk could be closed, with nothing wrong.
        None => tracing::warn!(
            source = %source_id,
            url = %url,
            "camera stopped without a chunk in this run; last problem: no chunk was completed"
        ),
    }
}

/// One connection, as stream copy or through the transcoder.
enum Connection {
    Copy(Box<RtspSource>),
    Transcode(Box<LiveTranscoder>),
}

/// How a connection that ended normally went.
struct SessionOutcome {
    /// The sequence number of the next chunk.
    next_sequence: u64,
    /// The end time of the last chunk sent.
    last_end: Option<DateTime<Utc>>,
    /// Whether any chunk was delivered.
    delivered: bool,
    /// Why the connection ended; `None` for a shutdown.
    ended_by: Option<SourceError>,
}

enum SessionEnd {
    UploadStageGone,
    /// The chunker failed; the sequence number and end time reached so far are kept so the
    /// next connection continues without reusing numbers.
    Chunker(ChunkerError, u64, Option<DateTime<Utc>>),
}

/// One connection to a camera.
struct Session<'a, S> {
    source_id: &'a SourceId,
    chunk: ChunkDuration,
    out: &'a Outbox<S>,
    observer: &'a dyn Observer,
    align_wall: bool,
    /// Copy mode: frame-exact cuts (see `PipelineOptions::exact_cuts`).
    exact_cuts: bool,
    /// Keyframes come from our encoder, exactly on the boundaries.
    transcoded: bool,
}

impl<S: ChunkSink> Session<'_, S> {
    fn cut(&self) -> Cut {
        match (self.transcoded, self.exact_cuts) {
            (true, _) => Cut::EveryKeyframe,
            (false, true) => Cut::Exact,
            (false, false) => Cut::Keyframe,
        }
    }

    /// Reads until the connection ends.
    fn run<L: CameraSource>(
        &self,
        mut source: L,
        first_sequence: u64,
        previous_end: Option<DateTime<Utc>>,
        connect_started: std::time::Instant,
    ) -> Result<SessionOutcome, SessionEnd> {
        let id = self.source_id;
        let mut info = source.stream_info().clone();
        apply_probe(id, &mut info);
        self.observer.started(&SourceStarted {
            source_id: id.clone(),
            display: source.display_url().to_owned(),
            info: info.clone(),
            duration_ms: None,
        });
        // What the camera sends; when transcoding, also what is stored.
        let camera = source.camera_info();
        let output = self
            .transcoded
            .then(|| format!("{} {}x{}", info.codec, info.width, info.height));
        tracing::info!(
            source = %id,
            url = %source.display_url(),
            codec = %camera.codec,
            resolution = %format_args!("{}x{}", camera.width, camera.height),
            output,
            connect_ms = connect_started.elapsed().as_millis() as u64,
            "camera connected"
        );
        let mut chunker = new_chunker(id, &info, self.chunk, first_sequence, self.cut())
            .map_err(|e| SessionEnd::Chunker(e, first_sequence, previous_end))?;
        let mut timeline: Option<Timeline> = None;
        // Receive time and PTS of this connection's first packet.
        let mut first_packet: Option<(DateTime<Utc>, i64)> = None;
        let mut current_sps: Option<Vec<u8>> =
            parameter_set(&info.codec, &info.extradata).map(<[u8]>::to_vec);
        let last_end: std::cell::Cell<Option<DateTime<Utc>>> = std::cell::Cell::new(None);
        let delivered = std::cell::Cell::new(false);
        let mut first_keyframe_logged = false;
        let mut pending_gap = previous_end;

        let send = |chunk: Chunk,
                    timeline: &mut Timeline,
                    pending_gap: &mut Option<DateTime<Utc>>,
                    run_end: Option<RunEnd>| {
            let gap_from = pending_gap.take();
            let sent = self.out.send_with(chunk, timeline, |m| {
                if let Some(prev) = gap_from {
                    // First chunk after a reconnect: flag it and record the gap.
                    m.discontinuity = true;
                    m.gap_ms = Some((m.start_time - prev).num_milliseconds().max(0) as u64);
                }
                m.run_end = run_end;
            });
            match sent {
                Some(end) => {
                    last_end.set(Some(end));
                    delivered.set(true);
                    true
                }
                None => false,
            }
        };

        // Why the connection ended; `None` for a shutdown.
        let ended_by = loop {
            let packet = match source.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => {
                    break Some(SourceError::Disconnected {
                        url: source.display_url().to_owned(),
                        packets: source.packets_read(),
                        reason: "the camera ended the stream".to_owned(),
                    });
                }
                Err(SourceError::Shutdown) => break None,
                Err(e) => break Some(e),
            };
            let received = source
                .first_packet_received()
                .map_or_else(Utc::now, DateTime::<Utc>::from);
            if first_packet.is_none() && self.align_wall {
                chunker.set_align_offset_ms(Some(grid_offset_ms(received, self.chunk)));
            }
            first_packet.get_or_insert((received, packet.pts));
            if packet.keyframe && !first_keyframe_logged {
                first_keyframe_logged = true;
                tracing::info!(
                    source = %id,
                    time_to_first_keyframe_ms = connect_started.elapsed().as_millis() as u64,
                    "first keyframe"
                );
            }
            // New SPS mid-stream (resolution or profile change): close the chunk and continue
            // with the new stream description.
            if packet.keyframe
                && let Some(new_info) = new_parameters(&chunker, &info, &mut current_sps, &packet)
            {
                let next = chunker.next_sequence();
                let finished = chunker
                    .finish()
                    .map_err(|e| SessionEnd::Chunker(e, next, last_end.get()))?;
                if let Some(c) = finished {
                    let tl = timeline
                        .get_or_insert_with(|| clock_for(&source, first_packet, self.align_wall));
                    if !send(c, tl, &mut pending_gap, None) {
                        return Err(SessionEnd::UploadStageGone);
                    }
                }
                let next = chunker.next_sequence().max(next);
                info = new_info;
                chunker = new_chunker(id, &info, self.chunk, next, self.cut())
                    .map_err(|e| SessionEnd::Chunker(e, next, last_end.get()))?;
                if self.align_wall
                    && let Some((received, first_pts)) = first_packet
                {
                    let ms = info.time_base.ticks_to_millis(packet.pts - first_pts);
                    let wall = received + chrono::Duration::milliseconds(ms);
                    chunker.set_align_offset_ms(Some(grid_offset_ms(wall, self.chunk)));
                }
            }
            let next = chunker.next_sequence();
            // Timestamps that jump past the present restart the media clock (the chunker
            // closes the chunk as at a reset, and the grid goes on from its end).
            chunker.set_present(Utc::now());
            let pushed = chunker
                .push(packet)
                .map_err(|e| SessionEnd::Chunker(e, next, last_end.get()))?;
            if let Some(c) = pushed {
                let tl = timeline
                    .get_or_insert_with(|| clock_for(&source, first_packet, self.align_wall));
                if !send(c, tl, &mut pending_gap, None) {
                    return Err(SessionEnd::UploadStageGone);
                }
            }
        };
        let pending = chunker.pending_frames();
        let next = chunker.next_sequence();
        let finished = chunker
            .finish()
            .map_err(|e| SessionEnd::Chunker(e, next, last_end.get()))?;
        // The run's last chunk of this camera says so (a dropped connection's does not: the
        // run goes on).
        let run_end = ended_by.is_none().then_some(RunEnd::Stopped);
        if let Some(c) = finished {
            let tl =
                timeline.get_or_insert_with(|| clock_for(&source, first_packet, self.align_wall));
            if !send(c, tl, &mut pending_gap, run_end) {
                return Err(SessionEnd::UploadStageGone);
            }
        }
        match &ended_by {
            None => {
                tracing::info!(source = %id, partial_frames = pending, "shutdown: partial chunk sent")
            }
            Some(e) => tracing::warn!(
                source = %id,
                url = %source.display_url(),
                packets = source.packets_read(),
                partial_frames = pending,
                "camera stream ended ({e}); the chunk in progress was closed"
            ),
        }
        Ok(SessionOutcome {
            next_sequence: chunker.next_sequence(),
            last_end: last_end.get(),
            delivered: delivered.get(),
            ended_by,
        })
    }
}

/// Milliseconds from `wall` to the next line of the UTC grid of `chunk` (0 when on a line).
pub(crate) fn grid_offset_ms(wall: DateTime<Utc>, chunk: ChunkDuration) -> u64 {
    let period = chunk.as_millis() as i64;
    let into = wall.timestamp_millis().rem_euclid(period);
    ((period - into) % period) as u64
}

/// The clock of a connection, chosen when its first chunk is sent: RTCP when FFmpeg has a
/// sender report by then (its time maps PTS 0), else the receive time of the first packet.
///
/// With wall-clock alignment it is always the receive clock: the grid was placed on it when
/// the first packet arrived (before any sender report), and timestamps from another clock
/// would put chunk starts off the grid by the difference between the two.
fn clock_for(
    source: &impl CameraSource,
    first_packet: Option<(DateTime<Utc>, i64)>,
    align_wall: bool,
) -> Timeline {
    let rtcp = if align_wall {
        None
    } else {
        source.rtcp_start_time_us()
    };
    match rtcp.and_then(DateTime::from_timestamp_micros) {
        Some(t) => Timeline::anchored(t, 0, ClockSource::Rtcp),
        None => {
            let (received, pts) = first_packet.unwrap_or_else(|| (Utc::now(), 0));
            Timeline::anchored(received, pts, ClockSource::Receive)
        }
    }
}

/// How a camera's chunker cuts.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// At the first keyframe at or after each boundary (stream copy).
    Keyframe,
    /// At every keyframe: the transcoder puts them exactly on the boundaries.
    EveryKeyframe,
    /// On the first frame at or after each boundary (stream copy, edit lists).
    Exact,
}

fn new_chunker(
    id: &SourceId,
    info: &StreamInfo,
    chunk: ChunkDuration,
    first_sequence: u64,
    cut: Cut,
) -> Result<CopyChunker, ChunkerError> {
    let mut config = CopyChunkerConfig::new(id.clone(), chunk);
    config.first_sequence = first_sequence;
    config.cut_at_every_keyframe = matches!(cut, Cut::EveryKeyframe);
    config.exact_cuts = matches!(cut, Cut::Exact);
    CopyChunker::new(info, config)
}

/// The stream description from `packet` on, when this keyframe of an Annex B stream carries
/// an SPS other than the one in force (`current`, updated): `info` with the keyframe's
/// parameter sets and the size they give.
fn new_parameters(
    chunker: &CopyChunker,
    info: &StreamInfo,
    current: &mut Option<Vec<u8>>,
    packet: &crispy_core::EncodedPacket,
) -> Option<StreamInfo> {
    let sps = parameter_set(&info.codec, &packet.data)?;
    let changed = current.as_deref().is_some_and(|cur| cur != sps);
    *current = Some(sps.to_vec());
    if !changed {
        return None;
    }
    let id = chunker.source_id();
    let mut new_info = info.clone();
    new_info.extradata = packet.data.clone();
    // The size is the new SPS's (FFmpeg's stream info still gives the first one).
    match SpsProbe.resolution(&new_info) {
        Ok((w, h)) => (new_info.width, new_info.height) = (w, h),
        Err(e) => tracing::warn!(source = %id, "resolution probe of the new SPS failed: {e}"),
    }
    tracing::warn!(
        source = %id,
        from = %format_args!("{}x{}", info.width, info.height),
        to = %format_args!("{}x{}", new_info.width, new_info.height),
        "stream parameters changed: starting a new chunk"
    );
    Some(new_info)
}

/// The first SPS in Annex B data (extradata or a keyframe), for change detection.
fn parameter_set<'a>(codec: &Codec, data: &'a [u8]) -> Option<&'a [u8]> {
    let is_sps = |n: &[u8]| match codec {
        Codec::H264 => n[0] & 0x1f == 7,
        Codec::H265 => (n[0] >> 1) & 0x3f == 33,
        _ => false,
    };
    crispy_core::annexb::annexb_nals(data).find(|n| is_sps(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of 1 s at 90 kHz starting at `start_s` seconds of media time.
    fn chunk_at(start_s: i64, discontinuity: bool, gap_ms: Option<u64>) -> ChunkMetadata {
        let mut m: ChunkMetadata =
            serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("manifest");
        m.time_base = crispy_core::Rational::new(1, 90_000);
        m.start_pts = start_s * 90_000;
        m.duration_ts = 90_000;
        m.discontinuity = discontinuity;
        m.gap_ms = gap_ms;
        // (As the chunker flags a restart with nothing missing.)
        m.timestamps_restarted = discontinuity && gap_ms.is_none();
        m
    }

    #[test]
    fn a_gap_keeps_the_media_clock_and_a_live_jump_past_now_restarts_it() {
        let origin = Utc::now() - chrono::Duration::hours(1);
        let second = chrono::Duration::seconds(1);
        for clock in [ClockSource::FileMtime, ClockSource::Receive] {
            let mut t = Timeline::anchored(origin, 0, clock);
            let mut first = chunk_at(0, false, None);
            t.stamp(&mut first);
            // Ten seconds missing: the chunk after them starts ten seconds later.
            let mut after_gap = chunk_at(11, true, Some(10_000));
            t.stamp(&mut after_gap);
            assert_eq!(after_gap.start_time, origin + second * 11, "{clock}");
            assert_eq!(after_gap.gap_ms, Some(10_000));
            // Timestamps five hours on, past the present: a live source's encoder restarted;
            // a file's media time is what it is.
            let mut jumped = chunk_at(5 * 3600, true, Some(5 * 3600 * 1000));
            t.stamp(&mut jumped);
            if clock == ClockSource::Receive {
                assert_eq!(jumped.start_time, origin + second * 12);
                assert_eq!(jumped.gap_ms, Some(0));
            } else {
                assert_eq!(jumped.start_time, origin + second * 5 * 3600);
            }
            // A restart (timestamps back) goes on from the previous end.
            let mut restarted = chunk_at(0, true, None);
            let previous_end = jumped.end_time;
            t.stamp(&mut restarted);
            assert_eq!(restarted.start_time, previous_end);
            assert_eq!(restarted.gap_ms, Some(0));
            // A restart whose first chunk also has frames missing inside it (a gap recorded
            // by the chunker): it too goes on from the previous end, keeping its gap.
            let mut restarted_with_gap = chunk_at(0, true, Some(500));
            restarted_with_gap.timestamps_restarted = true;
            let previous_end = restarted.end_time;
            t.stamp(&mut restarted_with_gap);
            assert_eq!(restarted_with_gap.start_time, previous_end, "{clock}");
            assert_eq!(restarted_with_gap.gap_ms, Some(500));
        }
    }
}
