//! Hostile bytes on stable Rust, in every test run: real encoders' parameter sets and MP4 files,
//! mutated thousands of times (bit flips, overwritten bytes, cuts, inserted runs). Every
//! probe must answer with a value or an error. `cargo xtask fuzz` goes further with libFuzzer.

use std::path::Path;
use std::process::Command;

use crispy_core::Codec;
use crispy_probe::{Mp4Probe, SpsProbe};

fn ffmpeg(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
        ])
        .args(["-i", "testsrc2=size=642x362:rate=25", "-pix_fmt", "yuv420p"])
        .args(["-x265-params", "log-level=error"])
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
    std::fs::read(out).expect("read")
}

fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.usize(1..4) {
        if data.is_empty() {
            break;
        }
        let at = rng.usize(..data.len());
        match rng.u8(..5) {
            0 => data[at] ^= 1 << rng.u8(..8),
            1 => data[at] = rng.u8(..),
            2 => data.truncate(at),
            3 => {
                let run = [0x00, 0xff][rng.usize(..2)];
                data.splice(at..at, std::iter::repeat_n(run, rng.usize(1..16)));
            }
            _ => {
                let end = (at + 4).min(data.len());
                data[at..end].fill(0xff);
            }
        }
    }
    data
}

#[test]
fn mutated_parameter_sets_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h264 = ffmpeg(
        dir.path(),
        "a.h264",
        &[
            "-frames:v",
            "1",
            "-c:v",
            "libx264",
            "-bsf:v",
            "filter_units=pass_types=7-8",
            "-f",
            "h264",
        ],
    );
    let h265 = ffmpeg(
        dir.path(),
        "a.hevc",
        &[
            "-frames:v",
            "1",
            "-c:v",
            "libx265",
            "-bsf:v",
            "filter_units=pass_types=32-34",
            "-f",
            "hevc",
        ],
    );
    assert_eq!(SpsProbe::h264_dimensions(&h264).ok(), Some((642, 362)));
    assert_eq!(SpsProbe::h265_dimensions(&h265).ok(), Some((642, 362)));
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let (mut parsed, mut rejected) = (0, 0);
    for _ in 0..4000 {
        for (codec, seed) in [(Codec::H264, &h264), (Codec::H265, &h265)] {
            match SpsProbe::report(codec, &mutate(&mut rng, seed)) {
                Some(Ok(r)) => {
                    assert!(r.width > 0 && r.height > 0 && r.width <= r.coded_width);
                    parsed += 1;
                }
                _ => rejected += 1,
            }
        }
    }
    // Both outcomes happen: the mutations reach past the parsers' first checks.
    assert!(
        parsed > 100 && rejected > 100,
        "{parsed} parsed, {rejected} rejected"
    );
}

#[test]
fn mutated_mp4_files_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeds = [
        ffmpeg(
            dir.path(),
            "a.mp4",
            &[
                "-frames:v",
                "4",
                "-c:v",
                "libx264",
                "-movflags",
                "+faststart",
            ],
        ),
        ffmpeg(
            dir.path(),
            "b.mp4",
            &[
                "-frames:v",
                "4",
                "-c:v",
                "libx265",
                "-tag:v",
                "hev1",
                "-movflags",
                "+faststart",
            ],
        ),
    ];
    for seed in &seeds {
        assert_eq!(Mp4Probe::probe(seed).map(|r| r.samples).ok(), Some(4));
    }
    let mut rng = fastrand::Rng::with_seed(0x3f4);
    let (mut parsed, mut rejected) = (0, 0);
    for _ in 0..3000 {
        for seed in &seeds {
            // Mutations inside the header boxes (the first kilobyte) matter most.
            let head = seed.len().min(1500);
            let mut data = mutate(&mut rng, &seed[..head]);
            data.extend_from_slice(&seed[head..]);
            match Mp4Probe::probe(&data) {
                Ok(_) => parsed += 1,
                Err(_) => rejected += 1,
            }
        }
    }
    assert!(
        parsed > 100 && rejected > 100,
        "{parsed} parsed, {rejected} rejected"
    );
}

/// Inputs `cargo xtask fuzz` found that hung, exhausted memory or panicked in the parsers we
/// depend on (kept as regression cases).
#[test]
fn inputs_the_fuzzer_found_are_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let read = |name: &str| std::fs::read(dir.join(name)).expect("regression input");
    // A box of size 0 made the `mp4` crate seek back to the same header forever.
    assert!(Mp4Probe::probe(&read("mp4-box-size-loop.bin")).is_err());
    // A `meta` child whose size runs past the file made it allocate 2 GB.
    assert!(Mp4Probe::probe(&read("mp4-meta-alloc.bin")).is_err());
    // scuffle-h265 subtracted past zero on this SPS; ours reads it as an error or a report.
    let sps = read("h265-sps-transform-depth.bin");
    let _ = SpsProbe::h265_report(&sps);
    // And asked for billions of SCC palette initializers on this one.
    let _ = SpsProbe::h265_report(&read("h265-sps-palette-alloc.bin"));
}
