use chrono::{DateTime, Datelike, Utc};
use crispy_core::SourceId;

/// The start time in object names: `yyyymmddTHHMMSS.mmmZ`.
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";

/// The object path of a chunk: `<prefix>/<source>/<yyyy>/<mm>/<dd>/<start>-<seq:08>.mp4`.
///
/// Names sort by time, then sequence; `start` is `yyyymmddTHHMMSS.mmmZ` (no `:` so the names
/// are safe on every file system). `source_id` is validated, so no name escapes `prefix`.
pub fn chunk_object_path(
    prefix: &str,
    source_id: &SourceId,
    start: DateTime<Utc>,
    sequence: u64,
) -> String {
    let day = format!(
        "{:04}/{:02}/{:02}",
        start.year(),
        start.month(),
        start.day()
    );
    let stamp = start.format(STAMP);
    let name = format!("{source_id}/{day}/{stamp}-{sequence:08}.mp4");
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The start time in an object's name (`…/20261124T101500.000Z-00000042.mp4`, as
/// [`chunk_object_path`] writes it), if it has one.
pub fn object_start(path: &str) -> Option<DateTime<Utc>> {
    let name = path.rsplit('/').next()?;
    let (stamp, _) = name.split_once('-')?;
    chrono::NaiveDateTime::parse_from_str(stamp, STAMP)
        .ok()
        .map(|t| t.and_utc())
}

/// The source id in an object's path (`[prefix/]<source>/yyyy/mm/dd/<start>-<seq>.mp4`, as
/// [`chunk_object_path`] writes it), if the path has that shape.
pub fn object_source(path: &str) -> Option<SourceId> {
    object_start(path)?;
    let segments: Vec<&str> = path.split('/').collect();
    let at = segments.len().checked_sub(5)?;
    segments.get(at)?.parse().ok()
}

/// Whether `path` can name an object: no empty segment, no `.`/`..`, no control character
/// (a manifest's `object` comes from whoever wrote the sink).
pub fn is_object_path(path: &str) -> bool {
    object_store::path::Path::parse(path).is_ok() && !path.is_empty()
}

/// The manifest path beside a chunk: the chunk path with `.json` in place of its extension.
pub fn manifest_path_for(chunk_path: &str) -> String {
    match chunk_path.rsplit_once('.') {
        Some((stem, ext)) if !ext.contains('/') => format!("{stem}.json"),
        _ => format!("{chunk_path}.json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_are_deterministic_and_sortable() {
        let id = SourceId::new("cam-1").expect("valid");
        let t = Utc
            .with_ymd_and_hms(2026, 3, 7, 9, 5, 2)
            .single()
            .expect("valid")
            + chrono::Duration::milliseconds(45);
        let p = chunk_object_path("cctv/site", &id, t, 12);
        assert_eq!(
            p,
            "cctv/site/cam-1/2026/03/07/20260307T090502.045Z-00000012.mp4"
        );
        assert_eq!(
            manifest_path_for(&p),
            "cctv/site/cam-1/2026/03/07/20260307T090502.045Z-00000012.json"
        );
        assert_eq!(
            chunk_object_path("", &id, t, 0),
            "cam-1/2026/03/07/20260307T090502.045Z-00000000.mp4"
        );
        let later = chunk_object_path("", &id, t + chrono::Duration::seconds(3), 1);
        assert!(later > chunk_object_path("", &id, t, 0));
        // Read back from the path, with or without a prefix.
        assert_eq!(object_source(&p), Some(id.clone()));
        assert_eq!(object_source(&later), Some(id));
        assert_eq!(object_source("20260307T090502.045Z-00000000.mp4"), None);
        assert_eq!(object_source("cam-1/2026/03/07/notes.txt"), None);
    }
}
