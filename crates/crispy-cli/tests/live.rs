//! Live cameras end to end: the `crispy` binary against GStreamer's RTSP server on 127.0.0.1.
//! Each test starts its own server on a free port.

use assert_cmd::assert::OutputAssertExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crispy_testkit::{
    Fixture, RTSP_PASSWORD, RTSP_USER, RtspServer, decode_errors, ffprobe_video, files_with_ext,
    free_port, signal,
};
use serde_json::Value;

/// A running `crispy run`, logging JSON to a file.
struct Crispy {
    child: Child,
    log: PathBuf,
}

impl Crispy {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join("crispy.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("crispy"));
        cmd.args(["--log-format", "json", "run"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("crispy starts"),
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `pred` holds on the log lines, or panics after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if pred(&self.lines()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; logs:\n{}", self.logs());
    }

    /// SIGTERM, then the exit code (panics if it does not exit within 40 s).
    fn terminate(mut self) -> (Option<i32>, String) {
        signal(self.child.id(), "TERM").expect("kill -TERM");
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), self.logs());
            }
            if t0.elapsed() > Duration::from_secs(40) {
                let _ = self.child.kill();
                panic!("crispy did not exit after SIGTERM; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Crispy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `crispy run --source <source> --sink <tempdir>/sink <extra…>`.
fn live_run(source: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf, Crispy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let sink_url = format!("file://{}", sink.display());
    let mut args = vec!["--source", source, "--sink", &sink_url];
    args.extend_from_slice(extra);
    let crispy = Crispy::start(dir.path(), &args, &[]);
    (dir, sink, crispy)
}

fn stored(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter(|l| l["message"] == "chunk stored")
        .count()
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

/// Every chunk decodes, matches its manifest, and sequences are gap-free.
fn check_chunks(sink: &Path, manifests: &[Value]) {
    for (i, m) in manifests.iter().enumerate() {
        assert_eq!(m["sequence"].as_u64(), Some(i as u64), "gap-free sequence");
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(
            decode_errors(&chunk).expect("ffmpeg"),
            "",
            "chunk {i} decodes cleanly"
        );
        let p = ffprobe_video(&chunk).expect("ffprobe");
        let d = m["duration_ms"].as_f64().expect("duration");
        assert!(
            (p.duration_s * 1000.0 - d).abs() <= 1.0,
            "chunk {i}: ffprobe {} s, manifest {d} ms",
            p.duration_s
        );
        assert_eq!(
            Some(p.packets),
            m["frame_count"].as_u64(),
            "chunk {i} frames"
        );
        assert_eq!((p.width, p.height), (640, 360));
    }
}

#[test]
fn twenty_seconds_of_live_stream_then_sigterm_uploads_the_partial_chunk() {
    let server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(
        &server.url("/live"),
        &["--chunk", "2s", "--source-id", "cam"],
    );
    crispy.wait_for("first keyframe", Duration::from_secs(15), |l| {
        l.iter().any(|l| l["message"] == "first keyframe")
    });
    let started = Instant::now();
    // 20 s of stream, then stop mid-chunk (the server's GOP is 1 s, chunks 2 s).
    std::thread::sleep(Duration::from_millis(20_500).saturating_sub(started.elapsed()));
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");

    let ms = manifests(&sink);
    assert!(ms.len() >= 10, "{} chunks; logs:\n{logs}", ms.len());
    check_chunks(&sink, &ms);
    let (last, full) = ms.split_last().expect("chunks");
    for m in full {
        assert_eq!(m["duration_ms"], 2000, "{m}");
        assert_eq!(m["frame_count"], 50, "{m}");
        assert_eq!(m["discontinuity"], false);
        assert!(m["clock"] == "rtcp" || m["clock"] == "receive", "{m}");
    }
    assert!(
        last["frame_count"].as_u64().expect("frames") < 50,
        "the partial chunk was uploaded: {last}"
    );
    for pair in ms.windows(2) {
        assert_eq!(
            pair[0]["end_time"], pair[1]["start_time"],
            "continuous times"
        );
    }
    let summary = crispy_lines(&logs)
        .into_iter()
        .find(|l| l["message"] == "run finished")
        .expect("summary");
    assert_eq!(summary["chunks"].as_u64(), Some(ms.len() as u64));
    assert!(
        crispy_lines(&logs)
            .iter()
            .any(|l| l["message"] == "camera stopped" && l["level"] == "INFO"),
        "{logs}"
    );
}

/// `--cut exact` on a camera with a keyframe every second: 400 ms chunks of 10 frames each,
/// cut between keyframes without decoding (each carries its lead-in, hidden).
#[test]
fn exact_cuts_give_a_live_camera_chunks_of_the_requested_length() {
    let server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(
        &server.url("/live"),
        &["--chunk", "400ms", "--cut", "exact", "--source-id", "cam"],
    );
    crispy.wait_for("eight chunks", Duration::from_secs(30), |l| stored(l) >= 8);
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");

    let ms = manifests(&sink);
    let mut lead_ins = 0;
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(m["sequence"].as_u64(), Some(i as u64), "gap-free sequence");
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(decode_errors(&chunk).expect("ffmpeg"), "", "chunk {i}");
        let shown = crispy_testkit::decoded_frames(&chunk).expect("ffprobe");
        assert_eq!(Some(shown), m["frame_count"].as_u64(), "chunk {i}: {m}");
        let p = ffprobe_video(&chunk).expect("ffprobe");
        let d = m["duration_ms"].as_f64().expect("duration");
        assert!(
            (p.duration_s * 1000.0 - d).abs() <= 1.0,
            "chunk {i}: {p:?} vs {m}"
        );
        if p.packets > shown {
            lead_ins += 1;
        }
    }
    let (_, full) = ms.split_last().expect("chunks");
    assert!(full.len() >= 7, "{logs}");
    for m in full {
        assert_eq!(
            (m["duration_ms"].as_u64(), m["frame_count"].as_u64()),
            (Some(400), Some(10)),
            "{m}"
        );
    }
    assert!(
        lead_ins >= 3,
        "chunks that start between keyframes carry a lead-in"
    );
    for pair in ms.windows(2) {
        assert_eq!(
            pair[0]["end_time"], pair[1]["start_time"],
            "continuous times"
        );
    }
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("crispy"))
        .args(["verify", "--allow-unsigned"])
        .arg(format!("file://{}", sink.display()))
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn crispy_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn server_restart_flushes_the_chunk_and_continues_with_a_discontinuity() {
    let mut server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(
        &server.url("/live"),
        &["--chunk", "2s", "--source-id", "cam"],
    );
    crispy.wait_for("two chunks", Duration::from_secs(20), |l| stored(l) >= 2);
    std::thread::sleep(Duration::from_millis(700));
    server.kill();
    crispy.wait_for("the interrupted chunk", Duration::from_secs(15), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("camera stream ended"))
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    server.restart().expect("restart");
    crispy.wait_for(
        "a chunk after the reconnect",
        Duration::from_secs(30),
        |l| {
            l.iter()
                .any(|l| l["message"] == "chunk stored" && l["discontinuity"] == true)
        },
    );
    crispy.wait_for("one more chunk", Duration::from_secs(10), |l| {
        let after: Vec<_> = l
            .iter()
            .skip_while(|l| l["discontinuity"] != true)
            .collect();
        after
            .iter()
            .filter(|l| l["message"] == "chunk stored")
            .count()
            >= 2
    });
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");

    let ms = manifests(&sink);
    check_chunks(&sink, &ms);
    let gaps: Vec<&Value> = ms.iter().filter(|m| m["discontinuity"] == true).collect();
    assert_eq!(gaps.len(), 1, "exactly one discontinuity: {ms:#?}");
    let gap_ms = gaps[0]["gap_ms"].as_u64().expect("gap_ms");
    assert!(
        gap_ms >= 1500,
        "the server was down for ~2 s, gap_ms = {gap_ms}"
    );
    let at = gaps[0]["sequence"].as_u64().expect("seq") as usize;
    let before = &ms[at - 1];
    assert!(
        before["frame_count"].as_u64().expect("frames") < 50,
        "the chunk in progress was uploaded partial: {before}"
    );
    assert!(before["frame_count"].as_u64().expect("frames") > 0);
    // A dropped connection does not end the run; the shutdown does, on the last chunk.
    let ends: Vec<&Value> = ms.iter().map(|m| &m["run_end"]).collect();
    assert_eq!(
        ends.last().copied(),
        Some(&Value::from("stopped")),
        "{ms:#?}"
    );
    assert!(
        ends[..ends.len() - 1].iter().all(|e| e.is_null()),
        "{ends:?}"
    );
}

#[test]
fn a_stalled_camera_is_detected_within_the_stall_timeout() {
    let mut server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(
        &server.url("/live"),
        &[
            "--chunk",
            "2s",
            "--stall-timeout",
            "2s",
            "--source-id",
            "cam",
        ],
    );
    crispy.wait_for("a chunk", Duration::from_secs(20), |l| stored(l) >= 1);
    server.pause().expect("SIGSTOP");
    let paused = Instant::now();
    crispy.wait_for("stall detection", Duration::from_secs(8), |l| {
        l.iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.contains("stalled")))
    });
    let detected = paused.elapsed();
    assert!(
        detected <= Duration::from_millis(3500),
        "stall detected after {detected:?}"
    );
    // The chunk in progress was stored when the stall was detected.
    crispy.wait_for("the partial chunk", Duration::from_secs(5), |l| {
        stored(l) >= 2
    });
    server.resume().expect("SIGCONT");
    crispy.wait_for("recovery", Duration::from_secs(40), |l| {
        l.iter()
            .any(|l| l["message"] == "chunk stored" && l["discontinuity"] == true)
    });
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    check_chunks(&sink, &manifests(&sink));
}

#[test]
fn a_mistyped_camera_host_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crispy = Crispy::start(
        dir.path(),
        &[
            "--source",
            "rtsp://admin:Sup3r-S3cret@gate-cam.invalid/stream1?token=T0ken-S3cret",
            "--sink",
            "memory://",
            "--source-id",
            "gate",
        ],
        &[],
    );
    crispy.wait_for("the lookup error", Duration::from_secs(15), |l| {
        l.iter().any(|l| {
            l["message"].as_str().is_some_and(|m| {
                m.contains("cannot connect to rtsp://***@gate-cam.invalid/stream1?token=***")
                    && m.contains("cannot resolve the host name \"gate-cam.invalid\"")
            })
        })
    });
    let (code, logs) = crispy.terminate();
    // Stopped without a chunk from it: the exit code says so, the error names it.
    assert_eq!(code, Some(17), "{logs}");
    assert!(
        logs.contains("camera gate stored no chunk in this run")
            && logs.contains("cannot resolve the host name"),
        "{logs}"
    );
    assert!(
        !logs.contains("Sup3r-S3cret") && !logs.contains("T0ken-S3cret"),
        "the password leaked:\n{logs}"
    );
    // The final error, redacted once more as a whole, keeps the text after the URL.
    assert!(
        logs.lines()
            .any(|l| l.contains("stored no chunk")
                && l.contains("stream1?token=***: cannot resolve")),
        "{logs}"
    );
}

#[test]
fn wrong_password_is_reported_clearly_and_never_shown() {
    let server = RtspServer::start(None).expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "Wr0ng-Pass-7781";
    let url = server
        .url("/secure")
        .replacen("://", &format!("://{RTSP_USER}:{secret}@"), 1);
    let crispy = Crispy::start(
        dir.path(),
        &[
            "--source",
            &url,
            "--sink",
            "memory://",
            "--source-id",
            "cam",
        ],
        &[],
    );
    crispy.wait_for("the auth error", Duration::from_secs(15), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("rejected the credentials"))
        })
    });
    let (code, logs) = crispy.terminate();
    // The process ran until stopped (a bad camera never ends it), then says what was wrong.
    assert_eq!(code, Some(18), "{logs}");
    assert!(
        logs.contains("camera cam stored no chunk in this run")
            && logs.contains("rejected the credentials"),
        "{logs}"
    );
    assert!(!logs.contains(secret), "the password leaked:\n{logs}");
    assert!(
        logs.contains("rtsp://***@127.0.0.1"),
        "URLs are shown redacted:\n{logs}"
    );

    // The same through --username/--password-env.
    let crispy = Crispy::start(
        dir.path(),
        &[
            "--source",
            &server.url("/secure"),
            "--username",
            RTSP_USER,
            "--password-env",
            "CAM_PASS",
            "--sink",
            "memory://",
        ],
        &[("CAM_PASS", secret)],
    );
    crispy.wait_for("the auth error", Duration::from_secs(15), |l| {
        l.iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.contains("401")))
    });
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(18), "{logs}");
    assert!(!logs.contains(secret), "the password leaked:\n{logs}");
}

