use std::path::PathBuf;
use std::time::Duration;

use crispy_core::{ChunkDuration, SourceId};
use crispy_source::{RtspConfig, SyntheticConfig, TranscodeConfig};

/// Where a source's packets come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceSpec {
    /// A video file, read once to the end.
    File(PathBuf),
    /// A live RTSP camera, reconnected until shutdown.
    Rtsp(RtspConfig),
    /// A generated live stream (FFmpeg filter graph, libx264), until shutdown or the graph ends.
    Synthetic(SyntheticConfig),
    /// A video file decoded and re-encoded with keyframes exactly on the chunk boundaries.
    TranscodeFile(PathBuf, TranscodeConfig),
    /// A live RTSP camera decoded and re-encoded with keyframes exactly on the chunk
    /// boundaries (any codec FFmpeg decodes, MJPEG included).
    TranscodeRtsp(RtspConfig, TranscodeConfig),
}

impl SourceSpec {
    /// How the source may be shown (paths as given; URLs without credentials).
    pub fn display(&self) -> String {
        match self {
            SourceSpec::File(p) => p.display().to_string(),
            SourceSpec::Rtsp(c) | SourceSpec::TranscodeRtsp(c, _) => c.display_url(),
            SourceSpec::Synthetic(c) => format!("lavfi:{}", c.graph),
            SourceSpec::TranscodeFile(p, _) => p.display().to_string(),
        }
    }

    /// True for sources that run until shutdown.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            SourceSpec::Rtsp(_) | SourceSpec::TranscodeRtsp(..) | SourceSpec::Synthetic(_)
        )
    }
}

/// One source of a run.
#[derive(Debug, Clone)]
pub struct SourceJob {
    /// Its id in object names and manifests.
    pub source_id: SourceId,
    /// What to read.
    pub spec: SourceSpec,
    /// Requested chunk length.
    pub chunk: ChunkDuration,
    /// Extra object-name prefix for this source inside the sink (validated with
    /// `crispy_sink::clean_prefix`), e.g. a site name.
    pub prefix: Option<String>,
}

/// Settings shared by all sources of a run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Uploads in flight at once, across all sources (at least 1).
    pub max_in_flight: usize,
    /// After shutdown, how long uploads may take to finish before the run gives up on them.
    pub drain_timeout: Duration,
    /// First reconnect delay of a live source.
    pub reconnect_min: Duration,
    /// Longest reconnect delay (also the delay after authentication or not-found errors).
    pub reconnect_max: Duration,
    /// Align chunk boundaries on the UTC grid (multiples of the chunk length since the Unix
    /// epoch): exact in transcode mode and for synthetic sources, at the first keyframe after
    /// each grid line in copy mode.
    pub align_wall: bool,
    /// Copy mode: cut on the first frame at or after each boundary instead of at the first
    /// keyframe, without decoding; a chunk starting between keyframes carries the frames
    /// from the keyframe before it, hidden by its MP4 edit list. (Transcode mode and
    /// synthetic sources are exact anyway.)
    pub exact_cuts: bool,
    /// Signs every manifest; `None` leaves them hashed and chained but unsigned.
    pub signing_key: Option<std::sync::Arc<crispy_signer::SigningKey>>,
    /// Where accepted chunks wait for their upload.
    pub spool: SpoolOptions,
    /// First delay of the upload retry loop.
    pub retry_min: Duration,
    /// Longest delay of the upload retry loop (it retries for as long as it takes).
    pub retry_max: Duration,
    /// Put a signed GET URL valid this long into each manifest and log line.
    pub signed_url_ttl: Option<Duration>,
}

/// The durable spool of a run.
#[derive(Clone)]
pub struct SpoolOptions {
    /// The spool root (the sink gets its own directory inside); `None` keeps accepted
    /// chunks in memory (at most 512 MiB): for sinks on local disk or in memory, where a
    /// disk spool adds nothing.
    pub dir: Option<PathBuf>,
    /// Names the sink's directory inside the root: the sink URL as given, and the store's
    /// endpoint (which may carry credentials: redacted in `Debug`).
    pub sink_key: String,
    /// Most bytes the spool holds; then live sources drop their oldest chunks and files wait.
    pub max_bytes: u64,
}

impl std::fmt::Debug for SpoolOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolOptions")
            .field("dir", &self.dir)
            .field(
                "sink_key",
                &crispy_core::redact::redact_urls(&self.sink_key),
            )
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            dir: None,
            sink_key: String::new(),
            max_bytes: 10 << 30,
        }
    }
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 6,
            drain_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            align_wall: false,
            exact_cuts: false,
            signing_key: None,
            spool: SpoolOptions::default(),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            signed_url_ttl: None,
        }
    }
}
