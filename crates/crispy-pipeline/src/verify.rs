//! `crispy verify`: checks what a sink holds: every chunk's SHA-256, every manifest's
//! signature, the per-source hash chain, sequence gaps and time continuity.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use crispy_core::{ChunkMetadata, SourceId};
use crispy_probe::Mp4Probe;
use crispy_signer::{VerifyError, VerifyingKeys, canonical_bytes, manifest_sha256, sha256_hex};

use crispy_sink::{ObjectStoreSink, SinkError};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

/// Objects fetched at once: a cloud store answers each GET in tens of milliseconds, so a
/// day of 3-second chunks (28,800 manifests and as many chunks per camera) fetched one by
/// one would take hours.
const FETCHES_IN_FLIGHT: usize = 16;

/// What to check.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// Only this source (its chunks are under `<prefix>/<id>/`; without `prefix`, the
    /// whole sink is listed and filtered).
    pub source_id: Option<SourceId>,
    /// Only chunks starting at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only chunks starting before this time.
    pub to: Option<DateTime<Utc>>,
    /// Trusted keys; manifests signed by others are reported.
    pub keys: VerifyingKeys,
    /// Accept manifests without a signature.
    pub allow_unsigned: bool,
}

/// Kinds of problems, stable names for `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The chunk's bytes do not match the manifest's `sha256` or `bytes`.
    TamperedChunk,
    /// The manifest's signature does not match its content.
    TamperedManifest,
    /// Signed with a key that was not given.
    UnknownKey,
    /// No signature (and `--allow-unsigned` not given).
    Unsigned,
    /// `prev_sha256` does not match the previous manifest.
    BrokenChain,
    /// Sequence numbers skip: chunks are missing.
    Gap,
    /// Chunks missing because a full spool dropped them; a later manifest records it.
    Dropped,
    /// Sequence numbers go back or repeat: chunks are reordered or duplicated.
    Reordered,
    /// A chunk does not start where the previous one ended, without a recorded discontinuity.
    TimeGap,
    /// The chunk's MP4 boxes disagree with its manifest (frames, duration, size, codec), or
    /// the chunk is not a readable MP4.
    ContentMismatch,
    /// A manifest whose chunk is missing.
    OrphanManifest,
    /// A chunk without a manifest.
    OrphanChunk,
    /// A manifest stored under another name than its `object` says.
    Misplaced,
    /// A manifest that cannot be parsed.
    Unreadable,
    /// Nothing to verify was found.
    Empty,
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The source, when known.
    pub source_id: Option<String>,
    /// The object concerned.
    pub object: String,
    /// Details for people.
    pub detail: String,
}

/// Per-source summary.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    /// The source.
    pub source_id: String,
    /// Manifests checked.
    pub chunks: u64,
    /// Lowest and highest sequence numbers seen.
    pub sequences: (u64, u64),
    /// Start of the first chunk and end of the last.
    pub start_time: DateTime<Utc>,
    /// End of the last chunk.
    pub end_time: DateTime<Utc>,
    /// Key ids named by its manifests' signatures (verified or not: see the problems).
    pub key_ids: Vec<String>,
    /// Unsigned manifests.
    pub unsigned: u64,
    /// Chains that start in the range (a new run of a file source, or the first chunk ever).
    pub chain_starts: u64,
    /// Recorded discontinuities (reconnects, restarts).
    pub discontinuities: u64,
    /// Problems found for this source.
    pub problems: u64,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The sink checked.
    pub sink: String,
    /// One summary per source, by id.
    pub sources: Vec<SourceSummary>,
    /// Every problem, in object order.
    pub problems: Vec<Problem>,
    /// True when there is no problem.
    pub ok: bool,
}

struct Entry {
    manifest_path: String,
    metadata: ChunkMetadata,
}

