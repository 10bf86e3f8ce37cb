//! MP4 chunks read back from a sink nobody guarantees: an error, never a panic.
#![no_main]

use crispy_probe::Mp4Probe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // The probe contains the third-party parser's own panics (catch_unwind) and turns them
    // into errors; libFuzzer's hook would abort on those too. A panic that escapes the probe
    // still aborts: libfuzzer-sys catches it around each input.
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| {
    let _ = Mp4Probe::probe(data);
    }
);
