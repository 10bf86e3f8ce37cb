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
    /// The sink location cannot be written.
    #[error("sink {location} is not writable: {source}")]
    Unwritable {
        /// Where we tried to write.
        location: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A write to the store failed.
    #[error("uploading {path} to {sink} failed: {source}")]
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
        match self {
            SinkError::Put { source, .. } => !matches!(
                source,
                object_store::Error::NotImplemented { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::InvalidPath { .. }
            ),
            _ => false,
        }
    }
}
