//! Transcode mode: decode anything FFmpeg reads, optionally scale and decimate, and encode
//! H.264 with libx264 with an IDR frame forced exactly on every chunk boundary, so chunks
//! have exactly the requested length (to the frame) and decode on their own.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crispy_core::{Codec, EncodedPacket, PacketSource, Rational, StreamInfo};
use ffmpeg_next as ffmpeg;
use ffmpeg_next::format::Pixel;

use crate::{SourceError, ffi};

/// Time base of transcoded timestamps: 90 kHz, exact for 24, 25, 30, 50 and 60 fps.
const OUT_TB: Rational = Rational::new(1, 90_000);

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
    /// Target bitrate in kbit/s (instead of `crf`).
    pub bitrate_kbps: Option<u64>,
    /// Media time (ms after the first frame) of the first chunk boundary; boundaries follow
    /// every `chunk_ms` after it. Non-zero for wall-clock alignment.
    pub grid_offset_ms: u64,
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
            grid_offset_ms: 0,
        }
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
    in_tb: Rational,
    decoder: ffmpeg::decoder::Video,
    scaler: Option<ffi::Scaler>,
    encoder: ffmpeg::encoder::Video,
    info: StreamInfo,
    config: TranscodeConfig,
    /// Output frame interval in OUT_TB ticks when decimating.
    out_step: Option<i64>,
    first_pts: Option<i64>,
    last_slot: Option<i64>,
    next_boundary: i64,
    queue: VecDeque<EncodedPacket>,
    input_done: bool,
    flushed: bool,
    frames_in: u64,
    frames_out: u64,
}

