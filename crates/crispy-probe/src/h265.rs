//! A careful H.265 sequence parameter set reader (ITU-T H.265 §7.3.2.2), up to the VUI timing
//! information: every count is range-checked before it is used, nothing is allocated from a
//! coded value, and every read is bounded by the input.
//!
//! Why not a crate: `scuffle-h265` 0.2 (the one maintained SPS parser we found) panics on
//! unchecked subtractions and allocates from unbounded Exp-Golomb values in the SCC
//! extension, so a 138-byte SPS from a hostile camera could abort the process (both found by
//! `cargo xtask fuzz`). The bit reading (emulation prevention, Exp-Golomb) is `h264-reader`'s;
//! H.265 codes them the same way.

use std::num::NonZeroUsize;

use h264_reader::rbsp::{BitRead, BitReader, BitReaderError, ByteReader};

/// The SPS fields `SpsReport` needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct H265Sps {
    pub profile_idc: u8,
    pub tier_flag: bool,
    pub level_idc: u8,
    pub interlaced_source: bool,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    pub pic_width: u32,
    pub pic_height: u32,
    /// left, right, top, bottom, in chroma units.
    pub conf_win: [u32; 4],
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// (num_units_in_tick, time_scale) from the VUI.
    pub timing: Option<(u32, u32)>,
    /// The short-term reference picture sets' delta POCs (S0, S1), as derived.
    pub ref_pic_sets: Vec<(Vec<i32>, Vec<i32>)>,
}

impl H265Sps {
    /// Displayed width and height: the picture minus the conformance window, `None` when the
    /// window is larger than the picture.
    pub fn cropped(&self) -> Option<(u32, u32)> {
        let chroma_array_type = if self.separate_colour_plane {
            0
        } else {
            self.chroma_format_idc
        };
        let (sub_w, sub_h) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let [l, r, t, b] = self.conf_win.map(u64::from);
        let crop = |size: u32, sub: u64, a: u64, b: u64| {
            (a + b)
                .checked_mul(sub)
                .and_then(|c| u64::from(size).checked_sub(c))
                .filter(|v| *v > 0)
                .and_then(|v| u32::try_from(v).ok())
        };
        Some((
            crop(self.pic_width, sub_w, l, r)?,
            crop(self.pic_height, sub_h, t, b)?,
        ))
    }
}

/// Parses one SPS NAL unit, its 2-byte header included.
pub(crate) fn parse_sps(nal: &[u8]) -> Result<H265Sps, String> {
    if nal.len() < 3 {
        return Err("the SPS is cut short".to_owned());
    }
    let skip = NonZeroUsize::new(2).ok_or("header")?;
    let mut r = BitReader::new(ByteReader::skipping_bytes(nal, skip));
    parse(&mut r).map_err(|e| match e {
        Error::Bits(e) => format!("{e:?}"),
        Error::Range(field, value) => format!("{field} = {value} is out of range"),
    })
}

