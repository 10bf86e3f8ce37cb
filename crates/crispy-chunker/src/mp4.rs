//! A minimal ISO-BMFF (MP4) writer for one video track.
//!
//! Layout: `ftyp`, `moov`, `mdat` — the index first, so a chunk is playable while it streams.
//! The output is a [`Payload`]: the header in one buffer, then the frames, large ones shared
//! with the demuxer rather than copied (see [`write_mp4`]).

use bytes::Bytes;
use crispy_core::Payload;
use crispy_core::annexb::annexb_nals;

use crate::ChunkerError;

/// How the NAL units of a sample's data are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalFraming {
    /// MP4 style: each NAL unit is preceded by its length in 4 bytes; stored as is.
    LengthPrefixed,
    /// Annex B: NAL units separated by `00 00 01` start codes (RTSP, MPEG-TS); rewritten with
    /// 4-byte lengths in place of the start codes as they are copied into the chunk.
    AnnexB,
}

/// A four-character box or sample-entry code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FourCc(pub [u8; 4]);

/// The facts of the single video track of a chunk.
#[derive(Debug, Clone)]
pub struct VideoTrack<'a> {
    /// Sample entry type: `avc1` or `hvc1`.
    pub sample_entry: FourCc,
    /// Configuration box type: `avcC` or `hvcC`.
    pub config_box: FourCc,
    /// The decoder configuration record, stored verbatim in the configuration box.
    pub config_record: &'a [u8],
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Ticks per second of all durations and offsets (track and movie timescale).
    pub timescale: u32,
    /// The track header's transformation matrix (rotation): the source's display matrix,
    /// else identity.
    pub matrix: [i32; 9],
}

/// The identity transformation: a picture shown as it is coded.
pub const IDENTITY_MATRIX: [i32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// One frame, in decode order.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The frame's NAL units, framed as `framing` says.
    pub data: Bytes,
    /// How `data` delimits its NAL units.
    pub framing: NalFraming,
    /// Decode duration in timescale ticks (DTS of the next frame minus this one's).
    pub duration: u32,
    /// PTS minus DTS in timescale ticks.
    pub composition_offset: i32,
    /// True for sync samples (keyframes).
    pub keyframe: bool,
}

