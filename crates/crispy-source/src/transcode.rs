//! Transcode mode: decode anything FFmpeg reads, optionally scale and decimate, and encode
//! H.264 with libx264 with an IDR frame forced exactly on every chunk boundary, so chunks
//! have exactly the requested length (to the frame) and decode on their own.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crispy_core::{Codec, EncodedPacket, PacketSource, Rational, StreamInfo};
use ffmpeg_next as ffmpeg;

use crate::reencode::{OUT_TB, ReencodeError, Reencoder, Timing, rescale};
use crate::{CameraSource, RtspSource, SourceError};

/// libx264's presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// The highest target bitrate a transcode takes, in kbit/s (1 Gbit/s: far above any camera,
/// well inside what libx264 accepts).
pub const MAX_BITRATE_KBPS: u64 = 1_000_000;

/// Encoder and picture settings of transcode mode.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeConfig {
    /// Chunk length: an IDR frame is forced at the first frame at or after every multiple.
    pub chunk_ms: u64,
    /// Exact output size.
    pub scale: Option<(u32, u32)>,
    /// Largest output height, keeping the aspect ratio (ignored with `scale`).
    pub max_height: Option<u32>,
    /// Output frame rate: frames are dropped to keep at most this rate.
    pub fps: Option<Rational>,
    /// libx264 preset.
    pub preset: String,
    /// Constant rate factor (quality); used when no bitrate is set.
    pub crf: u8,
    /// Target bitrate in kbit/s (instead of `crf`), at most [`MAX_BITRATE_KBPS`].
    pub bitrate_kbps: Option<u64>,
    /// Wall-clock alignment: the media time (ms after the first frame) of the first chunk
    /// boundary; boundaries follow every `chunk_ms` after it. `None`: every `chunk_ms` from
    /// the first frame.
    pub grid_offset_ms: Option<u64>,
}

impl std::fmt::Display for TranscodeConfig {
    /// The encoder settings as a log shows them: `libx264 veryfast, crf 26, max height 720,
    /// 10 fps`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "libx264 {}", self.preset)?;
        match self.bitrate_kbps {
            Some(kbps) => write!(f, ", {kbps} kbit/s")?,
            None => write!(f, ", crf {}", self.crf)?,
        }
        if let Some((w, h)) = self.scale {
            write!(f, ", scaled to {w}x{h}")?;
        }
        if let Some(h) = self.max_height {
            write!(f, ", max height {h}")?;
        }
        if let Some(fps) = self.fps {
            write!(f, ", {} fps", (fps.as_f64() * 1000.0).round() / 1000.0)?;
        }
        Ok(())
    }
}

impl TranscodeConfig {
    /// Defaults for CCTV: `veryfast`, CRF 26, source size and rate.
    pub fn new(chunk_ms: u64) -> Self {
        Self {
            chunk_ms,
            scale: None,
            max_height: None,
            fps: None,
            preset: "veryfast".to_owned(),
            crf: 26,
            bitrate_kbps: None,
            grid_offset_ms: None,
        }
    }

