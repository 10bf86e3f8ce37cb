//! The `crispy` binary end to end: real files in, real chunks out, checked with ffprobe.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use crispy_testkit::{
    Fixture, decode_errors, ffmpeg, ffprobe_video, files_with_ext, run_with_closed_stdout,
    truncated_copy,
};
use serde_json::Value;

fn crispy() -> Command {
    let mut cmd = Command::cargo_bin("crispy").expect("binary built");
    cmd.env_remove("RUST_LOG").env_remove("CRISPY_LOG_FORMAT");
    cmd
}

fn run(source: &Path, sink: &Path, extra: &[&str]) -> Output {
    crispy()
        .args(["run", "--source"])
        .arg(source)
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .args(extra)
        .output()
        .expect("crispy runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `crispy verify --allow-unsigned` on the directory `dir` passes; `what` names the case.
fn assert_verifies(dir: &Path, what: &str) {
    let out = crispy()
        .args(["verify", "--allow-unsigned"])
        .arg(format!("file://{}", dir.display()))
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

fn manifests(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut all: Vec<(PathBuf, Value)> = files_with_ext(dir, "json")
        .expect("list")
        .into_iter()
        .map(|p| {
            let v: Value =
                serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("manifest JSON");
            (p, v)
        })
        .collect();
    all.sort_by_key(|(_, v)| v["sequence"].as_u64());
    all
}

/// Runs the CLI on a fixture and checks every chunk and manifest against ffprobe.
fn check_run(fixture: Fixture, chunk: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        &fixture.path().expect("fixture"),
        dir.path(),
        &["--chunk", chunk, "--source-id", "cam-1"],
    );
    assert!(out.status.success(), "{fixture:?}: {}", stderr(&out));

    let ms = manifests(dir.path());
    let chunks = files_with_ext(dir.path(), "mp4").expect("list");
    assert!(!ms.is_empty());
    assert_eq!(ms.len(), chunks.len(), "one manifest per chunk");
    let (mut frames, mut duration) = (0, 0);
    let mut prev_end: Option<String> = None;
    for (i, (path, m)) in ms.iter().enumerate() {
        assert_eq!(m["schema"], "crispy.manifest/1");
        assert_eq!(m["sequence"].as_u64(), Some(i as u64), "gap-free sequence");
        assert_eq!(m["source_id"], "cam-1");
        let object = dir.path().join(m["object"].as_str().expect("object"));
        assert_eq!(
            object.with_extension("json"),
            *path,
            "manifest sits beside its chunk"
        );
        assert!(m["object"].as_str().expect("object").starts_with("cam-1/"));
        let bytes = std::fs::read(&object).expect("chunk exists");
        assert_eq!(m["bytes"].as_u64(), Some(bytes.len() as u64));
        assert_eq!(m["sha256"].as_str(), Some(sha256sum_of(&bytes).as_str()));

        assert_eq!(
            decode_errors(&object).expect("ffmpeg"),
            "",
            "chunk {i} decodes cleanly"
        );
        let probe = ffprobe_video(&object).expect("ffprobe");
        let d = m["duration_ms"].as_u64().expect("duration_ms");
        assert!(
            (probe.duration_s * 1000.0 - d as f64).abs() <= 1.0,
            "chunk {i}: ffprobe {} s vs {d} ms",
            probe.duration_s
        );
        assert_eq!(Some(probe.packets), m["frame_count"].as_u64());
        assert_eq!(
            (Some(u64::from(probe.width)), Some(u64::from(probe.height))),
            (m["width"].as_u64(), m["height"].as_u64())
        );
        assert_eq!(m["keyframe_aligned"], true);
        if let Some(prev) = &prev_end {
            assert_eq!(
                m["start_time"].as_str(),
                Some(prev.as_str()),
                "chunk {i} starts where {} ended",
                i - 1
            );
        }
        prev_end = m["end_time"].as_str().map(str::to_owned);
        frames += m["frame_count"].as_u64().expect("frames");
        duration += d;
    }
    assert_eq!(
        frames,
        fixture.frames(),
        "{fixture:?}: every frame exactly once"
    );
    assert_eq!(
        duration,
        fixture.duration_ms(),
        "{fixture:?}: durations add up"
    );

    // crispy's own second reading of its chunks (the `mp4` crate and our box walk, not
    // libavformat): `probe` of the first chunk, then `verify` of the whole sink.
    let (_, first) = &ms[0];
    let object = dir.path().join(first["object"].as_str().expect("object"));
    let out = crispy()
        .args(["probe", "--json"])
        .arg(&object)
        .output()
        .expect("probe");
    assert!(out.status.success(), "{}", stderr(&out));
    let probe: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        probe["mp4"]["codec"], first["codec"],
        "{fixture:?}: {probe}"
    );
    assert_eq!(probe["mp4"]["sps"]["width"], first["width"], "{probe}");
    assert_eq!(probe["mp4"]["sps"]["height"], first["height"], "{probe}");
    assert_verifies(dir.path(), &format!("{fixture:?}"));
}

fn sha256sum_of(bytes: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = out.expect("sha256sum");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let o = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn h264_1080p_file_to_local_sink() {
    check_run(Fixture::H264_1080p30Gop30, "3s");
}

#[test]
fn bframes_with_audio_file_to_local_sink() {
    check_run(Fixture::H264_720pBframesAac, "2.5s");
}

#[test]
fn hevc_file_to_local_sink() {
    check_run(Fixture::H265_720p, "1500ms");
}

#[test]
fn hevc_from_mpeg_ts_is_stored_as_hvc1_and_shows_every_frame() {
    // MPEG-TS (like RTSP) carries H.265 in Annex B with the parameter sets in-band. Until
    // 2026-11-25 such chunks were `hev1`, which Apple's players refuse.
    let dir = tempfile::tempdir().expect("tempdir");
    let ts = dir.path().join("in.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=3",
        "-c:v",
        "libx265",
        "-x265-params",
        "keyint=25:min-keyint=25:open-gop=0:log-level=error",
        "-pix_fmt",
        "yuv420p",
        ts.to_str().expect("utf8"),
    ])
    .expect("ffmpeg");
    let sink = dir.path().join("sink");
    let out = run(&ts, &sink, &["--chunk", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut chunks = files_with_ext(&sink, "mp4").expect("list");
    chunks.sort();
    assert_eq!(chunks.len(), 3);
    let mut shown = Vec::new();
    for chunk in &chunks {
        let probe = ffprobe_video(chunk).expect("ffprobe");
        assert_eq!((probe.codec.as_str(), probe.tag.as_str()), ("hevc", "hvc1"));
        assert_eq!(
            decode_errors(chunk).expect("decodes"),
            "",
            "{}",
            chunk.display()
        );
        shown.extend(shown_frame_md5s(chunk));
    }
    assert_eq!(shown, shown_frame_md5s(&ts));
}

#[test]
fn long_gop_file_to_local_sink() {
    check_run(Fixture::H264LongGop250, "3s");
}

/// The MD5 of every frame `path` shows, decoded by the ffmpeg CLI (which applies edit lists).
fn shown_frame_md5s(path: &Path) -> Vec<String> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect()
}

/// A file cut without re-encoding (`ffmpeg -ss 1.3 -c copy`) starts at the keyframe before
/// the cut, and its edit list hides the frames up to it. The chunks hide them too: together
/// they show exactly the frames the file shows, and the manifests count and time only those.
#[test]
fn a_trimmed_file_is_chunked_as_it_is_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trimmed = dir.path().join("trimmed.mp4");
    let src = Fixture::H264_720pBframesAac.path().expect("fixture");
    ffmpeg(&[
        "-ss",
        "1.3",
        "-i",
        src.to_str().expect("utf8"),
        "-map",
        "0:v",
        "-c",
        "copy",
        trimmed.to_str().expect("utf8"),
    ])
    .expect("ffmpeg trims");
    let shown = shown_frame_md5s(&trimmed);
    // GOP 60 (2 s): the cut at 1.3 s keeps the lead-in from the keyframe at 0.
    assert_eq!(shown.len(), 300 - 39, "the file shows 8.7 s");

    let sink = dir.path().join("out");
    let out = run(&trimmed, &sink, &["--chunk", "2s", "--source-id", "cut"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ms = manifests(&sink);
    let mut from_chunks = Vec::new();
    for (_, m) in &ms {
        let chunk = sink.join(m["object"].as_str().expect("object"));
        let frames = shown_frame_md5s(&chunk);
        assert_eq!(Some(frames.len() as u64), m["frame_count"].as_u64(), "{m}");
        let probe = ffprobe_video(&chunk).expect("ffprobe");
        let d = m["duration_ms"].as_u64().expect("duration_ms");
        assert!(
            (probe.duration_s * 1000.0 - d as f64).abs() <= 1.0,
            "{probe:?} vs {m}"
        );
        from_chunks.extend(frames);
    }
    assert_eq!(
        from_chunks, shown,
        "every frame shown, once, in order, and no other"
    );
    let total: u64 = ms
        .iter()
        .filter_map(|(_, m)| m["duration_ms"].as_u64())
        .sum();
    assert_eq!(total, 8700);
    assert_eq!(ms[0].1["start_pts"], 0, "presentation starts at the cut");

    // crispy's own readings agree: verify (the `mp4` crate) and probe.
    assert_verifies(&sink, "");
    let out = crispy()
        .args(["probe", "--json"])
        .arg(&trimmed)
        .output()
        .expect("probe");
    let probe: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(probe["frames"], 261, "{probe}");
    assert_eq!(probe["hidden_frames"], 39, "{probe}");
    assert_eq!(probe["duration_ms"], 8700, "{probe}");
}

/// `--cut exact`: stream-copy chunks of exactly the requested length, cut between
/// keyframes. Together the chunks show exactly the frames of the file, pixel for pixel.
fn exact_cuts(fixture: Fixture, chunk: &str, chunk_ms: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = fixture.path().expect("fixture");
    let sink = dir.path().join("out");
    let out = run(&source, &sink, &["--chunk", chunk, "--cut", "exact"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ms = manifests(&sink);
    let mut from_chunks = Vec::new();
    let mut lead_ins = 0;
    for (_, m) in &ms {
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(decode_errors(&chunk).expect("ffmpeg"), "", "{m}");
        let frames = shown_frame_md5s(&chunk);
        assert_eq!(Some(frames.len() as u64), m["frame_count"].as_u64(), "{m}");
        let probe = ffprobe_video(&chunk).expect("ffprobe");
        let d = m["duration_ms"].as_u64().expect("duration_ms");
        assert!(
            (probe.duration_s * 1000.0 - d as f64).abs() <= 1.0,
            "{probe:?} vs {m}"
        );
        if probe.packets > frames.len() as u64 {
            lead_ins += 1;
        }
        // crispy probe reads what is shown too (it used to count the frames after the
        // end, which come earlier in decode order with B-frames).
        let out = crispy()
            .args(["probe", "--json"])
            .arg(&chunk)
            .output()
            .expect("probe");
        let ours: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(ours["duration_ms"].as_u64(), Some(d), "{ours} vs {m}");
        assert_eq!(ours["frames"], m["frame_count"], "{ours} vs {m}");
        from_chunks.extend(frames);
    }
    assert_eq!(
        from_chunks,
        shown_frame_md5s(&source),
        "{fixture:?}: every frame once"
    );
    let (_, full) = ms.split_last().expect("chunks");
    for (_, m) in full {
        assert_eq!(
            m["duration_ms"].as_u64(),
            Some(chunk_ms),
            "{fixture:?}: {m}"
        );
    }
    assert!(
        lead_ins > 0,
        "{fixture:?}: some chunks start between keyframes"
    );
    assert_verifies(&sink, "");
}

#[test]
fn exact_cuts_of_h264() {
    // GOP 30 (1 s): 400 ms chunks.
    exact_cuts(Fixture::H264_1080p30Gop30, "400ms", 400);
}

#[test]
fn exact_cuts_of_h264_with_b_frames() {
    // GOP 60 (2 s), B-frames: 700 ms chunks.
    exact_cuts(Fixture::H264_720pBframesAac, "700ms", 700);
}

/// B-frames with uneven frame times (frames dropped by the encoder, a stretch missing): each
/// chunk ends where the next one's keyframe is shown and the last one where its last frame
/// ends, so times join up and every frame is shown; `verify` agrees. (Chunks used to end where
/// their decode times added up to: a time gap, and a frame hidden at the end.)
#[test]
fn b_frames_with_uneven_frame_times_join_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfr = dir.path().join("vfr.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30:duration=20",
        "-vf",
        "select='not(eq(mod(n\\,7)\\,3))*not(between(n\\,100\\,130))'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-g",
        "30",
        vfr.to_str().expect("utf8"),
    ])
    .expect("ffmpeg makes the clip");
    for cut in ["keyframe", "exact"] {
        let sink = dir.path().join(cut);
        let out = run(&vfr, &sink, &["--chunk", "2s", "--cut", cut]);
        assert!(out.status.success(), "{}", stderr(&out));
        let ms = manifests(&sink);
        let mut shown = Vec::new();
        for (_, m) in &ms {
            let chunk = sink.join(m["object"].as_str().expect("object"));
            let frames = shown_frame_md5s(&chunk);
            assert_eq!(
                Some(frames.len() as u64),
                m["frame_count"].as_u64(),
                "{cut}: {m}"
            );
            shown.extend(frames);
        }
        for pair in ms.windows(2) {
            let (a, b) = (&pair[0].1, &pair[1].1);
            assert_eq!(
                a["start_pts"]
                    .as_i64()
                    .zip(a["duration_ts"].as_i64())
                    .map(|(s, d)| s + d),
                b["start_pts"].as_i64(),
                "{cut}: {a} then {b}"
            );
        }
        assert_eq!(shown, shown_frame_md5s(&vfr), "{cut}: every frame once");
        assert_verifies(&sink, cut);
    }
}

/// An open-GOP stream (x264 `open-gop`, x265's default): each chunk hides the pictures after
/// its keyframe that are shown before it (they need the previous GOP), so chunks neither
/// overlap nor leave gaps, count what they show, and verify passes.
#[test]
fn open_gop_chunks_join_up_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("open.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30:duration=6",
        "-c:v",
        "libx264",
        "-x264-params",
        "open-gop=1:keyint=30:min-keyint=30:scenecut=0:bframes=3",
        src.to_str().expect("utf8"),
    ])
    .expect("ffmpeg makes the clip");
    let sink = dir.path().join("out");
    let out = run(&src, &sink, &["--chunk", "2s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ms = manifests(&sink);
    assert!(ms.len() >= 2);
    for pair in ms.windows(2) {
        let (a, b) = (&pair[0].1, &pair[1].1);
        assert_eq!(a["end_time"], b["start_time"], "{a} then {b}");
    }
    for (_, m) in &ms {
        let chunk = sink.join(m["object"].as_str().expect("object"));
        let shown = crispy_testkit::decoded_frames(&chunk).expect("ffprobe");
        assert_eq!(Some(shown), m["frame_count"].as_u64(), "{m}");
    }
    assert_verifies(&sink, "");
}

#[test]
fn exact_cuts_of_hevc() {
    // GOP 50 (2 s at 25 fps): 1 s chunks.
    exact_cuts(Fixture::H265_720p, "1s", 1000);
}

#[test]
fn json_logs_have_one_line_per_chunk_and_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        &Fixture::H264LongGop250.path().expect("fixture"),
        dir.path(),
        &["--log-format", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let stored: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "chunk stored")
        .collect();
    assert_eq!(stored.len(), 3);
    for l in &stored {
        for field in [
            "source",
            "sequence",
            "object",
            "resolution",
            "duration_ms",
            "frames",
            "bytes",
            "upload_ms",
        ] {
            assert!(!l[field].is_null(), "chunk line lacks {field}: {l}");
        }
        for field in ["upload_ms", "latency_ms"] {
            assert!(l[field].is_f64(), "{field} is not a number: {l}");
        }
    }
    let summary = lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .expect("summary line");
    assert_eq!(summary["chunks"], 3);
    assert_eq!(summary["frames"], 600);
    assert!(summary["frames_per_s"].is_number());
    // The long GOP is reported once, with the fix.
    let gop_warnings = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("--mode transcode"))
        })
        .count();
    assert_eq!(gop_warnings, 1);
}

