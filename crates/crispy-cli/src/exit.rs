//! Exit codes, one per kind of failure (documented in docs/cli.md and `crispy --help`).

use crispy_chunker::ChunkerError;
use crispy_pipeline::config::ConfigError;
use crispy_pipeline::{CameraFault, CameraFaultKind, PipelineError};
use crispy_sink::SinkError;
use crispy_source::SourceError;

pub const INTERNAL: u8 = 1;
pub const USAGE: u8 = 2;
pub const CONFIG_INVALID: u8 = 3;
pub const KEY_INVALID: u8 = 4;
pub const SOURCE_NOT_FOUND: u8 = 10;
pub const SOURCE_NOT_A_FILE: u8 = 11;
pub const SOURCE_EMPTY: u8 = 12;
pub const SOURCE_NOT_VIDEO: u8 = 13;
pub const SOURCE_NO_VIDEO_STREAM: u8 = 14;
pub const CODEC_UNSUPPORTED: u8 = 15;
pub const SOURCE_DAMAGED: u8 = 16;
pub const CAMERA_GAVE_NOTHING: u8 = 17;
pub const CAMERA_CREDENTIALS: u8 = 18;
pub const CAMERA_NO_SUCH_STREAM: u8 = 19;
pub const SINK_INVALID: u8 = 20;
pub const SINK_UNWRITABLE: u8 = 21;
pub const UPLOAD_FAILED: u8 = 22;
pub const DRAIN_TIMEOUT: u8 = 23;
pub const SINK_UNREADABLE: u8 = 24;
pub const SINK_CREDENTIALS: u8 = 25;
pub const SINK_NO_BUCKET: u8 = 26;
pub const SINK_UNREACHABLE: u8 = 27;
pub const SPOOL_UNUSABLE: u8 = 28;
pub const CHUNKS_DROPPED: u8 = 29;
pub const VERIFY_FAILED: u8 = 30;
pub const FILE_UNFINISHED: u8 = 31;
pub const TRANSCODE_REFUSED: u8 = 32;

/// The error and its causes on one line, skipping causes whose text is already shown.
pub fn describe(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    // Stores' errors quote the URLs they used, and an endpoint may carry credentials.
    crispy_core::redact::redact_urls(&out).into_owned()
}

/// A command-line mistake found after parsing (exit code 2, like clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `crispy verify` found problems (exit code 30); they were printed already.
#[derive(Debug, thiserror::Error)]
#[error("verification failed: {0} problem(s)")]
pub struct VerifyFailed(pub usize);

/// A live run ended normally but dropped chunks from a full spool or a full disk (exit code
/// 29): each drop was logged when it happened and is recorded in a later manifest.
#[derive(Debug, thiserror::Error)]
#[error(
    "{total} chunk(s) were dropped before they could be uploaded ({per_source}): the spool \
     or its disk was full; each drop was logged and is recorded in a later manifest \
     (dropped_sequences; the next run's first, for drops this run could not record)"
)]
pub struct ChunksDropped {
    /// Chunks dropped, all sources together.
    pub total: u64,
    /// `id: n` for each source that dropped any.
    pub per_source: String,
}

/// A live camera stored no chunk in the whole run (exit code 17, or 18, 19, 15 by its
/// last problem); other cameras ran as usual.
#[derive(Debug, thiserror::Error)]
#[error("camera {source_id} stored no chunk in this run{others}; its last problem: {fault}")]
pub struct CameraGaveNothing {
    /// The first such camera, in the order they were given.
    pub source_id: String,
    /// Why its last attempt failed.
    pub fault: CameraFault,
    /// Other cameras that gave nothing, in words (empty when none).
    pub others: String,
}

/// A signal stopped the run before one or more files were read to their end (exit code
/// 31): their complete chunks up to there are stored, the rest is not.
#[derive(Debug, thiserror::Error)]
#[error(
    "the run was stopped before the end of {what}: the complete chunks up to there are \
     stored, the rest of the file is not; run the same command again to store the rest \
     (chunks already stored are recognised, not written twice)"
)]
pub struct FileUnfinished {
    /// The files, with their source ids and how much of each was stored, in words.
    pub what: String,
}

