//! Local directories: object_store's `LocalFileSystem` with a cheaper create-only put.
//!
//! `LocalFileSystem::put_opts` writes a payload part by part into a named staging file
//! (`<name>#1`), hard-links that into place and unlinks the staging name. A chunk arrives as
//! the demuxer's packets, hundreds of parts of about 20 KiB, and the page cache takes writes
//! that small at about half the speed of one large write (188 MB into 100 files: 0.14 s of
//! CPU as 20 KiB writes, 0.06 s as one `writev` per file); the staging name costs two more
//! directory operations per object.
//!
//! [`LocalStore`] therefore writes a create-only put with vectored writes (one `writev` per
//! 1024 parts) into an unnamed file (`O_TMPFILE`) and gives it its name with `linkat`, which
//! fails when the name exists. The object appears complete or not at all, never replaces
//! another, and a crash leaves no staging file behind. Where the file system or the
//! environment cannot do that (no `O_TMPFILE`, no `/proc`), and for every other operation,
//! it is `LocalFileSystem` itself.
//!
//! With `fsync=true` (a sink option) a put returns only once the object is on the disk: the
//! file's data is synced before it gets its name, then its directory, and the first time a
//! directory is seen, the directories above it up to the sink's root (their entries for
//! new subdirectories). A power cut then loses no object whose put returned.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use crispy_core::Payload;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

const STORE: &str = "LocalFileSystem";

/// A local directory as an object store: `LocalFileSystem`, except for create-only puts
/// (see the module documentation).
#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: LocalFileSystem,
    /// Cleared the first time the directory turns out unable to take an unnamed file:
    /// every put goes through `LocalFileSystem` from then on.
    unnamed: AtomicBool,
    /// `fsync=true`: what has been synced.
    sync: Option<Arc<Durability>>,
}

impl LocalStore {
    pub(crate) fn new(inner: LocalFileSystem) -> Self {
        Self {
            inner,
            unnamed: AtomicBool::new(true),
            sync: None,
        }
    }

    /// Puts return only once the object is on the disk (`fsync=true`); `root` is the sink's
    /// directory (its own entry is the opener's to sync). `LocalFileSystem`, where puts fall
    /// back to it, syncs with its own `with_fsync`.
    pub(crate) fn synced(self, root: PathBuf) -> Self {
        Self {
            inner: self.inner.with_fsync(true),
            unnamed: self.unnamed,
            sync: Some(Arc::new(Durability {
                root,
                synced_dirs: Mutex::new(HashSet::new()),
            })),
        }
    }