/// With JSON logs, a command line clap refuses is one JSON error line too (it was clap's
/// plain text).
#[test]
fn json_logs_report_usage_errors_as_json() {
    for (args, env) in [
        (&["--log-format", "json", "run", "--chunk", "abc"][..], None),
        (&["--log-format=json", "run", "--bogus"], None),
        (&["run", "--bogus"], Some("json")),
        (&["--log-format", "json", "verify"], None),
    ] {
        let mut cmd = crispy();
        cmd.args(args);
        if let Some(v) = env {
            cmd.env("CRISPY_LOG_FORMAT", v);
        }
        let out = cmd.output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let line: Value = serde_json::from_str(stderr(&out).trim())
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON line ({e}): {}", stderr(&out)));
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["exit_code"], 2, "{line}");
        let message = line["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("abc") || message.contains("--bogus") || message.contains("<SINK>"),
            "{line}"
        );
    }
    // Help stays help.
    let out = crispy()
        .args(["--log-format", "json", "--help"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}

/// A refused command line quotes the argument: its line breaks are written as escapes, so
/// a hostile id cannot start a line of its own; clap's own lines stay lines.
#[test]
fn usage_errors_escape_line_breaks_in_arguments() {
    for args in [
        &[
            "run",
            "--source",
            "x.mp4",
            "--source-id",
            "bad\nERROR forged\r",
        ][..],
        &[
            "run",
            "--source",
            "x.mp4",
            "--source-id=bad\nERROR forged\x1b[2J",
        ],
        &["run", "--source", "x.mp4", "--bogus\nERROR forged"],
    ] {
        let out = crispy().args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.starts_with("error: ") && text.contains("bad\\nERROR forged")
                || text.contains("--bogus\\nERROR forged"),
            "{args:?}: {text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("ERROR")), "{text}");
        assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
        assert!(
            text.contains("For more information, try '--help'."),
            "{text}"
        );
    }
}

#[test]
fn default_source_id_is_the_sanitized_file_stem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("Front door (cam 2).mp4");
    std::fs::copy(Fixture::H264LongGop250.path().expect("fixture"), &src).expect("copy");
    let sink = dir.path().join("out");
    let out = run(&src, &sink, &["-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ms = manifests(&sink);
    assert_eq!(ms[0].1["source_id"], "Front_door_cam_2");
}

/// A file name need not be UTF-8 (an old NVR's export in Latin-1): it is read, its id is
/// what is left of its name, and a missing one is named in the error.
#[test]
fn a_file_name_that_is_not_utf8_is_read() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join(OsStr::from_bytes(b"c\xe1mara 2.mp4"));
    std::fs::copy(Fixture::H264LongGop250.path().expect("fixture"), &src).expect("copy");
    let sink = dir.path().join("out");
    let out = run(&src, &sink, &["--chunk", "3s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ms = manifests(&sink);
    assert_eq!(ms.len(), 3, "GOP 250 at 25 fps: a chunk per keyframe");
    assert_eq!(ms[0].1["source_id"], "c_mara_2");
    // Transcoding opens it by its bytes too (ffmpeg-next's own open panicked).
    let transcoded = dir.path().join("transcoded");
    let out = run(
        &src,
        &transcoded,
        &[
            "--mode",
            "transcode",
            "--chunk",
            "12s",
            "--preset",
            "ultrafast",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifests(&transcoded).len(), 2);
    // A URL is text: other bytes in one are refused, not replaced.
    let url = OsStr::from_bytes(b"rtsp://admin:p\xffss@127.0.0.1:9/s");
    let refused = crispy()
        .args(["run", "--sink"])
        .arg(format!("file://{}", sink.display()))
        .arg("--source")
        .arg(url)
        .output()
        .expect("runs");
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
    assert!(!err.contains("ss@"), "the password stays out: {err}");
    let missing = dir.path().join(OsStr::from_bytes(b"gone\xff.mp4"));
    let out = run(&missing, &sink, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(err.contains("gone\\xFF.mp4"), "{err}");
}

/// A file name cannot forge log lines: its newline and escape characters are shown as
/// escapes in text logs, in the run's lines and in its errors.
#[test]
fn hostile_file_names_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forged = "2026-01-01T00:00:00.000000Z  INFO crispy: forged";
    let src = dir
        .path()
        .join(format!("cam\n{forged}\r\x1b[1A\x1b[2K.mp4"));
    std::fs::copy(Fixture::H264LongGop250.path().expect("fixture"), &src).expect("copy");
    let sink = dir.path().join("out");
    let out = run(&src, &sink, &["--chunk", "2s"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // Not a name that is not a video either: the error quotes it the same way.
    let bad = dir.path().join(format!("notes\n{forged}.mp4"));
    std::fs::write(&bad, b"not a video at all").expect("write");
    let failed = run(&bad, &sink, &[]);
    let err_bad = stderr(&failed);
    assert_eq!(failed.status.code(), Some(13), "{err_bad}");
    for text in [&err, &err_bad] {
        assert!(text.contains("forged"), "the name is shown: {text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        for line in text.lines() {
            assert!(!line.starts_with(forged), "a forged line: {text}");
        }
    }
    assert!(err.contains("cam\\n2026-01-01"), "{err}");
    // Nor in probe's report, on stdout.
    let probed = crispy().arg("probe").arg(&src).output().expect("probe");
    let report = String::from_utf8_lossy(&probed.stdout);
    assert!(probed.status.success(), "{}", stderr(&probed));
    assert!(report.contains("cam\\n2026-01-01"), "{report}");
    assert!(
        !report.contains('\x1b') && !report.contains('\r'),
        "{report:?}"
    );
    assert!(report.lines().all(|l| !l.starts_with(forged)), "{report}");
    // JSON lines escape as JSON does, every control character included: each line parses.
    let odd = dir.path().join("odd\u{85}\u{7f}\n\x1b.mp4");
    std::fs::copy(Fixture::H264LongGop250.path().expect("fixture"), &odd).expect("copy");
    let out = run(&odd, &sink, &["--chunk", "2s", "--log-format", "json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for line in err.lines() {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not JSON: {line:?}");
    }
    assert!(
        err.contains("odd\\u0085") || err.contains("odd\u{85}"),
        "{err}"
    );
}

#[test]
fn probe_reports_stream_facts() {
    let out = crispy()
        .args(["probe", "--json"])
        .arg(Fixture::H264LongGop250.path().expect("fixture"))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["codec"], "h264");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(v["fps"].as_f64(), Some(25.0));
    assert_eq!(v["duration_ms"], 24_000);
    assert_eq!(v["frames"], 600);
    assert_eq!(v["gop_max_frames"], 250);
    // The parameter sets, and the MP4's own boxes, agree with the packet statistics.
    assert_eq!(v["sps"]["width"], 640);
    assert_eq!(v["sps"]["chroma_format"], "4:2:0");
    assert_eq!(v["sps"]["bit_depth_luma"], 8);
    assert_eq!(v["sps"]["frame_rate"].as_f64(), Some(25.0));
    assert_eq!(v["sps"]["profile"], v["profile"]);
    assert_eq!(v["mp4"]["samples"], 600);
    assert_eq!(v["mp4"]["keyframes"], 3);
    assert_eq!(v["mp4"]["duration_ms"], 24_000);

    let text = crispy()
        .arg("probe")
        .arg(Fixture::H265_720p.path().expect("fixture"))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("hevc (Main)")
            && text.contains("1280x720")
            && text.contains("150")
            && text.contains("Main tier")
            && text.contains("4:2:0, 8-bit"),
        "{text}"
    );
}

/// `crispy probe … | head` and `crispy keygen | true`: a reader that went away ends the
/// output quietly, without a panic or a failure.
#[test]
fn probe_and_keygen_stop_quietly_when_stdout_is_closed() {
    let fixture = Fixture::H265_720p.path().expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k");
    let runs: [&[&OsStr]; 3] = [
        &[OsStr::new("probe"), fixture.as_os_str()],
        &[
            OsStr::new("probe"),
            OsStr::new("--json"),
            fixture.as_os_str(),
        ],
        &[OsStr::new("keygen"), OsStr::new("--out"), key.as_os_str()],
    ];
    for args in runs {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("crispy"));
        cmd.env_remove("RUST_LOG").args(args);
        let out = run_with_closed_stdout(&mut cmd).expect("runs");
        assert_eq!(out, (Some(0), String::new()), "{args:?}");
    }
    assert!(key.exists(), "keygen still wrote its key");
}

/// Runs `crispy run` on a bad input; checks exit code, that the message names the input, and
/// that nothing was stored: not even the sink directory is left.
fn expect_failure(source: &Path, code: i32, needle: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let out = run(source, &sink, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        err.contains(needle),
        "message should name {needle:?}: {err}"
    );
    assert!(
        !sink.exists(),
        "a run that stored nothing left its sink directory behind"
    );
}

#[test]
fn bad_inputs_get_clear_errors_and_distinct_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);

    expect_failure(&p("missing.mp4"), 10, "missing.mp4");
    std::fs::create_dir(p("a-dir.mp4")).expect("mkdir");
    expect_failure(&p("a-dir.mp4"), 11, "a-dir.mp4");
    std::fs::write(p("empty.mp4"), b"").expect("write");
    expect_failure(&p("empty.mp4"), 12, "empty.mp4");
    std::fs::write(
        p("notes.mp4"),
        b"this is a text file, not a video\n".repeat(50),
    )
    .expect("write");
    expect_failure(&p("notes.mp4"), 13, "notes.mp4");
    let audio = p("audio-only.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "aac",
        audio.to_str().expect("utf8"),
    ])
    .expect("ffmpeg");
    expect_failure(&audio, 14, "audio-only.mp4");
    // One second of test pattern, encoded with `args`.
    let clip = |name: &str, args: &[&str]| {
        let path = p(name);
        let input = [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=1",
        ];
        let output = [path.to_str().expect("utf8")];
        ffmpeg(&[&input[..], args, &output[..]].concat()).expect("ffmpeg");
        path
    };
    expect_failure(
        &clip("mpeg4.mp4", &["-c:v", "mpeg4"]),
        15,
        "--mode transcode",
    );
    // A recording cut off before its index was written (the `moov` box comes last without
    // `-movflags +faststart`): damaged, not "not a video file".
    let whole = std::fs::read(clip("unfinished.mp4", &["-c:v", "libx264"])).expect("read");
    std::fs::write(p("unfinished.mp4"), &whole[..whole.len() / 2]).expect("write");
    expect_failure(&p("unfinished.mp4"), 16, "moov atom not found");
    // A raw elementary stream (a DVR export): intact, but untimed. It was reported as
    // damaged after 0 packets.
    expect_failure(
        &clip("export.h264", &["-c:v", "libx264", "-f", "h264"]),
        13,
        "raw H.264 elementary stream has no timestamps",
    );
}