impl FileUnfinished {
    /// The error for these files (source id, path as given, ms of media stored), or `None`
    /// when there are none.
    pub fn of(files: &[(&crispy_core::SourceId, &str, u64)]) -> Option<Self> {
        let list: Vec<String> = files
            .iter()
            .map(|(id, path, ms)| {
                let read = if *ms == 0 {
                    "nothing stored".to_owned()
                } else {
                    format!("{:.1} s of it stored", *ms as f64 / 1000.0)
                };
                format!("{path} (source {id}, {read})")
            })
            .collect();
        match list.len() {
            0 => None,
            1 => Some(Self {
                what: list.concat(),
            }),
            _ => Some(Self {
                what: format!("{} files: {}", list.len(), list.join(", ")),
            }),
        }
    }
}

/// The exit code for an error anywhere in its chain.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<SourceError>() {
            return source_code(e);
        }
        if let Some(e) = cause.downcast_ref::<SinkError>() {
            return sink_code(e);
        }
        if cause.downcast_ref::<crispy_sink::SpoolError>().is_some() {
            return SPOOL_UNUSABLE;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return CONFIG_INVALID;
        }
        if cause.downcast_ref::<crispy_signer::KeyError>().is_some() {
            return KEY_INVALID;
        }
        if cause.downcast_ref::<VerifyFailed>().is_some() {
            return VERIFY_FAILED;
        }
        if cause.downcast_ref::<ChunksDropped>().is_some() {
            return CHUNKS_DROPPED;
        }
        if cause.downcast_ref::<FileUnfinished>().is_some() {
            return FILE_UNFINISHED;
        }
        if let Some(e) = cause.downcast_ref::<CameraGaveNothing>() {
            return camera_code(&e.fault);
        }
        if let Some(e) = cause.downcast_ref::<ChunkerError>() {
            return chunker_code(e);
        }
        if let Some(e) = cause.downcast_ref::<PipelineError>() {
            return match e {
                PipelineError::Source { error, .. } => source_code(error),
                PipelineError::Chunker(c) => chunker_code(c),
                PipelineError::Config(_) => CONFIG_INVALID,
                PipelineError::DrainTimeout { .. } => DRAIN_TIMEOUT,
                PipelineError::Spool(_) => SPOOL_UNUSABLE,
                PipelineError::Sink { error, .. } => error
                    .downcast_ref::<SinkError>()
                    .map_or(UPLOAD_FAILED, sink_code),
                _ => INTERNAL,
            };
        }
    }
    INTERNAL
}

/// A camera that stored nothing in the run: refused credentials and unknown paths have
/// codes of their own, a stream that cannot be stream-copied that of any source.
fn camera_code(fault: &CameraFault) -> u8 {
    match fault.kind {
        CameraFaultKind::Credentials => CAMERA_CREDENTIALS,
        CameraFaultKind::NoSuchStream => CAMERA_NO_SUCH_STREAM,
        CameraFaultKind::Codec => CODEC_UNSUPPORTED,
        _ => CAMERA_GAVE_NOTHING,
    }
}

fn source_code(e: &SourceError) -> u8 {
    match e {
        SourceError::NotFound { .. } => SOURCE_NOT_FOUND,
        SourceError::NotAFile { .. } => SOURCE_NOT_A_FILE,
        SourceError::Empty { .. } => SOURCE_EMPTY,
        SourceError::NoVideo { .. } => SOURCE_NO_VIDEO_STREAM,
        SourceError::Damaged { .. }
        | SourceError::Undecodable { .. }
        | SourceError::CorruptPackets { .. } => SOURCE_DAMAGED,
        SourceError::InvalidUrl { .. } => SOURCE_NOT_FOUND,
        SourceError::Encoder { .. } => TRANSCODE_REFUSED,
        _ => SOURCE_NOT_VIDEO,
    }
}

fn sink_code(e: &SinkError) -> u8 {
    match e {
        SinkError::InvalidUrl { .. }
        | SinkError::InvalidOption { .. }
        | SinkError::Configuration { .. } => SINK_INVALID,
        SinkError::Credentials { .. } => SINK_CREDENTIALS,
        SinkError::NoBucket { .. } => SINK_NO_BUCKET,
        SinkError::Unreachable { .. } => SINK_UNREACHABLE,
        SinkError::Unwritable { .. } => SINK_UNWRITABLE,
        SinkError::Put { .. } if e.is_lasting() => SINK_UNWRITABLE,
        SinkError::Read { .. } => SINK_UNREADABLE,
        _ => UPLOAD_FAILED,
    }
}

fn chunker_code(e: &ChunkerError) -> u8 {
    match e {
        ChunkerError::UnsupportedCodec { .. } => CODEC_UNSUPPORTED,
        _ => SOURCE_NOT_VIDEO,
    }
}
