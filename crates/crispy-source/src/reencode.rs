//! The decode → scale → libx264 stage shared by every transcoding source (files and live
//! cameras): IDR frames forced exactly on the chunk grid, frames dropped to reach `--fps`.

use std::collections::VecDeque;

use crispy_core::{Codec, EncodedPacket, Rational, StreamInfo};
use ffmpeg_next as ffmpeg;
use ffmpeg_next::format::Pixel;

use crate::ffi;
use crate::transcode::TranscodeConfig;

/// Time base of transcoded timestamps: 90 kHz, exact for 24, 25, 30, 50 and 60 fps.
pub(crate) const OUT_TB: Rational = Rational::new(1, 90_000);

/// Backward timestamp steps up to this size (ms) drop the frame; larger ones restart a file's
/// output timestamps (see `Reencoder::restart_timestamps`) and end a camera's connection.
const MAX_BACKWARD_MS: i64 = 1000;

/// How input timestamps map onto output timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    /// Output time zero is the first decoded frame (files).
    FromFirstFrame,
    /// Output timestamps are the input's, rescaled (live: keeps the RTCP mapping of PTS 0).
    Absolute,
}

/// What went wrong inside the stage.
#[derive(Debug)]
pub(crate) struct ReencodeError {
    /// What happened, in words.
    pub(crate) reason: String,
    /// libx264 could not be opened for the stream (its size, the settings, an FFmpeg
    /// without it): nothing is wrong with the source's data.
    pub(crate) encoder: bool,
}

impl ReencodeError {
    /// A failure decoding, scaling or encoding the stream.
    pub(crate) fn stream(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            encoder: false,
        }
    }

    /// libx264 refused to open for the stream.
    fn encoder(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            encoder: true,
        }
    }
}

/// The largest picture libx264 encodes, each way.
const X264_MAX_SIDE: u32 = 16384;

/// Decoder, optional scaler and libx264 encoder of one stream.
///
/// The encoder is opened on the first decoded frame, when the picture's real size and pixel
/// format are known (an MJPEG camera's stream description often has neither).
pub(crate) struct Reencoder {
    decoder: ffmpeg::decoder::Video,
    in_tb: Rational,
    in_rate: Option<ffmpeg::Rational>,
    timing: Timing,
    config: TranscodeConfig,
    /// Output frame rate when decimating: frame slots of `1/fps` s.
    out_rate: Option<Rational>,
    /// The scaler and the input (size, format) it was built for; `None` inside when the
    /// decoded frames go to the encoder as they are.
    scaler: Option<((u32, u32, Pixel), Option<ffi::Scaler>)>,
    encoder: Option<ffmpeg::encoder::Video>,
    info: Option<StreamInfo>,
    /// Wall-clock alignment: Unix ms of the input PTS given with it.
    wall_anchor: Option<(u64, i64)>,
    first_in_pts: Option<i64>,
    last_pts: Option<i64>,
    last_slot: Option<i64>,
    /// Output ticks of the next forced keyframe.
    next_boundary: Option<i64>,
    /// The output size fixed by the first frame: kept when the encoder is opened again after
    /// a file's timestamps restart.
    output_size: Option<(u32, u32)>,
    queue: VecDeque<EncodedPacket>,
    pub(crate) frames_out: u64,
    /// Frames dropped because their timestamp did not advance.
    pub(crate) frames_dropped: u64,
    /// Packets the decoder refused.
    pub(crate) packets_skipped: u64,
}

/// The pixel aspect ratio that shows `output` (width, height) with the display shape `input`
/// has with pixels of `sar`; `None` for square or unknown pixels that stay square.
fn output_sar(sar: (i32, i32), input: (u32, u32), output: (u32, u32)) -> Option<(i32, i32)> {
    let (sn, sd) = (i128::from(sar.0), i128::from(sar.1));
    if sn <= 0 || sd <= 0 {
        return None;
    }
    let mut num = sn * i128::from(input.0) * i128::from(output.1);
    let mut den = sd * i128::from(output.0) * i128::from(input.1);
    if num == 0 || den == 0 {
        return None;
    }
    let g = gcd(num, den);
    (num, den) = (num / g, den / g);
    (num != den).then(|| Some((i32::try_from(num).ok()?, i32::try_from(den).ok()?)))?
}