#[test]
fn unknown_path_is_reported_clearly() {
    let server = RtspServer::start(None).expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    // Some cameras take their credentials in the query; those values are secrets too.
    let secret = "Qu3ry-S3cret-41";
    let crispy = Crispy::start(
        dir.path(),
        &[
            "--source",
            &server.url(&format!("/no-such-stream?user=admin&password={secret}")),
            "--sink",
            "memory://",
        ],
        &[],
    );
    crispy.wait_for("the 404", Duration::from_secs(15), |l| {
        l.iter().any(|l| {
            l["message"].as_str().is_some_and(|m| {
                m.contains("no such stream (404 Not Found)")
                    && m.contains("/no-such-stream?user=admin&password=***")
            })
        })
    });
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(19), "{logs}");
    assert!(logs.contains("no such stream (404 Not Found)"), "{logs}");
    assert!(!logs.contains(secret), "the password leaked:\n{logs}");
    // FFmpeg's own "method DESCRIBE failed" is part of that message, not an ERROR line of
    // its own at each retry.
    let ffmpeg_errors = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "ffmpeg" && l["level"] == "ERROR")
        .count();
    assert_eq!(ffmpeg_errors, 0, "{logs}");
}

#[test]
fn eight_cameras_from_one_config_file() {
    let server =
        RtspServer::start(Some(&Fixture::H264LongGop250.path().expect("fixture"))).expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let mut config = format!(
        "sink = \"file://{}\"\nchunk = \"1s\"\nmax_in_flight = 4\n",
        sink.display()
    );
    for i in 0..7 {
        // Each camera its own stream (a pipeline per session); one also sends AAC audio
        // (ignored: the video is chunked).
        let mount = if i == 6 { "/audio" } else { "/each" };
        config.push_str(&format!(
            "\n[[camera]]\nid = \"cam-{i}\"\nurl = \"{}\"\n",
            server.url(mount)
        ));
    }
    // A dead camera (nothing listens on port 9) must not delay the others.
    config.push_str("\n[[camera]]\nid = \"cam-dead\"\nurl = \"rtsp://127.0.0.1:9/nothing\"\n");
    config.push_str(&format!(
        "\n[[camera]]\nid = \"cam-secure\"\nurl = \"{}\"\nusername = \"{RTSP_USER}\"\npassword_env = \"SECURE_PASS\"\ntransport = \"udp\"\nprefix = \"site-b\"\n",
        server.url("/secure")
    ));
    let path = dir.path().join("cameras.toml");
    std::fs::write(&path, config).expect("write config");
    let crispy = Crispy::start(
        dir.path(),
        &["--config", path.to_str().expect("utf8")],
        &[("SECURE_PASS", RTSP_PASSWORD)],
    );
    crispy.wait_for(
        "two chunks from every camera",
        Duration::from_secs(40),
        |l| {
            let ids: Vec<String> = (0..7)
                .map(|i| format!("cam-{i}"))
                .chain(["cam-secure".to_owned()])
                .collect();
            ids.iter().all(|id| {
                l.iter()
                    .filter(|l| l["message"] == "chunk stored" && l["source"] == id.as_str())
                    .count()
                    >= 2
            })
        },
    );
    let (code, logs) = crispy.terminate();
    // The dead camera, named as the run ends: the others' chunks are all stored.
    assert_eq!(code, Some(17), "{logs}");
    assert!(
        logs.contains("camera cam-dead stored no chunk in this run"),
        "{logs}"
    );
    assert!(!logs.contains(RTSP_PASSWORD));
    for id in (0..7)
        .map(|i| format!("cam-{i}"))
        .chain(["cam-secure".to_owned()])
    {
        // The secure camera has its own prefix inside the sink.
        let dir = if id == "cam-secure" {
            sink.join("site-b").join(&id)
        } else {
            sink.join(&id)
        };
        let ms = manifests(&dir);
        assert!(ms.len() >= 2, "{id}: {} chunks", ms.len());
        if id == "cam-secure" {
            // RTP over UDP: on a loaded machine the kernel may drop loopback datagrams, and a
            // damaged frame is the camera's loss, not ours. Check structure, not pixels.
            for m in &ms[..2] {
                let p = ffprobe_video(&sink.join(m["object"].as_str().expect("object")))
                    .expect("ffprobe");
                assert_eq!((p.width, p.height), (640, 360));
                assert_eq!(Some(p.packets), m["frame_count"].as_u64());
            }
        } else {
            check_chunks(&sink, &ms[..2]);
        }
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let server = RtspServer::start(None).expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let crispy = Crispy::start(
        dir.path(),
        &["--source", &server.url("/live"), "--sink", "memory://"],
        &[],
    );
    crispy.wait_for("first keyframe", Duration::from_secs(15), |l| {
        l.iter().any(|l| l["message"] == "first keyframe")
    });
    let pid = crispy.child.id();
    signal(pid, "INT").expect("SIGINT");
    crispy.wait_for("the shutdown notice", Duration::from_secs(5), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutting down"))
        })
    });
    // Past the window in which a repeat counts as the same request.
    std::thread::sleep(Duration::from_millis(400));
    let (code, logs) = crispy.terminate();
    // Either the drain finished first (0) or the second signal cut it short (130).
    assert!(matches!(code, Some(0) | Some(130)), "{code:?}: {logs}");
}

