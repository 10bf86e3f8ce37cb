use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crispy_core::{EncodedPacket, PacketSource, Secret, StreamInfo};
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
        if !matches!(scheme, "rtsp" | "rtsps") {
            return Err(invalid("the scheme must be rtsp:// or rtsps://"));
        }
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (credentials, host) = match authority.rfind('@') {
            Some(at) => {
                let (user, pass) = authority[..at]
                    .split_once(':')
                    .unwrap_or((&authority[..at], ""));
                (
                    Some((user.to_owned(), Secret::new(pass))),
                    &authority[at + 1..],
                )
            }
            None => (None, authority),
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("no valid host"));
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

    /// The URL as it may be shown: user info replaced by `***`.
    pub fn display_url(&self) -> String {
        match &self.credentials {
            Some(_) => self.url.replacen("://", "://***@", 1),
            None => self.url.clone(),
        }
    }

    /// The URL FFmpeg connects to, credentials included. Never log this.
    fn connect_url(&self) -> String {
        match &self.credentials {
            Some((user, pass)) if pass.expose().is_empty() => {
                self.url.replacen("://", &format!("://{user}@"), 1)
            }
            Some((user, pass)) => {
                self.url
                    .replacen("://", &format!("://{user}:{}@", pass.expose()), 1)
            }
            None => self.url.clone(),
        }
    }
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
            Err(SourceError::Connect { .. }) | Err(SourceError::BadStream { .. }) => {
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
        let opened = ffmpeg::format::input_with_interrupt_and_dictionary(
            &config.connect_url(),
            move || hook.should_abort(),
            options,
        );
        let input = opened.map_err(|e| open_error(e, &display, &interrupt, config.open_timeout))?;
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

    /// Video packets delivered so far.
    pub fn packets_read(&self) -> u64 {
        self.demuxer.packets
    }
}

fn open_error(
    e: ffmpeg::Error,
    url: &str,
    interrupt: &Interrupt,
    timeout: Duration,
) -> SourceError {
    let url = url.to_owned();
    match e {
        ffmpeg::Error::HttpUnauthorized | ffmpeg::Error::HttpForbidden => {
            SourceError::Unauthorized { url }
        }
        ffmpeg::Error::HttpNotFound => SourceError::RemoteNotFound { url },
        ffmpeg::Error::Exit if interrupt.reason() == Reason::Shutdown => SourceError::Shutdown,
        ffmpeg::Error::Exit => SourceError::Stalled {
            url,
            timeout_ms: timeout.as_millis() as u64,
        },
        other => SourceError::Connect {
            url,
            reason: crispy_core::redact::redact_urls(&other.to_string()).into_owned(),
        },
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
        match self.demuxer.read() {
            Ok(p) => Ok(p),
            Err(ReadError::Ffmpeg(ffmpeg::Error::Exit))
                if self.interrupt.reason() == Reason::Shutdown =>
            {
                Err(SourceError::Shutdown)
            }
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
        assert_eq!(c.connect_url(), "rtsp://u:p@ss@cam/x");
        assert_eq!(
            RtspConfig::parse("rtsp://cam/x")
                .expect("valid")
                .display_url(),
            "rtsp://cam/x"
        );
    }

    #[test]
    fn rejects_non_rtsp_urls_without_echoing_secrets() {
        for bad in ["http://cam/x", "cam/x", "rtsp://", "rtsp://u:pw@/x"] {
            let err = RtspConfig::parse(bad).expect_err(bad).to_string();
            assert!(!err.contains(":pw"), "{err}");
        }
    }
}