#[test]
fn truncated_file_stores_complete_chunks_then_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truncated = truncated_copy(Fixture::H264_1080p30Gop30, 0.6, dir.path()).expect("truncate");
    // Both modes: transcoding used to end such a file quietly, with exit 0.
    for mode in ["copy", "transcode"] {
        let sink = dir.path().join(mode);
        let out = run(&truncated, &sink, &["--chunk", "2s", "--mode", mode]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(16), "{mode}: {err}");
        assert!(
            err.contains("truncated.mp4") && err.contains("damaged"),
            "{mode}: {err}"
        );
        let chunks = files_with_ext(&sink, "mp4").expect("list");
        // 60% of a 10 s file holds a bit less than 6 s: two complete 2 s chunks.
        assert_eq!(chunks.len(), 2, "{mode}: {err}");
        for c in &chunks {
            assert_eq!(decode_errors(c).expect("ffmpeg"), "", "{mode}");
        }
        assert_eq!(manifests(&sink).len(), 2, "{mode}");
    }
    // FFmpeg's own lines about the damage say whose they are (many cameras share a log).
    let out = run(
        &truncated,
        &dir.path().join("json"),
        &["--chunk", "2s", "--log-format", "json"],
    );
    let ffmpeg_lines: Vec<Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "ffmpeg")
        .collect();
    assert!(!ffmpeg_lines.is_empty(), "{}", stderr(&out));
    for line in &ffmpeg_lines {
        assert_eq!(line["source"], "truncated", "{line}");
    }
}