/// `crispy run --source testsrc --source-id yard <extra…>` into an S3 bucket whose endpoint is
/// `127.0.0.1:port` (nothing serves S3 there), spooling under `dir`.
fn testsrc_into_s3_at(dir: &Path, port: u16, extra: &[&str]) -> Crispy {
    let endpoint = format!("aws_endpoint=http://127.0.0.1:{port}");
    let spool = dir.join("spool").display().to_string();
    let mut args = vec!["--source", "testsrc", "--source-id", "yard"];
    args.extend_from_slice(&["--sink", "s3://bucket/footage", "--sink-opt", &endpoint]);
    for opt in [
        "aws_allow_http=true",
        "aws_access_key_id=testing",
        "aws_secret_access_key=testing",
        "aws_region=us-east-1",
    ] {
        args.extend_from_slice(&["--sink-opt", opt]);
    }
    args.extend_from_slice(&["--spool-dir", &spool]);
    args.extend_from_slice(extra);
    Crispy::start(dir, &args, &[])
}

/// A store that accepts connections and never answers: Ctrl-C during the start's checks
/// still stops the run at once.
#[test]
fn ctrl_c_while_the_store_does_not_answer_stops_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = hung.local_addr().expect("addr").port();
    let mut crispy = testsrc_into_s3_at(dir.path(), port, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(crispy.child.id(), "INT").expect("kill -INT");
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = crispy.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "still running after SIGINT:\n{}",
            crispy.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", crispy.logs());
    drop(hung);
}

