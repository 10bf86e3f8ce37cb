//! `--align wall`: chunk boundaries on the UTC grid.

use assert_cmd::assert::OutputAssertExt;
use std::path::Path;

use assert_cmd::Command;
use chrono::{DateTime, Utc};
use crispy_testkit::{Fixture, decode_errors, ffmpeg, files_with_ext};
use serde_json::Value;

fn run(args: &[&str], sink: &Path) -> Vec<Value> {
    let out = Command::cargo_bin("crispy")
        .expect("binary")
        .args(["run", "-q", "--align", "wall"])
        .args(args)
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .output()
        .expect("runs");
    out.assert().success();
    manifests(sink)
}

/// The manifests in `sink`, in sequence order.
fn manifests(sink: &Path) -> Vec<Value> {
    let mut ms: Vec<Value> = files_with_ext(sink, "json")
        .expect("list")
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("manifest"))
        .collect();
    ms.sort_by_key(|m| m["sequence"].as_u64());
    ms
}

/// Milliseconds past the last grid line of `period` at `m`'s start.
fn past_grid(m: &Value, period: i64) -> i64 {
    let t: DateTime<Utc> = m["start_time"]
        .as_str()
        .expect("time")
        .parse()
        .expect("rfc3339");
    t.timestamp_millis().rem_euclid(period)
}

#[test]
fn synthetic_live_source_chunks_start_on_the_grid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let ms = run(
        &[
            "--source",
            "lavfi:testsrc2=size=160x120:rate=25:duration=5",
            "--chunk",
            "1s",
        ],
        &sink,
    );
    assert!(ms.len() >= 5, "{}", ms.len());
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(m["aligned"], true);
        if i > 0 {
            // Within one frame (40 ms) after the grid line.
            assert!(
                past_grid(m, 1000) < 40,
                "chunk {i} starts {} ms past the grid: {m}",
                past_grid(m, 1000)
            );
        }
        if i > 0 && i + 1 < ms.len() {
            assert_eq!(
                (m["duration_ms"].as_u64(), m["frame_count"].as_u64()),
                (Some(1000), Some(25)),
                "{m}"
            );
        }
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(decode_errors(&chunk).expect("ffmpeg"), "");
    }
    for pair in ms.windows(2) {
        assert_eq!(pair[0]["end_time"], pair[1]["start_time"]);
    }
}

#[test]
fn transcode_cuts_exactly_on_the_grid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let path = Fixture::H264LongGop250.path().expect("fixture");
    let source = path.to_str().expect("utf8");
    let ms = run(
        &[
            "--source",
            source,
            "--mode",
            "transcode",
            "--preset",
            "ultrafast",
            "--chunk",
            "2s",
        ],
        &sink,
    );
    assert!(ms.len() >= 12, "{}", ms.len());
    let total: u64 = ms
        .iter()
        .map(|m| m["frame_count"].as_u64().expect("frames"))
        .sum();
    assert_eq!(total, Fixture::H264LongGop250.frames());
    for (i, m) in ms.iter().enumerate().skip(1) {
        assert!(past_grid(m, 2000) < 40, "chunk {i}: {m}");
        if i + 1 < ms.len() {
            assert_eq!(m["frame_count"], 50, "{m}");
        }
    }
}

#[test]
fn copy_mode_cuts_at_the_first_keyframe_after_each_grid_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    // GOP 1 s: each chunk after the first starts within one second after a 3 s grid line.
    let path = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let ms = run(
        &["--source", path.to_str().expect("utf8"), "--chunk", "3s"],
        &sink,
    );
    assert!(ms.len() >= 3);
    let total: u64 = ms
        .iter()
        .map(|m| m["frame_count"].as_u64().expect("frames"))
        .sum();
    assert_eq!(total, 300);
    for (i, m) in ms.iter().enumerate().skip(1) {
        assert_eq!(m["aligned"], true);
        assert!(
            past_grid(m, 3000) <= 1000,
            "chunk {i} starts {} ms past the grid",
            past_grid(m, 3000)
        );
    }
}

