//! Reading the best video stream of an open libavformat input; shared by every source.

use std::collections::VecDeque;

use crispy_core::{Codec, EncodedPacket, Rational, StreamInfo};
use ffmpeg_next as ffmpeg;
use ffmpeg_next::media::Type as MediaType;

use crate::ffi;

/// Why an input cannot be used.
pub(crate) enum SelectError {
    /// No video stream; the list of what was found.
    NoVideo(String),
    /// The video stream lacks a usable time base or size.
    BadStream(String),
}

/// Why a read failed.
pub(crate) enum ReadError {
    /// FFmpeg returned an error.
    Ffmpeg(ffmpeg::Error),
    /// FFmpeg flagged the packet as corrupt.
    Corrupt,
    /// A packet without any timestamp.
    NoTimestamp,
}

impl ReadError {
    pub(crate) fn describe(&self) -> String {
        match self {
            ReadError::Ffmpeg(e) => e.to_string(),
            ReadError::Corrupt => "FFmpeg flagged a packet as corrupt".to_owned(),
            ReadError::NoTimestamp => "a video packet has no timestamp".to_owned(),
        }
    }
}

/// An open input with its selected video stream.
pub(crate) struct Demuxer {
    pub(crate) input: ffmpeg::format::context::Input,
    stream_index: usize,
    pub(crate) info: StreamInfo,
    pub(crate) packets: u64,
    /// Leading packets without any timestamp that could not be kept.
    pub(crate) skipped_untimed: u64,
    last_dts: Option<i64>,
    /// Leading packets without timestamps, waiting for the first timed packet.
    held: Vec<EncodedPacket>,
    /// Packets ready to hand out (back-filled ones first).
    ready: VecDeque<EncodedPacket>,
    /// The input reported its end.
    eof: bool,
    /// Packets whose DTS had to be moved forward to keep DTS strictly increasing.
    pub(crate) nudged: u64,
}

/// Most untimed leading packets kept for back-filling.
const MAX_HELD: usize = 8;

