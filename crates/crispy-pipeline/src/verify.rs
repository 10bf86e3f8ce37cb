//! `crispy verify`: checks what a sink holds: every chunk's SHA-256, every manifest's
//! signature, the per-source hash chain, sequence gaps and time continuity.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use crispy_core::{ChunkMetadata, ClockSource, RunEnd, SourceId};
use crispy_probe::Mp4Probe;
use crispy_signer::{
    VerifyError, VerifyingKeys, canonical_bytes, canonical_bytes_of_json, sha256_hex,
};

use crispy_sink::{ObjectStoreSink, SinkError, Walked};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

/// Objects fetched at once: a cloud store answers each GET in tens of milliseconds, so a
/// day of 3-second chunks (28,800 manifests and as many chunks per camera) fetched one by
/// one would take hours.
const FETCHES_IN_FLIGHT: usize = 16;

/// What to check.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// Only these sources (their chunks are under `<prefix>/<id>/`); all when empty.
    pub source_ids: Vec<SourceId>,
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
    /// A file run's last stored chunk does not mark the end of the run (`run_end` null):
    /// the chunks after it are missing, or the run stopped before the file's end (stopped,
    /// killed, a damaged file) or is still going. Judged only where the chunk after it would
    /// start inside the window (`--to`), and only on manifests that carry `run_end` (older
    /// versions did not write it).
    Unfinished,
    /// A live source's hash chain starts again (sequence 0, no `prev_sha256`) after earlier
    /// chunks of that source: what came between cannot be proven complete. A restarted
    /// camera continues its chain; it starts a new one only when its run could not learn the
    /// last stored manifest (the manifest then says `prev_unknown`).
    ChainRestart,
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
    /// Chains that start in the range (a new run of a file source, the first chunk ever, or
    /// a live source's chain starting again: see [`ProblemKind::ChainRestart`]).
    pub chain_starts: u64,
    /// Recorded discontinuities (reconnects, restarts).
    pub discontinuities: u64,
    /// How its last chunk in the range says its run ended (`end-of-input`, `stopped`);
    /// `null` when it does not (a live source still running, a run cut off) or comes from
    /// a version that did not record it.
    pub run_end: Option<RunEnd>,
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

/// Lists and checks everything in `sink` that `options` selects.
///
/// The sink is read folder by folder ([`ObjectStoreSink::walk_window`]): each manifest is
/// fetched with its chunk and checked as it comes, and each source keeps only what its
/// chain needs from the manifest before. So a month of many cameras is verified holding one
/// folder's names, the objects in flight and the problems found, never every manifest.
pub async fn verify(
    sink: &ObjectStoreSink,
    options: &VerifyOptions,
) -> Result<VerifyReport, SinkError> {
    let in_window = |t: DateTime<Utc>| {
        options.from.is_none_or(|from| t >= from) && options.to.is_none_or(|to| t < to)
    };
    // Object names carry their chunk's start time: objects outside `--from`/`--to` are
    // neither fetched nor reported (a day's check of a bucket holding months fetches a day).
    let in_scope_path = |path: &str| {
        let source_ok = options.source_ids.is_empty()
            || path
                .split('/')
                .any(|seg| options.source_ids.iter().any(|id| seg == id.as_str()));
        source_ok && crispy_sink::object_start(path).is_none_or(in_window)
    };

    // Manifests, each with its chunk, fetched and checked `FETCHES_IN_FLIGHT` at a time, in
    // path order (hashing on the blocking pool).
    let found = sink
        .walk_window(options.from, options.to)
        .map_ok(|walked| {
            let listed = match walked {
                Walked::Objects(folder) => in_folder(&folder, &in_scope_path),
                Walked::Unlisted { folder, detail } => vec![Listed::Unlisted(folder, detail)],
            };
            futures::stream::iter(listed).map(Ok)
        })
        .try_flatten()
        .map_ok(|listed| fetch(sink, listed, options, &in_window))
        .try_buffered(FETCHES_IN_FLIGHT);
    let mut found = std::pin::pin!(found);

    let mut problems = Vec::new();
    let mut sources: BTreeMap<SourceId, SourceWalk> = BTreeMap::new();
    while let Some(fetched) = found.try_next().await? {
        match fetched {
            Fetched::Nothing => {}
            Fetched::OrphanChunk(path) => {
                let detail = "chunk without a manifest".to_owned();
                match crispy_sink::object_source(&path) {
                    // Counted with its source, as its other problems are.
                    Some(id) => sources.entry(id.clone()).or_default().push(
                        &mut problems,
                        &id,
                        ProblemKind::OrphanChunk,
                        &path,
                        detail,
                    ),
                    None => problems.push(Problem {
                        kind: ProblemKind::OrphanChunk,
                        source_id: None,
                        object: path,
                        detail,
                    }),
                }
            }
            Fetched::Unreadable(path, detail) => problems.push(Problem {
                kind: ProblemKind::Unreadable,
                source_id: None,
                object: path,
                detail,
            }),
            Fetched::Manifest(entry) => {
                let id = entry.metadata.source_id.clone();
                let walk = sources.entry(id.clone()).or_default();
                walk.add(&id, *entry, options, &mut problems);
            }
        }
    }
    let sources: Vec<SourceSummary> = sources
        .into_iter()
        .filter_map(|(id, walk)| walk.finish(&id, options.to, &mut problems))
        .collect();
    // In object order (a source's problems together, since its objects share its folder);
    // the problems of one object in the order they were found.
    problems.sort_by(|a, b| a.object.cmp(&b.object));
    if sources.is_empty() && problems.is_empty() {
        problems.push(Problem {
            kind: ProblemKind::Empty,
            source_id: (!options.source_ids.is_empty()).then(|| {
                let ids: Vec<&str> = options.source_ids.iter().map(SourceId::as_str).collect();
                ids.join(",")
            }),
            object: sink.display_url().to_owned(),
            detail: "no manifests found".to_owned(),
        });
    }
    Ok(VerifyReport {
        sink: sink.display_url().to_owned(),
        ok: problems.is_empty(),
        sources,
        problems,
    })
}