/// Lists and checks everything in `sink` that `options` selects.
pub async fn verify(
    sink: &ObjectStoreSink,
    options: &VerifyOptions,
) -> Result<VerifyReport, SinkError> {
    // Only the date folders of `--from`/`--to` are listed.
    let listing = sink.list_window(options.from, options.to).await?;
    let names: BTreeSet<&str> = listing.iter().map(|(p, _)| p.as_str()).collect();
    let mut problems = Vec::new();
    let problem = |kind, source: Option<&SourceId>, object: &str, detail: String| Problem {
        kind,
        source_id: source.map(ToString::to_string),
        object: object.to_owned(),
        detail,
    };
    let in_window = |t: DateTime<Utc>| {
        options.from.is_none_or(|from| t >= from) && options.to.is_none_or(|to| t < to)
    };
    // Object names carry their chunk's start time: objects outside `--from`/`--to` are
    // neither fetched nor reported (a day's check of a bucket holding months fetches a day).
    let in_scope_path = |path: &str| {
        let source_ok = match &options.source_id {
            Some(id) => path.split('/').any(|seg| seg == id.as_str()),
            None => true,
        };
        source_ok && crispy_sink::object_start(path).is_none_or(in_window)
    };

    // Manifests are fetched concurrently, in listing order, and parsed as they arrive (only
    // the parsed manifests are kept).
    let mut manifests = futures::stream::iter(
        listing
            .iter()
            .map(|(path, _)| path.as_str())
            .filter(|path| path.ends_with(".json") && in_scope_path(path)),
    )
    .map(|path| async move { sink.get(path).await.map(|bytes| (path, bytes)) })
    .buffered(FETCHES_IN_FLIGHT);
    let mut by_source: BTreeMap<SourceId, Vec<Entry>> = BTreeMap::new();
    while let Some((path, bytes)) = manifests.try_next().await? {
        let Some(bytes) = bytes else {
            continue;
        };
        let metadata: ChunkMetadata = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                problems.push(problem(
                    ProblemKind::Unreadable,
                    None,
                    path,
                    format!("not a manifest: {e}"),
                ));
                continue;
            }
        };
        if options
            .source_id
            .as_ref()
            .is_some_and(|id| *id != metadata.source_id)
            || !in_window(metadata.start_time)
        {
            continue;
        }
        by_source
            .entry(metadata.source_id.clone())
            .or_default()
            .push(Entry {
                manifest_path: path.to_owned(),
                metadata,
            });
    }

    // Chunks without manifests (their time is known from their name alone).
    for (path, _) in &listing {
        let path = path.as_str();
        if !path.ends_with(".mp4") || !in_scope_path(path) {
            continue;
        }
        if !names.contains(crispy_sink::manifest_path_for(path).as_str()) {
            problems.push(problem(
                ProblemKind::OrphanChunk,
                None,
                path,
                "chunk without a manifest".to_owned(),
            ));
        }
    }

    for entries in by_source.values_mut() {
        entries.sort_by(|a, b| a.manifest_path.cmp(&b.manifest_path));
    }
    // Every chunk fetched and checked concurrently (hashing on the blocking pool, at most
    // `FETCHES_IN_FLIGHT` chunks in memory), in the order the walk below reads them.
    let checks: Vec<ChunkCheck> = futures::stream::iter(by_source.values().flatten())
        .map(|e| async move {
            let Some(bytes) = sink.get(&e.metadata.object).await? else {
                return Ok::<_, SinkError>(ChunkCheck::Missing);
            };
            let metadata = e.metadata.clone();
            match tokio::task::spawn_blocking(move || check_chunk(&metadata, &bytes)).await {
                Ok(check) => Ok(check),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Ok(ChunkCheck::Mismatch(format!("checking the chunk: {e}"))),
            }
        })
        .buffered(FETCHES_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut checks = checks.into_iter();

    let mut sources = Vec::new();
    for (id, entries) in by_source {
        let before = problems.len();
        let mut key_ids = BTreeSet::new();
        let (mut unsigned, mut chain_starts, mut discontinuities) = (0, 0, 0);
        let mut prev: Option<&ChunkMetadata> = None;
        let dropped: BTreeSet<u64> = entries
            .iter()
            .flat_map(|e| e.metadata.dropped_sequences.iter().copied())
            .collect();
        for e in &entries {
            let m = &e.metadata;
            let object = m.object.as_str();
            let push = |problems: &mut Vec<Problem>, kind, detail: String| {
                problems.push(problem(kind, Some(&id), object, detail));
            };
            if crispy_sink::manifest_path_for(object) != e.manifest_path {
                push(
                    &mut problems,
                    ProblemKind::Misplaced,
                    format!(
                        "manifest stored as {} but describes {object}",
                        e.manifest_path
                    ),
                );
            }
            // One check per entry, in this order; a missing one is reported, never passed.
            let check = checks.next().unwrap_or_else(|| {
                ChunkCheck::Mismatch("not checked (internal error: no check result)".to_owned())
            });
            match check {
                ChunkCheck::Ok => {}
                ChunkCheck::Missing => push(
                    &mut problems,
                    ProblemKind::OrphanManifest,
                    "the chunk is missing".to_owned(),
                ),
                ChunkCheck::Tampered(detail) => {
                    push(&mut problems, ProblemKind::TamperedChunk, detail)
                }
                ChunkCheck::Mismatch(detail) => {
                    push(&mut problems, ProblemKind::ContentMismatch, detail)
                }
            }
            if let Some(s) = &m.signature {
                key_ids.insert(s.key_id.clone());
            }
            match options
                .keys
                .verify(&canonical_bytes(m), m.signature.as_ref())
            {
                Ok(()) => {}
                Err(VerifyError::Unsigned) => {
                    unsigned += 1;
                    if !options.allow_unsigned {
                        push(
                            &mut problems,
                            ProblemKind::Unsigned,
                            "the manifest is not signed (--allow-unsigned accepts this)".to_owned(),
                        );
                    }
                }
                Err(e @ VerifyError::UnknownKey { .. }) => {
                    push(&mut problems, ProblemKind::UnknownKey, e.to_string())
                }
                Err(e) => push(&mut problems, ProblemKind::TamperedManifest, e.to_string()),
            }
            if m.discontinuity {
                discontinuities += 1;
            }
            let starts_chain = m.prev_sha256.is_none() && m.sequence == 0;
            if starts_chain {
                chain_starts += 1;
            }
            if let Some(p) = prev {
                let missing = p.sequence + 1..m.sequence;
                let recorded_drop =
                    !missing.is_empty() && missing.clone().all(|s| dropped.contains(&s));
                if !starts_chain && recorded_drop {
                    // A recorded loss: the links to the dropped chunks cannot be checked.
                    push(
                        &mut problems,
                        ProblemKind::Dropped,
                        format!(
                            "{} chunk(s) dropped from a full spool before upload (sequences \
                             {}..={}), as a later manifest records",
                            m.sequence - p.sequence - 1,
                            p.sequence + 1,
                            m.sequence - 1
                        ),
                    );
                } else if !starts_chain {
                    if m.sequence > p.sequence + 1 {
                        push(
                            &mut problems,
                            ProblemKind::Gap,
                            format!(
                                "{} chunk(s) missing: sequence {} follows {}",
                                m.sequence - p.sequence - 1,
                                m.sequence,
                                p.sequence
                            ),
                        );
                    } else if m.sequence <= p.sequence {
                        push(
                            &mut problems,
                            ProblemKind::Reordered,
                            format!("sequence {} follows {}", m.sequence, p.sequence),
                        );
                    }
                    let expected = manifest_sha256(p);
                    if m.prev_sha256.as_deref() != Some(expected.as_str()) {
                        push(
                            &mut problems,
                            ProblemKind::BrokenChain,
                            format!(
                                "prev_sha256 {} does not match the previous manifest ({}, {expected})",
                                m.prev_sha256.as_deref().unwrap_or("null"),
                                p.object
                            ),
                        );
                    }
                    if !m.discontinuity && m.start_time != p.end_time {
                        push(
                            &mut problems,
                            ProblemKind::TimeGap,
                            format!(
                                "starts at {} but the previous chunk ended at {}",
                                m.start_time.to_rfc3339(),
                                p.end_time.to_rfc3339()
                            ),
                        );
                    }
                }
            }
            prev = Some(m);
        }
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            continue;
        };
        let seqs = entries.iter().map(|e| e.metadata.sequence);
        sources.push(SourceSummary {
            source_id: id.to_string(),
            chunks: entries.len() as u64,
            sequences: (seqs.clone().min().unwrap_or(0), seqs.max().unwrap_or(0)),
            start_time: first.metadata.start_time,
            end_time: last.metadata.end_time,
            key_ids: key_ids.into_iter().collect(),
            unsigned,
            chain_starts,
            discontinuities,
            problems: (problems.len() - before) as u64,
        });
    }
    if sources.is_empty() && problems.is_empty() {
        problems.push(problem(
            ProblemKind::Empty,
            options.source_id.as_ref(),
            sink.display_url(),
            "no manifests found".to_owned(),
        ));
    }
    Ok(VerifyReport {
        sink: sink.display_url().to_owned(),
        ok: problems.is_empty(),
        sources,
        problems,
    })
}

