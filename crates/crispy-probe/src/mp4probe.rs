//! Facts about a finished MP4 chunk, read with the `mp4` crate's box parser.

use std::io::{Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;

use serde::Serialize;

use crate::{ProbeError, SpsProbe, SpsReport};

/// What an MP4 file's first video track says about itself: what `crispy verify` compares with
/// the manifest, and what `crispy probe` shows for MP4 input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mp4Report {
    /// `h264` (`avc1`, `avc3`) or `hevc` (`hvc1`, `hev1`); `null` for other sample entries.
    pub codec: Option<String>,
    /// Sample entry width (H.264/H.265), else the track header's.
    pub width: u32,
    /// Sample entry height, else the track header's.
    pub height: u32,
    /// Media timescale (ticks per second) of the track.
    pub timescale: u32,
    /// Track duration in `timescale` ticks (the media header's).
    pub duration_ts: u64,
    /// `duration_ts` in milliseconds, rounded to nearest.
    pub duration_ms: u64,
    /// Number of samples (frames).
    pub samples: u64,
    /// Samples the edit list shows: all of them, less a lead-in that one edit starting after
    /// the first sample hides (a file trimmed without re-encoding).
    pub shown: u64,
    /// What the edit list shows, in `timescale` ticks: `duration_ts`, or one edit's length.
    pub presented_ts: u64,
    /// Number of sync samples; every sample when the file has no sync-sample table.
    pub keyframes: u64,
    /// True when the first sample is a sync sample (the chunk can be decoded on its own).
    pub starts_with_keyframe: bool,
    /// The SPS of the `avcC` or `hvcC` record, read by [`SpsProbe`].
    pub sps: Option<SpsReport>,
}

/// Reads [`Mp4Report`]s from complete MP4 files, in memory or on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mp4Probe;

impl Mp4Probe {
    /// Parses `data` as an MP4 file and reports its first video track.
    ///
    /// Never panics: the `mp4` crate's own panics on hostile input (it has some) are
    /// contained and reported as [`ProbeError::BadMp4`].
    pub fn probe(data: &[u8]) -> Result<Mp4Report, ProbeError> {
        let bad = |reason: String| ProbeError::BadMp4 { reason };
        check_box_tree(data, 0).map_err(bad)?;
        let entry = video_sample_entry(data);
        Self::read(std::io::Cursor::new(data), data.len() as u64, entry)
    }

    /// Like [`Mp4Probe::probe`] for a file on disk: reads the box headers and the `moov` box,
    /// not the media data.
    pub fn probe_file(path: &std::path::Path) -> Result<Mp4Report, ProbeError> {
        let bad = |reason: String| ProbeError::BadMp4 { reason };
        let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let size = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        // The box tree check needs the header boxes in memory: everything but `mdat`.
        let mut headers = Vec::new();
        let mut at = 0u64;
        while at < size {
            let mut head = [0u8; 16];
            file.seek(SeekFrom::Start(at))
                .map_err(|e| bad(e.to_string()))?;
            let n = file.read(&mut head).map_err(|e| bad(e.to_string()))?;
            let (len, _) = box_size(&head[..n], size - at).map_err(bad)?;
            if &head[4..8] == b"mdat" {
                // Keep its header, with a size that still fits what follows.
                let mut fake = head[..8].to_vec();
                fake[..4].copy_from_slice(&8u32.to_be_bytes());
                headers.extend_from_slice(&fake);
            } else if len > 64 << 20 {
                return Err(bad(format!(
                    "a {len}-byte {} box: too large for a header box",
                    String::from_utf8_lossy(&head[4..8])
                )));
            } else {
                let mut boxed = vec![0u8; usize::try_from(len).map_err(|e| bad(e.to_string()))?];
                file.seek(SeekFrom::Start(at))
                    .map_err(|e| bad(e.to_string()))?;
                file.read_exact(&mut boxed)
                    .map_err(|e| bad(e.to_string()))?;
                headers.extend_from_slice(&boxed);
            }
            at += len;
        }
        Self::probe(&headers)
    }

