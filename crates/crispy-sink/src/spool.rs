//! The durable local spool: every chunk and its manifest are on disk (written to a temporary
//! file, fsynced, renamed, the directory fsynced) before they count as accepted, and stay
//! there until the store confirms the upload.
//!
//! Layout under the spool root, one directory per sink (named after its URL) so several
//! sinks can share a root:
//!
//! ```text
//! <root>/<sink-key>/lock                      held (flock) by the process using it
//! <root>/<sink-key>/tmp/                      files being written
//! <root>/<sink-key>/sources/<source>/<seq:020>-<sha256[..16]>.mp4   chunk
//! <root>/<sink-key>/sources/<source>/<seq:020>-<sha256[..16]>.json  manifest (the commit)
//! <root>/<sink-key>/sources/<source>/last.json      the source's last accepted manifest
//! <root>/<sink-key>/sources/<source>/dropped.json   its drops no accepted manifest records yet
//! <root>/<sink-key>/conflicts/                entries the store refused as conflicting
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use crispy_core::{ChunkMetadata, Payload, SourceId, StoredManifest};

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool directory cannot be created, locked or written.
    #[error("spool {dir}: {what}: {source}")]
    Io {
        /// The spool directory.
        dir: String,
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the spool.
    #[error(
        "spool {dir} is in use by another crispy process{holder} (one process per sink and \
         spool; give this one its own --spool-dir)"
    )]
    InUse {
        /// The spool directory.
        dir: String,
        /// ` (pid N)` when known.
        holder: String,
    },
    /// The disk holding the spool is full: the chunk was not accepted.
    #[error(
        "spool {dir}: the disk is full; the chunk was not accepted (nothing truncated is kept)"
    )]
    DiskFull {
        /// The spool directory.
        dir: String,
    },
    /// The chunk is larger than the whole spool may hold.
    #[error("spool {dir}: a chunk of {bytes} bytes does not fit in --spool-max {max} bytes")]
    TooLarge {
        /// The spool directory.
        dir: String,
        /// The chunk and manifest size.
        bytes: u64,
        /// The spool's limit.
        max: u64,
    },
    /// The spool is shutting down.
    #[error("spool {dir} is closing")]
    Closed {
        /// The spool directory.
        dir: String,
    },
    /// Entries found damaged (a manifest without its chunk, a chunk whose bytes no longer
    /// match its manifest, an unreadable file): set aside in `conflicts/`, not uploaded.
    #[error(
        "spool {dir}: {count} entr{ies} damaged and set aside in {kept_in}, not uploaded (the \
         chunks are missing from the sink): {first}",
        ies = if *count == 1 { "y" } else { "ies" }
    )]
    Damaged {
        /// The spool directory.
        dir: String,
        /// How many.
        count: usize,
        /// What was wrong with the first one.
        first: String,
        /// Where they went.
        kept_in: String,
    },
}

/// One accepted chunk waiting in the spool.
#[derive(Debug, Clone)]
pub struct SpoolEntry {
    /// Its source.
    pub source_id: SourceId,
    /// Its sequence number.
    pub sequence: u64,
    /// The chunk file.
    pub chunk_path: PathBuf,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// Chunk plus manifest bytes.
    pub bytes: u64,
    /// Acceptance order (recovered entries first, in source and sequence order).
    pub order: u64,
    /// The earlier drops this chunk's manifest records (`dropped_sequences`): if this entry
    /// is dropped in turn, the record moves on to the next manifest instead of vanishing.
    pub carried_drops: Vec<u64>,
}

/// What an accept did.
#[derive(Debug, Default)]
pub struct Accepted {
    /// The chunk's entry; `None` when a live source's chunk was dropped itself (the spool
    /// is full of chunks being uploaded).
    pub entry: Option<SpoolEntry>,
    /// Chunks of this source dropped now (oldest first) to make room, this one included
    /// when `entry` is `None`: source and sequence. The spool records them
    /// ([`Spool::drops_to_record`]) until a manifest it accepts records them.
    pub dropped: Vec<(SourceId, u64)>,
    /// A live source's chunk that could not be spooled (a full disk, a chunk larger than
    /// the spool): why. The chunk is then the last of `dropped`.
    pub refused: Option<SpoolError>,
}

/// A live source's dropped chunks that no manifest accepted into the spool records yet, as
/// kept on disk (`dropped.json`) so that a run that ends first does not lose the record:
/// the source's next run records them in its first manifest and numbers its chunks after
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingDrops {
    /// The link (canonical SHA-256) of the source's last manifest accepted before these
    /// drops were kept, `None` if there was none: the next run uses the record only when it
    /// continues the chain from that same manifest (anything stored since makes it stale).
    pub after: Option<String>,
    /// The link of the manifest whose accept was dropping these chunks when the record was
    /// kept (it is written after the record): a run continuing from it may use the record,
    /// less what that manifest records.
    pub accepting: Option<String>,
    /// The dropped sequence numbers, ascending.
    pub sequences: Vec<u64>,
}

/// A source's dropped chunks that no manifest accepted into the spool records, at the end of
/// a run ([`Spool::unrecorded_drops`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrecordedDrops {
    /// The source.
    pub source_id: SourceId,
    /// The dropped sequence numbers, ascending.
    pub sequences: Vec<u64>,
    /// Whether the spool keeps them on disk for the source's next run (never for a spool in
    /// memory; not when the record could not be written, a full disk).
    pub kept: bool,
}

/// The spool's record of one live source's drops that no accepted manifest records yet.
#[derive(Debug, Default)]
struct DropRecord {
    /// What the source's chain continues from: the link it started from, or its last
    /// accepted manifest (hashed only when the record is written).
    after: ChainTip,
    /// The manifest being accepted when the record was written, if the drops were made for
    /// it: a crash after it is stored and before the record follows it leaves this record,
    /// which then applies to a run continuing from that manifest.
    accepting: Option<Bytes>,
    sequences: BTreeSet<u64>,
    /// Whether the disk holds this record as it stands (`dropped.json`, or no file when
    /// there are no sequences).
    kept: bool,
    /// Whether the last write failed (reported once until one succeeds).
    failing: bool,
}

/// The manifest a source's hash chain continues from.
#[derive(Debug, Clone)]
enum ChainTip {
    /// The canonical SHA-256 of the manifest a run continues from (`None`: a new chain).
    Link(Option<String>),
    /// A manifest accepted in this run, as stored.
    Manifest(Bytes),
}

impl Default for ChainTip {
    fn default() -> Self {
        Self::Link(None)
    }
}

impl ChainTip {
    /// The link, as the next run computes it from the stored text.
    fn link(&self) -> Option<String> {
        match self {
            Self::Link(link) => link.clone(),
            Self::Manifest(text) => Some(match crispy_signer::canonical_bytes_of_json(text) {
                Some(canonical) => crispy_signer::sha256_hex(&canonical),
                None => crispy_signer::sha256_hex(text),
            }),
        }
    }
}

/// The most sequences one source's `dropped.json` may name: more is taken as damage (a week
/// of one-second chunks is 604,800), since its first manifest would have to list them all.
const MAX_KEPT_DROPS: u64 = 1_000_000;

/// The largest `dropped.json` read (runs of numbers: a few bytes each).
const MAX_DROPS_FILE: u64 = 4 << 20;

#[derive(Debug, Default)]
struct State {
    /// Pending entries by acceptance order; change them only through `insert` and `take`,
    /// which keep the two indexes below.
    entries: HashMap<u64, SpoolEntry>,
    /// The chunk files of the pending entries: a chunk already pending is not accepted twice.
    paths: HashSet<PathBuf>,
    /// Each source's pending entries in acceptance order: the oldest is the one dropped when
    /// a live source finds the spool full. With these an accept costs the same with 100,000
    /// chunks pending (a long outage) as with ten.
    by_source: HashMap<SourceId, BTreeSet<u64>>,
    /// In-memory mode: each entry's chunk and manifest, and each source's newest manifest.
    held: HashMap<u64, (Payload, Bytes)>,
    last: HashMap<SourceId, Bytes>,
    in_flight: HashSet<u64>,
    used: u64,
    next_order: u64,
    closed: bool,
}