/// The output frame slot (of `1/rate` s each, from tick 0) that `ticks` (OUT_TB) falls in:
/// the last slot starting at or before it. Exact, whatever the rate: slot `n` of 7 fps
/// starts at `ceil(n × 90000 / 7)` ticks, so the seventh frame starts the next second on its
/// tick instead of drifting a fraction of a tick earlier per frame.
fn frame_slot(ticks: i64, rate: Rational) -> i64 {
    let per_second = i128::from(OUT_TB.den) * i128::from(rate.den);
    let slot = (i128::from(ticks) * i128::from(rate.num)).div_euclid(per_second);
    i64::try_from(slot).unwrap_or(i64::MAX)
}

/// The first tick (OUT_TB) of output frame slot `slot`: `ceil(slot / rate)` seconds in ticks.
fn slot_start(slot: i64, rate: Rational) -> i64 {
    let ticks = i128::from(slot) * i128::from(OUT_TB.den) * i128::from(rate.den);
    let start = -(-ticks).div_euclid(i128::from(rate.num));
    i64::try_from(start).unwrap_or(i64::MAX)
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Reencoder {
    /// A stage decoding the stream described by `params` (time base `in_tb`).
    pub(crate) fn new(
        params: ffmpeg::codec::Parameters,
        in_tb: Rational,
        in_rate: Option<ffmpeg::Rational>,
        config: TranscodeConfig,
        timing: Timing,
    ) -> Result<Self, ReencodeError> {
        let mut ctx = ffmpeg::codec::context::Context::from_parameters(params)
            .map_err(|e| ReencodeError::stream(format!("decoder parameters: {e}")))?;
        // Decode on every core.
        ctx.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| ReencodeError::stream(format!("no decoder for this codec: {e}")))?;
        let in_rate = in_rate.filter(|r| r.numerator() > 0 && r.denominator() > 0);
        // A rate at or above the source's drops nothing: the frames keep their own times
        // (placing them on a finer grid would only move them).
        let mut config = config;
        if let (Some(f), Some(r)) = (config.fps, in_rate)
            && i64::from(f.num) * i64::from(r.denominator())
                >= i64::from(r.numerator()) * i64::from(f.den)
        {
            config.fps = None;
        }
        let out_rate = config.fps.filter(|f| f.is_positive());
        Ok(Self {
            decoder,
            in_tb,
            in_rate,
            timing,
            config,
            out_rate,
            scaler: None,
            encoder: None,
            info: None,
            wall_anchor: None,
            first_in_pts: None,
            last_pts: None,
            last_slot: None,
            next_boundary: None,
            output_size: None,
            queue: VecDeque::new(),
            frames_out: 0,
            frames_dropped: 0,
            packets_skipped: 0,
        })
    }

    /// Puts boundaries on the UTC grid: input PTS `pts` was at `unix_ms`. Call before the
    /// first frame is decoded.
    pub(crate) fn set_wall_anchor(&mut self, unix_ms: u64, pts: i64) {
        self.wall_anchor = Some((unix_ms, pts));
    }

    /// The output stream, once the first frame has been decoded.
    pub(crate) fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }

    /// The next encoded packet, if one is ready.
    pub(crate) fn pop(&mut self) -> Option<EncodedPacket> {
        self.queue.pop_front()
    }

    /// Decodes `packet` and encodes the frames it completes. A packet the decoder refuses is
    /// skipped (counted): one damaged frame must not end a stream.
    pub(crate) fn push(&mut self, packet: &ffmpeg::Packet) -> Result<(), ReencodeError> {
        if let Err(e) = self.decoder.send_packet(packet) {
            self.packets_skipped += 1;
            tracing::debug!("decoder skipped a packet: {e}");
        }
        self.drain_decoder()
    }

    /// Flushes decoder and encoder: every frame still inside comes out.
    pub(crate) fn finish(&mut self) -> Result<(), ReencodeError> {
        let _ = self.decoder.send_eof();
        self.drain_decoder()?;
        if let Some(encoder) = self.encoder.as_mut() {
            let _ = encoder.send_eof();
            ffi::drain_encoder(encoder, 0, &mut self.queue);
        }
        self.set_slot_durations();
        Ok(())
    }

    /// When decimating, each frame lasts until the next slot starts (what the last frame of
    /// the stream is given; the others' durations follow from the next frame's timestamp).
    fn set_slot_durations(&mut self) {
        let Some(rate) = self.out_rate else { return };
        for packet in self.queue.iter_mut().filter(|p| p.duration == 0) {
            let next = slot_start(frame_slot(packet.pts, rate).saturating_add(1), rate);
            packet.duration = next.saturating_sub(packet.pts).max(0);
        }
    }

    fn drain_decoder(&mut self) -> Result<(), ReencodeError> {
        let mut frame = ffmpeg::frame::Video::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            self.encode(&mut frame)?;
        }
        Ok(())
    }

    /// Opens libx264 for frames of `in_w`x`in_h` whose pixels have the aspect ratio `sar`
    /// (`0/1` when unknown).
    fn open_encoder(&mut self, in_w: u32, in_h: u32, sar: (i32, i32)) -> Result<(), ReencodeError> {
        let (out_w, out_h) = *self
            .output_size
            .get_or_insert_with(|| self.config.output_size(in_w, in_h));
        if out_w > X264_MAX_SIDE || out_h > X264_MAX_SIDE {
            return Err(ReencodeError::encoder(format!(
                "the picture would be {out_w}x{out_h}, and libx264 encodes at most \
                 {X264_MAX_SIDE} pixels each way: make it smaller with --scale or --max-height"
            )));
        }
        let rate = self
            .config
            .fps
            .filter(|f| f.is_positive())
            .map(|f| ffmpeg::Rational::new(f.num, f.den))
            .or(self.in_rate)
            .unwrap_or(ffmpeg::Rational::new(25, 1));
        let codec = ffmpeg::encoder::find_by_name("libx264")
            .ok_or_else(|| ReencodeError::encoder("FFmpeg was built without libx264".to_owned()))?;
        let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| ReencodeError::encoder(format!("encoder: {e}")))?;
        enc.set_width(out_w);
        enc.set_height(out_h);
        // Non-square pixels (PAL/NTSC SD, anamorphic): keep the picture's shape through the
        // scaling, or it is shown squashed.
        if let Some((num, den)) = output_sar(sar, (in_w, in_h), (out_w, out_h)) {
            enc.set_aspect_ratio(ffmpeg::Rational::new(num, den));
        }
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(ffmpeg::Rational::new(OUT_TB.num, OUT_TB.den));
        enc.set_frame_rate(Some(rate));
        enc.set_max_b_frames(0);
        enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("preset", &self.config.preset);
        // Keyframes only where we force them (IDR, so every chunk decodes on its own).
        opts.set("forced-idr", "1");
        opts.set("x264-params", "keyint=infinite:scenecut=0");
        match self.config.bitrate_kbps {
            Some(kbps) => {
                enc.set_bit_rate(usize::try_from(kbps.saturating_mul(1000)).unwrap_or(usize::MAX))
            }
            None => opts.set("crf", &self.config.crf.to_string()),
        }
        let encoder = enc.open_as_with(codec, opts).map_err(|e| {
            ReencodeError::encoder(format!(
                "opening libx264 (preset {}): {e}",
                self.config.preset
            ))
        })?;
        let extradata = ffi::encoder_extradata(&encoder);
        self.info = Some(StreamInfo {
            codec: Codec::H264,
            profile: ffi::h264_profile_of_annexb(&extradata),
            width: out_w,
            height: out_h,
            time_base: OUT_TB,
            frame_rate: Some(Rational::new(rate.numerator(), rate.denominator())),
            extradata,
            duration: None,
            frame_count: None,
        });
        self.encoder = Some(encoder);
        Ok(())
    }

    /// Makes sure the scaler fits `frame` (rebuilt when the input's size or format changes
    /// mid-stream: the output size stays what it was).
    fn fit_scaler(&mut self, frame: &ffmpeg::frame::Video) -> Result<(), ReencodeError> {
        let input = (frame.width(), frame.height(), frame.format());
        if self
            .scaler
            .as_ref()
            .is_some_and(|(built, _)| *built == input)
        {
            return Ok(());
        }
        let Some(info) = self.info.as_ref() else {
            return Err(ReencodeError::stream("encoder not open".to_owned()));
        };
        let (out_w, out_h) = (info.width, info.height);
        if let Some(((w, h, _), _)) = &self.scaler {
            tracing::warn!(
                from = %format_args!("{w}x{h}"),
                to = %format_args!("{}x{}", input.0, input.1),
                output = %format_args!("{out_w}x{out_h}"),
                "input picture size changed; scaling to the same output size"
            );
        }
        let scaler = if (input.0, input.1, input.2) == (out_w, out_h, Pixel::YUV420P) {
            None
        } else {
            Some(ffi::Scaler(
                ffmpeg::software::scaling::Context::get(
                    input.2,
                    input.0,
                    input.1,
                    Pixel::YUV420P,
                    out_w,
                    out_h,
                    ffmpeg::software::scaling::Flags::BICUBIC,
                )
                .map_err(|e| {
                    ReencodeError::stream(format!(
                        "scaler {}x{} -> {out_w}x{out_h}: {e}",
                        input.0, input.1
                    ))
                })?,
            ))
        };
        self.scaler = Some((input, scaler));
        Ok(())
    }

    /// Encodes one decoded frame (or drops it when decimating). Without scaling the decoded
    /// frame itself goes to the encoder: no pixel copy.
    fn encode(&mut self, frame: &mut ffmpeg::frame::Video) -> Result<(), ReencodeError> {
        let Some(pts_in) = frame.timestamp().or(frame.pts()) else {
            self.frames_dropped += 1;
            return Ok(());
        };
        if self.timing == Timing::FromFirstFrame
            && let (Some(first), Some(last)) = (self.first_in_pts, self.last_pts)
            && OUT_TB.ticks_to_millis(last - rescale(pts_in - first, self.in_tb, OUT_TB))
                > MAX_BACKWARD_MS
        {
            self.restart_timestamps(pts_in);
        }
        let first_in = *self.first_in_pts.get_or_insert(pts_in);
        let ticks = match self.timing {
            Timing::FromFirstFrame => rescale(pts_in - first_in, self.in_tb, OUT_TB),
            Timing::Absolute => rescale(pts_in, self.in_tb, OUT_TB),
        };
        let pts = match self.out_rate {
            Some(rate) => {
                // Keep the first frame of every output slot; place it on the slot.
                let slot = frame_slot(ticks, rate);
                if self.last_slot.is_some_and(|last| slot <= last) {
                    if self.last_slot.is_some_and(|last| slot < last) {
                        self.check_backward(ticks)?;
                    }
                    return Ok(());
                }
                self.last_slot = Some(slot);
                slot_start(slot, rate)
            }
            None => ticks,
        };
        if self.last_pts.is_some_and(|last| pts <= last) {
            return self.check_backward(pts);
        }
        if self.encoder.is_none() {
            let sar = frame.aspect_ratio();
            self.open_encoder(
                frame.width(),
                frame.height(),
                (sar.numerator(), sar.denominator()),
            )?;
        }
        self.fit_scaler(frame)?;
        let boundary = match self.next_boundary {
            Some(b) => b,
            None => {
                let offset_ms = match self.wall_anchor {
                    Some((unix_ms, anchor_pts)) => {
                        let since = self.in_tb.ticks_to_millis(pts_in - anchor_pts);
                        let wall = (unix_ms as i64 + since).max(0) as u64;
                        let period = self.config.chunk_ms.max(1);
                        (period - wall % period) % period
                    }
                    None => self.config.grid_offset_ms.unwrap_or(0),
                };
                pts + offset_ms as i64 * i64::from(OUT_TB.den) / 1000
            }
        };
        // The first frame, also after the encoder was opened again (a restart).
        let first_frame = self.last_pts.is_none();
        let kind = if first_frame || pts >= boundary {
            let step = self.config.chunk_ms.max(1) as i64 * i64::from(OUT_TB.den) / 1000;
            let mut next = boundary;
            while pts >= next {
                next += step;
            }
            self.next_boundary = Some(next);
            ffmpeg::picture::Type::I
        } else {
            self.next_boundary = Some(boundary);
            ffmpeg::picture::Type::None
        };
        self.last_pts = Some(pts);
        self.frames_out += 1;
        let mut scaled;
        let out = match self.scaler.as_mut().and_then(|(_, s)| s.as_mut()) {
            Some(scaler) => {
                scaled = ffmpeg::frame::Video::empty();
                scaler
                    .0
                    .run(frame, &mut scaled)
                    .map_err(|e| ReencodeError::stream(format!("scaling: {e}")))?;
                &mut scaled
            }
            None => frame,
        };
        out.set_pts(Some(pts));
        out.set_kind(kind);
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(ReencodeError::stream("encoder not open".to_owned()));
        };
        encoder
            .send_frame(out)
            .map_err(|e| ReencodeError::stream(format!("encoding: {e}")))?;
        ffi::drain_encoder(encoder, 0, &mut self.queue);
        self.set_slot_durations();
        Ok(())
    }

    /// A file's timestamps went back by more than [`MAX_BACKWARD_MS`] (files joined with
    /// `cat`, a recorder restarted within a file): what came before is flushed out of the
    /// encoder, and the encoder starts again on the frame at `pts_in`, whose output time is
    /// zero again. The chunker sees the output restart as it sees a copied stream's: it closes
    /// the chunk and flags the next, whose wall time continues from its end. Boundaries go
    /// on from there too, a whole chunk length after the restart (on the grid, with
    /// `--align wall`: where the chunk before ended, it was that far from the next line).
    fn restart_timestamps(&mut self, pts_in: i64) {
        tracing::warn!(
            "the input's timestamps restarted: the chunk in progress is closed, the next one \
             flagged as a discontinuity, and its times go on from where it ended"
        );
        if let Some(mut encoder) = self.encoder.take() {
            let _ = encoder.send_eof();
            ffi::drain_encoder(&mut encoder, 0, &mut self.queue);
        }
        self.set_slot_durations();
        let step = self.config.chunk_ms.max(1) as i64 * i64::from(OUT_TB.den) / 1000;
        // Where the last frame ends: one frame interval after it.
        let frame = self
            .info
            .as_ref()
            .and_then(|i| i.frame_rate)
            .filter(|r| r.is_positive())
            .map_or(0, |r| rescale(1, Rational::new(r.den, r.num), OUT_TB));
        let end = self.last_pts.map_or(0, |last| last.saturating_add(frame));
        let aligned = self.config.grid_offset_ms.is_some() || self.wall_anchor.is_some();
        let to_line = (self.next_boundary)
            .filter(|_| aligned)
            .map_or(step, |b| b.saturating_sub(end).rem_euclid(step));
        self.next_boundary = Some(if to_line == 0 { step } else { to_line });
        self.first_in_pts = Some(pts_in);
        self.last_pts = None;
        self.last_slot = None;
    }

    /// A frame whose timestamp does not advance: dropped when the step back is small, an
    /// error when the input's clock was reset (a camera's: files restart before this).
    fn check_backward(&mut self, pts: i64) -> Result<(), ReencodeError> {
        self.frames_dropped += 1;
        let last = self.last_pts.unwrap_or(pts);
        let back_ms = OUT_TB.ticks_to_millis(last - pts);
        if back_ms > MAX_BACKWARD_MS {
            return Err(ReencodeError::stream(format!(
                "timestamps went back by {back_ms} ms"
            )));
        }
        Ok(())
    }
}

