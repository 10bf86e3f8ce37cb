use chrono::{DateTime, Utc};
use crispy_core::{
    Chunk, ChunkDuration, ChunkMetadata, Chunker, ClockSource, EncodedPacket, MANIFEST_SCHEMA,
    Rational, SourceId, StreamInfo,
};

use crate::ChunkerError;
use crate::config_record::TrackCodec;
use crate::mp4::{Sample, VideoTrack, write_mp4};

/// Settings of a [`CopyChunker`].
#[derive(Debug, Clone)]
pub struct CopyChunkerConfig {
    /// The source the chunks belong to (recorded in their metadata).
    pub source_id: SourceId,
    /// Requested chunk length; a chunk closes at the first keyframe at or after it.
    pub target: ChunkDuration,
    /// Sequence number of the first chunk.
    pub first_sequence: u64,
    /// Close a chunk at every keyframe (transcode mode, where keyframes are placed exactly on
    /// the chunk boundaries) instead of at the first keyframe at or after `target`.
    pub cut_at_every_keyframe: bool,
    /// Wall-clock alignment: the first grid line is this many ms after the first frame, and
    /// grid lines follow every `target`. A chunk then closes at the first keyframe at or after
    /// the next grid line instead of after `target`.
    pub align_offset_ms: Option<u64>,
    /// Frame-exact cuts without decoding: boundaries every `target` from the first frame (or
    /// on the grid lines), each chunk shown from the first frame at or after its boundary.
    /// A chunk that starts between keyframes also carries the frames from the keyframe
    /// before its boundary, which its edit list hides (stored twice: once shown, once not).
    pub exact_cuts: bool,
    /// The source's display matrix (a rotated picture, as phones record it), written into
    /// each chunk's track header; `None` for a picture shown as it is coded.
    pub display_matrix: Option<[i32; 9]>,
}

impl CopyChunkerConfig {
    /// Chunks of `target` length for `source_id`, numbered from 0.
    pub fn new(source_id: SourceId, target: ChunkDuration) -> Self {
        Self {
            source_id,
            target,
            first_sequence: 0,
            cut_at_every_keyframe: false,
            align_offset_ms: None,
            exact_cuts: false,
            display_matrix: None,
        }
    }
}

/// Stream-copy chunker: keyframe-aligned chunks, nothing decoded.
///
/// Packets before the first keyframe are dropped (they cannot be decoded on their own).
/// Chunk metadata is complete for media facts; `object`, times and `sha256` are left for the
/// pipeline and signer to fill.
#[derive(Debug)]
pub struct CopyChunker {
    config: CopyChunkerConfig,
    info: StreamInfo,
    codec: Option<TrackCodec>,
    pending: Vec<EncodedPacket>,
    next_sequence: u64,
    target_ticks: i64,
    /// Nominal frame duration in ticks, for the last frame of a stream whose packets carry none.
    nominal_frame_ticks: i64,
    skipped_before_keyframe: u64,
    /// The chunk in progress started after a timestamp reset.
    pending_discontinuity: bool,
    /// PTS of the first frame of the chunk in progress that is shown (not a trimmed file's
    /// lead-in, nor an open GOP's leading pictures): the chunk's length counts from it.
    first_shown_pts: Option<i64>,
    /// The chunk in progress starts after a forward jump in the source's timestamps (frames
    /// missing, the stream itself continuous): where the chunk before it ended (PTS).
    gap_before: Option<i64>,
    /// Ticks missing inside the chunk in progress: forward jumps between its frames.
    gap_inside: i64,
    /// Exact cuts: PTS from which the chunk in progress is shown (`None` until the first
    /// exact cut: then the first frame not discarded).
    shown_from: Option<i64>,
    /// Exact cuts: the smallest PTS at or after the next boundary seen so far, where the next
    /// chunk will start.
    next_start: Option<i64>,
    /// Exact cuts: the first frame shown so far (smallest PTS not discarded) until the first
    /// cut; the boundaries count from it.
    anchor: Option<i64>,
    /// PTS of the next wall-clock grid line (with `align_offset_ms`).
    grid_next: Option<i64>,
    /// Wall-clock alignment after a timestamp reset or a forward jump: ticks from the first
    /// frame shown after it to the next grid line (in `(0, target]`), in place of
    /// `align_offset_ms`, which places the grid from the stream's first frame.
    realign_ticks: Option<i64>,
    /// A timestamp reset was seen; waiting for a keyframe to start the next chunk.
    awaiting_keyframe_after_reset: bool,
    warned_long_gop: bool,
    warned_open_gop: bool,
    /// New parameter sets announced by [`Self::change_stream`], in force from the chunk
    /// that the next keyframe starts.
    next_stream: Option<(StreamInfo, Option<TrackCodec>)>,
    /// Live sources: the present and the wall time of the media clock (see
    /// [`Self::set_present`]).
    live: Option<LiveClock>,
}

/// Where a live source's media clock stands on the wall clock, as the pipeline's timeline
/// places it: from the first packet's arrival, and after a timestamp reset from the end of
/// the chunk before it.
#[derive(Debug, Clone, Copy)]
struct LiveClock {
    /// The wall-clock time when the packet being pushed arrived.
    present: DateTime<Utc>,
    /// A PTS and its wall time; `None` until the first packet.
    anchor: Option<(i64, DateTime<Utc>)>,
    /// After a timestamp reset, until the keyframe that starts the next chunk: the wall
    /// time where the chunk before it ended, where that keyframe will be placed.
    resume_at: Option<DateTime<Utc>>,
}

/// The longest step between two frames' timestamps of a file that is a frame interval rather
/// than frames missing, for chunks of a second or more (shorter chunks: twice their length).
const MAX_FRAME_STEP_MS: i64 = 2_000;

/// How far past the present a live frame may be placed before its timestamps count as a new
/// base rather than a gap (the pipeline's timeline uses the same margin).
const PAST_PRESENT_MS: i64 = 2_000;

impl CopyChunker {
    /// A chunker for the stream described by `info`.
    pub fn new(info: &StreamInfo, config: CopyChunkerConfig) -> Result<Self, ChunkerError> {
        let codec = TrackCodec::from_extradata(&info.codec, &info.extradata)?;
        let tb = info.time_base;
        if !tb.is_positive() {
            return Err(ChunkerError::BadTimeBase {
                time_base: tb.to_string(),
            });
        }
        let exact_boundaries = config.cut_at_every_keyframe || config.exact_cuts;
        let target_ticks = tb.millis_to_ticks(config.target.as_millis() as i64).max(1);
        let nominal_frame_ticks = info
            .frame_rate
            .filter(|r| r.is_positive())
            .map(|r| {
                // ticks per frame = (1 / fps) / tb = (r.den * tb.den) / (r.num * tb.num)
                let num = i64::from(r.den) * i64::from(tb.den);
                let den = i64::from(r.num) * i64::from(tb.num);
                (num + den / 2) / den
            })
            .unwrap_or(0);
        Ok(Self {
            next_sequence: config.first_sequence,
            config,
            info: info.clone(),
            codec,
            pending: Vec::with_capacity(256),
            target_ticks,
            nominal_frame_ticks,
            skipped_before_keyframe: 0,
            pending_discontinuity: false,
            first_shown_pts: None,
            gap_before: None,
            gap_inside: 0,
            shown_from: None,
            next_start: None,
            anchor: None,
            grid_next: None,
            realign_ticks: None,
            awaiting_keyframe_after_reset: false,
            // Where keyframes are placed on the boundaries (transcoding), a chunk longer than
            // asked is one frame longer than a too-short chunk: no advice to give; nor where
            // cuts do not wait for keyframes.
            warned_long_gop: exact_boundaries,
            warned_open_gop: false,
            next_stream: None,
            live: None,
        })
    }

    /// Live sources: the wall-clock time at which the packet about to be pushed arrived,
    /// set before each push. A forward jump in the timestamps that would place a frame more
    /// than 2 s in the future is then a new timestamp base (an encoder restarted within the
    /// connection) rather than frames missing: the chunk is closed and the next flagged
    /// [`ChunkMetadata::timestamps_restarted`], as after a reset, so that the pipeline's
    /// timeline continues from the previous chunk's end, and a wall-clock grid with it.
    /// Files never call it: their timestamps are the clock.
    pub fn set_present(&mut self, now: DateTime<Utc>) {
        match self.live.as_mut() {
            Some(live) => live.present = now,
            None => {
                self.live = Some(LiveClock {
                    present: now,
                    anchor: None,
                    resume_at: None,
                });
            }
        }
    }

    /// The wall time of `pts` on a live source's clock.
    fn wall_time(&self, pts: i64) -> Option<DateTime<Utc>> {
        let (base, at) = self.live?.anchor?;
        let ms = self
            .info
            .time_base
            .ticks_to_millis(pts.saturating_sub(base));
        at.checked_add_signed(chrono::Duration::try_milliseconds(ms)?)
    }

