use crispy_core::{EncodedPacket, Rational};
use serde::Serialize;

/// Accumulates facts about a packet stream while it is read.
#[derive(Debug, Clone)]
pub struct StreamStats {
    time_base: Rational,
    frames: u64,
    keyframes: u64,
    bytes: u64,
    first_dts: Option<i64>,
    last_dts: i64,
    last_duration: i64,
    frames_since_key: Option<u64>,
    gop_min: Option<u64>,
    gop_max: u64,
    /// Frames decoded but not shown (before an MP4 edit list's start).
    hidden: u64,
    min_pts: Option<i64>,
    min_shown_pts: Option<i64>,
    /// The end of the latest frame shown (its PTS plus its duration).
    shown_end: Option<i64>,
}

impl StreamStats {
    /// Empty statistics for a stream in `time_base`.
    pub fn new(time_base: Rational) -> Self {
        Self {
            time_base,
            frames: 0,
            keyframes: 0,
            bytes: 0,
            first_dts: None,
            last_dts: 0,
            last_duration: 0,
            frames_since_key: None,
            gop_min: None,
            gop_max: 0,
            hidden: 0,
            min_pts: None,
            min_shown_pts: None,
            shown_end: None,
        }
    }

    /// Records one packet (decode order).
    pub fn record(&mut self, p: &EncodedPacket) {
        self.frames += 1;
        self.min_pts = Some(self.min_pts.map_or(p.pts, |m| m.min(p.pts)));
        if p.discard {
            self.hidden += 1;
        } else {
            self.min_shown_pts = Some(self.min_shown_pts.map_or(p.pts, |m| m.min(p.pts)));
        }
        self.bytes += p.data.len() as u64;
        self.first_dts.get_or_insert(p.dts);
        if p.keyframe {
            self.keyframes += 1;
            if let Some(n) = self.frames_since_key {
                self.gop_min = Some(self.gop_min.map_or(n, |m| m.min(n)));
                self.gop_max = self.gop_max.max(n);
            }
            self.frames_since_key = Some(1);
        } else if let Some(n) = self.frames_since_key.as_mut() {
            *n += 1;
        }
        if self.frames > 1 && p.duration <= 0 {
            self.last_duration = p.dts - self.last_dts;
        } else if p.duration > 0 {
            self.last_duration = p.duration;
        }
        self.last_dts = p.dts;
        if !p.discard {
            let end = p.pts.saturating_add(self.last_duration);
            self.shown_end = Some(self.shown_end.map_or(end, |e| e.max(end)));
        }
    }

    /// Frames recorded.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames recorded as decoded but not shown: a file trimmed without re-encoding leads with
    /// the frames from the keyframe before its cut, which its edit list hides.
    pub fn hidden_frames(&self) -> u64 {
        self.hidden
    }

    /// Keyframes recorded.
    pub fn keyframes(&self) -> u64 {
        self.keyframes
    }

    /// Shortest and longest complete GOP in frames (keyframe to keyframe); `None` with fewer
    /// than two keyframes.
    pub fn gop_frames(&self) -> Option<(u64, u64)> {
        self.gop_min.map(|min| (min, self.gop_max))
    }

    /// Duration from the first frame's decode time to the end of the last frame, in ms; with
    /// frames an edit list hides, from the first frame shown to the end of the last one shown
    /// (by presentation time: with B-frames, the frames after the end may come earlier in
    /// decode order).
    pub fn duration_ms(&self) -> u64 {
        let Some(first) = self.first_dts else {
            return 0;
        };
        if self.hidden > 0 {
            let ticks = match (self.min_shown_pts, self.shown_end) {
                (Some(start), Some(end)) => end.saturating_sub(start),
                _ => 0,
            };
            return self.time_base.ticks_to_millis(ticks).max(0) as u64;
        }
        let lead_in = match (self.min_pts, self.min_shown_pts) {
            (Some(all), Some(shown)) => shown - all,
            _ => 0,
        };
        let ticks = self.last_dts + self.last_duration - first - lead_in;
        self.time_base.ticks_to_millis(ticks).max(0) as u64
    }

    /// A report for display.
    pub fn report(
        &self,
        codec: &str,
        profile: Option<&str>,
        size: (u32, u32),
        fps: Option<f64>,
    ) -> ProbeReport {
        let duration_ms = self.duration_ms();
        let gop = self.gop_frames();
        ProbeReport {
            codec: codec.to_owned(),
            profile: profile.map(str::to_owned),
            width: size.0,
            height: size.1,
            fps: fps.map(|f| (f * 1000.0).round() / 1000.0),
            duration_ms,
            frames: self.frames - self.hidden,
            hidden_frames: self.hidden,
            keyframes: self.keyframes,
            gop_min_frames: gop.map(|g| g.0),
            gop_max_frames: gop.map(|g| g.1),
            gop_ms: gop
                .and(fps)
                .map(|f| (gop.map_or(0, |g| g.1) as f64 * 1000.0 / f).round() as u64),
            bitrate_kbps: (duration_ms > 0).then(|| self.bytes * 8 / duration_ms),
        }
    }
}

/// What `crispy probe` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// Codec name.
    pub codec: String,
    /// Codec profile.
    pub profile: Option<String>,
    /// Width in pixels (from the parameter sets where possible).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Nominal frame rate.
    pub fps: Option<f64>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Video frames shown.
    pub frames: u64,
    /// Frames decoded but not shown (a trimmed file's lead-in, hidden by its edit list).
    #[serde(skip_serializing_if = "is_zero")]
    pub hidden_frames: u64,
    /// Keyframes.
    pub keyframes: u64,
    /// Shortest complete GOP, frames.
    pub gop_min_frames: Option<u64>,
    /// Longest complete GOP, frames.
    pub gop_max_frames: Option<u64>,
    /// Longest GOP in milliseconds at the nominal frame rate.
    pub gop_ms: Option<u64>,
    /// Average video bitrate.
    pub bitrate_kbps: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