enum Error {
    Bits(BitReaderError),
    Range(&'static str, u64),
}

impl From<BitReaderError> for Error {
    fn from(e: BitReaderError) -> Self {
        Error::Bits(e)
    }
}

/// `ue(v)` that must be at most `max`.
fn ue_max<R: BitRead>(r: &mut R, name: &'static str, max: u32) -> Result<u32, Error> {
    let v = r.read_ue(name)?;
    if v > max {
        return Err(Error::Range(name, u64::from(v)));
    }
    Ok(v)
}

fn parse<R: BitRead>(r: &mut R) -> Result<H265Sps, Error> {
    r.skip(4, "sps_video_parameter_set_id")?;
    let max_sub_layers_minus1: u8 = r.read(3, "sps_max_sub_layers_minus1")?;
    if max_sub_layers_minus1 > 6 {
        return Err(Error::Range(
            "sps_max_sub_layers_minus1",
            max_sub_layers_minus1.into(),
        ));
    }
    r.skip(1, "sps_temporal_id_nesting_flag")?;

    // profile_tier_level(1, sps_max_sub_layers_minus1), §7.3.3
    r.skip(2, "general_profile_space")?;
    let tier_flag = r.read_bool("general_tier_flag")?;
    let profile_idc: u8 = r.read(5, "general_profile_idc")?;
    r.skip(32, "general_profile_compatibility_flags")?;
    r.skip(1, "general_progressive_source_flag")?;
    let interlaced_source = r.read_bool("general_interlaced_source_flag")?;
    // non_packed, frame_only, 43 bits of constraint flags, inbld/reserved.
    r.skip(2 + 43 + 1, "general_constraint_flags")?;
    let level_idc: u8 = r.read(8, "general_level_idc")?;
    let mut profile_present = [false; 8];
    let mut level_present = [false; 8];
    for i in 0..usize::from(max_sub_layers_minus1) {
        profile_present[i] = r.read_bool("sub_layer_profile_present_flag")?;
        level_present[i] = r.read_bool("sub_layer_level_present_flag")?;
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(
            2 * (8 - u32::from(max_sub_layers_minus1)),
            "reserved_zero_2bits",
        )?;
    }
    for i in 0..usize::from(max_sub_layers_minus1) {
        if profile_present[i] {
            r.skip(88, "sub_layer_profile")?;
        }
        if level_present[i] {
            r.skip(8, "sub_layer_level_idc")?;
        }
    }

    ue_max(r, "sps_seq_parameter_set_id", 15)?;
    let chroma_format_idc = ue_max(r, "chroma_format_idc", 3)?;
    let separate_colour_plane =
        chroma_format_idc == 3 && r.read_bool("separate_colour_plane_flag")?;
    let pic_width = r.read_ue("pic_width_in_luma_samples")?;
    let pic_height = r.read_ue("pic_height_in_luma_samples")?;
    if pic_width == 0 || pic_height == 0 {
        return Err(Error::Range("pic_width/height_in_luma_samples", 0));
    }
    let mut conf_win = [0u32; 4];
    if r.read_bool("conformance_window_flag")? {
        for v in &mut conf_win {
            *v = r.read_ue("conf_win_offset")?;
        }
    }
    let bit_depth_luma = 8 + ue_max(r, "bit_depth_luma_minus8", 8)? as u8;
    let bit_depth_chroma = 8 + ue_max(r, "bit_depth_chroma_minus8", 8)? as u8;
    let log2_max_poc_lsb = 4 + ue_max(r, "log2_max_pic_order_cnt_lsb_minus4", 12)?;
    // Everything the resolution needs is read. The rest (reference picture sets, VUI) only
    // gives the frame rate: a tail we cannot read costs the frame rate, not the picture size.
    let mut ref_pic_sets = Vec::new();
    let timing = read_tail(
        r,
        max_sub_layers_minus1,
        log2_max_poc_lsb,
        &mut ref_pic_sets,
    )
    .unwrap_or(None);
    Ok(H265Sps {
        profile_idc,
        tier_flag,
        level_idc,
        interlaced_source,
        chroma_format_idc,
        separate_colour_plane,
        pic_width,
        pic_height,
        conf_win,
        bit_depth_luma,
        bit_depth_chroma,
        timing,
        ref_pic_sets,
    })
}

/// The SPS after `log2_max_pic_order_cnt_lsb_minus4`, up to the VUI timing information.
fn read_tail<R: BitRead>(
    r: &mut R,
    max_sub_layers_minus1: u8,
    log2_max_poc_lsb: u32,
    ref_pic_sets: &mut Vec<(Vec<i32>, Vec<i32>)>,
) -> Result<Option<(u32, u32)>, Error> {
    let all_sub_layers = r.read_bool("sps_sub_layer_ordering_info_present_flag")?;
    let first = if all_sub_layers {
        0
    } else {
        max_sub_layers_minus1
    };
    for _ in first..=max_sub_layers_minus1 {
        ue_max(r, "sps_max_dec_pic_buffering_minus1", 15)?;
        ue_max(r, "sps_max_num_reorder_pics", 15)?;
        r.read_ue("sps_max_latency_increase_plus1")?;
    }
    let min_cb = 3 + ue_max(r, "log2_min_luma_coding_block_size_minus3", 3)?;
    let ctb = min_cb + ue_max(r, "log2_diff_max_min_luma_coding_block_size", 3)?;
    let min_tb = 2 + ue_max(r, "log2_min_luma_transform_block_size_minus2", 3)?;
    ue_max(r, "log2_diff_max_min_luma_transform_block_size", 3)?;
    let depth_max = ctb.saturating_sub(min_tb);
    ue_max(r, "max_transform_hierarchy_depth_inter", depth_max)?;
    ue_max(r, "max_transform_hierarchy_depth_intra", depth_max)?;
    if r.read_bool("scaling_list_enabled_flag")?
        && r.read_bool("sps_scaling_list_data_present_flag")?
    {
        skip_scaling_list_data(r)?;
    }
    r.skip(2, "amp_enabled_flag, sample_adaptive_offset_enabled_flag")?;
    if r.read_bool("pcm_enabled_flag")? {
        r.skip(8, "pcm_sample_bit_depth")?;
        r.read_ue("log2_min_pcm_luma_coding_block_size_minus3")?;
        r.read_ue("log2_diff_max_min_pcm_luma_coding_block_size")?;
        r.skip(1, "pcm_loop_filter_disabled_flag")?;
    }
    let num_sets = ue_max(r, "num_short_term_ref_pic_sets", 64)? as usize;
    let mut sets: Vec<RefPicSet> = Vec::with_capacity(num_sets);
    for idx in 0..num_sets {
        let set = read_st_ref_pic_set(r, &sets, idx)?;
        ref_pic_sets.push((set.s0.clone(), set.s1.clone()));
        sets.push(set);
    }
    if r.read_bool("long_term_ref_pics_present_flag")? {
        let n = ue_max(r, "num_long_term_ref_pics_sps", 32)?;
        for _ in 0..n {
            r.skip(log2_max_poc_lsb, "lt_ref_pic_poc_lsb_sps")?;
            r.skip(1, "used_by_curr_pic_lt_sps_flag")?;
        }
    }
    r.skip(
        2,
        "sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag",
    )?;
    if r.read_bool("vui_parameters_present_flag")? {
        read_vui_timing(r)
    } else {
        Ok(None)
    }
}

/// scaling_list_data(), §7.3.4: read past it.
fn skip_scaling_list_data<R: BitRead>(r: &mut R) -> Result<(), Error> {
    for size_id in 0..4u32 {
        let step = if size_id == 3 { 3 } else { 1 };
        for _ in (0..6).step_by(step) {
            if !r.read_bool("scaling_list_pred_mode_flag")? {
                ue_max(r, "scaling_list_pred_matrix_id_delta", 5)?;
            } else {
                let coefs = 64.min(1 << (4 + (size_id << 1)));
                if size_id > 1 {
                    r.read_se("scaling_list_dc_coef_minus8")?;
                }
                for _ in 0..coefs {
                    r.read_se("scaling_list_delta_coef")?;
                }
            }
        }
    }
    Ok(())
}

/// A short-term reference picture set's delta POCs (negative, then positive).
struct RefPicSet {
    s0: Vec<i32>,
    s1: Vec<i32>,
}

/// The most pictures one set may hold (§7.4.8: at most sps_max_dec_pic_buffering, ≤ 16).
const MAX_PICS: usize = 16;

/// st_ref_pic_set(idx), §7.3.7 and §7.4.8, with the delta POCs derived (later sets in the
/// SPS may be predicted from this one).
#[allow(
    clippy::needless_range_loop,
    reason = "the loops follow equations (7-61) and (7-62) index by index"
)]
fn read_st_ref_pic_set<R: BitRead>(
    r: &mut R,
    sets: &[RefPicSet],
    idx: usize,
) -> Result<RefPicSet, Error> {
    let predicted = idx != 0 && r.read_bool("inter_ref_pic_set_prediction_flag")?;
    if predicted {
        // In an SPS the reference is always the previous set (delta_idx_minus1 is only
        // coded in slice headers).
        let reference = &sets[idx - 1];
        let negative = r.read_bool("delta_rps_sign")?;
        let abs = 1 + ue_max(r, "abs_delta_rps_minus1", (1 << 15) - 1)? as i32;
        let delta_rps = if negative { -abs } else { abs };
        let n_ref = reference.s0.len() + reference.s1.len();
        let mut use_delta = [true; 2 * MAX_PICS + 1];
        for flag in use_delta.iter_mut().take(n_ref + 1) {
            let used_by_curr = r.read_bool("used_by_curr_pic_flag")?;
            if !used_by_curr {
                *flag = r.read_bool("use_delta_flag")?;
            }
        }
        // (7-61), (7-62)
        let (n_neg, n_pos) = (reference.s0.len(), reference.s1.len());
        let mut s0 = Vec::new();
        for j in (0..n_pos).rev() {
            let d = reference.s1[j] + delta_rps;
            if d < 0 && use_delta[n_neg + j] {
                s0.push(d);
            }
        }
        if delta_rps < 0 && use_delta[n_ref] {
            s0.push(delta_rps);
        }
        for j in 0..n_neg {
            let d = reference.s0[j] + delta_rps;
            if d < 0 && use_delta[j] {
                s0.push(d);
            }
        }
        let mut s1 = Vec::new();
        for j in (0..n_neg).rev() {
            let d = reference.s0[j] + delta_rps;
            if d > 0 && use_delta[j] {
                s1.push(d);
            }
        }
        if delta_rps > 0 && use_delta[n_ref] {
            s1.push(delta_rps);
        }
        for j in 0..n_pos {
            let d = reference.s1[j] + delta_rps;
            if d > 0 && use_delta[n_neg + j] {
                s1.push(d);
            }
        }
        if s0.len() > MAX_PICS || s1.len() > MAX_PICS {
            return Err(Error::Range("NumDeltaPocs", (s0.len() + s1.len()) as u64));
        }
        Ok(RefPicSet { s0, s1 })
    } else {
        let n_neg = ue_max(r, "num_negative_pics", MAX_PICS as u32)? as usize;
        let n_pos = ue_max(r, "num_positive_pics", MAX_PICS as u32)? as usize;
        let mut poc = 0i32;
        let mut s0 = Vec::with_capacity(n_neg);
        for _ in 0..n_neg {
            poc -= 1 + ue_max(r, "delta_poc_s0_minus1", (1 << 15) - 1)? as i32;
            r.skip(1, "used_by_curr_pic_s0_flag")?;
            s0.push(poc);
        }
        poc = 0;
        let mut s1 = Vec::with_capacity(n_pos);
        for _ in 0..n_pos {
            poc += 1 + ue_max(r, "delta_poc_s1_minus1", (1 << 15) - 1)? as i32;
            r.skip(1, "used_by_curr_pic_s1_flag")?;
            s1.push(poc);
        }
        Ok(RefPicSet { s0, s1 })
    }
}