/// `timeout 60 crispy run …` signals twice at once (the process, then its group): that is one
/// request to stop, so the drain runs to its end instead of being cut short. The store refuses
/// connections, so the drain lasts its whole timeout: long enough for a repeat to land in it.
#[test]
fn a_signal_repeated_at_once_still_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().expect("port");
    let crispy = testsrc_into_s3_at(
        dir.path(),
        port,
        &["--chunk", "1s", "--drain-timeout", "2s"],
    );
    crispy.wait_for("a failed upload", Duration::from_secs(20), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("upload failed"))
        })
    });
    let pid = crispy.child.id();
    signal(pid, "TERM").expect("kill -TERM");
    std::thread::sleep(Duration::from_millis(50));
    let (code, logs) = crispy.terminate();
    assert!(
        !logs.contains("second signal"),
        "a repeat at once cut the drain short:\n{logs}"
    );
    // The drain ran out with the chunks still in the spool (they are not lost).
    assert_eq!(code, Some(23), "{logs}");
}

#[test]
fn first_chunk_starts_at_the_first_keyframe_after_connect() {
    let server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(&server.url("/live"), &["--chunk", "1s"]);
    crispy.wait_for("a chunk", Duration::from_secs(15), |l| stored(l) >= 1);
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    let lines = crispy_lines(&logs);
    let ttfk = lines
        .iter()
        .find(|l| l["message"] == "first keyframe")
        .expect("logged")["time_to_first_keyframe_ms"]
        .as_u64()
        .expect("ms");
    // The server's first packet is a keyframe (GOP 1 s): it must be used, not skipped.
    assert!(ttfk < 1000, "time to first keyframe {ttfk} ms");
    let ms = manifests(&sink);
    assert_eq!(ms[0]["start_pts"], 0, "{}", ms[0]);
    check_chunks(&sink, &ms);
}