    /// A put through `LocalFileSystem`: with `fsync=true`, an object found already there is
    /// synced before it is reported (it may be one a crash left unsynced, or one stored
    /// without the option), so that what counts as stored is on the disk.
    async fn put_through_inner(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let put = self.inner.put_opts(location, joined(payload), opts).await;
        let Some(sync) = self.sync.clone() else {
            return put;
        };
        let dest = self.inner.path_to_filesystem(location)?;
        match put {
            Err(object_store::Error::AlreadyExists { path, source }) => {
                let job = move || sync.make_durable(&dest, false).map_err(|e| (e, dest));
                match blocking(job).await? {
                    Ok(()) => Err(object_store::Error::AlreadyExists { path, source }),
                    Err((e, dest)) => Err(not_synced(&dest, e)),
                }
            }
            // Synced by `LocalFileSystem`, which syncs only the directories it created
            // itself: the unnamed-file attempt before may have created them.
            Ok(done) => {
                let job = move || sync.make_durable(&dest, true).map_err(|e| (e, dest));
                match blocking(job).await? {
                    Ok(()) => Ok(done),
                    Err((e, dest)) => Err(not_synced(&dest, e)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs `job` on tokio's blocking pool (inline outside a runtime).
async fn blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime
            .spawn_blocking(job)
            .await
            .map_err(|source| object_store::Error::JoinError { source }),
        Err(_) => Ok(job()),
    }
}

/// An object that could not be synced to the disk with `fsync=true`: a put that failed, and
/// not an ambiguous one (nothing is named that is not synced), so it is tried again.
#[derive(Debug)]
pub(crate) struct NotSynced {
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for NotSynced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} could not be synced to the disk (fsync=true): {}",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for NotSynced {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn not_synced(path: &FsPath, source: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(NotSynced {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether a put failed because its object could not be synced ([`NotSynced`]).
pub(crate) fn is_not_synced(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<NotSynced>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// `fsync=true`: the sink's root, above which nothing is synced, and the directories whose
/// entries in their parents are known to be on the disk.
#[derive(Debug)]
struct Durability {
    root: PathBuf,
    synced_dirs: Mutex<HashSet<PathBuf>>,
}

impl Durability {
    /// After a put: syncs `dest`'s directory (its new entry), and each directory above it
    /// not synced before, up to the root (their entries for new subdirectories, which this
    /// put may have created). `file_synced` says whether the file's own data already is
    /// (else it is synced first).
    fn make_durable(&self, dest: &FsPath, file_synced: bool) -> io::Result<()> {
        if !file_synced {
            File::open(dest)?.sync_all()?;
        }
        let Some(dir) = dest.parent() else {
            return Ok(());
        };
        File::open(dir)?.sync_all()?;
        // From the top down, so that a directory is known only once those above it are.
        let below_root: Vec<&FsPath> = (dir.ancestors())
            .take_while(|d| *d != self.root.as_path())
            .collect();
        for sub in below_root.into_iter().rev() {
            let known = (self.synced_dirs.lock())
                .map(|set| set.contains(sub))
                .unwrap_or(false);
            if known {
                continue;
            }
            if let Some(parent) = sub.parent() {
                File::open(parent)?.sync_all()?;
            }
            if let Ok(mut set) = self.synced_dirs.lock() {
                set.insert(sub.to_path_buf());
            }
        }
        Ok(())
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// What became of an attempt to create an object as an unnamed file.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum Created {
    /// Written and linked; the ETag `LocalFileSystem` would report for it.
    Done(String),
    /// The name was taken; nothing was written under it (with `fsync=true`, the object
    /// there is synced).
    Exists(io::Error),
    /// With `fsync=true`: the object could not be synced, and has no name.
    NotSynced(io::Error),
    /// This system cannot do it; nothing was written.
    Unsupported,
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let plain_create = matches!(opts.mode, PutMode::Create) && opts.attributes.is_empty();
        if !plain_create || !self.unnamed.load(Ordering::Relaxed) {
            return self.put_through_inner(location, payload, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        let parts = payload.clone();
        let sync = self.sync.clone();
        let job = move || create_unnamed(&dest, &parts, sync.as_deref()).map(|c| (c, dest));
        match blocking(job).await? {
            Ok((Created::Done(e_tag), _)) => Ok(PutResult {
                e_tag: Some(e_tag),
                version: None,
                extensions: Default::default(),
            }),
            Ok((Created::Exists(source), dest)) => Err(object_store::Error::AlreadyExists {
                path: dest.display().to_string(),
                source: Box::new(source),
            }),
            Ok((Created::NotSynced(source), dest)) => Err(not_synced(&dest, source)),
            Ok((Created::Unsupported, _)) => {
                self.unnamed.store(false, Ordering::Relaxed);
                tracing::debug!("no unnamed files here: local puts go through staging files");
                self.put_through_inner(location, payload, opts).await
            }
            Err(source) => Err(object_store::Error::Generic {
                store: STORE,
                source: Box::new(source),
            }),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// The payload in one part: `LocalFileSystem` writes part by part.
fn joined(payload: PutPayload) -> PutPayload {
    if payload.iter().count() <= 1 {
        payload
    } else {
        PutPayload::from_bytes(Bytes::from(payload))
    }
}

/// Writes `payload` into an unnamed file in `dest`'s directory (created if missing) and
/// links it at `dest`; with `sync`, the data is on the disk before the name is, and the
/// name before this returns.
#[cfg(target_os = "linux")]
fn create_unnamed(
    dest: &FsPath,
    payload: &PutPayload,
    sync: Option<&Durability>,
) -> io::Result<Created> {
    use std::os::unix::fs::OpenOptionsExt;

    let Some(dir) = dest.parent() else {
        return Ok(Created::Unsupported);
    };
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .mode(file_mode())
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
    };
    let opened = match open() {
        // The directory is looked up before O_TMPFILE is tried: create it, then see.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            open()
        }
        other => other,
    };
    // No O_TMPFILE in this file system (EOPNOTSUPP) or kernel (EISDIR, EINVAL).
    let unsupported = [libc::EOPNOTSUPP, libc::EISDIR, libc::EINVAL];
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error().is_some_and(|n| unsupported.contains(&n)) => {
            return Ok(Created::Unsupported);
        }
        Err(e) => return Err(e),
    };
    Payload::from_parts(payload.iter().cloned()).write_to(&mut file)?;
    if sync.is_some()
        && let Err(e) = file.sync_data()
    {
        return Ok(Created::NotSynced(e));
    }
    let e_tag = etag(&file.metadata()?);
    match (link(&file, dest)?, sync) {
        (Linked::Yes, None) => Ok(Created::Done(e_tag)),
        (Linked::Yes, Some(sync)) => match sync.make_durable(dest, true) {
            Ok(()) => Ok(Created::Done(e_tag)),
            Err(e) => {
                // Unnamed again, so that the retry writes it anew: after a failed sync the
                // kernel may report the next one of the same pages as clean.
                if let Err(removing) = std::fs::remove_file(dest) {
                    tracing::warn!(
                        object = %dest.display(),
                        error = %removing,
                        "an object that could not be synced could not be removed either"
                    );
                }
                Ok(Created::NotSynced(e))
            }
        },
        (Linked::Exists(e), None) => Ok(Created::Exists(e)),
        // Stored before without syncing (another run, a crash between link and sync): on the
        // disk before it counts.
        (Linked::Exists(e), Some(sync)) => match sync.make_durable(dest, false) {
            Ok(()) => Ok(Created::Exists(e)),
            Err(e) => Ok(Created::NotSynced(e)),
        },
        (Linked::Unsupported, _) => Ok(Created::Unsupported),
    }
}

/// The mode of a new object file: 0666 less the process's umask, as `LocalFileSystem`'s
/// files get. Passed explicitly because kernels before 6.0 do not apply the umask to
/// `O_TMPFILE` files on file systems without POSIX ACLs.
#[cfg(target_os = "linux")]
fn file_mode() -> u32 {
    static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
            })
            .unwrap_or(0o022);
        0o666 & !umask
    })
}

#[cfg(not(target_os = "linux"))]
fn create_unnamed(
    _dest: &FsPath,
    _payload: &PutPayload,
    _sync: Option<&Durability>,
) -> io::Result<Created> {
    Ok(Created::Unsupported)
}

#[cfg(target_os = "linux")]
enum Linked {
    Yes,
    Exists(io::Error),
    Unsupported,
}

/// Gives the unnamed `file` the name `dest`: through its `/proc/self/fd` link, which needs
/// no privilege, or where `/proc` is missing by descriptor (`AT_EMPTY_PATH`, privileged on
/// older kernels). A failure that says the system cannot do this is `Unsupported`:
/// `LocalFileSystem` then tries, and reports what is really wrong if anything is.
#[cfg(target_os = "linux")]
fn link(file: &File, dest: &FsPath) -> io::Result<Linked> {
    use rustix::fs::{AtFlags, CWD, linkat};
    use rustix::io::Errno;
    use std::os::fd::AsRawFd;

    let proc_fd = FsPath::new("/proc/self/fd");
    let result = if proc_fd.is_dir() {
        let path = proc_fd.join(file.as_raw_fd().to_string());
        linkat(CWD, &path, CWD, dest, AtFlags::SYMLINK_FOLLOW)
    } else {
        linkat(file, "", CWD, dest, AtFlags::EMPTY_PATH)
    };
    match result {
        Ok(()) => Ok(Linked::Yes),
        Err(Errno::EXIST) => Ok(Linked::Exists(io::Error::from(Errno::EXIST))),
        Err(
            Errno::NOENT
            | Errno::PERM
            | Errno::ACCESS
            | Errno::XDEV
            | Errno::OPNOTSUPP
            | Errno::INVAL,
        ) => Ok(Linked::Unsupported),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(target_os = "linux")]
/// The ETag `LocalFileSystem` reports for a file (inode, modification time in
/// microseconds, size), so that an object reads back with the ETag its put returned.
fn etag(metadata: &Metadata) -> String {
    use std::os::unix::fs::MetadataExt;

    let mtime = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{mtime:x}-{:x}\"", metadata.ino(), metadata.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn store(dir: &FsPath, unnamed: bool) -> LocalStore {
        let store = LocalStore::new(LocalFileSystem::new_with_prefix(dir).expect("store"));
        store.unnamed.store(unnamed, Ordering::Relaxed);
        store
    }

    fn parts() -> PutPayload {
        let parts: Vec<Bytes> = (0..3000u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 100 + (i as usize % 7)]))
            .collect();
        parts.into_iter().collect()
    }

    fn names(dir: &FsPath) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    async fn create_only(unnamed: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path(), unnamed);
        let location = Path::from("cam/2026/01/01/a.mp4");
        let payload = parts();
        let create = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };

        // 3000 parts (more than one writev takes), into directories that do not exist yet.
        let put = store
            .put_opts(&location, payload.clone(), create())
            .await
            .expect("put");
        let got = store.get(&location).await.expect("get");
        assert_eq!(
            put.e_tag, got.meta.e_tag,
            "the put's ETag is the one reads report"
        );
        assert_eq!(got.bytes().await.expect("bytes"), Bytes::from(payload));

        // The name is taken: refused, and the object keeps its content.
        let err = store
            .put_opts(&location, PutPayload::from_static(b"other"), create())
            .await
            .expect_err("create-only");
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err}"
        );
        let again = store.get(&location).await.expect("get").bytes().await;
        assert_eq!(again.expect("bytes").len(), parts().content_length());

        // No staging names left behind, and an overwrite still works (LocalFileSystem's).
        let day = dir.path().join("cam/2026/01/01");
        assert_eq!(names(&day), ["a.mp4"]);
        let overwrite = PutOptions {
            mode: PutMode::Overwrite,
            ..PutOptions::default()
        };
        store
            .put_opts(&location, PutPayload::from_static(b"new"), overwrite)
            .await
            .expect("overwrite");
        let new = store.get(&location).await.expect("get").bytes().await;
        assert_eq!(&new.expect("bytes")[..], b"new");
        assert_eq!(names(&day), ["a.mp4"]);
    }

    #[tokio::test]
    async fn unnamed_file_puts_are_create_only_and_complete() {
        create_only(true).await;
    }

    #[tokio::test]
    async fn the_staging_file_fallback_behaves_the_same() {
        create_only(false).await;
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn puts_write_unnamed_files_and_report_real_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("sub/x.json");
        let created = create_unnamed(&dest, &PutPayload::from_static(b"{}"), None).expect("create");
        assert!(
            matches!(created, Created::Done(_)),
            "tmpfs and ext4 have O_TMPFILE"
        );
        assert_eq!(std::fs::read(&dest).expect("read"), b"{}");
        // The mode any other new file gets here (0666 less the umask).
        use std::os::unix::fs::PermissionsExt;
        let reference = dir.path().join("reference");
        std::fs::write(&reference, b"").expect("reference file");
        let mode = |p: &FsPath| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dest), mode(&reference));
        let exists = create_unnamed(&dest, &PutPayload::from_static(b"[]"), None).expect("create");
        assert!(matches!(exists, Created::Exists(_)));

        // A file where a directory should be is an error, not "unsupported".
        let under_file = dest.join("y.json");
        let err = create_unnamed(&under_file, &PutPayload::from_static(b"{}"), None);
        assert!(err.is_err(), "a file as the parent directory must fail");
        assert_eq!(names(&dir.path().join("sub")), ["x.json"]);
        assert_eq!(file_mode(), mode(&reference));
    }
}
