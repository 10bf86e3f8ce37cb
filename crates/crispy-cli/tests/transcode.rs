//! Transcode mode end to end: exact chunk lengths, scaling, decimation, other input codecs.

use assert_cmd::assert::OutputAssertExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use crispy_testkit::{decode_errors, decoded_frames, ffmpeg, ffprobe_video, files_with_ext};
use serde_json::Value;

/// A 320x240 test clip of `seconds` at `fps`, encoded with `codec`, generated once per test.
fn clip(dir: &Path, fps: u32, seconds: u32, codec: &str) -> PathBuf {
    let out = dir.join(format!("in_{fps}_{seconds}_{codec}.mp4"));
    let src = format!("testsrc2=size=320x240:rate={fps}:duration={seconds}");
    let mut args = vec!["-f", "lavfi", "-i", &src, "-c:v", codec];
    if codec == "libx264" {
        args.extend(["-preset", "ultrafast", "-g", "250"]);
    }
    if codec == "mjpeg" {
        args.extend(["-pix_fmt", "yuvj420p"]);
    }
    let out_s = out.to_str().expect("utf8").to_owned();
    args.push(&out_s);
    ffmpeg(&args).expect("ffmpeg makes the clip");
    out
}

fn run(source: &Path, sink: &Path, extra: &[&str]) -> Output {
    Command::cargo_bin("crispy")
        .expect("binary")
        .args([
            "run",
            "-q",
            "--mode",
            "transcode",
            "--preset",
            "ultrafast",
            "--source",
        ])
        .arg(source)
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .args(extra)
        .output()
        .expect("runs")
}

fn manifests(dir: &Path) -> Vec<Value> {
    let mut all: Vec<Value> = files_with_ext(dir, "json")
        .expect("list")
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("manifest"))
        .collect();
    all.sort_by_key(|m| m["sequence"].as_u64());
    all
}

/// Index of the first frame at or after `ms` for a stream at `fps`.
fn first_frame_at(ms: u64, fps: u64) -> u64 {
    (ms * fps).div_ceil(1000)
}

fn exact_chunks(fps: u32, chunk_ms: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seconds = ((chunk_ms * 11).div_ceil(1000) as u32).max(4);
    let input = clip(dir.path(), fps, seconds, "libx264");
    let sink = dir.path().join("sink");
    let chunk = format!("{chunk_ms}ms");
    let out = run(&input, &sink, &["--chunk", &chunk]);
    out.assert().success();
    let ms = manifests(&sink);
    let fps = u64::from(fps);
    assert!(
        ms.len() >= 11,
        "{fps} fps, {chunk_ms} ms: {} chunks",
        ms.len()
    );
    let mut total = 0;
    for (k, m) in ms.iter().enumerate() {
        let k = k as u64;
        let first = first_frame_at(k * chunk_ms, fps);
        let frames = m["frame_count"].as_u64().expect("frames");
        total += frames;
        if k + 1 < ms.len() as u64 {
            let want = first_frame_at((k + 1) * chunk_ms, fps) - first;
            assert_eq!(frames, want, "{fps} fps, {chunk_ms} ms, chunk {k}: {m}");
            let want_ms = (want * 1000 + fps / 2) / fps;
            assert!(
                m["duration_ms"].as_u64().expect("ms").abs_diff(want_ms) <= 1,
                "{m}"
            );
        }
        assert_eq!(m["requested_ms"].as_u64(), Some(chunk_ms));
        if k < 12 {
            let file = sink.join(m["object"].as_str().expect("object"));
            assert_eq!(
                decode_errors(&file).expect("ffmpeg"),
                "",
                "chunk {k} decodes on its own"
            );
            let p = ffprobe_video(&file).expect("ffprobe");
            assert_eq!(p.packets, frames);
            assert!((p.duration_s * 1000.0 - m["duration_ms"].as_f64().expect("ms")).abs() <= 1.0);
            assert_eq!(p.keyframes, 1, "one keyframe per chunk, at its start");
        }
    }
    assert_eq!(
        total,
        u64::from(seconds) * fps,
        "no frame lost or duplicated"
    );
}

#[test]
fn exact_3000ms_chunks_at_25_and_30_fps() {
    exact_chunks(25, 3000);
    exact_chunks(30, 3000);
}

