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
    /// The last packet handed out (its bytes and DTS), to recognise a repeat of it.
    last_sent: Option<(bytes::Bytes, i64)>,
    /// Leading packets waiting for the stream's timing to be known.
    held: Vec<Raw>,
    /// Leading packets are settled; later packets pass straight through.
    settled: bool,
    /// Packets ready to hand out (back-filled ones first).
    ready: VecDeque<EncodedPacket>,
    /// The input reported its end.
    eof: bool,
    /// Packets whose DTS had to be moved forward to keep DTS strictly increasing.
    pub(crate) nudged: u64,
    /// Packets dropped as repeats of the one before (same bytes and same DTS, or the timed
    /// copy of an untimed leading packet, which takes its place).
    pub(crate) repeats: u64,
    /// When the first packet of the stream was read (before any holding).
    pub(crate) first_read_at: Option<std::time::SystemTime>,
    /// Video packets read from FFmpeg (before holding and repeats).
    video_read: u64,
    /// Packets FFmpeg flagged as corrupt (incomplete or damaged), kept as read.
    pub(crate) corrupt: u64,
    /// The first of them, counting video packets read from 1.
    pub(crate) first_corrupt: Option<u64>,
    /// The last video packet read was flagged corrupt.
    last_corrupt: bool,
    /// H.264/H.265 samples framed with lengths of this many bytes (MP4 and the like), whose
    /// framing is checked: FFmpeg does not look inside a sample.
    nal_length_size: Option<usize>,
    /// The stream's display matrix, when it is rotated.
    pub(crate) display_matrix: Option<[i32; 9]>,
}

/// Corrupt packets logged one by one; the rest are counted.
const CORRUPT_LOGGED: u64 = 10;