#[test]
fn invalid_config_is_rejected_with_line_and_field_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[camera]]\nid = \"a\"\nurl = \"rtsp://u:pw-9931@127.0.0.1:1/x\"\ntransport = \"carrier-pigeon\"\n").expect("write");
    let out = Command::new(assert_cmd::cargo::cargo_bin("crispy"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("line 4") && err.contains("transport"),
        "{err}"
    );
    assert!(!err.contains("pw-9931"), "{err}");
}

#[test]
fn synthetic_lavfi_source_is_paced_and_chunked_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let t0 = Instant::now();
    let out = Command::new(assert_cmd::cargo::cargo_bin("crispy"))
        .args([
            "run",
            "--source",
            "lavfi:testsrc2=size=320x240:rate=25:duration=4",
            "--chunk",
            "1s",
            "--source-id",
            "synth",
        ])
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .output()
        .expect("runs");
    out.assert().success();
    assert!(
        t0.elapsed() >= Duration::from_millis(3500),
        "paced in real time: {:?}",
        t0.elapsed()
    );
    let ms = manifests(&sink);
    assert_eq!(ms.len(), 4);
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(
            (m["duration_ms"].as_u64(), m["frame_count"].as_u64()),
            (Some(1000), Some(25)),
            "{m}"
        );
        assert_eq!(m["clock"], "receive");
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(decode_errors(&chunk).expect("ffmpeg"), "", "chunk {i}");
        assert_eq!(ffprobe_video(&chunk).expect("ffprobe").width, 320);
    }
}

