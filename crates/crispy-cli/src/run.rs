//! `crispy run`.

use std::sync::Arc;

use anyhow::{Context, Result};
use crispy_core::{Rational, Secret, SourceId};
use crispy_pipeline::SpoolOptions;
use crispy_pipeline::config::Config;
use crispy_pipeline::{
    ChunkReport, Observer, PipelineOptions, Shutdown, SourceJob, SourceSpec, SourceStarted,
    run_sources,
};
use crispy_sink::{ObjectStoreSink, SinkError, SinkOptions};
use crispy_source::{RtspConfig, RtspTransport, SyntheticConfig, TranscodeConfig};
use indicatif::ProgressBar;

use crate::cli::{Align, Cut, Mode, RunArgs, Transport};
use crate::exit::UsageError;
use crate::logging::style_bar;

const DEFAULT_SINK: &str = "file://./crispy-out";

pub fn run(args: RunArgs, bar: ProgressBar) -> Result<()> {
    let (jobs, mut options, config_sink, config_sink_opts) = plan(&args)?;
    options.signing_key = signing_key(&args)?.map(Arc::new);
    let default_sink = args.sink.is_none() && config_sink.is_none();
    let sink_url = args
        .sink
        .clone()
        .or(config_sink)
        .unwrap_or_else(|| DEFAULT_SINK.to_owned());
    let live = jobs.iter().any(|j| j.spec.is_live());
    if live {
        bar.finish_and_clear();
        // Cameras run for days, many per process: memory matters more than the page faults
        // of fresh chunk buffers (which cost a file run at full speed about a quarter of its
        // time, so files keep glibc's default).
        crispy_source::release_large_blocks_eagerly();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The command line's options come after the file's: a repeated key takes the last value.
    let mut sink_options = SinkOptions::parse_pairs(args.sink_opts.iter().map(String::as_str))?;
    sink_options.options.splice(0..0, config_sink_opts);
    let sink = match ObjectStoreSink::from_url_opts(&sink_url, &sink_options) {
        Ok(sink) => sink,
        Err(e) if default_sink => {
            return Err(anyhow::Error::new(e).context(format!(
                "no --sink given, so the sink is the default {DEFAULT_SINK}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(ttl) = args.signed_urls {
        if !sink.can_sign_urls() {
            return Err(UsageError(format!(
                "--signed-urls needs a gs://, s3:// or az:// sink, not {}",
                sink.display_url()
            ))
            .into());
        }
        options.signed_url_ttl = Some(ttl);
    }
    let spool_dir = args.spool_dir.clone().or(options.spool.dir.take());
    options.spool = SpoolOptions {
        // A remote store gets the disk spool; a local directory (a second copy on the same
        // disk would halve the throughput) and memory:// keep accepted chunks in memory.
        dir: if sink.backend().is_remote() {
            Some(spool_root(spool_dir.as_deref())?)
        } else {
            None
        },
        sink_key: sink.spool_key(),
        max_bytes: args.spool_max.unwrap_or(options.spool.max_bytes),
    };
    // Files, by source id, with how they were given: a file a signal stopped before its end
    // fails the run (see `FileUnfinished`).
    let files: Vec<(SourceId, String)> = jobs
        .iter()
        .filter(|j| !j.spec.is_live())
        .map(|j| (j.source_id.clone(), j.spec.display()))
        .collect();
    // A failed run that stored nothing leaves no empty sink directory behind.
    let cleanup = sink.cleanup_dirs();
    let outcome = runtime.block_on(async move {
        // Signals count from the start: a store that does not answer must not make Ctrl-C
        // during the checks below go unheard.
        let shutdown = Shutdown::new();
        tokio::spawn(watch_signals(shutdown.clone(), options.drain_timeout));
        let preflight = tokio::time::timeout(PREFLIGHT_TIMEOUT, sink.preflight());
        tokio::select! {
            checked = preflight => match checked {
                Ok(Ok(())) => {}
                // The spool holds the chunks until the store answers.
                Ok(Err(e @ SinkError::Unreachable { .. })) => tracing::warn!(
                    "{e}; starting anyway: chunks wait in the spool until it answers"
                ),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => tracing::warn!(
                    timeout_ms = PREFLIGHT_TIMEOUT.as_millis() as u64,
                    "the sink {} did not answer in time; starting anyway: chunks wait in the \
                     spool until it answers",
                    sink.display_url()
                ),
            },
            () = shutdown.triggered() => {
                let unread: Vec<(&SourceId, &str, u64)> =
                    files.iter().map(|(id, path)| (id, path.as_str(), 0)).collect();
                return match crate::exit::FileUnfinished::of(&unread) {
                    Some(e) => Err(e.into()),
                    None => Ok(()),
                };
            }
        }
        let observer = Arc::new(BarObserver(bar.clone()));
        let result = run_sources(jobs, Arc::new(sink), options, shutdown, observer).await;
        bar.finish_and_clear();
        let summaries = result?;
        if !bar.is_hidden() {
            for s in &summaries {
                let latency = match (s.latency_p50, s.latency_p99) {
                    (Some(p50), Some(p99)) => format!(
                        ", chunk latency p50 {:.1} ms, p99 {:.1} ms",
                        p50.as_secs_f64() * 1000.0,
                        p99.as_secs_f64() * 1000.0
                    ),
                    _ => String::new(),
                };
                let mut extra = String::new();
                if s.already_present > 0 {
                    extra.push_str(&format!(", {} of them already present", s.already_present));
                }
                if s.dropped > 0 {
                    extra.push_str(&format!(", {} DROPPED from the full spool", s.dropped));
                }
                if s.recovered > 0 {
                    extra.push_str(&format!(
                        ", and {} chunks an earlier run left in the spool",
                        s.recovered
                    ));
                }
                if s.unfinished_at_ms.is_some() {
                    extra.push_str("; STOPPED before the end of the file");
                }
                crate::logging::to_stderr(format_args!(
                    "{}: stored {} chunks ({} frames, {:.1} MB) in {:.2} s: {:.0} frames/s\
                     {latency}{extra}",
                    s.source_id,
                    s.chunks,
                    s.frames,
                    s.bytes as f64 / 1e6,
                    s.wall.as_secs_f64(),
                    s.frames_per_second()
                ));
            }
        }
        // Footage was lost (each loss logged and recorded): the run says so in its exit code.
        let dropped: Vec<String> = summaries
            .iter()
            .filter(|s| s.dropped > 0)
            .map(|s| format!("{}: {}", s.source_id, s.dropped))
            .collect();
        if !dropped.is_empty() {
            return Err(crate::exit::ChunksDropped {
                total: summaries.iter().map(|s| s.dropped).sum(),
                per_source: dropped.join(", "),
            }
            .into());
        }
        // Files a signal stopped before their end: a script must not take the run for a
        // complete copy (`crispy run … && rm clip.mp4`).
        let unfinished: Vec<(&SourceId, &str, u64)> = summaries
            .iter()
            .filter_map(|s| {
                s.unfinished_at_ms?;
                let path = files.iter().find(|(id, _)| *id == s.source_id)?;
                Some((&s.source_id, path.1.as_str(), s.media_ms))
            })
            .collect();
        if let Some(e) = crate::exit::FileUnfinished::of(&unfinished) {
            return Err(e.into());
        }
        // Cameras that gave nothing (each one's last problem was logged when it stopped):
        // the first one given names the exit code.
        let mut silent = summaries
            .iter()
            .filter_map(|s| s.gave_nothing.as_ref().map(|f| (s.source_id.as_str(), f)));
        if let Some((id, fault)) = silent.next() {
            let others: Vec<&str> = silent.map(|(id, _)| id).collect();
            return Err(crate::exit::CameraGaveNothing {
                source_id: id.to_owned(),
                fault: fault.clone(),
                others: if others.is_empty() {
                    String::new()
                } else {
                    format!(" (nor did {})", others.join(", "))
                },
            }
            .into());
        }
        Ok(())
    });
    if outcome.is_err() {
        cleanup();
    }
    outcome
}

/// The spool root: `--spool-dir` (or `CRISPY_SPOOL_DIR`), else the user's state directory.
fn spool_root(given: Option<&std::path::Path>) -> Result<std::path::PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })
        .ok_or_else(|| {
            UsageError(
                "no spool directory: set --spool-dir (neither XDG_STATE_HOME nor HOME is set)"
                    .to_owned(),
            )
        })?;
    Ok(state.join("crispy/spool"))
}

/// The key that signs manifests: `--signing-key FILE`, or `--hmac-key-env VAR`, or else
/// the file `CRISPY_SIGNING_KEY` names (an option on the command line wins over the
/// environment instead of conflicting with it).
fn signing_key(args: &RunArgs) -> Result<Option<crispy_signer::SigningKey>> {
    let from_env = || {
        std::env::var_os("CRISPY_SIGNING_KEY")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    let path = match (&args.signing_key, &args.hmac_key_env) {
        (Some(path), _) => Some(path.clone()),
        (None, None) => from_env(),
        (None, Some(_)) => None,
    };
    if let Some(path) = &path {
        let key = crispy_signer::SigningKey::from_pem_file(path)?;
        warn_if_others_can_read(path);
        return Ok(Some(key));
    }
    if let Some(var) = &args.hmac_key_env {
        let secret = std::env::var(var).map_err(|_| {
            UsageError(format!(
                "--hmac-key-env: {}",
                crispy_core::redact::unset_env_var(var)
            ))
        })?;
        return Ok(Some(crispy_signer::SigningKey::hmac(secret.as_bytes())?));
    }
    Ok(None)
}

/// A private key that other users can read is not private: say so (as ssh does), once.
fn warn_if_others_can_read(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                key = %path.display(),
                mode = %format_args!("{mode:04o}"),
                "the signing key can be read by other users; `chmod 600` it"
            );
        }
    }
}