    /// The facts the `mp4` crate reads; `entry` (the video track's sample entry, read by
    /// [`video_sample_entry`]) fills in what it does not know: `hvc1` and H.265 parameter sets.
    fn read<R: Read + Seek>(
        reader: R,
        size: u64,
        entry: Option<SampleEntry<'_>>,
    ) -> Result<Mp4Report, ProbeError> {
        let bad = |reason: String| ProbeError::BadMp4 { reason };
        // The `mp4` crate loops forever on boxes whose size is 0 or below their header (it
        // seeks back to the same header; found by `cargo xtask fuzz`). Every such loop does
        // I/O, so a budget of reads and seeks bounds it: a real file needs a few per box.
        let reader = Budgeted {
            inner: reader,
            ops_left: 4096 + size.min(1 << 24),
        };
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            mp4::Mp4Reader::read_header(reader, size)
        }));
        let reader = match parsed {
            Ok(Ok(reader)) => reader,
            Ok(Err(e)) => return Err(bad(e.to_string())),
            Err(_) => return Err(bad("the MP4 parser failed on it".to_owned())),
        };
        let mut tracks: Vec<_> = reader.tracks().values().collect();
        tracks.sort_by_key(|t| t.trak.tkhd.track_id);
        let track = tracks
            .into_iter()
            .find(|t| t.trak.mdia.hdlr.handler_type.value == *b"vide")
            .ok_or_else(|| bad("no video track".to_owned()))?;
        if !track.trafs.is_empty() {
            return Err(bad("fragmented MP4 is not a chunk".to_owned()));
        }
        let stbl = &track.trak.mdia.minf.stbl;
        let mdhd = &track.trak.mdia.mdhd;
        if mdhd.timescale == 0 {
            return Err(bad("the media timescale is 0".to_owned()));
        }
        let hevc = entry.as_ref().filter(|e| e.is_hevc());
        let (codec, width, height) = if let Some(avc1) = &stbl.stsd.avc1 {
            (Some("h264"), avc1.width, avc1.height)
        } else if let Some(hev1) = &stbl.stsd.hev1 {
            (Some("hevc"), hev1.width, hev1.height)
        } else if let Some(e) = hevc {
            (Some("hevc"), e.width, e.height)
        } else {
            let tkhd = &track.trak.tkhd;
            (None, tkhd.width.value(), tkhd.height.value())
        };
        let samples = u64::from(stbl.stsz.sample_count);
        let (keyframes, starts_with_keyframe) = match &stbl.stss {
            Some(stss) => (stss.entries.len() as u64, stss.entries.first() == Some(&1)),
            None => (samples, samples > 0),
        };
        let sps = match (&stbl.stsd.avc1, hevc) {
            (Some(avc1), _) => avc1
                .avcc
                .sequence_parameter_sets
                .first()
                .and_then(|sps| SpsProbe::h264_report(&annexb(&sps.bytes)).ok()),
            (None, Some(e)) => e
                .config(b"hvcC")
                .and_then(|hvcc| SpsProbe::h265_report(hvcc).ok()),
            (None, None) => None,
        };
        let ts = u128::from(mdhd.timescale);
        let duration_ms = (u128::from(mdhd.duration) * 1000 + ts / 2) / ts;
        // (The `mp4` crate does not export its box types: the tables go over as tuples.)
        let edits: Vec<(u64, u64, u16)> = track
            .trak
            .edts
            .iter()
            .flat_map(|e| e.elst.iter())
            .flat_map(|l| l.entries.iter())
            .map(|e| (e.media_time, e.segment_duration, e.media_rate))
            .collect();
        let (shown, presented_ts) = match single_edit(&edits, reader.moov.mvhd.timescale) {
            Some((media_time, length)) => {
                let durations: Vec<(u64, i128)> = (stbl.stts.entries.iter())
                    .map(|e| (u64::from(e.sample_count), i128::from(e.sample_delta)))
                    .collect();
                let offsets: Option<Vec<(u64, i128)>> = stbl.ctts.as_ref().map(|c| {
                    (c.entries.iter())
                        .map(|e| (u64::from(e.sample_count), i128::from(e.sample_offset)))
                        .collect()
                });
                let length = u128::from(length) * ts;
                let mvhd_ts = u128::from(reader.moov.mvhd.timescale);
                let length = u64::try_from((length + mvhd_ts / 2) / mvhd_ts).unwrap_or(u64::MAX);
                let until = media_time.saturating_add(length);
                let shown = samples_between(&durations, offsets.as_deref(), media_time, until);
                (shown.min(samples), length)
            }
            None => (samples, mdhd.duration),
        };
        Ok(Mp4Report {
            codec: codec.map(str::to_owned),
            width: u32::from(width),
            height: u32::from(height),
            timescale: mdhd.timescale,
            duration_ts: mdhd.duration,
            duration_ms: u64::try_from(duration_ms).unwrap_or(u64::MAX),
            samples,
            shown,
            presented_ts,
            keyframes,
            starts_with_keyframe,
            sps,
        })
    }
}