impl State {
    fn insert(&mut self, entry: SpoolEntry) {
        self.paths.insert(entry.chunk_path.clone());
        self.by_source
            .entry(entry.source_id.clone())
            .or_default()
            .insert(entry.order);
        self.entries.insert(entry.order, entry);
    }

    /// Removes an entry (and what memory mode held of it); its bytes stay counted in `used`.
    fn take(&mut self, order: u64) -> Option<SpoolEntry> {
        let entry = self.entries.remove(&order)?;
        self.paths.remove(&entry.chunk_path);
        if let Some(orders) = self.by_source.get_mut(&entry.source_id) {
            orders.remove(&order);
            if orders.is_empty() {
                self.by_source.remove(&entry.source_id);
            }
        }
        self.held.remove(&order);
        Some(entry)
    }

    /// Takes an entry out to be dropped, with what memory mode held of it, so that it can
    /// be restored if the drop is called off.
    fn evict(&mut self, order: u64) -> Option<Evicted> {
        let held = self.held.remove(&order);
        let entry = self.take(order)?;
        self.used -= entry.bytes;
        Some(Evicted { entry, held })
    }

    /// Puts an evicted entry back as it was.
    fn restore(&mut self, evicted: Evicted) {
        let Evicted { entry, held } = evicted;
        self.used += entry.bytes;
        if let Some(held) = held {
            self.held.insert(entry.order, held);
        }
        self.insert(entry);
    }

    /// The oldest pending entry of `source` that is not being uploaded.
    fn oldest_idle(&self, source: &SourceId) -> Option<u64> {
        self.by_source
            .get(source)?
            .iter()
            .copied()
            .find(|order| !self.in_flight.contains(order))
    }
}

/// An entry taken out of the index to be dropped, and the bytes a memory spool held of it.
struct Evicted {
    entry: SpoolEntry,
    held: Option<(Payload, Bytes)>,
}

/// The spool of one sink. Shared by the readers (which accept chunks into it) and the
/// uploader (which removes them once stored).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    freed: Condvar,
    /// Entries live in memory, not on disk (sinks on local disk or in memory).
    memory: bool,
    /// Manifests found at open without their chunk, set aside: what was wrong with each.
    damaged_at_open: Vec<String>,
    /// Each live source's drops that no accepted manifest records yet. Only the source's
    /// own accepts change its record (one thread per source), so a record is written to
    /// disk outside the lock.
    drops: Mutex<HashMap<SourceId, DropRecord>>,
    _lock: Option<File>,
    _temp: Option<tempfile::TempDir>,
}

impl Spool {
    /// Opens (creating) the spool of the sink `sink_url` under `root`, locks it, removes
    /// half-written files and returns the entries still pending, in source and sequence
    /// order.
    pub fn open(
        root: &Path,
        sink_url: &str,
        max_bytes: u64,
    ) -> Result<(Self, Vec<SpoolEntry>), SpoolError> {
        let dir = root.join(sink_key(sink_url));
        Self::open_dir(dir, max_bytes, None)
    }

    /// A spool in a fresh temporary directory, removed when dropped: for sinks that do not
    /// outlive the process (`memory://`).
    pub fn temporary(max_bytes: u64) -> Result<Self, SpoolError> {
        let temp = tempfile::Builder::new()
            .prefix("crispy-spool-")
            .tempdir()
            .map_err(|source| SpoolError::Io {
                dir: std::env::temp_dir().display().to_string(),
                what: "creating a temporary spool".to_owned(),
                source,
            })?;
        let dir = temp.path().to_path_buf();
        Ok(Self::open_dir(dir, max_bytes, Some(temp))?.0)
    }

    /// A spool that holds accepted chunks in memory, for sinks where a disk spool adds
    /// little: a local directory (a second copy on the same disk) and `memory://`.
    /// `max_bytes` bounds the memory held; file sources wait, live sources drop their
    /// oldest, exactly as on disk.
    pub fn in_memory(max_bytes: u64) -> Self {
        Self {
            dir: PathBuf::from("(memory)"),
            max_bytes,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            memory: true,
            damaged_at_open: Vec::new(),
            drops: Mutex::default(),
            _lock: None,
            _temp: None,
        }
    }