#[test]
fn exact_1500ms_chunks_at_25_and_30_fps() {
    exact_chunks(25, 1500);
    exact_chunks(30, 1500);
}

#[test]
fn exact_1000ms_chunks_at_25_and_30_fps() {
    exact_chunks(25, 1000);
    exact_chunks(30, 1000);
}

#[test]
fn exact_333ms_chunks_at_25_and_30_fps() {
    exact_chunks(25, 333);
    exact_chunks(30, 333);
}

#[test]
fn scaling_and_decimation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = clip(dir.path(), 30, 4, "libx264");
    let sink = dir.path().join("sink");
    let out = run(
        &input,
        &sink,
        &["--chunk", "1s", "--max-height", "180", "--fps", "10"],
    );
    out.assert().success();
    let ms = manifests(&sink);
    assert_eq!(ms.len(), 4);
    for m in &ms {
        assert_eq!(
            (m["width"].as_u64(), m["height"].as_u64()),
            (Some(240), Some(180)),
            "{m}"
        );
        assert_eq!(m["frame_count"], 10, "{m}");
        assert_eq!(m["duration_ms"], 1000, "{m}");
        let p = ffprobe_video(&sink.join(m["object"].as_str().expect("object"))).expect("ffprobe");
        assert_eq!((u64::from(p.width), u64::from(p.height)), (240, 180));
    }

    // Rates whose frame interval is no whole number of 1/90000 s ticks: every 1 s chunk
    // still holds exactly that many frames and starts on its boundary (frames used to be
    // placed a fraction of a tick early each, so the seventh landed before the boundary).
    for fps in [7u64, 11, 13] {
        let sink = dir.path().join(format!("fps{fps}"));
        let out = run(
            &input,
            &sink,
            &[
                "--chunk",
                "1s",
                "--scale",
                "160x120",
                "--fps",
                &fps.to_string(),
            ],
        );
        out.assert().success();
        let ms = manifests(&sink);
        assert_eq!(ms.len(), 4, "{fps} fps");
        for (i, m) in ms.iter().enumerate() {
            assert_eq!(
                (m["frame_count"].as_u64(), m["duration_ms"].as_u64()),
                (Some(fps), Some(1000)),
                "{fps} fps, chunk {i}: {m}"
            );
            assert_eq!(m["duration_ts"], 90_000, "{fps} fps, chunk {i}: {m}");
            let p =
                ffprobe_video(&sink.join(m["object"].as_str().expect("object"))).expect("ffprobe");
            assert_eq!(p.packets, fps, "{fps} fps, chunk {i}");
            assert!(
                (p.duration_s - 1.0).abs() < 0.001,
                "{fps} fps, chunk {i}: {p:?}"
            );
        }
    }

    let sink = dir.path().join("sink2");
    let out = run(&input, &sink, &["--chunk", "2s", "--scale", "160x120"]);
    out.assert().success();
    let ms = manifests(&sink);
    // The profile libx264 chose, as ffprobe reads it from the chunk (it used to be null).
    for m in &ms {
        let chunk = sink.join(m["object"].as_str().expect("object"));
        let probed = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=profile",
                "-of",
                "csv=p=0",
            ])
            .arg(&chunk)
            .output()
            .expect("ffprobe");
        let profile = String::from_utf8_lossy(&probed.stdout).trim().to_owned();
        assert!(!profile.is_empty(), "{probed:?}");
        assert_eq!(m["profile"].as_str(), Some(profile.as_str()), "{m}");
    }
    assert!(
        ms.iter()
            .all(|m| m["width"] == 160 && m["height"] == 120 && m["frame_count"] == 60)
    );

    // A rate above the source's drops nothing and keeps the frames' times: every chunk
    // exactly 1 s with 30 frames (placed on a 50 fps grid, frames moved and chunks came out short).
    let sink = dir.path().join("sink3");
    let out = run(&input, &sink, &["--chunk", "1s", "--fps", "50"]);
    out.assert().success();
    let ms = manifests(&sink);
    assert_eq!(ms.len(), 4);
    for m in &ms {
        assert_eq!(
            (m["frame_count"].as_u64(), m["duration_ms"].as_u64()),
            (Some(30), Some(1000)),
            "{m}"
        );
    }
}