    /// Checks the settings libx264 would otherwise reject only when a stream opens.
    pub fn validate(&self) -> Result<(), String> {
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            return Err(format!(
                "unknown preset {:?}; one of {}",
                self.preset,
                X264_PRESETS.join(", ")
            ));
        }
        if self.crf > 51 {
            return Err(format!("crf {} is out of range 0..=51", self.crf));
        }
        if let Some(kbps) = self
            .bitrate_kbps
            .filter(|k| !(1..=MAX_BITRATE_KBPS).contains(k))
        {
            return Err(format!(
                "bitrate {kbps} kbit/s is out of range 1..={MAX_BITRATE_KBPS}"
            ));
        }
        if self.fps.is_some_and(|f| !f.is_positive()) {
            return Err("fps must be above 0".to_owned());
        }
        if let Some(f) = self
            .fps
            .filter(|f| i64::from(f.num) > 240 * i64::from(f.den))
        {
            return Err(format!("fps {} is not between 1 and 240", f.as_f64()));
        }
        if let Some(h) = self.max_height.filter(|h| !(16..=8640).contains(h)) {
            return Err(format!("max_height {h} is not between 16 and 8640"));
        }
        if let Some(h) = self.max_height.filter(|h| h % 2 == 1) {
            return Err(format!(
                "max_height {h} must be even: 4:2:0 H.264 has whole 2x2 chroma blocks"
            ));
        }
        if self.scale.is_some() && self.max_height.is_some() {
            return Err("scale and max_height exclude each other: give one".to_owned());
        }
        if self.chunk_ms == 0 {
            return Err("chunk length must be above 0".to_owned());
        }
        Ok(())
    }

    /// Parses an output size like `1280x720` (16 to 16384 pixels each way).
    pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
        let bad = || format!("expected WIDTHxHEIGHT like 1280x720, got {s:?}");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let (w, h): (u32, u32) = (
            w.trim().parse().map_err(|_| bad())?,
            h.trim().parse().map_err(|_| bad())?,
        );
        if !(16..=16384).contains(&w) || !(16..=16384).contains(&h) {
            return Err(format!("{s}: width and height must be 16 to 16384"));
        }
        // Rounding them quietly would store another size than the one asked for.
        if w % 2 == 1 || h % 2 == 1 {
            return Err(format!(
                "{s}: width and height must be even: 4:2:0 H.264 has whole 2x2 chroma blocks"
            ));
        }
        Ok((w, h))
    }

    /// The output size for a `w`x`h` input (even numbers, as 4:2:0 needs).
    pub fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
        let even = |v: u32| (v.max(2) / 2) * 2;
        match (self.scale, self.max_height) {
            (Some((sw, sh)), _) => (even(sw), even(sh)),
            (None, Some(mh)) if h > mh => {
                let sw = (u64::from(w) * u64::from(mh) + u64::from(h) / 2) / u64::from(h);
                (even(sw as u32), even(mh))
            }
            _ => (even(w), even(h)),
        }
    }
}

/// A video file decoded and re-encoded into exactly-cut H.264.
pub struct TranscodeSource {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    stage: Reencoder,
    info: StreamInfo,
    input_done: bool,
    flushed: bool,
    frames_in: u64,
    /// The first packet the decoder refused, counting from 1 (a frame-threaded decoder
    /// reports a failure a few packets late).
    first_skipped: Option<u64>,
    display_matrix: Option<[i32; 9]>,
    /// Packets FFmpeg flagged as damaged mid-file (decoded as well as they go), the first
    /// of them, and whether the last packet read was one.
    corrupt: (u64, Option<u64>, bool),
    /// Why reading stopped early (a truncated file, a read error): reported once the frames
    /// read before it are out of the decoder and the encoder, so that every chunk they
    /// complete is stored, as in copy mode.
    failed: Option<SourceError>,
}

/// Undecodable packets logged one by one; the rest are only counted (the run's error at the
/// end gives the total).
const SKIPS_LOGGED: u64 = 10;

impl std::fmt::Debug for TranscodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscodeSource")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Placeholder until the first frame fixes the output stream.
fn unknown_output() -> StreamInfo {
    StreamInfo {
        codec: Codec::H264,
        profile: None,
        width: 0,
        height: 0,
        time_base: OUT_TB,
        frame_rate: None,
        extradata: bytes::Bytes::new(),
        duration: None,
        frame_count: None,
    }
}