/// `v` in `from` units as the nearest tick of `to`.
pub(crate) fn rescale(v: i64, from: Rational, to: Rational) -> i64 {
    let num = i128::from(v) * i128::from(from.num) * i128::from(to.den);
    let den = i128::from(from.den) * i128::from(to.num);
    if den == 0 {
        return 0;
    }
    let q = (num.abs() + den / 2) / den;
    (if num < 0 { -q } else { q }) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_slots_are_exact_at_any_rate() {
        let seven = Rational::new(7, 1);
        assert_eq!(slot_start(7, seven), 90_000);
        assert_eq!(slot_start(1, seven), 12_858);
        assert_eq!(frame_slot(89_999, seven), 6);
        assert_eq!(frame_slot(90_000, seven), 7);
        let ntsc = Rational::new(30_000, 1001);
        assert_eq!(slot_start(30_000, ntsc), 90_090_000);
        for rate in [seven, ntsc, Rational::new(11, 1), Rational::new(25, 2)] {
            for t in (-200_000..200_000).step_by(997) {
                let slot = frame_slot(t, rate);
                assert!(
                    slot_start(slot, rate) <= t && t < slot_start(slot + 1, rate),
                    "{t} at {rate}"
                );
            }
        }
    }

    #[test]
    fn rescales_to_the_nearest_tick() {
        assert_eq!(rescale(512, Rational::new(1, 15360), OUT_TB), 3000);
        assert_eq!(rescale(1, Rational::new(1, 25), OUT_TB), 3600);
        assert_eq!(rescale(-512, Rational::new(1, 15360), OUT_TB), -3000);
    }

    #[test]
    fn pixel_shapes_survive_scaling() {
        // PAL 16:9: 720x576 with 64:45 pixels.
        let pal = (64, 45);
        assert_eq!(output_sar(pal, (720, 576), (720, 576)), Some((64, 45)));
        assert_eq!(output_sar(pal, (720, 576), (360, 288)), Some((64, 45)));
        // Scaled to square pixels of the same shape: nothing to say.
        assert_eq!(output_sar(pal, (720, 576), (1024, 576)), None);
        assert_eq!(output_sar(pal, (720, 576), (1280, 720)), None);
        // Square pixels stretched by --scale keep the picture's shape.
        assert_eq!(output_sar((1, 1), (1920, 1080), (1280, 1080)), Some((3, 2)));
        assert_eq!(output_sar((0, 1), (720, 576), (360, 288)), None, "unknown");
        assert_eq!(output_sar((1, 1), (640, 360), (640, 360)), None);
    }
}
