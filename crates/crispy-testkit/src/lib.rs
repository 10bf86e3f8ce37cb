//! Test support for crispy-streamer.
//!
//! Fixtures are generated on first use with the ffmpeg CLI (lavfi `testsrc2`) and cached under
//! `target/fixtures` (or `$CRISPY_FIXTURES_DIR`). Generation writes to a temporary name and
//! renames, so concurrent test processes never see a half-written file. Helpers run
//! ffprobe/ffmpeg on produced chunks so tests check real decoders, not our own parser.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub mod emulators;
mod rtsp;

pub use rtsp::{RTSP_PASSWORD, RTSP_USER, RtspServer, free_port, signal};

/// A generated input video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// 1920x1080, 30 fps, H.264 High, GOP 30, no B-frames, 10 s (300 frames).
    H264_1080p30Gop30,
    /// 1280x720, 30 fps, H.264 with B-frames, GOP 60, AAC audio, 10 s (300 frames).
    H264_720pBframesAac,
    /// 1280x720, 25 fps, H.265 (`hvc1`), GOP 50, 6 s (150 frames).
    H265_720p,
    /// 640x360, 25 fps, H.264, GOP 250, 24 s (600 frames).
    H264LongGop250,
    /// 1920x1080, 30 fps, H.264 GOP 30, 5 minutes (9000 frames) at about 5 Mbit/s: benchmarks.
    H264_1080p30Long,
    /// 1280x720, 30 fps, H.264 Main, GOP 30, no B-frames, about 2 Mbit/s, 100 s (3000 frames),
    /// like a CCTV camera's main stream: the simulated cameras of `cargo xtask cameras`.
    H264_720p30Cctv,
}

impl Fixture {
    /// Every fixture the default test suite uses.
    pub const TEST_SET: [Fixture; 4] = [
        Fixture::H264_1080p30Gop30,
        Fixture::H264_720pBframesAac,
        Fixture::H265_720p,
        Fixture::H264LongGop250,
    ];

    /// The cached file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Fixture::H264_1080p30Gop30 => "h264_1080p30_gop30.mp4",
            Fixture::H264_720pBframesAac => "h264_720p30_bframes_aac.mp4",
            Fixture::H265_720p => "h265_720p25_gop50.mp4",
            Fixture::H264LongGop250 => "h264_360p25_gop250.mp4",
            Fixture::H264_1080p30Long => "h264_1080p30_gop30_5min.mp4",
            Fixture::H264_720p30Cctv => "h264_720p30_cctv_100s.mp4",
        }
    }

    /// Frames in the fixture.
    pub fn frames(self) -> u64 {
        match self {
            Fixture::H264_1080p30Gop30 | Fixture::H264_720pBframesAac => 300,
            Fixture::H265_720p => 150,
            Fixture::H264LongGop250 => 600,
            Fixture::H264_1080p30Long => 9000,
            Fixture::H264_720p30Cctv => 3000,
        }
    }

    /// Duration in milliseconds.
    pub fn duration_ms(self) -> u64 {
        match self {
            Fixture::H264_1080p30Gop30 | Fixture::H264_720pBframesAac => 10_000,
            Fixture::H265_720p => 6_000,
            Fixture::H264LongGop250 => 24_000,
            Fixture::H264_1080p30Long => 300_000,
            Fixture::H264_720p30Cctv => 100_000,
        }
    }

    /// `(width, height)`.
    pub fn size(self) -> (u32, u32) {
        match self {
            Fixture::H264_1080p30Gop30 | Fixture::H264_1080p30Long => (1920, 1080),
            Fixture::H264_720pBframesAac | Fixture::H265_720p | Fixture::H264_720p30Cctv => {
                (1280, 720)
            }
            Fixture::H264LongGop250 => (640, 360),
        }
    }

    fn ffmpeg_args(self) -> Vec<&'static str> {
        let quiet = ["-hide_banner", "-nostdin", "-v", "error", "-y"];
        let rest: &[&str] = match self {
            Fixture::H264_1080p30Gop30 => &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1920x1080:rate=30:duration=10",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-profile:v",
                "high",
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-sc_threshold",
                "0",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
            ],
            Fixture::H264_720pBframesAac => &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30:duration=10",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000:duration=10",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-sc_threshold",
                "0",
                "-bf",
                "2",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "96k",
                "-shortest",
            ],
            Fixture::H265_720p => &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=25:duration=6",
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "keyint=50:min-keyint=50:scenecut=0:open-gop=0:log-level=error",
                "-tag:v",
                "hvc1",
                "-pix_fmt",
                "yuv420p",
            ],
            Fixture::H264LongGop250 => &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=25:duration=24",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                "250",
                "-keyint_min",
                "250",
                "-sc_threshold",
                "0",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
            ],
            Fixture::H264_1080p30Long => &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1920x1080:rate=30:duration=300",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-b:v",
                "5M",
                "-maxrate",
                "5M",
                "-bufsize",
                "10M",
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-sc_threshold",
                "0",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
            ],
            Fixture::H264_720p30Cctv => &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30:duration=100",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-profile:v",
                "main",
                "-b:v",
                "2M",
                "-maxrate",
                "2M",
                "-bufsize",
                "4M",
                "-g",
                "30",
                "-keyint_min",
                "30",
                "-sc_threshold",
                "0",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
            ],
        };
        quiet.iter().chain(rest).copied().collect()
    }

    /// The fixture's path, generating it first if it is not cached yet.
    pub fn path(self) -> Result<PathBuf> {
        let out = fixtures_dir()?.join(self.file_name());
        if !out.exists() {
            let mut args = self.ffmpeg_args();
            let tmp = temp_name(&out);
            let tmp_s = tmp.to_str().context("non-UTF-8 fixture path")?.to_owned();
            args.extend(["-f", "mp4"]);
            let mut cmd = Command::new("ffmpeg");
            cmd.args(&args).arg(&tmp_s);
            run(&mut cmd).with_context(|| format!("generating fixture {}", self.file_name()))?;
            std::fs::rename(&tmp, &out)?;
        }
        Ok(out)
    }
}