/// The one edit (`(media_time, segment_duration, media_rate)`) of an edit list that shows
/// media from `media_time` on, for `length` ticks of the movie timescale (`movie_ts`,
/// non-zero); `None` without an edit list, or with one that is more than that (empty edits,
/// several edits, another rate).
fn single_edit(edits: &[(u64, u64, u16)], movie_ts: u32) -> Option<(u64, u64)> {
    let [(media_time, length, rate)] = *edits else {
        return None;
    };
    // An empty edit's media time is -1, read as an unsigned 32- or 64-bit number.
    let empty = media_time == u64::from(u32::MAX) || media_time == u64::MAX;
    (movie_ts > 0 && !empty && rate == 1).then_some((media_time, length))
}

/// Samples whose composition time (decode time plus `ctts` offset) falls in `from..until`:
/// what an edit showing that stretch of the media shows. Walks the runs of both tables
/// together, never sample by sample: a hostile table may declare billions of samples in one
/// run.
///
/// `durations` are the `stts` runs and `offsets` the `ctts` runs, as (samples, ticks).
fn samples_between(
    durations: &[(u64, i128)],
    offsets: Option<&[(u64, i128)]>,
    from: u64,
    until: u64,
) -> u64 {
    let mut durations = durations.iter().copied();
    let offsets = offsets.unwrap_or_default();
    let no_offsets = offsets.is_empty();
    let mut offsets = offsets.iter().copied();
    let (mut run, mut offset_run) = (durations.next(), offsets.next());
    let (mut dts, mut shown) = (0i128, 0u64);
    let (from, until) = (i128::from(from), i128::from(until));
    while let Some((left, delta)) = run {
        if left == 0 {
            run = durations.next();
            continue;
        }
        let (offset_left, offset) = match offset_run {
            Some((0, _)) => {
                offset_run = offsets.next();
                continue;
            }
            Some(r) => r,
            None if no_offsets => (u64::MAX, 0),
            None => break, // a `ctts` shorter than the samples: the rest is not read
        };
        let n = left.min(offset_left);
        // Samples k = 0..n of this stretch are composed at dts + k * delta + offset.
        let first = dts + offset;
        let before = |t: i128| {
            if first >= t {
                0
            } else if delta == 0 {
                i128::from(n)
            } else {
                ((t - first + delta - 1) / delta).min(i128::from(n))
            }
        };
        let inside = (before(until) - before(from)).max(0);
        shown = shown.saturating_add(u64::try_from(inside).unwrap_or(u64::MAX));
        dts += i128::from(n) * delta;
        run = Some((left - n, delta));
        if let Some((l, o)) = offset_run {
            offset_run = Some((l - n, o));
        }
    }
    shown
}

/// A video track's first sample entry, read from the box tree directly (the `mp4` crate
/// skips the `hvc1` type, which is what FFmpeg and crispy write for H.265 in MP4).
struct SampleEntry<'a> {
    kind: [u8; 4],
    width: u16,
    height: u16,
    /// The boxes after the visual sample entry's fixed fields (`avcC`, `hvcC`, `pasp`, …).
    children: &'a [u8],
}

