//! H.264 parameter sets (`avcC` or Annex B) from a hostile camera: an error, never a panic.
#![no_main]

use crispy_core::Codec;
use crispy_probe::SpsProbe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(Ok(report)) = SpsProbe::report(Codec::H264, data) {
        assert!(report.width > 0 && report.height > 0);
        assert!(report.width <= report.coded_width && report.height <= report.coded_height);
    }
});
