//! Decoder configuration records (`avcC`, `hvcC`) and sample framing.

use bytes::{BufMut, Bytes, BytesMut};
use crispy_core::Codec;

use crispy_core::annexb::annexb_nals;

use crate::ChunkerError;
use crate::mp4::{FourCc, NalFraming as Framing};

/// The sample entry type and configuration box of a video track.
#[derive(Debug, Clone)]
pub(crate) struct TrackCodec {
    pub(crate) sample_entry: FourCc,
    pub(crate) config_box: FourCc,
    pub(crate) record: Bytes,
    pub(crate) framing: Framing,
}

impl TrackCodec {
    /// Builds the track codec from `extradata`; `Ok(None)` when the extradata is empty and the
    /// parameter sets must come from the first keyframe.
    pub(crate) fn from_extradata(
        codec: &Codec,
        extradata: &[u8],
    ) -> Result<Option<Self>, ChunkerError> {
        let (sample_entry, config_box) = entry_names(codec)?;
        if extradata.is_empty() {
            return Ok(None);
        }
        if extradata[0] == 1 {
            // Already an avcC / hvcC record (the MP4 / Matroska demuxers give these).
            let min_len = if *codec == Codec::H264 { 7 } else { 23 };
            if extradata.len() < min_len {
                return Err(bad(codec, "configuration record too short"));
            }
            return Ok(Some(Self {
                sample_entry,
                config_box,
                record: Bytes::copy_from_slice(extradata),
                framing: Framing::LengthPrefixed,
            }));
        }
        Self::from_annexb(codec, extradata).map(Some)
    }

    /// Builds the track codec from Annex B parameter sets (in extradata or a keyframe).
    pub(crate) fn from_annexb(codec: &Codec, data: &[u8]) -> Result<Self, ChunkerError> {
        // `hvc1` for H.265 too: the chunk leaves out the samples' in-band copies of the
        // parameter sets in the record (see `mp4::write_mp4`), as `hvc1` wants, and Apple's
        // players take no other.
        let (sample_entry, config_box) = entry_names(codec)?;
        let nals: Vec<&[u8]> = annexb_nals(data).collect();
        let record = match codec {
            Codec::H264 => avcc_from_nals(&nals).ok_or_else(|| bad(codec, "no SPS/PPS found"))?,
            _ => hvcc_from_nals(&nals).ok_or_else(|| bad(codec, "no VPS/SPS/PPS found"))?,
        };
        Ok(Self {
            sample_entry,
            config_box,
            record,
            framing: Framing::AnnexB,
        })
    }
}

fn entry_names(codec: &Codec) -> Result<(FourCc, FourCc), ChunkerError> {
    match codec {
        Codec::H264 => Ok((FourCc(*b"avc1"), FourCc(*b"avcC"))),
        Codec::H265 => Ok((FourCc(*b"hvc1"), FourCc(*b"hvcC"))),
        other => Err(ChunkerError::UnsupportedCodec {
            codec: other.name().to_owned(),
        }),
    }
}

fn bad(codec: &Codec, reason: &str) -> ChunkerError {
    ChunkerError::BadConfig {
        codec: codec.name().to_owned(),
        reason: reason.to_owned(),
    }
}

fn avcc_from_nals(nals: &[&[u8]]) -> Option<Bytes> {
    let sps: Vec<&[u8]> = nals.iter().copied().filter(|n| n[0] & 0x1f == 7).collect();
    let pps: Vec<&[u8]> = nals.iter().copied().filter(|n| n[0] & 0x1f == 8).collect();
    let first = sps.first()?;
    if pps.is_empty() || first.len() < 4 {
        return None;
    }
    let mut b = BytesMut::new();
    b.put_u8(1);
    b.put_slice(&first[1..4]); // profile_idc, constraint flags, level_idc
    b.put_u8(0xfc | 3); // lengthSizeMinusOne = 3
    b.put_u8(0xe0 | sps.len().min(31) as u8);
    for s in sps.iter().take(31) {
        b.put_u16(s.len() as u16);
        b.put_slice(s);
    }
    b.put_u8(pps.len().min(255) as u8);
    for p in pps.iter().take(255) {
        b.put_u16(p.len() as u16);
        b.put_slice(p);
    }
    Some(b.freeze())
}

/// Removes emulation-prevention bytes (`00 00 03` → `00 00`).
fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

fn hvcc_from_nals(nals: &[&[u8]]) -> Option<Bytes> {
    let kind = |n: &[u8]| (n[0] >> 1) & 0x3f;
    let of = |t: u8| -> Vec<&[u8]> {
        nals.iter()
            .copied()
            .filter(|n| n.len() > 2 && kind(n) == t)
            .collect()
    };
    let (vps, sps, pps) = (of(32), of(33), of(34));
    let first_sps = unescape_rbsp(sps.first()?);
    if vps.is_empty() || pps.is_empty() || first_sps.len() < 15 {
        return None;
    }
    // SPS: 2-byte NAL header, then vps_id(4) max_sub_layers_minus1(3) nesting(1), then the
    // 12-byte general profile_tier_level, byte aligned.
    let nesting = first_sps[2] & 1;
    let ptl = &first_sps[3..15];
    let mut b = BytesMut::new();
    b.put_u8(1);
    b.put_slice(ptl);
    b.put_u16(0xf000); // min_spatial_segmentation_idc = 0
    b.put_u8(0xfc); // parallelismType = 0
    b.put_u8(0xfc | 1); // chroma_format_idc = 4:2:0 (informative; decoders read the SPS)
    b.put_u8(0xf8); // bit_depth_luma_minus8 = 0
    b.put_u8(0xf8); // bit_depth_chroma_minus8 = 0
    b.put_u16(0); // avgFrameRate
    b.put_u8((1 << 3) | (nesting << 2) | 3); // numTemporalLayers=1, lengthSizeMinusOne=3
    b.put_u8(3);
    for (t, list) in [(32u8, &vps), (33, &sps), (34, &pps)] {
        b.put_u8(0x80 | t); // array_completeness = 1
        b.put_u16(list.len() as u16);
        for n in list.iter() {
            b.put_u16(n.len() as u16);
            b.put_slice(n);
        }
    }
    Some(b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_avcc_from_annexb() {
        let data = [
            0, 0, 0, 1, 0x67, 0x64, 0, 0x28, 0xac, 0, 0, 0, 1, 0x68, 0xee, 0x3c,
        ];
        let tc = TrackCodec::from_annexb(&Codec::H264, &data).expect("avcC");
        assert_eq!(&tc.record[..6], &[1, 0x64, 0, 0x28, 0xff, 0xe1]);
        assert_eq!(tc.framing, Framing::AnnexB);
    }

    #[test]
    fn rejects_missing_parameter_sets_and_other_codecs() {
        assert!(TrackCodec::from_annexb(&Codec::H264, &[0, 0, 1, 0x65, 1]).is_err());
        assert!(TrackCodec::from_extradata(&Codec::Other("mpeg4".into()), &[1]).is_err());
        assert!(TrackCodec::from_extradata(&Codec::H265, &[1, 2, 3]).is_err());
        assert!(matches!(
            TrackCodec::from_extradata(&Codec::H264, &[]),
            Ok(None)
        ));
    }

    #[test]
    fn unescapes_emulation_prevention() {
        assert_eq!(unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