/// Options that would be ignored are refused, and an empty lavfi graph is named as such.
#[test]
fn camera_options_on_a_file_and_an_empty_graph_are_usage_errors() {
    let src = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let src = src.to_str().expect("utf8");
    for (args, said) in [
        (
            vec!["--source", src, "--username", "admin"],
            "--username applies to rtsp:// cameras only",
        ),
        (
            vec!["--source", src, "--rtsp-transport", "udp"],
            "--rtsp-transport applies to rtsp:// cameras only",
        ),
        (
            vec!["--source", "testsrc", "--stall-timeout", "30s"],
            "--stall-timeout applies to rtsp:// cameras only",
        ),
        (
            vec!["--source", "testsrc", "--password-env", "PW"],
            "--password-env applies to rtsp:// cameras only",
        ),
        (vec!["--source", "lavfi:"], "lavfi: needs a filter graph"),
    ] {
        let out = crispy()
            .arg("run")
            .args(&args)
            .args(["--sink", "memory://"])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{args:?}: {}", stderr(&out));
    }
}

/// An MPEG-TS recording that lost one 188-byte packet mid-file (a network hiccup while it was
/// recorded): the damaged frame is kept as read, as `ffmpeg -c copy` keeps it, the file is
/// read to its end, and the run then says what was damaged (exit 16). It used to stop at the
/// damage, losing the rest of the file.
#[test]
fn a_damaged_packet_mid_file_loses_nothing_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let ts = dir.path().join("whole.ts");
    ffmpeg(&[
        "-i",
        src.to_str().expect("utf8"),
        "-map",
        "0:v",
        "-c",
        "copy",
        ts.to_str().expect("utf8"),
    ])
    .expect("remux");
    let mut bytes = std::fs::read(&ts).expect("read");
    let middle = bytes.len() / 188 / 2 * 188;
    bytes.drain(middle..middle + 188);
    let lossy = dir.path().join("lossy.ts");
    std::fs::write(&lossy, &bytes).expect("write");
    let packets = crispy_testkit::ffprobe_video(&lossy)
        .expect("ffprobe")
        .packets;
    assert!(packets >= 299, "{packets}");

    let sink = dir.path().join("out");
    let out = run(&lossy, &sink, &["--chunk", "2s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(16), "{err}");
    assert!(
        err.contains("incomplete or corrupt") && err.contains("lossy.ts"),
        "{err}"
    );
    assert!(err.contains("all 5 chunk(s) were stored"), "{err}");
    let ms = manifests(&sink);
    let frames: u64 = ms
        .iter()
        .filter_map(|(_, m)| m["frame_count"].as_u64())
        .sum();
    assert_eq!(
        frames, packets,
        "every packet read is stored, the damaged one too"
    );
    assert_verifies(&sink, "");
}

/// The same file run again into the same sink with another `--chunk`: its first chunk
/// conflicts (same name, other content), and nothing of the second cut is written, so the
/// sink holds one consistent set.
#[test]
fn a_rerun_with_another_chunk_length_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let sink = dir.path().join("out");
    let out = run(&src, &sink, &["--chunk", "3s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = files_with_ext(&sink, "mp4").expect("list").len()
        + files_with_ext(&sink, "json").expect("list").len();
    assert_eq!(before, 8);
    let out = run(&src, &sink, &["--chunk", "2s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(22), "{err}");
    assert!(
        err.contains("already exists with different content"),
        "{err}"
    );
    let after = files_with_ext(&sink, "mp4").expect("list").len()
        + files_with_ext(&sink, "json").expect("list").len();
    assert_eq!(after, before, "nothing of the other cut: {err}");
    assert_verifies(&sink, "");
}

/// Garbage where frames of an MP4 were (a damaged disk, a bad copy): FFmpeg hands such samples
/// over unflagged, but their NAL unit lengths do not fit them. They are stored as read, every
/// chunk is stored, and the run ends with exit 16 saying so (it used to succeed silently).
#[test]
fn garbage_inside_an_mp4_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let mut bytes = std::fs::read(&src).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle..middle + 200_000].fill(0xff);
    let damaged = dir.path().join("garbage.mp4");
    std::fs::write(&damaged, &bytes).expect("write");
    let sink = dir.path().join("out");
    let out = run(&damaged, &sink, &["--chunk", "3s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(16), "{err}");
    assert!(
        err.contains("garbage.mp4") && err.contains("all 4 chunk(s) were stored"),
        "{err}"
    );
    let frames: u64 = manifests(&sink)
        .iter()
        .filter_map(|(_, m)| m["frame_count"].as_u64())
        .sum();
    assert_eq!(frames, 300);
}

/// A file recorded rotated (a phone held upright): the chunks keep its display matrix in
/// both modes, so players turn them as they turn the file (they were stored sideways).
#[test]
fn a_rotated_recording_stays_rotated() {
    let rotation = |path: &Path| {
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["stream_side_data=rotation", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .expect("ffprobe runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let rotated = dir.path().join("upright.mp4");
    ffmpeg(&[
        "-i",
        src.to_str().expect("utf8"),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        rotated.to_str().expect("utf8"),
    ])
    .expect("ffmpeg");
    let turned = rotation(&rotated);
    assert!(!turned.is_empty(), "the fixture is rotated");
    for mode in ["copy", "transcode"] {
        let sink = dir.path().join(mode);
        let out = run(&rotated, &sink, &["--chunk", "5s", "--mode", mode]);
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        let chunks = files_with_ext(&sink, "mp4").expect("list");
        assert_eq!(chunks.len(), 2, "{mode}");
        for c in &chunks {
            assert_eq!(rotation(c), turned, "{mode}: {}", c.display());
            // The manifest says so too, as ffprobe reads the angle, modulo 360.
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(c.with_extension("json")).expect("read"))
                    .expect("manifest");
            let degrees: i64 = turned.parse().expect("ffprobe's rotation");
            assert_eq!(
                m["rotation"].as_i64(),
                Some(degrees.rem_euclid(360)),
                "{mode}: {m}"
            );
        }
    }
    let probed = crispy()
        .args(["probe", "--json"])
        .arg(&rotated)
        .output()
        .expect("probe");
    let probed: serde_json::Value = serde_json::from_slice(&probed.stdout).expect("json");
    assert_eq!(probed["rotation"], 90, "{probed}");
    let text = crispy().arg("probe").arg(&rotated).output().expect("probe");
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("rotation    90° counterclockwise (players show it 1080x1920)"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    // A chunk of an unrotated file has no display matrix at all.
    let plain = dir.path().join("plain");
    assert!(run(&src, &plain, &["--chunk", "5s"]).status.success());
    let chunks = files_with_ext(&plain, "mp4").expect("list");
    assert_eq!(rotation(&chunks[0]), "");
    let manifest = std::fs::read_to_string(chunks[0].with_extension("json")).expect("read");
    assert!(!manifest.contains("rotation"), "{manifest}");
}

/// A file without a creation time, run twice into one sink, in each mode: the second run
/// finds every chunk already there (it wrote a second set under new names, which verify
/// then reported as duplicate sequences).
#[test]
fn re_running_a_file_writes_the_same_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Fixture::H264LongGop250.path().expect("fixture");
    for (name, mode) in [
        ("copy", &[][..]),
        ("transcode", &["--mode", "transcode"][..]),
    ] {
        let sink = dir.path().join(name);
        let summary = |out: &Output| -> Value {
            assert!(out.status.success(), "{name}: {}", stderr(out));
            stderr(out)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == "run finished")
                .unwrap_or_else(|| panic!("{name}: no summary: {}", stderr(out)))
        };
        let args = [mode, &["--log-format", "json", "--chunk", "4s"]].concat();
        let first = summary(&run(&src, &sink, &args));
        let second = summary(&run(&src, &sink, &args));
        assert_eq!(first["already_present"], 0, "{name}: {first}");
        assert_eq!(
            second["already_present"], first["chunks"],
            "{name}: {second}"
        );
        let ms = manifests(&sink);
        assert_eq!(
            ms.len() as u64,
            first["chunks"].as_u64().unwrap_or(0),
            "{name}"
        );
        // The origin is the file's modification time minus its 24 s.
        let mtime: chrono::DateTime<chrono::Utc> = std::fs::metadata(&src)
            .and_then(|m| m.modified())
            .expect("mtime")
            .into();
        let origin = mtime - chrono::Duration::milliseconds(24_000);
        let (_, m0) = &ms[0];
        assert_eq!(m0["clock"], "file-mtime", "{name}: {m0}");
        assert_eq!(
            m0["start_time"].as_str(),
            Some(
                origin
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .as_str()
            ),
            "{name}: {m0}"
        );
        let out = crispy()
            .args(["verify", "--allow-unsigned"])
            .arg(&sink)
            .output()
            .expect("verify");
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
}

#[test]
fn unusable_sinks_fail_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").expect("write");
    let src = Fixture::H264LongGop250.path().expect("fixture");
    let out = run(&src, &blocker.join("sub"), &[]);
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    assert!(stderr(&out).contains("not writable"), "{}", stderr(&out));

    let out = crispy()
        .args(["run", "--sink", "ftp://x/y", "--source"])
        .arg(&src)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));

    // A URL missing its `//` is not a local directory to fill.
    let out = crispy()
        .current_dir(dir.path())
        .args(["run", "--sink", "s3:/bucket/prefix", "--source"])
        .arg(&src)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(stderr(&out).contains("s3://"), "{}", stderr(&out));
    assert!(
        !dir.path().join("s3:").exists(),
        "a directory named s3: was made"
    );

    let out = crispy()
        .args(["run", "--chunk", "0s", "--source"])
        .arg(&src)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("longer than zero"),
        "{}",
        stderr(&out)
    );

    let out = crispy()
        .args(["run", "--source-id", "../etc", "--source"])
        .arg(&src)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));

    // An id that reads as an option, and a stall timeout shorter than a frame gap.
    for args in [
        &["--source-id=--help"][..],
        &["--source-id=-x"],
        &["--stall-timeout", "1ms"],
    ] {
        let out = crispy()
            .arg("run")
            .args(args)
            .arg("--source")
            .arg(&src)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }

    let out = crispy()
        .args([
            "run",
            "--source",
            "rtsp://127.0.0.1:9/x",
            "--password-env",
            "CRISPY_TEST_UNSET_VAR",
        ])
        .env_remove("CRISPY_TEST_UNSET_VAR")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CRISPY_TEST_UNSET_VAR"),
        "{}",
        stderr(&out)
    );

    // A password with no user name to send it with (FFmpeg would send none at all).
    let out = crispy()
        .args([
            "run",
            "--source",
            "rtsp://127.0.0.1:9/x",
            "--password-env",
            "CRISPY_TEST_PASS",
        ])
        .env("CRISPY_TEST_PASS", "Sh0uld-N0t-Show")
        .output()
        .expect("runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no user name") && err.contains("--username"),
        "{err}"
    );
    assert!(!err.contains("Sh0uld-N0t-Show"), "{err}");
}