/// Two recordings joined byte by byte (`cat`) in `dir`: 6 s at 25 fps, keyframes every
/// 400 ms, then the same again with its timestamps starting again.
fn joined_recording(dir: &Path) -> std::path::PathBuf {
    let one = dir.join("one.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=6",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "10",
        one.to_str().expect("utf8"),
    ])
    .expect("ffmpeg");
    let recording = std::fs::read(&one).expect("read");
    let joined = dir.join("joined.ts");
    std::fs::write(&joined, [&recording[..], &recording[..]].concat()).expect("write");
    joined
}

#[test]
fn copy_mode_keeps_to_the_grid_after_the_timestamps_restart() {
    // The second recording's chunks go on from the first one's end on the wall clock, and
    // keep to the grid.
    let dir = tempfile::tempdir().expect("tempdir");
    let joined = joined_recording(dir.path());
    let sink = dir.path().join("sink");
    let out = Command::cargo_bin("crispy")
        .expect("binary")
        .args(["run", "-q", "--align", "wall", "--chunk", "1s", "--source"])
        .arg(&joined)
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .output()
        .expect("runs");
    // (The joint breaks MPEG-TS continuity: one damaged packet, exit 16.)
    assert!(
        matches!(out.status.code(), Some(0 | 16)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms = manifests(&sink);
    let total: u64 = ms
        .iter()
        .map(|m| m["frame_count"].as_u64().expect("frames"))
        .sum();
    assert_eq!(total, 300);
    let restarts: Vec<usize> = (ms.iter().enumerate())
        .filter(|(_, m)| m["discontinuity"] == true)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(restarts.len(), 1, "{ms:#?}");
    for (i, m) in ms.iter().enumerate().skip(1) {
        let duration = m["duration_ms"].as_u64().expect("duration");
        // Keyframes every 400 ms: a chunk ends at the first keyframe past a grid line.
        assert!(duration <= 1400, "chunk {i} lasts {duration} ms: {m}");
        if i != restarts[0] {
            assert!(
                past_grid(m, 1000) < 400,
                "chunk {i} starts {} ms past the grid: {m}",
                past_grid(m, 1000)
            );
        }
    }
    for pair in ms.windows(2) {
        assert_eq!(pair[0]["end_time"], pair[1]["start_time"]);
    }
}

#[test]
fn transcode_goes_on_after_the_timestamps_restart_on_the_grid() {
    // Until 2026-11-25 transcode mode stopped at the restart (exit 16, the second recording
    // lost). Now the chunk before it closes, the next is flagged, and the chunks after it
    // are exact and on the grid again, going on from the first recording's end.
    let dir = tempfile::tempdir().expect("tempdir");
    let joined = joined_recording(dir.path());
    let sink = dir.path().join("sink");
    let out = Command::cargo_bin("crispy")
        .expect("binary")
        .args([
            "run",
            "-q",
            "--align",
            "wall",
            "--chunk",
            "1s",
            "--mode",
            "transcode",
        ])
        .args(["--preset", "ultrafast", "--source"])
        .arg(&joined)
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .output()
        .expect("runs");
    // (The joint breaks MPEG-TS continuity: one damaged packet, exit 16 once all is stored.)
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 16)), "{stderr}");
    let ms = manifests(&sink);
    let total: u64 = (ms.iter())
        .map(|m| m["frame_count"].as_u64().expect("frames"))
        .sum();
    assert_eq!(total, 300, "{stderr}");
    let restarts: Vec<usize> = (ms.iter().enumerate())
        .filter(|(_, m)| m["discontinuity"] == true)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(restarts.len(), 1, "{ms:#?}");
    let after = restarts[0];
    assert_eq!(ms[after]["gap_ms"], 0, "{:#}", ms[after]);
    for (i, m) in ms.iter().enumerate() {
        // Exact cuts: every chunk after the first starts at the first frame (40 ms each) on
        // or after a grid line, but the one the restart starts, which starts where the chunk
        // before it ended.
        if i > 0 && i != after {
            assert!(past_grid(m, 1000) < 40, "chunk {i}: {m}");
        }
        assert!(
            m["duration_ms"].as_u64().expect("ms") <= 1000,
            "chunk {i}: {m}"
        );
    }
    for pair in ms.windows(2) {
        assert_eq!(pair[0]["end_time"], pair[1]["start_time"]);
    }
    let chunks = files_with_ext(&sink, "mp4").expect("list");
    for chunk in &chunks {
        assert_eq!(
            decode_errors(chunk).expect("decodes"),
            "",
            "{}",
            chunk.display()
        );
    }
}
