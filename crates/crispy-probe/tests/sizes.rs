//! Resolution from real encoders' parameter sets: cropped, odd-sized and portrait pictures,
//! H.264 and H.265, encoded by the ffmpeg CLI (libx264, libx265) as raw Annex B streams.

use std::process::Command;

use crispy_probe::SpsProbe;

fn encode(codec: &str, format: &str, (w, h): (u32, u32)) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("stream");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size={w}x{h}:rate=25"))
        .args(["-frames:v", "1", "-pix_fmt", "yuv420p", "-c:v", codec])
        .args(["-x265-params", "log-level=error"])
        .args(["-f", format])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {codec} {w}x{h}");
    std::fs::read(&out).expect("read")
}

const SIZES: [(u32, u32); 5] = [
    (1920, 1080),
    (642, 362),
    (360, 640),
    (1280, 720),
    (176, 144),
];

#[test]
fn h264_sps_sizes_match_what_was_encoded() {
    for size in SIZES {
        let data = encode("libx264", "h264", size);
        assert_eq!(
            SpsProbe::h264_dimensions(&data).ok(),
            Some(size),
            "{size:?}"
        );
    }
}

#[test]
fn h265_sps_sizes_match_what_was_encoded() {
    for size in SIZES {
        let data = encode("libx265", "hevc", size);
        assert_eq!(
            SpsProbe::h265_dimensions(&data).ok(),
            Some(size),
            "{size:?}"
        );
    }
}
