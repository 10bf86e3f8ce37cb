/// Errors raised by sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The sink URL cannot be used.
    #[error("invalid sink URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (never contains credentials: sink URLs carry none).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--sink-opt` is malformed or unknown to the store.
    #[error("sink option {key:?}: {reason}")]
    InvalidOption {
        /// The option's key (never its value: values may be secrets).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The store cannot be configured from the URL, options and environment (e.g. a
    /// malformed credentials file).
    #[error("cannot configure the {backend} sink {url}: {reason}")]
    Configuration {
        /// The URL as given.
        url: String,
        /// Which store.
        backend: crate::Backend,
        /// object_store's explanation.
        reason: String,
    },
    /// The store refused our credentials, or they are missing.
    #[error(
        "the {backend} sink {url} has no usable credentials or refused them: {source} \
         (check the environment variables or --sink-opt keys for this store)"
    )]
    Credentials {
        /// The URL as given.
        url: String,
        /// Which store.
        backend: crate::Backend,
        /// The store's answer.
        source: object_store::Error,
    },
    /// The bucket or container does not exist.
    #[error("the {backend} bucket or container of {url} does not exist: {source}")]
    NoBucket {
        /// The URL as given.
        url: String,
        /// Which store.
        backend: crate::Backend,
        /// The store's answer.
        source: object_store::Error,
    },
    /// The store did not answer (network, DNS, endpoint down).
    #[error("the {backend} sink {url} cannot be reached: {source}")]
    Unreachable {
        /// The URL as given.
        url: String,
        /// Which store.
        backend: crate::Backend,
        /// The store's answer.
        source: object_store::Error,
    },
    /// The store holds an object whose content differs from what we sent (its MD5 ETag
    /// does not match ours, nor does its content read back): the upload was damaged on the
    /// way.
    #[error(
        "object {path} in {sink} does not match what was sent (ETag {etag}, our SHA-256 \
         {ours}); it was left in place and the chunk set aside in the spool's conflicts/"
    )]
    Damaged {
        /// Sink URL.
        sink: String,
        /// Object path.
        path: String,
        /// The ETag the store returned.
        etag: String,
        /// SHA-256 of what we sent.
        ours: String,
    },
    /// The sink location cannot be written.
    #[error("sink {location} is not writable: {source}")]
    Unwritable {
        /// Where we tried to write.
        location: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A write to the store failed.
    #[error("uploading {path} to {sink} failed: {}", put_reason(.sink, .source))]
    Put {
        /// Sink URL.
        sink: String,
        /// Object path.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// Listing or reading the store failed.
    #[error("reading {path} from {sink} failed: {source}")]
    Read {
        /// Sink URL.
        sink: String,
        /// Object path or prefix.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The manifest of the same chunk already exists at the path, but signed by another key
    /// or not signed where this run signs (or the reverse): a re-run with another
    /// `--signing-key` would otherwise report success and leave the stored manifest as it
    /// was. It was not overwritten.
    #[error(
        "manifest {path} in {sink} already exists for the same chunk but is {theirs}, while \
         this run's is {ours}; it was left untouched: run again with the key that signed it \
         (or with none, if it is unsigned) to complete the set, or use another --source-id or \
         sink"
    )]
    SignedOtherwise {
        /// Sink URL.
        sink: String,
        /// Manifest object path.
        path: String,
        /// How the stored manifest is signed, in words (`unsigned`, `signed with ed25519
        /// key …`).
        theirs: String,
        /// How this run's manifest is signed, in words.
        ours: String,
    },
    /// An object with different content already exists at the path; it was not overwritten.
    #[error(
        "object {path} in {sink} already exists with different content \
         (sha256 {existing}, ours {ours}); it was left untouched"
    )]
    Conflict {
        /// Sink URL.
        sink: String,
        /// Object path.
        path: String,
        /// SHA-256 of the object found.
        existing: String,
        /// SHA-256 of our object.
        ours: String,
    },
}

