//! A live source with no camera: an FFmpeg filter graph (`testsrc2` by default) encoded with
//! libx264 and paced in real time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crispy_core::{Codec, EncodedPacket, PacketSource, Rational, StreamInfo};
use ffmpeg_next as ffmpeg;

use crate::{SourceError, ffi};

/// Time base of the synthetic stream's timestamps.
const TIME_BASE: Rational = Rational::new(1, 90_000);

/// What the synthetic source generates.
#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    /// A lavfi filter graph producing video, e.g. `testsrc2=size=1280x720:rate=25`.
    pub graph: String,
    /// Keyframe interval in frames (0: one per second).
    pub gop: u32,
    /// Emit frames at their presentation time (a live camera) instead of as fast as possible.
    pub realtime: bool,
    /// Wall-clock alignment: keyframes exactly on the UTC grid of this period (ms) instead of
    /// every `gop` frames, for chunks whose boundaries line up across cameras.
    pub align_ms: Option<u64>,
    /// Keyframes exactly every this many ms of media time from the first frame (forced as
    /// IDR) instead of every `gop` frames: chunks of exactly that length. `align_ms` wins.
    pub chunk_ms: Option<u64>,
}

impl SyntheticConfig {
    /// The default test pattern: 1280x720, 25 fps, one keyframe per second, real time.
    pub fn testsrc() -> Self {
        Self::graph("testsrc2=size=1280x720:rate=25")
    }

    /// A custom lavfi graph (`lavfi:<graph>` on the command line).
    pub fn graph(graph: impl Into<String>) -> Self {
        Self {
            graph: graph.into(),
            gop: 0,
            realtime: true,
            align_ms: None,
            chunk_ms: None,
        }
    }

    /// Parses `testsrc` or `lavfi:<graph>`; `None` for anything else.
    pub fn parse(source: &str) -> Option<Self> {
        if source == "testsrc" {
            Some(Self::testsrc())
        } else {
            source
                .strip_prefix("lavfi:")
                .filter(|g| !g.is_empty())
                .map(Self::graph)
        }
    }
}

/// Encoded frames from a filter graph, like a camera that never fails.
pub struct SyntheticSource {
    graph: String,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    decoder: ffmpeg::decoder::Video,
    encoder: ffmpeg::encoder::Video,
    info: StreamInfo,
    ticks_per_frame: i64,
    frames_in: i64,
    queue: VecDeque<EncodedPacket>,
    /// Monotonic and wall-clock time of media time zero (taken together at open).
    epoch: (Instant, std::time::SystemTime),
    align_ms: Option<u64>,
    chunk_ms: Option<u64>,
    next_grid_ms: Option<u64>,
    realtime: bool,
    input_done: bool,
    shutdown: Arc<AtomicBool>,
}

impl std::fmt::Debug for SyntheticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("graph", &self.graph)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl SyntheticSource {
    /// Builds the graph and the encoder.
    pub fn open(config: &SyntheticConfig, shutdown: Arc<AtomicBool>) -> Result<Self, SourceError> {
        crate::init();
        let graph = format!("{},format=yuv420p", config.graph);
        let bad = |reason: String| SourceError::Connect {
            url: format!("lavfi:{}", config.graph),
            reason,
        };
        let format = ffi::lavfi_format()
            .map_err(|e| bad(format!("FFmpeg's lavfi input device is unavailable ({e})")))?;
        let opened = ffi::with_ffmpeg_errors(|| {
            ffmpeg::format::open_with(
                &graph,
                &ffmpeg::Format::Input(format),
                ffmpeg::Dictionary::new(),
            )
        });
        let input = match opened {
            Ok(ffmpeg::format::context::Context::Input(i)) => i,
            Ok(_) => return Err(bad("not an input".to_owned())),
            Err((e, said)) => {
                return Err(SourceError::InvalidUrl {
                    url: format!("lavfi:{}", config.graph),
                    reason: match said.is_empty() {
                        true => format!("invalid filter graph: {e}"),
                        false => format!("invalid filter graph: {}", said.join("; ")),
                    },
                });
            }
        };
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| bad("the graph produces no video".to_owned()))?;
        let stream_index = stream.index();
        // The graph's own rate: lavfi leaves the average unset without probing, but gives
        // the real base rate (`rate=50` is 50/1).
        let rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .find(|r| r.numerator() > 0 && r.denominator() > 0)
            .unwrap_or(ffmpeg::Rational::new(25, 1));
        let decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(|e| bad(format!("raw video decoder: {e}")))?;
        let (width, height) = (decoder.width(), decoder.height());
        let fps = Rational::new(rate.numerator(), rate.denominator());
        let ticks_per_frame =
            (i64::from(TIME_BASE.den) * i64::from(fps.den) / i64::from(fps.num)).max(1);
        let gop = if config.gop == 0 {
            (fps.as_f64().round() as u32).max(1)
        } else {
            config.gop
        };

