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
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// The chunk's entry; `None` when a live source's chunk was dropped itself (the spool
    /// is full of chunks being uploaded).
    pub entry: Option<SpoolEntry>,
    /// Chunks of this source dropped now (oldest first) to make room, this one included
    /// when `entry` is `None`: source and sequence. The source's next manifest must record
    /// them.
    pub dropped: Vec<(SourceId, u64)>,
    /// Earlier drops that the manifests of the chunks in `dropped` recorded: no new loss,
    /// but the record moves on, so the source's next manifest must record them too.
    pub carried: Vec<(SourceId, u64)>,
}

/// A live source's dropped chunks that no manifest accepted into the spool records yet,
/// kept on disk (`dropped.json`) so that a run that ends first does not lose the record:
/// the source's next run records them in its first manifest and numbers its chunks after
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingDrops {
    /// The link (canonical SHA-256) of the source's last manifest accepted before these
    /// drops were kept, `None` if there was none: the next run uses the record only when it
    /// continues the chain from that same manifest (anything stored since makes it stale).
    pub after: Option<String>,
    /// The dropped sequence numbers, ascending.
    pub sequences: Vec<u64>,
}

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

    /// The oldest pending entry of `source` that is not being uploaded.
    fn oldest_idle(&self, source: &SourceId) -> Option<u64> {
        self.by_source
            .get(source)?
            .iter()
            .copied()
            .find(|order| !self.in_flight.contains(order))
    }
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
    /// being uploaded (returned, so the caller can record the gap; other sources' chunks are
    /// never touched); a file source waits until uploads free room or `cancelled` says to
    /// stop ([`SpoolError::Closed`]). A full disk is [`SpoolError::DiskFull`] with nothing
    /// left behind. A chunk already pending under the same name (a file run again after an
    /// interruption) is not written twice: `entry` is `None` and the pending one goes out.
    pub fn accept(
        &self,
        metadata: &ChunkMetadata,
        payload: &Payload,
        manifest: &Bytes,
        live: bool,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Accepted, SpoolError> {
        let bytes = (payload.len() + manifest.len()) as u64;
        if bytes > self.max_bytes {
            return Err(SpoolError::TooLarge {
                dir: self.shown(),
                bytes,
                max: self.max_bytes,
            });
        }
        let mut accepted = Accepted::default();
        let (chunk_path, manifest_path) = self.entry_paths(metadata);
        {
            let mut state = self.lock();
            if state.paths.contains(&chunk_path) {
                return Ok(accepted);
            }
            loop {
                if state.closed || (!live && cancelled()) {
                    return Err(SpoolError::Closed { dir: self.shown() });
                }
                if state.used + bytes <= self.max_bytes {
                    break;
                }
                if live {
                    let Some(order) = state.oldest_idle(&metadata.source_id) else {
                        // Everything of this source is being uploaded: this chunk is the one
                        // dropped (with the drops its manifest records).
                        let id = &metadata.source_id;
                        accepted.dropped.push((id.clone(), metadata.sequence));
                        accepted
                            .carried
                            .extend(metadata.dropped_sequences.iter().map(|s| (id.clone(), *s)));
                        return Ok(accepted);
                    };
                    if let Some(e) = state.take(order) {
                        state.used -= e.bytes;
                        if !self.memory {
                            let _ = std::fs::remove_file(&e.manifest_path);
                            let _ = std::fs::remove_file(&e.chunk_path);
                        }
                        accepted
                            .carried
                            .extend(e.carried_drops.iter().map(|s| (e.source_id.clone(), *s)));
                        accepted.dropped.push((e.source_id, e.sequence));
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
        }
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
                Ok(accepted)
            }
            Err(e) => {
                self.lock().used -= bytes;
                Err(e)
            }
        }
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

    /// The drops of `source_id` that an earlier run kept ([`Self::keep_drops`]) because no
    /// manifest it accepted recorded them; `None` when there are none (and always for a
    /// spool in memory). An unreadable record is reported and treated as none.
    pub fn pending_drops(&self, source_id: &SourceId) -> Option<PendingDrops> {
        if self.memory {
            return None;
        }
        let path = self.drops_path(source_id);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(file = %path.display(), "spool: cannot read the record of dropped chunks: {e}");
                return None;
            }
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                let after = match v.get("after")? {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    _ => return None,
                };
                let sequences = v
                    .get("dropped_sequences")?
                    .as_array()?
                    .iter()
                    .map(serde_json::Value::as_u64)
                    .collect::<Option<BTreeSet<u64>>>()?;
                Some(PendingDrops {
                    after,
                    sequences: sequences.into_iter().collect(),
                })
            });
        if parsed.is_none() {
            tracing::error!(file = %path.display(), "spool: the record of dropped chunks is damaged; ignored");
        }
        parsed.filter(|p| !p.sequences.is_empty())
    }

    /// Keeps `drops` as the record of `source_id`'s dropped chunks that no accepted manifest
    /// records yet, durably (replacing the earlier record; none left when `drops` has no
    /// sequences). Does nothing for a spool in memory, which does not outlive the process.
    pub fn keep_drops(&self, source_id: &SourceId, drops: &PendingDrops) -> Result<(), SpoolError> {
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
        let text = serde_json::json!({
            "after": drops.after,
            "dropped_sequences": drops.sequences,
        })
        .to_string();
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
    let readable: String = crispy_core::redact::redact_userinfo(url)
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

    #[test]
    fn kept_drops_outlive_a_restart_until_cleared() {
        let root = tempfile::tempdir().expect("tmp");
        let cam: SourceId = "cam".parse().expect("id");
        let kept = PendingDrops {
            after: Some("ab".repeat(32)),
            sequences: vec![3, 4, 9],
        };
        {
            let (spool, _) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("open");
            assert_eq!(spool.pending_drops(&cam), None);
            spool.keep_drops(&cam, &kept).expect("keep");
            let newer = PendingDrops {
                after: None,
                ..kept.clone()
            };
            spool.keep_drops(&cam, &newer).expect("replace");
            spool.keep_drops(&cam, &kept).expect("replace again");
        }
        // A restart: the record is there, and is no entry to upload.
        let (spool, recovered) = Spool::open(root.path(), "s3://b/p", 1 << 20).expect("reopen");
        assert!(recovered.is_empty());
        assert_eq!(spool.pending_drops(&cam), Some(kept));
        let other: SourceId = "other".parse().expect("id");
        assert_eq!(spool.pending_drops(&other), None);
        spool
            .keep_drops(&cam, &PendingDrops::default())
            .expect("clear");
        assert_eq!(spool.pending_drops(&cam), None);
        spool
            .keep_drops(&cam, &PendingDrops::default())
            .expect("clear again");

        // A damaged record is reported and read as none.
        let path = spool.dir().join("sources/cam/dropped.json");
        std::fs::write(&path, b"{\"after\":null,\"dropped_sequences\":[1,\"x\"]}").expect("write");
        assert_eq!(spool.pending_drops(&cam), None);

        // A spool in memory keeps nothing across runs.
        let memory = Spool::in_memory(1 << 20);
        let one = PendingDrops {
            after: None,
            sequences: vec![1],
        };
        memory.keep_drops(&cam, &one).expect("keep");
        assert_eq!(memory.pending_drops(&cam), None);
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
        let err = spool
            .accept(
                &meta(9),
                &Payload::from(&[0u8; 64][..]),
                &Bytes::from_static(b"{}"),
                true,
                &|| false,
            )
            .expect_err("too large");
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
        assert_eq!(accepted.carried, vec![(cam.clone(), 7)]);
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