/// Writes a complete MP4 file holding `samples`.
///
/// `presentation_start` is the composition time (relative to the first sample's decode time)
/// of the first frame to show; an edit list skips everything before it, so that presentation
/// begins at zero. It lasts `presented` ticks: the sum of the sample durations, less the
/// frames at the start that are decoded but not shown (a trimmed file's lead-in).
///
/// Length-prefixed frames of 16 KiB or more are not copied: the payload shares their buffers
/// (FFmpeg's packets), so they live as long as the payload does.
pub fn write_mp4(
    track: &VideoTrack<'_>,
    samples: &[Sample],
    presentation_start: u32,
    presented: u64,
) -> Result<Payload, ChunkerError> {
    let too_large = |reason: &str| ChunkerError::TooLarge {
        reason: reason.to_owned(),
    };
    u32::try_from(samples.len()).map_err(|_| too_large("more than 2^32 samples"))?;
    // `hvc1` keeps the parameter sets in the sample entry only: the copies an Annex B stream
    // repeats in-band are left out. A chunk whose samples carry others (a PPS updated
    // in-band, which a later copy of the record's may undo) keeps them all, as `hev1`.
    let hev1;
    let mut in_entry = Vec::new();
    let mut track = track;
    if &track.sample_entry.0 == b"hvc1" && samples.iter().any(|s| s.framing == NalFraming::AnnexB) {
        in_entry = hvcc_parameter_sets(track.config_record);
        if !in_band_sets_all_in(samples, &in_entry) {
            in_entry.clear();
            hev1 = VideoTrack {
                sample_entry: FourCc(*b"hev1"),
                ..track.clone()
            };
            track = &hev1;
        }
    }
    let mut payload_len: u64 = 0;
    let mut duration: u64 = 0;
    let mut sizes = Vec::with_capacity(samples.len());
    // The bytes of each run of copied pieces, between shared ones; the header joins the first.
    let mut runs = vec![0usize];
    for s in samples {
        let mut size = 0usize;
        for_each_piece(s, &in_entry, |piece| {
            let run = runs.last_mut().expect("never empty");
            match piece {
                Piece::Copy(bytes) => (*run, size) = (*run + bytes.len(), size + bytes.len()),
                Piece::Length(_) => (*run, size) = (*run + 4, size + 4),
                Piece::Share(bytes) => {
                    size += bytes.len();
                    runs.push(0);
                }
            }
        });
        let size = u32::try_from(size).map_err(|_| too_large("a frame larger than 4 GiB"))?;
        sizes.push(size);
        payload_len += u64::from(size);
        duration += u64::from(s.duration);
    }
    let ftyp = ftyp(track);
    // 64-bit offsets only when the file may pass 4 GiB (1 MiB of headroom for ftyp+moov).
    let large = payload_len + (1 << 20) > u64::from(u32::MAX);
    let mdat_header = if large { 16 } else { 8 };
    let probe = moov(
        track,
        samples,
        &sizes,
        (duration, presented),
        presentation_start,
        0,
        large,
    );
    let offset = (ftyp.len() + probe.len() + mdat_header) as u64;
    let moov = moov(
        track,
        samples,
        &sizes,
        (duration, presented),
        presentation_start,
        offset,
        large,
    );
    debug_assert_eq!(probe.len(), moov.len());

    // The header, then the samples' pieces: shared ones (see `SHARED_FROM`) become parts of
    // their own, the demuxer's buffers; the rest is copied into the part being filled,
    // pre-sized to the run it will hold.
    let header_len = usize::try_from(offset).map_err(|_| too_large("chunk"))?;
    let mut runs = runs.into_iter();
    let mut parts = Vec::new();
    let mut out = Vec::with_capacity(header_len + runs.next().unwrap_or(0));
    out.extend_from_slice(&ftyp);
    out.extend_from_slice(&moov);
    if large {
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(b"mdat");
        out.extend_from_slice(&(payload_len + 16).to_be_bytes());
    } else {
        out.extend_from_slice(&((payload_len + 8) as u32).to_be_bytes());
        out.extend_from_slice(b"mdat");
    }
    for s in samples {
        for_each_piece(s, &in_entry, |piece| match piece {
            Piece::Copy(bytes) => out.extend_from_slice(bytes),
            Piece::Length(len) => out.extend_from_slice(&len.to_be_bytes()),
            Piece::Share(bytes) => {
                if !out.is_empty() {
                    parts.push(Bytes::from(std::mem::take(&mut out)));
                }
                parts.push(s.data.slice_ref(bytes));
                out.reserve_exact(runs.next().unwrap_or(0));
            }
        });
    }
    parts.push(Bytes::from(out));
    let payload = Payload::from_parts(parts);
    debug_assert_eq!(payload.len() as u64, offset + payload_len);
    Ok(payload)
}

/// Length-prefixed frames (files) at least this large are shared into the chunk rather than
/// copied. Below it a copy costs about what the extra part costs (one more iovec and slice to
/// hash, and a packet freed later by another thread instead of reused at once while warm):
/// sharing from 4 KiB instead ran the 5-minute 1080p file into a local directory in the
/// same time (medians of 11 alternating runs).
const SHARED_FROM: usize = 16 * 1024;

/// Annex B NAL units (cameras) at least this large are shared into the chunk rather than
/// copied: a 32-camera process took 900 page faults a second instead of 3,000 (each chunk's
/// copy filled fresh pages).
const ANNEXB_SHARED_FROM: usize = 4 * 1024;