/// Environment variables behind options: set to nothing they count as unset, and an option
/// on the command line wins over one instead of conflicting with it.
#[test]
fn the_command_line_wins_over_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Fixture::H264LongGop250.path().expect("fixture");
    let sink = dir.path().join("empty-vars");
    let out = crispy()
        .env("CRISPY_LOG_FORMAT", "")
        .env("CRISPY_SPOOL_DIR", "")
        .env("CRISPY_SIGNING_KEY", "")
        .args(["-q", "run", "--source"])
        .arg(&src)
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let ms = manifests(&sink);
    assert!(!ms.is_empty());
    assert!(ms.iter().all(|(_, m)| m["signature"].is_null()), "unsigned");

    let key = dir.path().join("k");
    assert!(
        crispy()
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .expect("keygen")
            .status
            .success()
    );
    let alg = |sink: &Path| -> Vec<Value> {
        manifests(sink)
            .into_iter()
            .map(|(_, m)| m["signature"]["alg"].clone())
            .collect()
    };
    // The key in the environment signs when nothing else is asked for…
    let from_env = dir.path().join("from-env");
    let out = crispy()
        .env("CRISPY_SIGNING_KEY", &key)
        .args(["-q", "run", "--source"])
        .arg(&src)
        .arg("--sink")
        .arg(format!("file://{}", from_env.display()))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        alg(&from_env).iter().all(|a| a == "ed25519"),
        "{:?}",
        alg(&from_env)
    );
    // …and --hmac-key-env replaces it (clap used to refuse the pair, naming --signing-key).
    let hmac = dir.path().join("hmac");
    let out = crispy()
        .env("CRISPY_SIGNING_KEY", &key)
        .env("HK", "a secret of at least sixteen bytes")
        .args(["-q", "run", "--hmac-key-env", "HK", "--source"])
        .arg(&src)
        .arg("--sink")
        .arg(format!("file://{}", hmac.display()))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let algs = alg(&hmac);
    assert!(
        !algs.is_empty() && algs.iter().all(|a| a == "hmac-sha256"),
        "{algs:?}"
    );
    // Both on the command line are still a mistake.
    let out = crispy()
        .args(["run", "--hmac-key-env", "HK", "--signing-key"])
        .arg(&key)
        .arg("--source")
        .arg(&src)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A URL with a password that clap refuses (`--source` forgotten) is quoted redacted, and a