/// What a folder's listing asks for.
enum Listed {
    /// A manifest to fetch and check, with its chunk.
    Manifest(String),
    /// A chunk without a manifest next to it.
    OrphanChunk(String),
    /// A name the listing could not hold, where, and what that left unchecked.
    Unlisted(String, String),
}

/// The manifests of a folder in scope, and its chunks in scope without a manifest, in path
/// order. A manifest is stored next to its chunk, so one folder's names tell.
fn in_folder(folder: &[(String, u64)], in_scope: &impl Fn(&str) -> bool) -> Vec<Listed> {
    let names: BTreeSet<&str> = folder.iter().map(|(p, _)| p.as_str()).collect();
    folder
        .iter()
        .map(|(path, _)| path)
        .filter(|path| in_scope(path))
        .filter_map(|path| {
            if path.ends_with(".json") {
                Some(Listed::Manifest(path.clone()))
            } else if path.ends_with(".mp4")
                && !names.contains(crispy_sink::manifest_path_for(path).as_str())
            {
                Some(Listed::OrphanChunk(path.clone()))
            } else {
                None
            }
        })
        .collect()
}

/// What fetching a listed object found.
enum Fetched {
    /// Out of scope by its content, or gone since it was listed.
    Nothing,
    OrphanChunk(String),
    /// A manifest that cannot be parsed: its path and why.
    Unreadable(String, String),
    Manifest(Box<Entry>),
}

/// A manifest in scope, with the check of its chunk.
struct Entry {
    manifest_path: String,
    metadata: ChunkMetadata,
    /// The canonical form, from the stored text (members we do not know included).
    canonical: Vec<u8>,
    /// The stored text has a `run_end` member (null or not): its writer marks run ends.
    marks_ends: bool,
    check: ChunkCheck,
}

