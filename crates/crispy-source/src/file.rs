use std::path::{Path, PathBuf};

use crispy_core::{EncodedPacket, PacketSource, StreamInfo};
use ffmpeg_next as ffmpeg;

use crate::SourceError;
use crate::demux::{Demuxer, SelectError};

/// A video file read packet by packet with libavformat (stream copy: nothing is decoded).
pub struct FileSource {
    path: PathBuf,
    demuxer: Demuxer,
    creation_time: Option<String>,
    container_duration_s: Option<f64>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .field("info", &self.demuxer.info)
            .field("packets", &self.demuxer.packets)
            .finish_non_exhaustive()
    }
}

/// True when `path` begins with an ISO BMFF box FFmpeg's MOV demuxer knows (`ftyp`, or
/// `mdat`/`wide`/`free` in old QuickTime files): a text file named `.mp4` is also "without
/// `moov`" to FFmpeg, but it is no recording.
fn starts_like_mp4(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| matches!(&head[4..], b"ftyp" | b"mdat" | b"wide" | b"free"))
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

        let opened = crate::ffi::with_ffmpeg_errors(|| crate::ffi::open_file(&path));
        let input = opened.map_err(|(source, said)| {
            // An MP4/MOV whose recording was cut off before it was finalised: the media is
            // there, the index (`moov`) is not. Damaged, not "not a video file".
            if said.iter().any(|l| l.contains("moov atom not found")) && starts_like_mp4(&path) {
                return SourceError::Damaged {
                    path: path.clone(),
                    packets: 0,
                    reason: "moov atom not found: the MP4/MOV has no index, as when a \
                             recording is cut off before it is finalised, so no frame can be \
                             located"
                        .to_owned(),
                };
            }
            SourceError::NotMedia {
                path: path.clone(),
                source,
                said: said.join("; "),
            }
        })?;
        // Raw elementary streams (`.h264`, `.265` from a DVR export) carry no timestamps:
        // nothing says when a frame is shown, so no chunk could be timed.
        let format = input.format().name().to_owned();
        if matches!(format.as_str(), "h264" | "hevc") {
            return Err(SourceError::BadStream {
                path,
                reason: format!(
                    "a raw {} elementary stream has no timestamps; put it in a container \
                     first, at its real frame rate: ffmpeg -framerate 25 -i FILE -c copy out.mp4",
                    if format == "h264" { "H.264" } else { "H.265" }
                ),
            });
        }
        let creation_time = input.metadata().get("creation_time").map(str::to_owned);
        let container_duration_s = Some(input.duration())
            .filter(|d| *d > 0)
            .map(|d| d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE));
        // Where the streams start: MP4 and Matroska count the container's duration from 0,
        // so a file whose timestamps start at 100 s "lasts" 100 s longer than its media.
        let start_s = input
            .streams()
            .filter(|s| s.start_time() != ffmpeg::ffi::AV_NOPTS_VALUE)
            .map(|s| s.start_time() as f64 * f64::from(s.time_base()))
            .fold(f64::INFINITY, f64::min);
        let demuxer = Demuxer::new(input).map_err(|e| match e {
            SelectError::NoVideo(found) => SourceError::NoVideo {
                path: path.clone(),
                found,
            },
            SelectError::BadStream(reason) => SourceError::BadStream {
                path: path.clone(),
                reason,
            },
        })?;
        let info = &demuxer.info;
        tracing::debug!(
            path = %path.display(),
            codec = %info.codec,
            width = info.width,
            height = info.height,
            time_base = %info.time_base,
            "opened file source"
        );
        // The media's span: the video stream's own duration where the container gives one
        // (MPEG-TS counts from the start, MP4 gives the stream's), else the container's from
        // where the streams start.
        let stream_s = info
            .duration
            .map(|d| d as f64 * info.time_base.as_f64())
            .filter(|d| *d > 0.0);
        let container_duration_s = stream_s.or_else(|| {
            container_duration_s.map(|d| match d - start_s {
                span if start_s > 0.0 && span > 0.0 => span,
                _ => d,
            })
        });
        Ok(Self {
            path,
            demuxer,
            creation_time,
            container_duration_s,
        })
    }

    /// The path this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The video stream's display matrix when the picture is to be shown rotated (phones
    /// record portrait video this way); `None` when it is shown as coded.
    pub fn display_matrix(&self) -> Option<[i32; 9]> {
        self.demuxer.display_matrix
    }

    /// The container's `creation_time` tag, verbatim, when present.
    pub fn creation_time(&self) -> Option<&str> {
        self.creation_time.as_deref()
    }

    /// The media's duration in seconds, when known: the video stream's, else the container's
    /// from where its streams start (for progress display and the file-mtime clock).
    pub fn duration_secs(&self) -> Option<f64> {
        self.container_duration_s
    }

    /// Video packets delivered so far.
    pub fn packets_read(&self) -> u64 {
        self.demuxer.packets
    }
}

impl PacketSource for FileSource {
    type Error = SourceError;

    fn stream_info(&self) -> &StreamInfo {
        &self.demuxer.info
    }

    fn next_packet(&mut self) -> Result<Option<EncodedPacket>, SourceError> {
        self.demuxer.read().map_err(|e| SourceError::Damaged {
            path: self.path.clone(),
            packets: self.demuxer.packets,
            reason: e.describe(),
        })
    }

    fn damage_at_end(&mut self) -> Option<SourceError> {
        let first = self.demuxer.first_corrupt?;
        Some(SourceError::CorruptPackets {
            path: self.path.clone(),
            packets: self.demuxer.packets,
            count: self.demuxer.corrupt,
            first,
        })
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