/// secret given where its environment variable's name belongs is not echoed.
#[test]
fn refused_arguments_never_show_a_password() {
    for args in [
        &["run", "rtsp://admin:hunter2@127.0.0.1:1/x"][..],
        &["verify", "s3://bucket/x", "s3://AKIA:hunter2@bucket/x"][..],
        &[
            "run",
            "--source",
            "rtsp://admin@127.0.0.1:1/x",
            "--password-env",
            "hunter2!pass",
            "--sink",
            "memory://b",
        ][..],
    ] {
        let out = crispy().args(args).output().expect("crispy");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("error:"), "{err}");
    }
    let out = crispy()
        .args(["run", "rtsp://admin:hunter2@127.0.0.1:1/x"])
        .output()
        .expect("crispy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'rtsp://***@127.0.0.1:1/x'"), "{err}");
}

/// Files whose timestamps start late (100 s here): MP4 and Matroska count the container's
/// duration from 0, so the file-mtime clock put every chunk 100 s early. The last chunk
/// ends at the file's modification time, in each container.
#[test]
fn a_file_starting_late_ends_at_its_modification_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    for ext in ["mkv", "mp4", "ts"] {
        let src = dir.path().join(format!("late.{ext}"));
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-output_ts_offset",
            "100",
            src.to_str().expect("utf8"),
        ])
        .expect("ffmpeg");
        let sink = dir.path().join(ext);
        let out = run(&src, &sink, &["--chunk", "1s"]);
        assert!(out.status.success(), "{ext}: {}", stderr(&out));
        let mtime: chrono::DateTime<chrono::Utc> = std::fs::metadata(&src)
            .and_then(|m| m.modified())
            .expect("mtime")
            .into();
        let ms = manifests(&sink);
        let (_, last) = ms.last().expect("manifests");
        assert_eq!(last["clock"], "file-mtime", "{ext}: {last}");
        let end: chrono::DateTime<chrono::Utc> = last["end_time"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("end_time");
        let off = (end - mtime).num_milliseconds().abs();
        assert!(off <= 1, "{ext}: ends {end}, modified {mtime}");
    }
}