    /// True when `packet` would be placed more than [`PAST_PRESENT_MS`] after the present
    /// on a live source's clock.
    fn runs_past_present(&self, packet: &EncodedPacket) -> bool {
        self.live.is_some_and(|live| {
            self.wall_time(packet.pts)
                .is_some_and(|t| t > live.present + chrono::Duration::milliseconds(PAST_PRESENT_MS))
        })
    }

    /// Packets dropped because they arrived before the first keyframe.
    pub fn skipped_before_keyframe(&self) -> u64 {
        self.skipped_before_keyframe
    }

    /// Sets the wall-clock alignment offset before the first packet (live sources learn their
    /// clock only when the first packet arrives). See [`CopyChunkerConfig::align_offset_ms`].
    pub fn set_align_offset_ms(&mut self, offset: Option<u64>) {
        self.config.align_offset_ms = offset;
        self.grid_next = None;
        self.realign_ticks = None;
        self.anchor = None;
    }

    /// The sequence number the next chunk will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Frames waiting in the chunk in progress.
    pub fn pending_frames(&self) -> usize {
        self.pending.len()
    }

    /// The source whose chunks this chunker cuts.
    pub fn source_id(&self) -> &crispy_core::SourceId {
        &self.config.source_id
    }

    /// Whether the stream's frames come in Annex B (start codes, parameter sets in-band:
    /// MPEG-TS, RTSP) rather than with length prefixes (MP4, Matroska).
    pub fn takes_annex_b(&self) -> bool {
        self.codec
            .as_ref()
            .is_none_or(|c| matches!(c.framing, crate::mp4::NalFraming::AnnexB))
    }

    /// The stream's parameter sets change at the keyframe about to be pushed: another
    /// resolution or profile (two recordings joined, an encoder reconfigured). That keyframe
    /// starts a chunk, described by `info` (its extradata holding the new parameter sets; same
    /// codec and time base): the chunk in progress closes there as at any cut (or as at a
    /// timestamp jump, when the keyframe also comes after one), and the boundaries go on
    /// where they were.
    pub fn change_stream(&mut self, info: &StreamInfo) -> Result<(), ChunkerError> {
        let codec = TrackCodec::from_extradata(&info.codec, &info.extradata)?;
        let info = StreamInfo {
            time_base: self.info.time_base,
            ..info.clone()
        };
        self.next_stream = Some((info, codec));
        Ok(())
    }

    /// Puts announced parameter sets in force: called as a keyframe starts a chunk.
    fn adopt_next_stream(&mut self) {
        if let Some((info, codec)) = self.next_stream.take() {
            self.info = info;
            self.codec = codec;
        }
    }

    /// Closes the chunk in progress with everything pending: shown to `next`'s PTS when the
    /// keyframe `next` (its DTS, PTS) starts the next chunk, else to the end of its last frame.
    fn close(&mut self, next: Option<(i64, i64)>) -> Result<Chunk, ChunkerError> {
        let pending = std::mem::take(&mut self.pending);
        self.first_shown_pts = None;
        self.next_start = None;
        self.anchor = None;
        self.pending.reserve(pending.len());
        let shown_from = self.shown_from.take();
        // The next chunk starts where its keyframe is shown (a closed GOP shows nothing of its
        // own before it): with B-frames and uneven frame times that is not always where the
        // decode times of this one add up to.
        let (next_dts, shown_until) = (next.map(|n| n.0), next.map(|n| n.1));
        self.build(&pending, next_dts, shown_from, shown_until)
    }

    /// A chunk of `pending` (decode order, from a keyframe), shown from `shown_from` (by
    /// default the first frame not discarded) to `shown_until` (by default its end).
    fn build(
        &mut self,
        pending: &[EncodedPacket],
        next_dts: Option<i64>,
        shown_from: Option<i64>,
        shown_until: Option<i64>,
    ) -> Result<Chunk, ChunkerError> {
        let tb = self.info.time_base;
        let scale = i64::from(tb.num);
        let codec = match &self.codec {
            Some(c) => c,
            None => unreachable_codec(&self.info)?,
        };
        let too_large = |what: &str| ChunkerError::TooLarge {
            reason: format!("{what} does not fit the 32-bit MP4 sample table"),
        };

        let first_dts = pending[0].dts;
        let min_pts = pending
            .iter()
            .map(|p| p.pts)
            .min()
            .unwrap_or(pending[0].pts);
        // A trimmed file's lead-in: frames the source's edit list does not show, decoded only
        // for the first frame that is. The chunk's edit list hides them too, and the manifest
        // describes what is shown. (Discarded frames after the first shown one would need
        // more than one edit; they are rare and stay shown.) Exact cuts hide the frames
        // before the chunk's boundary the same way, and those after its end.
        // An open GOP's leading pictures (decoded after the chunk's keyframe, shown before
        // it) need the GOP before, which the chunk does not hold: never shown.
        let start_pts = shown_from
            .or_else(|| {
                (pending.iter())
                    .filter(|p| !p.discard && p.pts >= pending[0].pts)
                    .map(|p| p.pts)
                    .min()
            })
            .unwrap_or(min_pts);
        // Frames the source's edit list hides after its end (a file trimmed at its end) stay
        // hidden too: nothing is shown past the last frame not discarded.
        let last_kept = pending.iter().filter(|p| !p.discard).map(|p| p.pts).max();
        // A boundary at or before the start (hostile timestamps) shows to the end instead of
        // nothing.
        let shown_until = shown_until.filter(|end| *end > start_pts);
        let shown = |pts: i64| {
            pts >= start_pts
                && shown_until.is_none_or(|end| pts < end)
                && last_kept.is_none_or(|last| pts <= last)
        };
        let mut samples = Vec::with_capacity(pending.len());
        // The decode times' span: the media's duration.
        let mut total: i64 = 0;
        let mut last_delta = self.nominal_frame_ticks;
        // Where the frame shown last ends.
        let mut shown_end = i64::MIN;
        for (i, p) in pending.iter().enumerate() {
            let delta = match pending.get(i + 1).map(|n| n.dts).or(next_dts) {
                Some(next) => next.saturating_sub(p.dts),
                None if p.duration > 0 => p.duration,
                None => Some(self.frame_ticks_estimate(pending))
                    .filter(|t| *t > 0)
                    .unwrap_or(last_delta),
            }
            .max(0);
            last_delta = delta;
            if last_kept.is_none_or(|last| p.pts <= last) {
                shown_end = shown_end.max(p.pts.saturating_add(delta));
            }
            total = total.saturating_add(delta);
            samples.push(Sample {
                data: p.data.clone(),
                framing: codec.framing,
                duration: u32::try_from(delta.saturating_mul(scale))
                    .map_err(|_| too_large("a frame duration"))?,
                composition_offset: i32::try_from(
                    p.pts.saturating_sub(p.dts).saturating_mul(scale),
                )
                .map_err(|_| too_large("a composition offset"))?,
                keyframe: p.keyframe,
            });
        }
        let presentation_start = u32::try_from(
            start_pts
                .saturating_sub(first_dts)
                .saturating_mul(scale)
                .max(0),
        )
        .map_err(|_| too_large("the presentation offset"))?;
        let duration_ts = match shown_until {
            Some(end) => end.saturating_sub(start_pts).max(0),
            // To the end of the frame shown last: with B-frames and uneven frame times that
            // may be later than the decode times add up to.
            None if last_kept.is_some_and(|last| pending.iter().any(|p| p.pts > last)) => {
                shown_end.saturating_sub(start_pts).max(0)
            }
            None => min_pts
                .saturating_add(total)
                .max(shown_end)
                .saturating_sub(start_pts)
                .max(0),
        };
        // Shown past where the frames' durations add up to (B-frames with uneven timing, or
        // frames missing before the last one shown): the last frame decoded lasts longer, so
        // that the frames' durations cover what is shown, as players and ffprobe count them.
        let excess = start_pts
            .saturating_add(duration_ts)
            .saturating_sub(min_pts.saturating_add(total));
        if excess > 0
            && let Some(last) = samples.last_mut()
        {
            last.duration = u64::from(last.duration)
                .checked_add(u64::try_from(excess.saturating_mul(scale)).unwrap_or(u64::MAX))
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| too_large("a frame duration"))?;
        }
        let track = VideoTrack {
            sample_entry: codec.sample_entry,
            config_box: codec.config_box,
            config_record: &codec.record,
            width: u16::try_from(self.info.width).map_err(|_| too_large("the width"))?,
            height: u16::try_from(self.info.height).map_err(|_| too_large("the height"))?,
            timescale: u32::try_from(tb.den).map_err(|_| too_large("the timescale"))?,
            matrix: self
                .config
                .display_matrix
                .unwrap_or(crate::mp4::IDENTITY_MATRIX),
        };
        let presented = u64::try_from(duration_ts.saturating_mul(scale)).unwrap_or(0);
        let payload = write_mp4(&track, &samples, presentation_start, presented)?;

