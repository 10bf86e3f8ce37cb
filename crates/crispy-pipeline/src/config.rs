//! The camera configuration file (`crispy run --config cameras.toml`).
//!
//! ```toml
//! # Global settings, all optional.
//! sink = "file:///var/lib/crispy"   # default: file://./crispy-out
//! chunk = "3s"
//! max_in_flight = 6
//! drain_timeout = "30s"
//! stall_timeout = "10s"
//! rtsp_transport = "tcp"            # or "udp"
//! align = "wall"                    # optional: chunk boundaries on the UTC grid
//! cut = "exact"                     # optional: frame-exact stream-copy cuts (edit lists)
//! mode = "copy"                     # or "transcode" (exact chunks, any codec)
//!
//! [transcode]                       # settings of transcode mode, all optional
//! scale = "1280x720"                # or max_height = 720 (keeps the aspect ratio)
//! fps = 10
//! preset = "veryfast"
//! crf = 26                          # or bitrate_kbps = 2000
//!
//! [[camera]]
//! id = "lobby"                      # [A-Za-z0-9_-]{1,64}, no leading -, unique
//! url = "rtsp://10.0.0.5:554/stream1"
//! username = "viewer"               # optional
//! password_env = "LOBBY_PASSWORD"   # optional: the variable holding the password
//! transport = "udp"                 # optional, overrides rtsp_transport
//! chunk = "2s"                      # optional, overrides chunk
//! stall_timeout = "5s"              # optional, overrides stall_timeout
//! prefix = "site-a/entrance"        # optional: objects go under <sink prefix>/<prefix>/<id>/…
//! mode = "transcode"                # optional, overrides mode
//! transcode = { fps = 5 }           # optional, overrides single [transcode] settings
//! ```
//!
//! Everything is checked before any camera starts: unknown keys, bad values, duplicate ids,
//! URLs and missing password variables are reported with the line and field at fault.
//! Passwords never appear in error messages.

use std::path::Path;
use std::time::Duration;

use crispy_core::redact::redact_urls;
use crispy_core::{ChunkDuration, Rational, Secret, SourceId};
use crispy_source::{RtspConfig, RtspTransport, TranscodeConfig};
use serde::Deserialize;
use toml::Spanned;

use crate::{PipelineOptions, SourceJob, SourceSpec};

/// Errors in a configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names line and field).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, credentials removed.
        message: String,
    },
    /// A value is well-formed but unusable.
    #[error("config file {path}, line {line}, field `{field}`: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// The field at fault.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TransportName {
    Tcp,
    Udp,
}

