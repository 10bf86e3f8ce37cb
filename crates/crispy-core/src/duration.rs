use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// A requested chunk length, whole milliseconds from 1 ms to 24 h.
///
/// Parses human text: `3s`, `1500ms`, `2.5s`, `1m`, `0.5m`, `1h`. A bare number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkDuration(u64);

impl ChunkDuration {
    /// Longest accepted duration: one day.
    pub const MAX_MS: u64 = 24 * 3600 * 1000;

    /// A duration of `ms` milliseconds; `None` when zero or above [`Self::MAX_MS`].
    pub fn from_millis(ms: u64) -> Option<Self> {
        (1..=Self::MAX_MS).contains(&ms).then_some(Self(ms))
    }

    /// The duration in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// The duration as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl Default for ChunkDuration {
    /// Three seconds.
    fn default() -> Self {
        Self(3000)
    }
}

impl FromStr for ChunkDuration {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let ms = parse_millis(input)?;
        Self::from_millis(ms).ok_or_else(|| Error::InvalidDuration {
            input: input.chars().take(40).collect(),
            reason: if ms == 0 {
                "must be longer than zero"
            } else {
                "longer than 24h"
            },
        })
    }
}

/// Parses a human duration (`3s`, `1500ms`, `2.5s`, `1m`, `1h`, `7d`; a bare number is
/// seconds) into whole milliseconds, with no bound but `u64`'s: the grammar of
/// [`ChunkDuration`], for durations that may be longer than a day (a signed URL's lifetime).
pub fn parse_millis(input: &str) -> Result<u64, Error> {
    let err = |reason| Error::InvalidDuration {
        input: input.chars().take(40).collect(),
        reason,
    };
    let s = input.trim();
    if s.starts_with('-') {
        return Err(err("negative"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" | "sec" | "secs" => 1000,
        "m" | "min" | "mins" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err("unknown unit")),
    };
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(err("not a number"));
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| err("not a number"))?
    };
    // Fractional part in millionths of the unit, enough for whole milliseconds of any unit.
    let mut micro_units: u64 = 0;
    for (i, c) in frac.chars().enumerate() {
        let digit = u64::from(c.to_digit(10).ok_or_else(|| err("not a number"))?);
        if i < 6 {
            micro_units += digit * 10u64.pow(5 - i as u32);
        }
    }
    let frac_ms_x1e6 = micro_units * scale_ms;
    if !frac_ms_x1e6.is_multiple_of(1_000_000) {
        return Err(err("finer than one millisecond"));
    }
    whole
        .checked_mul(scale_ms)
        .and_then(|v| v.checked_add(frac_ms_x1e6 / 1_000_000))
        .ok_or_else(|| err("too long"))
}

impl<'de> serde::Deserialize<'de> for ChunkDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChunkDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Result<u64, Error> {
        s.parse::<ChunkDuration>().map(ChunkDuration::as_millis)
    }

    #[test]
    fn parses_human_durations() {
        let cases = [
            ("3s", 3000),
            ("1500ms", 1500),
            ("2.5s", 2500),
            ("0.333s", 333),
            ("333ms", 333),
            ("1m", 60_000),
            ("0.5m", 30_000),
            ("1h", 3_600_000),
            ("4", 4000),
            (" 3 s ", 3000),
            (".5s", 500),
        ];
        for (text, want) in cases {
            assert_eq!(ms(text).ok(), Some(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in [
            "",
            "s",
            "0s",
            "-1s",
            "1.2.3s",
            "2.5ms",
            "3 fortnights",
            "25h",
            "1e3s",
        ] {
            assert!(ms(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn longer_durations_parse_with_days_and_say_what_is_wrong() {
        assert_eq!(parse_millis("7d").ok(), Some(7 * 86_400_000));
        assert_eq!(parse_millis("168h").ok(), Some(7 * 86_400_000));
        assert_eq!(parse_millis("0.5d").ok(), Some(43_200_000));
        assert_eq!(ms("1d").ok(), Some(86_400_000), "a chunk of a day");
        let reason = |text: &str| match text.parse::<ChunkDuration>() {
            Err(Error::InvalidDuration { reason, .. }) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(reason("-1s"), "negative");
        assert_eq!(reason("2d"), "longer than 24h");
        assert_eq!(reason("0"), "must be longer than zero");
    }

    #[test]
    fn displays_round_trip() {
        for text in ["3s", "1500ms", "333ms"] {
            let d: ChunkDuration = text.parse().expect("valid");
            assert_eq!(d.to_string(), text);
        }
    }
}
