//! `crispy run` against a real S3 emulator (moto) behind a TCP proxy: killed with SIGKILL
//! during an outage and restarted, a spool on a tiny tmpfs that fills, bad sinks at start.

use assert_cmd::assert::OutputAssertExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crispy_testkit::LoggedChild;
use crispy_testkit::emulators::{Emulator, Kind, TcpProxy};
use crispy_testkit::stored_count;
use serde_json::Value;

fn crispy() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("crispy"));
    cmd.env_remove("RUST_LOG");
    cmd
}

fn sink_opts(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["--sink-opt".to_owned(), format!("{k}={v}")])
        .collect()
}

/// `crispy --log-format json run --source testsrc …` into `url` through `endpoint`.
fn start_run(
    dir: &Path,
    log: &str,
    url: &str,
    opts: &[(String, String)],
    spool: &Path,
    source: &str,
) -> LoggedChild {
    let mut cmd = crispy();
    cmd.args(["--log-format", "json", "run", "--source", source])
        .args(["--source-id", "yard", "--chunk", "1s", "--sink", url])
        .args(sink_opts(opts))
        .arg("--spool-dir")
        .arg(spool);
    LoggedChild::spawn(cmd, &dir.join(log)).expect("crispy starts")
}

/// moto with a bucket `footage`, a proxy in front of it that can cut it off, and the sink
/// options that reach it through the proxy.
fn moto_behind_a_proxy() -> (Emulator, TcpProxy, Vec<(String, String)>) {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    moto.create_bucket("footage").expect("bucket");
    let proxy = TcpProxy::start(moto.port()).expect("proxy");
    let via_proxy = moto.sink_options_via(&proxy.endpoint());
    (moto, proxy, via_proxy)
}

/// Cuts the store off under `run`, waits for three failed uploads and a few more chunks
/// spooled meanwhile, then kills the run (SIGKILL); its logs.
fn kill_during_an_outage(run: LoggedChild, proxy: &TcpProxy) -> String {
    proxy.cut();
    run.wait_for("failing uploads", Duration::from_secs(30), |l| {
        l.iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("upload failed, will retry"))
            })
            .count()
            >= 3
    });
    std::thread::sleep(Duration::from_secs(3));
    run.kill()
}

/// The JSON log lines in `logs`.
fn json_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn spooled(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(spooled(&p));
            } else if p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "last.json")
            {
                // Pending entries (`last.json` only remembers the newest manifest).
                out.push(p);
            }
        }
    }
    out
}