/// One piece of a sample as stored in the chunk.
enum Piece<'a> {
    /// Bytes of the sample copied as they are.
    Copy(&'a [u8]),
    /// A 4-byte big-endian NAL unit length (Annex B rewritten).
    Length(u32),
    /// Bytes of the sample that become a part of their own, shared with the sample.
    Share(&'a [u8]),
}

/// The parameter sets (VPS, SPS, PPS NAL units) of an `hvcC` record; as many as can be read
/// from a damaged one.
fn hvcc_parameter_sets(record: &[u8]) -> Vec<&[u8]> {
    let mut sets = Vec::new();
    let Some((&arrays, mut rest)) = record.get(22..).and_then(<[u8]>::split_first) else {
        return sets;
    };
    for _ in 0..arrays {
        let Some(count) = rest.get(1..3) else { break };
        let count = u16::from_be_bytes([count[0], count[1]]);
        rest = &rest[3..];
        for _ in 0..count {
            let Some(len) = rest.get(..2) else {
                return sets;
            };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let Some(nal) = rest.get(2..2 + len) else {
                return sets;
            };
            sets.push(nal);
            rest = &rest[2 + len..];
        }
    }
    sets
}

/// True for an H.265 VPS, SPS or PPS NAL unit.
fn is_parameter_set(nal: &[u8]) -> bool {
    (nal.first()).is_some_and(|h| (32..=34).contains(&((h >> 1) & 0x3f)))
}

/// True when every parameter set in the Annex B `samples` is one of `in_entry`, and every
/// such sample holds something else too (none would be left empty without them).
fn in_band_sets_all_in(samples: &[Sample], in_entry: &[&[u8]]) -> bool {
    !in_entry.is_empty()
        && (samples.iter().filter(|s| s.framing == NalFraming::AnnexB)).all(|s| {
            let mut other = false;
            let sets_known = annexb_nals(&s.data).all(|n| {
                let set = is_parameter_set(n);
                other |= !set;
                !set || in_entry.contains(&n)
            });
            sets_known && other
        })
}

/// True for an H.265 VPS, SPS or PPS NAL unit equal to one of `in_entry`.
fn is_in_entry(nal: &[u8], in_entry: &[&[u8]]) -> bool {
    !in_entry.is_empty() && is_parameter_set(nal) && in_entry.contains(&nal)
}

/// Calls `f` with the pieces that store `s` in MP4 framing, in order; Annex B NAL units
/// equal to a parameter set of `in_entry` are left out.
fn for_each_piece<'a>(s: &'a Sample, in_entry: &[&[u8]], mut f: impl FnMut(Piece<'a>)) {
    match s.framing {
        NalFraming::LengthPrefixed if s.data.len() >= SHARED_FROM => f(Piece::Share(&s.data)),
        NalFraming::LengthPrefixed => f(Piece::Copy(&s.data)),
        // Each NAL unit after its length: large ones shared as slices of the packet, small
        // ones copied (a camera's P-frames are mostly a few KiB).
        NalFraming::AnnexB => {
            for nal in annexb_nals(&s.data).filter(|n| !is_in_entry(n, in_entry)) {
                // Truncates only in a sample over 4 GiB, which is refused before writing.
                f(Piece::Length(nal.len() as u32));
                if nal.len() >= ANNEXB_SHARED_FROM {
                    f(Piece::Share(nal));
                } else {
                    f(Piece::Copy(nal));
                }
            }
        }
    }
}

/// Appends a box of type `kind` whose body `body` writes.
fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a full box (version and flags).
fn full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |o| {
        o.extend_from_slice(&((u32::from(version) << 24) | flags).to_be_bytes());
        body(o);
    });
}

trait Put {
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn u64(&mut self, v: u64);
    fn zeros(&mut self, n: usize);
}

impl Put for Vec<u8> {
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
}

fn ftyp(track: &VideoTrack<'_>) -> Vec<u8> {
    let mut o = Vec::with_capacity(32);
    boxed(&mut o, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        o.u32(0x200);
        o.extend_from_slice(b"isom");
        o.extend_from_slice(b"iso2");
        o.extend_from_slice(&track.sample_entry.0);
        o.extend_from_slice(b"mp41");
    });
    o
}

