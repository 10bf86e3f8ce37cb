//! `cargo xtask compare [--pairs N] [--check] [copy|transcode|read]…`: crispy and the
//! ffmpeg CLI side by side on the same generated input, alternating A B A B, with the
//! median throughput of each and the ratio of each pair.
//!
//! The last lines are `<what>: crispy/ffmpeg throughput ratio = X.XX` (median of the pairs).
//! `--check` fails when a median ratio is below its floor in `benches/compare-floors.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use crispy_testkit::Fixture;

/// One comparison: how to run each side on `input`, writing under `out`.
struct Case {
    name: &'static str,
    fixture: Fixture,
    crispy: fn(&Tools, &Path, &Path) -> Command,
    ffmpeg: fn(&Path, &Path) -> Command,
}

struct Tools {
    crispy: PathBuf,
    key: PathBuf,
    spool: PathBuf,
}

const CASES: &[Case] = &[
    Case {
        name: "copy",
        fixture: Fixture::H264_1080p30Long,
        crispy: |t, input, out| {
            let mut c = t.run(input, out);
            c.args(["--chunk", "3s"]);
            c
        },
        ffmpeg: |input, out| {
            let mut c = ffmpeg(input);
            c.args(["-map", "0:v", "-c", "copy"]);
            segment(&mut c, out);
            c
        },
    },
    Case {
        name: "transcode",
        fixture: Fixture::H264_1080p30Gop30,
        crispy: |t, input, out| {
            let mut c = t.run(input, out);
            c.args([
                "--chunk",
                "3s",
                "--mode",
                "transcode",
                "--preset",
                "ultrafast",
                "--crf",
                "26",
            ]);
            c
        },
        ffmpeg: |input, out| {
            // The encoder settings crispy's transcoder uses (reencode.rs).
            let mut c = ffmpeg(input);
            c.args([
                "-map",
                "0:v",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-crf",
                "26",
                "-bf",
                "0",
                "-forced-idr",
                "1",
                "-x264-params",
                "keyint=infinite:scenecut=0",
                "-force_key_frames",
                "expr:gte(t,n_forced*3)",
            ]);
            segment(&mut c, out);
            c
        },
    },
];

impl Tools {
    /// `crispy -q run --source IN --sink file://OUT` with hashing and signing on.
    fn run(&self, input: &Path, out: &Path) -> Command {
        let mut c = Command::new(&self.crispy);
        c.args(["-q", "run", "--source"])
            .arg(input)
            .arg("--sink")
            .arg(format!("file://{}", out.display()))
            .arg("--signing-key")
            .arg(&self.key)
            .arg("--spool-dir")
            .arg(&self.spool);
        c
    }
}

fn ffmpeg(input: &Path) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(input);
    c
}

fn segment(c: &mut Command, out: &Path) {
    c.args([
        "-f",
        "segment",
        "-segment_time",
        "3",
        "-reset_timestamps",
        "1",
    ])
    .arg(out.join("%05d.mp4"));
}

/// Where each run writes: a fresh directory per run, emptied afterwards and deleted only when
/// the whole comparison is done.
///
/// Deleting a run's files before the next run would skew the comparison on an ext4 without a
/// journal (this machine's): such a file system skips every inode freed in the last one to six
/// minutes when it allocates one, re-reading each candidate's inode table entry, so after a few
/// runs every file either tool creates pays for thousands of freshly deleted ones. Emptying the
/// files instead gives their pages back (fresh page-cache memory is expensive here too) and keeps
/// their inodes, which the allocator skips with a bitmap search. The parent carries ext4's
/// "top directory" flag where it can, so each run's directory starts in a new inode group,
/// clear of what an earlier invocation deleted.
struct Outputs {
    root: PathBuf,
    runs: usize,
}

impl Outputs {
    fn new(work: &Path) -> Result<Self> {
        let root = work.join("runs");
        std::fs::create_dir_all(&root)?;
        // Best effort: `chattr` or the flag may be missing (another file system).
        let _ = Command::new("chattr")
            .arg("+T")
            .arg(&root)
            .stderr(std::process::Stdio::null())
            .status();
        Ok(Self { root, runs: 0 })
    }

    /// A new, empty directory for one run of `name`.
    fn fresh(&mut self, name: &str) -> Result<PathBuf> {
        self.runs += 1;
        let dir = self.root.join(format!("{name}-{}", self.runs));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `cmd`, which writes into `out` (a fresh directory); the wall time in seconds. The
/// files are emptied afterwards (see [`Outputs`]).
fn timed(mut cmd: Command, out: &Path) -> Result<f64> {
    let t0 = Instant::now();
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let secs = t0.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let chunks = count_mp4(out);
    if chunks == 0 {
        bail!("{cmd:?} wrote no chunks");
    }
    empty_files(out)?;
    Ok(secs)
}

/// Truncates every file under `dir` to nothing, keeping the files.
fn empty_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            empty_files(&path)?;
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0))
                .with_context(|| format!("emptying {}", path.display()))?;
        }
    }
    Ok(())
}

fn count_mp4(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_mp4(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "mp4"))
            }
        })
        .sum()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The floors of `--check`, `name = ratio` lines.