fn verify_json(url: &str, opts: &[(String, String)]) -> (Option<i32>, Value) {
    let out = crispy()
        .args(["verify", url, "--allow-unsigned", "--json"])
        .args(sink_opts(opts))
        .output()
        .expect("verify runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[test]
fn sigkill_during_an_outage_then_restart_loses_nothing_and_duplicates_nothing() {
    let (moto, proxy, via_proxy) = moto_behind_a_proxy();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let url = "s3://footage/kill";

    let first = start_run(dir.path(), "a.log", url, &via_proxy, &spool, "testsrc");
    first.wait_for("3 chunks stored", Duration::from_secs(30), |l| {
        stored_count(l) >= 3
    });
    let logs = kill_during_an_outage(first, &proxy);
    let pending = spooled(&spool).len();
    assert!(
        pending >= 3,
        "{pending} chunks spooled at the kill; logs:\n{logs}"
    );

    proxy.restore();
    let second = start_run(dir.path(), "b.log", url, &via_proxy, &spool, "testsrc");
    second.wait_for("recovery and 3 new chunks", Duration::from_secs(60), |l| {
        l.iter()
            .any(|l| l["message"] == "uploading the chunks an earlier run left in the spool first")
            && stored_count(l) >= pending + 3
    });
    let (code, logs) = second.terminate();
    assert_eq!(code, Some(0), "{logs}");
    assert!(spooled(&spool).is_empty(), "the spool drained");
    // The second run's summary tells its own chunks from those the first run left behind.
    let lines = json_lines(&logs);
    let summary = lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .expect("summary");
    assert_eq!(
        summary["recovered"].as_u64(),
        Some(pending as u64),
        "{summary}"
    );
    assert_eq!(
        summary["chunks"].as_u64(),
        Some((stored_count(&lines) - pending) as u64),
        "{summary}"
    );
    assert_eq!(summary["dropped"].as_u64(), Some(0), "{summary}");

    // Read back straight from the emulator: every chunk once, the chain unbroken across
    // the kill (the restart continues the spool's sequence and chain, flagged as a
    // discontinuity), every hash matching.
    let (code, report) = verify_json(url, &moto.sink_options());
    assert_eq!(code, Some(0), "{report:#}");
    let source = &report["sources"][0];
    assert_eq!(source["source_id"], "yard");
    let chunks = source["chunks"].as_u64().expect("chunks");
    assert_eq!(
        source["sequences"],
        serde_json::json!([0, chunks - 1]),
        "{report:#}"
    );
}

/// Spool entries damaged between two runs (a flipped byte, a chunk file lost) are set aside
/// and reported, never uploaded as if whole (the store would keep bytes that are not the
/// ones signed) nor deleted without a word.
#[test]
fn damaged_spool_entries_are_set_aside_and_reported_not_uploaded() {
    let (moto, proxy, via_proxy) = moto_behind_a_proxy();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let url = "s3://footage/damaged";

    let first = start_run(dir.path(), "a.log", url, &via_proxy, &spool, "testsrc");
    first.wait_for("2 chunks stored", Duration::from_secs(30), |l| {
        stored_count(l) >= 2
    });
    let logs = kill_during_an_outage(first, &proxy);
    let mut pending = spooled(&spool);
    pending.sort();
    assert!(pending.len() >= 3, "{pending:?}; logs:\n{logs}");
    // One chunk with a byte flipped, one chunk file gone (its manifest left).
    let flipped = pending[0].with_extension("mp4");
    let mut bytes = std::fs::read(&flipped).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, bytes).expect("write");
    std::fs::remove_file(pending[1].with_extension("mp4")).expect("rm");

    proxy.restore();
    let second = start_run(dir.path(), "b.log", url, &via_proxy, &spool, "testsrc");
    second.wait_for(
        "the rest stored and 2 new chunks",
        Duration::from_secs(60),
        |l| stored_count(l) >= pending.len() - 2 + 2,
    );
    let (code, logs) = second.terminate();
    assert_eq!(code, Some(28), "{logs}");
    let lines = json_lines(&logs);
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l["level"] == "ERROR")
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        errors.iter().any(|m| m.contains("has no chunk beside it")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|m| m.contains("is damaged") && m.contains("its manifest says")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|m| m.contains("2 entries damaged and set aside")),
        "the final error counts both: {errors:?}"
    );
    // Both kept for a human.
    let conflicts = spool_conflicts(&spool);
    for p in &pending[..2] {
        let name = p.file_name().expect("name");
        assert!(
            conflicts.iter().any(|c| c.file_name() == Some(name)),
            "{name:?} set aside: {conflicts:?}"
        );
    }
    // The store holds no damaged bytes: verify finds the two chunks missing, not tampered.
    let (code, report) = verify_json(url, &moto.sink_options());
    assert_eq!(code, Some(30), "{report:#}");
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"gap"), "{report:#}");
    assert!(!kinds.contains(&"tampered-chunk"), "{report:#}");
}