#[test]
fn mjpeg_and_mpeg4_inputs_transcode_but_do_not_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    for codec in ["mjpeg", "mpeg4"] {
        let input = clip(dir.path(), 25, 3, codec);
        let sink = dir.path().join(codec);
        let out = run(&input, &sink, &["--chunk", "1s"]);
        assert!(
            out.status.success(),
            "{codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ms = manifests(&sink);
        assert_eq!(ms.len(), 3, "{codec}");
        for m in &ms {
            assert_eq!(m["codec"], "h264");
            assert_eq!(m["frame_count"], 25);
            let file = sink.join(m["object"].as_str().expect("object"));
            assert_eq!(decode_errors(&file).expect("ffmpeg"), "");
        }
        let copy = Command::cargo_bin("crispy")
            .expect("binary")
            .args(["run", "--sink", "memory://", "--source"])
            .arg(&input)
            .output()
            .expect("runs");
        assert_eq!(
            copy.status.code(),
            Some(15),
            "{codec}: copy mode must refuse"
        );
        assert!(String::from_utf8_lossy(&copy.stderr).contains("--mode transcode"));
    }
}

#[test]
fn unusable_transcode_requests_are_refused_before_anything_starts() {
    let run = |args: &[&str]| {
        let out = Command::cargo_bin("crispy")
            .expect("binary")
            .arg("run")
            .args(args)
            .args(["--sink", "memory://"])
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--mode", "transcode", "--source", "testsrc"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not apply to testsrc"), "{err}");
    let (code, err) = run(&[
        "--mode",
        "transcode",
        "--preset",
        "warp",
        "--source",
        "x.mp4",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("warp") && err.contains("ultrafast"), "{err}");
    let (code, err) = run(&["--mode", "transcode", "--bitrate", "0", "--source", "x.mp4"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bitrate"), "{err}");
    // Settings that would be silently dropped are refused.
    for (args, needle) in [
        (
            &["--fps", "5"][..],
            "--fps applies to --mode transcode only",
        ),
        (
            &["--max-height", "200"],
            "--max-height applies to --mode transcode",
        ),
        (
            &["--preset", "slow"],
            "--preset applies to --mode transcode",
        ),
        (&["--crf", "20"], "--crf applies to --mode transcode"),
        (
            &[
                "--mode",
                "transcode",
                "--scale",
                "640x360",
                "--max-height",
                "200",
            ],
            "cannot be used with",
        ),
        (
            &["--mode", "transcode", "--crf", "20", "--bitrate", "900"],
            "cannot be used with",
        ),
        // Was a good file called damaged (libx264 refusing to open), or a panic.
        (
            &["--mode", "transcode", "--bitrate", "99999999999"],
            "--bitrate",
        ),
        (
            &["--mode", "transcode", "--bitrate", "18446744073709551615"],
            "--bitrate",
        ),
    ] {
        let (code, err) = run(&[args, &["--source", "x.mp4"]].concat());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // With a config file, the file's settings are the run's.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cameras.toml");
    std::fs::write(
        &config,
        "[[camera]]\nid = \"a\"\nurl = \"rtsp://127.0.0.1:9/x\"\n",
    )
    .expect("write");
    let config = config.to_str().expect("utf8");
    for args in [
        &["--chunk", "1s"][..],
        &["--mode", "transcode"],
        &["--fps", "5"],
        &["--drain-timeout", "3s"],
        &["--max-in-flight", "2"],
    ] {
        let (code, err) = run(&[args, &["--config", config]].concat());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
    }
}

#[test]
fn boundaries_follow_timestamps_across_a_jump() {
    // 150 frames at 25 fps, but from frame 60 on every timestamp is 0.7 s later: a gap.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("jump.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=6",
        "-vf",
        "setpts='if(gte(N,60),PTS+0.7/TB,PTS)'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-video_track_timescale",
        "90000",
        input.to_str().expect("utf8"),
    ])
    .expect("ffmpeg");
    let sink = dir.path().join("sink");
    let out = run(&input, &sink, &["--chunk", "1s"]);
    out.assert().success();
    let ms = manifests(&sink);

    // The oracle is the input's real timestamps (the encoder rounds the jump to its time base).
    let pts = ffprobe_video(&input).expect("ffprobe").pts_s;
    assert_eq!(pts.len(), 150);
    let frame_ms = |n: u64| ((pts[n as usize] - pts[0]) * 1000.0).round() as u64;
    assert!(frame_ms(60) - frame_ms(59) > 600, "the input has the jump");
    let first_at = |t: u64| (0..150).find(|&n| frame_ms(n) >= t).expect("a frame");
    let expected: Vec<(u64, u64)> = (0..7)
        .map(|k| {
            let (a, b) = (
                first_at(k * 1000),
                if k < 6 { first_at((k + 1) * 1000) } else { 150 },
            );
            (frame_ms(a), b - a)
        })
        .collect();
    let got: Vec<(u64, u64)> = ms
        .iter()
        .map(|m| {
            (
                m["start_pts"].as_u64().expect("pts") / 90,
                m["frame_count"].as_u64().expect("frames"),
            )
        })
        .collect();
    assert_eq!(got, expected, "chunk (start ms, frames)");
    for m in &ms {
        let file = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(decode_errors(&file).expect("ffmpeg"), "");
    }
}

/// Byte offsets of the video packets of `path`, in decode order (ffprobe).
fn packet_offsets(path: &Path) -> Vec<u64> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pos", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.trim()
                .trim_end_matches(',')
                .parse()
                .expect("a packet offset")
        })
        .collect()
}