/// Chunks that are not whole seconds: keyframes are forced on their boundaries too (they
/// used to come once a second, so 400 ms chunks came out 1 s long).
#[test]
fn synthetic_chunks_of_a_fraction_of_a_second_are_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let out = Command::new(assert_cmd::cargo::cargo_bin("crispy"))
        .args([
            "run",
            "--source",
            "lavfi:testsrc2=size=160x120:rate=25:duration=2",
            "--chunk",
            "400ms",
            "--source-id",
            "synth",
        ])
        .arg("--sink")
        .arg(format!("file://{}", sink.display()))
        .output()
        .expect("runs");
    out.assert().success();
    let ms = manifests(&sink);
    let facts: Vec<_> = ms
        .iter()
        .map(|m| (m["duration_ms"].as_u64(), m["frame_count"].as_u64()))
        .collect();
    assert_eq!(facts, vec![(Some(400), Some(10)); 5]);
}

#[test]
fn testsrc_runs_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let sink_url = format!("file://{}", sink.display());
    let crispy = Crispy::start(
        dir.path(),
        &["--source", "testsrc", "--sink", &sink_url, "--chunk", "1s"],
        &[],
    );
    crispy.wait_for("two chunks", Duration::from_secs(20), |l| stored(l) >= 2);
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    let ms = manifests(&sink);
    assert!(
        ms.len() >= 3,
        "two full chunks and the partial one: {}",
        ms.len()
    );
    assert_eq!(ms[0]["source_id"], "testsrc");
    assert_eq!(
        (ms[0]["width"].as_u64(), ms[0]["height"].as_u64()),
        (Some(1280), Some(720))
    );
}