impl SampleEntry<'_> {
    fn is_hevc(&self) -> bool {
        matches!(&self.kind, b"hvc1" | b"hev1")
    }

    /// The body of the configuration box `name` (`hvcC`: the decoder configuration record).
    fn config(&self, name: &[u8; 4]) -> Option<&[u8]> {
        child(self.children, name)
    }
}

/// The first sample entry of the first video track (`hdlr` type `vide`) in `file`, whose box
/// sizes [`check_box_tree`] has checked.
fn video_sample_entry(file: &[u8]) -> Option<SampleEntry<'_>> {
    let moov = child(file, b"moov")?;
    boxes(moov)
        .filter(|(name, _)| name == b"trak")
        .find_map(|(_, trak)| {
            let mdia = child(trak, b"mdia")?;
            // Full box header (4), pre_defined (4), then the handler type.
            if child(mdia, b"hdlr")?.get(8..12)? != b"vide" {
                return None;
            }
            let stsd = child(child(child(mdia, b"minf")?, b"stbl")?, b"stsd")?;
            // Full box header (4) and the entry count (4), then the entries.
            let (kind, body) = boxes(stsd.get(8..)?).next()?;
            let u16_at = |at: usize| {
                let b = body.get(at..at + 2)?;
                Some(u16::from_be_bytes([b[0], b[1]]))
            };
            Some(SampleEntry {
                kind: kind.try_into().ok()?,
                // Visual sample entry: 24 bytes of reserved and pre-defined fields, then the
                // width and height; its child boxes start at 78.
                width: u16_at(24)?,
                height: u16_at(26)?,
                children: body.get(78..)?,
            })
        })
}

/// The boxes directly inside `data` as (type, body); stops at the first malformed header.
fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = data.get(at..).filter(|r| !r.is_empty())?;
        let (len, header) = box_size(rest, rest.len() as u64).ok()?;
        // `len` fits in `rest` (checked by `box_size`).
        let len = len as usize;
        at += len;
        Some((&rest[4..8], &rest[header..len]))
    })
}

/// The body of the first box named `name` directly inside `data`.
fn child<'a>(data: &'a [u8], name: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(n, _)| n == name).map(|(_, body)| body)
}

/// One NAL unit as an Annex B stream (what [`SpsProbe`] reads besides `avcC`).
fn annexb(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len() + 4);
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(nal);
    out
}

/// Checks that every box the `mp4` crate will descend into lies inside its parent and is at
/// least a header long. The crate trusts box sizes: a size below 8 underflows into a huge
/// allocation, one past the end of the file allocates what the file does not have (both
/// found by `cargo xtask fuzz`). Its tables check their counts against their box's size, so
/// with sizes sane, what it allocates is bounded by the input.
fn check_box_tree(data: &[u8], depth: u32) -> Result<(), String> {
    if depth > 16 {
        return Err("boxes nested too deep".to_owned());
    }
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        let (len, header) = box_size(rest, rest.len() as u64)?;
        // `len` fits in `rest` (checked by `box_size`).
        let len = len as usize;
        let name = &rest[4..8];
        let body = &rest[header..len];
        // Where children start inside the body, for boxes whose children the crate reads.
        let children = match name {
            b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"dinf" | b"edts" | b"mvex"
            | b"moof" | b"traf" | b"udta" | b"ilst" => Some(0),
            // ISO `meta` is a full box (4 bytes of version and flags); QuickTime's is not.
            b"meta" => Some(if body.get(..4) == Some(&[0, 0, 0, 0]) {
                4
            } else {
                0
            }),
            b"stsd" | b"dref" => Some(8),
            b"avc1" | b"avc3" | b"hev1" | b"hvc1" | b"vp09" | b"encv" => Some(78),
            b"mp4a" | b"enca" => Some(28),
            // iTunes-style metadata items hold `data` boxes.
            _ if depth > 0 && name[0] == 0xa9 => Some(0),
            _ => None,
        };
        if let Some(skip) = children {
            let inner = body
                .get(skip..)
                .ok_or_else(|| format!("box {} is too short", String::from_utf8_lossy(name)))?;
            check_box_tree(inner, depth + 1)?;
        }
        at += len;
    }
    Ok(())
}