/// The display matrix of `stream` (a rotated picture, as phones record it), unless it shows
/// the picture as coded: nine 32-bit values, as FFmpeg and MP4's track header hold them.
pub(crate) fn display_matrix(stream: &ffmpeg::format::stream::Stream<'_>) -> Option<[i32; 9]> {
    const IDENTITY: [i32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];
    let side = stream
        .side_data()
        .find(|d| d.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)?;
    let data = side.data();
    if data.len() < 36 {
        return None;
    }
    let mut m = [0i32; 9];
    for (v, c) in m.iter_mut().zip(data.chunks_exact(4)) {
        *v = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    (m != IDENTITY).then_some(m)
}

/// Most leading packets held while waiting for the stream's timing.
const MAX_HELD: usize = 32;

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
        let rotation = display_matrix(&stream);
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
        // `avcC`/`hvcC` extradata (configuration version 1) means length-prefixed samples; the
        // length size is in its low two bits at byte 4 (`avcC`) or 21 (`hvcC`).
        let x = &info.extradata;
        let nal_length_size = match (&info.codec, x.first()) {
            (Codec::H264, Some(1)) => x.get(4).map(|b| usize::from(b & 3) + 1),
            (Codec::H265, Some(1)) => x.get(21).map(|b| usize::from(b & 3) + 1),
            _ => None,
        }
        .filter(|n| *n != 3);
        Ok(Self {
            input,
            stream_index,
            info,
            packets: 0,
            skipped_untimed: 0,
            last_dts: None,
            last_sent: None,
            held: Vec::new(),
            settled: false,
            ready: VecDeque::new(),
            eof: false,
            nudged: 0,
            repeats: 0,
            first_read_at: None,
            video_read: 0,
            corrupt: 0,
            first_corrupt: None,
            last_corrupt: false,
            nal_length_size,
            display_matrix: rotation,
        })
    }

    /// Codec parameters, time base and frame rate of the selected stream, for a decoder.
    pub(crate) fn decoder_setup(
        &self,
    ) -> (
        ffmpeg::codec::Parameters,
        Rational,
        Option<ffmpeg::Rational>,
    ) {
        let rate = self
            .info
            .frame_rate
            .map(|r| ffmpeg::Rational::new(r.num, r.den));
        let params = self
            .input
            .stream(self.stream_index)
            .map(|s| s.parameters())
            .unwrap_or_default();
        (params, self.info.time_base, rate)
    }

    /// The next video packet, `None` at the end.
    ///
    /// Live demuxers start without full timing: the first packet (often the keyframe) has no
    /// timestamps, and with B-frames FFmpeg's parser supplies DTS only after a few frames, on
    /// a timeline shifted by the reorder delay. Such leading packets are held until the first
    /// real DTS arrives and then given timestamps counted back from it (see [`settle`]), so no
    /// GOP is lost at connect and DTS never collide with FFmpeg's.
    pub(crate) fn read(&mut self) -> Result<Option<EncodedPacket>, ReadError> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                self.packets += 1;
                self.last_dts = Some(p.dts);
                self.last_sent = Some((p.data.clone(), p.dts));
                return Ok(Some(p));
            }
            if self.eof {
                if self.held.is_empty() {
                    // A stream that ends on a damaged packet was cut off mid-frame (a
                    // truncated file): that is the end's damage, not a packet to pass over.
                    if std::mem::take(&mut self.last_corrupt) {
                        return Err(ReadError::Corrupt);
                    }
                    return Ok(None);
                }
                self.release_held();
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
            self.first_read_at
                .get_or_insert_with(std::time::SystemTime::now);
            self.video_read += 1;
            // A damaged packet mid-stream (an MPEG-TS packet lost, two recordings joined) is
            // kept as read, as `ffmpeg -c copy` keeps it: the decoder conceals what it can,
            // and stopping would lose everything after it. It is counted and reported.
            // A sample whose NAL lengths do not add up is damaged too (garbage where a frame
            // was): FFmpeg hands it over unflagged.
            let misframed = self.nal_length_size.is_some_and(|n| {
                !crispy_core::annexb::length_prefixed_fits(packet.data().unwrap_or_default(), n)
            });
            self.last_corrupt = packet.is_corrupt() || misframed;
            if self.last_corrupt {
                self.corrupt += 1;
                self.first_corrupt.get_or_insert(self.video_read);
                if self.corrupt <= CORRUPT_LOGGED {
                    tracing::warn!(
                        packet = self.video_read,
                        "a video packet is damaged (incomplete, or its NAL unit lengths do not fit \
                         it): kept as read, it may not decode cleanly{}",
                        if self.corrupt == CORRUPT_LOGGED {
                            " (further ones are counted, not logged)"
                        } else {
                            ""
                        }
                    );
                }
            }
            let (pts, dts, duration, keyframe) = (
                packet.pts(),
                packet.dts(),
                packet.duration(),
                packet.is_key(),
            );
            let discard = ffi::is_discarded(&packet);
            let raw = Raw {
                data: ffi::packet_bytes(packet),
                pts,
                dts,
                duration,
                keyframe,
                discard,
            };
            if raw.data.is_empty() {
                continue;
            }
            if self.settled {
                let last = self.ready.back().map(|p| (&p.data, p.dts));
                if is_repeat(last.or(self.last_sent.as_ref().map(|(d, t)| (d, *t))), &raw) {
                    self.count_repeat();
                    continue;
                }
                let p = self.stamp(raw)?;
                self.ready.push_back(p);
                continue;
            }
            // Starting: hold packets until a real DTS and the frame interval are known. A
            // repeat that took an untimed packet's place may have brought them.
            if hold(&mut self.held, raw) {
                self.count_repeat();
            }
            if can_settle(&self.held, self.frame_ticks().is_some()) {
                self.release_held();
            }
        }
    }

    /// Counts a dropped repeat; the first one is logged.
    fn count_repeat(&mut self) {
        self.repeats += 1;
        if self.repeats == 1 {
            tracing::debug!("the source repeated a packet (same bytes, same time); dropped");
        }
    }

    /// Settles the held leading packets and queues them.
    fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.settled = true;
        if held.iter().all(|r| r.pts.is_none() && r.dts.is_none()) {
            // Nothing to anchor on (only untimed packets before the end): they cannot be placed.
            self.skipped_untimed += held.len() as u64;
            return;
        }
        let step = self.frame_ticks().or_else(|| pts_step(&held)).unwrap_or(1);
        self.ready.extend(settle(held, step));
    }

    /// Timestamps of a packet once the stream is settled.
    fn stamp(&mut self, raw: Raw) -> Result<EncodedPacket, ReadError> {
        let last = self.ready.back().map(|p| p.dts).or(self.last_dts);
        let (pts, dts) = match (raw.pts, raw.dts) {
            // A repeated DTS (or one less than a frame back) would give a zero or negative
            // frame duration: nudge it to one tick after the last. Larger backward jumps are
            // timestamp resets, left for the chunker to treat as discontinuities.
            (Some(p), Some(d)) => match last {
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
            (Some(p), None) => (p, last.map_or(p, |last| p.max(last + 1))),
            (None, Some(d)) => (d, d),
            (None, None) => return Err(ReadError::NoTimestamp),
        };
        Ok(EncodedPacket {
            data: raw.data,
            pts,
            dts,
            duration: raw.duration,
            keyframe: raw.keyframe,
            discard: raw.discard,
        })
    }

    /// How far back a DTS may be and still count as a duplicate: one frame, or 10 ms when
    /// the frame rate is unknown.
    fn duplicate_window(&self) -> i64 {
        self.frame_ticks().unwrap_or_else(|| {
            let tb = self.info.time_base;
            (i64::from(tb.den) / (100 * i64::from(tb.num.max(1)))).max(1)
        })
    }

    /// Ticks per frame at the nominal frame rate, when known.
    fn frame_ticks(&self) -> Option<i64> {
        let (r, tb) = (self.info.frame_rate?, self.info.time_base);
        let num = i64::from(r.den) * i64::from(tb.den);
        let den = i64::from(r.num) * i64::from(tb.num);
        (den > 0).then(|| (num + den / 2) / den).filter(|t| *t > 0)
    }
}