impl std::fmt::Debug for TranscodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscodeSource")
            .field("path", &self.path)
            .field("info", &self.info)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TranscodeSource {
    /// Opens `path`, its decoder and the libx264 encoder.
    pub fn open(path: impl AsRef<Path>, config: TranscodeConfig) -> Result<Self, SourceError> {
        // The same checks and errors as stream copy for missing, empty and non-video files.
        let probe = crate::FileSource::open(path.as_ref())?;
        drop(probe);
        let path = path.as_ref().to_path_buf();
        let bad = |reason: String| SourceError::BadStream {
            path: path.clone(),
            reason,
        };
        let input = ffmpeg::format::input(&path).map_err(|source| SourceError::NotMedia {
            path: path.clone(),
            source,
        })?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| bad("no video stream".to_owned()))?;
        let stream_index = stream.index();
        let tb = stream.time_base();
        let in_tb = Rational::new(tb.numerator(), tb.denominator());
        let rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .find(|r| r.numerator() > 0 && r.denominator() > 0)
            .unwrap_or(ffmpeg::Rational::new(25, 1));
        let mut ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| bad(format!("decoder parameters: {e}")))?;
        // Decode on every core.
        ctx.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| bad(format!("no decoder for this codec: {e}")))?;
        let (in_w, in_h, in_fmt) = (decoder.width(), decoder.height(), decoder.format());
        let (out_w, out_h) = config.output_size(in_w, in_h);
        let scaler = if (out_w, out_h, in_fmt) != (in_w, in_h, Pixel::YUV420P) {
            Some(ffi::Scaler(
                ffmpeg::software::scaling::Context::get(
                    in_fmt,
                    in_w,
                    in_h,
                    Pixel::YUV420P,
                    out_w,
                    out_h,
                    ffmpeg::software::scaling::Flags::BICUBIC,
                )
                .map_err(|e| bad(format!("scaler {in_w}x{in_h} -> {out_w}x{out_h}: {e}")))?,
            ))
        } else {
            None
        };
        let out_rate = config
            .fps
            .map_or(rate, |f| ffmpeg::Rational::new(f.num, f.den));
        let out_step = config
            .fps
            .filter(|f| f.is_positive())
            .map(|f| i64::from(OUT_TB.den) * i64::from(f.den) / i64::from(f.num));

        let codec = ffmpeg::encoder::find_by_name("libx264")
            .ok_or_else(|| bad("FFmpeg was built without libx264".to_owned()))?;
        let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| bad(format!("encoder: {e}")))?;
        enc.set_width(out_w);
        enc.set_height(out_h);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(ffmpeg::Rational::new(OUT_TB.num, OUT_TB.den));
        enc.set_frame_rate(Some(out_rate));
        enc.set_max_b_frames(0);
        enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("preset", &config.preset);
        // Keyframes only where we force them (IDR, so every chunk decodes on its own).
        opts.set("forced-idr", "1");
        opts.set("x264-params", "keyint=infinite:scenecut=0");
        match config.bitrate_kbps {
            Some(kbps) => enc.set_bit_rate(usize::try_from(kbps * 1000).unwrap_or(usize::MAX)),
            None => opts.set("crf", &config.crf.to_string()),
        }
        let encoder = enc
            .open_as_with(codec, opts)
            .map_err(|e| bad(format!("opening libx264 (preset {}): {e}", config.preset)))?;
        let fps = Rational::new(out_rate.numerator(), out_rate.denominator());
        let info = StreamInfo {
            codec: Codec::H264,
            profile: None,
            width: out_w,
            height: out_h,
            time_base: OUT_TB,
            frame_rate: Some(fps),
            extradata: ffi::encoder_extradata(&encoder),
            duration: None,
            frame_count: None,
        };
        let grid_offset = config.grid_offset_ms as i64;
        Ok(Self {
            path,
            input,
            stream_index,
            in_tb,
            decoder,
            scaler,
            encoder,
            info,
            config,
            out_step,
            first_pts: None,
            last_slot: None,
            next_boundary: grid_offset,
            queue: VecDeque::new(),
            input_done: false,
            flushed: false,
            frames_in: 0,
            frames_out: 0,
        })
    }

    fn fail(&self, reason: impl Into<String>) -> SourceError {
        SourceError::Damaged {
            path: self.path.clone(),
            packets: self.frames_in,
            reason: reason.into(),
        }
    }

    /// Encodes one decoded frame (or drops it when decimating). Without scaling the decoded
    /// frame itself goes to the encoder: no pixel copy.
    fn encode(&mut self, frame: &mut ffmpeg::frame::Video) -> Result<(), SourceError> {
        let Some(pts_in) = frame.timestamp().or(frame.pts()) else {
            return Ok(());
        };
        let first = *self.first_pts.get_or_insert(pts_in);
        let ticks = rescale(pts_in - first, self.in_tb, OUT_TB);
        if ticks < 0 {
            return Ok(());
        }
        let pts = match self.out_step {
            Some(step) => {
                // Keep the first frame of every output slot; place it on the slot.
                let slot = ticks / step;
                if self.last_slot.is_some_and(|last| slot <= last) {
                    return Ok(());
                }
                self.last_slot = Some(slot);
                slot * step
            }
            None => ticks,
        };
        let mut scaled;
        let out = match &mut self.scaler {
            Some(scaler) => {
                scaled = ffmpeg::frame::Video::empty();
                scaler
                    .0
                    .run(frame, &mut scaled)
                    .map_err(|e| SourceError::BadStream {
                        path: self.path.clone(),
                        reason: format!("scaling: {e}"),
                    })?;
                &mut scaled
            }
            None => frame,
        };
        out.set_pts(Some(pts));
        let boundary_ticks = |ms: i64| ms * i64::from(OUT_TB.den) / 1000;
        let first_frame = self.frames_out == 0;
        self.frames_out += 1;
        if first_frame || pts >= boundary_ticks(self.next_boundary) {
            out.set_kind(ffmpeg::picture::Type::I);
            let step = self.config.chunk_ms.max(1) as i64;
            while pts >= boundary_ticks(self.next_boundary) {
                self.next_boundary += step;
            }
        } else {
            out.set_kind(ffmpeg::picture::Type::None);
        }
        self.encoder
            .send_frame(out)
            .map_err(|e| self.fail(format!("encoding: {e}")))?;
        self.drain_encoder();
        Ok(())
    }

    fn drain_encoder(&mut self) {
        ffi::drain_encoder(&mut self.encoder, 0, &mut self.queue);
    }

    fn drain_decoder(&mut self) -> Result<(), SourceError> {
        let mut frame = ffmpeg::frame::Video::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            self.encode(&mut frame)?;
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
            if let Some(p) = self.queue.pop_front() {
                return Ok(Some(p));
            }
            if self.flushed {
                return Ok(None);
            }
            if self.input_done {
                let _ = self.decoder.send_eof();
                self.drain_decoder()?;
                let _ = self.encoder.send_eof();
                self.drain_encoder();
                self.flushed = true;
                continue;
            }
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream_index => {
                    self.frames_in += 1;
                    if self.decoder.send_packet(&packet).is_err() {
                        tracing::warn!(path = %self.path.display(), packet = self.frames_in, "undecodable packet skipped");
                    }
                    self.drain_decoder()?;
                }
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => self.input_done = true,
                Err(e) => return Err(self.fail(e.to_string())),
            }
        }
    }
}

fn rescale(v: i64, from: Rational, to: Rational) -> i64 {
    let num = i128::from(v) * i128::from(from.num) * i128::from(to.den);
    let den = i128::from(from.den) * i128::from(to.num);
    if den == 0 {
        return 0;
    }
    // Round to nearest.
    let q = (num.abs() + den / 2) / den;
    (if num < 0 { -q } else { q }) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_keeps_aspect_and_even_numbers() {
        let mut c = TranscodeConfig::new(1000);
        assert_eq!(c.output_size(1920, 1080), (1920, 1080));
        c.max_height = Some(720);
        assert_eq!(c.output_size(1920, 1080), (1280, 720));
        assert_eq!(c.output_size(1280, 720), (1280, 720));
        assert_eq!(c.output_size(642, 362), (642, 362));
        c.max_height = Some(181);
        assert_eq!(c.output_size(320, 240), (240, 180));
        c.scale = Some((641, 359));
        assert_eq!(c.output_size(1920, 1080), (640, 358));
    }

    #[test]
    fn rescales_to_the_nearest_tick() {
        assert_eq!(rescale(512, Rational::new(1, 15360), OUT_TB), 3000);
        assert_eq!(rescale(1, Rational::new(1, 25), OUT_TB), 3600);
        assert_eq!(rescale(-512, Rational::new(1, 15360), OUT_TB), -3000);
    }
}