/// Fetches a listed manifest and its chunk, and checks the chunk against it.
async fn fetch(
    sink: &ObjectStoreSink,
    listed: Listed,
    options: &VerifyOptions,
    in_window: &impl Fn(DateTime<Utc>) -> bool,
) -> Result<Fetched, SinkError> {
    let path = match listed {
        Listed::OrphanChunk(path) => return Ok(Fetched::OrphanChunk(path)),
        Listed::Unlisted(at, detail) => return Ok(Fetched::Unreadable(at, detail)),
        Listed::Manifest(path) => path,
    };
    let Some(bytes) = sink.get(&path).await? else {
        return Ok(Fetched::Nothing);
    };
    let metadata: ChunkMetadata = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => return Ok(Fetched::Unreadable(path, format!("not a manifest: {e}"))),
    };
    let canonical = canonical_bytes_of_json(&bytes).unwrap_or_else(|| canonical_bytes(&metadata));
    let marks_ends = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("run_end")))
        .unwrap_or(false);
    let other_source =
        !options.source_ids.is_empty() && !options.source_ids.contains(&metadata.source_id);
    if other_source || !in_window(metadata.start_time) {
        return Ok(Fetched::Nothing);
    }
    if !crispy_sink::is_object_path(&metadata.object) {
        let detail = format!(
            "the manifest names its chunk {:?}, which cannot be an object path (an empty \
             segment, `.`/`..`, or a control character)",
            metadata.object
        );
        return Ok(Fetched::Unreadable(path, detail));
    }
    let check = match sink.get(&metadata.object).await? {
        None => ChunkCheck::Missing,
        Some(chunk) => {
            let m = metadata.clone();
            match tokio::task::spawn_blocking(move || check_chunk(&m, &chunk)).await {
                Ok(check) => check,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => ChunkCheck::Mismatch(format!("checking the chunk: {e}")),
            }
        }
    };
    Ok(Fetched::Manifest(Box::new(Entry {
        manifest_path: path,
        metadata,
        canonical,
        marks_ends,
        check,
    })))
}

/// One source's manifests, walked in path order: what the next one is checked against, and
/// its summary so far.
#[derive(Default)]
struct SourceWalk {
    chunks: u64,
    sequences: Option<(u64, u64)>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    key_ids: BTreeSet<String>,
    unsigned: u64,
    chain_starts: u64,
    discontinuities: u64,
    problems: u64,
    /// The manifest before.
    prev: Option<Link>,
    /// Sequences that manifests record as dropped from a full spool.
    dropped: BTreeSet<u64>,
    /// Sequence gaps seen, judged at the end: a later manifest may record them as dropped.
    gaps: Vec<Gap>,
    /// File runs' chunks not marked as their run's end that no later chunk of their run has
    /// followed yet, by their canonical SHA-256 (a successor's `prev_sha256`): what is left
    /// at the end are runs that did not finish. One entry per run being walked, whatever
    /// the order of the objects (a file's chunks may interleave with live ones of the id).
    open_runs: std::collections::HashMap<String, OpenRun>,
    /// Manifests that the next one in path order did not continue (another chain of the id
    /// came between), by canonical SHA-256: where their chains may go on. Those never
    /// continued end runs that did not mark their end, or follow problems.
    tails: Tails,
    /// The last manifest of a live source, in path order.
    last_live: Option<Link>,
}

/// The last chunk seen of a file run that has not ended.
struct OpenRun {
    sequence: u64,
    object: String,
    end_time: DateTime<Utc>,
}

/// What a manifest's successor is checked against.
#[derive(Clone)]
struct Link {
    sequence: u64,
    /// The canonical SHA-256 of the manifest: the successor's `prev_sha256`.
    sha256: String,
    end_time: DateTime<Utc>,
    object: String,
    /// From a live source (clock `rtcp` or `receive`): its chain goes on across restarts.
    live: bool,
    /// Its `run_end`.
    run_end: Option<RunEnd>,
    /// It carries a signature (valid or not: an invalid one is reported by itself).
    signed: bool,
}

/// Manifests set aside as chains' possible ends, by canonical SHA-256, with the file runs'
/// ones also ordered by sequence and end time: finding the nearest one before a manifest
/// does not scan them all.
#[derive(Default)]
struct Tails {
    by_sha256: std::collections::HashMap<String, Link>,
    files: BTreeSet<(u64, DateTime<Utc>, String)>,
}

impl Tails {
    /// How many file runs' ends the nearest-end search looks at before it gives up (a
    /// hostile sink full of broken chains must not make verify quadratic).
    const NEAREST_SCAN: usize = 64;