/// The sources and settings of this run, from the config file or the command line.
type Plan = (
    Vec<SourceJob>,
    PipelineOptions,
    Option<String>,
    Vec<(String, String)>,
);

fn plan(args: &RunArgs) -> Result<Plan> {
    if let Some(path) = &args.config {
        let mut config = Config::load(path)?;
        if args.sink.is_none() {
            config.check_sink()?;
        }
        config.options.align_wall |= args.align == Align::Wall;
        config.options.exact_cuts |= args.cut == Cut::Exact;
        return Ok((
            config.jobs,
            config.options,
            config.sink,
            config.sink_options,
        ));
    }
    // A file's name need not be UTF-8; URLs and test patterns are read as text.
    let raw_source = args
        .source
        .clone()
        .context("--source or --config is required")?;
    let source = raw_source.to_string_lossy().into_owned();
    if raw_source.to_str().is_none()
        && (source.contains("://") || SyntheticConfig::parse(&source).is_some())
    {
        // Not quoted: a URL may carry a password.
        return Err(UsageError(
            "--source: a camera URL or test pattern must be UTF-8 text (only file names may \
             be other bytes)"
                .to_owned(),
        )
        .into());
    }
    let options = PipelineOptions {
        max_in_flight: usize::from(args.max_in_flight),
        drain_timeout: args.drain_timeout.as_duration(),
        align_wall: args.align == Align::Wall,
        exact_cuts: args.cut == Cut::Exact,
        ..PipelineOptions::default()
    };
    if args.mode == Mode::Copy {
        let transcode_only = [
            ("--scale", args.scale.is_some()),
            ("--max-height", args.max_height.is_some()),
            ("--fps", args.fps.is_some()),
            ("--preset", args.preset.is_some()),
            ("--crf", args.crf.is_some()),
            ("--bitrate", args.bitrate.is_some()),
        ];
        if let Some((name, _)) = transcode_only.iter().find(|(_, given)| *given) {
            return Err(UsageError(format!(
                "{name} applies to --mode transcode only (stream copy does not re-encode)"
            ))
            .into());
        }
    }
    let transcode = (args.mode == Mode::Transcode).then(|| {
        let mut config = TranscodeConfig::new(args.chunk.as_millis());
        config.scale = args.scale;
        config.max_height = args.max_height;
        config.fps = args.fps.map(|f| Rational::new(f as i32, 1));
        if let Some(preset) = &args.preset {
            config.preset.clone_from(preset);
        }
        if let Some(crf) = args.crf {
            config.crf = crf;
        }
        config.bitrate_kbps = args.bitrate;
        config
    });
    if let Some(t) = &transcode {
        t.validate().map_err(UsageError)?;
    }
    if source.trim() == "lavfi:" {
        return Err(UsageError(
            "lavfi: needs a filter graph after the colon, e.g. \
             lavfi:testsrc2=size=640x360:rate=25"
                .to_owned(),
        )
        .into());
    }
    if !source.contains("://") {
        // Camera options on a file or test pattern would be ignored: say so instead.
        let camera_only = [
            ("--username", args.username.is_some()),
            ("--password-env", args.password_env.is_some()),
            ("--rtsp-transport", args.rtsp_transport.is_some()),
            ("--stall-timeout", args.stall_timeout.is_some()),
        ];
        if let Some((name, _)) = camera_only.iter().find(|(_, given)| *given) {
            return Err(UsageError(format!(
                "{name} applies to rtsp:// cameras only, not to {source}"
            ))
            .into());
        }
    }
    let job = if let Some(synthetic) = SyntheticConfig::parse(&source) {
        if transcode.is_some() {
            return Err(UsageError(
                "--mode transcode does not apply to testsrc/lavfi sources: they are encoded \
                 with keyframes on the chunk grid already"
                    .to_owned(),
            )
            .into());
        }
        let id = args.source_id.clone().unwrap_or_else(|| {
            SourceId::sanitize(if source == "testsrc" {
                "testsrc"
            } else {
                &synthetic.graph
            })
        });
        SourceJob {
            source_id: id,
            spec: SourceSpec::Synthetic(synthetic),
            chunk: args.chunk,
            prefix: None,
        }
    } else if source.contains("://") {
        let mut rtsp = RtspConfig::parse(&source)?;
        if let Some(var) = &args.password_env {
            let password = std::env::var(var).map_err(|_| {
                UsageError(format!(
                    "--password-env: {}",
                    crispy_core::redact::unset_env_var(var)
                ))
            })?;
            let user = args
                .username
                .clone()
                .filter(|u| !u.is_empty())
                .or_else(|| rtsp.user().map(str::to_owned))
                .ok_or_else(|| {
                    UsageError(
                        "--password-env: no user name to send the password with; give \
                         --username or put the user in the URL (rtsp://USER@host/...)"
                            .to_owned(),
                    )
                })?;
            rtsp = rtsp.with_credentials(user, Secret::new(password));
        } else if let Some(user) = &args.username {
            rtsp = rtsp.with_user(user.clone());
        }
        rtsp.transport = match args.rtsp_transport {
            Some(Transport::Udp) => RtspTransport::Udp,
            Some(Transport::Tcp) | None => RtspTransport::Tcp,
        };
        if let Some(stall) = args.stall_timeout {
            rtsp.stall_timeout = stall.as_duration();
        }
        let id = args.source_id.clone().unwrap_or_else(|| {
            // Host and path only: user info and query tokens never reach object names.
            SourceId::sanitize(&rtsp.host_and_path())
        });
        SourceJob {
            source_id: id,
            spec: match transcode {
                Some(t) => SourceSpec::TranscodeRtsp(rtsp, t),
                None => SourceSpec::Rtsp(rtsp),
            },
            chunk: args.chunk,
            prefix: None,
        }
    } else {
        let path = std::path::PathBuf::from(raw_source);
        let id = args
            .source_id
            .clone()
            .unwrap_or_else(|| SourceId::from_file_stem(&path));
        SourceJob {
            source_id: id,
            spec: match transcode {
                Some(t) => SourceSpec::TranscodeFile(path, t),
                None => SourceSpec::File(path),
            },
            chunk: args.chunk,
            prefix: None,
        }
    };
    Ok((vec![job], options, None, Vec::new()))
}

