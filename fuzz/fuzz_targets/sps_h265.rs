//! H.265 parameter sets (`hvcC` or Annex B) from a hostile camera: an error, never a panic.
#![no_main]

use crispy_probe::SpsProbe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // The probe contains the third-party parser's own panics (catch_unwind) and turns them
    // into errors; libFuzzer's hook would abort on those too. A panic that escapes the probe
    // still aborts: libfuzzer-sys catches it around each input.
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| {
    if let Ok(report) = SpsProbe::h265_report(data) {
        assert!(report.width > 0 && report.height > 0);
        assert!(report.width <= report.coded_width && report.height <= report.coded_height);
    }
    }
);