    fn insert(&mut self, link: Link) {
        // The same manifest text twice (a copy stored under another name): the later one.
        self.remove(&link.sha256);
        if !link.live {
            self.files
                .insert((link.sequence, link.end_time, link.sha256.clone()));
        }
        self.by_sha256.insert(link.sha256.clone(), link);
    }

    fn remove(&mut self, sha256: &str) -> Option<Link> {
        let link = self.by_sha256.remove(sha256)?;
        if !link.live {
            self.files
                .remove(&(link.sequence, link.end_time, link.sha256.clone()));
        }
        Some(link)
    }

    /// Takes the file run's end with the highest sequence (then end time) below `sequence`
    /// that ended by `start`: the run of a chunk with that sequence and start, when several
    /// interleave.
    fn take_file_run_before(&mut self, sequence: u64, start: DateTime<Utc>) -> Option<Link> {
        let sha256 = self
            .files
            .range(..(sequence, DateTime::<Utc>::MIN_UTC, String::new()))
            .rev()
            .take(Self::NEAREST_SCAN)
            .find(|(_, end, _)| *end <= start)
            .map(|(_, _, sha)| sha.clone())?;
        self.remove(&sha256)
    }
}

/// What a file run that did not finish is reported as, at its last stored chunk.
fn unfinished_detail(run: &OpenRun) -> String {
    format!(
        "sequence {} is the last stored chunk of a run of a file, and it does not mark the \
         run's end (run_end null): the chunks after it are missing, or the run stopped before \
         the end of the file (stopped, killed, a damaged file) or is still going; running the \
         same file again stores what is missing where its chunk times come from the file \
         (clock file or file-mtime), as they do unless the file was copied without its times",
        run.sequence
    )
}

/// True for the clocks of live sources, whose chains go on across restarts (a file run
/// starts a chain of its own).
fn live_clock(clock: ClockSource) -> bool {
    matches!(clock, ClockSource::Rtcp | ClockSource::Receive)
}

/// The prefix a chunk's object sits under: its path without `<source>/yyyy/mm/dd/<name>`.
fn object_prefix(object: &str) -> &str {
    object.rsplitn(6, '/').nth(5).unwrap_or_default()
}

/// True when the chunk before `m` in its chain may have started before `from`: `m` starts
/// within one and a half chunks (of its own length or the one asked for, whichever is
/// longer) plus its recorded gap after `from`.
fn may_follow_one_before(m: &ChunkMetadata, from: DateTime<Utc>) -> bool {
    let chunk = m.duration_ms.max(m.requested_ms);
    let reach = chunk
        .saturating_add(chunk / 2)
        .saturating_add(m.gap_ms.unwrap_or(0));
    let after = m.start_time.signed_duration_since(from).num_milliseconds();
    after < i64::try_from(reach).unwrap_or(i64::MAX)
}

/// Sequences missing before a manifest, and what its link and time would be reported as
/// unless a later manifest records the missing ones as dropped.
struct Gap {
    object: String,
    /// The first missing sequence, and the manifest's.
    first: u64,
    at: u64,
    broken_chain: Option<String>,
    time_gap: Option<String>,
}

impl SourceWalk {
    fn push(
        &mut self,
        problems: &mut Vec<Problem>,
        id: &SourceId,
        kind: ProblemKind,
        object: &str,
        detail: String,
    ) {
        self.problems += 1;
        problems.push(Problem {
            kind,
            source_id: Some(id.to_string()),
            object: object.to_owned(),
            detail,
        });
    }