/// A hangup (the SSH session that started the run closing) shuts down like SIGTERM: the
/// partial chunk is stored. It used to kill the process at once. Under `nohup` it stays
/// ignored.
#[test]
fn a_hangup_shuts_down_gracefully_unless_under_nohup() {
    let wait_exit = |child: &mut Child| {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(40) {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("crispy did not exit");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let sink_url = format!("file://{}", sink.display());
    let args = ["--source", "testsrc", "--sink", &sink_url, "--chunk", "1s"];
    let mut crispy = Crispy::start(dir.path(), &args, &[]);
    crispy.wait_for("a chunk", Duration::from_secs(20), |l| stored(l) >= 1);
    signal(crispy.child.id(), "HUP").expect("kill -HUP");
    assert_eq!(wait_exit(&mut crispy.child), Some(0), "{}", crispy.logs());
    assert!(
        crispy
            .lines()
            .iter()
            .any(|l| l["message"] == "run finished"),
        "{}",
        crispy.logs()
    );
    let stored_chunks = manifests(&sink).len();
    assert!(stored_chunks >= 2, "the partial chunk too: {stored_chunks}");

    let dir = tempfile::tempdir().expect("tempdir");
    let sink_url = format!("file://{}", dir.path().join("sink").display());
    let log = dir.path().join("crispy.log");
    let child = Command::new("nohup")
        .arg(assert_cmd::cargo::cargo_bin("crispy"))
        .args(["--log-format", "json", "run", "--source", "testsrc"])
        .args(["--sink", &sink_url, "--chunk", "1s"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("nohup crispy starts");
    let mut crispy = Crispy { child, log };
    crispy.wait_for("a chunk", Duration::from_secs(20), |l| stored(l) >= 1);
    signal(crispy.child.id(), "HUP").expect("kill -HUP");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        crispy.child.try_wait().expect("wait").is_none(),
        "nohup: the hangup is ignored"
    );
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
}

#[test]
fn a_closed_log_pipe_stops_neither_the_run_nor_its_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    let sink_url = format!("file://{}", sink.display());
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("crispy"))
        .args([
            "run", "--source", "testsrc", "--sink", &sink_url, "--chunk", "1s",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crispy starts");
    // Nobody reads the logs any more (a dead pipe, a restarted journal): every line fails.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let t0 = Instant::now();
    while !sink.exists() || manifests(&sink).len() < 2 {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("no chunks stored with the log pipe closed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(child.id(), "TERM").expect("kill -TERM");
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crispy ignored SIGTERM once its log pipe was closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        manifests(&sink).len() >= 3,
        "the partial chunk is stored too"
    );
}

#[test]
fn a_b_frame_file_served_over_rtsp_is_chunked_exactly() {
    // RTP carries no DTS: the B-frame file arrives with PTS only.
    let server = RtspServer::start(Some(&Fixture::H264_720pBframesAac.path().expect("fixture")))
        .expect("server");
    let (_dir, sink, crispy) = live_run(&server.url("/file"), &["--chunk", "2s"]);
    crispy.wait_for("three chunks", Duration::from_secs(30), |l| stored(l) >= 3);
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    let ms = manifests(&sink);
    for (i, m) in ms.iter().enumerate() {
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(decode_errors(&chunk).expect("ffmpeg"), "", "chunk {i}");
        let p = ffprobe_video(&chunk).expect("ffprobe");
        assert_eq!((p.width, p.height), (1280, 720));
        assert_eq!(Some(p.packets), m["frame_count"].as_u64());
        assert!((p.duration_s * 1000.0 - m["duration_ms"].as_f64().expect("ms")).abs() <= 1.0);
    }
    // GOP 60 at 30 fps: every complete chunk is 2 s, 60 frames.
    for m in &ms[..2] {
        assert_eq!(
            (m["duration_ms"].as_u64(), m["frame_count"].as_u64()),
            (Some(2000), Some(60)),
            "{m}"
        );
    }
}

#[test]
fn a_resolution_change_mid_stream_starts_a_new_chunk() {
    let server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(&server.url("/resize"), &["--chunk", "2s"]);
    crispy.wait_for("chunks after the change", Duration::from_secs(30), |l| {
        l.iter()
            .filter(|l| l["message"] == "chunk stored" && l["resolution"] == "320x180")
            .count()
            >= 1
    });
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("stream parameters changed"), "{logs}");
    let ms = manifests(&sink);
    let sizes: Vec<(u64, u64)> = ms
        .iter()
        .map(|m| {
            (
                m["width"].as_u64().unwrap_or(0),
                m["height"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let first_small = sizes
        .iter()
        .position(|s| *s == (320, 180))
        .expect("a 320x180 chunk");
    assert!(
        first_small > 0 && sizes[..first_small].iter().all(|s| *s == (640, 360)),
        "{sizes:?}"
    );
    assert!(
        sizes[first_small..].iter().all(|s| *s == (320, 180)),
        "{sizes:?}"
    );
    for (i, m) in ms.iter().enumerate() {
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(decode_errors(&chunk).expect("ffmpeg"), "", "chunk {i}");
        let p = ffprobe_video(&chunk).expect("ffprobe");
        assert_eq!(
            (u64::from(p.width), u64::from(p.height)),
            sizes[i],
            "chunk {i}: manifest and ffprobe agree"
        );
    }
}

/// Transcoded live chunks: all but the last have exactly `frames` frames of `size`, last ≤;
/// each decodes on its own and matches its manifest; times are continuous.
fn check_transcoded(sink: &Path, ms: &[Value], frames: u64, ms_per_chunk: u64, size: (u32, u32)) {
    let (last, full) = ms.split_last().expect("chunks");
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(m["sequence"].as_u64(), Some(i as u64), "gap-free sequence");
        let chunk = sink.join(m["object"].as_str().expect("object"));
        assert_eq!(
            decode_errors(&chunk).expect("ffmpeg"),
            "",
            "chunk {i} decodes"
        );
        let p = ffprobe_video(&chunk).expect("ffprobe");
        assert_eq!(p.codec, "h264");
        assert_eq!((p.width, p.height), size, "chunk {i}");
        assert_eq!(m["width"].as_u64(), Some(u64::from(size.0)));
        assert_eq!(m["height"].as_u64(), Some(u64::from(size.1)));
        assert_eq!(
            Some(p.packets),
            m["frame_count"].as_u64(),
            "chunk {i} frames"
        );
        assert_eq!(m["discontinuity"], false, "{m}");
    }
    // The first chunk may start between two boundaries (alignment); the rest are exact.
    for m in &full[1..] {
        assert_eq!(m["frame_count"].as_u64(), Some(frames), "{m}");
        assert_eq!(m["duration_ms"].as_u64(), Some(ms_per_chunk), "{m}");
    }
    assert!(last["frame_count"].as_u64().expect("frames") <= frames);
    for pair in ms.windows(2) {
        assert_eq!(
            pair[0]["end_time"], pair[1]["start_time"],
            "continuous times"
        );
    }
}

#[test]
fn an_mjpeg_camera_is_transcoded_into_exact_scaled_decimated_chunks() {
    let server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(
        &server.url("/mjpeg"),
        &[
            "--mode",
            "transcode",
            "--chunk",
            "1s",
            "--fps",
            "10",
            "--scale",
            "320x240",
            "--preset",
            "ultrafast",
            "--source-id",
            "mjpeg-cam",
        ],
    );
    crispy.wait_for("five chunks", Duration::from_secs(30), |l| stored(l) >= 5);
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    let ms = manifests(&sink);
    assert!(ms.len() >= 5, "{} chunks; logs:\n{logs}", ms.len());
    // Without alignment the first boundary is the first frame: every full chunk is exact.
    assert_eq!(ms[0]["frame_count"], 10, "{}", ms[0]);
    assert_eq!(ms[0]["requested_ms"], 1000);
    check_transcoded(&sink, &ms, 10, 1000, (320, 240));
    // The log says what the camera sends, and what is stored.
    let lines = crispy_lines(&logs);
    let connected = lines
        .iter()
        .find(|l| l["message"] == "camera connected")
        .expect("logged");
    assert_eq!(connected["codec"], "mjpeg", "{connected}");
    assert_eq!(connected["output"], "h264 320x240", "{connected}");
}

#[test]
fn copy_mode_on_an_mjpeg_camera_says_to_use_transcode() {
    let server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(&server.url("/mjpeg"), &["--chunk", "1s"]);
    crispy.wait_for("the codec error", Duration::from_secs(20), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("mjpeg") && m.contains("--mode transcode"))
        })
    });
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(15), "{logs}");
    // Nothing stored, and a failed run that stored nothing leaves no sink directory behind.
    assert!(!sink.exists(), "{logs}");
    // Stopping it says once more why this camera gave nothing.
    let stopped = crispy_lines(&logs)
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("camera stopped"))
        })
        .unwrap_or_else(|| panic!("no `camera stopped` line: {logs}"));
    assert_eq!(stopped["level"], "WARN", "{stopped}");
    let message = stopped["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("without a chunk") && message.contains("--mode transcode"),
        "{stopped}"
    );
}