/// Every file under some `conflicts/` folder of a spool.
fn spool_conflicts(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), false)];
    while let Some((d, inside)) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                let inside = inside || p.file_name().is_some_and(|n| n == "conflicts");
                stack.push((p, inside));
            } else if inside {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_restart_that_cannot_read_the_store_starts_a_flagged_chain_that_verify_reports() {
    let (moto, proxy, via_proxy) = moto_behind_a_proxy();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = "s3://footage/unknown";

    let first = start_run(
        dir.path(),
        "a.log",
        url,
        &via_proxy,
        &dir.path().join("spool-a"),
        "testsrc",
    );
    first.wait_for("3 chunks stored", Duration::from_secs(30), |l| {
        stored_count(l) >= 3
    });
    let (code, logs) = first.terminate();
    assert_eq!(code, Some(0), "{logs}");

    // A restart on another machine (a fresh spool) while the store does not answer: the
    // last stored manifest is unknown, so the chain cannot be continued.
    proxy.cut();
    let second = start_run(
        dir.path(),
        "b.log",
        url,
        &via_proxy,
        &dir.path().join("spool-b"),
        "testsrc",
    );
    second.wait_for("a new chain announced", Duration::from_secs(40), |l| {
        l.iter().any(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("starting a new hash chain at sequence 0"))
        })
    });
    proxy.restore();
    second.wait_for("2 chunks stored", Duration::from_secs(60), |l| {
        stored_count(l) >= 2
    });
    let (code, logs) = second.terminate();
    assert_eq!(code, Some(0), "{logs}");

    // Nothing is lost, but the new chain cannot vouch for what came between: verify says so
    // and names the flag the second run signed into its first manifest.
    let (code, report) = verify_json(url, &moto.sink_options());
    assert_eq!(code, Some(30), "{report:#}");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{report:#}");
    assert_eq!(problems[0]["kind"], "chain-restart", "{report:#}");
    assert!(
        problems[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("(prev_unknown)")),
        "{report:#}"
    );
}

/// Mounts a tmpfs of `size` at a fresh directory (this test needs root, as CI has); unmounts
/// when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// moto with a `footage` bucket behind a proxy that is cut, and a 1 MB tmpfs for the spool.
fn cut_off_store_and_full_disk() -> (Emulator, TcpProxy, Tmpfs) {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    moto.create_bucket("footage").expect("bucket");
    let proxy = TcpProxy::start(moto.port()).expect("proxy");
    proxy.cut();
    (moto, proxy, Tmpfs::mount("1m"))
}

#[test]
fn a_full_spool_disk_is_reported_and_ingest_resumes_when_space_frees() {
    let (moto, proxy, tmpfs) = cut_off_store_and_full_disk();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = "s3://footage/full";
    let run = start_run(
        dir.path(),
        "run.log",
        url,
        &moto.sink_options_via(&proxy.endpoint()),
        tmpfs.0.path(),
        "lavfi:testsrc2=size=640x360:rate=25",
    );
    let full = |l: &Value| {
        l["level"] == "ERROR"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("the disk is full"))
    };
    run.wait_for("three chunks dropped", Duration::from_secs(60), |l| {
        l.iter().filter(|l| full(l)).count() >= 3
    });
    let first_dropped = run
        .lines()
        .iter()
        .find(|l| full(l))
        .and_then(|l| l["sequence"].as_u64())
        .expect("dropped sequence logged");
    proxy.restore();
    // Uploads empty the spool; new chunks are accepted and stored again. Each upload that
    // failed meanwhile waits out its backoff (up to 30 s, about 45 s with object_store's own
    // retries) before it tries again, so this allows for more under a loaded machine.
    run.wait_for(
        "chunks after the full disk stored",
        Duration::from_secs(120),
        |l| {
            l.iter().any(|l| {
                l["message"] == "chunk stored"
                    && l["sequence"]
                        .as_u64()
                        .is_some_and(|s| s > first_dropped + 1)
            })
        },
    );
    let (code, logs) = run.terminate();
    // Footage was lost, so the run does not end with 0, however cleanly it shut down.
    assert_eq!(code, Some(29), "{logs}");
    // Each drop is logged and counted once, however often its record moves on.
    let lines = json_lines(&logs);
    let mut drops: Vec<u64> = lines
        .iter()
        .filter(|l| full(l))
        .filter_map(|l| l["sequence"].as_u64())
        .collect();
    for l in lines.iter().filter(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("SPOOL FULL"))
    }) {
        let listed = l["chunks"].as_str().expect("chunks listed");
        drops.extend(
            listed
                .split(',')
                .filter_map(|c| c.split_once('#')?.1.parse::<u64>().ok()),
        );
    }
    let logged = drops.len();
    drops.sort_unstable();
    drops.dedup();
    assert_eq!(
        logged,
        drops.len(),
        "a drop logged twice: {drops:?}\n{logs}"
    );
    let summary = lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .expect("summary");
    assert_eq!(
        summary["dropped"].as_u64(),
        Some(drops.len() as u64),
        "{summary}"
    );
    let said = format!(
        "{} chunk(s) were dropped before they could be uploaded (yard: {})",
        drops.len(),
        drops.len()
    );
    assert!(logs.contains(&said), "no '{said}' in:\n{logs}");

    // What reached the bucket is whole; the loss is recorded, not silent.
    let (code, report) = verify_json(url, &moto.sink_options());
    assert_eq!(code, Some(30), "the dropped chunks are a reported problem");
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"dropped"), "{report:#}");
    assert!(
        kinds.iter().all(|k| *k == "dropped"),
        "only recorded drops: {report:#}"
    );
}