impl From<TransportName> for RtspTransport {
    fn from(t: TransportName) -> Self {
        match t {
            TransportName::Tcp => RtspTransport::Tcp,
            TransportName::Udp => RtspTransport::Udp,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ModeName {
    Copy,
    Transcode,
}

/// `[transcode]` settings; a camera's own table overrides them one by one.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct TranscodeSettings {
    scale: Option<String>,
    max_height: Option<u32>,
    fps: Option<u32>,
    preset: Option<String>,
    crf: Option<u8>,
    bitrate_kbps: Option<u64>,
}

impl TranscodeSettings {
    /// These settings over `base`. Of the pairs that exclude each other (`scale` and
    /// `max_height`, `crf` and `bitrate_kbps`), one given here replaces both of `base`.
    fn or(self, base: &TranscodeSettings) -> TranscodeSettings {
        let own_size = self.scale.is_some() || self.max_height.is_some();
        let own_rate = self.crf.is_some() || self.bitrate_kbps.is_some();
        TranscodeSettings {
            scale: self
                .scale
                .or_else(|| base.scale.clone().filter(|_| !own_size)),
            max_height: self.max_height.or(base.max_height.filter(|_| !own_size)),
            fps: self.fps.or(base.fps),
            preset: self.preset.or_else(|| base.preset.clone()),
            crf: self.crf.or(base.crf.filter(|_| !own_rate)),
            bitrate_kbps: self
                .bitrate_kbps
                .or(base.bitrate_kbps.filter(|_| !own_rate)),
        }
    }

    fn build(&self, chunk: ChunkDuration) -> Result<TranscodeConfig, String> {
        if self.crf.is_some() && self.bitrate_kbps.is_some() {
            return Err("crf and bitrate_kbps exclude each other: give one".to_owned());
        }
        let mut c = TranscodeConfig::new(chunk.as_millis());
        c.scale = self
            .scale
            .as_deref()
            .map(TranscodeConfig::parse_size)
            .transpose()?;
        c.max_height = self.max_height;
        c.fps = self
            .fps
            .map(|f| i32::try_from(f).map(|f| Rational::new(f, 1)))
            .transpose()
            .map_err(|_| format!("fps {} is not between 1 and 240", self.fps.unwrap_or(0)))?;
        if let Some(p) = &self.preset {
            c.preset = p.clone();
        }
        if let Some(crf) = self.crf {
            c.crf = crf;
        }
        c.bitrate_kbps = self.bitrate_kbps;
        c.validate()?;
        Ok(c)
    }
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum AlignName {
    None,
    Wall,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum CutName {
    Keyframe,
    Exact,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    sink: Option<Spanned<String>>,
    #[serde(default)]
    sink_options: std::collections::BTreeMap<String, String>,
    spool_dir: Option<std::path::PathBuf>,
    spool_max: Option<Spanned<String>>,
    chunk: Option<ChunkDuration>,
    max_in_flight: Option<Spanned<u16>>,
    drain_timeout: Option<ChunkDuration>,
    stall_timeout: Option<Spanned<ChunkDuration>>,
    rtsp_transport: Option<TransportName>,
    align: Option<AlignName>,
    cut: Option<CutName>,
    mode: Option<ModeName>,
    transcode: Option<Spanned<TranscodeSettings>>,
    #[serde(default)]
    camera: Vec<CameraConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraConfig {
    id: Spanned<SourceId>,
    url: Spanned<String>,
    username: Option<String>,
    password_env: Option<Spanned<String>>,
    transport: Option<TransportName>,
    chunk: Option<ChunkDuration>,
    stall_timeout: Option<Spanned<ChunkDuration>>,
    prefix: Option<Spanned<String>>,
    mode: Option<ModeName>,
    transcode: Option<Spanned<TranscodeSettings>>,
}

/// A loaded, validated configuration. `Debug` shows sink option keys, never their values.
#[derive(Clone)]
pub struct Config {
    /// The sink URL, when the file sets one.
    pub sink: Option<String>,
    /// The file, and the line of `sink`: for [`Config::check_sink`].
    origin: (String, usize),
    /// `[sink_options]`: store options (as `--sink-opt`), in key order.
    pub sink_options: Vec<(String, String)>,
    /// Run-wide settings.
    pub options: PipelineOptions,
    /// One job per camera, in file order.
    pub jobs: Vec<SourceJob>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.sink_options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Config")
            .field("sink", &self.sink)
            .field("sink_option_keys", &keys)
            .field("options", &self.options)
            .field("jobs", &self.jobs)
            .finish()
    }
}

impl Config {
    /// Checks the file's `sink` with its `[sink_options]` as the sinks would take them, for
    /// a run that uses that sink (no `--sink`): a URL they cannot open or options it does
    /// not take are the file's mistake, named by line like every other. Nothing is created
    /// or contacted (a directory that does not exist yet is no mistake).
    pub fn check_sink(&self) -> Result<(), ConfigError> {
        let Some(sink) = &self.sink else {
            return Ok(());
        };
        let options = crispy_sink::SinkOptions {
            options: self.sink_options.clone(),
            ..Default::default()
        };
        match crispy_sink::ObjectStoreSink::from_url_existing(sink, &options) {
            Err(
                e @ (crispy_sink::SinkError::InvalidUrl { .. }
                | crispy_sink::SinkError::InvalidOption { .. }),
            ) => Err(ConfigError::Invalid {
                path: self.origin.0.clone(),
                line: self.origin.1,
                field: "sink".to_owned(),
                reason: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Reads and validates `path`; password variables are read from the environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), |var| {
            std::env::var(var).ok()
        })
    }

    /// Validates `text`; `env` looks up password variables.
    pub fn parse(
        text: &str,
        path: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            // The parser's own rendering quotes the offending line, which may hold a secret:
            // report the position and the bare message, with quoted values blanked.
            let position = e.span().map_or(String::new(), |span| {
                let at = span.start.min(text.len());
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_text = text[line_start..].lines().next().unwrap_or("");
                // Keys are never secrets: name the field when the line is `key = value`.
                let field = line_text
                    .split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"'))
                    .filter(|k| !k.is_empty() && !k.starts_with('['))
                    .map_or(String::new(), |k| format!(", field `{k}`"));
                format!(
                    "line {}, column {}{field}: ",
                    line_of(at),
                    at - line_start + 1
                )
            });
            // Values of fields that are never secret stay, so the message names what is wrong.
            let message = redact_urls(e.message());
            let message = if PLAIN_FIELDS
                .iter()
                .any(|f| position.contains(&format!("field `{f}`")))
            {
                message.into_owned()
            } else {
                blank_quoted(&message)
            };
            ConfigError::Parse {
                path: path.to_owned(),
                message: format!("{position}{message}"),
            }
        })?;
        let invalid = |offset: usize, field: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(offset),
            field: field.to_owned(),
            reason,
        };
        if file.camera.is_empty() {
            return Err(invalid(0, "camera", "no [[camera]] entries".to_owned()));
        }
        let default_chunk = file.chunk.unwrap_or_default();
        // Below a second, a camera between two frames would count as stalled.
        let stall = |t: &Spanned<ChunkDuration>| {
            let d = t.get_ref().as_duration();
            if d < crate::MIN_STALL_TIMEOUT {
                return Err(invalid(
                    t.span().start,
                    "stall_timeout",
                    format!("{} is shorter than 1s", t.get_ref()),
                ));
            }
            Ok(d)
        };
        let default_stall = match &file.stall_timeout {
            Some(t) => stall(t)?,
            None => Duration::from_secs(10),
        };
        let default_transport: RtspTransport =
            file.rtsp_transport.map(Into::into).unwrap_or_default();
        let default_mode = file.mode.unwrap_or(ModeName::Copy);
        let has_global_transcode = file.transcode.is_some();
        let (global_transcode, global_transcode_at) = file
            .transcode
            .map(|t| (t.get_ref().clone(), t.span().start))
            .unwrap_or_default();
        global_transcode
            .build(default_chunk)
            .map_err(|e| invalid(global_transcode_at, "transcode", e))?;

        let mut jobs: Vec<SourceJob> = Vec::with_capacity(file.camera.len());
        for cam in file.camera {
            let id = cam.id.get_ref().clone();
            if let Some(other) = jobs
                .iter()
                .find(|j| j.source_id.as_str().eq_ignore_ascii_case(id.as_str()))
            {
                let why = if other.source_id == id {
                    format!("camera id {id} is used twice")
                } else {
                    // One folder on case-insensitive disks (macOS, Windows): their chunks and
                    // chains would mix.
                    format!(
                        "camera ids {} and {id} differ only in case",
                        other.source_id
                    )
                };
                return Err(invalid(cam.id.span().start, "id", why));
            }
            let mut rtsp = RtspConfig::parse(cam.url.get_ref())
                .map_err(|e| invalid(cam.url.span().start, "url", e.to_string()))?;
            if let Some(var) = &cam.password_env {
                let Some(password) = env(var.get_ref()) else {
                    return Err(invalid(
                        var.span().start,
                        "password_env",
                        format!(
                            "{} (camera {id})",
                            crispy_core::redact::unset_env_var(var.get_ref())
                        ),
                    ));
                };
                let Some(user) = cam
                    .username
                    .clone()
                    .filter(|u| !u.is_empty())
                    .or_else(|| rtsp.user().map(str::to_owned))
                else {
                    return Err(invalid(
                        var.span().start,
                        "password_env",
                        format!(
                            "no user name to send the password with (camera {id}): add \
                             `username` or put the user in the URL (rtsp://USER@host/...)"
                        ),
                    ));
                };
                rtsp = rtsp.with_credentials(user, Secret::new(password));
            } else if let Some(user) = &cam.username {
                rtsp = rtsp.with_user(user.clone());
            }
            let prefix = match &cam.prefix {
                Some(p) => {
                    let bad = |reason: String| invalid(p.span().start, "prefix", reason);
                    if p.get_ref().starts_with('/') {
                        return Err(bad(format!(
                            "{:?} is absolute; a prefix is relative to the sink's root",
                            p.get_ref()
                        )));
                    }
                    let clean = crispy_sink::clean_prefix(p.get_ref(), path).map_err(|e| {
                        bad(match e {
                            crispy_sink::SinkError::InvalidUrl { reason, .. } => reason,
                            other => other.to_string(),
                        })
                    })?;
                    Some(clean).filter(|p| !p.is_empty())
                }
                None => None,
            };
            rtsp.transport = cam.transport.map(Into::into).unwrap_or(default_transport);
            rtsp.stall_timeout = match &cam.stall_timeout {
                Some(t) => stall(t)?,
                None => default_stall,
            };
            let chunk = cam.chunk.unwrap_or(default_chunk);
            let spec = match cam.mode.unwrap_or(default_mode) {
                ModeName::Copy => {
                    if let Some(t) = &cam.transcode {
                        return Err(invalid(
                            t.span().start,
                            "transcode",
                            format!(
                                "camera {id} stream-copies: transcode settings apply to \
                                 mode = \"transcode\" only"
                            ),
                        ));
                    }
                    SourceSpec::Rtsp(rtsp)
                }
                ModeName::Transcode => {
                    let (settings, at) = match cam.transcode {
                        Some(t) => (t.get_ref().clone().or(&global_transcode), t.span().start),
                        None => (global_transcode.clone(), global_transcode_at),
                    };
                    let config = settings
                        .build(chunk)
                        .map_err(|e| invalid(at, "transcode", format!("camera {id}: {e}")))?;
                    SourceSpec::TranscodeRtsp(rtsp, config)
                }
            };
            jobs.push(SourceJob {
                source_id: id,
                spec,
                chunk,
                prefix,
            });
        }
        // Settings nothing uses are a mistake to name, not to ignore.
        let any_transcodes = jobs
            .iter()
            .any(|j| matches!(j.spec, SourceSpec::TranscodeRtsp(..)));
        if has_global_transcode && !any_transcodes {
            return Err(invalid(
                global_transcode_at,
                "transcode",
                "no camera has mode = \"transcode\", so these settings would apply to none"
                    .to_owned(),
            ));
        }
        let mut options = PipelineOptions::default();
        if let Some(n) = &file.max_in_flight {
            if !(1..=256).contains(n.get_ref()) {
                return Err(invalid(
                    n.span().start,
                    "max_in_flight",
                    format!("{} is not between 1 and 256", n.get_ref()),
                ));
            }
            options.max_in_flight = usize::from(*n.get_ref());
        }
        if let Some(d) = file.drain_timeout {
            options.drain_timeout = d.as_duration();
        }
        options.align_wall = file.align == Some(AlignName::Wall);
        options.exact_cuts = file.cut == Some(CutName::Exact);
        options.spool.dir = file.spool_dir;
        if let Some(max) = &file.spool_max {
            let size: bytesize::ByteSize = max.get_ref().parse().map_err(|e| {
                invalid(
                    max.span().start,
                    "spool_max",
                    format!("expected a size like 10GiB or 500MB: {e}"),
                )
            })?;
            options.spool.max_bytes = size.as_u64();
        }
        let sink_line = file.sink.as_ref().map_or(0, |s| line_of(s.span().start));
        Ok(Self {
            sink: file.sink.map(Spanned::into_inner),
            origin: (path.to_owned(), sink_line),
            sink_options: file.sink_options.into_iter().collect(),
            options,
            jobs,
        })
    }
}

/// Fields whose values are never secrets: their parse errors quote them.
const PLAIN_FIELDS: &[&str] = &[
    "id",
    "chunk",
    "stall_timeout",
    "drain_timeout",
    "max_in_flight",
    "rtsp_transport",
    "transport",
    "align",
    "cut",
    "mode",
    "spool_max",
    "prefix",
];

/// Replaces every `"…"` in a parser message with `"…"` (values may be secrets); names in
/// backticks (field names) stay.
fn blank_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "cams.toml", |v| {
            (v == "PASS").then(|| "hunter2".to_owned())
        })
    }

    #[test]
    fn reads_a_full_config() {
        let c = parse(
            r#"
sink = "s3://footage/site"
chunk = "2s"
max_in_flight = 3
stall_timeout = "4s"
rtsp_transport = "udp"
spool_dir = "/var/spool/crispy"
spool_max = "2GiB"

[sink_options]
aws_region = "eu-west-1"
aws_allow_http = "true"

[[camera]]
id = "a"
url = "rtsp://127.0.0.1:8554/live"

[[camera]]
id = "b"
url = "rtsp://127.0.0.1:8554/secure"
username = "viewer"
password_env = "PASS"
transport = "tcp"
chunk = "1500ms"
prefix = "site-a/door"
"#,
        )
        .expect("valid");
        assert_eq!(c.sink.as_deref(), Some("s3://footage/site"));
        assert_eq!(c.options.max_in_flight, 3);
        assert_eq!(c.options.spool.max_bytes, 2 << 30);
        assert_eq!(
            c.options.spool.dir.as_deref(),
            Some(std::path::Path::new("/var/spool/crispy"))
        );
        assert_eq!(
            c.sink_options,
            [
                ("aws_allow_http".to_owned(), "true".to_owned()),
                ("aws_region".to_owned(), "eu-west-1".to_owned())
            ]
        );
        let shown = format!("{c:?}");
        assert!(
            shown.contains("aws_region") && !shown.contains("eu-west-1"),
            "{shown}"
        );
        assert_eq!(c.jobs.len(), 2);
        assert_eq!(c.jobs[0].chunk.as_millis(), 2000);
        assert_eq!(c.jobs[1].chunk.as_millis(), 1500);
        let SourceSpec::Rtsp(a) = &c.jobs[0].spec else {
            panic!("rtsp")
        };
        assert_eq!(a.transport, RtspTransport::Udp);
        assert_eq!(a.stall_timeout, Duration::from_secs(4));
        let SourceSpec::Rtsp(b) = &c.jobs[1].spec else {
            panic!("rtsp")
        };
        assert_eq!(b.display_url(), "rtsp://***@127.0.0.1:8554/secure");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.jobs[0].prefix, None);
        assert_eq!(c.jobs[1].prefix.as_deref(), Some("site-a/door"));
    }

    #[test]
    fn transcode_settings_are_inherited_and_overridden() {
        let c = parse(
            r#"
mode = "transcode"
[transcode]
fps = 10
preset = "ultrafast"
crf = 30
max_height = 480

[[camera]]
id = "a"
url = "rtsp://h/a"

[[camera]]
id = "b"
url = "rtsp://h/b"
transcode = { fps = 5, scale = "640x360", bitrate_kbps = 800 }

[[camera]]
id = "c"
url = "rtsp://h/c"
mode = "copy"
"#,
        )
        .expect("valid");
        let SourceSpec::TranscodeRtsp(_, a) = &c.jobs[0].spec else {
            panic!("a transcodes")
        };
        assert_eq!(a.fps, Some(Rational::new(10, 1)));
        assert_eq!(a.preset, "ultrafast");
        assert_eq!(a.scale, None);
        assert_eq!((a.crf, a.bitrate_kbps, a.max_height), (30, None, Some(480)));
        let SourceSpec::TranscodeRtsp(_, b) = &c.jobs[1].spec else {
            panic!("b transcodes")
        };
        assert_eq!(b.fps, Some(Rational::new(5, 1)));
        assert_eq!(b.preset, "ultrafast");
        // A camera's size or rate setting replaces the other one of the pair too.
        assert_eq!((b.scale, b.max_height), (Some((640, 360)), None));
        assert_eq!(b.bitrate_kbps, Some(800));
        assert!(matches!(c.jobs[2].spec, SourceSpec::Rtsp(_)));
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nbogus = 1\n",
                "bogus",
            ),
            (
                "[[camera]]\nid = \"../x\"\nurl = \"rtsp://h/x\"\n",
                "line 2",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"http://h/x\"\n",
                "line 3, field `url`",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/y\"\n",
                "line 5, field `id`",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\npassword_env = \"NOPE\"\n",
                "line 4, field `password_env`",
            ),
            (
                "chunk = \"0s\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "line 1",
            ),
            ("sink = \"x\"\n", "no [[camera]]"),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nprefix = \"../up\"\n",
                "line 4, field `prefix`",
            ),
            (
                "mode = \"transcode\"\n[transcode]\npreset = \"warp\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "line 2, field `transcode`: unknown preset",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nmode = \"transcode\"\ntranscode = { scale = \"big\" }\n",
                "line 5, field `transcode`",
            ),
            // As strict as the command line, and naming what is wrong.
            (
                "max_in_flight = 0\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "line 1, field `max_in_flight`: 0 is not between 1 and 256",
            ),
            (
                "[transcode]\nfps = 0\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "field `transcode`: fps must be above 0",
            ),
            (
                "mode = \"transcode\"\n[transcode]\nfps = 241\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "field `transcode`: fps 241 is not between 1 and 240",
            ),
            (
                "mode = \"transcode\"\n[transcode]\nfps = 4294967295\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "field `transcode`: fps 4294967295 is not between 1 and 240",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nmode = \"transcode\"\ntranscode = { max_height = 4 }\n",
                "line 5, field `transcode`: camera a: max_height",
            ),
            // Settings that would be ignored, or that contradict each other, as on the
            // command line.
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\ntranscode = { fps = 5 }\n",
                "line 4, field `transcode`: camera a stream-copies",
            ),
            (
                "[transcode]\nfps = 5\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "line 1, field `transcode`: no camera has mode",
            ),
            (
                "mode = \"transcode\"\n[transcode]\ncrf = 20\nbitrate_kbps = 100\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "crf and bitrate_kbps exclude each other",
            ),
            (
                "mode = \"transcode\"\n[transcode]\nbitrate_kbps = 99999999999\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "out of range 1..=1000000",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nmode = \"transcode\"\ntranscode = { scale = \"320x240\", max_height = 100 }\n",
                "scale and max_height exclude each other",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nprefix = \"/abs/p\"\n",
                "field `prefix`: \"/abs/p\" is absolute",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nprefix = \"../up\"\n",
                "field `prefix`: prefix \"../up\" has an empty",
            ),
            (
                "[[camera]]\nid = \"../a\"\nurl = \"rtsp://h/x\"\n",
                "\"../a\"",
            ),
            (
                "chunk = \"abc\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "invalid duration \"abc\"",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nstall_timeout = \"1ms\"\n",
                "line 4, field `stall_timeout`: 1ms is shorter than 1s",
            ),
            (
                "[[camera]]\nid = \"Gate\"\nurl = \"rtsp://h/x\"\n[[camera]]\nid = \"gate\"\nurl = \"rtsp://h/y\"\n",
                "line 5, field `id`: camera ids Gate and gate differ only in case",
            ),
            // A password with no user to send it with.
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\npassword_env = \"PASS\"\n",
                "line 4, field `password_env`: no user name to send the password with",
            ),
            (
                "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nusername = \"\"\npassword_env = \"PASS\"\n",
                "line 5, field `password_env`: no user name to send the password with",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("cams.toml"), "{err}");
        }
        // The sink as the sinks would take it, checked for runs that use it.
        let sinks = [
            (
                "sink = \"ftp://x\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "line 1, field `sink`: invalid sink URL",
            ),
            (
                "sink = \"memory://\"\n[sink_options]\naws_endpoint = \"http://h\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n",
                "line 1, field `sink`: sink option \"aws_endpoint\": store options (--sink-opt, a config file's [sink_options]) apply to s3://, gs:// and az:// sinks only, not to memory://",
            ),
        ];
        for (text, want) in sinks {
            let config = parse(text).expect(text);
            let err = config.check_sink().expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("cams.toml"), "{err}");
        }
        let fine = parse("sink = \"s3://b/p\"\n[sink_options]\naws_region = \"eu-west-1\"\n[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n")
            .expect("valid");
        assert!(fine.check_sink().is_ok());
    }

    #[test]
    fn a_misplaced_password_is_never_echoed() {
        for text in [
            "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\npassword = \"hunter2\"\n",
            "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\nusername = [\"hunter2\"]\n",
            "[[camera]]\nid = \"a\"\nurl = \"rtsp://h/x\"\npassword_env = \"hunter2\n",
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("line 4"), "{err}");
        }
    }

    #[test]
    fn parse_errors_never_echo_passwords() {
        let err = parse("[[camera]]\nid = \"a\"\nurl = \"rtsp://u:hunter2@h/x\"\nextra = [\n")
            .expect_err("bad toml")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