/// Where fixtures are cached: `$CRISPY_FIXTURES_DIR`, else `<workspace>/target/fixtures`.
pub fn fixtures_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("CRISPY_FIXTURES_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn temp_name(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(name)
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| {
        format!(
            "starting {:?} (is FFmpeg installed? `cargo xtask deps`)",
            cmd.get_program()
        )
    })?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command whose stdout is a pipe nobody reads any more (as in `cmd | head` once
/// `head` has exited): every write to it fails with `EPIPE`. Returns the exit code and stderr.
pub fn run_with_closed_stdout(cmd: &mut Command) -> Result<(Option<i32>, String)> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    drop(reader);
    let out = cmd
        .stdout(writer)
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs ffmpeg with `args` (quiet, overwrite).
pub fn ffmpeg(args: &[&str]) -> Result<()> {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args))
    .map(drop)
}

/// A copy of `fixture` remuxed with its index first (`+faststart`) and cut to `fraction` of
/// its size: a file whose frames end abruptly, as after a crash mid-copy.
pub fn truncated_copy(fixture: Fixture, fraction: f64, dir: &Path) -> Result<PathBuf> {
    let full = dir.join("faststart.mp4");
    let src = fixture.path()?;
    ffmpeg(&[
        "-i",
        path_str(&src)?,
        "-map",
        "0:v",
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        path_str(&full)?,
    ])?;
    let bytes = std::fs::read(&full)?;
    let cut = (bytes.len() as f64 * fraction) as usize;
    let out = dir.join("truncated.mp4");
    std::fs::write(&out, &bytes[..cut])?;
    Ok(out)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// What ffprobe says about a file's first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoProbe {
    /// Codec name (`h264`, `hevc`).
    pub codec: String,
    /// Codec tag (`avc1`, `hvc1`).
    pub tag: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stream duration in seconds.
    pub duration_s: f64,
    /// Stream start time in seconds.
    pub start_s: f64,
    /// Packets counted by reading the whole stream.
    pub packets: u64,
    /// Packets flagged as keyframes.
    pub keyframes: u64,
    /// Presentation timestamps of all packets, in seconds, in file order.
    pub pts_s: Vec<f64>,
}

#[derive(Deserialize)]
struct ProbeOut {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    #[serde(default)]
    packets: Vec<ProbePacket>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_name: String,
    codec_tag_string: String,
    width: u32,
    height: u32,
    duration: Option<String>,
    start_time: Option<String>,
}

