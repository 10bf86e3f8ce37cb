use std::path::{Path, PathBuf};

use crispy_core::{Codec, EncodedPacket, PacketSource, Rational, StreamInfo};
use ffmpeg_next as ffmpeg;
use ffmpeg_next::media::Type as MediaType;

use crate::{SourceError, ffi};

/// A video file read packet by packet with libavformat (stream copy: nothing is decoded).
pub struct FileSource {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    info: StreamInfo,
    creation_time: Option<String>,
    container_duration_s: Option<f64>,
    packets: u64,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .field("stream_index", &self.stream_index)
            .field("info", &self.info)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Opens `path` and selects its best video stream.
    ///
    /// Fails with a specific [`SourceError`] for a missing path, a directory, an empty file,
    /// a file FFmpeg cannot parse and a file without video.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        let path = path.as_ref().to_path_buf();
        check_file(&path)?;
        crate::init();

        let input = ffmpeg::format::input(&path).map_err(|source| SourceError::NotMedia {
            path: path.clone(),
            source,
        })?;
        let Some(stream) = input.streams().best(MediaType::Video) else {
            let found: Vec<String> = input
                .streams()
                .map(|s| {
                    let p = s.parameters();
                    format!("{:?}({})", p.medium(), p.id().name()).to_lowercase()
                })
                .collect();
            let found = if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            };
            return Err(SourceError::NoVideo { path, found });
        };
        let stream_index = stream.index();
        let params = stream.parameters();
        let raw = ffi::raw_params(&params);
        let tb = stream.time_base();
        let time_base = Rational::new(tb.numerator(), tb.denominator());
        if !time_base.is_positive() {
            return Err(SourceError::BadStream {
                path,
                reason: format!("invalid time base {time_base}"),
            });
        }
        let (Ok(width), Ok(height)) = (u32::try_from(raw.width), u32::try_from(raw.height)) else {
            return Err(SourceError::BadStream {
                path,
                reason: format!("invalid dimensions {}x{}", raw.width, raw.height),
            });
        };
        let codec = match params.id() {
            ffmpeg::codec::Id::H264 => Codec::H264,
            ffmpeg::codec::Id::HEVC => Codec::H265,
            other => Codec::Other(other.name().to_owned()),
        };
        let rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .map(|r| Rational::new(r.numerator(), r.denominator()))
            .find(|r| r.is_positive());
        let duration = Some(stream.duration()).filter(|d| *d > 0);
        let frame_count = u64::try_from(stream.frames()).ok().filter(|n| *n > 0);
        let info = StreamInfo {
            codec,
            profile: raw.profile,
            width,
            height,
            time_base,
            frame_rate: rate,
            extradata: raw.extradata,
            duration,
            frame_count,
        };
        let creation_time = input.metadata().get("creation_time").map(str::to_owned);
        let container_duration_s = Some(input.duration())
            .filter(|d| *d > 0)
            .map(|d| d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE));
        tracing::debug!(
            path = %path.display(),
            codec = %info.codec,
            width = info.width,
            height = info.height,
            time_base = %info.time_base,
            "opened file source"
        );
        Ok(Self {
            path,
            input,
            stream_index,
            info,
            creation_time,
            container_duration_s,
            packets: 0,
        })
    }

    /// The path this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container's `creation_time` tag, verbatim, when present.
    pub fn creation_time(&self) -> Option<&str> {
        self.creation_time.as_deref()
    }

    /// The container's duration in seconds, when known (for progress display).
    pub fn duration_secs(&self) -> Option<f64> {
        self.container_duration_s
    }

    /// Video packets delivered so far.
    pub fn packets_read(&self) -> u64 {
        self.packets
    }

    fn damaged(&self, reason: impl Into<String>) -> SourceError {
        SourceError::Damaged {
            path: self.path.clone(),
            packets: self.packets,
            reason: reason.into(),
        }
    }
}

impl PacketSource for FileSource {
    type Error = SourceError;

    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_packet(&mut self) -> Result<Option<EncodedPacket>, SourceError> {
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(e) => return Err(self.damaged(e.to_string())),
            }
            if packet.stream() != self.stream_index {
                continue;
            }
            if packet.is_corrupt() {
                return Err(self.damaged("FFmpeg flagged a packet as corrupt"));
            }
            let (pts, dts) = match (packet.pts(), packet.dts()) {
                (Some(p), Some(d)) => (p, d),
                (Some(p), None) => (p, p),
                (None, Some(d)) => (d, d),
                (None, None) => return Err(self.damaged("a video packet has no timestamp")),
            };
            let keyframe = packet.is_key();
            let duration = packet.duration();
            let data = ffi::packet_bytes(packet);
            if data.is_empty() {
                continue;
            }
            self.packets += 1;
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

/// Rejects what FFmpeg would report vaguely: absent paths, directories, empty files,
/// unreadable files.
fn check_file(path: &Path) -> Result<(), SourceError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceError::NotFound { path: path.into() });
        }
        Err(source) => {
            return Err(SourceError::Io {
                path: path.into(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(SourceError::NotAFile { path: path.into() });
    }
    if meta.len() == 0 {
        return Err(SourceError::Empty { path: path.into() });
    }
    std::fs::File::open(path).map_err(|source| SourceError::Io {
        path: path.into(),
        source,
    })?;
    Ok(())
}
