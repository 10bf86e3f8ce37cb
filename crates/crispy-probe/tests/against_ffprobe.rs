//! The probes against ffprobe, on streams the ffmpeg CLI encodes (libx264, libx265): cropped,
//! odd-sized and portrait pictures, every profile our cameras send (8 and 10 bit, 4:2:0, 4:2:2,
//! 4:4:4, monochrome), raw Annex B parameter sets and finished MP4 files.

use std::path::Path;
use std::process::Command;

use crispy_probe::{Mp4Probe, SpsProbe, SpsReport};
use serde_json::Value;

struct Encode<'a> {
    codec: &'a str,
    size: (u32, u32),
    pix_fmt: &'a str,
    rate: &'a str,
    frames: u32,
    extra: &'a [&'a str],
}

impl<'a> Encode<'a> {
    /// One 4:2:0 frame at 25 fps, no extra options.
    fn new(codec: &'a str, size: (u32, u32)) -> Self {
        Encode {
            codec,
            size,
            pix_fmt: "yuv420p",
            rate: "25",
            frames: 1,
            extra: &[],
        }
    }

    fn run(&self, dir: &Path, name: &str, format: &str) -> std::path::PathBuf {
        let out = dir.join(name);
        let (w, h) = self.size;
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={w}x{h}:rate={}", self.rate))
            .args([
                "-frames:v",
                &self.frames.to_string(),
                "-pix_fmt",
                self.pix_fmt,
            ])
            .args(["-c:v", self.codec, "-g", "10"])
            .args(["-x265-params", "log-level=error"])
            .args(self.extra)
            .args(["-f", format])
            .arg(&out)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg {} {w}x{h}", self.codec);
        out
    }
}

/// ffprobe's view of the first video stream.
fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries"])
        .arg(
            "stream=codec_name,width,height,profile,level,pix_fmt,r_frame_rate,time_base,\
             duration_ts,nb_read_packets",
        )
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe {}", path.display());
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    v["streams"][0].clone()
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// ffprobe's `pix_fmt` as chroma format and bit depth.
fn chroma(pix_fmt: &str) -> (&'static str, u8) {
    match pix_fmt {
        "yuv420p" | "yuvj420p" => ("4:2:0", 8),
        "yuv420p10le" => ("4:2:0", 10),
        "yuv422p" => ("4:2:2", 8),
        "yuv422p10le" => ("4:2:2", 10),
        "yuv444p" => ("4:4:4", 8),
        "gray" => ("4:0:0", 8),
        other => panic!("pix_fmt {other} not in the table"),
    }
}

fn rate(r: &str) -> f64 {
    let (n, d) = r.split_once('/').expect("n/d");
    n.parse::<f64>().expect("n") / d.parse::<f64>().expect("d")
}

fn assert_matches_ffprobe(report: &SpsReport, probe: &Value, what: &str) {
    assert_eq!(u64::from(report.width), num(&probe["width"]), "{what}");
    assert_eq!(u64::from(report.height), num(&probe["height"]), "{what}");
    assert_eq!(
        report.profile,
        probe["profile"].as_str().unwrap_or(""),
        "{what}"
    );
    assert_eq!(u64::from(report.level_idc), num(&probe["level"]), "{what}");
    let (chroma, depth) = chroma(probe["pix_fmt"].as_str().unwrap_or(""));
    assert_eq!(report.chroma_format, chroma, "{what}");
    assert_eq!(report.bit_depth_luma, depth, "{what}");
    assert_eq!(report.bit_depth_chroma, depth, "{what}");
    let fps = report.frame_rate.expect("x264/x265 write VUI timing");
    let expected = rate(probe["r_frame_rate"].as_str().unwrap_or("0/1"));
    assert!((fps - expected).abs() < 1e-6, "{what}: {fps} vs {expected}");
}

const SIZES: [(u32, u32); 5] = [
    (1920, 1080),
    (642, 362),
    (360, 640),
    (1280, 720),
    (176, 144),
];

fn cases(codec: &'static str) -> Vec<Encode<'static>> {
    let mut cases: Vec<_> = SIZES.iter().map(|&size| Encode::new(codec, size)).collect();
    let formats: &[(&str, &str)] = if codec == "libx264" {
        &[
            ("yuv420p", "30000/1001"),
            ("yuv420p10le", "50"),
            ("yuv422p", "15"),
            ("yuv444p", "60"),
        ]
    } else {
        &[
            ("yuv420p", "30000/1001"),
            ("yuv420p10le", "50"),
            ("yuv422p", "15"),
            ("gray", "24"),
        ]
    };
    for &(pix_fmt, rate) in formats {
        cases.push(Encode {
            pix_fmt,
            rate,
            ..Encode::new(codec, (320, 240))
        });
    }
    if codec == "libx264" {
        for profile in ["baseline", "main"] {
            cases.push(Encode {
                extra: if profile == "main" {
                    &["-profile:v", "main", "-level", "3.1"]
                } else {
                    &["-profile:v", "baseline", "-level", "1b"]
                },
                ..Encode::new(codec, (640, 480))
            });
        }
    }
    cases
}

#[test]
fn h264_sps_report_equals_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, case) in cases("libx264").iter().enumerate() {
        let path = case.run(dir.path(), &format!("{i}.h264"), "h264");
        let data = std::fs::read(&path).expect("read");
        let report = SpsProbe::h264_report(&data).expect("sps parses");
        let what = format!("{:?} {}", case.size, case.pix_fmt);
        assert_matches_ffprobe(&report, &ffprobe(&path), &what);
        assert_eq!(SpsProbe::h264_dimensions(&data).ok(), Some(case.size));
        assert!(report.tier.is_none() && !report.interlaced);
    }
}