/// vui_parameters(), §E.2.1, up to and including the timing information.
fn read_vui_timing<R: BitRead>(r: &mut R) -> Result<Option<(u32, u32)>, Error> {
    if r.read_bool("aspect_ratio_info_present_flag")? {
        let idc: u8 = r.read(8, "aspect_ratio_idc")?;
        if idc == 255 {
            r.skip(32, "sar_width, sar_height")?;
        }
    }
    if r.read_bool("overscan_info_present_flag")? {
        r.skip(1, "overscan_appropriate_flag")?;
    }
    if r.read_bool("video_signal_type_present_flag")? {
        r.skip(4, "video_format, video_full_range_flag")?;
        if r.read_bool("colour_description_present_flag")? {
            r.skip(
                24,
                "colour_primaries, transfer_characteristics, matrix_coeffs",
            )?;
        }
    }
    if r.read_bool("chroma_loc_info_present_flag")? {
        r.read_ue("chroma_sample_loc_type_top_field")?;
        r.read_ue("chroma_sample_loc_type_bottom_field")?;
    }
    r.skip(3, "neutral_chroma, field_seq, frame_field_info_present")?;
    if r.read_bool("default_display_window_flag")? {
        for _ in 0..4 {
            r.read_ue("def_disp_win_offset")?;
        }
    }
    if !r.read_bool("vui_timing_info_present_flag")? {
        return Ok(None);
    }
    let num_units_in_tick: u32 = r.read(32, "vui_num_units_in_tick")?;
    let time_scale: u32 = r.read(32, "vui_time_scale")?;
    Ok((num_units_in_tick > 0 && time_scale > 0).then_some((num_units_in_tick, time_scale)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes bits MSB first, with Exp-Golomb codes and emulation prevention.
    #[derive(Default)]
    struct Bits {
        bits: Vec<bool>,
    }

    impl Bits {
        fn u(&mut self, n: u32, v: u64) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u64) -> &mut Self {
            let code = v + 1;
            let len = 64 - code.leading_zeros();
            self.u(len - 1, 0).u(len, code)
        }
        fn se(&mut self, v: i64) -> &mut Self {
            let mapped = if v > 0 { 2 * v - 1 } else { -2 * v };
            self.ue(mapped as u64)
        }
        /// The NAL unit: header 0x42 0x01, RBSP with stop bit, emulation prevention.
        fn nal(&mut self) -> Vec<u8> {
            self.bits.push(true);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let rbsp: Vec<u8> = self
                .bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |a, &b| a << 1 | u8::from(b)))
                .collect();
            let mut out = vec![0x42, 0x01];
            let mut zeros = 0;
            for b in rbsp {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// A 1080p Main SPS as hardware encoders write them: two sub-layers, a scaling list,
    /// PCM, reference picture sets in the SPS (one explicit, two predicted), long-term
    /// pictures, and VUI with every optional part before the 30000/1001 timing.
    fn camera_sps(timing: bool) -> Vec<u8> {
        let mut b = Bits::default();
        b.u(4, 0).u(3, 1).u(1, 1); // vps id, max_sub_layers_minus1 = 1, nesting
        // profile_tier_level: Main, Main tier, level 4.1 (123)
        b.u(2, 0).u(1, 0).u(5, 1).u(32, 0x6000_0000);
        b.u(1, 1).u(1, 0).u(1, 0).u(1, 1).u(43, 0).u(1, 0).u(8, 123);
        b.u(1, 1).u(1, 1); // sub-layer 0: profile and level present
        b.u(2 * 7, 0); // reserved_zero_2bits for i = 1..8
        b.u(56, 0).u(32, 0x1234).u(8, 120); // sub-layer profile (88 bits), level
        b.ue(0).ue(1); // sps id, 4:2:0
        b.ue(1920).ue(1088).u(1, 1).ue(0).ue(0).ue(0).ue(4); // crop 8 lines
        b.ue(0).ue(0).ue(4); // 8-bit, log2_max_poc_lsb = 8
        b.u(1, 1).ue(3).ue(1).ue(0).ue(4).ue(2).ue(0); // both sub-layers
        b.ue(0).ue(3).ue(0).ue(3).ue(1).ue(1); // CTB 64, TB 4..32
        b.u(1, 1).u(1, 1); // scaling lists, coded in the SPS
        for size_id in 0..4u32 {
            let step = if size_id == 3 { 3 } else { 1 };
            for matrix_id in (0..6).step_by(step) {
                if matrix_id % 2 == 0 {
                    b.u(1, 1);
                    if size_id > 1 {
                        b.se(8);
                    }
                    for i in 0..64.min(1 << (4 + (size_id << 1))) {
                        b.se(if i % 3 == 0 { 1 } else { -1 });
                    }
                } else {
                    b.u(1, 0).ue(1);
                }
            }
        }
        b.u(1, 1).u(1, 1); // amp, sao
        b.u(1, 1).u(4, 7).u(4, 7).ue(0).ue(1).u(1, 0); // pcm
        b.ue(3);
        // set 0, explicit: S0 = [-1, -3], S1 = [+2]
        b.ue(2).ue(1).ue(0).u(1, 1).ue(1).u(1, 0).ue(1).u(1, 1);
        // set 1, predicted from set 0 with deltaRps -1: four flags (three pictures and
        // deltaRps itself), the second one unused, the fourth used only as a reference:
        // S0 = [-1, -2], S1 = [+1]
        b.u(1, 1).u(1, 1).ue(0);
        b.u(1, 1).u(1, 0).u(1, 0).u(1, 1).u(1, 0).u(1, 1);
        // set 2, predicted from set 1 (three pictures: four flags) with deltaRps +2, the
        // first and last unused; -2 + 2 = 0 drops out (7-62): S0 = [], S1 = [+3]
        b.u(1, 1).u(1, 0).ue(1);
        b.u(1, 0).u(1, 0).u(1, 1).u(1, 1).u(1, 0).u(1, 0);
        b.u(1, 1).ue(2).u(8, 5).u(1, 1).u(8, 9).u(1, 0); // long-term pictures
        b.u(1, 1).u(1, 1); // tmvp, strong intra smoothing
        b.u(1, 1); // vui
        b.u(1, 1).u(8, 255).u(16, 4).u(16, 3); // aspect ratio, extended SAR
        b.u(1, 1).u(1, 0); // overscan
        b.u(1, 1).u(3, 5).u(1, 0).u(1, 1).u(24, 0x010101); // video signal, colour
        b.u(1, 1).ue(0).ue(0); // chroma loc
        b.u(3, 0);
        b.u(1, 1).ue(0).ue(0).ue(0).ue(0); // default display window
        if timing {
            b.u(1, 1).u(32, 1001).u(32, 30000).u(1, 0);
        } else {
            b.u(1, 0);
        }
        b.u(1, 0); // bitstream restriction
        b.u(1, 0); // no extensions
        b.nal()
    }

    #[test]
    fn reads_through_ref_pic_sets_scaling_lists_and_vui_to_the_timing() {
        let sps = parse_sps(&camera_sps(true)).expect("parses");
        assert_eq!((sps.pic_width, sps.pic_height), (1920, 1088));
        assert_eq!(sps.cropped(), Some((1920, 1080)));
        assert_eq!(
            (sps.profile_idc, sps.level_idc, sps.tier_flag),
            (1, 123, false)
        );
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (8, 8));
        assert_eq!(
            sps.ref_pic_sets,
            [
                (vec![-1, -3], vec![2]),
                (vec![-1, -2], vec![1]),
                (vec![], vec![3]),
            ]
        );
        // Any bit miscounted before it would make this garbage.
        assert_eq!(sps.timing, Some((1001, 30000)));
        assert_eq!(parse_sps(&camera_sps(false)).expect("parses").timing, None);
    }

    #[test]
    fn a_tail_it_cannot_read_costs_the_frame_rate_not_the_size() {
        let full = camera_sps(true);
        // Cut in the middle of the reference picture sets.
        let cut = &full[..full.len() * 2 / 3];
        let sps = parse_sps(cut).expect("the size is still read");
        assert_eq!(sps.cropped(), Some((1920, 1080)));
        assert_eq!(sps.timing, None);
        // Cut before the size: an error.
        assert!(parse_sps(&full[..12]).is_err());
    }
}
