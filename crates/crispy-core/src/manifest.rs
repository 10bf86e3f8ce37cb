use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::{Rational, SourceId};

/// The manifest schema this crate writes. See `docs/manifest.md`.
pub const MANIFEST_SCHEMA: &str = "crispy.manifest/1";

/// Where a chunk's wall-clock times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ClockSource {
    /// The file's `creation_time` metadata tag plus the chunk's media offset.
    File,
    /// The file's modification time minus its duration (where the recording began, as the
    /// file system saw it end), plus the chunk's media offset: files without a creation
    /// time. A re-run of the same file gives the same times, so the same object names.
    FileMtime,
    /// The run's start time plus the chunk's media offset (files with neither a creation
    /// time nor a modification time and duration).
    RunStart,
    /// RTCP sender reports of a live camera.
    Rtcp,
    /// The receive time of a live stream's first packet plus the media offset.
    Receive,
}

impl std::fmt::Display for ClockSource {
    /// The manifest's name for it (`file`, `file-mtime`, `run-start`, `rtcp`, `receive`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::File => "file",
            Self::FileMtime => "file-mtime",
            Self::RunStart => "run-start",
            Self::Rtcp => "rtcp",
            Self::Receive => "receive",
        })
    }
}

/// For `skip_serializing_if`: members that are absent when zero.
fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// Why a run of a source ended with a chunk (`run_end` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunEnd {
    /// The source ended: a file read to its end (its last chunk is the file's last).
    EndOfInput,
    /// The run was stopped (SIGINT, SIGTERM, SIGHUP) and the chunk in progress closed: a
    /// live source's or a `testsrc` stream's last chunk of the run.
    Stopped,
    /// A reason this version does not know (written by a later one): still an end. Never
    /// written by this version.
    #[serde(other)]
    Other,
}

impl std::fmt::Display for RunEnd {
    /// The manifest's name for it (`end-of-input`, `stopped`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EndOfInput => "end-of-input",
            Self::Stopped => "stopped",
            Self::Other => "other",
        })
    }
}

/// A manifest read back from a sink or a spool: its fields, and the text as stored. The
/// chain link to it is the SHA-256 of the canonical form of that text (members this version
/// does not know included, members it would add left out), not of the fields written anew.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredManifest {
    /// The fields this version knows.
    pub metadata: ChunkMetadata,
    /// The stored JSON text.
    pub json: bytes::Bytes,
}

impl StoredManifest {
    /// Parses a stored manifest; `None` when the text is not one.
    pub fn parse(json: bytes::Bytes) -> Option<Self> {
        let metadata = serde_json::from_slice(&json).ok()?;
        Some(Self { metadata, json })
    }
}