        let frame_count = pending.iter().filter(|p| shown(p.pts)).count() as u64;
        let duration_ms = tb.ticks_to_millis(duration_ts).max(0) as u64;
        let seconds = duration_ts as f64 * tb.as_f64();
        let fps = if seconds > 0.0 {
            (frame_count as f64 / seconds * 1000.0).round() / 1000.0
        } else {
            0.0
        };
        let keyframes = pending.iter().filter(|p| p.keyframe).count();
        if !self.warned_long_gop
            && keyframes == 1
            && duration_ts > self.target_ticks * 3 / 2
            && next_dts.is_some()
        {
            self.warned_long_gop = true;
            tracing::warn!(
                source = %self.config.source_id,
                gop_ms = duration_ms,
                requested_ms = self.config.target.as_millis(),
                "the source's keyframe interval is longer than the requested chunk, so stream-copy \
                 chunks follow the keyframes; use --cut exact (still no decoding) or --mode transcode \
                 for exact chunk lengths"
            );
        }
        // Time missing before this chunk and inside it (forward jumps in the timestamps).
        let gap_ticks = (self.gap_before.take())
            .map(|end| start_pts.saturating_sub(end).max(0))
            .into_iter()
            .chain((self.gap_inside > 0).then_some(self.gap_inside))
            .reduce(i64::saturating_add);
        self.gap_inside = 0;
        let gap_ms = gap_ticks.map(|t| tb.ticks_to_millis(t).max(0) as u64);
        let restarted = std::mem::take(&mut self.pending_discontinuity);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let epoch = DateTime::UNIX_EPOCH;
        let metadata = ChunkMetadata {
            schema: MANIFEST_SCHEMA.to_owned(),
            source_id: self.config.source_id.clone(),
            sequence,
            object: String::new(),
            start_time: epoch,
            end_time: epoch,
            clock: ClockSource::RunStart,
            start_pts,
            time_base: tb,
            duration_ts,
            duration_ms,
            requested_ms: self.config.target.as_millis(),
            frame_count,
            fps,
            width: self.info.width,
            height: self.info.height,
            rotation: self
                .config
                .display_matrix
                .map_or(0, |m| crispy_core::display_rotation(&m)),
            codec: self.info.codec.name().to_owned(),
            profile: self.info.profile.clone(),
            keyframe_aligned: pending[0].keyframe,
            aligned: self.config.align_offset_ms.is_some(),
            discontinuity: restarted || gap_ms.is_some(),
            gap_ms,
            timestamps_restarted: restarted,
            run_end: None,
            dropped_sequences: Vec::new(),
            bytes: payload.len() as u64,
            sha256: String::new(),
            prev_sha256: None,
            prev_unknown: false,
            signature: None,
            signed_url: None,
        };
        Ok(Chunk { payload, metadata })
    }
}

impl CopyChunker {
    /// A DTS step larger than this between consecutive frames is a timestamp jump, not a
    /// frame interval: twice the chunk length, at least ten frames, and for files at most
    /// 2 s. (Cameras may lower their frame rate on a still scene below what their stream
    /// description says, so their frame steps are judged against the chunk length only.)
    fn jump_ticks(&self) -> i64 {
        let cap = match self.live {
            Some(_) => i64::MAX,
            None => self.info.time_base.millis_to_ticks(MAX_FRAME_STEP_MS),
        };
        (self.target_ticks.saturating_mul(2))
            .min(cap)
            .max(self.nominal_frame_ticks.saturating_mul(10))
    }

    /// How long the last frame held lasts where the stream cannot say (the last frame before
    /// a gap, or of the stream, without a duration of its own that is not the gap): the step
    /// between the two frames before, when that is a frame interval, else the nominal frame
    /// duration. The nominal rate is the stream's average, which frames missing lower.
    fn frame_ticks_estimate(&self, frames: &[EncodedPacket]) -> i64 {
        match frames {
            [.., a, b] if b.dts > a.dts && b.dts - a.dts <= self.jump_ticks() => b.dts - a.dts,
            _ => self.nominal_frame_ticks,
        }
    }

    /// Whether a forward DTS step of `step` ticks is a gap in a stream that goes on rather
    /// than a reset: at most a day, and short enough to be one frame's duration in an MP4
    /// (the frame before the gap lasts until the next).
    fn is_gap(&self, step: i64) -> bool {
        let tb = self.info.time_base;
        tb.ticks_to_millis(step) <= 86_400_000
            && step.saturating_mul(i64::from(tb.num)) <= i64::from(i32::MAX)
    }

    /// Ticks from `pts` to the first grid line after it (`target` when `pts` is on one), on
    /// the grid whose next line is at `grid_next`: where the wall-clock grid stands for a
    /// frame shown at `pts` on the same clock. `None` without wall-clock alignment (exact
    /// cuts' boundaries then count from the chunks' first frames).
    fn ticks_to_grid_line(&self, pts: i64) -> Option<i64> {
        self.config.align_offset_ms?;
        let target = self.target_ticks.max(1);
        let into = self.grid_next?.saturating_sub(pts).rem_euclid(target);
        Some(if into == 0 { target } else { into })
    }

    /// Starts a chunk at `keyframe`, the first frame after a forward jump: shown from it
    /// (its leading pictures need the frames before the gap), boundaries counted again from
    /// it (exact cuts) or the grid moved past it.
    fn start_after_gap(&mut self, keyframe: EncodedPacket) {
        if self.config.exact_cuts {
            // The media clock goes on across a gap (its wall times follow the timestamps):
            // the boundaries count again from the keyframe, but stay on the wall-clock grid.
            self.realign_ticks = self.ticks_to_grid_line(keyframe.pts);
            self.grid_next = None;
            self.anchor_exact(&keyframe);
        } else {
            if let Some(grid) = self.grid_next.as_mut() {
                while *grid <= keyframe.pts {
                    *grid = grid.saturating_add(self.target_ticks.max(1));
                }
            }
            self.shown_from = Some(keyframe.pts);
        }
        self.hold(keyframe);
    }

    /// Starts a chunk at `keyframe`, the first frame after a timestamp reset. Its wall time
    /// continues from the previous chunk's end, so a wall-clock grid goes on from there
    /// (`realign_ticks`, set when the reset was seen).
    fn start_after_reset(&mut self, keyframe: EncodedPacket) {
        self.awaiting_keyframe_after_reset = false;
        self.pending_discontinuity = true;
        if let Some(live) = self.live.as_mut() {
            let at = live.resume_at.take().unwrap_or(live.present);
            live.anchor = Some((keyframe.pts, at));
        }
        if self.config.exact_cuts {
            self.anchor_exact(&keyframe);
        } else if let Some(first_line) = self.realign_ticks {
            self.grid_next = Some(keyframe.pts.saturating_add(first_line));
        }
        self.hold(keyframe);
    }

    /// Exact cuts: until the first cut, the first frame shown anchors the boundaries (with
    /// B-frames it may come a few frames after the first one decoded).
    fn anchor_exact(&mut self, packet: &EncodedPacket) {
        if !packet.discard
            && self.shown_from.is_none()
            && self.anchor.is_none_or(|a| packet.pts < a)
            && self.pending.first().is_none_or(|k| packet.pts >= k.pts)
        {
            let first_line = match (self.realign_ticks, self.config.align_offset_ms) {
                (Some(ticks), _) => ticks,
                (None, Some(ms)) if ms > 0 => self.info.time_base.millis_to_ticks(ms as i64),
                _ => self.target_ticks,
            };
            let boundary = packet.pts.saturating_add(first_line.max(1));
            self.anchor = Some(packet.pts);
            self.grid_next = Some(boundary);
            self.next_start = (self.pending.iter())
                .filter(|p| !p.discard)
                .map(|p| p.pts)
                .filter(|pts| *pts >= boundary)
                .min();
        }
    }

    fn warn_open_gop(&mut self, packet: &EncodedPacket) {
        if !self.warned_open_gop
            && !packet.keyframe
            && let Some(first) = self.pending.first()
            && packet.pts < first.pts
        {
            self.warned_open_gop = true;
            tracing::warn!(
                source = %self.config.source_id,
                "open-GOP stream: frames that follow a keyframe but are shown before it \
                 cannot be decoded from their chunk alone, so chunks hide them (a few frames \
                 at each chunk start are not shown); configure the camera for closed GOPs or \
                 use --mode transcode"
            );
        }
    }