/// How long `run` waits for a remote sink to answer its first listing before starting
/// anyway (the spool holds the chunks meanwhile).
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How soon after the first signal a second one counts as the same request. `timeout(1)`
/// sends its SIGTERM twice (to the process, then to its process group) microseconds apart, and
/// a supervisor may do the same; a person pressing Ctrl-C again takes longer than this.
const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether this process was started with SIGHUP ignored (`nohup`): then a hangup must stay
/// ignored, not become a shutdown. Read from `/proc/self/status` (`SigIgn`, bit 0 = signal 1).
fn sighup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & 1 != 0)
}

/// First SIGINT/SIGTERM (or SIGHUP: the terminal of an SSH session closing, unless started
/// under `nohup`): stop reading, send partial chunks, drain uploads. Second (after
/// [`REPEAT_WINDOW`]): exit now.
async fn watch_signals(shutdown: Shutdown, drain: std::time::Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    // Without a handler a hangup kills the process at once, losing the chunks in progress.
    let mut hup = if sighup_ignored() {
        None
    } else {
        signal(SignalKind::hangup()).ok()
    };
    let next = async |term: &mut tokio::signal::unix::Signal,
                      hup: &mut Option<tokio::signal::unix::Signal>| {
        let hangup = async {
            match hup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hangup => "SIGHUP",
        }
    };
    let first = next(&mut term, &mut hup).await;
    let first_at = tokio::time::Instant::now();
    // Shutdown first: nothing (not even a log line that cannot be written) may stand
    // between the signal and the sources stopping.
    shutdown.trigger();
    tracing::warn!(
        signal = first,
        drain_timeout_ms = drain.as_millis() as u64,
        "shutting down: closing partial chunks and finishing uploads; signal again to exit at once"
    );
    // Readers stop within their stall timeouts and uploads get `drain`; if puts hang beyond
    // that (a stuck mount, a dead network), shutdown must still end.
    let deadline = drain + std::time::Duration::from_secs(15);
    loop {
        tokio::select! {
            second = next(&mut term, &mut hup) => {
                if first_at.elapsed() < REPEAT_WINDOW {
                    tracing::debug!(signal = second, "the same signal again at once: one request");
                    continue;
                }
                tracing::error!(signal = second, "second signal: exiting without waiting for uploads");
                std::process::exit(130);
            }
            () = tokio::time::sleep_until(first_at + deadline) => {
                tracing::error!(
                    deadline_ms = deadline.as_millis() as u64,
                    "shutdown did not finish in time: exiting with uploads unfinished"
                );
                std::process::exit(i32::from(crate::exit::DRAIN_TIMEOUT));
            }
        }
    }
}

/// Drives the progress bar from pipeline events.
struct BarObserver(ProgressBar);

impl Observer for BarObserver {
    fn started(&self, event: &SourceStarted) {
        if let Some(ms) = event.duration_ms {
            style_bar(&self.0, ms);
        }
        self.0.set_message(event.source_id.to_string());
    }
    fn progress(&self, media_ms: u64) {
        self.0.set_position(media_ms);
    }
    fn chunk_stored(&self, report: &ChunkReport) {
        self.0.set_message(format!(
            "{} chunk {}",
            report.metadata.source_id, report.metadata.sequence
        ));
    }
}