/// A file whose decoder refuses some packets is not a success: every chunk with every other
/// frame is stored, then the run ends with exit 16 naming how many packets were lost.
#[test]
fn undecodable_packets_are_reported_after_every_chunk_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = clip(dir.path(), 25, 4, "libx264");
    let offsets = packet_offsets(&source);
    assert_eq!(offsets.len(), 100, "{offsets:?}");
    // A NAL unit length far past the packet's end: the decoder cannot split the packet.
    let mut bytes = std::fs::read(&source).expect("read");
    for packet in [30usize, 60] {
        let at = usize::try_from(offsets[packet]).expect("offset");
        bytes[at..at + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    }
    let damaged = dir.path().join("damaged.mp4");
    std::fs::write(&damaged, bytes).expect("write");
    let sink = dir.path().join("out");
    let out = run(&damaged, &sink, &["--chunk", "1s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(16), "{err}");
    let said = "the decoder could not read 2 of its 100 video packets (the first around packet ";
    let first: u64 = err
        .split_once(said)
        .and_then(|(_, rest)| rest.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no '{said}' in {err}"));
    // Packet 31 (a frame-threaded decoder reports it a few packets late).
    assert!((31..=36).contains(&first), "{err}");
    assert!(
        err.contains("the 4 chunk(s) holding every other frame were stored"),
        "{err}"
    );
    let all = manifests(&sink);
    assert_eq!(all.len(), 4, "{all:#?}");
    let frames: u64 = all.iter().filter_map(|m| m["frame_count"].as_u64()).sum();
    assert_eq!(frames, 98, "every frame but the two lost is stored");
    for file in files_with_ext(&sink, "mp4").expect("list") {
        assert_eq!(
            decode_errors(&file).expect("ffmpeg"),
            "",
            "{}",
            file.display()
        );
    }

    // The same file undamaged succeeds: the exit code comes from the damage.
    let clean = run(&source, &dir.path().join("clean"), &["--chunk", "1s"]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
}

/// Non-square pixels (PAL 16:9: 720x576 with 64:45 pixels) keep the picture's shape through
/// transcoding and scaling; it used to come out squashed to 5:4.
#[test]
fn non_square_pixels_keep_the_picture_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("pal.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=720x576:rate=25:duration=2",
        "-vf",
        "setsar=64/45",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        src.to_str().expect("utf8"),
    ])
    .expect("ffmpeg makes the clip");
    let shape = |path: &Path| {
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["stream=width,height,sample_aspect_ratio", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .expect("ffprobe runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(shape(&src), "720,576,64:45");
    for (extra, expected) in [
        (vec![], "720,576,64:45"),
        (vec!["--max-height", "288"], "360,288,64:45"),
    ] {
        let sink = dir.path().join(format!("out{}", extra.len()));
        let mut args = vec!["--chunk", "1s"];
        args.extend(extra.iter().copied());
        let out = run(&src, &sink, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for chunk in files_with_ext(&sink, "mp4").expect("list") {
            assert_eq!(shape(&chunk), expected, "{extra:?}");
        }
    }
}

#[test]
fn a_truncated_file_keeps_every_chunk_its_frames_complete() {
    // A fast-start file cut short a few frames after a chunk boundary: every 1 s chunk whose
    // frames and next boundary's frame decode is stored, though the last of them were still
    // inside the decoder and encoder when reading failed (until 2026-11-25 they were lost
    // with the partial chunk, and the error miscounted it).
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("whole.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=8",
        "-c:v",
        "libx264",
        "-bf",
        "0",
        "-g",
        "25",
        "-movflags",
        "+faststart",
        whole.to_str().expect("utf8"),
    ])
    .expect("ffmpeg");
    let bytes = std::fs::read(&whole).expect("read");
    let cut = dir.path().join("cut.mp4");
    // Cut where 2 to 6 frames of a chunk are left after its boundary.
    let decodable = (bytes.len() / 2..bytes.len() * 9 / 10)
        .step_by(1500)
        .find_map(|len| {
            std::fs::write(&cut, &bytes[..len]).expect("write");
            let n = decoded_frames(&cut).expect("ffprobe counts");
            (2..=6).contains(&(n % 25)).then_some(n)
        })
        .expect("a cut a few frames after a boundary");
    let sink = dir.path().join("sink");
    let out = run(&cut, &sink, &["--chunk", "1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(16), "{stderr}");
    // Chunk k is complete when frame 25 (k + 1), where the next one starts, decodes.
    let complete = (decodable - 1) / 25;
    assert_eq!(manifests(&sink).len() as u64, complete, "{stderr}");
    let left = decodable - complete * 25;
    assert!(
        stderr.contains(&format!(
            "{complete} complete chunk(s) before the failure were stored, {left} frame(s)"
        )),
        "{stderr}"
    );
}

#[test]
fn a_file_run_stopped_before_its_end_fails_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Slow enough (about 15 s at `veryslow`) for the signal to come long before the end.
    let src = dir.path().join("long.mp4");
    let src_s = src.to_str().expect("utf8");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=60",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "250",
        src_s,
    ])
    .expect("ffmpeg makes the clip");
    let sink = dir.path().join("sink");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("crispy"))
        .args([
            "run",
            "--mode",
            "transcode",
            "--preset",
            "veryslow",
            "--chunk",
            "1s",
            "--source",
            src_s,
            "--sink",
        ])
        .arg(format!("file://{}", sink.display()))
        .env_remove("CRISPY_SIGNING_KEY")
        .env("CRISPY_LOG_FORMAT", "text")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("crispy starts");
    let t0 = std::time::Instant::now();
    while !sink.exists() || files_with_ext(&sink, "json").expect("list").is_empty() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "no chunk stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    crispy_testkit::signal(child.id(), "INT").expect("kill -INT");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(31), "{err}");
    assert!(
        err.contains("stopped before the end of")
            && err.contains("long.mp4 (source long, ")
            && err.contains(" s of it stored)")
            && err.contains("run the same command again"),
        "{err}"
    );
    // The complete chunks up to there are kept, and none of them ends the run.
    let stored = manifests(&sink);
    assert!(!stored.is_empty() && stored.len() < 60, "{}", stored.len());
    assert!(stored.iter().all(|m| m["run_end"].is_null()));
    assert_eq!(
        stored
            .iter()
            .map(|m| m["sequence"].as_u64())
            .collect::<Vec<_>>(),
        (0..stored.len() as u64).map(Some).collect::<Vec<_>>()
    );
}

/// A picture wider than libx264 takes (an ultra-wide panorama): the run says what to do and
/// exits 32, instead of calling the source damaged (16) as it did; scaled down, it runs.
#[test]
fn a_picture_too_wide_for_libx264_is_named_not_called_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("wide.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=size=17000x16:rate=5:duration=1",
        "-c:v",
        "ffv1",
        src.to_str().expect("utf8"),
    ])
    .expect("ffmpeg makes the clip");
    let sink = dir.path().join("sink");
    let out = run(&src, &sink, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(32), "{err}");
    assert!(
        err.contains("cannot transcode")
            && err.contains("17000x16")
            && err.contains("--scale or --max-height")
            && !err.contains("damaged"),
        "{err}"
    );
    assert!(files_with_ext(&sink, "mp4").unwrap_or_default().is_empty());
    let out = run(&src, &sink, &["--scale", "1700x16"]);
    out.assert().success();
    let stored = manifests(&sink);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0]["width"].as_u64(), stored[0]["height"].as_u64()),
        (Some(1700), Some(16))
    );
}
