use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use crispy_core::{Chunk, ChunkMetadata, ChunkSink, PutOutcome, SourceId};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use crate::{SinkError, chunk_object_path, manifest_path_for};

/// A sink writing chunks and manifests to any `object_store` backend.
#[derive(Debug, Clone)]
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    display: String,
    local_dir: Option<PathBuf>,
    attributes: bool,
}

impl ObjectStoreSink {
    /// A sink over `store`, writing under `prefix`. `display` names it in logs and errors.
    /// `attributes` says whether the store accepts object metadata attributes.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        display: impl Into<String>,
        attributes: bool,
    ) -> Result<Self, SinkError> {
        let display = display.into();
        let prefix = clean_prefix(prefix, &display)?;
        Ok(Self {
            store,
            prefix,
            display,
            local_dir: None,
            attributes,
        })
    }

    /// Opens a sink from a URL: `file:///abs/dir`, `file://./relative/dir`, a plain directory
    /// path, or `memory://[name/]prefix`. Local directories are created if missing.
    pub fn from_url(url: &str) -> Result<Self, SinkError> {
        Self::open_url(url, true)
    }

    /// Like [`Self::from_url`] for reading back (`crispy verify`): a local directory must
    /// already exist.
    pub fn from_url_existing(url: &str) -> Result<Self, SinkError> {
        Self::open_url(url, false)
    }

    fn open_url(url: &str, create: bool) -> Result<Self, SinkError> {
        let invalid = |reason: &str| SinkError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("memory://") {
            // The first segment names the in-memory "bucket"; the rest is the prefix.
            let prefix = rest.split_once('/').map_or("", |(_, p)| p);
            return Self::new(Arc::new(InMemory::new()), prefix, url, true);
        }
        let dir = if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(invalid("no directory after file://"));
            }
            PathBuf::from(rest)
        } else if url.contains("://") {
            let scheme = url.split("://").next().unwrap_or_default();
            return Err(invalid(&format!(
                "scheme {scheme}:// is not supported by this build (supported: file://, memory://)"
            )));
        } else if url.is_empty() {
            return Err(invalid("empty"));
        } else {
            PathBuf::from(url)
        };
        if !create && !dir.is_dir() {
            return Err(SinkError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("{} is not a directory", dir.display()),
            });
        }
        Self::local(&dir, url)
    }

    /// A sink writing into the local directory `dir` (created if missing).
    pub fn local(dir: &FsPath, display: &str) -> Result<Self, SinkError> {
        let unwritable = |source| SinkError::Unwritable {
            location: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let dir = std::fs::canonicalize(dir).map_err(unwritable)?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| SinkError::InvalidUrl {
            url: display.to_owned(),
            reason: e.to_string(),
        })?;
        let mut sink = Self::new(Arc::new(store), "", display, false)?;
        sink.local_dir = Some(dir);
        Ok(sink)
    }

    /// Checks, before any reading starts, that the sink can be written.
    ///
    /// Local directories get a real test write; other stores are checked by their first put.
    pub async fn preflight(&self) -> Result<(), SinkError> {
        if let Some(dir) = &self.local_dir {
            let probe = dir.join(format!(".crispy-write-test-{}", std::process::id()));
            let result = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
            result.map_err(|source| SinkError::Unwritable {
                location: dir.display().to_string(),
                source,
            })?;
        }
        Ok(())
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
        let prefix = (!dir.is_empty()).then(|| Path::from(dir));
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| self.read_err(dir, e))?;
        let mut dirs: Vec<String> = listing
            .common_prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut objects: Vec<String> = listing
            .objects
            .iter()
            .map(|m| m.location.to_string())
            .collect();
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

    /// Puts `payload` at `path` only if nothing is there; an identical object already there
    /// is success, a different one a [`SinkError::Conflict`].
    async fn put_once(
        &self,
        path: &str,
        payload: Bytes,
        attributes: Attributes,
    ) -> Result<PutOutcome, SinkError> {
        let location = Path::parse(path).map_err(|e| self.put_err(path, e.into()))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes: if self.attributes {
                attributes
            } else {
                Attributes::new()
            },
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&location, PutPayload::from_bytes(payload.clone()), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) if path.ends_with(".json") => {
                // A manifest: the same chunk (its `sha256`) means the same upload, even when
                // the manifest was re-signed since.
                let existing = self
                    .get(path)
                    .await?
                    .and_then(|b| serde_json::from_slice::<ChunkMetadata>(&b).ok());
                let ours = serde_json::from_slice::<ChunkMetadata>(&payload).ok();
                match (existing, ours) {
                    (Some(e), Some(o)) if e.sha256 == o.sha256 && e.object == o.object => {
                        Ok(PutOutcome::AlreadyPresent)
                    }
                    (e, _) => Err(SinkError::Conflict {
                        sink: self.display.clone(),
                        path: path.to_owned(),
                        existing: e.map_or_else(|| "unreadable".to_owned(), |e| e.sha256),
                        ours: crispy_signer::sha256_hex(&payload),
                    }),
                }
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self
                    .store
                    .get(&location)
                    .await
                    .map_err(|e| self.put_err(path, e))?
                    .bytes()
                    .await
                    .map_err(|e| self.put_err(path, e))?;
                let (theirs, ours) = (
                    crispy_signer::sha256_hex(&existing),
                    crispy_signer::sha256_hex(&payload),
                );
                if theirs == ours {
                    Ok(PutOutcome::AlreadyPresent)
                } else {
                    Err(SinkError::Conflict {
                        sink: self.display.clone(),
                        path: path.to_owned(),
                        existing: theirs,
                        ours,
                    })
                }
            }
            Err(e) => Err(self.put_err(path, e)),
        }
    }
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
fn chunk_attributes(m: &ChunkMetadata, content_type: &'static str) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, content_type.into());
    let meta = [
        ("crispy-schema", m.schema.clone()),
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
        ("crispy-sha256", m.sha256.clone()),
    ];
    for (k, v) in meta {
        a.insert(Attribute::Metadata(k.into()), v.into());
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
            a.insert(Attribute::Metadata(k.into()), v.into());
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
    ) -> Result<Option<ChunkMetadata>, SinkError> {
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
                        match serde_json::from_slice::<ChunkMetadata>(&bytes) {
                            Ok(m) if m.source_id == *source_id => return Ok(Some(m)),
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

    async fn put(&self, chunk: &Chunk, manifest: Bytes) -> Result<PutOutcome, SinkError> {
        let m = &chunk.metadata;
        let chunk_outcome = self
            .put_once(
                &m.object,
                chunk.payload.clone(),
                chunk_attributes(m, "video/mp4"),
            )
            .await?;
        // The manifest goes last: its presence means the chunk is complete.
        let manifest_outcome = self
            .put_once(
                &manifest_path_for(&m.object),
                manifest,
                chunk_attributes(m, "application/json"),
            )
            .await?;
        Ok(match (chunk_outcome, manifest_outcome) {
            (PutOutcome::AlreadyPresent, PutOutcome::AlreadyPresent) => PutOutcome::AlreadyPresent,
            _ => PutOutcome::Created,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(ObjectStoreSink::from_url("file://").is_err());
        assert!(ObjectStoreSink::from_url("").is_err());
        assert!(ObjectStoreSink::from_url("memory://b/ok/prefix").is_ok());
    }
}