    /// Exact cuts: holds `packet`, and closes the chunk in progress once every frame it shows
    /// has been read. Boundaries lie every `target` from the first frame shown (or on the
    /// grid lines); a chunk is shown from the first frame at or after its boundary to the
    /// first frame at or after the next one.
    fn push_exact(&mut self, packet: EncodedPacket) -> Result<Option<Chunk>, ChunkerError> {
        self.anchor_exact(&packet);
        // (A frame the source's edit list hides never starts a chunk.)
        if let Some(boundary) = self.grid_next
            && packet.pts >= boundary
            && !packet.discard
        {
            self.next_start = Some(self.next_start.map_or(packet.pts, |s| s.min(packet.pts)));
        }
        self.warn_open_gop(&packet);
        let dts = packet.dts;
        self.hold(packet);
        // Frames come in decode order with PTS ≥ DTS: once a DTS reaches the smallest PTS
        // seen at or after the boundary, no frame still to come is shown before it.
        let Some(start) = self.next_start.filter(|s| dts >= *s) else {
            return Ok(None);
        };
        let pending = std::mem::take(&mut self.pending);
        // This chunk: in decode order up to the last frame shown before the next one starts.
        let Some(last) = pending.iter().rposition(|p| p.pts < start) else {
            // Nothing before the boundary (the stream began past it): keep going.
            self.pending = pending;
            self.advance_boundary(start);
            return Ok(None);
        };
        // The next: from the keyframe before the first frame it shows.
        let first = pending
            .iter()
            .position(|p| p.pts >= start)
            .unwrap_or(pending.len() - 1);
        // (Not a keyframe shown after `start`: the frame at `start` may be one of its leading
        // pictures, which need the GOP before.)
        let keyframe = pending[..=first]
            .iter()
            .rposition(|p| p.keyframe && p.pts <= start)
            .unwrap_or(0);
        let shown_from = self.shown_from.replace(start);
        let next_dts = pending.get(last + 1).map(|p| p.dts);
        let chunk = self.build(&pending[..=last], next_dts, shown_from, Some(start))?;
        self.pending = pending[keyframe..].to_vec();
        self.first_shown_pts = None;
        self.advance_boundary(start);
        Ok(Some(chunk))
    }

    /// Exact cuts: the chunk in progress closes at `keyframe`, where new parameter sets begin
    /// (shown up to it, whatever the boundaries say); the next chunk is shown from it and ends
    /// at the next boundary, which stays where it was.
    fn cut_exact_for_new_stream(
        &mut self,
        keyframe: EncodedPacket,
    ) -> Result<Option<Chunk>, ChunkerError> {
        let (anchor, grid) = (self.anchor, self.grid_next);
        let closed = self.close(Some((keyframe.dts, keyframe.pts)))?;
        (self.anchor, self.grid_next) = (anchor, grid);
        self.shown_from = Some(keyframe.pts);
        let pts = keyframe.pts;
        self.warn_open_gop(&keyframe);
        self.hold(keyframe);
        if self.grid_next.is_some_and(|boundary| boundary <= pts) {
            self.advance_boundary(pts);
        }
        Ok(Some(closed))
    }

    /// Exact cuts: moves the boundary past `start` (whole chunks on, past any gap) and finds
    /// the next chunk's start among the frames already held.
    fn advance_boundary(&mut self, start: i64) {
        let target = self.target_ticks.max(1);
        let mut boundary = self.grid_next.unwrap_or(start);
        if boundary <= start {
            let steps = start.saturating_sub(boundary) / target + 1;
            boundary = boundary.saturating_add(steps.saturating_mul(target));
        }
        self.grid_next = Some(boundary);
        self.next_start = (self.pending.iter())
            .filter(|p| !p.discard)
            .map(|p| p.pts)
            .filter(|pts| *pts >= boundary)
            .min();
    }

    fn hold(&mut self, packet: EncodedPacket) {
        if self.pending.is_empty() && packet.keyframe {
            self.adopt_next_stream();
        }
        // An open GOP's leading pictures (after the chunk's keyframe, shown before it) are
        // never shown: they need the GOP before.
        let leading = self.pending.first().is_some_and(|k| packet.pts < k.pts);
        if !packet.discard && !leading && self.first_shown_pts.is_none_or(|f| packet.pts < f) {
            self.first_shown_pts = Some(packet.pts);
        }
        self.pending.push(packet);
    }
}

/// The codec record is built at the first keyframe at the latest, before any chunk closes.
fn unreachable_codec(info: &StreamInfo) -> Result<&'static TrackCodec, ChunkerError> {
    Err(ChunkerError::BadConfig {
        codec: info.codec.name().to_owned(),
        reason: "no parameter sets before the first chunk closed".to_owned(),
    })
}

impl Chunker for CopyChunker {
    type Error = ChunkerError;

    fn push(&mut self, packet: EncodedPacket) -> Result<Option<Chunk>, ChunkerError> {
        if let Some(live) = self.live.as_mut()
            && live.anchor.is_none()
        {
            live.anchor = Some((packet.pts, live.present));
        }
        // A forward jump with the stream going on (frames missing, a recording paused): kept.
        // On a live source, not one that runs into the future (treated as a reset below).
        let step = self
            .pending
            .last()
            .map(|last| packet.dts.saturating_sub(last.dts));
        // (A live keyframe past the present starts a chunk as after a reset; any other frame
        // past it stays in its chunk, after a gap, as its frames need the ones before.)
        if let Some(step) = step.filter(|s| {
            *s > self.jump_ticks()
                && self.is_gap(*s)
                && !(packet.keyframe && self.runs_past_present(&packet))
        }) {
            let missing = step.saturating_sub(self.frame_ticks_estimate(&self.pending).max(0));
            tracing::warn!(
                source = %self.config.source_id,
                missing_ms = self.info.time_base.ticks_to_millis(missing),
                "the source's timestamps jump forward (frames missing): chunk flagged as a \
                 discontinuity with the gap"
            );
            if packet.keyframe {
                // The chunk in progress ends with its last frame, which lasts one frame
                // interval where its own duration is unknown or spans the gap (an MP4's);
                // the next starts here.
                let frame = self.frame_ticks_estimate(&self.pending);
                let jump = self.jump_ticks();
                if let Some(last) = self.pending.last_mut()
                    && (last.duration <= 0 || last.duration > jump)
                {
                    last.duration = frame;
                }
                let closed = self.close(None)?;
                self.gap_before =
                    Some((closed.metadata.start_pts).saturating_add(closed.metadata.duration_ts));
                self.start_after_gap(packet);
                return Ok(Some(closed));
            }
            // Frames after it need the ones before: the gap stays inside the chunk.
            self.gap_inside = self.gap_inside.saturating_add(missing);
        } else if self.pending.last().is_some_and(|last| {
            packet.dts <= last.dts || packet.dts.saturating_sub(last.dts) > self.jump_ticks()
        }) {
            // A DTS that goes backwards is a timestamp reset (encoder restart, stream
            // restart), and so is a jump too far forward to be a gap, or (live) one past the
            // present: close the chunk in progress as it is and start again at the next
            // keyframe.
            let last_dts = self.pending.last().map_or(0, |p| p.dts);
            tracing::warn!(
                source = %self.config.source_id,
                from = last_dts,
                to = packet.dts,
                "timestamps jumped (stream restarted): closing the chunk, next chunk flagged as a discontinuity"
            );
            let closed = self.close(None)?;
            self.awaiting_keyframe_after_reset = true;
            // The next chunk's wall time starts where this one's ends: a wall-clock grid
            // goes on from there.
            let end = (closed.metadata.start_pts).saturating_add(closed.metadata.duration_ts);
            self.realign_ticks = self.ticks_to_grid_line(end);
            let resume_at = self.wall_time(end);
            if let Some(live) = self.live.as_mut() {
                live.resume_at = resume_at.or(Some(live.present));
            }
            // The boundaries count again from the first frame after the reset (exact cuts),
            // and the grid is placed again from it.
            self.grid_next = None;
            if packet.keyframe {
                self.start_after_reset(packet);
            } else {
                self.skipped_before_keyframe += 1;
            }
            return Ok(Some(closed));
        }
        if self.awaiting_keyframe_after_reset {
            if packet.keyframe {
                self.start_after_reset(packet);
            } else {
                self.skipped_before_keyframe += 1;
            }
            return Ok(None);
        }
        if self.pending.is_empty() && !packet.keyframe {
            self.skipped_before_keyframe += 1;
            if self.skipped_before_keyframe == 1 {
                tracing::debug!(source = %self.config.source_id, "dropping frames before the first keyframe");
            }
            return Ok(None);
        }
        if self.codec.is_none() && packet.keyframe {
            // No extradata: parameter sets travel in-band (Annex B) with the keyframe.
            self.codec = Some(TrackCodec::from_annexb(&self.info.codec, &packet.data)?);
        }
        // New parameter sets from this keyframe on: the chunk in progress cannot hold it.
        let switching = packet.keyframe && self.next_stream.is_some();
        if self.config.exact_cuts {
            if switching && !self.pending.is_empty() {
                return self.cut_exact_for_new_stream(packet);
            }
            return self.push_exact(packet);
        }
        let closes = packet.keyframe
            && !self.pending.is_empty()
            && match (self.config.cut_at_every_keyframe, self.grid_next) {
                _ if switching => true,
                (true, _) => true,
                (false, Some(grid)) => packet.pts >= grid,
                // Shown times: an open GOP's keyframes sit at varying distances from their
                // decode times.
                (false, None) => {
                    let from = (self.shown_from)
                        .or(self.first_shown_pts)
                        .unwrap_or(self.pending[0].pts);
                    packet.pts.saturating_sub(from) >= self.target_ticks
                }
            };
        if let Some(offset) = self
            .config
            .align_offset_ms
            .filter(|_| self.grid_next.is_none() && !packet.discard)
        {
            // The grid is anchored on the first frame shown: its wall time is the clock
            // origin.
            let first = packet.pts + self.info.time_base.millis_to_ticks(offset as i64);
            self.grid_next = Some(if offset == 0 {
                first + self.target_ticks
            } else {
                first
            });
        }
        if closes && let Some(grid) = self.grid_next.as_mut() {
            while *grid <= packet.pts {
                *grid += self.target_ticks;
            }
        }
        let chunk = if closes {
            let closed = self.close(Some((packet.dts, packet.pts)))?;
            // The next chunk is shown from its keyframe on, where this one ends. Frames after
            // it that are shown before it (an open GOP's leading pictures) need the previous
            // GOP to decode: hidden rather than shown broken, or the chunks would overlap.
            self.shown_from = Some(packet.pts);
            Some(closed)
        } else {
            None
        };
        self.warn_open_gop(&packet);
        self.hold(packet);
        Ok(chunk)
    }

