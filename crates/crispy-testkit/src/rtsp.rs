//! A real RTSP server for tests: GStreamer's RTSP server (`tools/rtsp_server.py`) on 127.0.0.1.
//!
//! Started on a free port, stopped by PID when dropped. Needs Debian's `/usr/bin/python3` with
//! `gi` and the GStreamer packages (`cargo xtask deps` installs them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Username the server's `/secure` mount accepts.
pub const RTSP_USER: &str = "viewer";
/// Password the server's `/secure` mount accepts.
pub const RTSP_PASSWORD: &str = "s3cret-pass";

/// A running GStreamer RTSP server; mounts `/live` (one shared pipeline), `/each` (the same,
/// a pipeline per session), `/audio`, `/file`, `/secure`, `/resize`, `/mjpeg`.
pub struct RtspServer {
    child: Option<Child>,
    port: u16,
    file: Option<PathBuf>,
    paused: bool,
}

impl RtspServer {
    /// Starts a server on a free port; `file` (an H.264 MP4) is served on `/file`.
    pub fn start(file: Option<&Path>) -> Result<Self> {
        let port = free_port()?;
        let mut server = Self {
            child: None,
            port,
            file: file.map(Path::to_path_buf),
            paused: false,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/rtsp_server.py");
        let python =
            std::env::var("CRISPY_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned());
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .args([
                "--port",
                &self.port.to_string(),
                "--user",
                RTSP_USER,
                "--password",
                RTSP_PASSWORD,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        if let Some(f) = &self.file {
            cmd.arg("--file").arg(f);
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {python} {} (cargo xtask deps installs GStreamer)",
                script.display()
            )
        })?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(20));
        self.child = Some(child);
        match ready {
            Ok(line) if line.starts_with("READY") => Ok(()),
            Ok(line) => bail!("RTSP server said {line:?}"),
            Err(_) => bail!("RTSP server did not become ready on port {}", self.port),
        }
    }

    /// `rtsp://127.0.0.1:<port><mount>`.
    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}{mount}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL): connections drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                let _ = signal(child.id(), "CONT");
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let mut last = None;
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing flows.
    pub fn pause(&mut self) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id();
        signal(pid, "STOP")?;
        self.paused = true;
        Ok(())
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&mut self) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id();
        signal(pid, "CONT")?;
        self.paused = false;
        Ok(())
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `SIG<name>` to the process `pid` (by PID only).
pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