impl SinkError {
    /// True when trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        !self.is_permanent()
    }

    /// True for a local directory's error that lasts until someone acts (permission denied,
    /// a read-only file system, a file where a folder should be): see
    /// [`crispy_core::ChunkSink::is_lasting`].
    pub fn is_lasting(&self) -> bool {
        match self {
            SinkError::Put { sink, source, .. } => {
                is_local(sink) && io_error_in(source).is_some_and(io_error_lasts)
            }
            SinkError::Unwritable { source, .. } => io_error_lasts(source),
            _ => false,
        }
    }

    /// True when retrying cannot help: a conflicting or damaged object, a malformed name or
    /// sink. Network failures, outages and refused credentials (which may be renewed) are
    /// not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            SinkError::Put { source, .. } => matches!(
                source,
                object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            SinkError::Conflict { .. }
            | SinkError::SignedOtherwise { .. }
            | SinkError::Damaged { .. }
            | SinkError::InvalidUrl { .. }
            | SinkError::InvalidOption { .. }
            | SinkError::Configuration { .. } => true,
            SinkError::Unwritable { .. }
            | SinkError::Read { .. }
            | SinkError::Credentials { .. }
            | SinkError::NoBucket { .. }
            | SinkError::Unreachable { .. } => false,
        }
    }
}

/// The operating system's error behind a store's error, if any (local directories): the
/// first `std::io::Error` in its chain of sources.
fn io_error_in(error: &object_store::Error) -> Option<&std::io::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = e.source();
    }
    None
}

/// Whether `sink` (a sink URL as shown) is a local directory: an operating-system error
/// there is the directory's, where a network store's would be its connection's.
fn is_local(sink: &str) -> bool {
    sink.starts_with("file://") || !sink.contains("://")
}

/// Local file-system errors that stay until someone acts: permissions, a read-only mount, a
/// file where a folder should be (or the reverse), a name too long or looping.
fn io_error_lasts(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| {
        [
            libc::EACCES,
            libc::EPERM,
            libc::EROFS,
            libc::ENOTDIR,
            libc::EISDIR,
            libc::ENAMETOOLONG,
            libc::ELOOP,
        ]
        .contains(&code)
    })
}

/// Why a put failed, in words: a put can only be "not found" when the bucket or container is
/// missing, which object_store words as the object not being found.
fn put_reason(sink: &str, source: &object_store::Error) -> String {
    match source {
        object_store::Error::NotFound { .. } => {
            format!("the bucket or container does not exist (create it; {source})")
        }
        other if !is_local(sink) => other.to_string(),
        other => match io_error_in(other).filter(|e| io_error_lasts(e)) {
            Some(io) if io.raw_os_error() == Some(libc::ENOTDIR) => format!(
                "the directory cannot be written: {io} (a file stands where one of its folders \
                 should be)"
            ),
            Some(io) => format!("the directory cannot be written: {io}"),
            None => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_that_finds_no_bucket_says_so() {
        let e = SinkError::Put {
            sink: "s3://footage/site".to_owned(),
            path: "site/cam/2026/01/01/x.mp4".to_owned(),
            source: object_store::Error::NotFound {
                path: "site/cam/2026/01/01/x.mp4".to_owned(),
                source: "<Code>NoSuchBucket</Code>".into(),
            },
        };
        let text = e.to_string();
        assert!(
            text.contains("the bucket or container does not exist"),
            "{text}"
        );
        assert!(!e.is_permanent(), "the bucket may still be created");
        let other = SinkError::Put {
            sink: "s3://footage/site".to_owned(),
            path: "x".to_owned(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "connection reset".into(),
            },
        };
        assert!(!other.to_string().contains("does not exist"));
    }

    #[test]
    fn only_a_local_directory_has_lasting_errors() {
        let put = |sink: &str, errno: i32| SinkError::Put {
            sink: sink.to_owned(),
            path: "cam/x.mp4".to_owned(),
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::from_raw_os_error(errno)),
            },
        };
        for sink in ["file:///srv/footage", "footage", "./out"] {
            let e = put(sink, libc::EACCES);
            assert!(e.is_lasting(), "{sink}");
            assert!(
                e.to_string().contains("the directory cannot be written"),
                "{e}"
            );
            assert!(!e.is_permanent());
            // Space comes back by itself: retried.
            assert!(!put(sink, libc::ENOSPC).is_lasting(), "{sink}");
        }
        // A network store's connection refused by a firewall rule is no directory's.
        for sink in [
            "s3://footage/site",
            "gs://footage",
            "az://c/p",
            "memory://m",
        ] {
            let e = put(sink, libc::EACCES);
            assert!(!e.is_lasting(), "{sink}");
            assert!(!e.to_string().contains("directory"), "{e}");
        }
    }
}