    /// What `m` is checked against: the manifest before it in path order, or the one it
    /// links to when that was set aside because another chain's manifests came between (two
    /// files run under one id, their times overlapping; a file run's chunks among a
    /// camera's). Takes the one before in path order out of `self.prev`. `None` for the
    /// first manifest, and for one that may be the first of its chain in a window starting
    /// at `from` (what it links to lies before the window).
    fn predecessor(
        &mut self,
        m: &ChunkMetadata,
        starts_chain: bool,
        from: Option<DateTime<Utc>>,
    ) -> Option<Link> {
        let path_prev = self.prev.take();
        let continues_path = path_prev
            .as_ref()
            .is_some_and(|p| m.prev_sha256.as_deref() == Some(p.sha256.as_str()));
        if let Some(p) = path_prev
            .as_ref()
            // A file run that marked its end goes on nowhere; a camera's chain goes on
            // across restarts.
            .filter(|p| !continues_path && (p.live || p.run_end.is_none()))
        {
            self.tails.insert(p.clone());
        }
        if continues_path || starts_chain {
            return path_prev;
        }
        if let Some(linked) = m.prev_sha256.as_ref().and_then(|l| self.tails.remove(l)) {
            return Some(linked);
        }
        // What it links to is not in the window: near the window's start, the first
        // manifest of another chain of the id (two files' runs interleaving) than the one
        // before it in path order, where that one is plainly of another chain.
        if from.is_some_and(|from| may_follow_one_before(m, from)) {
            let other_chain = |p: &Link| {
                p.sequence >= m.sequence
                    || p.live != live_clock(m.clock)
                    || (!p.live && p.run_end.is_some())
                    || p.end_time > m.start_time
            };
            if path_prev.as_ref().is_none_or(other_chain) {
                return None;
            }
        }
        // What it links to is missing (or altered): a file run's manifest is judged against
        // the nearest file run's before it (its own, when several interleave), anything else
        // against the one before it in path order.
        if !live_clock(m.clock)
            && let Some(tail) = self.tails.take_file_run_before(m.sequence, m.start_time)
        {
            return Some(tail);
        }
        if let Some(p) = &path_prev {
            self.tails.remove(&p.sha256);
        }
        path_prev
    }

