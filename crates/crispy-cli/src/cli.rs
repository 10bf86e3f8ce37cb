use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use crispy_core::{ChunkDuration, SourceId};

/// Cut video into exactly-timed, hashed MP4 chunks and store them in object storage.
#[derive(Debug, Parser)]
#[command(name = "crispy", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line (program name first). An environment variable that backs an
    /// option and is set to nothing (`CRISPY_LOG_FORMAT= crispy …`) counts as unset, as in a
    /// shell, instead of an option given without its value.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let empty = |var: &str| std::env::var_os(var).is_some_and(|v| v.is_empty());
        let mut command = Self::command();
        if empty("CRISPY_LOG_FORMAT") {
            command = command.mut_arg("log_format", |a| a.env(None));
        }
        if empty("CRISPY_SPOOL_DIR") {
            command =
                command.mut_subcommand("run", |run| run.mut_arg("spool_dir", |a| a.env(None)));
        }
        let matches = command.try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 internal error, 2 usage, 3 invalid config \
file, 4 unusable key file or secret, 10 source not found or invalid source URL, \
11 source not a regular file, 12 source empty, 13 source not readable as video, 14 no video \
stream, 15 codec not supported in copy mode, 16 source damaged (complete chunks before the \
damage were stored; with damaged packets mid-file, every chunk), 17 a camera stored no chunk \
in the whole run (it could not be reached or read), 18 a camera refused the credentials and \
stored nothing, 19 a camera has no such stream and stored nothing, 20 invalid sink URL, 21 sink not writable, 22 upload refused (other content at the name, a manifest \
signed by another key, or damaged by the store), 23 uploads unfinished at the drain timeout, \
24 sink not readable (verify), 25 sink refused the credentials, 26 bucket or container \
missing, 27 sink unreachable (verify), 28 spool unusable (in use, unwritable, full), \
29 a live run dropped chunks from a full spool or disk (each one logged and recorded), \
30 verification found problems, 31 a signal stopped a file run before the file's end \
(its complete chunks were stored), 32 transcode mode: libx264 cannot encode the stream as \
asked (too large without --scale or --max-height). \
See docs/cli.md.";

/// Options for every subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CRISPY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl Global {
    pub fn log_is_json(&self) -> bool {
        self.log_format == LogFormat::Json
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chunk a source and store chunks and manifests in a sink.
    Run(Box<RunArgs>),
    /// Print a video file's codec, resolution, fps, duration, frame count and GOP.
    Probe(ProbeArgs),
    /// Check a sink: chunk hashes, manifest signatures, hash chains, gaps and timing.
    Verify(VerifyArgs),
    /// Create an Ed25519 signing key (PATH, mode 0600) and its public key (PATH.pub).
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The sink to check, as given to `crispy run --sink`.
    pub sink: String,
    /// An extra store option, KEY=VALUE (as for `crispy run`); repeatable.
    #[arg(long = "sink-opt", value_name = "KEY=VALUE")]
    pub sink_opts: Vec<String>,
    /// Only this source; repeatable.
    #[arg(long)]
    pub source_id: Vec<SourceId>,
    /// Only chunks starting at or after this time (RFC 3339, e.g. 2026-11-24T10:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only chunks starting before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// A trusted Ed25519 public key (PEM); repeat for keys of a rotation.
    #[arg(long, value_name = "FILE")]
    pub public_key: Vec<PathBuf>,
    /// Name of an environment variable holding a trusted HMAC secret.
    #[arg(long, value_name = "VAR")]
    pub hmac_key_env: Vec<String>,
    /// Accept manifests without a signature (still checks hashes, chain and timing), except
    /// one that follows a signed manifest in its chain (a stripped signature).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s
        .parse()
        .map_err(|e| format!("expected a size like 10GiB or 500MB: {e}"))?;
    if size.as_u64() < 1 << 20 {
        return Err("the spool needs at least 1MiB".to_owned());
    }
    Ok(size.as_u64())
}

/// A stall timeout: at least [`crispy_pipeline::MIN_STALL_TIMEOUT`].
fn parse_stall_timeout(s: &str) -> Result<ChunkDuration, String> {
    let d: ChunkDuration = s.parse().map_err(|e: crispy_core::Error| e.to_string())?;
    if d.as_duration() < crispy_pipeline::MIN_STALL_TIMEOUT {
        return Err(format!(
            "{d} is shorter than 1s: a camera between two frames would count as stalled"
        ));
    }
    Ok(d)
}