/// Mistakes whose first answers pointed elsewhere: `keygen --out k.pub` wrote the private key
/// to `k.pub`; `verify clip.mp4` said "no such directory"; a `--sink-opt` without `--sink`
/// blamed the URL `file://./crispy-out` the user never typed.
#[test]
fn small_mistakes_are_named_as_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = crispy()
        .current_dir(dir.path())
        .args(["keygen", "--out", "k.pub"])
        .output()
        .expect("keygen");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("without .pub"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "no key written"
    );

    let src = Fixture::H264LongGop250.path().expect("fixture");
    let out = crispy().arg("verify").arg(&src).output().expect("verify");
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a file, not a directory"),
        "{}",
        stderr(&out)
    );

    let out = crispy()
        .current_dir(dir.path())
        .args(["run", "--sink-opt", "aws_regoin=eu-west-1", "--source"])
        .arg(&src)
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(20), "{err}");
    assert!(
        err.contains("no --sink given, so the sink is the default file://./crispy-out")
            && err.contains("sink option \"aws_regoin\"")
            && !err.contains("eu-west-1"),
        "{err}"
    );
    assert!(!dir.path().join("crispy-out").exists());
}

/// Fails unless `strace` can trace here (`cargo xtask deps` installs it).
fn require_strace() {
    let out = std::process::Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .output()
        .expect("strace (cargo xtask deps installs it)");
    assert!(
        out.status.success(),
        "strace cannot trace here: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs crispy in `cwd` under strace (one log per thread, descriptors' paths shown, with
/// `inject` added to strace's options), storing the 10-second fixture in 2 s chunks in
/// `sink` with `extra` options. The traced sync, link and unlink calls of each thread.
fn traced_run(cwd: &Path, sink: &str, extra: &[&str], inject: &[&str]) -> Vec<Vec<String>> {
    let src = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let logs = tempfile::tempdir().expect("logs dir");
    let bin = assert_cmd::cargo::cargo_bin("crispy");
    let out = std::process::Command::new("strace")
        .args(["-ff", "-qq", "-y", "-s", "4096", "-o"])
        .arg(logs.path().join("t"))
        .args(["-e", "trace=fsync,fdatasync,linkat,unlink"])
        .args(inject)
        .arg(bin)
        .args(["run", "-q", "--chunk", "2s", "--source"])
        .arg(&src)
        .args(["--sink", sink])
        .args(extra)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("strace runs");
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_dir(logs.path())
        .expect("logs")
        .map(|e| {
            let text = std::fs::read_to_string(e.expect("entry").path()).expect("log");
            text.lines().map(str::to_owned).collect()
        })
        .collect()
}

/// The number of chunks and manifests stored under `root`.
fn stored(root: &Path) -> usize {
    files_with_ext(root, "mp4").expect("list").len()
        + files_with_ext(root, "json").expect("list").len()
}

/// `fsync(<dir>) = 0` in a trace line.
fn synced_ok(call: &str, dir: &Path) -> bool {
    call.starts_with("fsync(")
        && call.contains(&format!("<{}>)", dir.display()))
        && call.ends_with("= 0")
}

/// Checks a run with `fsync=true` into `root`: every object named in `root` had its data
/// synced just before (or, where a failed directory sync took the name back, was written
/// again), its directory synced just after, and every directory up to `root`'s parent is
/// synced in its parent. Returns how many names were taken back.
fn assert_synced(threads: &[Vec<String>], root: &Path) -> usize {
    let mut linked = 0;
    let mut taken_back = 0;
    for calls in threads {
        for (i, call) in calls.iter().enumerate() {
            let Some(args) = call.strip_prefix("linkat(") else {
                continue;
            };
            if !call.ends_with("= 0") {
                continue;
            }
            let dest = args.split('"').nth(3).expect("destination");
            let parent = Path::new(dest).parent().expect("parent");
            assert!(Path::new(dest).starts_with(root), "{call}");
            let before = &calls[i - 1];
            assert!(
                before.starts_with("fdatasync(")
                    && before.contains(&format!("<{}/#", parent.display()))
                    && before.ends_with("= 0"),
                "the data is synced before the name is given: {before} / {call}"
            );
            // The directory walk after the link: each sync succeeds, or the name is taken
            // back at once.
            let walk = calls[i + 1..]
                .iter()
                .take_while(|c| c.starts_with("fsync("));
            let failed = walk.clone().any(|c| !c.ends_with("= 0"));
            assert!(
                calls
                    .get(i + 1)
                    .is_some_and(|c| c.contains(&format!("<{}>)", parent.display()))),
                "the directory is synced after: {call}"
            );
            if failed {
                let next = calls[i + 1..].iter().find(|c| !c.starts_with("fsync("));
                assert_eq!(
                    next.map(String::as_str),
                    Some(format!("unlink(\"{dest}\") = 0").as_str()),
                    "a name whose directory did not sync is taken back"
                );
                taken_back += 1;
            } else {
                linked += 1;
            }
        }
    }
    assert_eq!(
        linked,
        stored(root),
        "every object linked once, after its sync"
    );
    assert_dirs_synced(threads, root);
    taken_back
}

/// Every directory from `root` down is synced in its parent somewhere in the trace.
fn assert_dirs_synced(threads: &[Vec<String>], root: &Path) {
    let all: Vec<&String> = threads.iter().flatten().collect();
    let mut dirs = vec![root.to_path_buf()];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                dirs.push(path.clone());
                stack.push(path);
            }
        }
    }
    for d in &dirs {
        let parent = d.parent().expect("parent");
        assert!(
            all.iter().any(|c| synced_ok(c, parent)),
            "the entry of {} is synced in its parent",
            d.display()
        );
    }
}

