use std::path::{Path as FsPath, PathBuf};

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use crispy_core::{Chunk, ChunkMetadata, ChunkSink, Payload, PutOutcome, SourceId, StoredManifest};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use crate::{Backend, SinkError, SinkOptions, chunk_object_path, manifest_path_for};

/// A sink writing chunks and manifests to any `object_store` backend.
///
/// `Debug` shows the URL as given and the backend, never the store's configuration (which
/// holds credentials).
#[derive(Clone)]
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    display: String,
    local_dir: Option<PathBuf>,
    /// The directories opening a local sink created, outermost first.
    created_dirs: Vec<PathBuf>,
    backend: Backend,
    signer: Option<Arc<dyn Signer>>,
    /// A custom endpoint, from the options or the environment (an S3-compatible store, an
    /// emulator): part of the spool key, so two stores under one URL never share pending chunks.
    endpoint: Option<String>,
}

impl std::fmt::Debug for ObjectStoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreSink")
            .field("url", &self.display)
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreSink {
    /// A sink over `store` (a `backend` store), writing under `prefix`. `display` names it
    /// in logs and errors.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        display: impl Into<String>,
        backend: Backend,
    ) -> Result<Self, SinkError> {
        let display = crispy_core::redact::redact_urls(&display.into()).into_owned();
        let prefix = clean_prefix(prefix, &display)?;
        Ok(Self {
            store,
            prefix,
            display,
            local_dir: None,
            created_dirs: Vec::new(),
            backend,
            signer: None,
            endpoint: None,
        })
    }

    /// Opens a sink from a URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `file:///abs/dir`, `file://./relative/dir`, a plain directory
    /// path, or `memory://[name/]prefix`. Local directories are created if missing; cloud
    /// credentials come from the environment.
    pub fn from_url(url: &str) -> Result<Self, SinkError> {
        Self::open_url(url, &SinkOptions::default(), true)
    }

    /// Like [`Self::from_url`], with extra store options (`--sink-opt`).
    pub fn from_url_opts(url: &str, options: &SinkOptions) -> Result<Self, SinkError> {
        Self::open_url(url, options, true)
    }

    /// Like [`Self::from_url_opts`] for reading back (`crispy verify`): a local directory
    /// must already exist.
    pub fn from_url_existing(url: &str, options: &SinkOptions) -> Result<Self, SinkError> {
        Self::open_url(url, options, false)
    }

    fn open_url(url: &str, options: &SinkOptions, create: bool) -> Result<Self, SinkError> {
        let invalid = |reason: &str| SinkError::InvalidUrl {
            url: crispy_core::redact::redact_urls(url).into_owned(),
            reason: reason.to_owned(),
        };
        if let Some(opened) = crate::open::open_cloud(url, options)? {
            let mut sink = Self::new(opened.store, &opened.prefix, url, opened.backend)?;
            sink.signer = Some(opened.signer);
            sink.endpoint = opened.endpoint;
            return Ok(sink);
        }
        let local_only = || match options.options.first() {
            None => Ok(()),
            Some((key, _)) => Err(SinkError::InvalidOption {
                key: key.clone(),
                reason: format!(
                    "store options (--sink-opt, a config file's [sink_options]) apply to \
                     s3://, gs:// and az:// sinks only, not to {}",
                    crispy_core::redact::redact_urls(url)
                ),
            }),
        };
        if let Some(rest) = url.strip_prefix("memory://") {
            local_only()?;
            // The first segment names the in-memory "bucket"; the rest is the prefix.
            let prefix = rest.split_once('/').map_or("", |(_, p)| p);
            return Self::new(Arc::new(InMemory::new()), prefix, url, Backend::Memory);
        }
        let dir = if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(invalid("no directory after file://"));
            }
            PathBuf::from(rest)
        } else if url.contains("://") {
            let scheme = url.split("://").next().unwrap_or_default();
            return Err(invalid(&format!(
                "scheme {scheme}:// is not supported (supported: s3://, gs://, az://, \
                 file://, memory://, or a directory path)"
            )));
        } else if url.is_empty() {
            return Err(invalid("empty"));
        } else if let Some(scheme) = scheme_like(url) {
            // `s3:/bucket`, `gs:bucket`, `memory:`: a mistyped URL, not a directory to create.
            return Err(invalid(&format!(
                "{scheme}: looks like a URL without its \"//\" (did you mean {scheme}://…?); \
                 write a directory whose name has a colon as ./{url}"
            )));
        } else {
            PathBuf::from(url)
        };
        let fsync = local_fsync(options, url)?;
        if !create && dir.is_file() {
            // `crispy verify clip.mp4`: a sink is where chunks were stored.
            return Err(invalid(
                "a file, not a directory (a sink is the directory or bucket URL that chunks \
                 are stored in)",
            ));
        }
        if !create && !dir.is_dir() {
            // Nothing to read back (`crispy verify`): unreadable, not a malformed URL.
            return Err(SinkError::Read {
                sink: url.to_owned(),
                path: dir.display().to_string(),
                source: object_store::Error::NotFound {
                    path: dir.display().to_string(),
                    source: "no such directory".into(),
                },
            });
        }
        Self::local_with(&dir, url, fsync)
    }

    /// A sink writing into the local directory `dir` (created if missing).
    pub fn local(dir: &FsPath, display: &str) -> Result<Self, SinkError> {
        Self::local_with(dir, display, false)
    }

    /// A sink writing into the local directory `dir` (created if missing); with `fsync`,
    /// every put returns only once its object is on the disk (the `fsync=true` sink option),
    /// and the directories created for `dir` are synced here.
    pub fn local_with(dir: &FsPath, display: &str, fsync: bool) -> Result<Self, SinkError> {
        let unwritable = |source| SinkError::Unwritable {
            location: dir.display().to_string(),
            source,
        };
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(FsPath::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let dir = std::fs::canonicalize(dir).map_err(unwritable)?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| SinkError::InvalidUrl {
            url: display.to_owned(),
            reason: e.to_string(),
        })?;
        let mut store = crate::local::LocalStore::new(store);
        if fsync {
            // The new directories' entries, from the top down.
            for created in missing.iter().rev() {
                let parent = match created.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => FsPath::new("."),
                };
                sync_dir(parent).map_err(unwritable)?;
            }
            store = store.synced(dir.clone());
        }
        let mut sink = Self::new(Arc::new(store), "", display, Backend::Local)?;
        sink.local_dir = Some(dir);
        sink.created_dirs = missing.into_iter().rev().collect();
        Ok(sink)
    }

    /// Checks, before any reading starts, that the sink can be used.
    ///
    /// Local directories get a real test write. Cloud stores get one listing request under
    /// the prefix: wrong credentials ([`SinkError::Credentials`]) and a missing bucket
    /// ([`SinkError::NoBucket`]) fail here; a store that does not answer is
    /// [`SinkError::Unreachable`], which callers with a spool may treat as a warning.
    pub async fn preflight(&self) -> Result<(), SinkError> {
        if let Some(dir) = &self.local_dir {
            let probe = dir.join(format!(".crispy-write-test-{}", std::process::id()));
            let result = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
            result.map_err(|source| SinkError::Unwritable {
                location: dir.display().to_string(),
                source,
            })?;
            return Ok(());
        }
        if self.backend == Backend::Memory {
            return Ok(());
        }
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        match self.store.list_with_delimiter(prefix.as_ref()).await {
            Ok(_) => Ok(()),
            Err(source) => Err(self.classify(source)),
        }
    }

    /// What to call when a run ends having stored nothing (a source that could not be
    /// opened): removes the directories that opening this local sink created, if they are
    /// still empty, deepest first. Never touches a directory that holds anything.
    pub fn cleanup_dirs(&self) -> impl FnOnce() + Send + 'static {
        let dirs = self.created_dirs.clone();
        move || {
            for dir in dirs.iter().rev() {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
    }

    /// Like [`Self::preflight`] without writing anything (`crispy verify`, which may only
    /// have read access): a local directory must be readable, a cloud prefix listable.
    pub async fn preflight_read(&self) -> Result<(), SinkError> {
        if let Some(dir) = &self.local_dir {
            std::fs::read_dir(dir).map_err(|source| SinkError::Read {
                sink: self.display.clone(),
                path: dir.display().to_string(),
                source: object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(source),
                },
            })?;
            return Ok(());
        }
        self.preflight().await
    }

    /// Sorts a store error into what the user must fix.
    fn classify(&self, source: object_store::Error) -> SinkError {
        let (url, backend) = (self.display.clone(), self.backend);
        match &source {
            object_store::Error::Unauthenticated { .. }
            | object_store::Error::PermissionDenied { .. } => SinkError::Credentials {
                url,
                backend,
                source,
            },
            object_store::Error::NotFound { .. } => SinkError::NoBucket {
                url,
                backend,
                source,
            },
            _ if chain_mentions(
                &source,
                &["nosuchbucket", "no bucket named", "containernotfound"],
            ) =>
            {
                SinkError::NoBucket {
                    url,
                    backend,
                    source,
                }
            }
            _ if is_credential_failure(&source) => SinkError::Credentials {
                url,
                backend,
                source,
            },
            _ => SinkError::Unreachable {
                url,
                backend,
                source,
            },
        }
    }

    /// Which store this sink writes to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What names this sink's spool directory: the URL, with a local directory made
    /// absolute (so `file://./out` from two working directories are two spools).
    pub fn spool_key(&self) -> String {
        match &self.local_dir {
            Some(dir) => format!("file://{}", dir.display()),
            None => {
                let url = self.display.trim_end_matches('/');
                match &self.endpoint {
                    Some(endpoint) => format!("{url} at {endpoint}"),
                    None => url.to_owned(),
                }
            }
        }
    }

    /// Whether the sink can make signed URLs (`gs://`, `s3://`, `az://`).
    pub fn can_sign_urls(&self) -> bool {
        self.signer.is_some()
    }

    /// The underlying store (for listing and reading back).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The sink as given by the user, for logs.
    pub fn display_url(&self) -> &str {
        &self.display
    }

    /// The local directory, for `file://` sinks.
    pub fn local_dir(&self) -> Option<&FsPath> {
        self.local_dir.as_deref()
    }

    fn read_err(&self, path: &str, source: object_store::Error) -> SinkError {
        SinkError::Read {
            sink: self.display.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// The sink's own prefix joined with `sub` (either may be empty).
    fn under(&self, sub: &str) -> String {
        match (self.prefix.as_str(), sub.trim_matches('/')) {
            ("", s) => s.to_owned(),
            (p, "") => p.to_owned(),
            (p, s) => format!("{p}/{s}"),
        }
    }

    /// Every object under `sub` (relative to the sink's prefix), sorted by path: full object
    /// paths (as in manifests' `object`) and sizes.
    pub async fn list(&self, sub: &str) -> Result<Vec<(String, u64)>, SinkError> {
        use futures::TryStreamExt;
        let base = self.under(sub);
        let prefix = (!base.is_empty()).then(|| Path::from(base.as_str()));
        let mut all: Vec<(String, u64)> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .map_err(|e| self.read_err(&base, e))?;
        all.sort();
        Ok(all)
    }

    /// Like [`Self::list`] of the whole sink, for chunks starting in `[from, to)` (either
    /// bound open): the objects of [`Self::walk_window`], in one list.
    pub async fn list_window(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<(String, u64)>, SinkError> {
        use futures::TryStreamExt;
        if from.is_none() && to.is_none() {
            return self.list("").await;
        }
        let mut out: Vec<(String, u64)> = self
            .walk_window(from, to)
            .and_then(|walked| async move {
                match walked {
                    Walked::Objects(objects) => Ok(objects),
                    Walked::Unlisted { folder, detail } => Err(self.read_err(
                        &folder,
                        object_store::Error::Generic {
                            store: "listing",
                            source: detail.into(),
                        },
                    )),
                }
            })
            .try_concat()
            .await?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The objects (full paths and sizes) of the sink for chunks starting in `[from, to)`
    /// (either bound open), folder by folder: each item is the objects of one folder (of a
    /// day folder, everything below it), sorted, and paths ascend across items, so a reader
    /// can work through a bucket holding months of many cameras while holding one folder's
    /// names at a time.
    ///
    /// An object whose name no object path can hold (a control character, `.` or `..`,
    /// which S3 and GCS accept in keys) does not stop the walk: it comes out as
    /// [`Walked::Unlisted`], where it was found, and the walk goes on. In a local directory
    /// only that name is left out. A cloud store's listing fails for the page (up to 1,000
    /// names) holding it: a day folder is not listed from that page on, any other folder
    /// not at all (with what is below it), and the item says so.
    ///
    /// Date folders (`<yyyy>/<mm>/<dd>`) wholly outside the window are not listed, so a
    /// day's check of such a bucket lists that day, not the months. Everything else is
    /// listed. A folder is skipped as a date only when an object in it proves it one: its
    /// name's start time falls in that date and it sits at `<yyyy>/<mm>/<dd>/<name>` below
    /// the same parent. So a source or prefix made of digits (`2025/01`, a camera `02`) is
    /// never skipped for looking like a date.
    pub fn walk_window(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> impl futures::Stream<Item = Result<Walked, SinkError>> + Send + '_ {
        let start = vec![Step::Folder(Folder::Plain(self.prefix.clone()))];
        futures::stream::try_unfold(start, move |mut stack| async move {
            while let Some(step) = stack.pop() {
                match step {
                    Step::Objects(objects) => return Ok(Some((Walked::Objects(objects), stack))),
                    Step::Unlisted(folder, detail) => {
                        return Ok(Some((Walked::Unlisted { folder, detail }, stack)));
                    }
                    Step::Folder(folder) => self.expand(folder, (from, to), &mut stack).await?,
                }
            }
            Ok(None)
        })
    }

    /// Lists `folder` for [`Self::walk_window`] (skipping a date folder proven outside the
    /// window) and pushes what it holds onto `stack`, so that popping yields ascending paths.
    async fn expand(
        &self,
        folder: Folder,
        window: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        stack: &mut Vec<Step>,
    ) -> Result<(), SinkError> {
        let (dir, date) = match folder {
            Folder::Plain(dir) => (dir, None),
            Folder::Date(dir, first, span) => (dir, Some((first, span))),
        };
        if self.loops_back(&dir).await {
            tracing::debug!(folder = %dir, "not listed: a link back up the sink's own tree");
            return Ok(());
        }
        if let Some((first, span)) = date {
            let next = match span {
                Span::Year => first.with_year(first.year() + 1),
                Span::Month => first.checked_add_months(chrono::Months::new(1)),
                Span::Day => first.succ_opt(),
            }
            .unwrap_or(NaiveDate::MAX);
            if !overlaps(window, first, next) {
                if !self.proves_date(&dir, span).await? {
                    stack.push(Step::Folder(Folder::Plain(dir)));
                }
                return Ok(());
            }
            if span == Span::Day {
                let (mut objects, odd) = self.list_under(&dir).await?;
                objects.sort();
                // Reported before the folder's objects: they pop after.
                if !objects.is_empty() {
                    stack.push(Step::Objects(objects));
                }
                push_unlisted(stack, odd);
                return Ok(());
            }
        }
        let Children {
            dirs: subdirs,
            objects,
            odd,
        } = self.children(&dir).await?;
        let folders = subdirs.into_iter().map(|sub| {
            let part = last_segment(&sub).and_then(|v| date_part(v, 2));
            let next_level = date.and_then(|(first, span)| match span {
                Span::Year => part
                    .and_then(|m| first.with_month(m))
                    .map(|d| (d, Span::Month)),
                _ => part.and_then(|d| first.with_day(d)).map(|d| (d, Span::Day)),
            });
            match next_level {
                Some((d, span)) => Folder::Date(sub, d, span),
                None => year_or_plain(sub),
            }
        });
        push_in_order(stack, folders.collect(), objects);
        push_unlisted(stack, odd);
        Ok(())
    }

    /// Whether `dir` (a full path) is, in a local sink, a link to itself or to a folder
    /// above it: listing it would descend without end (until the system refuses a path of
    /// too many links). Such a folder holds nothing the walk does not reach by its own
    /// path. Never for a cloud store.
    async fn loops_back(&self, dir: &str) -> bool {
        let Some(root) = self.local_dir.as_ref().filter(|_| !dir.is_empty()) else {
            return false;
        };
        let parent = dir.rsplit_once('/').map_or("", |(parent, _)| parent);
        let real = |p: &str| tokio::fs::canonicalize(root.join(p));
        match (real(dir).await, real(parent).await) {
            (Ok(target), Ok(above)) => above.starts_with(target),
            _ => false,
        }
    }

    /// Whether an object under `dir`, a year, month or day folder by its name, shows that
    /// it is one: the object's name's start time and its place below `dir`'s date parent
    /// agree (`<parent>/<yyyy>/<mm>/<dd>/<name>`).
    async fn proves_date(&self, dir: &str, span: Span) -> Result<bool, SinkError> {
        use futures::TryStreamExt;
        let witness = match self.store.list(Some(&Path::from(dir))).try_next().await {
            Ok(witness) => witness,
            // Listed as a plain folder instead, where the name is reported (and, in a
            // local directory, a link back up the tree followed once).
            Err(object_store::Error::InvalidPath { .. }) => return Ok(false),
            Err(_) if self.local_dir.is_some() => return Ok(false),
            Err(e) => return Err(self.read_err(dir, e)),
        };
        let Some(witness) = witness else {
            return Ok(true);
        };
        let path = witness.location.to_string();
        let Some(start) = crate::object_start(&path) else {
            return Ok(false);
        };
        let above = match span {
            Span::Year => 1,
            Span::Month => 2,
            Span::Day => 3,
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        let date = format!(
            "{:04}/{:02}/{:02}",
            start.year(),
            start.month(),
            start.day()
        );
        // The folder holding the year folder; none when the year folder is at the root.
        let expected = match dir.rsplitn(above + 1, '/').nth(above) {
            Some(parent) => format!("{parent}/{date}/{name}"),
            None => format!("{date}/{name}"),
        };
        Ok(path == expected)
    }

    /// The folders and the objects (with sizes) directly under `dir`, a full path, and the
    /// names there that no object path can hold ([`Self::walk_window`]).
    async fn children(&self, dir: &str) -> Result<Children, SinkError> {
        let prefix = (!dir.is_empty()).then(|| Path::from(dir));
        let listing = match self.store.list_with_delimiter(prefix.as_ref()).await {
            Ok(listing) => listing,
            Err(object_store::Error::InvalidPath { source }) => {
                if self.local_dir.is_some() {
                    return self.local_listing(dir, false).await;
                }
                return Ok(Children {
                    odd: vec![OddName {
                        at: dir.to_owned(),
                        detail: format!(
                            "this folder could not be listed, so nothing in it was checked: \
                             the store returned a name that no object path can hold ({}); \
                             rename or delete that object",
                            crispy_core::redact::escape_controls(&source.to_string())
                        ),
                    }],
                    ..Children::default()
                });
            }
            // A link back up the tree fails object_store's listing ("file system loop"):
            // read by hand, which lists it as a folder that the walk then skips
            // ([`Self::loops_back`]). A real failure fails there too.
            Err(_) if self.local_dir.is_some() => return self.local_listing(dir, false).await,
            Err(e) => return Err(self.read_err(dir, e)),
        };
        let dirs = listing
            .common_prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        let objects = listing
            .objects
            .iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        Ok(Children {
            dirs,
            objects,
            odd: Vec::new(),
        })
    }

    /// Every object under `dir`, a full path, and what could not be listed
    /// ([`Self::walk_window`]): a local directory's listing leaves out only the odd name, a
    /// cloud store's stops at the page holding it.
    async fn list_under(&self, dir: &str) -> Result<(Vec<(String, u64)>, Vec<OddName>), SinkError> {
        use futures::StreamExt;
        let mut listing = self.store.list(Some(&Path::from(dir)));
        let mut objects = Vec::new();
        while let Some(item) = listing.next().await {
            match item {
                Ok(m) => objects.push((m.location.to_string(), m.size)),
                // The listing ends at such an error (a local one too): a local directory
                // is read again by hand, a cloud store's rest of the folder is lost. So is
                // a local one that failed otherwise: a link back up the tree ends
                // object_store's walk ("file system loop"), the hand-made one follows it
                // once; a real failure (permissions) fails there too, and is reported.
                Err(_) if self.local_dir.is_some() => {
                    let listing = self.local_listing(dir, true).await?;
                    return Ok((listing.objects, listing.odd));
                }
                Err(object_store::Error::InvalidPath { source }) => {
                    let odd = OddName {
                        at: dir.to_owned(),
                        detail: format!(
                            "an object under this folder has a name that no object path can \
                             hold ({}): the listing of this folder stopped at it, so the \
                             objects listed with it and after it were not checked; rename or \
                             delete it",
                            crispy_core::redact::escape_controls(&source.to_string())
                        ),
                    };
                    return Ok((objects, vec![odd]));
                }
                Err(e) => return Err(self.read_err(dir, e)),
            }
        }
        Ok((objects, Vec::new()))
    }

    /// A local sink's folder `dir` read by hand ([`local_listing`]), for when object_store's
    /// listing fails on a name no object path can hold.
    async fn local_listing(&self, dir: &str, recursive: bool) -> Result<Children, SinkError> {
        let Some(root) = self.local_dir.clone() else {
            return Ok(Children::default());
        };
        let at = dir.to_owned();
        tokio::task::spawn_blocking(move || local_listing(&root, &at, recursive))
            .await
            .map_err(|e| self.read_err(dir, object_store::Error::JoinError { source: e }))?
            .map_err(|e| self.read_err(dir, e))
    }

    /// The object at `path` (a full object path), `None` when there is none.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>, SinkError> {
        let location = Path::parse(path).map_err(|e| self.read_err(path, e.into()))?;
        match self.store.get(&location).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| self.read_err(path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.read_err(path, e)),
        }
    }

    /// Names directly under `dir` (sub-directories, then objects), each sorted descending.
    async fn children_desc(&self, dir: &str) -> Result<(Vec<String>, Vec<String>), SinkError> {
        let Children {
            mut dirs,
            objects,
            odd,
        } = self.children(dir).await?;
        // A name left out of a local listing hides nothing else; a cloud folder that could
        // not be listed might hold the newest manifest.
        if self.local_dir.is_none()
            && let Some(o) = odd.into_iter().next()
        {
            return Err(self.read_err(
                &o.at,
                object_store::Error::Generic {
                    store: "listing",
                    source: o.detail.into(),
                },
            ));
        }
        let mut objects: Vec<String> = objects.into_iter().map(|(path, _)| path).collect();
        dirs.sort_by(|a, b| b.cmp(a));
        objects.sort_by(|a, b| b.cmp(a));
        Ok((dirs, objects))
    }

    fn put_err(&self, path: &str, source: object_store::Error) -> SinkError {
        SinkError::Put {
            sink: self.display.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// Puts `payload` at `path` only if nothing is there (`PutMode::Create`).
    ///
    /// An identical object already there is success, a different one a
    /// [`SinkError::Conflict`]. After an error that leaves open whether the put landed (a
    /// timeout, a reset connection, a 5xx after object_store's own retries), the object is
    /// looked up: ours means success, absent means the error is returned for a retry.
    async fn put_once(
        &self,
        path: &str,
        payload: Payload,
        metadata: &ChunkMetadata,
        content_type: &'static str,
    ) -> Result<PutOutcome, SinkError> {
        let location = Path::parse(path).map_err(|e| self.put_err(path, e.into()))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes: if self.backend.has_attributes() {
                chunk_attributes(metadata, content_type, self.backend)
            } else {
                Attributes::new()
            },
            ..PutOptions::default()
        };
        let body: PutPayload = payload.parts().iter().cloned().collect();
        let result = self.store.put_opts(&location, body, opts).await;
        let error = match result {
            Ok(done) => {
                if !self.etag_matches(&payload, done.e_tag.as_deref()) {
                    // Not necessarily damage (a composite or encrypted object's ETag is no
                    // MD5): read it back before saying so.
                    let stored = self.get(path).await?;
                    let ours = crispy_signer::payload_sha256_hex(&payload);
                    if stored.as_deref().map(crispy_signer::sha256_hex) != Some(ours.clone()) {
                        return Err(SinkError::Damaged {
                            sink: self.display.clone(),
                            path: path.to_owned(),
                            etag: done.e_tag.unwrap_or_default(),
                            ours,
                        });
                    }
                }
                return Ok(PutOutcome::Created);
            }
            Err(e) => e,
        };
        let already = matches!(error, object_store::Error::AlreadyExists { .. });
        // (A local object that could not be synced has no name: not ambiguous.)
        if !already && (!is_ambiguous(&error) || crate::local::is_not_synced(&error)) {
            return Err(self.put_err(path, error));
        }
        let found = match self.find(path, &location, &payload, metadata).await {
            Ok(found) => found,
            // The store still does not answer: keep the first error for the retry.
            Err(_) if !already => return Err(self.put_err(path, error)),
            Err(e) => return Err(e),
        };
        match found {
            Found::Same if already => Ok(PutOutcome::AlreadyPresent),
            Found::Same => {
                tracing::info!(
                    object = %path,
                    error = %error,
                    "the upload failed ambiguously but the object is there with our content"
                );
                Ok(PutOutcome::Created)
            }
            Found::Different(existing) => Err(SinkError::Conflict {
                sink: self.display.clone(),
                path: path.to_owned(),
                existing,
                ours: crispy_signer::payload_sha256_hex(&payload),
            }),
            Found::SignedOtherwise(theirs) => Err(SinkError::SignedOtherwise {
                sink: self.display.clone(),
                path: path.to_owned(),
                theirs: signer_in_words(theirs.as_ref()),
                ours: signer_in_words(signer_of(metadata).as_ref()),
            }),
            // Deleted since it was reported (or never there): the retry will create it.
            Found::Absent => Err(self.put_err(path, error)),
        }
    }

    /// Is the object at `path` the one we are putting? Compares the SHA-256 recorded in its
    /// metadata (one HEAD request) where the store keeps metadata, else its content. For
    /// manifests, the same chunk (`sha256`, `object`) signed by the same key (or unsigned
    /// both) means the same upload, even when the manifest was re-signed since.
    async fn find(
        &self,
        path: &str,
        location: &Path,
        payload: &Payload,
        metadata: &ChunkMetadata,
    ) -> Result<Found, SinkError> {
        let is_manifest = path.ends_with(".json");
        if self.backend.has_attributes() {
            let head = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            match self.store.get_opts(location, head).await {
                Err(object_store::Error::NotFound { .. }) => return Ok(Found::Absent),
                Err(e) => return Err(self.read_err(path, e)),
                Ok(r) => {
                    let key = Attribute::Metadata(meta_key(SHA256_ATTRIBUTE, self.backend).into());
                    if let Some(theirs) = r.attributes.get(&key) {
                        // Our metadata, and (where the ETag is an MD5) the content it names.
                        let size_ok = is_manifest
                            || (r.meta.size == payload.len() as u64
                                && self.etag_matches(payload, r.meta.e_tag.as_deref()));
                        if theirs.as_ref() != metadata.sha256 || !size_ok {
                            return Ok(Found::Different(theirs.to_string()));
                        }
                        if is_manifest {
                            let attr = |name: &str| {
                                let key = Attribute::Metadata(meta_key(name, self.backend).into());
                                r.attributes.get(&key).map(|v| v.to_string())
                            };
                            let signer = attr("crispy-sig-alg").zip(attr("crispy-key-id"));
                            if signer != signer_of(metadata) {
                                return Ok(Found::SignedOtherwise(signer));
                            }
                        }
                        return Ok(Found::Same);
                    }
                    // Written by something else: compare the content.
                }
            }
        }
        let Some(existing) = self.get(path).await? else {
            return Ok(Found::Absent);
        };
        if is_manifest {
            return Ok(
                match serde_json::from_slice::<ChunkMetadata>(&existing).ok() {
                    Some(e) if e.sha256 == metadata.sha256 && e.object == metadata.object => {
                        let theirs = signer_of(&e);
                        if theirs == signer_of(metadata) {
                            Found::Same
                        } else {
                            Found::SignedOtherwise(theirs)
                        }
                    }
                    Some(e) => Found::Different(e.sha256),
                    None => Found::Different(crispy_signer::sha256_hex(&existing)),
                },
            );
        }
        let theirs = crispy_signer::sha256_hex(&existing);
        Ok(if theirs == crispy_signer::payload_sha256_hex(payload) {
            Found::Same
        } else {
            Found::Different(theirs)
        })
    }

    /// Where the store hands back the MD5 of what it received (the ETag of a
    /// single-request upload on GCS), whether it is ours. Opaque ETags match.
    fn etag_matches(&self, payload: &Payload, etag: Option<&str>) -> bool {
        if !self.backend.etag_is_md5() {
            return true;
        }
        let Some(etag) = etag.map(|e| e.trim_matches('"')) else {
            return true;
        };
        if etag.len() != 32 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return true; // a multipart or otherwise opaque ETag
        }
        use md5::Digest;
        let mut md5 = md5::Md5::new();
        for part in payload.parts() {
            md5.update(part);
        }
        etag.eq_ignore_ascii_case(&hex::encode(md5.finalize()))
    }
}

/// A metadata key as `backend` accepts it: Azure wants C# identifiers (`crispy_sha256`),
/// the others keep the HTTP-header style (`crispy-sha256`).
pub(crate) fn meta_key(name: &str, backend: Backend) -> String {
    match backend {
        Backend::Azure => name.replace('-', "_"),
        _ => name.to_owned(),
    }
}

/// What [`ObjectStoreSink::find`] found at a path.
enum Found {
    /// Nothing.
    Absent,
    /// Our object.
    Same,
    /// Another object; its SHA-256.
    Different(String),
    /// The manifest of the same chunk, signed by another key (or unsigned where ours is
    /// signed, or the reverse); its signer.
    SignedOtherwise(Option<(String, String)>),
}

/// Who signed a manifest: its signature's algorithm and key id, `None` when unsigned.
fn signer_of(m: &ChunkMetadata) -> Option<(String, String)> {
    m.signature
        .as_ref()
        .map(|s| (s.alg.clone(), s.key_id.clone()))
}

/// [`signer_of`]'s answer in words, for errors.
fn signer_in_words(signer: Option<&(String, String)>) -> String {
    match signer {
        None => "unsigned".to_owned(),
        Some((alg, key_id)) => format!("signed with {alg} key {key_id}"),
    }
}

/// The metadata attribute holding the chunk's SHA-256.
const SHA256_ATTRIBUTE: &str = "crispy-sha256";

/// Errors after which a put may or may not have landed.
fn is_ambiguous(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotFound { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

/// Whether an error's chain says the credentials could not be found or used (object_store
/// reports a failed metadata-server or token lookup as a generic error).
fn is_credential_failure(e: &object_store::Error) -> bool {
    chain_mentions(
        e,
        &[
            "credential",
            "token",
            "401 unauthorized",
            "403 forbidden",
            "accessdenied",
            "authorizationfailure",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
        ],
    )
}

/// Whether any error in `e`'s chain mentions one of `words` (lower case).
fn chain_mentions(e: &object_store::Error, words: &[&str]) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string().to_ascii_lowercase();
        if words.iter().any(|w| text.contains(w)) {
            return true;
        }
        current = err.source();
    }
    false
}

/// Validates an object-name prefix: relative, `/`-separated, no empty, `.`, `..` or
/// control-character segments. Leading and trailing `/` are removed. `display` names where
/// the prefix came from in the error.
pub fn clean_prefix(prefix: &str, display: &str) -> Result<String, SinkError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let bad = trimmed
        .split('/')
        .find(|s| s.is_empty() || *s == "." || *s == ".." || s.chars().any(char::is_control));
    if bad.is_some() || Path::parse(trimmed).is_err() {
        return Err(SinkError::InvalidUrl {
            url: display.to_owned(),
            reason: format!(
                "prefix {trimmed:?} has an empty, '.', '..' or control-character segment"
            ),
        });
    }
    Ok(trimmed.to_owned())
}

/// Object metadata attributes (`x-goog-meta-*` on GCS, `x-amz-meta-*` on S3): the core
/// fields, the chain link and the signature, so a reader can check an object without its
/// manifest.
fn chunk_attributes(m: &ChunkMetadata, content_type: &'static str, backend: Backend) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, content_type.into());
    let meta = [
        ("crispy-schema", m.schema.clone()),
        (SHA256_ATTRIBUTE, m.sha256.clone()),
        ("crispy-source-id", m.source_id.to_string()),
        ("crispy-sequence", m.sequence.to_string()),
        (
            "crispy-start-time",
            m.start_time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        ("crispy-duration-ms", m.duration_ms.to_string()),
        ("crispy-frames", m.frame_count.to_string()),
        ("crispy-resolution", format!("{}x{}", m.width, m.height)),
    ];
    for (k, v) in meta {
        a.insert(Attribute::Metadata(meta_key(k, backend).into()), v.into());
    }
    let optional = [
        ("crispy-prev-sha256", m.prev_sha256.clone()),
        (
            "crispy-sig-alg",
            m.signature.as_ref().map(|s| s.alg.clone()),
        ),
        (
            "crispy-key-id",
            m.signature.as_ref().map(|s| s.key_id.clone()),
        ),
        (
            "crispy-signature",
            m.signature.as_ref().map(|s| s.value.clone()),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            a.insert(Attribute::Metadata(meta_key(k, backend).into()), v.into());
        }
    }
    a
}

#[async_trait]
impl ChunkSink for ObjectStoreSink {
    type Error = SinkError;

    fn object_path_in(&self, prefix: &str, metadata: &ChunkMetadata) -> String {
        let joined = match (self.prefix.as_str(), prefix) {
            ("", p) => p.to_owned(),
            (s, "") => s.to_owned(),
            (s, p) => format!("{s}/{p}"),
        };
        chunk_object_path(
            &joined,
            &metadata.source_id,
            metadata.start_time,
            metadata.sequence,
        )
    }

    fn object_path(&self, metadata: &ChunkMetadata) -> String {
        chunk_object_path(
            &self.prefix,
            &metadata.source_id,
            metadata.start_time,
            metadata.sequence,
        )
    }

    async fn last_manifest(
        &self,
        prefix: Option<&str>,
        source_id: &SourceId,
    ) -> Result<Option<StoredManifest>, SinkError> {
        // Object names are `<id>/yyyy/mm/dd/<stamp>-<seq>.json`: descend year, month and day,
        // newest first, instead of listing the source's whole history.
        let base = self.under(&match prefix {
            Some(p) => format!("{p}/{source_id}"),
            None => source_id.to_string(),
        });
        let (years, _) = self.children_desc(&base).await?;
        for year in years {
            let (months, _) = self.children_desc(&year).await?;
            for month in months {
                let (days, _) = self.children_desc(&month).await?;
                for day in days {
                    let (_, objects) = self.children_desc(&day).await?;
                    for name in objects.iter().filter(|o| o.ends_with(".json")) {
                        let Some(bytes) = self.get(name).await? else {
                            continue;
                        };
                        match StoredManifest::parse(bytes) {
                            Some(m) if m.metadata.source_id == *source_id => return Ok(Some(m)),
                            _ => tracing::warn!(
                                object = %name,
                                "not a manifest of this source; looking further back"
                            ),
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn is_permanent(&self, error: &SinkError) -> bool {
        error.is_permanent()
    }

    fn is_lasting(&self, error: &SinkError) -> bool {
        error.is_lasting()
    }

    async fn signed_url(
        &self,
        object: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, SinkError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let location = Path::parse(object).map_err(|e| self.read_err(object, e.into()))?;
        let url = signer
            .signed_url(object_store::signer::Method::GET, &location, ttl)
            .await
            .map_err(|e| self.read_err(object, e))?;
        Ok(Some(url.to_string()))
    }

    async fn put(&self, chunk: &Chunk, manifest: Bytes) -> Result<PutOutcome, SinkError> {
        let m = &chunk.metadata;
        let chunk_outcome = self
            .put_once(&m.object, chunk.payload.clone(), m, "video/mp4")
            .await?;
        // The manifest goes last: its presence means the chunk is complete.
        let manifest_outcome = self
            .put_once(
                &manifest_path_for(&m.object),
                Payload::from(manifest),
                m,
                "application/json",
            )
            .await?;
        Ok(match (chunk_outcome, manifest_outcome) {
            (PutOutcome::AlreadyPresent, PutOutcome::AlreadyPresent) => PutOutcome::AlreadyPresent,
            _ => PutOutcome::Created,
        })
    }
}

/// A folder met while listing a time window.
enum Folder {
    /// Not (known to be) a date folder: everything in it is listed.
    Plain(String),
    /// A folder named like the date span starting at the date.
    Date(String, NaiveDate, Span),
}

/// What is left of a walk: a folder to list, or objects listed (or a name that could not
/// be), ready to hand out.
enum Step {
    Folder(Folder),
    Objects(Vec<(String, u64)>),
    Unlisted(String, String),
}

/// One item of [`ObjectStoreSink::walk_window`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walked {
    /// Objects of one folder, full paths and sizes, sorted.
    Objects(Vec<(String, u64)>),
    /// Something at or under `folder` that could not be listed: an object whose name no
    /// object path can hold. `folder` is a full path, and carries the odd name (escaped)
    /// where it is known; `detail` says what was left out.
    Unlisted {
        /// Where (escaped, never raw control characters).
        folder: String,
        /// What could not be listed, and what that left unchecked.
        detail: String,
    },
}

/// A folder's listing ([`ObjectStoreSink::walk_window`]).
#[derive(Default)]
struct Children {
    dirs: Vec<String>,
    objects: Vec<(String, u64)>,
    odd: Vec<OddName>,
}

/// A name in a listing that no object path can hold, and where.
struct OddName {
    at: String,
    detail: String,
}

/// A local directory's listing, for when object_store's fails on a name no object path can
/// hold: the same folders and objects as object_store lists (staging files `<name>#<n>` and
/// broken links left out; `recursive`: every object below `dir`, no folders), and each odd
/// name reported instead of failing the listing.
fn local_listing(
    root: &FsPath,
    dir: &str,
    recursive: bool,
) -> Result<Children, object_store::Error> {
    let mut seen = std::collections::HashSet::new();
    local_listing_in(root, dir, recursive, &mut seen)
}

/// [`local_listing`], skipping the directories in `seen` (device and inode): links that
/// lead back up the tree are followed once.
fn local_listing_in(
    root: &FsPath,
    dir: &str,
    recursive: bool,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> Result<Children, object_store::Error> {
    use std::os::unix::fs::MetadataExt;
    let generic = |source: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    };
    let mut out = Children::default();
    let here = std::fs::metadata(root.join(dir)).map_err(generic)?;
    if !seen.insert((here.dev(), here.ino())) {
        return Ok(out);
    }
    let join = |name: &str| match dir {
        "" => name.to_owned(),
        d => format!("{d}/{name}"),
    };
    for entry in std::fs::read_dir(root.join(dir)).map_err(generic)? {
        let entry = entry.map_err(generic)?;
        let raw = entry.file_name();
        let valid = raw
            .to_str()
            .filter(|name| object_store::path::PathPart::parse(name).is_ok());
        let Some(name) = valid else {
            let shown = raw.to_string_lossy().escape_debug().to_string();
            out.odd.push(OddName {
                at: join(&shown),
                detail: format!(
                    "the name {:?} cannot be an object path (a control character, invalid \
                     UTF-8, or `.`/`..`): it was not checked; rename or delete it",
                    raw
                ),
            });
            continue;
        };
        // Followed through links, as object_store does; a broken link is left out.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() && recursive {
            let below = local_listing_in(root, &join(name), true, seen)?;
            out.objects.extend(below.objects);
            out.odd.extend(below.odd);
        } else if meta.is_dir() {
            out.dirs.push(join(name));
        } else if meta.is_file() && !is_staging_name(name) {
            out.objects.push((join(name), meta.len()));
        }
    }
    out.dirs.sort();
    out.objects.sort();
    out.odd.sort_by(|a, b| a.at.cmp(&b.at));
    Ok(out)
}

/// object_store's local staging files, `<name>#<digits>`, which its listings leave out.
fn is_staging_name(name: &str) -> bool {
    name.split_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Folder {
    fn dir(&self) -> &str {
        match self {
            Folder::Plain(dir) | Folder::Date(dir, ..) => dir,
        }
    }
}

/// Pushes a folder's sub-folders and objects onto a walk's stack so that they pop in
/// ascending path order: objects between two sub-folders (by name) come out between them.
fn push_in_order(stack: &mut Vec<Step>, folders: Vec<Folder>, mut objects: Vec<(String, u64)>) {
    // A folder's contents sort as `<dir>/…`: `a/b-c/x` comes before `a/b/x`.
    let mut folders: Vec<(String, Folder)> = folders
        .into_iter()
        .map(|f| (format!("{}/", f.dir()), f))
        .collect();
    folders.sort_by(|a, b| a.0.cmp(&b.0));
    objects.sort();
    let mut objects = objects.into_iter().peekable();
    let mut steps = Vec::new();
    for (bound, folder) in folders {
        let before: Vec<(String, u64)> =
            std::iter::from_fn(|| objects.next_if(|(path, _)| *path < bound)).collect();
        if !before.is_empty() {
            steps.push(Step::Objects(before));
        }
        steps.push(Step::Folder(folder));
    }
    let rest: Vec<(String, u64)> = objects.collect();
    if !rest.is_empty() {
        steps.push(Step::Objects(rest));
    }
    stack.extend(steps.into_iter().rev());
}

/// Pushes a folder's odd names onto a walk's stack, to pop (in order) before what the
/// folder holds.
fn push_unlisted(stack: &mut Vec<Step>, odd: Vec<OddName>) {
    stack.extend(
        odd.into_iter()
            .rev()
            .map(|o| Step::Unlisted(o.at, o.detail)),
    );
}

/// Whether the dates `[first, next)` overlap the window `[from, to)` (either bound open).
fn overlaps(
    (from, to): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    first: NaiveDate,
    next: NaiveDate,
) -> bool {
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
    to.is_none_or(|to| midnight(first) < to) && from.is_none_or(|from| midnight(next) > from)
}

/// What a date folder covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    Year,
    Month,
    Day,
}

/// A folder that is not the next date level: a year if named like one, else plain.
fn year_or_plain(dir: String) -> Folder {
    let year = last_segment(&dir)
        .and_then(|y| date_part(y, 4))
        .and_then(|y| NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, 1, 1));
    match year {
        Some(first) => Folder::Date(dir, first, Span::Year),
        None => Folder::Plain(dir),
    }
}

/// The last segment of a store path.
fn last_segment(path: &str) -> Option<&str> {
    path.trim_end_matches('/').rsplit('/').next()
}

/// A date folder's number: exactly `digits` ASCII digits.
fn date_part(segment: &str, digits: usize) -> Option<u32> {
    (segment.len() == digits && segment.bytes().all(|b| b.is_ascii_digit()))
        .then(|| segment.parse().ok())
        .flatten()
}

/// The options a local directory takes: `fsync=true|false` only (the store options of
/// cloud sinks are an error here). Whether puts are synced.
fn local_fsync(options: &SinkOptions, url: &str) -> Result<bool, SinkError> {
    let mut fsync = false;
    for (key, value) in &options.options {
        if key != "fsync" {
            return Err(SinkError::InvalidOption {
                key: key.chars().take(64).collect(),
                reason: format!(
                    "a local directory takes only fsync=true|false; store options \
                     (--sink-opt, a config file's [sink_options]) apply to s3://, gs:// and \
                     az:// sinks only, not to {}",
                    crispy_core::redact::redact_urls(url)
                ),
            });
        }
        fsync = match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                return Err(SinkError::InvalidOption {
                    key: key.clone(),
                    reason: "takes true or false".to_owned(),
                });
            }
        };
    }
    Ok(fsync)
}

/// Syncs a directory's entries to the disk.
fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The scheme of a string that starts like a URL (`word:`, the word a valid URL scheme and
/// longer than one letter), if it does.
fn scheme_like(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && scheme.len() > 1).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_listing_by_hand_follows_links_back_up_the_tree_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let day = root.path().join("cam/2026/01/02");
        std::fs::create_dir_all(day.join("sub")).expect("dirs");
        std::fs::write(day.join("a.mp4"), b"abc").expect("file");
        std::fs::write(day.join("sub/b.mp4"), b"b").expect("file");
        std::fs::write(day.join("odd\nname.json"), b"x").expect("file");
        std::os::unix::fs::symlink(".", day.join("again")).expect("link");
        std::os::unix::fs::symlink("../..", day.join("sub/up")).expect("link");
        let listing = local_listing(root.path(), "cam/2026/01/02", true).expect("listing");
        assert_eq!(
            listing.objects,
            [
                ("cam/2026/01/02/a.mp4".to_owned(), 3),
                ("cam/2026/01/02/sub/b.mp4".to_owned(), 1)
            ]
        );
        assert_eq!(listing.odd.len(), 1);
        assert_eq!(listing.odd[0].at, "cam/2026/01/02/odd\\nname.json");
        let top = local_listing(root.path(), "cam/2026/01/02", false).expect("listing");
        assert_eq!(top.dirs, ["cam/2026/01/02/again", "cam/2026/01/02/sub"]);
    }

    #[test]
    fn a_walk_pops_objects_and_folders_in_path_order() {
        let mut stack = Vec::new();
        let folders = vec![
            Folder::Plain("a/b".to_owned()),
            Folder::Plain("a/b-c".to_owned()),
        ];
        let objects = ["a/c.json", "a/b.json", "a/a.json"]
            .map(|p| (p.to_owned(), 1))
            .to_vec();
        push_in_order(&mut stack, folders, objects);
        let mut order = Vec::new();
        while let Some(step) = stack.pop() {
            match step {
                Step::Objects(o) => order.extend(o.into_iter().map(|(p, _)| p)),
                Step::Folder(f) => order.push(format!("{}/", f.dir())),
                Step::Unlisted(at, _) => order.push(at),
            }
        }
        // `-` sorts before `.`, which sorts before `/`.
        assert_eq!(
            order,
            ["a/a.json", "a/b-c/", "a/b.json", "a/b/", "a/c.json"]
        );
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }

    #[test]
    fn rejects_hostile_prefixes_and_unknown_schemes() {
        for url in [
            "memory://b/../x",
            "memory://b/a//b",
            "memory://b/./a",
            "memory://b/a\u{7}",
        ] {
            assert!(ObjectStoreSink::from_url(url).is_err(), "{url:?}");
        }
        assert!(ObjectStoreSink::from_url("ftp://host/x").is_err());
        // Mistyped URLs are not directories to create.
        for url in [
            "s3:/b/p", "s3:b", "az:/c", "memory:/", "memory:", "foo:bar", "gs:",
        ] {
            let err = ObjectStoreSink::from_url(url)
                .err()
                .unwrap_or_else(|| panic!("{url}"));
            assert!(err.to_string().contains("looks like a URL"), "{url}: {err}");
            assert!(!std::path::Path::new(url).exists(), "{url} was created");
        }
        assert!(ObjectStoreSink::from_url("file://").is_err());
        assert!(ObjectStoreSink::from_url("").is_err());
        assert!(ObjectStoreSink::from_url("memory://b/ok/prefix").is_ok());
    }
}