/// Writes a 32- or 64-bit time field, the width chosen by `v1`.
fn time(o: &mut Vec<u8>, v1: bool, v: u64) {
    if v1 { o.u64(v) } else { o.u32(v as u32) }
}

fn moov(
    track: &VideoTrack<'_>,
    samples: &[Sample],
    sizes: &[u32],
    (duration, presented): (u64, u64),
    presentation_start: u32,
    chunk_offset: u64,
    large: bool,
) -> Vec<u8> {
    let v1 = duration.max(presented) > u64::from(u32::MAX);
    let version = u8::from(v1);
    let mut o = Vec::with_capacity(1024 + samples.len() * 12);
    boxed(&mut o, b"moov", |o| {
        full_box(o, b"mvhd", version, 0, |o| {
            time(o, v1, 0); // creation
            time(o, v1, 0); // modification
            o.u32(track.timescale);
            time(o, v1, presented);
            o.u32(0x0001_0000); // rate 1.0
            o.u16(0x0100); // volume 1.0
            o.zeros(10);
            IDENTITY_MATRIX.iter().for_each(|m| o.u32(*m as u32));
            o.zeros(24);
            o.u32(2); // next_track_ID
        });
        boxed(o, b"trak", |o| {
            full_box(o, b"tkhd", version, 3, |o| {
                time(o, v1, 0);
                time(o, v1, 0);
                o.u32(1); // track_ID
                o.u32(0);
                time(o, v1, presented);
                o.zeros(8);
                o.u16(0); // layer
                o.u16(0); // alternate_group
                o.u16(0); // volume
                o.u16(0);
                track.matrix.iter().for_each(|m| o.u32(*m as u32));
                o.u32(u32::from(track.width) << 16);
                o.u32(u32::from(track.height) << 16);
            });
            boxed(o, b"edts", |o| {
                full_box(o, b"elst", version, 0, |o| {
                    o.u32(1);
                    time(o, v1, presented);
                    time(o, v1, u64::from(presentation_start));
                    o.u16(1); // media_rate_integer
                    o.u16(0);
                });
            });
            boxed(o, b"mdia", |o| {
                full_box(o, b"mdhd", version, 0, |o| {
                    time(o, v1, 0);
                    time(o, v1, 0);
                    o.u32(track.timescale);
                    time(o, v1, duration);
                    o.u16(0x55c4); // language "und"
                    o.u16(0);
                });
                full_box(o, b"hdlr", 0, 0, |o| {
                    o.u32(0);
                    o.extend_from_slice(b"vide");
                    o.zeros(12);
                    o.extend_from_slice(b"VideoHandler\0");
                });
                boxed(o, b"minf", |o| {
                    full_box(o, b"vmhd", 0, 1, |o| o.zeros(8));
                    boxed(o, b"dinf", |o| {
                        full_box(o, b"dref", 0, 0, |o| {
                            o.u32(1);
                            full_box(o, b"url ", 0, 1, |_| {});
                        });
                    });
                    stbl(o, track, samples, sizes, chunk_offset, large);
                });
            });
        });
    });
    o
}