#[test]
fn h264_level_1b_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let case = cases("libx264")
        .into_iter()
        .find(|c| c.extra.contains(&"baseline"))
        .expect("a baseline case");
    let path = case.run(dir.path(), "b.h264", "h264");
    let report = SpsProbe::h264_report(&std::fs::read(&path).expect("read")).expect("sps");
    assert_eq!(report.profile, "Constrained Baseline");
    // ffprobe prints level_idc 9 or 11 (with constraint_set3) for 1b.
    assert_eq!(report.level, "1b", "{report:?}");
}

#[test]
fn h265_sps_report_equals_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, case) in cases("libx265").iter().enumerate() {
        let path = case.run(dir.path(), &format!("{i}.hevc"), "hevc");
        let data = std::fs::read(&path).expect("read");
        let report = SpsProbe::h265_report(&data).expect("sps parses");
        let what = format!("{:?} {}", case.size, case.pix_fmt);
        assert_matches_ffprobe(&report, &ffprobe(&path), &what);
        assert_eq!(SpsProbe::h265_dimensions(&data).ok(), Some(case.size));
        assert_eq!(report.tier.as_deref(), Some("Main"));
        assert_eq!(
            report.level,
            format!("{}.{}", report.level_idc / 30, report.level_idc % 30 / 3)
        );
    }
}

#[test]
fn mp4_report_equals_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases = vec![
        (
            Encode {
                rate: "30000/1001",
                frames: 47,
                extra: &["-bf", "2"],
                ..Encode::new("libx264", (642, 362))
            },
            Some("h264"),
        ),
        (
            Encode {
                frames: 30,
                extra: &["-tag:v", "hev1"],
                ..Encode::new("libx265", (360, 640))
            },
            Some("hevc"),
        ),
    ];
    // `hvc1` (FFmpeg's default tag, and crispy's): read from the box tree directly, since
    // the `mp4` crate skips it.
    cases.push((
        Encode {
            frames: 12,
            extra: &["-tag:v", "hvc1"],
            ..Encode::new("libx265", (320, 240))
        },
        Some("hevc"),
    ));
    for (i, (case, codec)) in cases.iter().enumerate() {
        let path = case.run(dir.path(), &format!("{i}.mp4"), "mp4");
        let report = Mp4Probe::probe(&std::fs::read(&path).expect("read")).expect("mp4 parses");
        let probe = ffprobe(&path);
        let what = format!("{:?} {}", case.size, case.codec);
        assert_eq!(report.codec.as_deref(), *codec, "{what}");
        assert_eq!(u64::from(report.width), num(&probe["width"]), "{what}");
        assert_eq!(u64::from(report.height), num(&probe["height"]), "{what}");
        assert_eq!(report.samples, num(&probe["nb_read_packets"]), "{what}");
        assert_eq!(report.samples, u64::from(case.frames), "{what}");
        assert_eq!(report.duration_ts, num(&probe["duration_ts"]), "{what}");
        let tb = probe["time_base"].as_str().unwrap_or("");
        assert_eq!(tb, format!("1/{}", report.timescale), "{what}");
        assert!(report.starts_with_keyframe, "{what}");
        // -g 10: a keyframe every 10 frames.
        assert_eq!(
            report.keyframes,
            u64::from(case.frames.div_ceil(10)),
            "{what}"
        );
        let sps = report.sps.as_ref().expect("the avcC/hvcC SPS");
        assert_eq!((sps.width, sps.height), case.size, "{what}");
        assert_eq!(Some(sps.codec.as_str()), *codec, "{what}");
    }
}

#[test]
fn mp4_probe_rejects_what_is_not_a_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let case = cases("libx264").remove(0);
    let path = case.run(dir.path(), "a.mp4", "mp4");
    let data = std::fs::read(&path).expect("read");
    for cut in [0, 8, 100, data.len() / 2, data.len() - 1] {
        // Truncated files: an error (the moov of ffmpeg's MP4 is at the end), never a panic.
        let _ = Mp4Probe::probe(&data[..cut]);
    }
    assert!(Mp4Probe::probe(&data[..data.len() / 2]).is_err());
    assert!(Mp4Probe::probe(b"not an mp4 at all").is_err());
}