impl Demuxer {
    /// Selects the best video stream of `input`.
    pub(crate) fn new(input: ffmpeg::format::context::Input) -> Result<Self, SelectError> {
        let Some(stream) = input.streams().best(MediaType::Video) else {
            let found: Vec<String> = input
                .streams()
                .map(|s| {
                    let p = s.parameters();
                    format!("{:?}({})", p.medium(), p.id().name()).to_lowercase()
                })
                .collect();
            return Err(SelectError::NoVideo(if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            }));
        };
        let stream_index = stream.index();
        let params = stream.parameters();
        let raw = ffi::raw_params(&params);
        let tb = stream.time_base();
        let time_base = Rational::new(tb.numerator(), tb.denominator());
        if !time_base.is_positive() {
            return Err(SelectError::BadStream(format!(
                "invalid time base {time_base}"
            )));
        }
        let (Ok(width), Ok(height)) = (u32::try_from(raw.width), u32::try_from(raw.height)) else {
            return Err(SelectError::BadStream(format!(
                "invalid dimensions {}x{}",
                raw.width, raw.height
            )));
        };
        let codec = match params.id() {
            ffmpeg::codec::Id::H264 => Codec::H264,
            ffmpeg::codec::Id::HEVC => Codec::H265,
            other => Codec::Other(other.name().to_owned()),
        };
        let frame_rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .map(|r| Rational::new(r.numerator(), r.denominator()))
            .find(|r| r.is_positive());
        let info = StreamInfo {
            codec,
            profile: raw.profile,
            width,
            height,
            time_base,
            frame_rate,
            extradata: raw.extradata,
            duration: Some(stream.duration()).filter(|d| *d > 0),
            frame_count: u64::try_from(stream.frames()).ok().filter(|n| *n > 0),
        };
        Ok(Self {
            input,
            stream_index,
            info,
            packets: 0,
            skipped_untimed: 0,
            last_dts: None,
            held: Vec::new(),
            ready: VecDeque::new(),
            eof: false,
            nudged: 0,
        })
    }

    /// The next video packet, `None` at the end.
    ///
    /// Packets without a DTS (RTP carries none) get one equal to their PTS, kept strictly
    /// increasing. Live demuxers hand out the first packet (often the keyframe) before RTP
    /// timing is known: such leading packets are held and given timestamps counted back from
    /// the first timed packet, one frame apart, so no GOP is lost at connect.
    pub(crate) fn read(&mut self) -> Result<Option<EncodedPacket>, ReadError> {
        loop {
            // While untimed packets are held, wait for a second timed packet to learn the step.
            if self.held.is_empty() {
                if let Some(p) = self.ready.pop_front() {
                    self.packets += 1;
                    self.last_dts = Some(p.dts);
                    return Ok(Some(p));
                }
                if self.eof {
                    return Ok(None);
                }
            } else if self.eof {
                let first = self.ready.front().map_or(0, |p| p.dts);
                let timed = std::mem::take(&mut self.ready);
                self.backfill(first, self.frame_ticks().unwrap_or(1));
                self.ready.extend(timed);
                continue;
            }
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => {
                    self.eof = true;
                    continue;
                }
                Err(e) => return Err(ReadError::Ffmpeg(e)),
            }
            if packet.stream() != self.stream_index {
                continue;
            }
            if packet.is_corrupt() {
                return Err(ReadError::Corrupt);
            }
            let stamps = (packet.pts(), packet.dts());
            let keyframe = packet.is_key();
            let duration = packet.duration();
            let data = ffi::packet_bytes(packet);
            if data.is_empty() {
                continue;
            }
            let (pts, dts) = match stamps {
                // A repeated DTS (or one less than a frame back) would give a zero or negative
                // frame duration: nudge it to one tick after the last. Larger backward jumps
                // are timestamp resets, left for the chunker to treat as discontinuities.
                (Some(p), Some(d)) => match self.last_timed_dts() {
                    Some(last) if d <= last && last - d < self.duplicate_window() => {
                        self.nudged += 1;
                        if self.nudged == 1 {
                            tracing::debug!(
                                dts = d,
                                last,
                                "non-increasing DTS from the source; nudged forward"
                            );
                        }
                        (p.max(last + 1), last + 1)
                    }
                    _ => (p, d),
                },
                (Some(p), None) => (p, self.last_timed_dts().map_or(p, |last| p.max(last + 1))),
                (None, Some(d)) => (d, d),
                (None, None) if self.packets == 0 && self.ready.is_empty() => {
                    if self.held.len() < MAX_HELD {
                        self.held.push(EncodedPacket {
                            data,
                            pts: 0,
                            dts: 0,
                            duration,
                            keyframe,
                        });
                    } else {
                        self.skipped_untimed += 1;
                    }
                    continue;
                }
                (None, None) => return Err(ReadError::NoTimestamp),
            };
            let packet = EncodedPacket {
                data,
                pts,
                dts,
                duration,
                keyframe,
            };
            if self.held.is_empty() {
                self.ready.push_back(packet);
                continue;
            }
            // Held untimed packets: the frame interval comes from the nominal rate, else from
            // the first two timed packets.
            match (self.frame_ticks(), self.ready.back()) {
                (Some(step), _) => {
                    let first = packet.dts;
                    self.backfill(first, step);
                    self.ready.push_back(packet);
                }
                (None, None) => self.ready.push_back(packet),
                (None, Some(prev)) => {
                    let (first, step) = (prev.dts, (packet.dts - prev.dts).max(1));
                    let timed = std::mem::take(&mut self.ready);
                    self.backfill(first, step);
                    self.ready.extend(timed);
                    self.ready.push_back(packet);
                }
            }
        }
    }

    /// Gives the held leading packets timestamps `step` apart, ending one step before
    /// `next_dts`, and queues them.
    fn backfill(&mut self, next_dts: i64, step: i64) {
        let held = std::mem::take(&mut self.held);
        let n = held.len() as i64;
        for (i, mut p) in held.into_iter().enumerate() {
            let t = next_dts - step * (n - i as i64);
            p.pts = t;
            p.dts = t;
            self.ready.push_back(p);
        }
    }

    /// How far back a DTS may be and still count as a duplicate: one frame, or 10 ms when
    /// the frame rate is unknown.
    fn duplicate_window(&self) -> i64 {
        self.frame_ticks().unwrap_or_else(|| {
            let tb = self.info.time_base;
            (i64::from(tb.den) / (100 * i64::from(tb.num.max(1)))).max(1)
        })
    }

    /// DTS of the newest timed packet read (queued or delivered).
    fn last_timed_dts(&self) -> Option<i64> {
        self.ready.back().map(|p| p.dts).or(self.last_dts)
    }

    /// Ticks per frame at the nominal frame rate, when known.
    fn frame_ticks(&self) -> Option<i64> {
        let (r, tb) = (self.info.frame_rate?, self.info.time_base);
        let num = i64::from(r.den) * i64::from(tb.den);
        let den = i64::from(r.num) * i64::from(tb.num);
        (den > 0).then(|| (num + den / 2) / den).filter(|t| *t > 0)
    }
}