    fn finish(&mut self) -> Result<Option<Chunk>, ChunkerError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        self.close(None).map(Some)
    }
}

/// Exposed for tests: the time base the chunker keeps.
impl CopyChunker {
    /// The stream's time base (also the chunks' MP4 timescale denominator).
    pub fn time_base(&self) -> Rational {
        self.info.time_base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn info() -> StreamInfo {
        StreamInfo {
            codec: crispy_core::Codec::H264,
            profile: None,
            width: 64,
            height: 64,
            time_base: Rational::new(1, 90_000),
            frame_rate: Some(Rational::new(25, 1)),
            extradata: Bytes::from_static(&[
                1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68,
            ]),
            duration: None,
            frame_count: None,
        }
    }

    fn packet(dts: i64, keyframe: bool) -> EncodedPacket {
        EncodedPacket {
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            pts: dts,
            dts,
            duration: 3600,
            keyframe,
            discard: false,
        }
    }

    fn chunker(target: &str) -> CopyChunker {
        let id = SourceId::new("t").expect("id");
        CopyChunker::new(
            &info(),
            CopyChunkerConfig::new(id, target.parse().expect("duration")),
        )
        .expect("chunker")
    }

    fn exact(target: &str) -> CopyChunker {
        let id = SourceId::new("t").expect("id");
        let mut config = CopyChunkerConfig::new(id, target.parse().expect("duration"));
        config.exact_cuts = true;
        CopyChunker::new(&info(), config).expect("chunker")
    }

    /// (start PTS, duration, frames shown, samples, edit's media time) of each chunk.
    fn exact_facts(out: &[Chunk]) -> Vec<(i64, i64, u64, u32, u64)> {
        out.iter()
            .map(|c| {
                let bytes = c.payload.to_bytes();
                let mp4 =
                    mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64)
                        .expect("mp4");
                let track = mp4.tracks().values().next().expect("track");
                let elst = track.trak.edts.as_ref().and_then(|e| e.elst.as_ref());
                let edit = elst.expect("elst").entries[0].clone();
                assert_eq!(
                    edit.segment_duration, c.metadata.duration_ts as u64,
                    "the edit shows what the manifest says"
                );
                let m = &c.metadata;
                (
                    m.start_pts,
                    m.duration_ts,
                    m.frame_count,
                    track.sample_count(),
                    edit.media_time,
                )
            })
            .collect()
    }