/// A file source waits out a full spool disk (the store is cut off, so nothing leaves the
/// spool) and finishes once uploads make room: every chunk stored, exit 0.
#[test]
fn a_file_source_waits_out_a_full_spool_disk() {
    // One 1-second chunk of the 1080p fixture (about 0.6 MB) fits, two do not.
    let (moto, proxy, tmpfs) = cut_off_store_and_full_disk();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = crispy_testkit::Fixture::H264_1080p30Gop30
        .path()
        .expect("fixture");
    let url = "s3://footage/file-full";
    let run = start_run(
        dir.path(),
        "run.log",
        url,
        &moto.sink_options_via(&proxy.endpoint()),
        tmpfs.0.path(),
        &input.display().to_string(),
    );
    run.wait_for("the wait for free space", Duration::from_secs(60), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("waiting for free space"))
        })
    });
    // Still waiting a few seconds later, not failed.
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();
    let (code, logs) = run.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{logs}");
    let (code, report) = verify_json(url, &moto.sink_options());
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["sources"][0]["chunks"], 10, "{report:#}");
}

#[test]
fn bad_sinks_fail_before_reading_with_distinct_exit_codes() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = crispy_testkit::Fixture::H264_1080p30Gop30
        .path()
        .expect("fixture");
    let run = |url: &str, opts: &[(String, String)]| {
        let out = crispy()
            .args(["run", "--source"])
            .arg(&input)
            .args(["--sink", url])
            .args(sink_opts(opts))
            .arg("--spool-dir")
            .arg(dir.path())
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No such bucket.
    let (code, err) = run("s3://never-made/x", &moto.sink_options());
    assert_eq!(code, Some(26), "{err}");
    assert!(err.contains("s3://never-made/x"), "{err}");
    // A typo in an option.
    let (code, err) = run(
        "s3://b/x",
        &[("aws_endpiont".to_owned(), "http://x".to_owned())],
    );
    assert_eq!(code, Some(20), "{err}");
    assert!(err.contains("aws_endpiont"), "{err}");
    // An endpoint that is not a URL (object_store panicked on it: exit 101).
    for endpoint in ["127.0.0.1:15000", "notaurl", ""] {
        let mut opts = moto.sink_options();
        opts.retain(|(k, _)| k != "aws_endpoint");
        opts.push(("aws_endpoint".to_owned(), endpoint.to_owned()));
        let (code, err) = run("s3://b/x", &opts);
        assert_eq!(code, Some(20), "{endpoint:?}: {err}");
        assert!(err.contains("aws_endpoint"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Credentials in the URL are refused and never echoed.
    let (code, err) = run("s3://AKIA:hunter2@bucket/x", &[]);
    assert_eq!(code, Some(20), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A secret option value never appears in errors.
    let mut opts = moto.sink_options();
    opts.push(("aws_session_token".to_owned(), "tok-very-secret".to_owned()));
    let (code, err) = run("s3://never-made/x", &opts);
    assert_eq!(code, Some(26), "{err}");
    assert!(!err.contains("tok-very-secret"), "{err}");
    // Nothing was written anywhere.
    assert!(spooled(dir.path()).is_empty());
}

/// An endpoint given only in the environment (`AWS_ENDPOINT_URL`) names the spool too: the
/// same bucket name at two endpoints is two stores, and one's pending chunks must never be
/// uploaded to the other.
#[test]
fn an_endpoint_from_the_environment_gets_its_own_spool() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    moto.create_bucket("footage").expect("bucket");
    // A second endpoint (a proxy to the same moto) stands for a second store.
    let proxy = TcpProxy::start(moto.port()).expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let input = crispy_testkit::Fixture::H265_720p.path().expect("fixture");
    let third = TcpProxy::start(moto.port()).expect("proxy");
    let mut opts = moto.sink_options();
    opts.retain(|(k, _)| k != "aws_endpoint");
    // The S3-specific variable wins over the general one, for the store and the spool.
    for (endpoint, s3_endpoint) in [
        (moto.endpoint(), None),
        (proxy.endpoint(), None),
        (moto.endpoint(), Some(third.endpoint())),
    ] {
        let mut cmd = crispy();
        if let Some(s3) = &s3_endpoint {
            cmd.env("AWS_ENDPOINT_URL_S3", s3);
        }
        let out = cmd
            .env("AWS_ENDPOINT_URL", &endpoint)
            .args(["run", "--source"])
            .arg(&input)
            .args(["--sink", "s3://footage/env", "--chunk", "3s"])
            .args(sink_opts(&opts))
            .arg("--spool-dir")
            .arg(&spool)
            .output()
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{endpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "one spool per endpoint: {names:?}");
}

/// Credentials written into a custom endpoint URL stay out of the retry warnings, the final
/// error and the spool's directory name (object_store quotes the URLs it used).
#[test]
fn credentials_in_an_endpoint_never_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let dead = crispy_testkit::free_port().expect("port");
    let input = crispy_testkit::Fixture::H264LongGop250
        .path()
        .expect("fixture");
    let mut cmd = crispy();
    cmd.args(["--log-format", "json", "run", "--source"])
        .arg(&input)
        .args(["--sink", "s3://footage/x", "--drain-timeout", "1s"])
        .args(sink_opts(&[
            (
                "aws_endpoint".to_owned(),
                format!("http://minio:XYZSECRET1@127.0.0.1:{dead}"),
            ),
            ("aws_allow_http".to_owned(), "true".to_owned()),
            ("aws_access_key_id".to_owned(), "id".to_owned()),
            ("aws_secret_access_key".to_owned(), "key".to_owned()),
            ("aws_region".to_owned(), "us-east-1".to_owned()),
        ]))
        .arg("--spool-dir")
        .arg(&spool);
    let run = LoggedChild::spawn(cmd, &dir.path().join("run.log")).expect("crispy starts");
    run.wait_for("a retried upload", Duration::from_secs(60), |l| {
        l.iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("upload failed, will retry"))
        })
    });
    let (code, logs) = run.terminate();
    assert_eq!(code, Some(23), "{logs}");
    assert!(!logs.contains("XYZSECRET1"), "{logs}");
    assert!(
        logs.contains("127.0.0.1"),
        "the endpoint is still named: {logs}"
    );
    let names: Vec<String> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| !n.contains("XYZSECRET1")),
        "{names:?}"
    );
}

