/// Errors raised while validating crispy-core values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A source id that is empty, too long, holds characters outside `[A-Za-z0-9_-]` or starts
    /// with `-`.
    #[error(
        "invalid source id \"{shown}\": {reason} (allowed: 1 to 64 of A-Z a-z 0-9 _ -, not starting with -)"
    )]
    InvalidSourceId {
        /// The offending id, shortened and with control characters escaped.
        shown: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A chunk duration that could not be parsed or is out of range.
    #[error("invalid duration {input:?}: {reason} (examples: 3s, 1500ms, 2.5s, 1m)")]
    InvalidDuration {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