fn floors(root: &Path) -> Result<Vec<(String, f64)>> {
    let path = root.join("benches/compare-floors.toml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let table: toml::Table = text.parse().with_context(|| path.display().to_string())?;
    Ok(table
        .iter()
        .filter_map(|(k, v)| v.as_float().map(|f| (k.clone(), f)))
        .collect())
}

/// Entry point. `args`: `--pairs N`, `--check`, case names.
pub fn compare(root: &Path, target: &Path, crispy: PathBuf, args: &[String]) -> Result<()> {
    let mut pairs = 5usize;
    let mut check = false;
    let mut only: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => check = true,
            "--pairs" => {
                pairs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .context("--pairs N (at least 1)")?;
            }
            name if ["copy", "transcode", "read"].contains(&name) => only.push(name),
            other => bail!(
                "unknown argument {other:?} (expected --pairs N, --check, copy, transcode, read)"
            ),
        }
    }
    let work = target.join("compare");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let key = work.join("signing.pem");
    let status = Command::new(&crispy)
        .args(["keygen", "--out"])
        .arg(&key)
        .status()?;
    if !status.success() {
        bail!("crispy keygen failed");
    }
    let tools = Tools {
        crispy,
        key,
        spool: work.join("spool"),
    };
    println!(
        "compare: {pairs} pairs per case, alternating crispy/ffmpeg; wall time of the whole \
         process, chunks written to {}",
        work.display()
    );
    let mut outputs = Outputs::new(&work)?;
    let mut results: Vec<(String, f64)> = Vec::new();
    for case in CASES {
        if !only.is_empty() && !only.contains(&case.name) {
            continue;
        }
        let input = case.fixture.path()?;
        let frames = case.fixture.frames() as f64;
        println!(
            "\n{}: {} ({} frames)",
            case.name,
            input.display(),
            case.fixture.frames()
        );
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..pairs {
            // A B, then B A: neither side always runs on a warmer cache.
            let out_a = outputs.fresh(&format!("{}-crispy", case.name))?;
            let out_b = outputs.fresh(&format!("{}-ffmpeg", case.name))?;
            let (a, b) = if i % 2 == 0 {
                let a = timed((case.crispy)(&tools, &input, &out_a), &out_a)?;
                (a, timed((case.ffmpeg)(&input, &out_b), &out_b)?)
            } else {
                let b = timed((case.ffmpeg)(&input, &out_b), &out_b)?;
                (timed((case.crispy)(&tools, &input, &out_a), &out_a)?, b)
            };
            let ratio = b / a;
            println!(
                "  pair {}: crispy {a:.3} s ({:.0} frames/s)  ffmpeg {b:.3} s ({:.0} frames/s)  ratio {ratio:.2}",
                i + 1,
                frames / a,
                frames / b
            );
            ours.push(a);
            theirs.push(b);
            ratios.push(ratio);
        }
        let (ma, mb, mr) = (median(&mut ours), median(&mut theirs), median(&mut ratios));
        println!(
            "  median: crispy {ma:.3} s ({:.0} frames/s), ffmpeg {mb:.3} s ({:.0} frames/s)",
            frames / ma,
            frames / mb
        );
        results.push((case.name.to_owned(), mr));
    }
    if only.is_empty() || only.contains(&"read") {
        // The practical ceiling: libavformat reading every packet and discarding it.
        let input = Fixture::H264_1080p30Long.path()?;
        let frames = Fixture::H264_1080p30Long.frames() as f64;
        let (mut ours, mut reads, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        println!("\nread: libavformat alone (ffmpeg -c copy -f null) vs crispy copy");
        for i in 0..pairs {
            let out = outputs.fresh("read-crispy")?;
            let read = || {
                let mut c = ffmpeg(&input);
                c.args(["-map", "0:v", "-c", "copy", "-f", "null", "-"]);
                timed_null(c)
            };
            let (a, r) = if i % 2 == 0 {
                let a = timed((CASES[0].crispy)(&tools, &input, &out), &out)?;
                (a, read()?)
            } else {
                let r = read()?;
                (timed((CASES[0].crispy)(&tools, &input, &out), &out)?, r)
            };
            println!(
                "  pair {}: crispy copy {a:.3} s, libavformat read {r:.3} s ({:.0} frames/s)",
                i + 1,
                frames / r
            );
            ours.push(a);
            reads.push(r);
            ratios.push(r / a);
        }
        let mr = median(&mut ratios);
        println!(
            "  median: libavformat reads {:.0} frames/s; crispy copy reaches {:.0}% of it",
            frames / median(&mut reads),
            mr * 100.0
        );
        results.push(("read".to_owned(), mr));
    }
    println!();
    for (name, ratio) in &results {
        if name == "read" {
            println!("read: crispy/libavformat-read throughput ratio = {ratio:.2}");
        } else {
            println!("{name}: crispy/ffmpeg throughput ratio = {ratio:.2}");
        }
    }
    if check {
        let mut failed = Vec::new();
        for (name, floor) in floors(root)? {
            if let Some((_, ratio)) = results.iter().find(|(n, _)| *n == name)
                && *ratio < floor
            {
                failed.push(format!("{name}: {ratio:.2} < floor {floor:.2}"));
            }
        }
        if !failed.is_empty() {
            bail!("below the floor: {}", failed.join("; "));
        }
        println!("check: every ratio is at or above its floor (benches/compare-floors.toml)");
    }
    Ok(())
}

fn timed_null(mut cmd: Command) -> Result<f64> {
    let t0 = Instant::now();
    let o = cmd.output()?;
    if !o.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(t0.elapsed().as_secs_f64())
}