/// `--sink-opt fsync=true` on a local directory: each object's data is on the disk before
/// it gets its name, its directory is synced before the put returns, and so is every
/// directory the run created, in its parent. A directory sync that fails takes the name
/// back and the object is written again; objects already there (stored without the option)
/// are synced before they count. Without the option nothing is synced (the default, as the
/// ffmpeg CLI writes).
#[test]
fn fsync_true_puts_every_object_on_the_disk_before_it_counts_as_stored() {
    require_strace();
    let dir = tempfile::tempdir().expect("tempdir");
    // Canonical: the trace shows real paths.
    let base = std::fs::canonicalize(dir.path()).expect("canonical");

    // A relative root whose parents are new: their entries are synced, up to the cwd's.
    let root = base.join("new/sink");
    let threads = traced_run(&base, "new/sink", &["--sink-opt", "fsync=true"], &[]);
    assert_eq!(assert_synced(&threads, &root), 0);
    assert!(stored(&root) >= 6, "{}", stored(&root));
    let all: Vec<&String> = threads.iter().flatten().collect();
    assert!(all.iter().any(|c| synced_ok(c, &base)));

    // Each thread's third directory sync fails (EIO; strace counts per thread, so one or
    // two upload threads get there): those names are taken back and the objects written
    // again; nothing counts as stored unsynced.
    let root = base.join("eio");
    let eio = ["-e", "inject=fsync:error=EIO:when=3"];
    let threads = traced_run(&base, "file://./eio", &["--sink-opt", "fsync=true"], &eio);
    assert!(
        assert_synced(&threads, &root) >= 1,
        "a sync failed and was retried"
    );

    // No unnamed files (EXDEV from linkat): LocalFileSystem's staging files, synced too.
    let root = base.join("staged");
    let exdev = ["-e", "inject=linkat:error=EXDEV:when=1"];
    let threads = traced_run(&base, "staged", &["--sink-opt", "fsync=true"], &exdev);
    let mut staged_links = 0;
    for calls in &threads {
        for (i, call) in calls.iter().enumerate() {
            if call.starts_with("linkat(") && call.contains("#1\", ") && call.ends_with("= 0") {
                let staged = call.split('"').nth(1).expect("staging name");
                assert!(
                    synced_ok(&calls[i - 1], Path::new(staged)),
                    "staged data synced before it is named: {} / {call}",
                    calls[i - 1]
                );
                staged_links += 1;
            }
        }
    }
    assert!(staged_links >= 1, "the fallback was taken");
    assert!(stored(&root) >= 6);
    assert_dirs_synced(&threads, &root);

    // Stored without the option, then run again with it: the objects there are synced.
    let plain = base.join("plain");
    let threads = traced_run(&base, "plain", &[], &[]);
    let syncs: Vec<&String> = (threads.iter().flatten())
        .filter(|c| c.starts_with("fsync(") || c.starts_with("fdatasync("))
        .collect();
    assert!(syncs.is_empty(), "{syncs:?}");
    let threads = traced_run(&base, "plain", &["--sink-opt", "fsync=true"], &[]);
    let all: Vec<&String> = threads.iter().flatten().collect();
    for object in (files_with_ext(&plain, "mp4").expect("list").into_iter())
        .chain(files_with_ext(&plain, "json").expect("list"))
    {
        assert!(
            all.iter().any(|c| synced_ok(c, &object)),
            "{}",
            object.display()
        );
    }

    let out = run(
        Fixture::H264_1080p30Gop30
            .path()
            .expect("fixture")
            .as_path(),
        &base.join("x"),
        &["--sink-opt", "fsync=often"],
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    assert!(stderr(&out).contains("sink option \"fsync\": takes true or false"));
}

/// A local sink that a file stands in (where the source's folder should be): a file run stops
/// at its first chunk with exit 21, naming the object. It used to retry for ever. (Live
/// sources keep retrying: `a_blocked_local_sink_holds_a_live_source_until_cleared`.)
#[test]
fn a_blocked_local_sink_stops_a_file_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Fixture::H264LongGop250.path().expect("fixture");
    let sink = dir.path().join("out");
    std::fs::create_dir(&sink).expect("sink");
    let id = "blocked";
    std::fs::write(sink.join(id), b"in the way").expect("blocker");
    let out = crispy()
        .args(["run", "--source-id", id, "--source"])
        .arg(&src)
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("crispy runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(21), "{err}");
    assert!(
        err.contains(&format!("uploading {id}/"))
            && err.contains("the directory cannot be written: Not a directory")
            && err.contains("a file stands where one of its folders should be"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(sink.join(id)).expect("blocker"),
        b"in the way"
    );
}

/// Two recordings of other sizes joined into one MPEG-TS file: the chunk in progress closes at
/// the first keyframe of the new size, and every chunk after is described by the new
/// parameter sets (its `avcC`, its manifest's resolution). The chunks and manifests used to
/// keep the first size.
#[test]
fn a_size_change_inside_a_file_starts_a_chunk_with_the_new_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name).to_str().expect("utf8").to_owned();
    for (name, size) in [("a.ts", "320x240"), ("b.ts", "640x480")] {
        let src = format!("testsrc2=size={size}:rate=25:duration=4");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &src,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            &p(name),
        ])
        .expect("ffmpeg");
    }
    std::fs::write(p("list.txt"), "file 'a.ts'\nfile 'b.ts'\n").expect("list");
    ffmpeg(&[
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        &p("list.txt"),
        "-c",
        "copy",
        &p("joined.ts"),
    ])
    .expect("ffmpeg joins");
    let sink = dir.path().join("out");
    let out = run(Path::new(&p("joined.ts")), &sink, &["--chunk", "3s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stream parameters changed: starting a new chunk"),
        "{}",
        stderr(&out)
    );
    let ms = manifests(&sink);
    let sizes: Vec<(u64, u64, u64)> = ms
        .iter()
        .map(|(_, m)| {
            (
                m["width"].as_u64().unwrap_or(0),
                m["frame_count"].as_u64().unwrap_or(0),
                m["duration_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // 3 s, then the 1 s left of the first size, then the second size from its first frame.
    assert_eq!(
        sizes,
        [
            (320, 75, 3000),
            (320, 25, 1000),
            (640, 75, 3000),
            (640, 25, 1000)
        ]
    );
    for (json, m) in &ms {
        let path = json.with_extension("mp4");
        // The chunk's own configuration record describes its frames: decoded with the
        // in-band parameter sets removed, it has the manifest's size and no errors.
        let stripped = dir.path().join("stripped.mp4");
        let _ = std::fs::remove_file(&stripped);
        ffmpeg(&[
            "-i",
            path.to_str().expect("utf8"),
            "-c",
            "copy",
            "-bsf:v",
            "filter_units=remove_types=7|8",
            stripped.to_str().expect("utf8"),
        ])
        .expect("strip");
        let probe = ffprobe_video(&stripped).expect("ffprobe");
        assert_eq!(
            (u64::from(probe.width), u64::from(probe.height)),
            (
                m["width"].as_u64().unwrap_or(0),
                m["height"].as_u64().unwrap_or(0)
            ),
            "{}",
            path.display()
        );
        assert_eq!(
            decode_errors(&stripped).expect("decode"),
            "",
            "{}",
            path.display()
        );
    }
    assert_verifies(&sink, "joined with concat");

    // Joined byte by byte (`cat`): the second recording's timestamps start again, so its
    // first chunk is also a discontinuity after a restart; the chunks still verify.
    let mut cat = std::fs::read(p("a.ts")).expect("a");
    cat.extend(std::fs::read(p("b.ts")).expect("b"));
    std::fs::write(p("cat.ts"), cat).expect("cat");
    let sink = dir.path().join("cat");
    let out = run(Path::new(&p("cat.ts")), &sink, &["--chunk", "3s"]);
    // (The joint breaks MPEG-TS continuity: a damaged packet, reported after every chunk.)
    assert!(
        matches!(out.status.code(), Some(0 | 16)),
        "{}",
        stderr(&out)
    );
    let ms = manifests(&sink);
    let got: Vec<(u64, bool)> = ms
        .iter()
        .map(|(_, m)| {
            (
                m["width"].as_u64().unwrap_or(0),
                m["discontinuity"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(320, false), (320, false), (640, true), (640, false)],
        "{ms:?}"
    );
    assert_verifies(&sink, "joined with cat");
}