#[test]
fn run_and_verify_on_azure_and_verify_on_gcs() {
    let input = crispy_testkit::Fixture::H264_1080p30Gop30
        .path()
        .expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");

    // Azure (Azurite): run, then verify from the store.
    let azurite = Emulator::start(Kind::Azurite).expect("azurite");
    azurite.create_bucket("footage").expect("container");
    let opts = azurite.sink_options();
    let out = crispy()
        .args(["run", "--source"])
        .arg(&input)
        .args(["--sink", "az://footage/site"])
        .args(sink_opts(&opts))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .output()
        .expect("runs");
    out.assert().success();
    let (code, report) = verify_json("az://footage/site", &opts);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["sources"][0]["chunks"], 4, "{report:#}");

    // GCS (fake-gcs-server takes no object_store writes): a local run's objects uploaded
    // through the emulator's own API, then verified through ours.
    let local = dir.path().join("local");
    let out = crispy()
        .args(["run", "--source"])
        .arg(&input)
        .arg("--sink")
        .arg(&local)
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .output()
        .expect("runs");
    assert!(out.status.success());
    let gcs = Emulator::start(Kind::FakeGcs).expect("fake-gcs-server");
    gcs.create_bucket("footage").expect("bucket");
    let files = crispy_testkit::files_with_ext(&local, "mp4")
        .expect("list")
        .into_iter()
        .chain(crispy_testkit::files_with_ext(&local, "json").expect("list"));
    let mut first_chunk = None;
    for f in files {
        let name = f
            .strip_prefix(&local)
            .expect("inside")
            .display()
            .to_string();
        gcs.gcs_upload("footage", &name, &std::fs::read(&f).expect("read"))
            .expect("upload");
        if name.ends_with(".mp4") && first_chunk.is_none() {
            first_chunk = Some(name);
        }
    }
    let opts = gcs.sink_options();
    let (code, report) = verify_json("gs://footage", &opts);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["sources"][0]["chunks"], 4, "{report:#}");
    // One byte changed in the bucket is found.
    let name = first_chunk.expect("a chunk");
    let mut bytes = std::fs::read(local.join(&name)).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    gcs.gcs_upload("footage", &name, &bytes).expect("overwrite");
    let (code, report) = verify_json("gs://footage", &opts);
    assert_eq!(code, Some(30), "{report:#}");
    assert_eq!(
        report["problems"][0]["kind"], "tampered-chunk",
        "{report:#}"
    );
}

