//! Reading the best video stream of an open libavformat input; shared by every source.

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
    /// Leading packets without any timestamp, skipped.
    pub(crate) skipped_untimed: u64,
    last_dts: Option<i64>,
}

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
        })
    }

    /// The next video packet, `None` at the end.
    ///
    /// Packets without a DTS (RTP carries none) get one equal to their PTS, kept strictly
    /// increasing.
    pub(crate) fn read(&mut self) -> Result<Option<EncodedPacket>, ReadError> {
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(e) => return Err(ReadError::Ffmpeg(e)),
            }
            if packet.stream() != self.stream_index {
                continue;
            }
            if packet.is_corrupt() {
                return Err(ReadError::Corrupt);
            }
            let (pts, dts) = match (packet.pts(), packet.dts()) {
                (Some(p), Some(d)) => (p, d),
                (Some(p), None) => (p, self.last_dts.map_or(p, |last| p.max(last + 1))),
                (None, Some(d)) => (d, d),
                // Live demuxers deliver the first packets before RTP timing is known:
                // they cannot be placed in time, so they are skipped.
                (None, None) if self.packets == 0 => {
                    self.skipped_untimed += 1;
                    continue;
                }
                (None, None) => return Err(ReadError::NoTimestamp),
            };
            let keyframe = packet.is_key();
            let duration = packet.duration();
            let data = ffi::packet_bytes(packet);
            if data.is_empty() {
                continue;
            }
            self.packets += 1;
            self.last_dts = Some(dts);
            return Ok(Some(EncodedPacket {
                data,
                pts,
                dts,
                duration,
                keyframe,
            }));
        }
    }
}
