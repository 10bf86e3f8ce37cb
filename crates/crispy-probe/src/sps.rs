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
/// H.264 is parsed from the SPS; other codecs fall back to the demuxer's dimensions (the full
/// H.265 SPS parser comes with the trust work).
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
}

impl ResolutionProbe for SpsProbe {
    type Error = ProbeError;

    fn resolution(&self, info: &StreamInfo) -> Result<(u32, u32), ProbeError> {
        match info.codec {
            Codec::H264 => Self::h264_dimensions(&info.extradata),
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