/// A packet as FFmpeg gave it.
pub(crate) struct Raw {
    data: bytes::Bytes,
    pts: Option<i64>,
    dts: Option<i64>,
    duration: i64,
    keyframe: bool,
    discard: bool,
}

/// Whether `raw` repeats the packet before it (`last`: its bytes and DTS): the same bytes
/// with the same DTS. Seen at connect, several cameras at once: FFmpeg handed out the
/// first keyframe three times (untimed, then twice with one DTS), which made a chunk no
/// decoder accepts (two frames one tick apart). A real next frame never has the same DTS.
fn is_repeat(last: Option<(&bytes::Bytes, i64)>, raw: &Raw) -> bool {
    last.is_some_and(|(data, dts)| raw.dts == Some(dts) && *data == raw.data)
}

/// Adds `raw` to the held leading packets, unless it repeats the last one: the same bytes as
/// an untimed packet (whose place it takes, bringing its timestamps) or as a packet with the
/// same DTS. Returns whether `raw` was a repeat.
fn hold(held: &mut Vec<Raw>, raw: Raw) -> bool {
    match held.last_mut() {
        Some(last) if last.data == raw.data && last.pts.is_none() && last.dts.is_none() => {
            *last = raw;
            true
        }
        Some(last) if last.data == raw.data && last.dts.is_some() && last.dts == raw.dts => true,
        _ => {
            held.push(raw);
            false
        }
    }
}

/// Whether the held leading packets can be settled: a single complete packet (a file's first,
/// or an untimed keyframe whose repeat brought its timestamps), a real DTS with the frame
/// interval known (`frame_ticks_known`: from the stream's rate), or as many as are ever held.
fn can_settle(held: &[Raw], frame_ticks_known: bool) -> bool {
    let single_complete = matches!(held, [r] if r.pts.is_some() && r.dts.is_some());
    let has_dts = held.iter().any(|r| r.dts.is_some());
    let step_known = frame_ticks_known || pts_step(held).is_some();
    single_complete || (has_dts && step_known) || held.len() >= MAX_HELD
}