#[test]
fn an_h264_camera_transcoded_with_wall_alignment_starts_chunks_on_the_grid() {
    let server = RtspServer::start(None).expect("server");
    let (_dir, sink, crispy) = live_run(
        &server.url("/live"),
        &[
            "--mode",
            "transcode",
            "--align",
            "wall",
            "--chunk",
            "1s",
            "--preset",
            "ultrafast",
        ],
    );
    crispy.wait_for("five chunks", Duration::from_secs(30), |l| stored(l) >= 5);
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    let ms = manifests(&sink);
    assert!(ms.len() >= 5, "{} chunks; logs:\n{logs}", ms.len());
    check_transcoded(&sink, &ms, 25, 1000, (640, 360));
    for m in &ms[1..] {
        assert_eq!(m["aligned"], true);
        assert_eq!(m["clock"], "receive", "alignment uses the receive clock");
        let start = chrono::DateTime::parse_from_rfc3339(m["start_time"].as_str().expect("t"))
            .expect("time");
        // Within one frame (40 ms at 25 fps) after a second boundary.
        let into = start.timestamp_subsec_millis();
        assert!(into < 40, "chunk starts {into} ms after the grid line: {m}");
    }
}

/// A local sink blocked until someone acts (here a file where the source's folder should be):
/// a live source keeps retrying and goes on by itself once it is cleared, where a file run
/// stops at once (exit 21; see `a_blocked_local_sink_stops_a_file_run` in cli.rs).
#[test]
fn a_blocked_local_sink_holds_a_live_source_until_cleared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    std::fs::create_dir(&sink).expect("sink");
    let blocker = sink.join("testsrc");
    std::fs::write(&blocker, b"in the way").expect("blocker");
    let sink_url = format!("file://{}", sink.display());
    let crispy = Crispy::start(
        dir.path(),
        &["--source", "testsrc", "--sink", &sink_url, "--chunk", "1s"],
        &[],
    );
    crispy.wait_for("a retried upload", Duration::from_secs(20), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("will retry") && m.contains("Not a directory"))
        })
    });
    std::fs::remove_file(&blocker).expect("clear");
    crispy.wait_for("chunks stored", Duration::from_secs(30), |l| stored(l) >= 2);
    let (code, logs) = crispy.terminate();
    assert_eq!(code, Some(0), "{logs}");
    let ms = manifests(&sink);
    assert_eq!(
        ms[0]["sequence"], 0,
        "the chunks held meanwhile are stored: {logs}"
    );
}