        let codec = ffmpeg::encoder::find_by_name("libx264")
            .ok_or_else(|| bad("FFmpeg was built without libx264".to_owned()))?;
        let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| bad(format!("encoder: {e}")))?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(ffmpeg::format::Pixel::YUV420P);
        enc.set_time_base(ffmpeg::Rational::new(TIME_BASE.num, TIME_BASE.den));
        enc.set_frame_rate(Some(rate));
        enc.set_gop(gop);
        enc.set_max_b_frames(0);
        enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("preset", "ultrafast");
        opts.set("tune", "zerolatency");
        if config.align_ms.is_some() || config.chunk_ms.is_some() {
            // Keyframes only where the grid puts them (forced as IDR).
            opts.set("forced-idr", "1");
            opts.set("x264-params", "keyint=infinite:scenecut=0");
        } else {
            opts.set(
                "x264-params",
                &format!("keyint={gop}:min-keyint={gop}:scenecut=0"),
            );
        }
        let encoder = enc
            .open_as_with(codec, opts)
            .map_err(|e| bad(format!("opening libx264: {e}")))?;
        let extradata = ffi::encoder_extradata(&encoder);
        let info = StreamInfo {
            codec: Codec::H264,
            profile: Some("Constrained Baseline".to_owned()),
            width,
            height,
            time_base: TIME_BASE,
            frame_rate: Some(fps),
            extradata,
            duration: None,
            frame_count: None,
        };
        Ok(Self {
            graph: config.graph.clone(),
            input,
            stream_index,
            decoder,
            encoder,
            info,
            ticks_per_frame,
            frames_in: 0,
            queue: VecDeque::new(),
            epoch: (Instant::now(), std::time::SystemTime::now()),
            align_ms: config.align_ms,
            chunk_ms: config.chunk_ms,
            next_grid_ms: None,
            realtime: config.realtime,
            input_done: false,
            shutdown,
        })
    }

    fn drain_encoder(&mut self) -> Result<(), SourceError> {
        ffi::drain_encoder(&mut self.encoder, self.ticks_per_frame, &mut self.queue);
        Ok(())
    }

    /// Feeds one raw frame through the encoder, waiting for its time when paced.
    fn step(&mut self) -> Result<bool, SourceError> {
        let bad = |e: ffmpeg::Error| SourceError::Disconnected {
            url: "lavfi".to_owned(),
            packets: 0,
            reason: e.to_string(),
        };
        let mut frame = ffmpeg::frame::Video::empty();
        loop {
            if self.decoder.receive_frame(&mut frame).is_ok() {
                break;
            }
            if self.input_done {
                return Ok(false);
            }
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream_index => {
                    self.decoder.send_packet(&packet).map_err(bad)?
                }
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => {
                    self.input_done = true;
                    let _ = self.decoder.send_eof();
                }
                Err(e) => return Err(bad(e)),
            }
        }
        let pts = self.frames_in * self.ticks_per_frame;
        self.frames_in += 1;
        if self.realtime {
            let due = self.epoch.0
                + Duration::from_micros((pts as u64) * 1_000_000 / u64::from(TIME_BASE.den as u32));
            while let Some(wait) = due.checked_duration_since(Instant::now()) {
                if self.shutdown.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
        }
        frame.set_pts(Some(pts));
        // Raw frames arrive marked as I-pictures; libx264 would make each a keyframe. Force
        // one on the first frame at or after every grid line: the UTC grid with alignment,
        // else every chunk length of media time.
        let media_ms = (pts as u64) * 1000 / u64::from(TIME_BASE.den as u32);
        let grid = match (self.align_ms, self.chunk_ms) {
            (Some(period), _) => Some((self.epoch_unix_ms() + media_ms, period)),
            (None, Some(period)) => Some((media_ms, period)),
            (None, None) => None,
        };
        let kind = match grid {
            Some((clock_ms, period)) => {
                let period = period.max(1);
                let next = *self.next_grid_ms.get_or_insert(0);
                if clock_ms >= next {
                    self.next_grid_ms = Some((clock_ms / period + 1) * period);
                    ffmpeg::picture::Type::I
                } else {
                    ffmpeg::picture::Type::None
                }
            }
            None => ffmpeg::picture::Type::None,
        };
        frame.set_kind(kind);
        self.encoder.send_frame(&frame).map_err(bad)?;
        self.drain_encoder()?;
        Ok(true)
    }
}

impl SyntheticSource {
    /// Wall-clock time of media time zero (the receive clock's origin).
    pub fn epoch(&self) -> std::time::SystemTime {
        self.epoch.1
    }