/// The smallest positive gap between the known PTS of `held`: the frame interval.
fn pts_step(held: &[Raw]) -> Option<i64> {
    let mut pts: Vec<i64> = held.iter().filter_map(|r| r.pts).collect();
    pts.sort_unstable();
    pts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).min()
}

/// Gives every held leading packet a PTS and a DTS, `step` being the frame interval.
///
/// - Missing PTS before the first known one count back from it, one frame each; missing PTS
///   after it follow the previous packet's.
/// - DTS count back from the first real DTS, one frame per packet. Without any real DTS they
///   are the sorted PTS, shifted so that no DTS exceeds its PTS.
/// - No held DTS may exceed its PTS: if one would, all held DTS before the anchor move back
///   together (staying increasing and below the anchor).
fn settle(held: Vec<Raw>, step: i64) -> Vec<EncodedPacket> {
    let n = held.len();
    let step = step.max(1);
    let mut pts: Vec<i64> = vec![0; n];
    match held.iter().position(|r| r.pts.is_some()) {
        Some(first) => {
            let base = held[first].pts.unwrap_or(0);
            for i in 0..n {
                pts[i] = match held[i].pts {
                    Some(p) => p,
                    None if i < first => base - (first - i) as i64 * step,
                    None => pts[i - 1] + step,
                };
            }
        }
        None => {
            let base = held.iter().find_map(|r| r.dts).unwrap_or(0);
            for (i, p) in pts.iter_mut().enumerate() {
                *p = base + i as i64 * step;
            }
        }
    }
    let mut dts: Vec<i64> = vec![0; n];
    match held.iter().position(|r| r.dts.is_some()) {
        Some(anchor) => {
            let base = held[anchor].dts.unwrap_or(0);
            for i in 0..n {
                dts[i] = match held[i].dts {
                    Some(d) if i >= anchor => d,
                    _ if i < anchor => base - (anchor - i) as i64 * step,
                    _ => dts[i - 1] + 1,
                };
                if i > anchor && dts[i] <= dts[i - 1] {
                    dts[i] = dts[i - 1] + 1;
                }
            }
            let overshoot = (0..anchor).map(|i| dts[i] - pts[i]).max().unwrap_or(0);
            if overshoot > 0 {
                dts[..anchor].iter_mut().for_each(|d| *d -= overshoot);
            }
        }
        None => {
            let mut sorted = pts.clone();
            sorted.sort_unstable();
            let shift = (0..n).map(|i| sorted[i] - pts[i]).max().unwrap_or(0).max(0);
            for i in 0..n {
                dts[i] = sorted[i] - shift;
                if i > 0 && dts[i] <= dts[i - 1] {
                    dts[i] = dts[i - 1] + 1;
                }
            }
        }
    }
    held.into_iter()
        .enumerate()
        .map(|(i, r)| EncodedPacket {
            data: r.data,
            pts: pts[i],
            dts: dts[i],
            duration: r.duration,
            keyframe: r.keyframe,
            discard: r.discard,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pts: Option<i64>, dts: Option<i64>) -> Raw {
        Raw {
            data: bytes::Bytes::from_static(b"x"),
            pts,
            dts,
            duration: 0,
            keyframe: false,
            discard: false,
        }
    }

    fn stamps(v: &[EncodedPacket]) -> Vec<(i64, i64)> {
        v.iter().map(|p| (p.pts, p.dts)).collect()
    }

    #[test]
    fn a_keyframe_repeated_at_connect_is_kept_once() {
        // Seen with eight cameras connecting at once: the first keyframe untimed, then twice
        // with one DTS; then the next frame.
        let key = |pts, dts| Raw {
            data: bytes::Bytes::from_static(b"\0\0\0\x01\x65key"),
            ..raw(pts, dts)
        };
        let mut held = Vec::new();
        assert!(!hold(&mut held, key(None, None)));
        assert!(!can_settle(&held, true), "nothing to anchor on yet");
        assert!(
            hold(&mut held, key(Some(0), Some(0))),
            "takes the untimed one's place"
        );
        assert!(
            can_settle(&held, false),
            "its timestamps settle it at once, without waiting for the next frame"
        );
        assert!(hold(&mut held, key(Some(0), Some(0))), "a repeat");
        assert!(!hold(&mut held, raw(Some(3600), Some(3600))));
        assert_eq!(stamps(&settle(held, 3600)), vec![(0, 0), (3600, 3600)]);

        // Once settled: a repeat has the same bytes and the same DTS; the same bytes at a
        // later time (a static scene, MJPEG) are a frame.
        let last = bytes::Bytes::from_static(b"\0\0\0\x01\x65key");
        assert!(is_repeat(Some((&last, 0)), &key(Some(0), Some(0))));
        assert!(!is_repeat(Some((&last, 0)), &key(Some(3600), Some(3600))));
        assert!(!is_repeat(Some((&last, 0)), &raw(Some(0), Some(0))));
        assert!(!is_repeat(None, &key(Some(0), Some(0))));
    }

    #[test]
    fn leading_packets_are_held_until_their_timing_is_known() {
        assert!(
            can_settle(&[raw(Some(0), Some(0))], false),
            "a file's first"
        );
        assert!(!can_settle(&[raw(None, None)], true));
        assert!(!can_settle(&[raw(Some(0), None)], true), "no DTS yet");
        let no_interval = [raw(None, None), raw(Some(3600), Some(3600))];
        assert!(!can_settle(&no_interval, false));
        assert!(can_settle(&no_interval, true), "the stream's rate gives it");
        let two = [
            raw(None, None),
            raw(Some(3600), Some(3600)),
            raw(Some(7200), None),
        ];
        assert!(can_settle(&two, false), "two PTS give it");
        let many: Vec<Raw> = (0..MAX_HELD).map(|_| raw(None, None)).collect();
        assert!(can_settle(&many, false), "never more than MAX_HELD");
    }

    #[test]
    fn untimed_keyframe_before_a_plain_stream() {
        // /live over RTSP: the keyframe has no timestamps, then PTS = DTS one frame apart.
        let held = vec![
            raw(None, None),
            raw(Some(3600), Some(3600)),
            raw(Some(7200), Some(7200)),
        ];
        let step = pts_step(&held).expect("step");
        assert_eq!(
            stamps(&settle(held, step)),
            vec![(0, 0), (3600, 3600), (7200, 7200)]
        );
    }

    #[test]
    fn b_frames_with_late_parser_dts() {
        // A B-frame file over RTSP: DTS appear with the 4th packet, shifted by the reorder delay.
        let held = vec![
            raw(None, None),
            raw(Some(3000), None),
            raw(Some(6000), None),
            raw(Some(15000), Some(3000)),
        ];
        let step = pts_step(&held).expect("step");
        assert_eq!(step, 3000);
        let out = settle(held, step);
        assert_eq!(
            stamps(&out),
            vec![(0, -6000), (3000, -3000), (6000, 0), (15000, 3000)]
        );
    }

    #[test]
    fn without_any_dts_the_sorted_pts_become_dts() {
        let held = vec![
            raw(Some(0), None),
            raw(Some(9000), None),
            raw(Some(3000), None),
            raw(Some(6000), None),
        ];
        let out = settle(held, 3000);
        assert!(
            out.windows(2).all(|w| w[0].dts < w[1].dts),
            "{:?}",
            stamps(&out)
        );
        assert!(out.iter().all(|p| p.dts <= p.pts), "{:?}", stamps(&out));
    }

    #[test]
    fn dts_never_exceed_pts_after_anchoring() {
        // An anchor whose back-counted DTS would pass the PTS of an earlier packet.
        let held = vec![
            raw(Some(0), None),
            raw(Some(100), None),
            raw(Some(5000), Some(4000)),
        ];
        let out = settle(held, 3000);
        assert!(out.iter().all(|p| p.dts <= p.pts), "{:?}", stamps(&out));
        assert!(
            out.windows(2).all(|w| w[0].dts < w[1].dts),
            "{:?}",
            stamps(&out)
        );
    }
}
