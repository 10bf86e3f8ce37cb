use crispy_core::annexb::annexb_nals;
use crispy_core::{Codec, ResolutionProbe, StreamInfo};
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, decode_nal};

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
}

/// Reads resolution from parameter sets.
///
/// H.264 SPS via `h264-reader`, H.265 SPS via `scuffle-h265` (conformance-window cropping
/// applied, in checked arithmetic); other codecs fall back to the demuxer's dimensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpsProbe;

impl SpsProbe {
    /// Parses the first H.264 SPS of an `avcC` record or Annex B parameter sets.
    pub fn h264_dimensions(extradata: &[u8]) -> Result<(u32, u32), ProbeError> {
        let codec = || "h264".to_owned();
        let sps = first_h264_sps(extradata).ok_or_else(|| ProbeError::NoSps { codec: codec() })?;
        let bad = |reason: String| ProbeError::BadSps {
            codec: codec(),
            reason,
        };
        let rbsp = decode_nal(sps).map_err(|e| bad(e.to_string()))?;
        let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
            .map_err(|e| bad(format!("{e:?}")))?;
        sps.pixel_dimensions().map_err(|e| bad(format!("{e:?}")))
    }

    /// Parses the first H.265 SPS of an `hvcC` record or Annex B parameter sets: the picture
    /// size after the conformance window.
    pub fn h265_dimensions(extradata: &[u8]) -> Result<(u32, u32), ProbeError> {
        let codec = || "hevc".to_owned();
        let sps = first_h265_sps(extradata).ok_or_else(|| ProbeError::NoSps { codec: codec() })?;
        let bad = |reason: String| ProbeError::BadSps {
            codec: codec(),
            reason,
        };
        // scuffle-h265 0.2 panics on some malformed scaling lists (an unchecked subtraction,
        // found by the garbage test below): contain it, a hostile camera must not end a run.
        let parsed =
            std::panic::catch_unwind(|| scuffle_h265::SpsNALUnit::parse(std::io::Cursor::new(sps)));
        let unit = match parsed {
            Ok(Ok(unit)) => unit,
            Ok(Err(e)) => return Err(bad(e.to_string())),
            Err(_) => return Err(bad("the parser failed on it".to_owned())),
        };
        let sps = &unit.rbsp;
        let window = &sps.conformance_window;
        let crop = |size: u64, sub: u8, a: u64, b: u64| {
            a.checked_add(b)
                .and_then(|o| o.checked_mul(u64::from(sub)))
                .and_then(|o| size.checked_sub(o))
                .filter(|v| *v > 0)
                .and_then(|v| u32::try_from(v).ok())
        };
        let w = crop(
            sps.pic_width_in_luma_samples.get(),
            sps.sub_width_c(),
            window.conf_win_left_offset,
            window.conf_win_right_offset,
        );
        let h = crop(
            sps.pic_height_in_luma_samples.get(),
            sps.sub_height_c(),
            window.conf_win_top_offset,
            window.conf_win_bottom_offset,
        );
        match (w, h) {
            (Some(w), Some(h)) => Ok((w, h)),
            _ => Err(bad(
                "the conformance window is larger than the picture".to_owned()
            )),
        }
    }
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
