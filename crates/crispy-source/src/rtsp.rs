use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crispy_core::{Codec, EncodedPacket, PacketSource, Secret, StreamInfo};
use ffmpeg_next as ffmpeg;

use crate::demux::{Demuxer, ReadError, SelectError};
use crate::interrupt::{Interrupt, Reason};
use crate::{SourceError, ffi};

/// RTP transport for RTSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtspTransport {
    /// Interleaved over the RTSP TCP connection (robust through NAT and firewalls).
    #[default]
    Tcp,
    /// RTP over UDP.
    Udp,
}

impl RtspTransport {
    fn as_ffmpeg(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}

/// How to reach one camera. Its `Debug` output never shows the password.
#[derive(Clone)]
pub struct RtspConfig {
    /// The URL without user info.
    url: String,
    credentials: Option<(String, Secret)>,
    /// RTP transport.
    pub transport: RtspTransport,
    /// A live stream that delivers nothing for this long is considered stalled.
    pub stall_timeout: Duration,
    /// Longest time to connect and read the stream description.
    pub open_timeout: Duration,
}

impl std::fmt::Debug for RtspConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspConfig")
            .field("url", &self.display_url())
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("transport", &self.transport)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}

/// `path` with the values of secret-looking `name=value` pairs replaced by `***`. A name
/// runs back to the previous `/`, `&`, `;` or `_`; a value runs to the next `/`, `&` or `;`,
/// or to a `_` that starts another `name=` (`user=admin_password=x_channel=1`).
fn blank_secret_values(path: &str) -> String {
    const NAME_START: [char; 4] = ['/', '&', ';', '_'];
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq);
        let value = &after[1..];
        let name = &before[before.rfind(NAME_START).map_or(0, |i| i + 1)..];
        // The value ends at a separator, or at `_` followed by letters and digits and `=`.
        let end = value
            .char_indices()
            .find(|&(i, c)| {
                matches!(c, '/' | '&' | ';')
                    || (c == '_'
                        && value[i + 1..].split_once('=').is_some_and(|(n, _)| {
                            !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric())
                        }))
            })
            .map_or(value.len(), |(i, _)| i);
        out.push_str(before);
        out.push('=');
        if crispy_core::redact::is_secret_name(name) {
            out.push_str("***");
        } else {
            out.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

impl RtspConfig {
    /// Parses an `rtsp://` or `rtsps://` URL; user info in it becomes the credentials.
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        let invalid = |reason: &str| SourceError::InvalidUrl {
            url: crispy_core::redact::redact_urls(url).into_owned(),
            reason: reason.to_owned(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("not a URL"));
        };
        // Schemes are case-insensitive (`RTSP://` from a camera's manual).
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "rtsp" | "rtsps") {
            return Err(invalid("the scheme must be rtsp:// or rtsps://"));
        }
        // User info runs to the LAST '@': passwords are pasted with '/', '?', '#' or '@'
        // unescaped (`admin:12/34@cam`). Only where what comes before that '@' cannot be a
        // user name with a password is the '@' the path's or the query's: no ':' before it
        // (`cam/live?notify=ops@example.com`), an IPv6 host, or a user name alone in the
        // authority (up to the first '/', '?' or '#', as RFC 3986 ends it). Otherwise a
        // password wins over an '@' in the query, which must then be written %40: read the
        // other way, a password would end up in the host, the path and the source id.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let at = match authority.rfind('@') {
            // A user name alone cannot go on past the authority.
            Some(at) if !authority[..at].contains(':') => Some(at),
            Some(_) => rest.rfind('@'),
            None if authority.starts_with('[') => None,
            None => rest.rfind('@').filter(|&at| rest[..at].contains(':')),
        };
        let (credentials, after) = match at {
            Some(at) => {
                let userinfo = &rest[..at];
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some((percent_decode(user), Secret::new(percent_decode(pass)))),
                    &rest[at + 1..],
                )
            }
            None => (None, rest),
        };
        let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (host, path) = after.split_at(host_end);
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("no valid host"));
        }
        // FFmpeg would send these as they are, in the middle of its request line.
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "a space or control character in the path or query: write a space as %20",
            ));
        }
        // A port, if any, after the host (or after `]` of an IPv6 literal).
        let port = match host.strip_prefix('[') {
            Some(v6) => {
                let Some((_, after)) = v6.split_once(']') else {
                    return Err(invalid("an IPv6 address in [ ] is not closed with ]"));
                };
                if !after.is_empty() && !after.starts_with(':') {
                    return Err(invalid("only a :port may follow an IPv6 address in [ ]"));
                }
                after.strip_prefix(':')
            }
            None if host.contains(['[', ']']) => {
                return Err(invalid("[ and ] may only enclose an IPv6 address"));
            }
            None => host.rsplit_once(':').map(|(_, p)| p),
        };
        if port.is_some_and(|p| !p.parse::<u16>().is_ok_and(|p| p > 0)) {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
        Ok(Self {
            url: format!("{scheme}://{host}{path}"),
            credentials,
            transport: RtspTransport::Tcp,
            stall_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(10),
        })
    }

    /// Sets the credentials (overriding any in the URL).
    pub fn with_credentials(mut self, user: impl Into<String>, password: Secret) -> Self {
        self.credentials = Some((user.into(), password));
        self
    }

    /// Sets the user name, keeping the password given in the URL (if any).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        let password = self
            .credentials
            .take()
            .map_or_else(|| Secret::new(""), |(_, p)| p);
        self.credentials = Some((user.into(), password));
        self
    }

    /// The user name given (in the URL or by [`Self::with_credentials`]), if any.
    pub fn user(&self) -> Option<&str> {
        self.credentials
            .as_ref()
            .map(|(u, _)| u.as_str())
            .filter(|u| !u.is_empty())
    }

    /// The URL as it may be shown: user info, and the values of secret-looking query
    /// parameters (`?password=`), replaced by `***`.
    pub fn display_url(&self) -> String {
        let url = crispy_core::redact::redact_query(&self.url);
        match &self.credentials {
            Some(_) => url.replacen("://", "://***@", 1),
            None => url.into_owned(),
        }
    }

    /// Host and path without query or fragment, for deriving a default source id; the values
    /// of secret-looking `name=value` pairs in the path (`/user=admin&password=x&channel=1`,
    /// `/live;password=x`, `/user=admin_password=x_channel=1`, as some recorders take
    /// credentials) become `***`.
    pub fn host_and_path(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        blank_secret_values(rest.split(['?', '#']).next().unwrap_or(rest))
    }

    /// Why the URL's host cannot be reached by name, if it cannot: FFmpeg reports a failed
    /// lookup only as "Input/output error", which does not tell a mistyped camera name from a
    /// dead camera.
    fn unresolvable_host(&self) -> Option<String> {
        use std::net::ToSocketAddrs;
        let (scheme, rest) = self.url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let default_port = if scheme == "rtsps" { 322 } else { 554 };
        let (host, port) = match authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8554`.
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':').and_then(|p| p.parse().ok()))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().ok()),
                None => (authority, None),
            },
        };
        match (host, port.unwrap_or(default_port)).to_socket_addrs() {
            Ok(_) => None,
            Err(e) => Some(format!("cannot resolve the host name {host:?} ({e})")),
        }
    }

    /// The URL FFmpeg connects to, credentials percent-encoded. Never log this.
    fn connect_url(&self) -> String {
        match &self.credentials {
            // FFmpeg sends credentials only for `user:pass@` (an empty password included).
            Some((user, pass)) => self.url.replacen(
                "://",
                &format!(
                    "://{}:{}@",
                    percent_encode(user),
                    percent_encode(pass.expose())
                ),
                1,
            ),
            None => self.url.clone(),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for URL user info).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let h = bytes.get(i + 1).copied().and_then(hex);
            let l = bytes.get(i + 2).copied().and_then(hex);
            if let (Some(h), Some(l)) = (h, l) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone, Copy)]
enum Probe {
    Fast,
    Full,
}

/// A live RTSP camera, read with FFmpeg without decoding.
///
/// Every blocking FFmpeg call is bounded: opening by `open_timeout`, each read by
/// `stall_timeout`; both give up at once when `shutdown` is set.
pub struct RtspSource {
    display: String,
    demuxer: Demuxer,
    interrupt: Arc<Interrupt>,
    stall_timeout: Duration,
}

impl std::fmt::Debug for RtspSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSource")
            .field("url", &self.display)
            .field("info", &self.demuxer.info)
            .finish_non_exhaustive()
    }
}

impl RtspSource {
    /// Connects to the camera and reads its stream description.
    ///
    /// Probing is minimal (the SDP carries the parameter sets, so the first packet follows
    /// the handshake at once); when the SDP lacks them, it reconnects once with a fuller probe.
    pub fn open(config: &RtspConfig, shutdown: Arc<AtomicBool>) -> Result<Self, SourceError> {
        match Self::open_with(config, Arc::clone(&shutdown), Probe::Fast) {
            Err(SourceError::BadStream { .. }) => {
                tracing::debug!(url = %config.display_url(), "stream description incomplete; probing longer");
                Self::open_with(config, shutdown, Probe::Full)
            }
            other => other,
        }
    }

    fn open_with(
        config: &RtspConfig,
        shutdown: Arc<AtomicBool>,
        probe: Probe,
    ) -> Result<Self, SourceError> {
        crate::init();
        let display = config.display_url();
        let interrupt = Interrupt::new(shutdown);
        let mut options = ffmpeg::Dictionary::new();
        options.set("rtsp_transport", config.transport.as_ffmpeg());
        // Socket I/O timeout (µs): a dead TCP peer is noticed even inside one read.
        options.set("timeout", &config.stall_timeout.as_micros().to_string());
        let (duration, size) = match probe {
            Probe::Fast => ("0", "32"),
            Probe::Full => ("1000000", "1000000"),
        };
        options.set("analyzeduration", duration);
        options.set("probesize", size);
        options.set("allowed_media_types", "video");
        if config.transport == RtspTransport::Udp {
            options.set("buffer_size", "4194304");
        }
        interrupt.arm(config.open_timeout);
        let hook = Arc::clone(&interrupt);
        // FFmpeg's own lines about a failed open ("method DESCRIBE failed: 404 Not Found")
        // go into the error, not beside it as ERROR lines of a camera that is only retried.
        let opened = ffi::with_ffmpeg_errors(|| {
            ffmpeg::format::input_with_interrupt_and_dictionary(
                &config.connect_url(),
                move || hook.should_abort(),
                options,
            )
        });
        let input = opened.map_err(|(e, lines)| {
            match open_error(e, &display, &interrupt, config.open_timeout, &lines) {
                SourceError::Connect { url, reason } => SourceError::Connect {
                    url,
                    reason: config.unresolvable_host().unwrap_or(reason),
                },
                other => other,
            }
        })?;
        let demuxer = Demuxer::new(input).map_err(|e| match e {
            SelectError::NoVideo(found) => SourceError::Connect {
                url: display.clone(),
                reason: format!("the stream has no video (found: {found})"),
            },
            SelectError::BadStream(reason) => SourceError::BadStream {
                path: display.clone().into(),
                reason,
            },
        })?;
        Ok(Self {
            display,
            demuxer,
            interrupt,
            stall_timeout: config.stall_timeout,
        })
    }

    /// The camera URL as it may be shown (no credentials).
    pub fn display_url(&self) -> &str {
        &self.display
    }

    /// Wall-clock time (µs since the Unix epoch) of the stream's timestamp zero, from RTCP
    /// sender reports, once FFmpeg has received one.
    pub fn rtcp_start_time_us(&self) -> Option<i64> {
        ffi::start_time_realtime(&self.demuxer.input)
    }

    /// When this connection's first video packet arrived (before any holding for timing).
    pub fn first_packet_received(&self) -> Option<std::time::SystemTime> {
        self.demuxer.first_read_at
    }

    /// Video packets delivered so far.
    pub fn packets_read(&self) -> u64 {
        self.demuxer.packets
    }

    /// What a decoder of this stream needs: codec parameters, time base and frame rate.
    pub(crate) fn decoder_setup(
        &self,
    ) -> (
        ffmpeg::codec::Parameters,
        crispy_core::Rational,
        Option<ffmpeg::Rational>,
    ) {
        self.demuxer.decoder_setup()
    }
}

impl crate::CameraSource for RtspSource {
    fn display_url(&self) -> &str {
        &self.display
    }

    fn rtcp_start_time_us(&self) -> Option<i64> {
        RtspSource::rtcp_start_time_us(self)
    }

    fn first_packet_received(&self) -> Option<std::time::SystemTime> {
        RtspSource::first_packet_received(self)
    }

    fn packets_read(&self) -> u64 {
        RtspSource::packets_read(self)
    }
}

/// What a failed open means. `said` is what FFmpeg logged meanwhile: named in the reason
/// when its error code alone is generic, else only logged at debug level.
fn open_error(
    e: ffmpeg::Error,
    url: &str,
    interrupt: &Interrupt,
    timeout: Duration,
    said: &[String],
) -> SourceError {
    let url = url.to_owned();
    if !said.is_empty() {
        tracing::debug!(url = %url, "FFmpeg: {}", said.join("; "));
    }
    match e {
        ffmpeg::Error::HttpUnauthorized | ffmpeg::Error::HttpForbidden => {
            SourceError::Unauthorized { url }
        }
        ffmpeg::Error::HttpNotFound => SourceError::RemoteNotFound { url },
        // Whatever FFmpeg reports after an interrupted open (EXIT, or "invalid data" when
        // the RTSP reply it waited for broke off), the cause is the interruption.
        _ if interrupt.reason() == Reason::Shutdown => SourceError::Shutdown,
        _ if interrupt.reason() == Reason::Deadline => SourceError::Connect {
            url,
            reason: format!(
                "the camera did not answer within the open timeout ({} ms)",
                timeout.as_millis()
            ),
        },
        ffmpeg::Error::Exit => SourceError::Stalled {
            url,
            timeout_ms: timeout.as_millis() as u64,
        },
        other => {
            // Lines that only repeat the error ("Connection to tcp://… failed: Connection
            // refused") add nothing.
            let text = other.to_string();
            let more: Vec<&str> = said
                .iter()
                .map(String::as_str)
                .filter(|l| !l.contains(text.as_str()))
                .collect();
            let reason = match more.is_empty() {
                true => text,
                false => format!("{text} ({})", more.join("; ")),
            };
            SourceError::Connect {
                url,
                reason: crispy_core::redact::redact_urls(&reason).into_owned(),
            }
        }
    }
}

impl PacketSource for RtspSource {
    type Error = SourceError;

    fn stream_info(&self) -> &StreamInfo {
        &self.demuxer.info
    }

    fn next_packet(&mut self) -> Result<Option<EncodedPacket>, SourceError> {
        if self.interrupt.shutting_down() {
            return Err(SourceError::Shutdown);
        }
        self.interrupt.rearm(self.stall_timeout);
        let hevc = match self.demuxer.info.codec {
            Codec::H264 => Some(false),
            Codec::H265 => Some(true),
            _ => None,
        };
        let mut read = self.demuxer.read();
        // When the connection ends, FFmpeg's parser hands out what it held: possibly just
        // the next frame's delimiter, which is no frame and must not end a chunk.
        while let (Ok(Some(p)), Some(hevc)) = (&read, hevc) {
            if !crispy_core::annexb::lacks_picture(&p.data, hevc) {
                break;
            }
            tracing::debug!(url = %self.display, bytes = p.data.len(), "dropping a packet without a picture");
            read = self.demuxer.read();
        }
        if read.is_ok() && self.interrupt.reason() != Reason::None {
            // After an aborted read FFmpeg flushes its parser and hands out whatever it had
            // buffered, possibly a fragment of a frame: never let that into a chunk.
            tracing::debug!(url = %self.display, "dropping a packet returned by an interrupted read");
            return Err(match self.interrupt.reason() {
                Reason::Shutdown => SourceError::Shutdown,
                _ => SourceError::Stalled {
                    url: self.display.clone(),
                    timeout_ms: self.stall_timeout.as_millis() as u64,
                },
            });
        }
        match read {
            Ok(p) => Ok(p),
            // Whatever an interrupted read reports (EXIT, or EIO from some depacketizers).
            Err(_) if self.interrupt.reason() == Reason::Shutdown => Err(SourceError::Shutdown),
            Err(ReadError::Ffmpeg(ffmpeg::Error::Exit)) => Err(SourceError::Stalled {
                url: self.display.clone(),
                timeout_ms: self.stall_timeout.as_millis() as u64,
            }),
            Err(e) => Err(SourceError::Disconnected {
                url: self.display.clone(),
                packets: self.demuxer.packets,
                reason: crispy_core::redact::redact_urls(&e.describe()).into_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_scheme_case() {
        for bad in [
            "rtsp://cam:99999/s",
            "rtsp://cam:0/s",
            "rtsp://cam:x/s",
            "rtsp://cam:/s",
            "rtsp://[::1]:70000/s",
        ] {
            let e = RtspConfig::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("port"), "{bad}: {e}");
        }
        for good in [
            "rtsp://cam:554/s",
            "rtsp://[::1]:8554/s",
            "rtsp://[::1]/s",
            "rtsp://cam",
        ] {
            assert!(RtspConfig::parse(good).is_ok(), "{good}");
        }
        let c = RtspConfig::parse("RTSP://cam:554/s").expect("upper case scheme");
        assert_eq!(c.display_url(), "rtsp://cam:554/s");
    }

    #[test]
    fn credentials_never_show() {
        let c =
            RtspConfig::parse("rtsp://admin:hunter2@10.1.2.3:554/Streaming/101").expect("valid");
        assert_eq!(c.display_url(), "rtsp://***@10.1.2.3:554/Streaming/101");
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        assert_eq!(
            c.connect_url(),
            "rtsp://admin:hunter2@10.1.2.3:554/Streaming/101"
        );

        let c = RtspConfig::parse("rtsp://cam/x")
            .expect("valid")
            .with_credentials("u", Secret::new("p@ss"));
        assert_eq!(c.display_url(), "rtsp://***@cam/x");
        assert_eq!(c.connect_url(), "rtsp://u:p%40ss@cam/x");

        // A password with '/', '?' or '#' written raw into the URL is still credentials.
        let c = RtspConfig::parse("rtsp://admin:pa/s?s#w@cam:554/s1?token=abc").expect("valid");
        assert_eq!(c.display_url(), "rtsp://***@cam:554/s1?token=***");
        assert!(!format!("{c:?}").contains("pa/s"), "{c:?}");
        assert_eq!(
            c.connect_url(),
            "rtsp://admin:pa%2Fs%3Fs%23w@cam:554/s1?token=abc"
        );
        assert_eq!(c.host_and_path(), "cam:554/s1");
        for (url, path) in [
            (
                "rtsp://cam:554/user=admin&password=ssW0rdX&channel=1&stream=0.sdp",
                "cam:554/user=admin&password=***&channel=1&stream=0.sdp",
            ),
            (
                "rtsp://cam/secure;password=ssW0rdX",
                "cam/secure;password=***",
            ),
            ("rtsp://cam/s?pw=x#frag", "cam/s"),
            (
                "rtsp://nvr/user=admin_password=my_pa55_channel=1_stream=0.sdp",
                "nvr/user=admin_password=***_channel=1_stream=0.sdp",
            ),
            // Names, not hosts or paths, are judged: no secret in these.
            ("rtsp://keycam/channel=1", "keycam/channel=1"),
            (
                "rtsp://design-cam/live/channel=2",
                "design-cam/live/channel=2",
            ),
        ] {
            let c = RtspConfig::parse(url).expect("valid");
            assert_eq!(c.host_and_path(), path, "{url}");
        }

        // Percent-escaped credentials are decoded once, re-encoded for FFmpeg.
        let c = RtspConfig::parse("rtsp://a%40b:p%3Aw@cam/x").expect("valid");
        assert_eq!(c.connect_url(), "rtsp://a%40b:p%3Aw@cam/x");
        // An empty password still sends the user (FFmpeg needs the ':').
        let c = RtspConfig::parse("rtsp://cam/x")
            .expect("valid")
            .with_credentials("u", Secret::new(""));
        assert_eq!(c.connect_url(), "rtsp://u:@cam/x");
        assert_eq!(
            RtspConfig::parse("rtsp://cam/x")
                .expect("valid")
                .display_url(),
            "rtsp://cam/x"
        );
        // A user name alone keeps the URL's password; the URL's user is there to read.
        let c = RtspConfig::parse("rtsp://admin:s3cret@cam/x")
            .expect("valid")
            .with_user("viewer");
        assert_eq!(c.connect_url(), "rtsp://viewer:s3cret@cam/x");
        assert_eq!(c.user(), Some("viewer"));
        assert_eq!(
            RtspConfig::parse("rtsp://cam/x").expect("valid").user(),
            None
        );
        // Cameras that take their credentials in the query.
        let c = RtspConfig::parse("rtsp://cam/live?user=admin&password=hunter2&channel=1")
            .expect("valid");
        assert_eq!(
            c.display_url(),
            "rtsp://cam/live?user=admin&password=***&channel=1"
        );
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
    }

    #[test]
    fn an_unknown_host_name_is_named() {
        // `.invalid` never resolves (RFC 2606), with or without a network.
        let config =
            RtspConfig::parse("rtsp://admin:s3cret@cam-7.invalid:8554/live").expect("valid");
        let why = config.unresolvable_host().expect("unresolvable");
        assert!(why.contains("\"cam-7.invalid\""), "{why}");
        assert!(!why.contains("s3cret") && !why.contains("admin"), "{why}");
        for url in [
            "rtsp://127.0.0.1:8554/live",
            "rtsp://[::1]/live",
            "rtsps://localhost/x",
        ] {
            let config = RtspConfig::parse(url).expect("valid");
            assert_eq!(config.unresolvable_host(), None, "{url}");
        }
    }

    #[test]
    fn a_server_that_never_answers_is_named_as_such() {
        // Accepts the connection (the kernel does, from the backlog) and never replies.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = hung.local_addr().expect("addr").port();
        let mut config = RtspConfig::parse(&format!("rtsp://admin:s3cret@127.0.0.1:{port}/live"))
            .expect("valid");
        config.open_timeout = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let err = RtspSource::open(&config, Arc::new(AtomicBool::new(false)))
            .expect_err("no answer")
            .to_string();
        assert!(
            err.contains("did not answer within the open timeout (500 ms)"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    }

    #[test]
    fn rejects_non_rtsp_urls_without_echoing_secrets() {
        for bad in ["http://cam/x", "cam/x", "rtsp://", "rtsp://u:pw@/x"] {
            let err = RtspConfig::parse(bad).expect_err(bad).to_string();
            assert!(!err.contains(":pw"), "{err}");
        }
        // Malformed hosts and raw spaces are refused, not retried for ever.
        for (bad, why) in [
            ("rtsp://[::1/live", "not closed with ]"),
            ("rtsp://u:pw@[::1/live", "not closed with ]"),
            ("rtsp://[::1]x/live", "only a :port"),
            ("rtsp://cam]:554/live", "only enclose an IPv6"),
            ("rtsp://cam/my stream", "write a space as %20"),
            ("rtsp://cam/live?x=a\tb", "write a space as %20"),
        ] {
            let err = RtspConfig::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(!err.contains(":pw"), "{err}");
        }
    }

    #[test]
    fn user_info_is_read_where_it_can_be() {
        // (URL, user and password, host and path)
        let cases = [
            // An '@' in the query of a URL without credentials is the query's.
            ("rtsp://cam/live?notify=ops@example.com", None, "cam/live"),
            ("rtsp://[::1]:8554/live?to=a@b", None, "[::1]:8554/live"),
            ("rtsp://10.0.0.5/a@b", None, "10.0.0.5/a@b"),
            // With credentials before it, too.
            (
                "rtsp://admin@cam/live?to=a@b",
                Some(("admin", "")),
                "cam/live",
            ),
            // Passwords pasted with '/', '?', '#' or '@' unescaped still read whole.
            (
                "rtsp://admin:pa/ss@cam/live",
                Some(("admin", "pa/ss")),
                "cam/live",
            ),
            (
                "rtsp://admin:p?w#x@cam/live",
                Some(("admin", "p?w#x")),
                "cam/live",
            ),
            (
                "rtsp://admin:p@ss@cam/live",
                Some(("admin", "p@ss")),
                "cam/live",
            ),
            (
                "rtsp://admin:p@s/s@cam/live",
                Some(("admin", "p@s/s")),
                "cam/live",
            ),
            // Numeric passwords holding '/', '?' or '#' are not taken for a port.
            (
                "rtsp://admin:1234/5@10.0.0.5:554/live",
                Some(("admin", "1234/5")),
                "10.0.0.5:554/live",
            ),
            (
                "rtsp://admin:12#34@cam/live",
                Some(("admin", "12#34")),
                "cam/live",
            ),
            (
                "rtsp://admin:99?x@cam/live",
                Some(("admin", "99?x")),
                "cam/live",
            ),
            (
                "rtsp://admin:/pw@cam/live",
                Some(("admin", "/pw")),
                "cam/live",
            ),
            // Ambiguous: read as a password holding '/' and '?' (write '@' in a query as %40).
            (
                "rtsp://cam:8554/live?to=a@b",
                Some(("cam", "8554/live?to=a")),
                "b",
            ),
            (
                "rtsp://admin:pw@cam/live?to=a@b",
                Some(("admin", "pw@cam/live?to=a")),
                "b",
            ),
            (
                "rtsp://admin:pw@cam/live?to=a%40b",
                Some(("admin", "pw")),
                "cam/live",
            ),
        ];
        for (url, creds, host_path) in cases {
            let c = RtspConfig::parse(url).expect(url);
            let got = c
                .credentials
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.expose()));
            assert_eq!(got, creds, "{url}");
            assert_eq!(c.host_and_path(), host_path, "{url}");
        }
    }
}
