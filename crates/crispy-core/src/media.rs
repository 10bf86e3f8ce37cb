use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{ChunkMetadata, Payload};

/// A rational number, used for time bases (`1/90000`) and frame rates (`30000/1001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rational {
    /// Numerator.
    pub num: i32,
    /// Denominator.
    pub den: i32,
}

impl Rational {
    /// `num/den`.
    pub const fn new(num: i32, den: i32) -> Self {
        Self { num, den }
    }

    /// The value as `f64`; `0.0` when the denominator is zero.
    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }

    /// True when both parts are positive.
    pub fn is_positive(self) -> bool {
        self.num > 0 && self.den > 0
    }

    /// Converts `ticks` of this time base to whole milliseconds, rounding to nearest.
    pub fn ticks_to_millis(self, ticks: i64) -> i64 {
        let num = i128::from(ticks) * i128::from(self.num) * 1000;
        let den = i128::from(self.den.max(1));
        // Round half away from zero.
        let q = (num.abs() + den / 2) / den;
        (if num < 0 { -q } else { q }) as i64
    }

    /// Converts milliseconds to ticks of this time base, rounding to nearest.
    pub fn millis_to_ticks(self, ms: i64) -> i64 {
        let num = i128::from(ms) * i128::from(self.den);
        let den = i128::from(self.num.max(1)) * 1000;
        let q = (num.abs() + den / 2) / den;
        (if num < 0 { -q } else { q }) as i64
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl Serialize for Rational {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rational {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = s
            .split_once('/')
            .and_then(|(n, d)| Some(Self::new(n.parse().ok()?, d.parse().ok()?)));
        parsed.ok_or_else(|| serde::de::Error::custom(format!("expected num/den, got {s:?}")))
    }
}

/// A video codec as seen by crispy-streamer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
    /// Anything else, by FFmpeg's codec name.
    Other(String),
}

impl Codec {
    /// Short lowercase name as ffprobe prints it (`h264`, `hevc`, ...).
    pub fn name(&self) -> &str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "hevc",
            Codec::Other(name) => name,
        }
    }
}

/// How far a player turns the picture counterclockwise to show it, in whole degrees from 0
/// to 359, from a display matrix as FFmpeg and MP4 store it (16.16 fixed point, row-major):
/// the angle ffprobe prints as `rotation`, modulo 360. 0 for a matrix that turns nothing or
/// cannot be read (a zero scale).
pub fn display_rotation(matrix: &[i32; 9]) -> u16 {
    let fixed = |v: i32| f64::from(v) / 65536.0;
    let (a, b, c, d) = (
        fixed(matrix[0]),
        fixed(matrix[1]),
        fixed(matrix[3]),
        fixed(matrix[4]),
    );
    let (sx, sy) = (a.hypot(c), b.hypot(d));
    if sx == 0.0 || sy == 0.0 {
        return 0;
    }
    let degrees = -(b / sy).atan2(a / sx).to_degrees();
    // In range: atan2 is within ±180°.
    (degrees.round() as i64).rem_euclid(360) as u16
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a source knows about the video stream it delivers.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// The codec of the packets.
    pub codec: Codec,
    /// Codec profile name (e.g. `High`, `Main`), when known.
    pub profile: Option<String>,
    /// Coded width in pixels as the container or demuxer reports it.
    pub width: u32,
    /// Coded height in pixels as the container or demuxer reports it.
    pub height: u32,
    /// Time base of packet timestamps and durations.
    pub time_base: Rational,
    /// Nominal frame rate, when known.
    pub frame_rate: Option<Rational>,
    /// Codec extradata: an `avcC`/`hvcC` record, or Annex B parameter sets.
    pub extradata: Bytes,
    /// Stream duration in `time_base` ticks, when the container says.
    pub duration: Option<i64>,
    /// Number of frames, when the container says.
    pub frame_count: Option<u64>,
}

/// One compressed video frame (access unit) in decode order.
///
/// Timestamps are in the stream's [`StreamInfo::time_base`]. The payload is shared, not
/// copied, on its way from the demuxer to the chunk.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedPacket {
    /// The frame's bytes: length-prefixed NAL units (MP4 style) or Annex B.
    pub data: Bytes,
    /// Presentation timestamp.
    pub pts: i64,
    /// Decode timestamp.
    pub dts: i64,
    /// Duration in time-base ticks; 0 when unknown.
    pub duration: i64,
    /// True when decoding can start at this frame.
    pub keyframe: bool,
    /// Decoded, but never shown: a frame an MP4 edit list leaves out of the presentation.
    /// A file trimmed without re-encoding starts at the keyframe before its cut, and the
    /// frames up to the cut are only there to decode the first one shown.
    pub discard: bool,
}

impl fmt::Debug for EncodedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedPacket")
            .field("len", &self.data.len())
            .field("pts", &self.pts)
            .field("dts", &self.dts)
            .field("duration", &self.duration)
            .field("keyframe", &self.keyframe)
            .field("discard", &self.discard)
            .finish()
    }
}

/// A finished chunk: a standalone media file plus its metadata.
#[derive(Clone)]
pub struct Chunk {
    /// The encoded chunk (an MP4 file), in shared parts.
    pub payload: Payload,
    /// Everything known about it; completed stage by stage through the pipeline.
    pub metadata: ChunkMetadata,
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("payload_len", &self.payload.len())
            .field("metadata", &self.metadata)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_rotations_read_as_ffprobe_prints_them_modulo_360() {
        const ONE: i32 = 1 << 16;
        const W: i32 = 1 << 30;
        let turned = |a: i32, b: i32, c: i32, d: i32| [a, b, 0, c, d, 0, 0, 0, W];
        // `-metadata:s:v rotate=90` as FFmpeg 5.1 writes it; ffprobe prints 90.
        assert_eq!(display_rotation(&turned(0, -ONE, ONE, 0)), 90);
        assert_eq!(display_rotation(&turned(0, ONE, -ONE, 0)), 270);
        assert_eq!(display_rotation(&turned(-ONE, 0, 0, -ONE)), 180);
        assert_eq!(display_rotation(&turned(ONE, 0, 0, ONE)), 0);
        // Scaled.
        assert_eq!(display_rotation(&turned(0, -2 * ONE, 2 * ONE, 0)), 90);
        assert_eq!(display_rotation(&[0; 9]), 0);
        assert_eq!(display_rotation(&[i32::MIN; 9]), 135);
    }

    #[test]
    fn tick_conversions_round() {
        let tb = Rational::new(1, 15360);
        assert_eq!(tb.ticks_to_millis(15360 * 3), 3000);
        assert_eq!(tb.ticks_to_millis(512 * 90), 3000);
        assert_eq!(tb.ticks_to_millis(512), 33);
        assert_eq!(tb.millis_to_ticks(3000), 46080);
        let ntsc = Rational::new(1001, 30000);
        assert_eq!(ntsc.ticks_to_millis(30), 1001);
        assert_eq!(Rational::new(1, 90000).ticks_to_millis(-4500), -50);
    }

    #[test]
    fn rational_serde_round_trip() {
        let r = Rational::new(1001, 30000);
        let s = serde_json::to_string(&r).expect("serialize");
        assert_eq!(s, "\"1001/30000\"");
        assert_eq!(serde_json::from_str::<Rational>(&s).ok(), Some(r));
        assert!(serde_json::from_str::<Rational>("\"x\"").is_err());
    }
}