/// What fetching and reading a manifest's chunk found.
enum ChunkCheck {
    /// Its bytes match the manifest, and its boxes say what the manifest says.
    Ok,
    /// There is no chunk under the manifest's `object`.
    Missing,
    /// Its SHA-256 or size differs from the manifest's.
    Tampered(String),
    /// Its MP4 boxes disagree with the manifest (or cannot be read).
    Mismatch(String),
}

/// Checks a chunk's bytes against its manifest.
fn check_chunk(m: &ChunkMetadata, bytes: &[u8]) -> ChunkCheck {
    let actual = sha256_hex(bytes);
    if actual != m.sha256 || bytes.len() as u64 != m.bytes {
        return ChunkCheck::Tampered(format!(
            "content sha256 {actual} ({} bytes), manifest says {} ({} bytes)",
            bytes.len(),
            m.sha256,
            m.bytes
        ));
    }
    content_mismatch(m, bytes).map_or(ChunkCheck::Ok, ChunkCheck::Mismatch)
}

/// What a chunk's own MP4 boxes say against its manifest (read by a second, independent
/// parser, the `mp4` crate); `None` when they agree.
fn content_mismatch(m: &ChunkMetadata, bytes: &[u8]) -> Option<String> {
    let mp4 = match Mp4Probe::probe(bytes) {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    let mut diffs = Vec::new();
    if mp4.samples != m.frame_count {
        diffs.push(format!(
            "{} frames (manifest {})",
            mp4.samples, m.frame_count
        ));
    }
    if (mp4.width, mp4.height) != (m.width, m.height) {
        diffs.push(format!(
            "{}x{} (manifest {}x{})",
            mp4.width, mp4.height, m.width, m.height
        ));
    }
    if mp4.codec.as_ref().is_some_and(|c| *c != m.codec) {
        diffs.push(format!(
            "codec {} (manifest {})",
            mp4.codec.as_deref().unwrap_or_default(),
            m.codec
        ));
    }
    let same_clock = m.time_base.num == 1 && i64::from(mp4.timescale) == i64::from(m.time_base.den);
    if same_clock && i64::try_from(mp4.duration_ts).ok() != Some(m.duration_ts) {
        diffs.push(format!(
            "{} ticks long (manifest {})",
            mp4.duration_ts, m.duration_ts
        ));
    } else if !same_clock && mp4.duration_ms.abs_diff(m.duration_ms) > 1 {
        diffs.push(format!(
            "{} ms long (manifest {})",
            mp4.duration_ms, m.duration_ms
        ));
    }
    if m.keyframe_aligned && !mp4.starts_with_keyframe {
        diffs.push("does not start on a keyframe (manifest says it does)".to_owned());
    }
    (!diffs.is_empty()).then(|| format!("the chunk's MP4 says {}", diffs.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_start_time_is_read_back_from_object_names() {
        let start = Utc
            .with_ymd_and_hms(2026, 11, 24, 10, 15, 0)
            .single()
            .expect("time")
            + chrono::Duration::milliseconds(473);
        let id: SourceId = "lobby-cam".parse().expect("id");
        let chunk = crispy_sink::chunk_object_path("site/a", &id, start, 42);
        assert_eq!(crispy_sink::object_start(&chunk), Some(start), "{chunk}");
        let manifest = crispy_sink::manifest_path_for(&chunk);
        assert_eq!(
            crispy_sink::object_start(&manifest),
            Some(start),
            "{manifest}"
        );
        for other in [
            "lobby-cam/last.json",
            "notes.txt",
            "a/b-c/2026-11-24.mp4",
            "",
        ] {
            assert_eq!(crispy_sink::object_start(other), None, "{other}");
        }
    }
}
