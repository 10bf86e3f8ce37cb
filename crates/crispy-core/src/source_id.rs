use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Error;

/// Longest accepted source id, in bytes.
const MAX_LEN: usize = 64;

/// The identity of one camera or file: 1 to 64 characters of `[A-Za-z0-9_-]`.
///
/// The id becomes part of object paths, so it is validated on construction: it can never
/// contain a path separator, a dot segment, whitespace or a control character.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SourceId(String);

impl SourceId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > MAX_LEN {
            Some("it is longer than 64 characters")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Some("it contains a character that is not allowed")
        } else if id.starts_with('-') {
            // A directory named `-x` or `--help` reads as an option to every shell tool.
            Some("it starts with '-'")
        } else {
            None
        };
        match reason {
            None => Ok(Self(id)),
            Some(reason) => Err(Error::InvalidSourceId {
                shown: shorten(&id),
                reason,
            }),
        }
    }

    /// Derives a valid id from arbitrary text such as a file stem: disallowed characters become
    /// `_`, runs of them collapse, leading `-` and `_` go, and the result is cut to 64
    /// characters. Text with nothing usable (`ü`, `...`) gives `source-` and 8 hex digits of a
    /// hash of the text, so two such files still get different ids.
    pub fn sanitize(raw: &str) -> Self {
        let mut out = String::with_capacity(raw.len().min(MAX_LEN));
        for c in raw.chars() {
            let keep = c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if keep {
                out.push(c);
            } else if !out.ends_with('_') {
                out.push('_');
            }
            if out.len() >= MAX_LEN {
                break;
            }
        }
        let trimmed = out.trim_start_matches(['_', '-']).trim_end_matches('_');
        if trimmed.is_empty() {
            // FNV-1a: stable across builds and platforms, unlike std's hasher.
            let hash = raw.bytes().fold(0x811c_9dc5_u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            Self(format!("source-{hash:08x}"))
        } else {
            Self(trimmed.to_owned())
        }
    }

    /// The default id of a file: its sanitized stem (`Front door (2).mp4` → `Front_door_2`).
    pub fn from_file_stem(path: &std::path::Path) -> Self {
        Self::sanitize(
            &path
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default(),
        )
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shows at most 80 characters of a rejected id, with control characters escaped.
fn shorten(id: &str) -> String {
    // Printable characters as they are (`cámara`), control characters and quotes escaped.
    let mut s: String = id.chars().take(80).flat_map(char::escape_debug).collect();
    if id.chars().count() > 80 {
        s.push('…');
    }
    s
}

impl FromStr for SourceId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for SourceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SourceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for ok in ["a", "cam-01", "Lobby_Cam", &"x".repeat(64)] {
            assert_eq!(SourceId::new(ok).map(|s| s.0).ok().as_deref(), Some(ok));
        }
    }

    #[test]
    fn rejects_hostile_ids() {
        let long = "y".repeat(65);
        for bad in [
            "", "../x", "a/b", "%2e%2e", "a b", "a\u{0}b", "a\nb", ".", "..", "é", &long,
        ] {
            assert!(SourceId::new(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn error_escapes_control_characters() {
        let err = SourceId::new("a\u{1b}[31mred")
            .expect_err("rejected")
            .to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains("\\u{1b}"), "{err}");
        // Printable characters are shown as they are, escaped once.
        let err = SourceId::new("cámara").expect_err("rejected").to_string();
        assert!(err.contains("\"cámara\""), "{err}");
        let err = SourceId::new("a\"b").expect_err("rejected").to_string();
        assert!(err.contains("\"a\\\"b\""), "{err}");
    }

    #[test]
    fn sanitize_always_gives_valid_ids() {
        for raw in [
            "my video (1)",
            "../../etc/passwd",
            "",
            "...",
            "été",
            "--help",
            "-_-x",
            &"z".repeat(300),
        ] {
            let id = SourceId::sanitize(raw);
            assert!(SourceId::new(id.as_str()).is_ok(), "{raw:?} -> {id:?}");
        }
        assert_eq!(SourceId::sanitize("my video (1)").as_str(), "my_video_1");
        assert_eq!(
            SourceId::sanitize("../../etc/passwd").as_str(),
            "etc_passwd"
        );
        assert_eq!(SourceId::sanitize("--help").as_str(), "help");
        // Nothing usable: distinct texts still give distinct ids, the same text the same one.
        let (a, b) = (SourceId::sanitize("ü"), SourceId::sanitize("..."));
        assert!(a.as_str().starts_with("source-") && b.as_str().starts_with("source-"));
        assert_ne!(a, b);
        assert_eq!(SourceId::sanitize("ü"), a);
        assert!(SourceId::new("-cam").is_err() && SourceId::new("--help").is_err());
        assert!(SourceId::new("_cam").is_ok() && SourceId::new("cam-1").is_ok());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<SourceId>("\"cam1\"").is_ok());
        assert!(serde_json::from_str::<SourceId>("\"../cam1\"").is_err());
    }
}