fn stbl(
    o: &mut Vec<u8>,
    track: &VideoTrack<'_>,
    samples: &[Sample],
    sizes: &[u32],
    chunk_offset: u64,
    large: bool,
) {
    // write_mp4 checked that the count fits.
    let count = sizes.len() as u32;
    boxed(o, b"stbl", |o| {
        full_box(o, b"stsd", 0, 0, |o| {
            o.u32(1);
            boxed(o, &track.sample_entry.0, |o| {
                o.zeros(6);
                o.u16(1); // data_reference_index
                o.zeros(16);
                o.u16(track.width);
                o.u16(track.height);
                o.u32(0x0048_0000); // 72 dpi
                o.u32(0x0048_0000);
                o.u32(0);
                o.u16(1); // frame_count
                o.zeros(32); // compressorname
                o.u16(0x0018); // depth
                o.u16(0xffff); // pre_defined = -1
                boxed(o, &track.config_box.0, |o| {
                    o.extend_from_slice(track.config_record)
                });
            });
        });
        // Decode durations, run-length encoded.
        let stts = runs(samples.iter().map(|s| s.duration));
        full_box(o, b"stts", 0, 0, |o| {
            o.u32(stts.len() as u32);
            for (n, d) in &stts {
                o.u32(*n);
                o.u32(*d);
            }
        });
        if samples.iter().any(|s| s.composition_offset != 0) {
            let ctts = runs(samples.iter().map(|s| s.composition_offset as u32));
            let signed = samples.iter().any(|s| s.composition_offset < 0);
            full_box(o, b"ctts", u8::from(signed), 0, |o| {
                o.u32(ctts.len() as u32);
                for (n, off) in &ctts {
                    o.u32(*n);
                    o.u32(*off);
                }
            });
        }
        if !samples.iter().all(|s| s.keyframe) {
            let sync: Vec<u32> = (1..=count)
                .zip(samples)
                .filter(|(_, s)| s.keyframe)
                .map(|(i, _)| i)
                .collect();
            full_box(o, b"stss", 0, 0, |o| {
                o.u32(sync.len() as u32);
                sync.iter().for_each(|i| o.u32(*i));
            });
        }
        full_box(o, b"stsc", 0, 0, |o| {
            o.u32(1);
            o.u32(1); // first_chunk
            o.u32(count); // samples_per_chunk
            o.u32(1); // sample_description_index
        });
        full_box(o, b"stsz", 0, 0, |o| {
            o.u32(0);
            o.u32(count);
            sizes.iter().for_each(|&size| o.u32(size));
        });
        if large {
            full_box(o, b"co64", 0, 0, |o| {
                o.u32(1);
                o.u64(chunk_offset);
            });
        } else {
            full_box(o, b"stco", 0, 0, |o| {
                o.u32(1);
                o.u32(chunk_offset as u32);
            });
        }
    });
}

