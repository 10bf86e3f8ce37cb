//! `cargo xtask cameras [--count N] [--seconds S] [--chunk D] [--transport tcp|udp]`: N
//! simulated cameras (the
//! 720p30 CCTV-like fixture served by the local GStreamer RTSP server, one RTSP session each)
//! stream-copied by one `crispy run --config` process into a local directory, with hashing and
//! Ed25519 signing on. Reports the process's CPU time per camera (from `/proc/<pid>/stat`, over
//! a window that starts after a warm-up) and its resident memory (sampled every second, and
//! the kernel's high-water mark).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crispy_testkit::Fixture;
use crispy_testkit::{RtspServer, signal};

/// Connections, first keyframes and first chunks settle during this time.
const WARM_UP: Duration = Duration::from_secs(10);

struct Options {
    count: usize,
    seconds: u64,
    chunk: String,
    transport: String,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        count: 32,
        seconds: 60,
        chunk: "3s".to_owned(),
        transport: "tcp".to_owned(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--count" => o.count = value()?.parse().context("--count")?,
            "--seconds" => o.seconds = value()?.parse().context("--seconds")?,
            "--chunk" => o.chunk = value()?.clone(),
            "--transport" => match value()?.as_str() {
                t @ ("tcp" | "udp") => o.transport = t.to_owned(),
                other => bail!("cameras: --transport is tcp or udp, not {other:?}"),
            },
            other => bail!("cameras: unknown argument {other:?}"),
        }
    }
    let longest = Fixture::H264_720p30Cctv.duration_ms() / 1000 - WARM_UP.as_secs() - 5;
    if o.count == 0 || o.seconds == 0 || o.seconds > longest {
        bail!("cameras: --count must be at least 1 and --seconds between 1 and {longest}");
    }
    Ok(o)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after it are space-separated.
    let rest = stat.rsplit_once(')').context("/proc stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks()?)
}

fn clock_ticks() -> Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} missing from /proc/{pid}/status"))
}

/// Stops the child with SIGINT on drop unless it has exited.
struct Crispy(Child);

impl Drop for Crispy {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn cameras(work: &Path, crispy: PathBuf, args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let file = Fixture::H264_720p30Cctv.path()?;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let server = RtspServer::start(Some(&file))?;
    let key = work.join("signing.pem");
    crate::status(Command::new(&crispy).args(["keygen", "--out"]).arg(&key))?;

    let out = work.join("out");
    let mut config = format!(
        "sink = \"file://{}\"\nchunk = \"{}\"\nmax_in_flight = 6\nstall_timeout = \"20s\"\n",
        out.display(),
        o.chunk
    );
    for i in 0..o.count {
        config.push_str(&format!(
            "\n[[camera]]\nid = \"cam{i:02}\"\nurl = \"{}\"\ntransport = \"{}\"\n",
            server.url("/file"),
            o.transport
        ));
    }
    let config_path = work.join("cameras.toml");
    std::fs::write(&config_path, config)?;
    let log_path = work.join("crispy.log");
    let log = std::fs::File::create(&log_path)?;

    eprintln!(
        "cameras: {} cameras (720p30, GOP 30, 2 Mbit/s, RTSP over {} from {}), chunk {}, \
         warm-up {} s, then {} s measured",
        o.count,
        o.transport.to_uppercase(),
        server.url("/file"),
        o.chunk,
        WARM_UP.as_secs(),
        o.seconds
    );
    let mut child = Crispy(
        Command::new(&crispy)
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config_path)
            .arg("--signing-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting crispy")?,
    );
    let pid = child.0.id();
    eprintln!("cameras: crispy is pid {pid}");
    std::thread::sleep(WARM_UP);
    if let Some(status) = child.0.try_wait()? {
        bail!(
            "crispy exited during the warm-up ({status}); see {}",
            log_path.display()
        );
    }
    let (cpu0, t0) = (cpu_seconds(pid)?, Instant::now());
    let mut rss_max = 0u64;
    let mut rss_sum = 0u64;
    let mut samples = 0u64;
    while t0.elapsed() < Duration::from_secs(o.seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let rss = status_kib(pid, "VmRSS")?;
        rss_max = rss_max.max(rss);
        rss_sum += rss;
        samples += 1;
    }
    let (cpu1, wall) = (cpu_seconds(pid)?, t0.elapsed());
    let hwm = status_kib(pid, "VmHWM")?;
    let (anon, file) = (status_kib(pid, "RssAnon")?, status_kib(pid, "RssFile")?);
    signal(pid, "INT")?;
    let status = child.0.wait()?;
    drop(server);

    let log = std::fs::read_to_string(&log_path)?;
    let stored = log
        .lines()
        .filter(|l| l.contains("\"chunk stored\""))
        .count();
    let errors = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .count();
    let bytes: u64 = crispy_testkit::files_with_ext(&out, "mp4")?
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let per_chunk = bytes / (stored.max(1) as u64);
    let mut p99: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("\"run finished\""))
        .filter_map(|l| number_field(l, "latency_p99_ms"))
        .collect();
    p99.sort_by(f64::total_cmp);
    let core_share = (cpu1 - cpu0) / wall.as_secs_f64();
    let mib = |kib: u64| kib as f64 / 1024.0;

    println!(
        "cameras: {} in one process, {:.0} s measured",
        o.count,
        wall.as_secs_f64()
    );
    println!(
        "  CPU: {:.1}% of one core in all, {:.2}% per camera (target <= 0.5%)",
        core_share * 100.0,
        core_share * 100.0 / o.count as f64
    );
    println!(
        "  RSS: mean {:.1} MiB, max {:.1} MiB, high-water mark {:.1} MiB",
        mib(rss_sum / samples.max(1)),
        mib(rss_max),
        mib(hwm)
    );
    println!(
        "  RSS at the end: {:.1} MiB anonymous (heap, stacks), {:.1} MiB file-backed (the \
         binary and FFmpeg's shared libraries, shared with other processes)",
        mib(anon),
        mib(file)
    );
    println!(
        "  chunks: {stored} stored, {:.0} KiB each on average; one chunk per camera being \
         assembled is {:.1} MiB in all (target: RSS <= 64 MiB + chunks in flight)",
        per_chunk as f64 / 1024.0,
        (per_chunk * o.count as u64) as f64 / 1024.0 / 1024.0
    );
    if let (Some(mid), Some(worst)) = (p99.get(p99.len() / 2), p99.last()) {
        println!(
            "  latency from a chunk's last packet to its object being readable: p99 per camera \
             {mid:.1} ms (median camera), {worst:.1} ms (worst camera)"
        );
    }
    println!(
        "  errors logged: {errors}; crispy exited with {status}; log: {}",
        log_path.display()
    );
    if errors > 0 || !status.success() || stored == 0 {
        bail!("the camera run was not clean; see {}", log_path.display());
    }
    Ok(())
}

/// The number after `"name":` in a JSON log line.
fn number_field(line: &str, name: &str) -> Option<f64> {
    let rest = line.split_once(&format!("\"{name}\":"))?.1;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}