#[derive(Deserialize)]
struct ProbePacket {
    pts_time: Option<String>,
    flags: String,
}

/// Probes the first video stream of `path` with ffprobe, reading every packet.
pub fn ffprobe_video(path: &Path) -> Result<VideoProbe> {
    let json = run(Command::new("ffprobe").args([
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_streams",
        "-show_entries",
        "packet=pts_time,flags",
        "-of",
        "json",
        path_str(path)?,
    ]))?;
    let out: ProbeOut = serde_json::from_str(&json).context("parsing ffprobe JSON")?;
    let s = out
        .streams
        .into_iter()
        .next()
        .context("ffprobe found no video stream")?;
    let num = |v: Option<String>| -> Result<f64> {
        v.context("missing value")?
            .parse::<f64>()
            .context("not a number")
    };
    Ok(VideoProbe {
        codec: s.codec_name,
        tag: s.codec_tag_string,
        width: s.width,
        height: s.height,
        duration_s: num(s.duration).context("stream duration")?,
        start_s: num(s.start_time).unwrap_or(0.0),
        packets: out.packets.len() as u64,
        keyframes: out
            .packets
            .iter()
            .filter(|p| p.flags.starts_with('K'))
            .count() as u64,
        pts_s: out
            .packets
            .iter()
            .map(|p| num(p.pts_time.clone()))
            .collect::<Result<_>>()?,
    })
}

/// Decodes `path` fully with ffmpeg; returns everything it printed at level `error`
/// (empty means it decoded cleanly).
pub fn decode_errors(path: &Path) -> Result<String> {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-i",
            path_str(path)?,
            "-f",
            "null",
            "-",
        ])
        .output()
        .context("starting ffmpeg")?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str(&format!("\nffmpeg exited with {}", out.status));
    }
    Ok(text)
}

/// Frames actually decoded from `path` (ffprobe `-count_frames`).
pub fn decoded_frames(path: &Path) -> Result<u64> {
    let out = run(Command::new("ffprobe").args([
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
        path_str(path)?,
    ]))?;
    let n = out.trim().trim_end_matches(',');
    n.parse()
        .with_context(|| format!("ffprobe printed {out:?}"))
}

/// All files under `dir` with the extension `ext`, sorted by path.
pub fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A child process logging JSON lines to a file (e.g. `crispy --log-format json run`), killed
/// by PID when dropped.
pub struct LoggedChild {
    child: std::process::Child,
    log: PathBuf,
}

impl LoggedChild {
    /// Spawns `cmd` with stderr going to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file);
        Ok(Self {
            child: cmd.spawn().context("spawning the child")?,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines that are JSON.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `pred` holds on the log lines; panics with the logs after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < timeout {
            if pred(&self.lines()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; logs:\n{}", self.logs());
    }

    /// SIGTERM, then the exit code and logs (panics if it does not exit within 60 s).
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let _ = signal(self.child.id(), "TERM");
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.logs());
            }
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!(
                    "the child did not exit after SIGTERM; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits for the child to exit by itself: its exit code and logs (panics after `timeout`).
    pub fn wait_exit(mut self, timeout: std::time::Duration) -> (Option<i32>, String) {
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.logs());
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "the child did not exit in {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs()
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Count of `chunk stored` log lines.
pub fn stored_count(lines: &[serde_json::Value]) -> usize {
    lines
        .iter()
        .filter(|l| l["message"] == "chunk stored")
        .count()
}

/// A minimal valid manifest (`crispy.manifest/1`) as JSON: source `cam`, sequence 0, a 3 s
/// 640x360 H.264 chunk starting 2026-01-01T00:00:00Z, empty `object` and `sha256`. Tests
/// parse it and set the fields they care about.
pub const SAMPLE_MANIFEST_JSON: &str = r#"{"schema":"crispy.manifest/1","source_id":"cam",
"sequence":0,"object":"","start_time":"2026-01-01T00:00:00.000Z",
"end_time":"2026-01-01T00:00:03.000Z","clock":"run-start","start_pts":0,"time_base":"1/90000",
"duration_ts":270000,"duration_ms":3000,"requested_ms":3000,"frame_count":90,"fps":30.0,
"width":640,"height":360,"codec":"h264","profile":null,"keyframe_aligned":true,
"discontinuity":false,"bytes":0,"sha256":""}"#;