    fn epoch_unix_ms(&self) -> u64 {
        self.epoch
            .1
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

impl PacketSource for SyntheticSource {
    type Error = SourceError;

    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_packet(&mut self) -> Result<Option<EncodedPacket>, SourceError> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Ok(Some(p));
            }
            if self.shutdown.load(Ordering::Relaxed) {
                return Err(SourceError::Shutdown);
            }
            if !self.step()? {
                if self.shutdown.load(Ordering::Relaxed) {
                    return Err(SourceError::Shutdown);
                }
                // End of a finite graph: flush the encoder, then end.
                let _ = self.encoder.send_eof();
                self.drain_encoder()?;
                return Ok(self.queue.pop_front());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_synthetic_sources() {
        assert!(SyntheticConfig::parse("testsrc").is_some());
        assert_eq!(
            SyntheticConfig::parse("lavfi:testsrc2=size=320x240")
                .map(|c| c.graph)
                .as_deref(),
            Some("testsrc2=size=320x240")
        );
        assert!(SyntheticConfig::parse("lavfi:").is_none());
        assert!(SyntheticConfig::parse("clip.mp4").is_none());
    }

    #[test]
    fn encodes_a_finite_graph_with_keyframes_every_second() {
        let mut config = SyntheticConfig::graph("testsrc2=size=320x240:rate=25:duration=2");
        config.realtime = false;
        let mut s = SyntheticSource::open(&config, Arc::new(AtomicBool::new(false))).expect("open");
        assert_eq!((s.stream_info().width, s.stream_info().height), (320, 240));
        assert!(
            !s.stream_info().extradata.is_empty(),
            "SPS/PPS in extradata"
        );
        let mut packets = Vec::new();
        while let Some(p) = s.next_packet().expect("read") {
            packets.push(p);
        }
        assert_eq!(packets.len(), 50);
        let keys: Vec<usize> = packets
            .iter()
            .enumerate()
            .filter(|(_, p)| p.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 25]);
        assert!(packets.windows(2).all(|w| w[1].dts - w[0].dts == 3600));
    }

    #[test]
    fn the_graphs_own_rate_times_the_frames() {
        // It was 25 fps whatever the graph said: `rate=50` made 2 s of video last 4 s.
        for (graph, fps, step, frames) in [
            (
                "testsrc2=size=160x120:rate=50:duration=1",
                (50, 1),
                1800,
                50,
            ),
            (
                "testsrc2=size=160x120:rate=ntsc:duration=1",
                (30000, 1001),
                3003,
                30,
            ),
        ] {
            let mut config = SyntheticConfig::graph(graph);
            config.realtime = false;
            let mut s =
                SyntheticSource::open(&config, Arc::new(AtomicBool::new(false))).expect("open");
            assert_eq!(
                s.stream_info().frame_rate,
                Some(Rational::new(fps.0, fps.1))
            );
            let mut packets = Vec::new();
            while let Some(p) = s.next_packet().expect("read") {
                packets.push(p);
            }
            assert_eq!(packets.len(), frames, "{graph}");
            assert!(
                packets.windows(2).all(|w| w[1].dts - w[0].dts == step),
                "{graph}"
            );
            let keys = packets.iter().filter(|p| p.keyframe).count();
            assert_eq!(keys, 1, "{graph}: one keyframe per second");
        }
    }

    #[test]
    fn realtime_pacing_takes_the_stream_duration() {
        let config = SyntheticConfig::graph("testsrc2=size=160x120:rate=25:duration=1");
        let mut s = SyntheticSource::open(&config, Arc::new(AtomicBool::new(false))).expect("open");
        let t0 = Instant::now();
        let mut n = 0;
        while s.next_packet().expect("read").is_some() {
            n += 1;
        }
        assert_eq!(n, 25);
        // 25 frames at 25 fps: the last is due 0.96 s after the first.
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn a_bad_graph_is_a_clear_error() {
        // FFmpeg's own error code says only "Invalid argument" or "Option not found": the
        // error must carry what its log said about the graph.
        for (graph, said) in [
            (
                "testsrc2=size=160x120,nosuchfilter",
                "invalid filter graph: No such filter: 'nosuchfilter'",
            ),
            (
                "testsrc2=size=160x120:rat=10",
                "invalid filter graph: Option 'rat' not found",
            ),
        ] {
            let err = SyntheticSource::open(
                &SyntheticConfig::graph(graph),
                Arc::new(AtomicBool::new(false)),
            )
            .expect_err("must fail");
            assert!(matches!(err, SourceError::InvalidUrl { .. }), "{err:?}");
            let err = err.to_string();
            assert!(
                err.starts_with(&format!("invalid source URL lavfi:{graph}: {said}")),
                "{err}"
            );
        }
    }
}
