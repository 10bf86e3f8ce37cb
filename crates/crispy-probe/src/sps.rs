use crispy_core::annexb::annexb_nals;
use crispy_core::{Codec, ResolutionProbe, StreamInfo};
use h264_reader::nal::sps::{ChromaFormat, FrameMbsFlags, SeqParameterSet};
use h264_reader::rbsp::{BitReader, decode_nal};
use serde::Serialize;

/// Errors raised while reading parameter sets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No sequence parameter set was found in the stream's configuration.
    #[error("no {codec} sequence parameter set in the stream configuration")]
    NoSps {
        /// Codec name.
        codec: String,
    },
    /// The SPS could not be parsed.
    #[error("malformed {codec} sequence parameter set: {reason}")]
    BadSps {
        /// Codec name.
        codec: String,
        /// Parser message.
        reason: String,
    },
    /// The data is not an MP4 file this probe can read.
    #[error("not a readable MP4 chunk: {reason}")]
    BadMp4 {
        /// Parser message.
        reason: String,
    },
}

/// What a sequence parameter set says about the stream, read without decoding a frame.
///
/// Names follow FFmpeg's (`ffprobe`'s `profile`, `pix_fmt`-style chroma), so the two can be
/// compared; `level` is the level number as written in the standards (`4.0`, `3.1`, `1b`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpsReport {
    /// `h264` or `hevc`.
    pub codec: String,
    /// Displayed width: the coded width after cropping.
    pub width: u32,
    /// Displayed height: the coded height after cropping.
    pub height: u32,
    /// Coded width (macroblocks or luma samples), before cropping.
    pub coded_width: u32,
    /// Coded height, before cropping.
    pub coded_height: u32,
    /// Profile name: `High`, `Constrained Baseline`, `Main 10`, ...
    pub profile: String,
    /// `profile_idc` as coded.
    pub profile_idc: u8,
    /// Level: `4.0`, `5.1`, `1b`.
    pub level: String,
    /// `level_idc` as coded (H.264: ten times the level; H.265: thirty times).
    pub level_idc: u8,
    /// H.265 tier (`Main` or `High`); `null` for H.264.
    pub tier: Option<String>,
    /// `4:2:0`, `4:2:2`, `4:4:4` or `4:0:0` (monochrome).
    pub chroma_format: String,
    /// Bits per luma sample.
    pub bit_depth_luma: u8,
    /// Bits per chroma sample.
    pub bit_depth_chroma: u8,
    /// Frames per second from the VUI timing information, when the encoder wrote it.
    pub frame_rate: Option<f64>,
    /// True when the SPS allows field (interlaced) coding.
    pub interlaced: bool,
}

/// Reads resolution from parameter sets.
///
/// H.264 SPS via `h264-reader`, H.265 SPS via our own checked reader (conformance-window
/// cropping applied, in checked arithmetic); other codecs fall back to the demuxer's
/// dimensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpsProbe;

impl SpsProbe {
    /// The full report for `codec` from its extradata (`avcC`, `hvcC` or Annex B parameter
    /// sets); `None` for codecs without a sequence parameter set we read.
    pub fn report(codec: Codec, extradata: &[u8]) -> Option<Result<SpsReport, ProbeError>> {
        match codec {
            Codec::H264 => Some(Self::h264_report(extradata)),
            Codec::H265 => Some(Self::h265_report(extradata)),
            _ => None,
        }
    }

    /// Parses the first H.264 SPS of an `avcC` record or Annex B parameter sets.
    pub fn h264_dimensions(extradata: &[u8]) -> Result<(u32, u32), ProbeError> {
        Self::h264_report(extradata).map(|r| (r.width, r.height))
    }

    /// Parses the first H.265 SPS of an `hvcC` record or Annex B parameter sets: the picture
    /// size after the conformance window.
    pub fn h265_dimensions(extradata: &[u8]) -> Result<(u32, u32), ProbeError> {
        Self::h265_report(extradata).map(|r| (r.width, r.height))
    }