    #[test]
    fn exact_cuts_fall_on_frames_between_keyframes() {
        // 25 fps, a keyframe every 2 s, chunks of 1 s: every other chunk starts mid-GOP and
        // carries the 25 frames from the keyframe before it, hidden.
        let mut c = exact("1s");
        let mut out = Vec::new();
        for i in 0..110 {
            out.extend(c.push(packet(i * 3600, i % 50 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        assert_eq!(
            exact_facts(&out),
            [
                (0, 90_000, 25, 25, 0),
                (90_000, 90_000, 25, 50, 90_000),
                (180_000, 90_000, 25, 25, 0),
                (270_000, 90_000, 25, 50, 90_000),
                (360_000, 36_000, 10, 10, 0),
            ]
        );
        assert!(out.iter().all(|c| c.metadata.keyframe_aligned));
    }

    #[test]
    fn exact_cuts_with_b_frames_show_every_frame_once() {
        // Presentation order I B B P B B P …, decoded as I P B B P B B …; a keyframe every
        // 12 frames; 40 ms frames; chunks of 200 ms (5 frames): boundaries fall on B-frames.
        let tick = 3600;
        let mut packets = Vec::new();
        for gop in 0..5 {
            let base = gop * 12;
            packets.push((base, true));
            for j in (0..12).step_by(3).skip(1).chain(std::iter::once(12)) {
                let p = (base + j).min(base + 11);
                if packets.iter().any(|(q, _)| *q == p) {
                    continue;
                }
                packets.push((p, false));
                for b in (base + j - 2)..(base + j).min(base + 11) {
                    if !packets.iter().any(|(q, _)| *q == b) {
                        packets.push((b, false));
                    }
                }
            }
        }
        let n = packets.len() as i64;
        assert_eq!(n, 60);
        let mut c = exact("200ms");
        let mut out = Vec::new();
        for (i, (pts, key)) in packets.iter().enumerate() {
            let p = EncodedPacket {
                pts: pts * tick,
                dts: (i as i64 - 2) * tick,
                ..packet(0, *key)
            };
            out.extend(c.push(p).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let facts = exact_facts(&out);
        assert_eq!(facts.len(), 12, "{facts:?}");
        let mut next = 0;
        for (start, duration, frames, _, _) in &facts {
            assert_eq!(
                (*start, *duration, *frames),
                (next, 5 * tick, 5),
                "{facts:?}"
            );
            next += duration;
        }
        assert_eq!(next, n * tick, "every frame shown once");
    }

    #[test]
    fn exact_cuts_count_again_from_the_first_frame_after_a_reset() {
        let mut c = exact("1s");
        let mut out = Vec::new();
        for i in 0..30 {
            out.extend(c.push(packet(i * 3600, i % 50 == 0)).expect("push"));
        }
        // The encoder restarts: timestamps from 0 again, a keyframe every 2 s.
        for i in 0..60 {
            out.extend(c.push(packet(i * 3600, i % 50 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let facts: Vec<_> = out
            .iter()
            .map(|c| {
                (
                    c.metadata.start_pts,
                    c.metadata.duration_ts,
                    c.metadata.frame_count,
                )
            })
            .collect();
        assert_eq!(
            facts,
            [
                (0, 90_000, 25),
                (90_000, 18_000, 5),
                (0, 90_000, 25),
                (90_000, 90_000, 25),
                (180_000, 36_000, 10),
            ]
        );
        assert!(out[2].metadata.discontinuity);
    }

    /// Feeds `frames` 25 fps frames with a keyframe every `gop`, the first 10 hidden by the
    /// source's edit list (a trimmed file's lead-in), then finishes.
    fn feed_trimmed(c: &mut CopyChunker, frames: i64, gop: i64) -> Vec<Chunk> {
        let mut out = Vec::new();
        for i in 0..frames {
            let mut p = packet(i * 3600, i % gop == 0);
            p.discard = i < 10;
            out.extend(c.push(p).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        out
    }

    #[test]
    fn exact_cuts_start_at_a_trimmed_files_first_frame_shown() {
        let mut c = exact("1s");
        let out = feed_trimmed(&mut c, 60, 50);
        assert_eq!(
            exact_facts(&out),
            [
                (36_000, 90_000, 25, 35, 36_000),
                // From the keyframe at 0 again: 35 frames hidden.
                (126_000, 90_000, 25, 60, 126_000),
            ]
        );
    }

    #[test]
    fn a_trimmed_files_lead_in_is_hidden_and_not_counted() {
        // Keyframes every 25 frames (1 s); the source's edit list starts at frame 10.
        let mut c = chunker("1s");
        let out = feed_trimmed(&mut c, 100, 25);
        let m: Vec<_> = out.iter().map(|c| &c.metadata).collect();
        // The first chunk runs 1 s from its first frame shown: to the keyframe at frame 50.
        let facts: Vec<_> = m
            .iter()
            .map(|m| (m.start_pts, m.duration_ts, m.frame_count))
            .collect();
        assert_eq!(
            facts,
            [
                (10 * 3600, 40 * 3600, 40),
                (50 * 3600, 25 * 3600, 25),
                (75 * 3600, 25 * 3600, 25)
            ]
        );
        // The chunk's edit list hides the lead-in: it starts 10 frames in and shows 40.
        let bytes = out[0].payload.to_bytes();
        let mp4 = mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64)
            .expect("mp4");
        let track = mp4.tracks().values().next().expect("track");
        let elst = track
            .trak
            .edts
            .as_ref()
            .and_then(|e| e.elst.as_ref())
            .expect("elst");
        assert_eq!(elst.entries.len(), 1);
        assert_eq!(
            (elst.entries[0].media_time, elst.entries[0].segment_duration),
            (10 * 3600, 40 * 3600)
        );
        assert_eq!(
            track.sample_count(),
            50,
            "the lead-in is still there to decode"
        );
        assert_eq!(mp4.moov.mvhd.duration, 40 * 3600);
    }

    #[test]
    fn a_timestamp_reset_closes_the_chunk_and_flags_the_next() {
        let mut c = chunker("1s");
        let mut out = Vec::new();
        // 10 frames, then the source restarts at 0 with a keyframe, then 30 more frames.
        for i in 0..10 {
            out.extend(c.push(packet(i * 3600, i == 0)).expect("push"));
        }
        for i in 0..30 {
            out.extend(c.push(packet(i * 3600, i % 25 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let m: Vec<_> = out.iter().map(|c| &c.metadata).collect();
        assert_eq!(m.len(), 3, "{m:#?}");
        assert_eq!(
            (m[0].frame_count, m[0].duration_ts, m[0].discontinuity),
            (10, 36_000, false)
        );
        assert_eq!(
            (m[1].frame_count, m[1].duration_ts, m[1].discontinuity),
            (25, 90_000, true)
        );
        assert_eq!((m[2].frame_count, m[2].discontinuity), (5, false));
        assert_eq!(
            m.iter().map(|m| m.sequence).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn a_restart_is_told_apart_from_a_gap_inside_its_chunk() {
        // A restart, then 2 s of frames missing inside the chunk after it (the frame after
        // them is no keyframe): that chunk is flagged as after a restart, with the gap, so
        // that its wall time still goes on from the previous chunk's end.
        let mut c = chunker("1s");
        let mut out = Vec::new();
        for i in 0..10 {
            out.extend(c.push(packet(i * 3600, i == 0)).expect("push"));
        }
        for i in (0..100).filter(|i| !(10..60).contains(i)) {
            out.extend(c.push(packet(i * 3600, i % 75 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let m: Vec<_> = out.iter().map(|c| &c.metadata).collect();
        assert_eq!(m.len(), 3, "{m:#?}");
        assert!(!m[0].timestamps_restarted && !m[0].discontinuity);
        assert!(m[1].timestamps_restarted && m[1].discontinuity);
        assert_eq!(m[1].gap_ms, Some(2000));
        assert!(!m[2].timestamps_restarted && !m[2].discontinuity);
    }

    /// Frames 0–29 and 170–299 of a 25 fps stream (5.6 s missing), keyframes every 25 frames
    /// and after the gap, each with `duration` ticks of its own, except the frame before the gap,
    /// which gets `before_gap` (an MP4 stores the time to the next frame there).
    fn holed(c: &mut CopyChunker, duration: i64, before_gap: i64) -> Vec<Chunk> {
        let mut out = Vec::new();
        for i in (0..300).filter(|i| !(30..170).contains(i)) {
            let mut p = packet(i * 3600, i % 25 == 0 || i == 170);
            p.duration = if i == 29 { before_gap } else { duration };
            out.extend(c.push(p).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        out
    }

    #[test]
    fn seconds_of_frames_missing_are_a_gap_whatever_the_chunk_length() {
        // 5.6 s missing: a gap with 3 s chunks as with 1 s ones (until 2026-11-25 only a step
        // of more than two chunk lengths was, so 3 s chunks took it in silently).
        for target in ["1s", "3s", "60s"] {
            let out = holed(&mut chunker(target), 3600, 3600);
            let gaps: Vec<_> = (out.iter().map(|c| &c.metadata))
                .filter(|m| m.discontinuity)
                .map(|m| m.gap_ms)
                .collect();
            assert_eq!(gaps, [Some(5600)], "{target}");
        }
    }

    #[test]
    fn the_frame_before_a_gap_lasts_one_frame_interval() {
        // Frames without durations (an encoder's output) in a stream whose average rate the
        // gap lowers to 18.75 fps, and an MP4's frame that lasts until the next: either way
        // the chunk before the gap ends one frame interval (40 ms) after its last frame.
        let slow = StreamInfo {
            frame_rate: Some(Rational::new(75, 4)),
            ..info()
        };
        for (duration, before_gap) in [(0, 0), (3600, 141 * 3600)] {
            let config =
                CopyChunkerConfig::new(SourceId::new("t").expect("id"), "1s".parse().expect("d"));
            let mut c = CopyChunker::new(&slow, config).expect("chunker");
            let out = holed(&mut c, duration, before_gap);
            let spans: Vec<_> = (out.iter().map(|c| &c.metadata))
                .map(|m| (m.start_pts / 90, m.duration_ts / 90, m.gap_ms))
                .collect();
            assert_eq!(spans[1], (1000, 200, None), "{spans:?}");
            assert_eq!(spans[2], (6800, 1200, Some(5600)), "{spans:?}");
            let last = spans.last().expect("chunks");
            assert_eq!(last.0 + last.1, 12_000, "{spans:?}");
        }
    }

    #[test]
    fn a_forward_jump_is_a_discontinuity_too() {
        let mut c = chunker("1s");
        let mut out = Vec::new();
        for i in 0..10 {
            out.extend(c.push(packet(i * 3600, i == 0)).expect("push"));
        }
        // The encoder restarted with a new timestamp base hours ahead.
        let base = 90_000 * 3600 * 5;
        for i in 0..10 {
            out.extend(c.push(packet(base + i * 3600, i == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].metadata.frame_count, out[0].metadata.duration_ts),
            (10, 36_000)
        );
        assert!(out[1].metadata.discontinuity);
        assert_eq!(out[1].metadata.duration_ms, 400);
    }

    /// 25 fps, a keyframe every second, 200 frames with `missing` left out; chunks of 1 s.
    fn with_gap(missing: std::ops::Range<i64>) -> Vec<Chunk> {
        let mut c = chunker("1s");
        let mut out = Vec::new();
        for i in (0..200).filter(|i| !missing.contains(i)) {
            out.extend(c.push(packet(i * 3600, i % 25 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        out
    }

    #[test]
    fn a_gap_between_keyframes_stays_inside_its_chunk() {
        // 2.4 s missing; the frame after the gap is not a keyframe: it needs the frames
        // before, so it stays in their chunk, which lasts the gap too.
        let out = with_gap(60..120);
        let m: Vec<_> = out.iter().map(|c| &c.metadata).collect();
        assert_eq!(
            m.iter().map(|m| m.frame_count).sum::<u64>(),
            140,
            "nothing dropped"
        );
        for pair in m.windows(2) {
            assert_eq!(pair[0].start_pts + pair[0].duration_ts, pair[1].start_pts);
        }
        let flagged: Vec<_> = m.iter().filter(|m| m.discontinuity).collect();
        assert_eq!(flagged.len(), 1, "{m:#?}");
        assert_eq!(flagged[0].gap_ms, Some(2400));
        assert_eq!(flagged[0].start_pts, 50 * 3600);
        assert_eq!(flagged[0].duration_ts, 75 * 3600);
        assert_eq!(flagged[0].frame_count, 15);
    }

    #[test]
    fn a_gap_before_a_keyframe_ends_the_chunk_and_is_recorded() {
        let out = with_gap(60..125);
        let m: Vec<_> = out.iter().map(|c| &c.metadata).collect();
        assert_eq!(
            m.iter().map(|m| m.frame_count).sum::<u64>(),
            135,
            "nothing dropped"
        );
        let at = m.iter().position(|m| m.discontinuity).expect("flagged");
        assert_eq!(m.iter().filter(|m| m.discontinuity).count(), 1);
        // The chunk before ends with its last frame; the next starts at the keyframe, on the
        // same media clock (no restart: its wall time follows its timestamps).
        assert_eq!(
            (
                m[at - 1].start_pts,
                m[at - 1].duration_ts,
                m[at - 1].frame_count
            ),
            (50 * 3600, 10 * 3600, 10)
        );
        assert_eq!((m[at].start_pts, m[at].gap_ms), (125 * 3600, Some(2600)));
        assert_eq!(m[at].frame_count, 25);
    }

    /// An open-GOP stream, 12 frames per GOP, decoded I B B P B B P B B P B B: each GOP's
    /// first two B-frames are shown before its keyframe (leading pictures that need the GOP
    /// before), the stream starting at such a keyframe. (decode index, PTS in frames, key).
    fn open_gop(gops: i64) -> Vec<EncodedPacket> {
        let order = [2, 0, 1, 5, 3, 4, 8, 6, 7, 11, 9, 10];
        (0..gops * 12)
            .map(|i| {
                let pts = (i / 12) * 12 + order[(i % 12) as usize];
                EncodedPacket {
                    pts: pts * 3600,
                    dts: (i - 2) * 3600,
                    ..packet(0, i % 12 == 0)
                }
            })
            .collect()
    }

    #[test]
    fn an_open_gops_leading_pictures_are_not_shown_at_the_start() {
        let mut c = chunker("480ms");
        let mut out = Vec::new();
        for p in open_gop(4) {
            out.extend(c.push(p).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let m: Vec<_> = out.iter().map(|c| &c.metadata).collect();
        assert_eq!(m.len(), 4, "{m:#?}");
        // Shown from each keyframe (PTS 2 frames into its GOP) for 12 frames; the leading
        // pictures are hidden, at the first chunk as at the others.
        for (g, m) in m.iter().enumerate() {
            let g = g as i64;
            assert_eq!(m.start_pts, (g * 12 + 2) * 3600, "{m:#?}");
            assert_eq!(m.frame_count, 10, "{m:#?}");
        }
        assert_eq!(m[0].duration_ts, 12 * 3600);
    }

    #[test]
    fn exact_cuts_on_an_open_gops_leading_picture_start_at_the_gop_before() {
        // Chunks of 11 frames from the first keyframe shown (PTS 2): boundaries at 13, 24,
        // 35, …, the first two on leading pictures of the GOPs at 14 and 26.
        let mut c = exact("440ms");
        let mut out = Vec::new();
        let packets = open_gop(4);
        for p in packets.iter().cloned() {
            out.extend(c.push(p).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let facts = exact_facts(&out);
        let mut next = 2 * 3600;
        for (start, duration, frames, _, media_time) in &facts {
            assert_eq!(*start, next, "{facts:?}");
            assert_eq!(*frames as i64 * 3600, *duration, "{facts:?}");
            next += duration;
            // The chunk's first frame decoded: a keyframe shown at or before its start.
            let first_dts = start - *media_time as i64;
            let first = packets.iter().find(|p| p.dts == first_dts).expect("first");
            assert!(first.keyframe && first.pts <= *start, "{facts:?}");
        }
        assert_eq!(
            next,
            48 * 3600,
            "every frame after the first keyframe shown once"
        );
    }

    #[test]
    fn a_keyframe_shown_on_the_boundary_closes_the_chunk() {
        // Keyframes shown every second (25 frames), each after three leading pictures of the
        // second before: the keyframes' decode times run ahead of their shown times by more
        // than the first one's, so their decode times are less than 1 s apart from the
        // first's. Chunks are cut by shown time: 1 s each.
        let mut packets: Vec<(i64, bool)> = (0..22).map(|p| (p, p == 0)).collect();
        for g in 1..4 {
            packets.push((25 * g, true));
            packets.extend((25 * g - 3..25 * g).map(|p| (p, false)));
            packets.extend((25 * g + 1..25 * g + 22).map(|p| (p, false)));
        }
        let mut c = chunker("1s");
        let mut out = Vec::new();
        for (i, (pts, key)) in packets.into_iter().enumerate() {
            let p = EncodedPacket {
                pts: pts * 3600,
                dts: (i as i64 - 3) * 3600,
                ..packet(0, key)
            };
            out.extend(c.push(p).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let m: Vec<_> = out.iter().map(|c| &c.metadata).collect();
        assert_eq!(m.len(), 4, "{m:#?}");
        for (g, m) in m.iter().enumerate() {
            // (The last one ends with its last frame, 22 frames on.)
            let frames = if g == 3 { 22 } else { 25 };
            assert_eq!(m.start_pts, 25 * g as i64 * 3600, "{m:#?}");
            assert_eq!(m.duration_ts, frames * 3600, "{m:#?}");
        }
    }

    #[test]
    fn aligned_chunks_close_at_the_first_keyframe_after_each_grid_line() {
        // 1 s chunks, keyframes every 10 frames (400 ms), the first grid line 700 ms in.
        let id = SourceId::new("t").expect("id");
        let mut config = CopyChunkerConfig::new(id, "1s".parse().expect("d"));
        config.align_offset_ms = Some(700);
        let mut c = CopyChunker::new(&info(), config).expect("chunker");
        let mut out = Vec::new();
        for i in 0..75 {
            out.extend(c.push(packet(i * 3600, i % 10 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        // Grid lines at 700, 1700, 2700 ms: keyframes at 800, 2000, 2800 ms.
        let starts: Vec<i64> = out.iter().map(|c| c.metadata.start_pts / 90).collect();
        assert_eq!(starts, vec![0, 800, 2000, 2800]);
        assert!(out.iter().all(|c| c.metadata.aligned));
    }

    fn aligned(target: &str, offset_ms: u64, exact_cuts: bool) -> CopyChunker {
        let id = SourceId::new("t").expect("id");
        let mut config = CopyChunkerConfig::new(id, target.parse().expect("d"));
        config.align_offset_ms = Some(offset_ms);
        config.exact_cuts = exact_cuts;
        CopyChunker::new(&info(), config).expect("chunker")
    }

    /// (start, duration) of each chunk in ms, and whether it is flagged as a discontinuity.
    fn spans_ms(out: &[Chunk]) -> Vec<(i64, i64, bool)> {
        (out.iter().map(|c| &c.metadata))
            .map(|m| (m.start_pts / 90, m.duration_ts / 90, m.discontinuity))
            .collect()
    }

    /// Feeds 25 fps frames with a keyframe every `gop`: `before` of them, then `after` with
    /// the timestamps from 0 again (a restart); then finishes.
    fn restarted(c: &mut CopyChunker, before: i64, after: i64, gop: i64) -> Vec<Chunk> {
        let mut out = Vec::new();
        for i in (0..before).chain(0..after) {
            out.extend(c.push(packet(i * 3600, i % gop == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        out
    }

    #[test]
    fn aligned_chunks_keep_to_the_grid_after_a_reset() {
        // 1 s chunks, keyframes every 400 ms, the first grid line 700 ms in. The source
        // restarts at 0 after 1200 ms: the chunk after the reset starts where the chunk
        // before ended (1200 ms on the wall), so the next grid line is 500 ms into it.
        let out = restarted(&mut aligned("1s", 700, false), 30, 75, 10);
        // Before: grid lines at 700 ms (keyframe 800). After: at 500, 1500, 2500 ms (wall
        // 1700, 2700, 3700), keyframes at 800, 1600, 2800 ms.
        assert_eq!(
            spans_ms(&out),
            [
                (0, 800, false),
                (800, 400, false),
                (0, 800, true),
                (800, 800, false),
                (1600, 1200, false),
                (2800, 200, false),
            ]
        );
    }

    #[test]
    fn a_reset_far_back_does_not_leave_the_rest_in_one_chunk() {
        // A file joined to another by `cat`: 20 s, then timestamps from 0 again. The grid
        // stood near 20 s; it must start again from the reset.
        let out = restarted(&mut aligned("2s", 0, false), 500, 250, 25);
        let spans = spans_ms(&out);
        assert_eq!(spans.len(), 15, "{spans:?}");
        assert!(spans.iter().all(|(_, d, _)| *d == 2000), "{spans:?}");
        assert_eq!(spans[10], (0, 2000, true));
    }

    #[test]
    fn exact_aligned_cuts_keep_to_the_grid_after_a_reset() {
        // 1 s chunks cut exactly, grid lines at 320 ms + whole seconds (wall); the source
        // restarts at 0 after 1400 ms: the chunk after the reset starts at 1400 ms on the
        // wall, so the next grid line (2320 ms) is 920 ms into it.
        let out = restarted(&mut aligned("1s", 320, true), 35, 75, 25);
        assert_eq!(
            spans_ms(&out),
            [
                (0, 320, false),
                (320, 1000, false),
                (1320, 80, false),
                (0, 920, true),
                (920, 1000, false),
                (1920, 1000, false),
                (2920, 80, false),
            ]
        );
    }

    #[test]
    fn exact_aligned_cuts_keep_to_the_grid_after_a_gap() {
        // 1 s chunks cut exactly, grid lines at 320 ms + whole seconds; 2.8 s of frames
        // missing before the keyframe at 4400 ms: the next grid line is still at 5320 ms.
        let mut c = aligned("1s", 320, true);
        let mut out = Vec::new();
        for i in (0..150).filter(|i| !(40..110).contains(i)) {
            out.extend(c.push(packet(i * 3600, i % 10 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        let spans = spans_ms(&out);
        let after = spans.iter().position(|s| s.0 == 4400).expect("{spans:?}");
        assert_eq!(
            spans[after..],
            [(4400, 920, true), (5320, 680, false)],
            "{spans:?}"
        );
    }

    /// Feeds a live source's 25 fps frames, a keyframe every 10, each pushed with the time
    /// it arrived. `steps` lists where the timestamps jump: from frame `i` on, ahead by
    /// `pts_ms`, arriving `late_ms` later than the frames before would have (`late_ms` 0:
    /// the camera's clock jumped; equal to `pts_ms`: it sent nothing meanwhile).
    fn live_with_jumps(c: &mut CopyChunker, frames: i64, steps: &[(i64, i64, i64)]) -> Vec<Chunk> {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let mut out = Vec::new();
        for i in 0..frames {
            let (pts_ms, late_ms) = (steps.iter())
                .filter(|(from, ..)| *from <= i)
                .fold((0, 0), |(p, l), (_, dp, dl)| (p + dp, l + dl));
            c.set_present(t0 + chrono::Duration::milliseconds(i * 40 + late_ms));
            let p = packet(i * 3600 + pts_ms * 90, i % 10 == 0);
            out.extend(c.push(p).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        out
    }

    /// An hour and 370 ms.
    const JUMP_MS: i64 = 3_600_370;

    #[test]
    fn live_timestamps_that_jump_past_the_present_restart_the_grid_like_a_reset() {
        // 1 s chunks, keyframes every 400 ms, the first grid line 700 ms in. After 1200 ms
        // the camera's timestamps jump an hour ahead while its frames keep arriving: the
        // pipeline's timeline continues from the previous end (1200 ms on the wall), so the
        // grid lines fall 500, 1500 and 2500 ms after the jump, as after a reset.
        let mut c = aligned("1s", 700, false);
        let out = live_with_jumps(&mut c, 75, &[(30, JUMP_MS, 0)]);
        assert_eq!(
            spans_ms(&out),
            [
                (0, 800, false),
                (800, 400, false),
                (JUMP_MS + 1200, 800, true),
                (JUMP_MS + 2000, 800, false),
                (JUMP_MS + 2800, 200, false),
            ]
        );
        assert!(out[2].metadata.timestamps_restarted);
        assert!(!out[3].metadata.timestamps_restarted);
    }

    #[test]
    fn a_live_camera_silent_for_a_while_leaves_a_gap_before_and_after_a_restart() {
        // The same hour missing, but the camera sent nothing meanwhile: a gap, and the grid
        // stays on the media clock (lines at 700 ms + whole seconds: the first keyframe
        // after the line at JUMP_MS + 1330 ms is at JUMP_MS + 1600 ms).
        let mut c = aligned("1s", 700, false);
        let out = live_with_jumps(&mut c, 75, &[(30, JUMP_MS, JUMP_MS)]);
        let spans = spans_ms(&out);
        assert_eq!(spans[2], (JUMP_MS + 1200, 400, true), "{spans:?}");
        assert!(!out[2].metadata.timestamps_restarted);
        // A jump past the present, then 5 s of silence: the clock restarted at the jump
        // still places the frames after the silence in the present, so they follow a gap.
        let mut c = chunker("1s");
        let out = live_with_jumps(&mut c, 100, &[(30, JUMP_MS, 0), (60, 5_000, 5_000)]);
        let flagged: Vec<(i64, bool)> = (out.iter().map(|c| &c.metadata))
            .filter(|m| m.discontinuity)
            .map(|m| (m.start_pts / 90, m.timestamps_restarted))
            .collect();
        assert_eq!(
            flagged,
            [(JUMP_MS + 1200, true), (JUMP_MS + 5000 + 2400, false)]
        );
        // A camera that sends a frame every 2.5 s on a still scene, with 3 s chunks: frame
        // steps, not gaps (files: more than 2 s is a gap).
        let mut c = chunker("3s");
        let out = live_with_jumps(&mut c, 40, &[(20, 2_500, 2_500)]);
        assert!(out.iter().all(|c| !c.metadata.discontinuity));
        // A jump past the present before a frame that is no keyframe: nothing is dropped
        // (its frames need the ones before), the chunk holds a gap.
        let mut c = chunker("1s");
        let out = live_with_jumps(&mut c, 75, &[(35, JUMP_MS, 0)]);
        let frames: u64 = out.iter().map(|c| c.metadata.frame_count).sum();
        assert_eq!(frames, 75);
        assert!(out.iter().any(|c| c.metadata.gap_ms.is_some()));
    }

    /// A stream like [`info`]'s at 128x96, with another SPS (level 3.1).
    fn bigger() -> StreamInfo {
        StreamInfo {
            width: 128,
            height: 96,
            extradata: Bytes::from_static(&[
                1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68,
            ]),
            ..info()
        }
    }

    /// (start ms, duration ms, width, the avcC's level) of each chunk.
    fn streams(out: &[Chunk]) -> Vec<(i64, i64, u32, u8)> {
        out.iter()
            .map(|c| {
                let bytes = c.payload.to_bytes();
                let mp4 =
                    mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64)
                        .expect("mp4");
                let track = mp4.tracks().values().next().expect("track");
                let avc1 = track.trak.mdia.minf.stbl.stsd.avc1.as_ref().expect("avc1");
                assert_eq!(u32::from(avc1.width), c.metadata.width);
                let m = &c.metadata;
                (
                    m.start_pts / 90,
                    m.duration_ts / 90,
                    m.width,
                    avc1.avcc.avc_level_indication,
                )
            })
            .collect()
    }

    #[test]
    fn new_parameter_sets_start_a_chunk_at_their_keyframe() {
        // 3 s chunks, a keyframe every second; the size changes at the keyframe at 2 s.
        let mut c = chunker("3s");
        let mut out = Vec::new();
        for i in 0..150 {
            if i == 50 {
                c.change_stream(&bigger()).expect("change");
            }
            out.extend(c.push(packet(i * 3600, i % 25 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        assert_eq!(
            streams(&out),
            [
                (0, 2000, 64, 0x1e),
                (2000, 3000, 128, 0x1f),
                (5000, 1000, 128, 0x1f)
            ]
        );
        assert!(out.iter().all(|c| !c.metadata.discontinuity));
    }

    #[test]
    fn exact_cuts_close_at_new_parameter_sets_and_keep_their_boundaries() {
        // 2 s chunks cut exactly, a keyframe every second; the size changes at 3 s.
        let mut c = exact("2s");
        let mut out = Vec::new();
        for i in 0..150 {
            if i == 75 {
                c.change_stream(&bigger()).expect("change");
            }
            out.extend(c.push(packet(i * 3600, i % 25 == 0)).expect("push"));
        }
        out.extend(c.finish().expect("finish"));
        assert_eq!(
            streams(&out),
            [
                (0, 2000, 64, 0x1e),
                (2000, 1000, 64, 0x1e),
                (3000, 1000, 128, 0x1f),
                (4000, 2000, 128, 0x1f)
            ]
        );
    }

    #[test]
    fn after_a_reset_frames_wait_for_a_keyframe() {
        let mut c = chunker("1s");
        let mut out = Vec::new();
        for i in 0..5 {
            out.extend(c.push(packet(1_000_000 + i * 3600, i == 0)).expect("push"));
        }
        // Restart without a keyframe: 3 frames cannot be decoded and are dropped.
        for i in 0..3 {
            out.extend(c.push(packet(i * 3600, false)).expect("push"));
        }
        out.extend(c.push(packet(3 * 3600, true)).expect("push"));
        out.extend(c.finish().expect("finish"));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].metadata.frame_count, 5);
        assert_eq!(out[1].metadata.frame_count, 1);
        assert!(out[1].metadata.discontinuity);
        assert_eq!(c.skipped_before_keyframe(), 3);
    }
}