/// The size of the box at the start of `data` and its header length, checked: at least a
/// header long, no longer than `room` (what is left of the parent or the file).
fn box_size(data: &[u8], room: u64) -> Result<(u64, usize), String> {
    let word = |r: std::ops::Range<usize>| data.get(r).ok_or("a box header is cut short");
    let size32 = u32::from_be_bytes(word(0..4)?.try_into().map_err(|_| "header")?);
    let _name = word(4..8)?;
    let (len, header) = match size32 {
        0 => return Err("a box of size 0 (to the end of the file) is not a chunk".to_owned()),
        1 => (
            u64::from_be_bytes(word(8..16)?.try_into().map_err(|_| "header")?),
            16,
        ),
        n => (u64::from(n), 8),
    };
    if len < header as u64 {
        return Err(format!("a box claims {len} bytes, less than its header"));
    }
    if len > room {
        return Err(format!(
            "a box claims {len} bytes where only {room} are left"
        ));
    }
    Ok((len, header))
}

/// A reader that fails once it has done `ops_left` reads and seeks.
struct Budgeted<R> {
    inner: R,
    ops_left: u64,
}

impl<R> Budgeted<R> {
    fn spend(&mut self) -> std::io::Result<()> {
        self.ops_left = self.ops_left.checked_sub(1).ok_or_else(|| {
            std::io::Error::other("the box structure loops (too many reads for the file size)")
        })?;
        Ok(())
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.spend()?;
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Budgeted<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.spend()?;
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = u64::MAX;

    #[test]
    fn a_lead_in_before_the_edit_is_hidden() {
        // 30 frames of 512 ticks, shown from the 15th on.
        let runs = [(30, 512)];
        assert_eq!(samples_between(&runs, None, 0, ALL), 30);
        assert_eq!(samples_between(&runs, None, 15 * 512, ALL), 15);
        assert_eq!(samples_between(&runs, None, 15 * 512 + 1, ALL), 14);
        assert_eq!(samples_between(&runs, None, 1 << 40, ALL), 0);
        // And frames after the edit's end.
        assert_eq!(samples_between(&runs, None, 15 * 512, 20 * 512), 5);
        assert_eq!(samples_between(&runs, None, 15 * 512, 20 * 512 + 1), 6);
    }

    #[test]
    fn composition_offsets_decide_what_is_shown() {
        // Decode times 0, 100, 200, 300; composed at 200, 600, 200, 400.
        let durations = [(4, 100)];
        let offsets = [(1, 200), (1, 500), (1, 0), (1, 100)];
        assert_eq!(samples_between(&durations, Some(&offsets), 300, ALL), 2);
        // B-frame chunks as we write them: the edit starts at the first frame shown.
        assert_eq!(samples_between(&durations, Some(&offsets), 200, ALL), 4);
        // An exact cut's end hides the P-frame decoded before the B-frames shown first.
        assert_eq!(samples_between(&durations, Some(&offsets), 200, 500), 3);
        // A `ctts` that ends early: what it does not cover is not counted.
        assert_eq!(samples_between(&durations, Some(&offsets[..1]), 0, ALL), 1);
    }

    #[test]
    fn huge_runs_are_counted_not_walked() {
        let runs = [(u64::from(u32::MAX), 1), (u64::from(u32::MAX), 0)];
        assert_eq!(samples_between(&runs, None, 0, 10), 10);
        assert_eq!(
            samples_between(&runs, None, 10, ALL),
            2 * u64::from(u32::MAX) - 10
        );
    }

    #[test]
    fn only_one_plain_edit_counts() {
        assert_eq!(single_edit(&[(1024, 9000, 1)], 1000), Some((1024, 9000)));
        assert_eq!(single_edit(&[], 1000), None);
        assert_eq!(single_edit(&[(1024, 9000, 1)], 0), None);
        assert_eq!(single_edit(&[(u64::from(u32::MAX), 500, 1)], 1000), None);
        assert_eq!(single_edit(&[(0, 500, 1), (0, 500, 1)], 1000), None);
        assert_eq!(single_edit(&[(0, 500, 2)], 1000), None);
    }
}