    fn open_dir(
        dir: PathBuf,
        max_bytes: u64,
        temp: Option<tempfile::TempDir>,
    ) -> Result<(Self, Vec<SpoolEntry>), SpoolError> {
        let shown = dir.display().to_string();
        let io = |what: &str| {
            let shown = shown.clone();
            let what = what.to_owned();
            move |source| SpoolError::Io {
                dir: shown,
                what,
                source,
            }
        };
        std::fs::create_dir_all(dir.join("tmp")).map_err(io("creating the directory"))?;
        std::fs::create_dir_all(dir.join("sources")).map_err(io("creating the directory"))?;
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io("opening the lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(dir.join("lock")).unwrap_or_default();
                let pid = pid.trim();
                return Err(SpoolError::InUse {
                    dir: shown,
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking")(e)),
        }
        lock.set_len(0).map_err(io("writing the lock file"))?;
        write!(lock, "{}", std::process::id()).map_err(io("writing the lock file"))?;

        // Half-written files from a crash.
        for e in std::fs::read_dir(dir.join("tmp"))
            .map_err(io("reading tmp"))?
            .flatten()
        {
            let _ = std::fs::remove_file(e.path());
        }
        let mut found: Vec<SpoolEntry> = Vec::new();
        let mut damaged = Vec::new();
        for source_dir in std::fs::read_dir(dir.join("sources"))
            .map_err(io("listing"))?
            .flatten()
        {
            let name = source_dir.file_name().to_string_lossy().into_owned();
            let Ok(source_id) = name.parse::<SourceId>() else {
                continue;
            };
            if !source_dir.path().is_dir() {
                continue;
            }
            for file in std::fs::read_dir(source_dir.path())
                .map_err(io("listing"))?
                .flatten()
            {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "mp4") {
                    let manifest_path = path.with_extension("json");
                    if !manifest_path.exists() {
                        // An accept cut off before its commit (the chunk was never
                        // accepted), or a removal after the upload cut off between its two
                        // files (the manifest goes first).
                        tracing::warn!(
                            file = %path.display(),
                            "spool: removing a chunk file without its manifest (left by a crash \
                             during an accept or after an upload)"
                        );
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    let Some(sequence) = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.split('-').next())
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let bytes = file_len(&path) + file_len(&manifest_path);
                    let carried_drops = std::fs::read(&manifest_path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<ChunkMetadata>(&b).ok())
                        .map(|m| m.dropped_sequences)
                        .unwrap_or_default();
                    found.push(SpoolEntry {
                        source_id: source_id.clone(),
                        sequence,
                        chunk_path: path,
                        manifest_path,
                        bytes,
                        order: 0,
                        carried_drops,
                    });
                } else if path.extension().is_some_and(|e| e == "json")
                    && is_entry_name(&path)
                    && !path.with_extension("mp4").exists()
                {
                    // Never left by a crash (the chunk is written before its manifest and
                    // removed after it): the chunk was lost. Kept for a human, reported.
                    let target = dir.join("conflicts").join(&name);
                    let kept = std::fs::create_dir_all(&target)
                        .and_then(|()| std::fs::rename(&path, target.join(file.file_name())));
                    let what = format!(
                        "{} has no chunk beside it{}",
                        path.display(),
                        match kept {
                            Ok(()) => String::new(),
                            Err(e) => format!(" (and cannot be set aside: {e})"),
                        }
                    );
                    tracing::error!(kept_in = %target.display(), "spool: {what}");
                    damaged.push(what);
                }
            }
        }
        found.sort_by(|a, b| {
            (a.source_id.as_str(), a.sequence).cmp(&(b.source_id.as_str(), b.sequence))
        });
        let mut state = State::default();
        for (i, e) in found.iter_mut().enumerate() {
            e.order = i as u64;
            state.used += e.bytes;
            state.insert(e.clone());
        }
        state.next_order = found.len() as u64;
        Ok((
            Self {
                dir,
                max_bytes,
                state: Mutex::new(state),
                freed: Condvar::new(),
                memory: false,
                damaged_at_open: damaged,
                drops: Mutex::default(),
                _lock: Some(lock),
                _temp: temp,
            },
            found,
        ))
    }

    /// Entries found damaged when the spool was opened and set aside in `conflicts/` (what
    /// was wrong with each); the run reports them.
    pub fn damaged_at_open(&self) -> &[String] {
        &self.damaged_at_open
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether accepted chunks are held in memory (gone if the process ends) rather than on
    /// disk.
    pub fn is_in_memory(&self) -> bool {
        self.memory
    }

    /// Bytes held (chunks plus manifests).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shown(&self) -> String {
        self.dir.display().to_string()
    }

    /// Accepts a chunk: on disk and durable when this returns.
    ///
    /// When the spool is full, a `live` source drops its own oldest entries that are not
    /// being uploaded (returned; other sources' chunks are never touched); a file source
    /// waits until uploads free room or `cancelled` says to stop ([`SpoolError::Closed`]).
    /// A full disk is [`SpoolError::DiskFull`] with nothing left behind. A chunk already
    /// pending under the same name (a file run again after an interruption) is not written
    /// twice: `entry` is `None` and the pending one goes out.
    ///
    /// A live source's chunk that cannot be spooled (any error but [`SpoolError::Closed`])
    /// is dropped too: `Ok` with the error in `refused`. The spool records a live source's
    /// drops itself, on disk before a dropped entry's files are removed, with the earlier
    /// drops their manifests recorded; the source's next manifest must record them all
    /// ([`Self::drops_to_record`]), and accepting it clears them.
    pub fn accept(
        &self,
        metadata: &ChunkMetadata,
        payload: &Payload,
        manifest: &Bytes,
        live: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Accepted, SpoolError> {
        let mut accepted = Accepted::default();
        match self.accept_inner(metadata, payload, manifest, live, cancelled, &mut accepted) {
            Ok(()) => {
                if accepted.entry.is_some() {
                    self.recorded(metadata, manifest);
                }
                Ok(accepted)
            }
            Err(e @ SpoolError::Closed { .. }) => Err(e),
            Err(e) if live => {
                let id = &metadata.source_id;
                accepted.dropped.push((id.clone(), metadata.sequence));
                self.note_drops(id, [metadata.sequence], None);
                accepted.refused = Some(e);
                Ok(accepted)
            }
            Err(e) => Err(e),
        }
    }

    fn accept_inner(
        &self,
        metadata: &ChunkMetadata,
        payload: &Payload,
        manifest: &Bytes,
        live: bool,
        cancelled: &dyn Fn() -> bool,
        accepted: &mut Accepted,
    ) -> Result<(), SpoolError> {
        let bytes = (payload.len() + manifest.len()) as u64;
        if bytes > self.max_bytes {
            return Err(SpoolError::TooLarge {
                dir: self.shown(),
                bytes,
                max: self.max_bytes,
            });
        }
        let (chunk_path, manifest_path) = self.entry_paths(metadata);
        let id = &metadata.source_id;
        // Entries dropped to make room: out of the index now, their files removed once the
        // record of the drop is kept.
        let mut evicted: Vec<Evicted> = Vec::new();
        let mut state = self.lock();
        if state.paths.contains(&chunk_path) {
            return Ok(());
        }
        loop {
            if state.closed || (!live && cancelled()) {
                // Nothing dropped after all.
                for e in evicted.drain(..) {
                    state.restore(e);
                }
                return Err(SpoolError::Closed { dir: self.shown() });
            }
            if state.used + bytes <= self.max_bytes {
                break;
            }
            if live {
                let Some(order) = state.oldest_idle(id) else {
                    // Everything else of this source is being uploaded: this chunk is the
                    // one dropped (its manifest's records of earlier drops stay recorded),
                    // and the idle entries taken out for it stay.
                    for e in evicted.drain(..) {
                        state.restore(e);
                    }
                    drop(state);
                    accepted.dropped = vec![(id.clone(), metadata.sequence)];
                    self.note_drops(id, [metadata.sequence], None);
                    return Ok(());
                };
                if let Some(e) = state.evict(order) {
                    accepted
                        .dropped
                        .push((e.entry.source_id.clone(), e.entry.sequence));
                    evicted.push(e);
                }
            } else {
                state = self
                    .freed
                    .wait_timeout(state, Duration::from_millis(500))
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
        // Reserve the room before writing, so concurrent readers do not overfill.
        state.used += bytes;
        drop(state);
        self.drop_evicted(id, evicted, manifest);
        let written = if self.memory {
            Ok(())
        } else {
            self.write_entry(metadata, payload, manifest, &chunk_path, &manifest_path)
        };
        match written {
            Ok(()) => {
                let mut state = self.lock();
                let order = state.next_order;
                state.next_order += 1;
                let entry = SpoolEntry {
                    source_id: metadata.source_id.clone(),
                    sequence: metadata.sequence,
                    chunk_path,
                    manifest_path,
                    bytes,
                    order,
                    carried_drops: metadata.dropped_sequences.clone(),
                };
                state.insert(entry.clone());
                if self.memory {
                    state
                        .held
                        .insert(order, (payload.clone(), manifest.clone()));
                    state
                        .last
                        .insert(metadata.source_id.clone(), manifest.clone());
                }
                accepted.entry = Some(entry);
                Ok(())
            }
            Err(e) => {
                self.lock().used -= bytes;
                Err(e)
            }
        }
    }

    /// Records the drop of entries taken out of the index (with the earlier drops their
    /// manifests recorded) for the accept of `accepting`, then removes their files: a crash
    /// in between leaves the entries pending, never gone unrecorded. If the record cannot be
    /// written (a full disk), the files go first to free the room, and the record is tried
    /// once more.
    fn drop_evicted(&self, id: &SourceId, evicted: Vec<Evicted>, accepting: &Bytes) {
        if evicted.is_empty() {
            return;
        }
        let sequences: Vec<u64> = evicted
            .iter()
            .flat_map(|e| {
                std::iter::once(e.entry.sequence).chain(e.entry.carried_drops.iter().copied())
            })
            .collect();
        let kept = self.note_drops(id, sequences, Some(accepting));
        if !self.memory {
            for e in evicted {
                let _ = std::fs::remove_file(&e.entry.manifest_path);
                let _ = std::fs::remove_file(&e.entry.chunk_path);
            }
            if !kept {
                self.keep_record(id);
            }
        }
    }

    /// Adds `sequences` to `id`'s record of drops and keeps it; false when the record could
    /// not be written. `accepting` is the manifest whose accept makes the drops (to be
    /// written after the record), `None` when none is.
    fn note_drops(
        &self,
        id: &SourceId,
        sequences: impl IntoIterator<Item = u64>,
        accepting: Option<&Bytes>,
    ) -> bool {
        {
            let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
            let record = drops.entry(id.clone()).or_default();
            let before = record.sequences.len();
            record.sequences.extend(sequences);
            let after = record.sequences.len();
            if before as u64 <= MAX_KEPT_DROPS && after as u64 > MAX_KEPT_DROPS {
                tracing::error!(
                    source = %id,
                    dropped = after,
                    "more than {MAX_KEPT_DROPS} dropped chunks wait for a manifest to record \
                     them: if this run ends first, the next one will not take the record"
                );
            }
            if after == before && record.kept && record.accepting.as_ref() == accepting {
                return true;
            }
            record.accepting = accepting.cloned();
            record.kept = false;
        }
        self.keep_record(id)
    }

    /// A manifest of `metadata`'s source was accepted: the drops it records are recorded,
    /// and what is left of the record now follows it.
    fn recorded(&self, metadata: &ChunkMetadata, manifest: &Bytes) {
        let id = &metadata.source_id;
        {
            let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
            let Some(record) = drops.get_mut(id) else {
                return;
            };
            for s in &metadata.dropped_sequences {
                record.sequences.remove(s);
            }
            record.after = ChainTip::Manifest(manifest.clone());
            if record.accepting.take().is_some() {
                record.kept = false;
            }
            // A record on disk names the manifest it follows: rewritten (or removed).
            if !record.sequences.is_empty() || !metadata.dropped_sequences.is_empty() {
                record.kept = false;
            }
        }
        self.keep_record(id);
    }

    /// Writes `id`'s record of drops to disk as it stands (removes it when empty). A spool
    /// in memory keeps nothing; a record that cannot be written is reported (once until it
    /// can be again) and stays in memory, for the source's next manifest.
    fn keep_record(&self, id: &SourceId) -> bool {
        if self.memory {
            return false;
        }
        // Copied out under the lock; hashed and written outside it.
        let (after, accepting, sequences, failing) = {
            let drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
            let Some(record) = drops.get(id) else {
                return true;
            };
            if record.kept {
                return true;
            }
            (
                record.after.clone(),
                record.accepting.clone().map(ChainTip::Manifest),
                record.sequences.iter().copied().collect(),
                record.failing,
            )
        };
        let now = PendingDrops {
            after: after.link(),
            accepting: accepting.and_then(|a| a.link()),
            sequences,
        };
        let result = self.write_drops(id, &now);
        let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        let Some(record) = drops.get_mut(id) else {
            return result.is_ok();
        };
        record.kept = result.is_ok();
        record.failing = result.is_err();
        if let Err(e) = &result
            && !failing
        {
            tracing::error!(
                source = %id,
                sequences = %crispy_core::sequence_ranges(&now.sequences),
                "{e}; the dropped chunks are recorded only if this run stores another \
                 chunk of this source"
            );
        }
        result.is_ok()
    }

    /// Starts the record of a live source's drops: its chain continues from `continues_from`
    /// (the canonical SHA-256 of the manifest it follows, `None` for a new chain), and its
    /// next manifest records `kept`, what an earlier run kept ([`Self::kept_drops`]) and the
    /// run found still applies. Drops are recorded for any live source, but only a started
    /// one's record knows what it follows, which the next run needs to trust it.
    pub fn start_live_source(
        &self,
        source_id: &SourceId,
        continues_from: Option<String>,
        kept: Option<PendingDrops>,
    ) {
        {
            let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
            // A stale record that could not be removed ([`Self::forget_drops`]) is removed
            // at the next write.
            let stale_left = drops.get(source_id).is_some_and(|r| !r.kept);
            let record = drops.entry(source_id.clone()).or_default();
            let same = kept.as_ref().is_some_and(|k| k.after == continues_from);
            record.after = ChainTip::Link(continues_from);
            record
                .sequences
                .extend(kept.into_iter().flat_map(|k| k.sequences));
            // On disk already, unless it is taken to follow another manifest now.
            record.kept = !stale_left && (record.sequences.is_empty() || same);
        }
        self.keep_record(source_id);
    }

    /// The drops of `source_id` that its next manifest must record, ascending: chunks the
    /// spool dropped (or did not accept) that no manifest accepted since records, and those
    /// an earlier run kept ([`Self::start_live_source`]).
    pub fn drops_to_record(&self, source_id: &SourceId) -> Vec<u64> {
        let drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        drops
            .get(source_id)
            .map(|r| r.sequences.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every source's drops that no accepted manifest records, by source: what a run that
    /// ends now leaves unrecorded in the sink.
    pub fn unrecorded_drops(&self) -> Vec<UnrecordedDrops> {
        let drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<UnrecordedDrops> = drops
            .iter()
            .filter(|(_, r)| !r.sequences.is_empty())
            .map(|(id, r)| UnrecordedDrops {
                source_id: id.clone(),
                sequences: r.sequences.iter().copied().collect(),
                kept: r.kept && !self.memory,
            })
            .collect();
        out.sort_by(|a, b| a.source_id.as_str().cmp(b.source_id.as_str()));
        out
    }

    /// Where an entry's chunk and manifest go.
    fn entry_paths(&self, metadata: &ChunkMetadata) -> (PathBuf, PathBuf) {
        let source_dir = self.dir.join("sources").join(metadata.source_id.as_str());
        let hash: String = metadata.sha256.chars().take(16).collect();
        let stem = format!("{:020}-{hash}", metadata.sequence);
        (
            source_dir.join(format!("{stem}.mp4")),
            source_dir.join(format!("{stem}.json")),
        )
    }

    fn write_entry(
        &self,
        metadata: &ChunkMetadata,
        payload: &Payload,
        manifest: &Bytes,
        chunk_path: &Path,
        manifest_path: &Path,
    ) -> Result<(), SpoolError> {
        let source_dir = self.dir.join("sources").join(metadata.source_id.as_str());
        let io = |what: &str| self.write_error(what);
        if !source_dir.is_dir() {
            std::fs::create_dir_all(&source_dir).map_err(io("creating a source directory"))?;
            sync_dir(&self.dir.join("sources")).map_err(io("syncing the directory"))?;
        }
        // Deleted under a running process (a clean-up script): made again, not every later
        // chunk refused.
        if !self.dir.join("tmp").is_dir() {
            std::fs::create_dir_all(self.dir.join("tmp")).map_err(io("creating tmp"))?;
            tracing::warn!(spool = %self.shown(), "spool: its tmp/ folder was deleted; made again");
        }
        let stem = chunk_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Temporary names unique to this source (sources may carry identical chunks).
        let tmp_stem = format!("{}-{stem}", metadata.source_id);
        let (tmp_chunk, tmp_manifest) = (
            self.dir.join("tmp").join(format!("{tmp_stem}.mp4")),
            self.dir.join("tmp").join(format!("{tmp_stem}.json")),
        );
        let manifest = Payload::from(manifest.clone());
        let result = (|| {
            write_durable(&tmp_chunk, chunk_path, payload).map_err(io("writing a chunk"))?;
            write_durable(&tmp_manifest, manifest_path, &manifest)
                .map_err(io("writing a manifest"))?;
            // The source's last accepted manifest, kept after its entry is gone: a restart
            // during an outage continues the sequence and chain from it. Durable like the
            // entry (the directory sync below covers its rename too), so a crash cannot leave
            // an older one that would restart the chain behind what was already stored.
            let last = source_dir.join("last.json");
            let tmp_last = self
                .dir
                .join("tmp")
                .join(format!("{}-last.json", metadata.source_id));
            if let Err(e) = write_durable(&tmp_last, &last, &manifest) {
                let _ = std::fs::remove_file(&tmp_last);
                tracing::warn!(source = %metadata.source_id, "spool: cannot record the last manifest: {e}");
            }
            sync_dir(&source_dir).map_err(io("syncing the directory"))
        })();
        if let Err(e) = result {
            for p in [&tmp_chunk, &tmp_manifest, manifest_path, chunk_path] {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Reads an entry back: chunk payload and manifest bytes.
    pub fn read(&self, entry: &SpoolEntry) -> Result<(Payload, Bytes), SpoolError> {
        if self.memory {
            return self
                .lock()
                .held
                .get(&entry.order)
                .cloned()
                .ok_or_else(|| SpoolError::Io {
                    dir: self.shown(),
                    what: format!("reading {}#{}", entry.source_id, entry.sequence),
                    source: std::io::Error::from(ErrorKind::NotFound),
                });
        }
        let io = |source| SpoolError::Io {
            dir: self.shown(),
            what: format!("reading {}", entry.chunk_path.display()),
            source,
        };
        let payload = std::fs::read(&entry.chunk_path).map_err(io)?;
        let manifest = std::fs::read(&entry.manifest_path).map_err(io)?;
        Ok((Payload::from(payload), Bytes::from(manifest)))
    }

    /// Whether `entry` is still pending (not uploaded, dropped or set aside).
    pub fn is_pending(&self, entry: &SpoolEntry) -> bool {
        self.lock().entries.contains_key(&entry.order)
    }

    /// Marks an entry as being uploaded (it is never dropped to make room meanwhile).
    /// False when it is gone (dropped to make room before its upload began).
    pub fn begin_upload(&self, entry: &SpoolEntry) -> bool {
        let mut state = self.lock();
        if state.entries.contains_key(&entry.order) {
            state.in_flight.insert(entry.order);
            true
        } else {
            false
        }
    }

    /// The upload did not finish; the entry stays.
    pub fn end_upload(&self, entry: &SpoolEntry) {
        self.lock().in_flight.remove(&entry.order);
    }

    /// The store confirmed the upload: the entry is removed.
    pub fn remove(&self, entry: &SpoolEntry) {
        let mut state = self.lock();
        state.in_flight.remove(&entry.order);
        if let Some(e) = state.take(entry.order) {
            state.used -= e.bytes;
            if !self.memory {
                let _ = std::fs::remove_file(&e.manifest_path);
                let _ = std::fs::remove_file(&e.chunk_path);
            }
        }
        drop(state);
        self.freed.notify_all();
    }

    /// The store refused the entry as conflicting: it moves to `conflicts/` (kept for a
    /// human, out of the way of the next start). Returns where it went.
    pub fn set_aside(&self, entry: &SpoolEntry) -> PathBuf {
        if self.memory {
            // Nowhere to keep it: the run reports the conflict and the object in the store
            // stays untouched.
            self.remove(entry);
            return self.dir.clone();
        }
        let target = self.dir.join("conflicts").join(entry.source_id.as_str());
        if let Err(e) = std::fs::create_dir_all(&target) {
            tracing::error!(dir = %target.display(), "spool: cannot create: {e}");
        }
        // The chunk first: a crash between the two leaves a manifest without its chunk, which
        // the next start sets aside and reports too (a chunk left without its manifest would
        // be removed as an accept cut off by a crash).
        for p in [&entry.chunk_path, &entry.manifest_path] {
            if let Some(name) = p.file_name()
                && let Err(e) = std::fs::rename(p, target.join(name))
            {
                tracing::error!(file = %p.display(), "spool: cannot set aside: {e}");
            }
        }
        let mut state = self.lock();
        state.in_flight.remove(&entry.order);
        if let Some(e) = state.take(entry.order) {
            state.used -= e.bytes;
        }
        drop(state);
        self.freed.notify_all();
        target
    }

    /// The newest manifest this spool accepted for `source_id` (pending or already
    /// uploaded), if any.
    pub fn last_manifest(&self, source_id: &SourceId) -> Option<StoredManifest> {
        let pending = {
            let state = self.lock();
            state
                .by_source
                .get(source_id)
                .into_iter()
                .flatten()
                .filter_map(|order| state.entries.get(order))
                .max_by_key(|e| e.sequence)
                .map(|e| e.manifest_path.clone())
        };
        if self.memory {
            let state = self.lock();
            return state
                .last
                .get(source_id)
                .and_then(|b| StoredManifest::parse(b.clone()));
        }
        let read = |p: PathBuf| -> Option<StoredManifest> {
            StoredManifest::parse(std::fs::read(p).ok()?.into())
        };
        let last = read(
            self.dir
                .join("sources")
                .join(source_id.as_str())
                .join("last.json"),
        );
        match (pending.and_then(read), last) {
            (Some(a), Some(b)) => Some(if b.metadata.sequence > a.metadata.sequence {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }

    /// The drops of `source_id` that an earlier run kept on disk because no manifest it
    /// accepted recorded them; `None` when there are none (and always for a spool in
    /// memory). The run decides whether they still apply: [`Self::start_live_source`] or
    /// [`Self::forget_drops`]. A damaged record is reported, moved to `conflicts/` and read
    /// as none.
    pub fn kept_drops(&self, source_id: &SourceId) -> Option<PendingDrops> {
        if self.memory {
            return None;
        }
        let path = self.drops_path(source_id);
        let read = std::fs::File::open(&path).and_then(|f| {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_DROPS_FILE + 1), &mut text)
                .map(|_| text)
        });
        let text = match read {
            Ok(text) if text.len() as u64 > MAX_DROPS_FILE => Vec::new(),
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(file = %path.display(), "spool: cannot read the record of dropped chunks: {e}");
                return None;
            }
        };
        let parsed = parse_drops(&text);
        if parsed.is_none() {
            let target = self.dir.join("conflicts").join(source_id.as_str());
            let name = format!(
                "dropped-{}.json",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
            );
            let moved = std::fs::create_dir_all(&target)
                .and_then(|()| std::fs::rename(&path, target.join(&name)));
            match moved {
                Ok(()) => tracing::error!(
                    source = %source_id,
                    kept_in = %target.join(&name).display(),
                    "spool: the record of dropped chunks is damaged; set aside and ignored"
                ),
                Err(e) => tracing::error!(
                    file = %path.display(),
                    "spool: the record of dropped chunks is damaged; ignored (and cannot be set \
                     aside: {e})"
                ),
            }
        }
        parsed.filter(|p| !p.sequences.is_empty())
    }

    /// Removes the record of `source_id`'s drops, on disk and in memory: it no longer
    /// applies (the sink holds newer chunks than it knows).
    pub fn forget_drops(&self, source_id: &SourceId) -> Result<(), SpoolError> {
        let result = self.write_drops(source_id, &PendingDrops::default());
        let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                drops.remove(source_id);
            }
            // Still on disk: removed at the record's next write.
            Err(_) => {
                drops.insert(source_id.clone(), DropRecord::default());
            }
        }
        result
    }

    /// Writes `drops` as the record of `source_id`'s dropped chunks that no accepted manifest
    /// records yet, durably (replacing the earlier record; none left when `drops` has no
    /// sequences), as runs of consecutive numbers.
    fn write_drops(&self, source_id: &SourceId, drops: &PendingDrops) -> Result<(), SpoolError> {
        if self.memory {
            return Ok(());
        }
        let io = |what: &str| self.write_error(what);
        let path = self.drops_path(source_id);
        let source_dir = self.dir.join("sources").join(source_id.as_str());
        if drops.sequences.is_empty() {
            return match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(&source_dir).map_err(io("syncing the directory")),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("removing the record of dropped chunks")(e)),
            };
        }
        if !source_dir.is_dir() {
            std::fs::create_dir_all(&source_dir).map_err(io("creating a source directory"))?;
            sync_dir(&self.dir.join("sources")).map_err(io("syncing the directory"))?;
        }
        std::fs::create_dir_all(self.dir.join("tmp")).map_err(io("creating tmp"))?;
        let runs: Vec<[u64; 2]> = crispy_core::sequence_runs(&drops.sequences)
            .into_iter()
            .map(|(first, last)| [first, last])
            .collect();
        let mut text = serde_json::json!({ "after": drops.after, "dropped": runs });
        if let Some(accepting) = &drops.accepting {
            text["accepting"] = serde_json::Value::from(accepting.as_str());
        }
        let text = text.to_string();
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{source_id}-dropped.json"));
        let written = write_durable(&tmp, &path, &Payload::from(text.into_bytes()))
            .and_then(|()| sync_dir(&source_dir));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io("keeping the record of dropped chunks"))
    }

    /// Maps an error of writing into the spool: a full disk is [`SpoolError::DiskFull`].
    fn write_error(&self, what: &str) -> impl FnOnce(std::io::Error) -> SpoolError + use<> {
        let dir = self.shown();
        let what = what.to_owned();
        move |source: std::io::Error| {
            if source.kind() == ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
                SpoolError::DiskFull { dir }
            } else {
                SpoolError::Io { dir, what, source }
            }
        }
    }

    fn drops_path(&self, source_id: &SourceId) -> PathBuf {
        self.dir
            .join("sources")
            .join(source_id.as_str())
            .join("dropped.json")
    }

    /// Wakes readers waiting for room and makes further accepts fail.
    pub fn close(&self) {
        self.lock().closed = true;
        self.freed.notify_all();
    }
}

/// The directory name of a sink's spool: a readable part of the URL (credentials in a custom
/// endpoint left out) and a hash of all of it.
fn sink_key(url: &str) -> String {
    let readable: String = crispy_core::redact::redact_urls(url)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let hash = crispy_signer::sha256_hex(url.as_bytes());
    format!("{readable}-{}", &hash[..16])
}

/// Whether `path` is named as an entry's file (`<seq:020>-<sha256[..16]>.<ext>`), not
/// `last.json` or anything else kept beside the entries.
fn is_entry_name(path: &Path) -> bool {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split_once('-'))
        .is_some_and(|(seq, hash)| {
            seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()) && !hash.is_empty()
        })
}

/// Reads a `dropped.json`: `{"after": link or null, "accepting": link (optional),
/// "dropped": [[first, last], ...]}` (or
/// the first version's `"dropped_sequences": [n, ...]`). `None` when damaged: not that
/// shape, runs out of order or overlapping, or more than [`MAX_KEPT_DROPS`] sequences.
fn parse_drops(text: &[u8]) -> Option<PendingDrops> {
    let v: serde_json::Value = serde_json::from_slice(text).ok()?;
    let after = match v.get("after")? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        _ => return None,
    };
    let accepting = match v.get("accepting") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let runs: Vec<(u64, u64)> = match (v.get("dropped"), v.get("dropped_sequences")) {
        (Some(runs), None) => runs
            .as_array()?
            .iter()
            .map(|run| match run.as_array()?.as_slice() {
                [first, last] => Some((first.as_u64()?, last.as_u64()?)),
                _ => None,
            })
            .collect::<Option<_>>()?,
        (None, Some(list)) => list
            .as_array()?
            .iter()
            .map(|n| n.as_u64().map(|n| (n, n)))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    let mut sequences: Vec<u64> = Vec::new();
    let mut next = 0u64;
    for (first, last) in runs {
        if first < next || last < first {
            return None;
        }
        let count = (last - first).checked_add(1)?;
        if sequences.len() as u64 + count > MAX_KEPT_DROPS {
            return None;
        }
        sequences.extend(first..=last);
        next = last.checked_add(1)?;
    }
    Some(PendingDrops {
        after,
        accepting,
        sequences,
    })
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// temp file → write → fsync → rename into place.
fn write_durable(tmp: &Path, target: &Path, bytes: &Payload) -> std::io::Result<()> {
    let mut f = File::create(tmp)?;
    bytes.write_to(&mut f)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, target)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts the standard test chunk (`b"chunk"`, manifest `b"{}"`: 7 bytes).
    trait Put {
        fn put(&self, m: &ChunkMetadata, live: bool) -> Result<Accepted, SpoolError>;
    }

    impl Put for Spool {
        fn put(&self, m: &ChunkMetadata, live: bool) -> Result<Accepted, SpoolError> {
            self.accept(
                m,
                &Payload::from(&b"chunk"[..]),
                &Bytes::from_static(b"{}"),
                live,
                &|| false,
            )
        }
    }

    fn meta(seq: u64) -> ChunkMetadata {
        let mut m: ChunkMetadata =
            serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("manifest");
        m.object = "x.mp4".to_owned();
        m.sha256 = "00112233445566778899".to_owned();
        m.sequence = seq;
        m
    }

    /// What a restart during an outage continues from when nothing is pending: the last
    /// accepted manifest outlives its entry, and the process.
    #[test]
    fn the_last_manifest_outlives_its_entry_and_a_restart() {
        let root = tempfile::tempdir().expect("tmp");
        let cam: SourceId = "cam".parse().expect("id");
        {
            let (spool, _) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("open");
            let mut m = meta(5);
            m.source_id = cam.clone();
            let manifest = Bytes::from(serde_json::to_vec(&m).expect("json"));
            let entry = spool
                .accept(&m, &Payload::from(&b"chunk"[..]), &manifest, true, &|| {
                    false
                })
                .expect("accept")
                .entry
                .expect("entry");
            spool.remove(&entry);
            assert_eq!(
                spool.last_manifest(&cam).map(|m| m.metadata.sequence),
                Some(5)
            );
        }
        let (spool, pending) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("reopen");
        assert!(pending.is_empty());
        assert!(
            spool.damaged_at_open().is_empty(),
            "{:?}",
            spool.damaged_at_open()
        );
        assert_eq!(
            spool.last_manifest(&cam).map(|m| m.metadata.sequence),
            Some(5)
        );
    }

    /// Accepts chunk `seq` of `cam` (`b"chunk"`) with the manifest `{"n":seq}` (12 bytes
    /// in all below 10), recording `dropped`.
    fn put_cam(spool: &Spool, seq: u64, dropped: &[u64]) -> Result<Accepted, SpoolError> {
        let mut m = meta(seq);
        m.dropped_sequences = dropped.to_vec();
        let manifest = Bytes::from(format!("{{\"n\":{seq}}}"));
        spool.accept(&m, &Payload::from(&b"chunk"[..]), &manifest, true, &|| {
            false
        })
    }

    /// The link of the manifest `put_cam` stores for `seq`.
    fn link_of(seq: u64) -> Option<String> {
        Some(crispy_signer::sha256_hex(
            format!("{{\"n\":{seq}}}").as_bytes(),
        ))
    }

    fn kept(after: Option<String>, sequences: &[u64]) -> Option<PendingDrops> {
        Some(PendingDrops {
            after,
            accepting: None,
            sequences: sequences.to_vec(),
        })
    }

    #[test]
    fn drops_are_kept_on_disk_until_a_manifest_records_them() {
        let root = tempfile::tempdir().expect("tmp");
        let cam: SourceId = "cam".parse().expect("id");
        {
            let (spool, _) = Spool::open(root.path(), "s3://b/p", 3 * 12).expect("open");
            spool.start_live_source(&cam, Some("ab".repeat(32)), None);
            for seq in 0..3 {
                put_cam(&spool, seq, &[]).expect("accept");
            }
            assert_eq!(spool.kept_drops(&cam), None);
            // Full: 3 drops 0, kept with the manifest it follows (3, accepted after the drop).
            let accepted = put_cam(&spool, 3, &[]).expect("accept");
            assert_eq!(accepted.dropped, vec![(cam.clone(), 0)]);
            assert_eq!(spool.drops_to_record(&cam), vec![0]);
            assert_eq!(spool.kept_drops(&cam), kept(link_of(3), &[0]));
            let text = std::fs::read_to_string(spool.dir().join("sources/cam/dropped.json"))
                .expect("record");
            assert!(text.contains(r#""dropped":[[0,0]]"#), "{text}");
        }
        // A crash or a stop: the next run finds the record and takes it.
        let (spool, recovered) = Spool::open(root.path(), "s3://b/p", 3 * 12).expect("reopen");
        assert_eq!(recovered.len(), 3);
        let record = spool.kept_drops(&cam);
        assert_eq!(record, kept(link_of(3), &[0]));
        spool.start_live_source(&cam, link_of(3), record);
        assert_eq!(spool.drops_to_record(&cam), vec![0]);
        // 4 records 0 and drops 1 (which the next manifest records), and so on.
        put_cam(&spool, 4, &[0]).expect("accept");
        assert_eq!(spool.kept_drops(&cam), kept(link_of(4), &[1]));
        put_cam(&spool, 5, &[1]).expect("accept");
        assert_eq!(spool.kept_drops(&cam), kept(link_of(5), &[2]));
        // Everything being uploaded: the chunk itself is dropped, and its manifest's record
        // of 2 goes on to the next one.
        let pending: Vec<SpoolEntry> = spool.lock().entries.values().cloned().collect();
        assert_eq!(pending.len(), 3);
        for entry in &pending {
            assert!(spool.begin_upload(entry));
        }
        let accepted = put_cam(&spool, 6, &[2]).expect("accept");
        assert!(accepted.entry.is_none());
        assert_eq!(accepted.dropped, vec![(cam.clone(), 6)]);
        assert_eq!(spool.kept_drops(&cam), kept(link_of(5), &[2, 6]));
        assert_eq!(
            spool.unrecorded_drops(),
            vec![UnrecordedDrops {
                source_id: cam.clone(),
                sequences: vec![2, 6],
                kept: true
            }]
        );
        // Uploaded; 7 records both: nothing left to keep.
        let orders: Vec<u64> = spool.lock().entries.keys().copied().collect();
        for order in orders {
            let entry = spool.lock().entries[&order].clone();
            spool.remove(&entry);
        }
        put_cam(&spool, 7, &[2, 6]).expect("accept");
        assert_eq!(spool.kept_drops(&cam), None);
        assert!(!spool.dir().join("sources/cam/dropped.json").exists());
        assert_eq!(spool.unrecorded_drops(), Vec::new());
    }

    #[test]
    fn an_accept_that_fails_after_dropping_keeps_both_drops() {
        let root = tempfile::tempdir().expect("tmp");
        let cam: SourceId = "cam".parse().expect("id");
        let (spool, _) = Spool::open(root.path(), "s3://b/p", 3 * 12).expect("open");
        spool.start_live_source(&cam, None, None);
        for seq in 0..3 {
            put_cam(&spool, seq, &[]).expect("accept");
        }
        // 3's chunk cannot be written (its temporary name is taken by a directory), after
        // 0 was dropped to make room for it.
        let (chunk_path, _) = spool.entry_paths(&meta(3));
        let stem = chunk_path.file_stem().expect("stem").to_string_lossy();
        std::fs::create_dir_all(spool.dir().join("tmp").join(format!("cam-{stem}.mp4")))
            .expect("block");
        let accepted = put_cam(&spool, 3, &[]).expect("dropped, not an error");
        assert!(
            matches!(accepted.refused, Some(SpoolError::Io { .. })),
            "{accepted:?}"
        );
        assert_eq!(accepted.dropped, vec![(cam.clone(), 0), (cam.clone(), 3)]);
        assert!(accepted.entry.is_none());
        assert_eq!(
            spool.unrecorded_drops(),
            vec![UnrecordedDrops {
                source_id: cam.clone(),
                sequences: vec![0, 3],
                kept: true
            }]
        );
        assert_eq!(spool.kept_drops(&cam), kept(link_of(2), &[0, 3]));

        // The record cannot be written either: the drop is still made (the room is needed)
        // and recorded in memory, said not to be kept; the next write that can keeps it.
        let blocker = spool.dir().join("tmp").join("cam-dropped.json");
        std::fs::create_dir_all(&blocker).expect("block");
        let (chunk_1, _) = spool.entry_paths(&meta(1));
        assert!(chunk_1.exists());
        put_cam(&spool, 4, &[0, 3]).expect("accept");
        assert_eq!(spool.kept_drops(&cam), None, "recorded by 4");
        put_cam(&spool, 5, &[]).expect("accept");
        assert!(!chunk_1.exists(), "dropped");
        assert_eq!(
            spool.unrecorded_drops(),
            vec![UnrecordedDrops {
                source_id: cam.clone(),
                sequences: vec![1],
                kept: false
            }]
        );
        std::fs::remove_dir(&blocker).expect("unblock");
        put_cam(&spool, 6, &[]).expect("accept");
        assert_eq!(spool.kept_drops(&cam), kept(link_of(6), &[1, 2]));
        assert!(spool.unrecorded_drops().iter().all(|d| d.kept));
    }

    /// When the entries that could be dropped would not make room (the rest is being
    /// uploaded), the new chunk is dropped and they stay.
    #[test]
    fn idle_entries_stay_when_dropping_them_would_not_make_room() {
        let spool = Spool::in_memory(3 * 12);
        let cam: SourceId = "cam".parse().expect("id");
        let entries: Vec<SpoolEntry> = (0..3)
            .map(|seq| put_cam(&spool, seq, &[]).expect("a").entry.expect("held"))
            .collect();
        assert!(spool.begin_upload(&entries[0]));
        assert!(spool.begin_upload(&entries[1]));
        // 24 bytes: the one idle entry (12) would not make room.
        let m = meta(3);
        let accepted = spool
            .accept(
                &m,
                &Payload::from(&[0u8; 17][..]),
                &Bytes::from_static(b"{\"n\":3}"),
                true,
                &|| false,
            )
            .expect("dropped");
        assert_eq!(accepted.dropped, vec![(cam.clone(), 3)]);
        assert!(accepted.entry.is_none() && accepted.refused.is_none());
        assert!(spool.is_pending(&entries[2]), "the idle entry stays");
        let (chunk, _) = spool.read(&entries[2]).expect("with its bytes");
        assert_eq!(chunk, Payload::from(&b"chunk"[..]));
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.used_bytes(), 36);
        assert_eq!(spool.drops_to_record(&cam), vec![3]);
    }

    #[test]
    fn damaged_or_stale_drop_records_go_away() {
        let root = tempfile::tempdir().expect("tmp");
        let cam: SourceId = "cam".parse().expect("id");
        let (spool, _) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("open");
        let path = spool.dir().join("sources/cam/dropped.json");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        for damaged in [
            &br#"{"after":null,"dropped":[[1,"x"]]}"#[..],
            br#"{"after":null,"dropped":[[5,9],[3,4]]}"#,
            br#"{"after":null,"dropped":[[0,18446744073709551615]]}"#,
            br#"{"after":null,"dropped":[[0,1000000]]}"#,
            br#"{"after":null,"dropped":[[0,3]],"dropped_sequences":[1]}"#,
            br#"{"after":null,"dropped_sequences":[1,1]}"#,
            br#"{"dropped":[[0,3]]}"#,
        ] {
            std::fs::write(&path, damaged).expect("write");
            assert_eq!(spool.kept_drops(&cam), None);
            assert!(!path.exists(), "set aside");
        }
        let set_aside = std::fs::read_dir(spool.dir().join("conflicts/cam"))
            .expect("conflicts")
            .count();
        assert!(set_aside >= 1, "{set_aside}");

        // Too large to be a record.
        let mut big = br#"{"after":null,"dropped":[[0,0]]}"#.to_vec();
        big.resize(5 << 20, b' ');
        std::fs::write(&path, &big).expect("write");
        assert_eq!(spool.kept_drops(&cam), None);
        assert!(!path.exists(), "set aside");
        // The first version's list of numbers still reads.
        std::fs::write(&path, br#"{"after":"x","dropped_sequences":[1,2,4]}"#).expect("write");
        assert_eq!(
            spool.kept_drops(&cam),
            kept(Some("x".to_owned()), &[1, 2, 4])
        );

        std::fs::write(&path, br#"{"after":"x","accepting":"y","dropped":[[1,1]]}"#)
            .expect("write");
        let record = spool.kept_drops(&cam).expect("record");
        assert_eq!(record.accepting.as_deref(), Some("y"));
        assert_eq!(record.sequences, vec![1]);

        std::fs::write(&path, br#"{"after":"x","dropped":[[1,2],[4,4]]}"#).expect("write");
        assert_eq!(
            spool.kept_drops(&cam),
            kept(Some("x".to_owned()), &[1, 2, 4])
        );
        spool.forget_drops(&cam).expect("forget");
        assert!(!path.exists());
        assert_eq!(spool.kept_drops(&cam), None);
        spool.forget_drops(&cam).expect("forget again");
    }

    #[test]
    fn a_spool_in_memory_records_drops_but_keeps_none() {
        let spool = Spool::in_memory(3 * 12);
        let cam: SourceId = "cam".parse().expect("id");
        spool.start_live_source(&cam, None, None);
        for seq in 0..4 {
            put_cam(&spool, seq, &[]).expect("accept");
        }
        assert_eq!(spool.drops_to_record(&cam), vec![0]);
        assert_eq!(spool.kept_drops(&cam), None);
        assert_eq!(
            spool.unrecorded_drops(),
            vec![UnrecordedDrops {
                source_id: cam.clone(),
                sequences: vec![0],
                kept: false
            }]
        );
        put_cam(&spool, 4, &[0]).expect("accept");
        assert_eq!(spool.drops_to_record(&cam), vec![1]);
    }

    #[test]
    fn a_spool_folder_deleted_under_a_run_is_made_again() {
        let root = tempfile::tempdir().expect("tmp");
        let (spool, _) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("open");
        spool.put(&meta(0), true).expect("accept");
        std::fs::remove_dir_all(spool.dir().join("tmp")).expect("rm tmp");
        std::fs::remove_dir_all(spool.dir().join("sources")).expect("rm sources");
        let accepted = spool.put(&meta(1), true).expect("accepted again");
        assert!(accepted.entry.is_some() && accepted.dropped.is_empty());
        let entry = accepted.entry.expect("entry");
        assert!(entry.chunk_path.is_file() && entry.manifest_path.is_file());
    }

    #[test]
    fn entries_survive_a_restart_in_order_and_half_writes_are_removed() {
        let root = tempfile::tempdir().expect("tmp");
        {
            let (spool, pending) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("open");
            assert!(pending.is_empty());
            for seq in [2, 0, 1] {
                spool.put(&meta(seq), false).expect("accept");
            }
            assert_eq!(spool.len(), 3);
            assert_eq!(spool.used_bytes(), 3 * 7);
            // A second process on the same spool is refused.
            let err = Spool::open(root.path(), "s3://b/p", 1 << 20).expect_err("locked");
            assert!(matches!(err, SpoolError::InUse { .. }), "{err}");
            // A crash mid-accept leaves a chunk without manifest and a temp file.
            std::fs::write(
                spool.dir().join("sources/cam/00000000000000000009-aa.mp4"),
                b"half",
            )
            .expect("write");
            std::fs::write(spool.dir().join("tmp/x.mp4"), b"half").expect("write");
        }
        let (spool, pending) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("reopen");
        assert!(!spool.is_in_memory());
        let seqs: Vec<u64> = pending.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert!(
            !spool
                .dir()
                .join("sources/cam/00000000000000000009-aa.mp4")
                .exists()
        );
        assert!(!spool.dir().join("tmp/x.mp4").exists());
        let (payload, manifest) = spool.read(&pending[0]).expect("read");
        assert_eq!(
            (&payload.to_bytes()[..], &manifest[..]),
            (&b"chunk"[..], &b"{}"[..])
        );
        spool.remove(&pending[0]);
        assert_eq!(spool.len(), 2);
        assert!(!pending[0].chunk_path.exists());
    }

    #[test]
    fn a_full_spool_drops_the_oldest_for_live_sources_but_never_one_in_flight() {
        let spool = Spool::temporary(3 * 7).expect("spool");
        let mut entries = Vec::new();
        for seq in 0..3 {
            let accepted = spool.put(&meta(seq), true).expect("a");
            entries.push(accepted.entry.expect("spooled"));
        }
        assert!(spool.begin_upload(&entries[0]));
        let accepted = spool.put(&meta(3), true).expect("a");
        assert!(accepted.entry.is_some());
        let cam: SourceId = "cam".parse().expect("id");
        assert_eq!(accepted.dropped, vec![(cam.clone(), 1)]);
        assert_eq!(spool.len(), 3);
        assert!(!entries[1].chunk_path.exists());
        // The dropped entry cannot start an upload any more.
        assert!(!spool.begin_upload(&entries[1]));
        assert_eq!(
            spool.last_manifest(&cam),
            None,
            "manifests here are not JSON"
        );
        // Too large for the whole spool: a live source's chunk is dropped (and recorded); a
        // file source's is an error.
        let too_large = |live| {
            spool.accept(
                &meta(9),
                &Payload::from(&[0u8; 64][..]),
                &Bytes::from_static(b"{}"),
                live,
                &|| false,
            )
        };
        let accepted = too_large(true).expect("dropped");
        assert!(
            matches!(accepted.refused, Some(SpoolError::TooLarge { .. })),
            "{accepted:?}"
        );
        assert_eq!(accepted.dropped, vec![(cam.clone(), 9)]);
        assert_eq!(spool.drops_to_record(&cam), vec![1, 9]);
        let err = too_large(false).expect_err("too large");
        assert!(matches!(err, SpoolError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn the_indexes_follow_every_removal() {
        let spool = Spool::in_memory(3 * 7);
        let cam: SourceId = "cam".parse().expect("id");
        let entries: Vec<SpoolEntry> = (0..3)
            .map(|seq| spool.put(&meta(seq), true).expect("a").entry.expect("held"))
            .collect();
        // Uploaded: the same chunk may come again (a file run twice) and is taken again.
        spool.remove(&entries[0]);
        assert!(spool.put(&meta(0), true).expect("a").entry.is_some());
        // Full: drops go oldest first, by acceptance order (0 came back last).
        for (seq, expected) in [(3, 1), (4, 2), (5, 0)] {
            let accepted = spool.put(&meta(seq), true).expect("a");
            assert_eq!(accepted.dropped, vec![(cam.clone(), expected)], "seq {seq}");
        }
        // A dropped chunk is not pending any more either.
        assert!(spool.put(&meta(1), true).expect("a").entry.is_some());
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.used_bytes(), 3 * 7);
    }

    fn meta_of(id: &str, seq: u64, json_sha: &str) -> ChunkMetadata {
        let mut m = meta(seq);
        m.source_id = id.parse().expect("id");
        m.sha256 = json_sha.to_owned();
        m
    }

    #[test]
    fn live_drops_touch_only_the_own_source_and_carry_earlier_records() {
        let spool = Spool::temporary(4 * 7).expect("spool");
        let file = spool.put(&meta_of("file", 0, "aa"), false).expect("a");
        assert!(file.entry.is_some());
        let mut first = meta_of("cam", 0, "bb");
        first.dropped_sequences = vec![7]; // an earlier drop this manifest records
        spool.put(&first, true).expect("a");
        for seq in 1..3 {
            spool.put(&meta_of("cam", seq, "cc"), true).expect("a");
        }
        // Full: the camera drops its own oldest (0, with the record of 7), never the file's.
        let accepted = spool.put(&meta_of("cam", 3, "dd"), true).expect("a");
        let cam: SourceId = "cam".parse().expect("id");
        assert_eq!(accepted.dropped, vec![(cam.clone(), 0)]);
        // Its manifest's record of 7 moves on: the next manifest records both.
        assert_eq!(spool.drops_to_record(&cam), vec![0, 7]);
        assert!(file.entry.expect("file entry").chunk_path.exists());
        // The newest accepted manifest of a source outlives its entry.
        std::fs::write(
            spool.dir().join("sources/cam/last.json"),
            serde_json::to_vec(&meta_of("cam", 3, "dd")).expect("json"),
        )
        .expect("write");
        assert_eq!(
            spool.last_manifest(&cam).map(|m| m.metadata.sequence),
            Some(3)
        );
    }

    #[test]
    fn the_same_chunk_again_is_not_spooled_twice() {
        let spool = Spool::temporary(1 << 20).expect("spool");
        let m = meta(4);
        let first = spool.put(&m, false).expect("a");
        let again = spool.put(&m, false).expect("a");
        assert!(first.entry.is_some());
        assert!(again.entry.is_none(), "pending already: goes out once");
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.used_bytes(), 7);
    }

    #[test]
    fn the_memory_spool_holds_bytes_bounded_and_never_touches_disk() {
        let spool = Spool::in_memory(2 * 7);
        assert!(spool.is_in_memory());
        let chunk = Payload::from(&b"chunk"[..]);
        let manifest = Bytes::from(serde_json::to_vec(&meta(0)).expect("json"));
        let small = Bytes::from_static(b"{}");
        let a = spool
            .accept(&meta(0), &chunk, &small, true, &|| false)
            .expect("a")
            .entry
            .expect("held");
        assert_eq!(
            spool.read(&a).expect("read"),
            (chunk.clone(), small.clone())
        );
        spool
            .accept(&meta(1), &chunk, &small, true, &|| false)
            .expect("a");
        // Full: the live source drops its oldest, in memory too.
        let c = spool
            .accept(&meta(2), &chunk, &small, true, &|| false)
            .expect("a");
        assert_eq!(c.dropped.len(), 1);
        assert!(spool.read(&a).is_err(), "dropped");
        assert_eq!(spool.used_bytes(), 14);
        assert!(!a.chunk_path.exists());
        // The newest manifest of a source.
        let big = Spool::in_memory(1 << 20);
        big.accept(&meta(0), &chunk, &manifest, false, &|| false)
            .expect("a");
        let cam: SourceId = "cam".parse().expect("id");
        assert_eq!(
            big.last_manifest(&cam).map(|m| m.metadata.sequence),
            Some(0)
        );
    }

    #[test]
    fn a_file_source_waits_for_room() {
        let spool = std::sync::Arc::new(Spool::temporary(2 * 7).expect("spool"));
        let first = spool
            .put(&meta(0), false)
            .expect("a")
            .entry
            .expect("spooled");
        spool.put(&meta(1), false).expect("a");
        let s2 = std::sync::Arc::clone(&spool);
        let waiter = std::thread::spawn(move || s2.put(&meta(2), false));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "must wait while the spool is full");
        spool.remove(&first);
        let accepted = waiter.join().expect("join").expect("accepted");
        assert_eq!(accepted.entry.map(|e| e.sequence), Some(2));
        assert!(accepted.dropped.is_empty());
    }
}