    /// Checks the next manifest of the source (in path order).
    fn add(
        &mut self,
        id: &SourceId,
        entry: Entry,
        options: &VerifyOptions,
        problems: &mut Vec<Problem>,
    ) {
        let Entry {
            manifest_path,
            metadata: m,
            canonical,
            marks_ends,
            check,
        } = entry;
        let object = m.object.as_str();
        let expected = crispy_sink::manifest_path_for(object);
        // `crispy verify out/cam` on what `crispy run --sink out` wrote: every manifest sits
        // where it should, seen from a folder further up.
        let seen_from_below = expected != manifest_path
            && expected
                .strip_suffix(manifest_path.as_str())
                .is_some_and(|above| above.ends_with('/'));
        if expected != manifest_path {
            let hint = if seen_from_below {
                "; this looks like a folder inside the sink the run wrote: verify that sink's \
                 root (--source-id selects one source)"
            } else {
                ""
            };
            self.push(
                problems,
                id,
                ProblemKind::Misplaced,
                object,
                format!("manifest stored as {manifest_path} but describes {object}{hint}"),
            );
        }
        match check {
            ChunkCheck::Ok => {}
            // Looked up under the wrong root: the misplaced problem above says why.
            ChunkCheck::Missing if seen_from_below => {}
            ChunkCheck::Missing => self.push(
                problems,
                id,
                ProblemKind::OrphanManifest,
                object,
                "the chunk is missing".to_owned(),
            ),
            ChunkCheck::Tampered(detail) => {
                self.push(problems, id, ProblemKind::TamperedChunk, object, detail)
            }
            ChunkCheck::Mismatch(detail) => {
                self.push(problems, id, ProblemKind::ContentMismatch, object, detail)
            }
        }
        if let Some(s) = &m.signature {
            self.key_ids.insert(s.key_id.clone());
        }
        // A live source's chain may start after chunks it dropped before it stored any: its
        // first manifest records them. (A `prev_unknown` chain starts wherever its run
        // numbered from; `chain-restart` covers it.)
        let starts_chain = m.prev_sha256.is_none() && (m.sequence == 0 || live_clock(m.clock));
        if starts_chain && m.sequence > 0 && !m.prev_unknown {
            let recorded = (0..m.sequence).all(|s| m.dropped_sequences.binary_search(&s).is_ok());
            let (kind, detail) = match recorded {
                true => (
                    ProblemKind::Dropped,
                    format!(
                        "{} chunk(s) dropped before upload (sequences 0..={}), as this \
                         manifest records: its chain starts after them",
                        m.sequence,
                        m.sequence - 1
                    ),
                ),
                false => (
                    ProblemKind::Gap,
                    format!(
                        "{} chunk(s) missing: a chain starts at sequence {} without a link \
                         (prev_sha256 null), and its manifest does not record sequences 0..={} \
                         as dropped",
                        m.sequence,
                        m.sequence,
                        m.sequence - 1
                    ),
                ),
            };
            self.push(problems, id, kind, object, detail);
        }
        let pred = self.predecessor(&m, starts_chain, options.from);
        // A file run starts at sequence 0: one whose first stored chunk comes later lost its
        // head (unless the window starts after it).
        if pred.is_none() && !starts_chain && !live_clock(m.clock) && options.from.is_none() {
            self.push(
                problems,
                id,
                ProblemKind::Gap,
                object,
                format!(
                    "{} chunk(s) missing: sequence {} is the first stored chunk of a run of a \
                     file, which starts at sequence 0 (prev_sha256 {} names a manifest that \
                     is not there)",
                    m.sequence,
                    m.sequence,
                    m.prev_sha256.as_deref().unwrap_or("null")
                ),
            );
        }
        // The manifest before in the same chain was signed: `--allow-unsigned` accepts chains
        // that are unsigned from their start, not one whose signatures stop (a stripped
        // signature leaves the chain's links whole, and the last manifest free to edit).
        let signed_before = pred.as_ref().is_some_and(|p| {
            p.signed && !starts_chain && m.prev_sha256.as_deref() == Some(p.sha256.as_str())
        });
        match options.keys.verify(&canonical, m.signature.as_ref()) {
            Ok(()) => {}
            Err(VerifyError::Unsigned) if signed_before => {
                self.unsigned += 1;
                let p = pred.as_ref().map(|p| p.object.as_str()).unwrap_or_default();
                self.push(
                    problems,
                    id,
                    ProblemKind::Unsigned,
                    object,
                    format!(
                        "the manifest is not signed, but the one before it in its chain ({p}) \
                         is: its signature may have been stripped and the manifest edited (a \
                         live source restarted without its key looks the same); \
                         --allow-unsigned accepts only chains unsigned from their start"
                    ),
                );
            }
            Err(VerifyError::Unsigned) => {
                self.unsigned += 1;
                if !options.allow_unsigned {
                    self.push(
                        problems,
                        id,
                        ProblemKind::Unsigned,
                        object,
                        "the manifest is not signed (--allow-unsigned accepts this)".to_owned(),
                    );
                }
            }
            Err(e @ VerifyError::UnknownKey { .. }) => {
                self.push(problems, id, ProblemKind::UnknownKey, object, e.to_string())
            }
            Err(e) => self.push(
                problems,
                id,
                ProblemKind::TamperedManifest,
                object,
                format!("its manifest {manifest_path}: {e}"),
            ),
        }
        if m.discontinuity {
            self.discontinuities += 1;
        }
        if starts_chain {
            self.chain_starts += 1;
            // Each run of a file starts its own chain; a live source's chain goes on across
            // restarts, so a new one right after its earlier live chunks (under the same
            // prefix: one id may be used at several sites) hides whatever came between.
            let restarts = |p: &&Link| {
                p.live && live_clock(m.clock) && object_prefix(&p.object) == object_prefix(object)
            };
            // Against the source's last live manifest, whatever came between (a file run's
            // chunks under the same id).
            if let Some(p) = self.last_live.as_ref().filter(restarts) {
                let why = if m.prev_unknown {
                    "the run that stored it could not read the sink's last manifest when it \
                     started (prev_unknown)"
                } else {
                    "a restarted live source continues its chain"
                };
                let detail = format!(
                    "a new hash chain starts at sequence {} after sequence {} ({}): {why}, so \
                     the chunks after sequence {} cannot be proven complete",
                    m.sequence, p.sequence, p.object, p.sequence
                );
                self.push(problems, id, ProblemKind::ChainRestart, object, detail);
            }
        }
        // The run this chunk continues is not open at the chunk before it any more: the one
        // it links to, or (chunks missing or altered between) the one before it of the run.
        // (A live source restarted under the id of a file run continues its chain, but the
        // file run is not finished by it.)
        if let Some(link) = m.prev_sha256.as_ref().filter(|_| !live_clock(m.clock)) {
            self.open_runs.remove(link);
        }
        if let Some(p) = &pred
            && !starts_chain
            && !live_clock(m.clock)
            && !p.live
            && m.sequence > p.sequence
        {
            self.open_runs.remove(&p.sha256);
        }
        self.dropped.extend(m.dropped_sequences.iter().copied());
        if let Some(p) = pred.filter(|_| !starts_chain) {
            let broken_chain = (m.prev_sha256.as_deref() != Some(p.sha256.as_str())).then(|| {
                format!(
                    "prev_sha256 {} does not match the previous manifest ({}, {})",
                    m.prev_sha256.as_deref().unwrap_or("null"),
                    p.object,
                    p.sha256
                )
            });
            let time_gap = (!m.discontinuity && m.start_time != p.end_time).then(|| {
                format!(
                    "starts at {} but the previous chunk ended at {}",
                    m.start_time.to_rfc3339(),
                    p.end_time.to_rfc3339()
                )
            });
            if m.sequence > p.sequence + 1 {
                self.gaps.push(Gap {
                    object: object.to_owned(),
                    first: p.sequence + 1,
                    at: m.sequence,
                    broken_chain,
                    time_gap,
                });
            } else {
                if m.sequence <= p.sequence {
                    self.push(
                        problems,
                        id,
                        ProblemKind::Reordered,
                        object,
                        if m.sequence == p.sequence {
                            format!("sequence {} appears twice (also {})", m.sequence, p.object)
                        } else {
                            format!("sequence {} follows {}", m.sequence, p.sequence)
                        },
                    );
                }
                if let Some(detail) = broken_chain {
                    self.push(problems, id, ProblemKind::BrokenChain, object, detail);
                }
                if let Some(detail) = time_gap {
                    self.push(problems, id, ProblemKind::TimeGap, object, detail);
                }
            }
        }
        self.chunks += 1;
        self.sequences = Some(match self.sequences {
            Some((lo, hi)) => (lo.min(m.sequence), hi.max(m.sequence)),
            None => (m.sequence, m.sequence),
        });
        self.start_time.get_or_insert(m.start_time);
        self.end_time = Some(m.end_time);
        let sha256 = sha256_hex(&canonical);
        let live = live_clock(m.clock);
        // Writers that record run ends say `null` on every chunk but a run's last; older
        // ones write no member, and their runs are not judged.
        if !live && marks_ends && m.run_end.is_none() {
            self.open_runs.insert(
                sha256.clone(),
                OpenRun {
                    sequence: m.sequence,
                    object: m.object.clone(),
                    end_time: m.end_time,
                },
            );
        }
        let link = Link {
            sequence: m.sequence,
            sha256,
            end_time: m.end_time,
            object: m.object,
            live,
            run_end: m.run_end,
            signed: m.signature.is_some(),
        };
        if live {
            self.last_live = Some(link.clone());
        }
        self.prev = Some(link);
    }