impl TranscodeSource {
    /// Opens `path`, its decoder and the libx264 encoder (reading until the first frame is
    /// decoded, which fixes the output size).
    pub fn open(path: impl AsRef<Path>, config: TranscodeConfig) -> Result<Self, SourceError> {
        // The same checks and errors as stream copy for missing, empty and non-video files.
        let probe = crate::FileSource::open(path.as_ref())?;
        drop(probe);
        let path = path.as_ref().to_path_buf();
        let bad = |reason: String| SourceError::BadStream {
            path: path.clone(),
            reason,
        };
        let input =
            crate::ffi::open_file_analysed(&path).map_err(|source| SourceError::NotMedia {
                path: path.clone(),
                source,
                said: String::new(),
            })?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| bad("no video stream".to_owned()))?;
        let stream_index = stream.index();
        let display_matrix = crate::demux::display_matrix(&stream);
        let tb = stream.time_base();
        let in_tb = Rational::new(tb.numerator(), tb.denominator());
        let rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .find(|r| r.numerator() > 0 && r.denominator() > 0);
        let stage = Reencoder::new(
            stream.parameters(),
            in_tb,
            rate,
            config,
            Timing::FromFirstFrame,
        )
        .map_err(|e| bad(e.reason))?;
        let mut source = Self {
            path,
            input,
            stream_index,
            stage,
            info: unknown_output(),
            input_done: false,
            flushed: false,
            frames_in: 0,
            first_skipped: None,
            display_matrix,
            corrupt: (0, None, false),
            failed: None,
        };
        while source.stage.info().is_none() && !source.flushed {
            source.step()?;
        }
        match source.stage.info() {
            Some(info) => source.info = info.clone(),
            None => {
                let failed = source.failed.take();
                return Err(failed.unwrap_or_else(|| source.fail("no frame could be decoded")));
            }
        }
        Ok(source)
    }

    /// The source's display matrix when its picture is to be shown rotated: decoding and
    /// re-encoding keep the picture as coded, so the chunks carry the same matrix.
    pub fn display_matrix(&self) -> Option<[i32; 9]> {
        self.display_matrix
    }

    fn fail(&self, reason: impl Into<String>) -> SourceError {
        SourceError::Damaged {
            path: self.path.clone(),
            packets: self.frames_in,
            reason: reason.into(),
        }
    }

    /// A failure of the stage: the encoder's own (it could not be opened), or damage.
    fn stage_failed(&self, e: ReencodeError) -> SourceError {
        if e.encoder {
            SourceError::Encoder {
                input: self.path.display().to_string(),
                reason: e.reason,
            }
        } else {
            self.fail(e.reason)
        }
    }

    /// Reads one packet into the stage (or flushes it at the end).
    fn step(&mut self) -> Result<(), SourceError> {
        if self.input_done {
            self.stage.finish().map_err(|e| self.stage_failed(e))?;
            self.flushed = true;
            return Ok(());
        }
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut self.input) {
            Ok(()) if packet.stream() == self.stream_index => {
                self.frames_in += 1;
                // A packet the demuxer could not read whole: mid-file (a lost MPEG-TS packet)
                // it is decoded as well as it goes and the file read on, as in copy mode; at
                // the very end (a truncated file) it ends the run, below.
                self.corrupt.2 = packet.is_corrupt();
                if self.corrupt.2 {
                    self.corrupt.0 += 1;
                    self.corrupt.1.get_or_insert(self.frames_in);
                }
                let skipped = self.stage.packets_skipped;
                self.stage.push(&packet).map_err(|e| self.stage_failed(e))?;
                let now = self.stage.packets_skipped;
                if now > skipped {
                    self.first_skipped.get_or_insert(self.frames_in);
                    if now <= SKIPS_LOGGED {
                        tracing::warn!(
                            path = %self.path.display(),
                            packet = self.frames_in,
                            "undecodable packet skipped: its frame is missing from the chunks{}",
                            if now == SKIPS_LOGGED {
                                " (further ones are counted, not logged)"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) if self.corrupt.2 => {
                // Not a quietly shorter last chunk: the same failure as in copy mode.
                self.failed = Some(self.fail(crate::demux::ReadError::Corrupt.describe()));
                self.input_done = true;
            }
            Err(ffmpeg::Error::Eof) => self.input_done = true,
            Err(e) => {
                self.failed = Some(self.fail(e.to_string()));
                self.input_done = true;
            }
        }
        Ok(())
    }
}

impl PacketSource for TranscodeSource {
    type Error = SourceError;

    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_packet(&mut self) -> Result<Option<EncodedPacket>, SourceError> {
        loop {
            if let Some(p) = self.stage.pop() {
                return Ok(Some(p));
            }
            if self.flushed {
                return match self.failed.take() {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            self.step()?;
        }
    }

    fn damage_at_end(&mut self) -> Option<SourceError> {
        let Some(first) = self.first_skipped else {
            let (count, first, _) = self.corrupt;
            return first.map(|first| SourceError::CorruptPackets {
                path: self.path.clone(),
                packets: self.frames_in,
                count,
                first,
            });
        };
        Some(SourceError::Undecodable {
            path: self.path.clone(),
            packets: self.frames_in,
            count: self.stage.packets_skipped,
            first,
        })
    }
}

/// A live camera decoded and re-encoded into exactly-cut H.264 (`--mode transcode` with an
/// RTSP URL): any codec FFmpeg decodes, MJPEG cameras included.
///
/// Output timestamps are the camera's, rescaled to 90 kHz, so the RTCP mapping of the
/// camera's clock still holds. When the connection ends (error, stall, shutdown), the frames
/// still inside decoder and encoder are delivered before the error.
pub struct LiveTranscoder {
    camera: RtspSource,
    stage: Reencoder,
    info: StreamInfo,
    align_wall: bool,
    /// Receive time and PTS of the camera's first packet.
    first_in: Option<(SystemTime, i64)>,
    first_out_pts: Option<i64>,
    pending_error: Option<SourceError>,
    ended: bool,
}

impl std::fmt::Debug for LiveTranscoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTranscoder")
            .field("camera", &self.camera)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl LiveTranscoder {
    /// Wraps a connected camera; reads until the first frame is decoded (which fixes the
    /// output size). With `align_wall`, keyframes fall on the UTC grid of the receive clock.
    pub fn new(
        camera: RtspSource,
        config: TranscodeConfig,
        align_wall: bool,
    ) -> Result<Self, SourceError> {
        let (params, in_tb, rate) = camera.decoder_setup();
        let display = camera.display_url().to_owned();
        let bad = |e: ReencodeError| {
            if e.encoder {
                SourceError::Encoder {
                    input: display.clone(),
                    reason: e.reason,
                }
            } else {
                SourceError::BadStream {
                    path: display.clone().into(),
                    reason: format!("cannot transcode this stream: {}", e.reason),
                }
            }
        };
        let stage = Reencoder::new(params, in_tb, rate, config, Timing::Absolute).map_err(bad)?;
        let mut live = Self {
            camera,
            stage,
            info: unknown_output(),
            align_wall,
            first_in: None,
            first_out_pts: None,
            pending_error: None,
            ended: false,
        };
        while live.stage.info().is_none() {
            if let Some(e) = live.pending_error.take() {
                return Err(e);
            }
            if live.ended {
                return Err(bad(ReencodeError::stream(
                    "the stream ended before a frame was decoded",
                )));
            }
            live.step().map_err(bad)?;
        }
        if let Some(info) = live.stage.info() {
            live.info = info.clone();
        }
        Ok(live)
    }

    /// Feeds one camera packet to the stage; at the end of the connection, flushes it.
    fn step(&mut self) -> Result<(), ReencodeError> {
        match self.camera.next_packet() {
            Ok(Some(p)) => {
                if self.first_in.is_none() {
                    let received = self
                        .camera
                        .first_packet_received()
                        .unwrap_or_else(SystemTime::now);
                    self.first_in = Some((received, p.pts));
                    if self.align_wall {
                        let unix_ms = received
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64);
                        self.stage.set_wall_anchor(unix_ms, p.pts);
                    }
                }
                // One copy of the compressed payload per packet (kilobytes, next to a decode
                // of the whole picture): the demuxer hands out `Bytes`, the decoder wants an
                // AVPacket.
                let mut packet = ffmpeg::Packet::copy(&p.data);
                packet.set_pts(Some(p.pts));
                packet.set_dts(Some(p.dts));
                if p.keyframe {
                    packet.set_flags(ffmpeg::packet::Flags::KEY);
                }
                self.stage.push(&packet)
            }
            Ok(None) => {
                self.ended = true;
                self.stage.finish()
            }
            Err(e) => {
                self.ended = true;
                self.pending_error = Some(e);
                self.stage.finish()
            }
        }
    }
}

impl PacketSource for LiveTranscoder {
    type Error = SourceError;

    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_packet(&mut self) -> Result<Option<EncodedPacket>, SourceError> {
        loop {
            if let Some(p) = self.stage.pop() {
                self.first_out_pts.get_or_insert(p.pts);
                return Ok(Some(p));
            }
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
            if self.ended {
                return Ok(None);
            }
            if let Err(e) = self.step() {
                self.ended = true;
                let url = self.camera.display_url().to_owned();
                return Err(if e.encoder {
                    SourceError::Encoder {
                        input: url,
                        reason: e.reason,
                    }
                } else {
                    SourceError::Disconnected {
                        url,
                        packets: self.camera.packets_read(),
                        reason: e.reason,
                    }
                });
            }
        }
    }
}

impl CameraSource for LiveTranscoder {
    fn display_url(&self) -> &str {
        self.camera.display_url()
    }

    fn camera_info(&self) -> &StreamInfo {
        self.camera.stream_info()
    }

    fn rtcp_start_time_us(&self) -> Option<i64> {
        self.camera.rtcp_start_time_us()
    }

    /// The receive time of the camera's first packet, moved to the first output frame.
    fn first_packet_received(&self) -> Option<SystemTime> {
        let (received, in_pts) = self.first_in?;
        let Some(out_pts) = self.first_out_pts else {
            return Some(received);
        };
        let in_ticks = rescale(in_pts, self.camera.stream_info().time_base, OUT_TB);
        let ms = OUT_TB.ticks_to_millis(out_pts - in_ticks);
        Some(if ms >= 0 {
            received + std::time::Duration::from_millis(ms as u64)
        } else {
            received - std::time::Duration::from_millis(ms.unsigned_abs())
        })
    }

    fn packets_read(&self) -> u64 {
        self.camera.packets_read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_a_log_line() {
        let mut c = TranscodeConfig::new(3000);
        assert_eq!(c.to_string(), "libx264 veryfast, crf 26");
        c.max_height = Some(720);
        c.fps = Some(Rational::new(30000, 1001));
        c.bitrate_kbps = Some(900);
        assert_eq!(
            c.to_string(),
            "libx264 veryfast, 900 kbit/s, max height 720, 29.97 fps"
        );
    }

    #[test]
    fn output_size_keeps_aspect_and_even_numbers() {
        let mut c = TranscodeConfig::new(1000);
        assert_eq!(c.output_size(1920, 1080), (1920, 1080));
        c.max_height = Some(720);
        assert_eq!(c.output_size(1920, 1080), (1280, 720));
        assert_eq!(c.output_size(1280, 720), (1280, 720));
        assert_eq!(c.output_size(642, 362), (642, 362));
        // A height limit keeps the aspect ratio; the width it gives is rounded to even.
        c.max_height = Some(182);
        assert_eq!(c.output_size(320, 240), (242, 182));
        // Odd sizes asked for are refused, not rounded.
        assert_eq!(TranscodeConfig::parse_size("640x360"), Ok((640, 360)));
        for odd in ["641x360", "640x359"] {
            let err = TranscodeConfig::parse_size(odd).expect_err(odd);
            assert!(err.contains("must be even"), "{err}");
        }
        c.max_height = Some(181);
        assert!(c.validate().expect_err("odd").contains("must be even"));
    }
}