    /// The report of the first H.264 SPS of an `avcC` record or Annex B parameter sets.
    pub fn h264_report(extradata: &[u8]) -> Result<SpsReport, ProbeError> {
        let codec = || "h264".to_owned();
        let sps = first_h264_sps(extradata).ok_or_else(|| ProbeError::NoSps { codec: codec() })?;
        let bad = |reason: String| ProbeError::BadSps {
            codec: codec(),
            reason,
        };
        let rbsp = decode_nal(sps).map_err(|e| bad(e.to_string()))?;
        let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
            .map_err(|e| bad(format!("{e:?}")))?;
        let (width, height) = sps.pixel_dimensions().map_err(|e| bad(format!("{e:?}")))?;
        let interlaced = !matches!(sps.frame_mbs_flags, FrameMbsFlags::Frames);
        let coded_width = sps.pic_width_in_mbs().saturating_mul(16);
        let coded_height =
            sps.pic_height_in_map_units()
                .saturating_mul(if interlaced { 32 } else { 16 });
        let profile_idc = u8::from(sps.profile_idc);
        let flags = sps.constraint_flags;
        let chroma = &sps.chroma_info;
        let frame_rate = sps
            .vui_parameters
            .as_ref()
            .and_then(|v| v.timing_info.as_ref())
            .filter(|t| t.num_units_in_tick > 0 && t.time_scale > 0)
            .map(|t| f64::from(t.time_scale) / (2.0 * f64::from(t.num_units_in_tick)));
        Ok(SpsReport {
            codec: codec(),
            width,
            height,
            coded_width,
            coded_height,
            profile: h264_profile_name(profile_idc, flags.flag1(), flags.flag3()),
            profile_idc,
            level: h264_level_name(profile_idc, sps.level_idc, flags.flag3()),
            level_idc: sps.level_idc,
            tier: None,
            chroma_format: match chroma.chroma_format {
                ChromaFormat::Monochrome => "4:0:0".to_owned(),
                ChromaFormat::YUV420 => "4:2:0".to_owned(),
                ChromaFormat::YUV422 => "4:2:2".to_owned(),
                ChromaFormat::YUV444 => "4:4:4".to_owned(),
                ChromaFormat::Invalid(idc) => return Err(bad(format!("chroma_format_idc {idc}"))),
            },
            bit_depth_luma: chroma.bit_depth_luma_minus8.saturating_add(8),
            bit_depth_chroma: chroma.bit_depth_chroma_minus8.saturating_add(8),
            frame_rate,
            interlaced,
        })
    }

    /// The report of the first H.265 SPS of an `hvcC` record or Annex B parameter sets.
    pub fn h265_report(extradata: &[u8]) -> Result<SpsReport, ProbeError> {
        let codec = || "hevc".to_owned();
        let sps = first_h265_sps(extradata).ok_or_else(|| ProbeError::NoSps { codec: codec() })?;
        let bad = |reason: String| ProbeError::BadSps {
            codec: codec(),
            reason,
        };
        let sps = crate::h265::parse_sps(sps).map_err(bad)?;
        let (width, height) = sps
            .cropped()
            .ok_or_else(|| bad("the conformance window is larger than the picture".to_owned()))?;
        Ok(SpsReport {
            codec: codec(),
            width,
            height,
            coded_width: sps.pic_width,
            coded_height: sps.pic_height,
            profile: h265_profile_name(sps.profile_idc),
            profile_idc: sps.profile_idc,
            level: h265_level_name(sps.level_idc),
            level_idc: sps.level_idc,
            tier: Some(if sps.tier_flag { "High" } else { "Main" }.to_owned()),
            chroma_format: match sps.chroma_format_idc {
                0 => "4:0:0",
                1 => "4:2:0",
                2 => "4:2:2",
                _ => "4:4:4",
            }
            .to_owned(),
            bit_depth_luma: sps.bit_depth_luma,
            bit_depth_chroma: sps.bit_depth_chroma,
            frame_rate: sps
                .timing
                .map(|(units, scale)| f64::from(scale) / f64::from(units)),
            interlaced: sps.interlaced_source,
        })
    }
}

/// FFmpeg's name for an H.264 profile (libavcodec's `ff_h264_profiles`).
fn h264_profile_name(idc: u8, constraint1: bool, constraint3: bool) -> String {
    let name = match idc {
        66 if constraint1 => "Constrained Baseline",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 if constraint3 => "High 10 Intra",
        110 => "High 10",
        122 if constraint3 => "High 4:2:2 Intra",
        122 => "High 4:2:2",
        244 if constraint3 => "High 4:4:4 Intra",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4",
        118 => "Multiview High",
        128 => "Stereo High",
        83 => "Scalable Baseline",
        86 => "Scalable High",
        other => return format!("profile {other}"),
    };
    name.to_owned()
}

/// H.264 level from `level_idc`; level 1b is `level_idc` 11 with constraint_set3 in the
/// Baseline, Main and Extended profiles, or `level_idc` 9.
fn h264_level_name(profile_idc: u8, level_idc: u8, constraint3: bool) -> String {
    if level_idc == 9 || (level_idc == 11 && constraint3 && matches!(profile_idc, 66 | 77 | 88)) {
        return "1b".to_owned();
    }
    format!("{}.{}", level_idc / 10, level_idc % 10)
}