/// Run-length encodes a sequence as `(count, value)` pairs.
fn runs(values: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => out.push((1, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a chunk shows when nothing is hidden: the sum of the sample durations.
    fn shown(samples: &[Sample]) -> u64 {
        samples.iter().map(|s| u64::from(s.duration)).sum()
    }

    fn track() -> VideoTrack<'static> {
        VideoTrack {
            sample_entry: FourCc(*b"avc1"),
            config_box: FourCc(*b"avcC"),
            config_record: &[1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 0, 1, 0, 0],
            width: 320,
            height: 240,
            timescale: 90_000,
            matrix: IDENTITY_MATRIX,
        }
    }

    #[test]
    fn runs_compress_equal_neighbours() {
        assert_eq!(
            runs([5, 5, 5, 7, 5].into_iter()),
            vec![(3, 5), (1, 7), (1, 5)]
        );
    }

    #[test]
    fn annexb_samples_are_stored_with_length_prefixes() {
        let annexb = Sample {
            data: Bytes::from_static(&[
                0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 0,
            ]),
            framing: NalFraming::AnnexB,
            duration: 3000,
            composition_offset: 0,
            keyframe: true,
        };
        let prefixed: [u8; 19] = [
            0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 2, 0x65, 4,
        ];
        let out = write_mp4(&track(), &[annexb], 0, 3000)
            .expect("mux")
            .to_bytes();
        assert_eq!(&out[out.len() - 19..], &prefixed);
        assert_eq!(&out[out.len() - 23..out.len() - 19], b"mdat");
        // stsz after its version/flags: sample_size 0, count 1, then the rewritten size.
        let stsz = out.windows(4).position(|w| w == b"stsz").expect("stsz");
        assert_eq!(
            &out[stsz + 8..stsz + 20],
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 19]
        );
    }

    #[test]
    fn hvc1_chunks_leave_out_in_band_copies_of_the_parameter_sets() {
        // Annex B H.265 keyframes (MPEG-TS, RTSP) repeating their VPS, SPS and PPS: stored
        // without them, as `hvc1`. A chunk with a PPS other than the record's (same id: a
        // later copy of the record's would undo it) keeps every one, as `hev1`.
        let vps: &[u8] = &[0x40, 0x01, 0x0c, 0x01, 0xff, 0xff];
        let sps: &[u8] = &[
            0x42, 0x01, 0x01, 0x01, 0x60, 0, 0, 0x03, 0, 0x90, 0, 0, 0x03, 0, 0, 0x03, 0, 0x5d,
            0xa0,
        ];
        let pps: &[u8] = &[0x44, 0x01, 0xc1, 0x72];
        let other_pps: &[u8] = &[0x44, 0x01, 0xc1, 0x73];
        let slice: &[u8] = &[0x26, 0x01, 0xaf, 0x09];
        let annexb = |nals: &[&[u8]]| -> Bytes {
            let bytes: Vec<u8> = (nals.iter())
                .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
                .collect();
            Bytes::from(bytes)
        };
        let prefixed = |nals: &[&[u8]]| -> Vec<u8> {
            (nals.iter())
                .flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat())
                .collect()
        };
        let codec = crate::config_record::TrackCodec::from_annexb(
            &crispy_core::Codec::H265,
            &annexb(&[vps, sps, pps]),
        )
        .expect("hvcC");
        assert_eq!(&codec.sample_entry.0, b"hvc1");
        assert_eq!(hvcc_parameter_sets(&codec.record), [vps, sps, pps]);
        let track = VideoTrack {
            sample_entry: codec.sample_entry,
            config_box: codec.config_box,
            config_record: &codec.record,
            ..track()
        };
        let keyframe = |data: Bytes| Sample {
            data,
            framing: NalFraming::AnnexB,
            duration: 3000,
            composition_offset: 0,
            keyframe: true,
        };
        let mux = |samples: &[Sample]| -> Vec<u8> {
            (write_mp4(&track, samples, 0, 6000).expect("mux").to_bytes()).to_vec()
        };
        let repeated = keyframe(annexb(&[vps, sps, pps, slice]));
        let out = mux(&[repeated.clone(), repeated.clone()]);
        assert!(out.ends_with(&[prefixed(&[slice]), prefixed(&[slice])].concat()));
        assert!(out.windows(4).any(|w| w == b"hvc1"));
        let updated = keyframe(annexb(&[other_pps, slice]));
        let out = mux(&[repeated.clone(), updated, repeated]);
        let kept = [
            prefixed(&[vps, sps, pps, slice]),
            prefixed(&[other_pps, slice]),
            prefixed(&[vps, sps, pps, slice]),
        ];
        assert!(out.ends_with(&kept.concat()));
        assert!(out.windows(4).any(|w| w == b"hev1"));
        assert!(!out.windows(4).any(|w| w == b"hvc1"));
        // A sample of parameter sets alone is not left empty.
        let out = mux(&[
            keyframe(annexb(&[vps, sps, pps])),
            keyframe(annexb(&[slice])),
        ]);
        assert!(out.ends_with(&[prefixed(&[vps, sps, pps]), prefixed(&[slice])].concat()));
    }

    #[test]
    fn large_frames_and_nal_units_are_shared_small_ones_copied() {
        let frame = |len: usize, framing| Sample {
            data: Bytes::from(vec![7u8; len]),
            framing,
            duration: 3000,
            composition_offset: 0,
            keyframe: false,
        };
        // Annex B: a small SPS-like NAL, a large slice, a small SEI; 3- and 4-byte start codes.
        let mut annexb = vec![0, 0, 0, 1, 0x67, 9, 9];
        annexb.extend_from_slice(&[0, 0, 1]);
        annexb.extend(std::iter::repeat_n(7u8, ANNEXB_SHARED_FROM));
        annexb.extend_from_slice(&[0, 0, 0, 1, 0x06, 5]);
        let samples = [
            frame(SHARED_FROM, NalFraming::LengthPrefixed),
            frame(100, NalFraming::LengthPrefixed),
            frame(SHARED_FROM - 1, NalFraming::LengthPrefixed),
            frame(SHARED_FROM * 2, NalFraming::LengthPrefixed),
            Sample {
                data: Bytes::from(annexb),
                ..frame(0, NalFraming::AnnexB)
            },
        ];
        let out = write_mp4(&track(), &samples, 0, shown(&samples)).expect("mux");
        let parts = out.parts();
        // header | frame 0 | frames 1+2 | frame 3 | frame 4: lengths and small NAL units
        // copied, the large one shared from the packet, then the SEI copied.
        assert_eq!(parts.len(), 7, "{out:?}");
        let same_buffer = |part: &Bytes, sample: &Sample| part.as_ptr() == sample.data.as_ptr();
        assert!(same_buffer(&parts[1], &samples[0]));
        assert_eq!(parts[2].len(), 100 + SHARED_FROM - 1);
        assert!(same_buffer(&parts[3], &samples[3]));
        let mut before = vec![0, 0, 0, 3, 0x67, 9, 9];
        before.extend_from_slice(&(ANNEXB_SHARED_FROM as u32).to_be_bytes());
        assert_eq!(parts[4], before);
        assert_eq!(parts[5].len(), ANNEXB_SHARED_FROM);
        assert_eq!(parts[5].as_ptr(), samples[4].data[10..].as_ptr());
        assert_eq!(parts[6], [0, 0, 0, 2, 0x06, 5][..]);
        let rewritten = [&parts[4][..], &parts[5][..], &parts[6][..]].concat();
        // The whole is the file: mdat in order, its size counting the rewritten frame.
        let whole = out.to_bytes();
        let stored: usize =
            samples[..4].iter().map(|s| s.data.len()).sum::<usize>() + rewritten.len();
        let mdat = whole.len() - stored - 8;
        assert_eq!(&whole[mdat + 4..mdat + 8], b"mdat");
        assert_eq!(whole[mdat..mdat + 4], ((stored + 8) as u32).to_be_bytes());
    }

    #[test]
    fn output_is_ftyp_moov_mdat_with_payload_at_the_chunk_offset() {
        let samples: Vec<Sample> = (0..3u8)
            .map(|i| Sample {
                data: Bytes::from(vec![i; 10]),
                framing: NalFraming::LengthPrefixed,
                duration: 3000,
                composition_offset: 0,
                keyframe: i == 0,
            })
            .collect();
        let out = write_mp4(&track(), &samples, 0, shown(&samples))
            .expect("mux")
            .to_bytes();
        let ftyp_len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(&out[4..8], b"ftyp");
        assert_eq!(&out[ftyp_len + 4..ftyp_len + 8], b"moov");
        let moov_len =
            u32::from_be_bytes(out[ftyp_len..ftyp_len + 4].try_into().expect("4")) as usize;
        let mdat = ftyp_len + moov_len;
        assert_eq!(&out[mdat + 4..mdat + 8], b"mdat");
        assert_eq!(out.len(), mdat + 8 + 30);
        assert_eq!(&out[mdat + 8..mdat + 18], &[0u8; 10]);
        // Small files use 32-bit offsets: an `stco` box, no `co64`, an 8-byte mdat header.
        assert!(out.windows(4).any(|w| w == b"stco"));
        assert!(!out.windows(4).any(|w| w == b"co64"));
        // The stco entry is the last 4 bytes of the moov box and points at the payload.
        let stco = u32::from_be_bytes(out[mdat - 4..mdat].try_into().expect("4")) as usize;
        assert_eq!(stco, mdat + 8);
    }
}