/// Everything recorded about one chunk; serialized as the chunk's JSON manifest.
///
/// Stages fill it in turn: the chunker (media facts), the probe (`width`, `height`), the
/// pipeline (times, `object`) and the signer (`sha256`). The field order here is the order
/// in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkMetadata {
    /// Manifest schema, [`MANIFEST_SCHEMA`].
    pub schema: String,
    /// The camera or file this chunk came from.
    pub source_id: SourceId,
    /// 0, 1, 2, ... without gaps within one run of one source.
    pub sequence: u64,
    /// Path of the chunk object in the sink.
    pub object: String,
    /// Wall-clock time of the chunk's first frame (RFC 3339 UTC, milliseconds).
    #[serde(with = "rfc3339_millis")]
    pub start_time: DateTime<Utc>,
    /// `start_time` plus `duration_ms`.
    #[serde(with = "rfc3339_millis")]
    pub end_time: DateTime<Utc>,
    /// Where `start_time` comes from.
    pub clock: ClockSource,
    /// Presentation timestamp of the first frame, in `time_base` ticks of the source.
    pub start_pts: i64,
    /// Time base of `start_pts` and `duration_ts`, as `num/den`.
    pub time_base: Rational,
    /// Exact duration in `time_base` ticks.
    pub duration_ts: i64,
    /// Duration in milliseconds, rounded to nearest (the MP4's track duration).
    pub duration_ms: u64,
    /// The chunk duration that was asked for.
    pub requested_ms: u64,
    /// Number of video frames.
    pub frame_count: u64,
    /// Frames per second over this chunk.
    pub fps: f64,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// How far players turn the picture counterclockwise to show it, in degrees (0 to 359;
    /// 90 or 270 for a phone held upright): the source's display matrix, which each chunk
    /// keeps. Absent (0) for a picture shown as it is coded, so it is not part of the
    /// canonical form of other manifests.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rotation: u16,
    /// Codec name (`h264`, `hevc`).
    pub codec: String,
    /// Codec profile, when known.
    pub profile: Option<String>,
    /// True when the chunk starts on a keyframe of the source (stream copy always does).
    pub keyframe_aligned: bool,
    /// True when chunk boundaries follow the UTC grid (`--align wall`): multiples of
    /// `requested_ms` since the Unix epoch.
    #[serde(default)]
    pub aligned: bool,
    /// True when frames were lost between the previous chunk and this one (a reconnect).
    pub discontinuity: bool,
    /// With `discontinuity`: wall-clock milliseconds between the previous chunk's end and
    /// this chunk's start. `null` otherwise.
    pub gap_ms: Option<u64>,
    /// Not in the manifest: set by the chunker on the first chunk after the source's
    /// timestamps restarted (they went back, or forward too far to be frames missing), whose
    /// wall time then continues from the previous chunk's end rather than from its
    /// timestamps.
    #[serde(skip)]
    pub timestamps_restarted: bool,
    /// Set on the last chunk of a run of this source, saying why the run ended there;
    /// `null` on every other chunk. Always written, so a manifest without the member comes
    /// from an older version (which did not mark ends), and a source whose newest manifest
    /// says `null` has a run that did not end there: still going, cut off, or its later
    /// chunks are missing.
    #[serde(default)]
    pub run_end: Option<RunEnd>,
    /// Sequence numbers of earlier chunks of this source that were accepted and then
    /// dropped from a full spool before they could be uploaded: a recorded, signed gap.
    /// Absent (empty) almost always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_sequences: Vec<u64>,
    /// Size of the chunk object in bytes.
    pub bytes: u64,
    /// SHA-256 of the chunk object, lowercase hex.
    pub sha256: String,
    /// SHA-256 (lowercase hex) of the canonical form of the previous manifest of this source;
    /// `null` where a chain starts (the first chunk of a source in a sink, or of a file run).
    #[serde(default)]
    pub prev_sha256: Option<String>,
    /// True on a live source's chain start whose run could not learn the source's last
    /// stored manifest (neither the sink nor the spool answered with it), so it could not
    /// continue that chain: earlier chunks of this source may exist, unlinked. Absent
    /// (false) otherwise, so it is not part of the canonical form of other manifests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prev_unknown: bool,
    /// Signature over the canonical form; `null` when no signing key was configured.
    #[serde(default)]
    pub signature: Option<ManifestSignature>,
    /// A time-limited signed GET URL of the chunk (`crispy run --signed-urls`), added at
    /// upload time. Like `signature`, not part of the canonical form. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_url: Option<SignedUrl>,
}

/// A pre-signed URL that lets anyone holding it GET the chunk until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUrl {
    /// The URL (GCS V4, S3 SigV4 or Azure SAS).
    pub url: String,
    /// When it stops working.
    #[serde(with = "rfc3339_millis")]
    pub expires_at: DateTime<Utc>,
}

/// A manifest's signature (see `docs/manifest.md` for the canonical form it covers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    /// `ed25519` or `hmac-sha256`.
    pub alg: String,
    /// Which key signed: derived from the public key (Ed25519) or the secret (HMAC).
    pub key_id: String,
    /// The signature (64 bytes) or MAC (32 bytes), lowercase hex.
    pub value: String,
}