/// FFmpeg's name for an H.265 profile.
fn h265_profile_name(idc: u8) -> String {
    let name = match idc {
        1 => "Main",
        2 => "Main 10",
        3 => "Main Still Picture",
        4 => "Rext",
        9 => "SCC",
        other => return format!("profile {other}"),
    };
    name.to_owned()
}

/// H.265 level from `general_level_idc` (thirty times the level number).
fn h265_level_name(level_idc: u8) -> String {
    let tenths = u32::from(level_idc) / 3;
    format!("{}.{}", tenths / 10, tenths % 10)
}

impl ResolutionProbe for SpsProbe {
    type Error = ProbeError;

    fn resolution(&self, info: &StreamInfo) -> Result<(u32, u32), ProbeError> {
        match info.codec {
            Codec::H264 => Self::h264_dimensions(&info.extradata),
            Codec::H265 => Self::h265_dimensions(&info.extradata),
            _ => Ok((info.width, info.height)),
        }
    }
}

/// The first SPS NAL unit (with its header byte) in `avcC` or Annex B extradata.
fn first_h264_sps(extradata: &[u8]) -> Option<&[u8]> {
    if extradata.first() == Some(&1) {
        // avcC: 5 fixed bytes, then count (low 5 bits), then length-prefixed SPS units.
        let count = extradata.get(5)? & 0x1f;
        if count == 0 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*extradata.get(6)?, *extradata.get(7)?]));
        let sps = extradata.get(8..8 + len)?;
        (sps.first()? & 0x1f == 7).then_some(sps)
    } else {
        annexb_nals(extradata).find(|n| n[0] & 0x1f == 7)
    }
}

/// The first SPS NAL unit (with its 2-byte header) in `hvcC` or Annex B extradata.
fn first_h265_sps(extradata: &[u8]) -> Option<&[u8]> {
    let is_sps = |n: &[u8]| n.first().is_some_and(|b| (b >> 1) & 0x3f == 33);
    if extradata.first() == Some(&1) {
        // hvcC: 22 fixed bytes, numOfArrays, then per array: type, count, length-prefixed units.
        let arrays = *extradata.get(22)?;
        let mut at = 23usize;
        for _ in 0..arrays {
            let count = u16::from_be_bytes([*extradata.get(at + 1)?, *extradata.get(at + 2)?]);
            at += 3;
            for _ in 0..count {
                let len = usize::from(u16::from_be_bytes([
                    *extradata.get(at)?,
                    *extradata.get(at + 1)?,
                ]));
                let unit = extradata.get(at + 2..at + 2 + len)?;
                if is_sps(unit) {
                    return Some(unit);
                }
                at += 2 + len;
            }
        }
        None
    } else {
        annexb_nals(extradata).find(|n| is_sps(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SPS of a 1920x1080 High profile stream (1088 coded lines, cropped to 1080).
    const SPS_1080P: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00,
        0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];

    #[test]
    fn reads_cropped_1080p_from_annexb_and_avcc() {
        let mut annexb = vec![0, 0, 0, 1];
        annexb.extend_from_slice(SPS_1080P);
        assert_eq!(SpsProbe::h264_dimensions(&annexb).ok(), Some((1920, 1080)));

        let mut avcc = vec![1, 0x64, 0, 0x28, 0xff, 0xe1];
        avcc.extend_from_slice(&(SPS_1080P.len() as u16).to_be_bytes());
        avcc.extend_from_slice(SPS_1080P);
        avcc.extend_from_slice(&[1, 0, 1, 0x68]);
        assert_eq!(SpsProbe::h264_dimensions(&avcc).ok(), Some((1920, 1080)));
    }

    #[test]
    fn h265_garbage_is_an_error_not_a_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..200 {
            let mut data = vec![0, 0, 0, 1, 0x42, 0x01];
            data.extend((0..len).map(|_| rng.u8(..)));
            let _ = SpsProbe::h265_dimensions(&data);
            data[0] = 1;
            let _ = SpsProbe::h265_dimensions(&data);
        }
        assert!(SpsProbe::h265_dimensions(&[]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [
            &[][..],
            &[1],
            &[1, 2, 3, 4, 5, 0xe1, 0, 200, 0x67],
            &[0, 0, 1, 0x67, 0xff],
        ] {
            assert!(SpsProbe::h264_dimensions(data).is_err(), "{data:?}");
        }
    }
}