    /// Judges the gaps (now that every manifest that could record them as dropped has been
    /// read) and whether a file run's last chunk ends it, where a chunk after it would start
    /// before `to`; sums the source up. `None` when it had no manifest.
    fn finish(
        mut self,
        id: &SourceId,
        to: Option<DateTime<Utc>>,
        problems: &mut Vec<Problem>,
    ) -> Option<SourceSummary> {
        let mut open: Vec<OpenRun> = std::mem::take(&mut self.open_runs)
            .into_values()
            // A chunk following it would start at its end: inside the window, or not.
            .filter(|run| to.is_none_or(|to| run.end_time < to))
            .collect();
        open.sort_by(|a, b| a.object.cmp(&b.object));
        for run in open {
            let detail = unfinished_detail(&run);
            self.push(problems, id, ProblemKind::Unfinished, &run.object, detail);
        }
        for gap in std::mem::take(&mut self.gaps) {
            let missing = gap.first..gap.at;
            if missing.clone().all(|s| self.dropped.contains(&s)) {
                // A recorded loss: the links to the dropped chunks cannot be checked.
                self.push(
                    problems,
                    id,
                    ProblemKind::Dropped,
                    &gap.object,
                    format!(
                        "{} chunk(s) dropped before upload (a full spool or disk, or larger \
                         than --spool-max: sequences {}..={}), as a later manifest records",
                        gap.at - gap.first,
                        gap.first,
                        gap.at - 1
                    ),
                );
                continue;
            }
            self.push(
                problems,
                id,
                ProblemKind::Gap,
                &gap.object,
                format!(
                    "{} chunk(s) missing: sequence {} follows {}",
                    gap.at - gap.first,
                    gap.at,
                    gap.first - 1
                ),
            );
            if let Some(detail) = gap.broken_chain {
                self.push(problems, id, ProblemKind::BrokenChain, &gap.object, detail);
            }
            if let Some(detail) = gap.time_gap {
                self.push(problems, id, ProblemKind::TimeGap, &gap.object, detail);
            }
        }
        let (Some(start_time), Some(end_time), Some(sequences)) =
            (self.start_time, self.end_time, self.sequences)
        else {
            return None;
        };
        Some(SourceSummary {
            source_id: id.to_string(),
            chunks: self.chunks,
            sequences,
            start_time,
            end_time,
            key_ids: self.key_ids.into_iter().collect(),
            unsigned: self.unsigned,
            chain_starts: self.chain_starts,
            discontinuities: self.discontinuities,
            run_end: self.prev.and_then(|p| p.run_end),
            problems: self.problems,
        })
    }
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
    if mp4.shown != m.frame_count {
        diffs.push(format!(
            "{} frames shown (manifest {})",
            mp4.shown, m.frame_count
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
    if same_clock && i64::try_from(mp4.presented_ts).ok() != Some(m.duration_ts) {
        diffs.push(format!(
            "{} ticks long (manifest {})",
            mp4.presented_ts, m.duration_ts
        ));
    } else if !same_clock {
        let ts = u128::from(mp4.timescale.max(1));
        let ms = (u128::from(mp4.presented_ts) * 1000 + ts / 2) / ts;
        if ms.abs_diff(u128::from(m.duration_ms)) > 1 {
            diffs.push(format!("{ms} ms long (manifest {})", m.duration_ms));
        }
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
    fn the_nearest_file_run_end_is_found_without_scanning_them_all() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 24, 10, 0, 0)
            .single()
            .expect("time");
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let link = |sequence: u64, end: i64, live: bool| Link {
            sequence,
            sha256: format!("{sequence}-{end}-{live}"),
            end_time: at(end),
            object: String::new(),
            live,
            run_end: None,
            signed: false,
        };
        let mut tails = Tails::default();
        for (sequence, end, live) in [(3, 4, false), (5, 9, false), (4, 5, false), (6, 6, true)] {
            tails.insert(link(sequence, end, live));
        }
        // Sequence 7 starting at 8 s: 5 ended too late, the camera's end is not a file's.
        let found = tails.take_file_run_before(7, at(8)).expect("found");
        assert_eq!((found.sequence, found.end_time), (4, at(5)));
        assert!(tails.remove("4-5-false").is_none(), "taken");
        assert!(tails.take_file_run_before(3, at(100)).is_none());
        assert!(
            tails.remove("6-6-true").is_some(),
            "live ends stay findable by link"
        );
        // Thousands of ends that ended too late: the search gives up (5, which ended in
        // time, lies past them) instead of scanning them all.
        for sequence in 10..10_000 {
            tails.insert(link(sequence, 1_000_000, false));
        }
        assert!(tails.take_file_run_before(10_000, at(10)).is_none());
        assert!(tails.take_file_run_before(10, at(10)).is_some());
        assert_eq!(tails.files.len(), tails.by_sha256.len());
        // The same text again replaces the entry.
        tails.insert(link(3, 4, false));
        assert_eq!(tails.files.len(), tails.by_sha256.len());
    }

    #[test]
    fn object_prefixes_are_what_lies_above_the_source() {
        let name = "20261124T101500.000Z-00000042.mp4";
        assert_eq!(object_prefix(&format!("cam/2026/11/24/{name}")), "");
        assert_eq!(
            object_prefix(&format!("site-a/cam/2026/11/24/{name}")),
            "site-a"
        );
        assert_eq!(object_prefix(&format!("a/b/cam/2026/11/24/{name}")), "a/b");
    }

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