/// A signed URL's lifetime: 1 s to 7 days (the longest GCS V4 and S3 SigV4 allow).
fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let ms = crispy_core::parse_millis(s).map_err(|e| e.to_string())?;
    if !(1000..=7 * 86_400_000).contains(&ms) {
        return Err("must be between 1s and 7d (the longest GCS and S3 allow)".to_owned());
    }
    Ok(std::time::Duration::from_millis(ms))
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("expected an RFC 3339 time like 2026-11-24T10:00:00Z: {e}"))
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key; the public key goes to PATH.pub.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A video file, a camera URL (rtsp://user:password@host:port/path, credentials and port
    /// optional), `testsrc`
    /// (a generated 720p25 live test pattern) or `lavfi:<filter graph>`.
    #[arg(
        long,
        short = 's',
        value_name = "FILE|URL",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub source: Option<std::ffi::OsString>,
    /// A TOML file listing cameras and settings (see docs/config.md). The file's settings
    /// are the run's: only --sink, --sink-opt, --spool-dir, --spool-max, --align, --cut and
    /// the signing options may be added on the command line.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to store chunks: gs://bucket/prefix, s3://bucket/prefix, az://container/prefix,
    /// file:///dir, file://./dir, a directory path, or memory:// [default: the config
    /// file's `sink`, else file://./crispy-out]. Cloud credentials come from the
    /// environment (GOOGLE_APPLICATION_CREDENTIALS, AWS_*, AZURE_*) or --sink-opt.
    #[arg(long, value_name = "URL")]
    pub sink: Option<String>,
    /// An extra store option, KEY=VALUE, as object_store names them (aws_endpoint,
    /// aws_allow_http, google_service_account, azure_storage_account_name, …); repeatable.
    /// A local directory takes only fsync=true: every chunk synced to the disk before it
    /// counts as stored.
    #[arg(long = "sink-opt", value_name = "KEY=VALUE")]
    pub sink_opts: Vec<String>,
    /// The durable spool of cloud sinks: every chunk is on disk here before it counts as
    /// accepted, until the store confirms it; pending chunks are uploaded first on the next
    /// start [default: $XDG_STATE_HOME/crispy/spool or ~/.local/state/crispy/spool]. Local
    /// directories and memory:// hold accepted chunks in memory instead.
    #[arg(long, value_name = "DIR", env = "CRISPY_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most the spool holds (10GiB, 500MB, …) [default: the config file's `spool_max`, else
    /// 10GiB]. When full, live cameras drop their oldest spooled chunks (logged, recorded in
    /// the next manifest); files wait.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub spool_max: Option<u64>,
    /// Chunk length (3s, 1500ms, 2.5s, 1m; a bare number is seconds), 1 ms to 24 h. Stream
    /// copy closes each chunk at the first keyframe at or after it.
    #[arg(
        long,
        short = 'c',
        value_name = "DURATION",
        default_value = "3s",
        conflicts_with = "config"
    )]
    pub chunk: ChunkDuration,
    /// Source id used in object names and manifests [default: sanitized file name or URL].
    #[arg(long, value_name = "ID", conflicts_with = "config")]
    pub source_id: Option<SourceId>,
    /// Uploads in flight at once, shared by all sources.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=256), conflicts_with = "config")]
    pub max_in_flight: u16,
    /// RTP transport for RTSP cameras [default: tcp].
    #[arg(long, value_enum, conflicts_with = "config")]
    pub rtsp_transport: Option<Transport>,
    /// RTSP username (overrides one in the URL).
    #[arg(long, value_name = "USER", conflicts_with = "config")]
    pub username: Option<String>,
    /// Name of the environment variable holding the RTSP password.
    #[arg(long, value_name = "VAR", conflicts_with = "config")]
    pub password_env: Option<String>,
    /// A camera that sends nothing for this long is reconnected [default: 10s].
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "config",
        value_parser = parse_stall_timeout
    )]
    pub stall_timeout: Option<ChunkDuration>,
    /// On SIGINT/SIGTERM/SIGHUP, how long to wait for uploads to finish.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        conflicts_with = "config"
    )]
    pub drain_timeout: ChunkDuration,
    /// copy: keyframe-aligned chunks, nothing decoded (fast). transcode: decode and re-encode
    /// (libx264) with a keyframe exactly on every boundary, so chunks have exactly the
    /// requested length (files and RTSP cameras, any codec FFmpeg decodes).
    #[arg(long, value_enum, default_value_t = Mode::Copy, conflicts_with = "config")]
    pub mode: Mode,
    /// wall: chunk boundaries on the UTC grid (with 3s chunks :00, :03, :06 …) so chunks of
    /// different cameras line up; exact in transcode mode and for testsrc/lavfi sources, at
    /// the first keyframe after each grid line in copy mode.
    #[arg(long, value_enum, default_value_t = Align::None)]
    pub align: Align,
    /// keyframe: a copy-mode chunk closes at the first keyframe at or after its boundary.
    /// exact: copy-mode chunks start and end on the first frame at or after each boundary,
    /// still without decoding: a chunk that starts between keyframes also carries the frames
    /// from the keyframe before it, hidden by its MP4 edit list (stored twice; a player that
    /// ignores edit lists shows them). Transcode mode and testsrc/lavfi cut exactly anyway.
    #[arg(long, value_enum, default_value_t = Cut::Keyframe)]
    pub cut: Cut,
    /// Transcode: output size, e.g. 1280x720.
    #[arg(long, value_name = "WxH", value_parser = crispy_source::TranscodeConfig::parse_size, conflicts_with_all = ["config", "max_height"])]
    pub scale: Option<(u32, u32)>,
    /// Transcode: largest output height, keeping the aspect ratio.
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(16..=8640), conflicts_with = "config")]
    pub max_height: Option<u32>,
    /// Transcode: output frame rate (frames are dropped to reach it).
    #[arg(long, value_name = "FPS", value_parser = clap::value_parser!(u32).range(1..=240), conflicts_with = "config")]
    pub fps: Option<u32>,
    /// Transcode: libx264 preset [default: veryfast].
    #[arg(long, conflicts_with = "config",
          value_parser = clap::builder::PossibleValuesParser::new(crispy_source::X264_PRESETS))]
    pub preset: Option<String>,
    /// Transcode: constant rate factor, 0 (lossless) to 51 (worst) [default: 26].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=51), conflicts_with_all = ["config", "bitrate"])]
    pub crf: Option<u8>,
    /// Transcode: target bitrate in kbit/s instead of a CRF (1 to 1000000).
    #[arg(long, value_name = "KBPS", conflicts_with = "config",
          value_parser = clap::value_parser!(u64).range(1..=crispy_source::MAX_BITRATE_KBPS))]
    pub bitrate: Option<u64>,
    /// Sign every manifest with this Ed25519 private key (PEM, from `crispy keygen` or
    /// `openssl genpkey -algorithm ed25519`). Without this option or --hmac-key-env, the
    /// environment variable CRISPY_SIGNING_KEY names the key file (when set and not empty)
    #[arg(long, value_name = "FILE", conflicts_with = "hmac_key_env")]
    pub signing_key: Option<PathBuf>,
    /// Put a time-limited signed GET URL (GCS V4, S3 SigV4, Azure SAS) of each chunk into its
    /// manifest and log line, valid this long from the upload (e.g. 15m, 12h, 7d; 1s to 7
    /// days). Anyone holding the URL can read the chunk until then. Cloud sinks only.
    #[arg(long, value_name = "TTL", value_parser = parse_ttl)]
    pub signed_urls: Option<std::time::Duration>,
    /// Sign every manifest with HMAC-SHA256, the secret read from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub hmac_key_env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Align {
    /// Boundaries follow the stream (first chunk starts at the first keyframe).
    None,
    /// Boundaries on multiples of the chunk length since the Unix epoch.
    Wall,
}

/// Where copy-mode chunks are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cut {
    /// At the first keyframe at or after each boundary.
    Keyframe,
    /// On the first frame at or after each boundary (edit lists hide the lead-in).
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Stream copy.
    Copy,
    /// Decode and re-encode.
    Transcode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection.
    Tcp,
    /// RTP over UDP.
    Udp,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Video file to probe.
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