impl ChunkMetadata {
    /// The manifest as pretty JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// RFC 3339 in UTC with exactly three fractional digits: `2026-11-23T10:15:30.123Z`.
mod rfc3339_millis {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        t: &DateTime<Utc>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// Ascending sequence numbers (a manifest's `dropped_sequences`) as runs of consecutive
/// numbers, `(first, last)` each.
///
/// ```
/// assert_eq!(crispy_core::sequence_runs(&[3, 4, 5, 9]), vec![(3, 5), (9, 9)]);
/// ```
pub fn sequence_runs(sequences: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &s in sequences {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(s) => *last = s,
            _ => runs.push((s, s)),
        }
    }
    runs
}

/// Ascending sequence numbers as text for people: `3..=5,9`.
///
/// ```
/// assert_eq!(crispy_core::sequence_ranges(&[3, 4, 5, 9]), "3..=5,9");
/// ```
pub fn sequence_ranges(sequences: &[u64]) -> String {
    sequence_runs(sequences)
        .into_iter()
        .map(|(first, last)| match first == last {
            true => first.to_string(),
            false => format!("{first}..={last}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn clock_sources_display_as_the_manifest_names_them() {
        for clock in [
            ClockSource::File,
            ClockSource::FileMtime,
            ClockSource::RunStart,
            ClockSource::Rtcp,
            ClockSource::Receive,
        ] {
            let json = serde_json::to_value(clock).expect("json");
            assert_eq!(json.as_str(), Some(clock.to_string().as_str()));
        }
    }

    #[test]
    fn manifest_json_has_millisecond_utc_times_and_round_trips() {
        let start = Utc
            .timestamp_millis_opt(1_795_000_000_123)
            .single()
            .expect("valid time");
        let m = ChunkMetadata {
            schema: MANIFEST_SCHEMA.into(),
            source_id: SourceId::new("cam").expect("valid"),
            sequence: 7,
            object: "x/cam/a.mp4".into(),
            start_time: start,
            end_time: start + chrono::Duration::milliseconds(3000),
            clock: ClockSource::RunStart,
            start_pts: 0,
            time_base: Rational::new(1, 15360),
            duration_ts: 46080,
            duration_ms: 3000,
            requested_ms: 3000,
            frame_count: 90,
            fps: 30.0,
            width: 1920,
            height: 1080,
            rotation: 0,
            codec: "h264".into(),
            profile: Some("High".into()),
            keyframe_aligned: true,
            aligned: false,
            discontinuity: false,
            gap_ms: None,
            timestamps_restarted: false,
            run_end: None,
            dropped_sequences: Vec::new(),
            bytes: 10,
            sha256: "00".into(),
            prev_sha256: None,
            prev_unknown: false,
            signature: Some(ManifestSignature {
                alg: "ed25519".into(),
                key_id: "ed25519-0011".into(),
                value: "ab".into(),
            }),
            signed_url: None,
        };
        let json = String::from_utf8(m.to_json()).expect("utf8");
        assert!(
            json.contains("\"start_time\": \"2026-11-18T11:06:40.123Z\""),
            "{json}"
        );
        assert!(json.contains("\"clock\": \"run-start\""), "{json}");
        // Written as null on every chunk but a run's last: its absence marks an older writer.
        assert!(json.contains("\"run_end\": null"), "{json}");
        // A reason from a later version still reads as an end.
        let later = json.replace("\"run_end\": null", "\"run_end\": \"camera-removed\"");
        let back: ChunkMetadata = serde_json::from_str(&later).expect("parse");
        assert_eq!(back.run_end, Some(RunEnd::Other));
        let back: ChunkMetadata = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, m);
        // `prev_unknown` appears only when true, so manifests without it keep their bytes
        // (and their canonical form, which the chain and signatures cover).
        assert!(!json.contains("prev_unknown"), "{json}");
        // So does `rotation`, which follows `height` when set.
        assert!(!json.contains("rotation"), "{json}");
        let flagged = ChunkMetadata {
            prev_unknown: true,
            rotation: 270,
            ..m
        };
        let json = String::from_utf8(flagged.to_json()).expect("utf8");
        assert!(json.contains("\"prev_unknown\": true"), "{json}");
        assert!(
            json.contains("\"height\": 1080,\n  \"rotation\": 270,\n"),
            "{json}"
        );
        let back: ChunkMetadata = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, flagged);
    }
}