#[test]
fn signed_urls_in_log_lines_and_manifests_fetch_the_chunk() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    moto.create_bucket("footage").expect("bucket");
    let input = crispy_testkit::Fixture::H264_1080p30Gop30
        .path()
        .expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = moto.sink_options();
    let out = crispy()
        .args(["--log-format", "json", "run", "--source"])
        .arg(&input)
        .args(["--sink", "s3://footage/signed", "--signed-urls", "15m"])
        .args(sink_opts(&opts))
        .arg("--spool-dir")
        .arg(dir.path())
        .output()
        .expect("runs");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}");
    let stored: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "chunk stored")
        .collect();
    assert_eq!(stored.len(), 4, "{logs}");
    for line in &stored {
        let url = line["signed_url"]
            .as_str()
            .expect("signed_url in the log line");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(url.contains("X-Amz-Expires=900"), "{url}");
        // The URL alone fetches the chunk.
        let parsed = url::Url::parse(url).expect("url");
        let path = format!("{}?{}", parsed.path(), parsed.query().unwrap_or_default());
        let port = parsed.port().expect("port");
        let (status, _body) = crispy_testkit::emulators::http(port, "GET", &path, &[], b"")
            .expect("GET the signed URL");
        assert_eq!(status, 200, "{url}: {_body}");
    }
    // The manifest in the bucket carries the URL and its expiry; verify still passes (the URL
    // is outside the signed canonical form).
    let (code, report) = verify_json("s3://footage/signed", &opts);
    assert_eq!(code, Some(0), "{report:#}");
    let object = stored[0]["object"].as_str().expect("object");
    let manifest_path = object.replace(".mp4", ".json");
    let reader = crispy_sink::ObjectStoreSink::from_url_opts(
        "s3://footage/signed",
        &crispy_sink::SinkOptions {
            options: opts.clone(),
            ..crispy_sink::SinkOptions::default()
        },
    )
    .expect("reader");
    let body = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(reader.get(&manifest_path))
        .expect("get")
        .expect("manifest stored");
    let manifest: Value = serde_json::from_slice(&body).expect("manifest json");
    assert_eq!(manifest["signed_url"]["url"], stored[0]["signed_url"]);
    assert!(manifest["signed_url"]["expires_at"].is_string());

    // Local sinks cannot sign: a usage error, before anything runs.
    let out = crispy()
        .args(["run", "--source"])
        .arg(&input)
        .args(["--signed-urls", "15m", "--sink"])
        .arg(dir.path().join("local"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--signed-urls needs"));

    // Lifetimes up to the 7 days GCS and S3 allow, in any unit; nothing longer.
    for (ttl, ok) in [
        ("7d", true),
        ("168h", true),
        ("604801s", false),
        ("8d", false),
    ] {
        let out = crispy()
            .args(["run", "--source"])
            .arg(&input)
            .args(["--signed-urls", ttl, "--sink"])
            .arg(dir.path().join("local"))
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ttl}: {stderr}");
        // Accepted lifetimes get as far as the sink check.
        assert_eq!(
            stderr.contains("--signed-urls needs"),
            ok,
            "{ttl}: {stderr}"
        );
    }
}
