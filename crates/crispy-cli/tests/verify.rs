//! Signed manifests and `crispy verify` end to end: real runs of the `crispy` binary, then
//! tampering with what they stored.

use assert_cmd::assert::OutputAssertExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use crispy_testkit::{ffmpeg, files_with_ext, run_with_closed_stdout, signal};
use serde_json::Value;

fn crispy() -> Command {
    let mut cmd = Command::cargo_bin("crispy").expect("binary built");
    cmd.env_remove("RUST_LOG")
        .env_remove("CRISPY_LOG_FORMAT")
        .env_remove("CRISPY_SIGNING_KEY");
    cmd
}

/// An 8 s 320x240 25 fps H.264 file with a keyframe every second: eight 1 s chunks.
fn input(dir: &Path) -> PathBuf {
    let path = dir.join("clip.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=8",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        path.to_str().expect("utf8 path"),
    ])
    .expect("ffmpeg");
    path
}

/// A 4 s 160x120 25 fps recording of the lavfi source `graph` at `path`, a keyframe every
/// second, whose `creation_time` is `created` (RFC 3339).
fn recording(path: &Path, graph: &str, created: &str) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("{graph}=size=160x120:rate=25"),
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-metadata",
        &format!("creation_time={created}"),
        path.to_str().expect("utf8 path"),
    ])
    .expect("ffmpeg");
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(name);
    let out = crispy()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{out:?}");
    let public = dir.join(format!("{name}.pub"));
    (key, public)
}

fn sink_url(sink: &Path) -> String {
    format!("file://{}", sink.display())
}

/// Runs a file into `sink` with `extra` options; asserts success.
fn run_file(source: &Path, sink: &Path, extra: &[&str], env: &[(&str, &str)]) {
    let mut cmd = crispy();
    cmd.args(["run", "--chunk", "1s", "--source"])
        .arg(source)
        .args(["--sink", &sink_url(sink)])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    out.assert().success();
}

fn verify(sink: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let mut cmd = crispy();
    cmd.args(["verify", &sink_url(sink), "--json"]).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().expect("verify");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json output ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn kinds(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn chunks(sink: &Path) -> Vec<PathBuf> {
    let mut all = files_with_ext(sink, "mp4").expect("list");
    all.sort();
    all
}

fn with_ext(p: &Path, ext: &str) -> PathBuf {
    p.with_extension(ext)
}

/// Deletes a chunk and its manifest.
fn remove_chunk(chunk: &Path) {
    std::fs::remove_file(chunk).expect("rm chunk");
    std::fs::remove_file(with_ext(chunk, "json")).expect("rm manifest");
}

/// A signed run of the 8 s clip; returns (tempdir, sink, public key path).
fn signed_run() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = input(dir.path());
    let (key, public) = keygen(dir.path(), "signing.key");
    let sink = dir.path().join("sink");
    run_file(
        &source,
        &sink,
        &["--signing-key", key.to_str().expect("utf8")],
        &[],
    );
    (dir, sink, public)
}

#[test]
fn a_signed_run_verifies_and_every_tampering_is_reported() {
    let (_dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    let source = &report["sources"][0];
    assert_eq!(source["chunks"], 8, "{report}");
    assert_eq!(source["key_ids"].as_array().map(Vec::len), Some(1));
    assert_eq!(source["chain_starts"], 1);

    let files = chunks(&sink);
    assert_eq!(files.len(), 8);

    // One byte of a chunk.
    let original = std::fs::read(&files[2]).expect("read");
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&files[2], &bytes).expect("write");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30));
    assert_eq!(kinds(&report), ["tampered-chunk"], "{report}");
    std::fs::write(&files[2], &original).expect("restore");

    // A manifest field.
    let manifest = with_ext(&files[3], "json");
    let original = std::fs::read_to_string(&manifest).expect("read");
    let edited = original.replacen("\"frame_count\": 25", "\"frame_count\": 24", 1);
    assert_ne!(edited, original, "the field is there to edit");
    std::fs::write(&manifest, &edited).expect("write");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30));
    // The edited manifest contradicts its chunk and fails its signature, and the next one's
    // link no longer matches.
    assert_eq!(
        kinds(&report),
        ["content-mismatch", "tampered-manifest", "broken-chain"],
        "{report}"
    );
    // The signature problem names the file that was edited: the manifest, not its chunk.
    let manifest_name = manifest.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        report["problems"][1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(manifest_name) && d.contains("bad signature")),
        "{report}"
    );
    std::fs::write(&manifest, &original).expect("restore");

    // Members added after signing (ones this version does not know, or an empty list the
    // writer leaves out) are covered by the signature too: the canonical form is the stored
    // object's, not what a reader keeps of it.
    for addition in [
        "\"note\": \"reviewed, nothing found\",",
        "\"dropped_sequences\": [],",
    ] {
        let edited = original.replacen('{', &format!("{{\n  {addition}"), 1);
        std::fs::write(&manifest, &edited).expect("write");
        let (code, report) = verify(&sink, &["--public-key", pk], &[]);
        assert_eq!(code, Some(30), "{addition}: {report}");
        assert_eq!(
            kinds(&report),
            ["tampered-manifest", "broken-chain"],
            "{addition}: {report}"
        );
    }
    std::fs::write(&manifest, &original).expect("restore");

    // Two chunks' names swapped.
    let (a, b) = (&files[4], &files[5]);
    let tmp = with_ext(a, "swap");
    std::fs::rename(a, &tmp).expect("mv");
    std::fs::rename(b, a).expect("mv");
    std::fs::rename(&tmp, b).expect("mv");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30));
    assert_eq!(
        kinds(&report),
        ["tampered-chunk", "tampered-chunk"],
        "{report}"
    );
    std::fs::rename(a, &tmp).expect("mv");
    std::fs::rename(b, a).expect("mv");
    std::fs::rename(&tmp, b).expect("mv");
    assert_eq!(verify(&sink, &["--public-key", pk], &[]).0, Some(0));

    // A middle chunk deleted with its manifest: a gap, and the next link points nowhere.
    remove_chunk(&files[6]);
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30));
    let k = kinds(&report);
    assert!(k.contains(&"gap".to_owned()), "{report}");
    assert!(k.contains(&"broken-chain".to_owned()), "{report}");
    assert!(k.contains(&"time-gap".to_owned()), "{report}");
    // The run goes on after the gap to its end: it is not unfinished.
    assert!(!k.contains(&"unfinished".to_owned()), "{report}");

    // A chunk without its manifest, and a manifest without its chunk.
    std::fs::remove_file(with_ext(&files[1], "json")).expect("rm");
    std::fs::remove_file(&files[0]).expect("rm");
    let (_, report) = verify(&sink, &["--public-key", pk], &[]);
    let k = kinds(&report);
    assert!(k.contains(&"orphan-chunk".to_owned()), "{report}");
    assert!(k.contains(&"orphan-manifest".to_owned()), "{report}");
    // The orphan chunk is named with its source and counted in its summary.
    let problems = report["problems"].as_array().expect("problems");
    let orphan = problems
        .iter()
        .find(|p| p["kind"] == "orphan-chunk")
        .expect("orphan");
    let source = &report["sources"][0];
    assert_eq!(orphan["source_id"], source["source_id"], "{report}");
    assert_eq!(
        source["problems"].as_u64(),
        Some(problems.len() as u64),
        "{report}"
    );
}

/// `--source-id` repeats: the report covers those sources and no other.
#[test]
fn verify_selects_several_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = input(dir.path());
    let sink = dir.path().join("sink");
    for id in ["cam-a", "cam-b", "cam-c"] {
        run_file(&source, &sink, &["--source-id", id], &[]);
    }
    let (code, report) = verify(
        &sink,
        &[
            "--allow-unsigned",
            "--source-id",
            "cam-a",
            "--source-id",
            "cam-c",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{report}");
    let ids: Vec<&str> = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["source_id"].as_str())
        .collect();
    assert_eq!(ids, ["cam-a", "cam-c"], "{report}");
}

/// Pointed at a source's folder instead of the sink's root, verify says so.
#[test]
fn verifying_a_folder_inside_the_sink_says_to_verify_its_root() {
    let (_dir, sink, public) = signed_run();
    let source_dir = std::fs::read_dir(&sink)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("the source's folder");
    let (code, report) = verify(
        &source_dir,
        &["--public-key", public.to_str().expect("utf8")],
        &[],
    );
    assert_eq!(code, Some(30), "{report}");
    let problems = report["problems"].as_array().expect("problems");
    assert!(
        problems.iter().any(|p| p["kind"] == "misplaced"
            && p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("verify that sink's root"))),
        "{report}"
    );
    // Only that: no chunk is claimed missing for having been looked up under the wrong root.
    assert!(
        problems.iter().all(|p| p["kind"] == "misplaced"),
        "{report}"
    );
}

/// A signing key others can read is used, with a warning (keygen writes 0600).
#[test]
fn a_world_readable_signing_key_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = input(dir.path());
    let (key, _) = keygen(dir.path(), "signing.key");
    let run = |sink: &str| {
        crispy()
            .args(["run", "--chunk", "1s", "--source"])
            .arg(&source)
            .args(["--sink", sink, "--signing-key", key.to_str().expect("utf8")])
            .output()
            .expect("run")
    };
    let out = run("memory://");
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run("memory://");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("can be read by other users") && stderr.contains("0644"),
        "{stderr}"
    );
}

/// Mistakes in what to verify are named before anything is read.
#[test]
fn verify_names_a_missing_sink_and_a_backwards_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-sink");
    let out = crispy()
        .args(["verify", "--allow-unsigned"])
        .arg(&missing)
        .output()
        .expect("verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(24), "{stderr}");
    assert!(stderr.contains("no-such-sink"), "{stderr}");
    assert!(!missing.exists(), "verify created the sink");

    let out = crispy()
        .args(["verify", "--allow-unsigned"])
        .arg(dir.path())
        .args([
            "--from",
            "2026-11-24T10:00:00Z",
            "--to",
            "2026-11-24T09:00:00Z",
        ])
        .output()
        .expect("verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is after --to"), "{stderr}");

    let out = crispy()
        .args(["probe", "rtsp://viewer:hunter2@127.0.0.1:9/cam"])
        .output()
        .expect("probe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not URLs") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

/// An auditor may only read the sink: verify writes nothing into it (it wrote and removed a
/// test file, which failed without write access).
#[test]
fn verify_writes_nothing_into_the_sink() {
    let (_dir, sink, public) = signed_run();
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("mtime")
    };
    let before = mtime(&sink);
    std::thread::sleep(Duration::from_millis(20));
    let (code, report) = verify(
        &sink,
        &["--public-key", public.to_str().expect("utf8")],
        &[],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(mtime(&sink), before, "the sink directory was written to");
}

/// `crispy verify … | head`: once the reader is gone the report ends quietly (no panic,
/// nothing on stderr), and the exit code still gives the verdict.
#[test]
fn a_closed_stdout_ends_the_report_but_keeps_the_verdict() {
    let (_dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    let verify_closed = |format: &[&str]| {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("crispy"));
        cmd.env_remove("RUST_LOG")
            .env_remove("CRISPY_LOG_FORMAT")
            .args(["verify", &sink_url(&sink), "--public-key", pk])
            .args(format);
        run_with_closed_stdout(&mut cmd).expect("verify")
    };
    for format in [&[][..], &["--json"]] {
        assert_eq!(
            verify_closed(format),
            (Some(0), String::new()),
            "{format:?}"
        );
    }
    std::fs::remove_file(with_ext(&chunks(&sink)[3], "json")).expect("rm");
    for format in [&[][..], &["--json"]] {
        let (code, stderr) = verify_closed(format);
        assert_eq!(code, Some(30), "{format:?}: {stderr}");
        assert!(
            stderr.contains("verification failed") && !stderr.contains("panicked"),
            "{format:?}: {stderr}"
        );
    }
}

#[test]
fn a_wrong_public_key_is_rejected() {
    let (dir, sink, _public) = signed_run();
    let (_, other) = keygen(dir.path(), "other.key");
    let (code, report) = verify(&sink, &["--public-key", other.to_str().expect("utf8")], &[]);
    assert_eq!(code, Some(30));
    assert!(
        kinds(&report).iter().all(|k| k == "unknown-key"),
        "{report}"
    );
    assert_eq!(kinds(&report).len(), 8);
    // Without any key, signed manifests cannot be trusted either.
    let (code, _) = verify(&sink, &[], &[]);
    assert_eq!(code, Some(30));
}

#[test]
fn a_time_window_checks_only_the_chunks_starting_in_it() {
    let (_dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    let files = chunks(&sink);
    let start = |i: usize| -> String {
        let m: Value =
            serde_json::from_slice(&std::fs::read(with_ext(&files[i], "json")).expect("read"))
                .expect("manifest");
        m["start_time"].as_str().expect("start_time").to_owned()
    };
    let window = ["--from", &start(2), "--to", &start(5)];
    // Outside the window, a year before: a manifest that is not one and a chunk without a
    // manifest. The whole sink reports both; the window sees neither.
    let source_dir = files[0]
        .ancestors()
        .nth(4)
        .expect("<source>/<y>/<m>/<d>/<chunk>")
        .to_path_buf();
    let old_day = source_dir.join("2025/01/02");
    std::fs::create_dir_all(&old_day).expect("mkdir");
    std::fs::write(old_day.join("20250102T000000.000Z-00000098.mp4"), b"orphan").expect("w");
    std::fs::write(
        old_day.join("20250102T000001.000Z-00000099.json"),
        b"not json",
    )
    .expect("w");

    let (code, report) = verify(&sink, &[&["--public-key", pk][..], &window].concat(), &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        report["sources"][0]["chunks"], 3,
        "chunks 2, 3 and 4: {report}"
    );

    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_ne!(code, Some(0), "{report}");
    let mut found = kinds(&report);
    found.sort();
    assert_eq!(found, ["orphan-chunk", "unreadable"], "{report}");
    assert_eq!(report["sources"][0]["chunks"], 8, "{report}");
}

#[test]
fn unsigned_runs_verify_only_with_allow_unsigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = input(dir.path());
    let sink = dir.path().join("sink");
    run_file(&source, &sink, &[], &[]);
    let (code, report) = verify(&sink, &[], &[]);
    assert_eq!(code, Some(30));
    assert!(kinds(&report).iter().all(|k| k == "unsigned"), "{report}");
    let (code, report) = verify(&sink, &["--allow-unsigned"], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sources"][0]["unsigned"], 8);

    // Without a signature only the chunk itself can contradict an edited manifest: the last
    // one (no later link) claims another frame count and size than its MP4 holds.
    let last = with_ext(chunks(&sink).last().expect("chunks"), "json");
    let original = std::fs::read_to_string(&last).expect("read");
    let edited = original
        .replacen("\"frame_count\": 25", "\"frame_count\": 26", 1)
        .replacen("\"width\": 320", "\"width\": 640", 1);
    assert_ne!(edited, original, "the fields are there to edit");
    std::fs::write(&last, &edited).expect("write");
    let (code, report) = verify(&sink, &["--allow-unsigned"], &[]);
    assert_eq!(code, Some(30));
    assert_eq!(kinds(&report), ["content-mismatch"], "{report}");
    let detail = report["problems"][0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("25 frames shown (manifest 26)") && detail.contains("manifest 640x"),
        "{detail}"
    );

    // A chunk that is not an MP4 at all, with a manifest that matches its bytes.
    let garbage = b"not an mp4";
    let chunk = chunks(&sink).last().expect("chunks").clone();
    std::fs::write(&chunk, garbage).expect("write");
    let value: Value = serde_json::from_str(&original).expect("json");
    let mut value = value;
    value["sha256"] = crispy_signer::sha256_hex(garbage).into();
    value["bytes"] = garbage.len().into();
    std::fs::write(&last, serde_json::to_vec(&value).expect("json")).expect("write");
    let (_, report) = verify(&sink, &["--allow-unsigned"], &[]);
    assert_eq!(kinds(&report), ["content-mismatch"], "{report}");
}

/// `--allow-unsigned` accepts chains unsigned from their start, not a signed chain with a
/// manifest whose signature was stripped: the chain's links do not cover the signature, so
/// the last manifest could otherwise be edited at will.
#[test]
fn allow_unsigned_does_not_accept_a_signature_stripped_from_a_signed_chain() {
    let (_dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    let manifests: Vec<PathBuf> = chunks(&sink).iter().map(|c| with_ext(c, "json")).collect();
    let strip = |path: &Path, edit: &dyn Fn(&mut Value)| {
        let mut value: Value =
            serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
        assert!(value["signature"].is_object(), "{value}");
        value["signature"] = Value::Null;
        edit(&mut value);
        std::fs::write(path, serde_json::to_vec_pretty(&value).expect("json")).expect("write");
    };
    // The last manifest, stripped and edited where neither its chunk nor a later link can
    // contradict it: how the run ended.
    let last = manifests.last().expect("manifests");
    strip(last, &|v| v["run_end"] = "stopped".into());
    let (code, report) = verify(&sink, &["--public-key", pk, "--allow-unsigned"], &[]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(kinds(&report), ["unsigned"], "{report}");
    let problem = &report["problems"][0];
    assert!(
        problem["object"].as_str().is_some_and(|o| last
            .to_string_lossy()
            .ends_with(&o.replace(".mp4", ".json"))),
        "{report}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the one before it in its chain")),
        "{report}"
    );
    // A middle one, only stripped: still reported, once (the next manifest is signed again).
    strip(&manifests[3], &|_| {});
    let (code, report) = verify(&sink, &["--public-key", pk, "--allow-unsigned"], &[]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(kinds(&report), ["unsigned", "unsigned"], "{report}");
    assert_eq!(report["sources"][0]["unsigned"], 2, "{report}");
}

/// An object whose name no object path can hold (S3 and GCS take any key) is reported,
/// and everything else is still checked: it used to stop verify with no report.
#[test]
fn an_odd_object_name_is_reported_and_everything_else_checked() {
    let (_dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    let day = chunks(&sink)[0].parent().expect("day folder").to_owned();
    std::fs::write(day.join("forged\nchunk ok.json"), b"{}").expect("odd file");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(kinds(&report), ["unreadable"], "{report}");
    let object = report["problems"][0]["object"].as_str().unwrap_or_default();
    assert!(object.ends_with("forged\\nchunk ok.json"), "{report}");
    assert_eq!(report["sources"][0]["chunks"], 8, "{report}");
    // The text report writes the name escaped: it cannot forge a line.
    let out = crispy()
        .args(["verify", &sink_url(&sink), "--public-key", pk])
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.lines().any(|l| l.starts_with("chunk ok")), "{text}");
    assert!(text.contains("forged\\nchunk ok.json"), "{text}");

    // Names object paths can hold but terminals act on (a C1 control, U+2028) are printed
    // escaped; a manifest naming its chunk with a path no object can have is reported, not
    // the end of the check.
    let last = with_ext(chunks(&sink).last().expect("chunks"), "json");
    std::fs::write(day.join("z\u{9b}31m\u{2028}.mp4"), b"x").expect("odd chunk");
    let text = std::fs::read_to_string(&last).expect("read");
    let mut value: Value = serde_json::from_str(&text).expect("json");
    value["object"] = "a//b\n.mp4".into();
    std::fs::write(&last, serde_json::to_vec(&value).expect("json")).expect("write");
    let out = crispy()
        .args(["verify", &sink_url(&sink), "--public-key", pk])
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(30), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(['\u{9b}', '\u{2028}']) && text.contains("z\\u{9b}31m\\u{2028}.mp4"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("PROBLEM unreadable") && l.contains("a//b\\n.mp4")),
        "{text}"
    );
}

/// A local sink holding links back up its own tree (a loop object_store's walk refuses) is
/// still checked: each folder once. It used to end verify with a "file system loop" error.
#[test]
fn links_back_up_a_local_sink_are_followed_once() {
    let (_dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    let day = chunks(&sink)[0].parent().expect("day folder").to_owned();
    std::os::unix::fs::symlink(".", day.join("again")).expect("link");
    std::os::unix::fs::symlink(&sink, day.join("root")).expect("link");
    std::os::unix::fs::symlink("../..", day.parent().expect("month").join("up")).expect("link");
    std::os::unix::fs::symlink(".", sink.join("top")).expect("link");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sources"][0]["chunks"], 8, "{report}");
    assert_eq!(
        report["sources"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    // A window outside the chunks' dates: the date folders are looked into, not listed.
    let (code, report) = verify(
        &sink,
        &["--public-key", pk, "--to", "2000-01-01T00:00:00Z"],
        &[],
    );
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(kinds(&report), ["empty"], "{report}");
}

/// A file run's first chunks deleted: the run starts at sequence 0, so that is a gap.
#[test]
fn a_file_run_missing_its_first_chunks_is_reported() {
    let (_dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    for f in &chunks(&sink)[..2] {
        remove_chunk(f);
    }
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(kinds(&report), ["gap"], "{report}");
    assert!(
        report["problems"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("2 chunk(s) missing: sequence 2 is the first")),
        "{report}"
    );
    // A window starting later does not hold them.
    let first: Value =
        serde_json::from_slice(&std::fs::read(with_ext(&chunks(&sink)[0], "json")).expect("read"))
            .expect("json");
    let from = first["start_time"].as_str().expect("start_time");
    let (code, report) = verify(&sink, &["--public-key", pk, "--from", from], &[]);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn hmac_signed_runs_verify_with_the_same_secret_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = input(dir.path());
    let sink = dir.path().join("sink");
    let secret = [("CRISPY_TEST_HMAC", "a-shared-secret-of-enough-length")];
    run_file(
        &source,
        &sink,
        &["--hmac-key-env", "CRISPY_TEST_HMAC"],
        &secret,
    );
    let (code, report) = verify(&sink, &["--hmac-key-env", "CRISPY_TEST_HMAC"], &secret);
    assert_eq!(code, Some(0), "{report}");
    let wrong = [("CRISPY_TEST_HMAC", "another-secret-of-enough-length!")];
    let (code, _) = verify(&sink, &["--hmac-key-env", "CRISPY_TEST_HMAC"], &wrong);
    assert_eq!(code, Some(30));
    // Secrets never reach the manifests.
    for m in files_with_ext(&sink, "json").expect("list") {
        let text = std::fs::read_to_string(m).expect("read");
        assert!(!text.contains("a-shared-secret"), "{text}");
    }
}

#[test]
fn an_unusable_key_is_a_clear_error_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_key = dir.path().join("notakey.pem");
    std::fs::write(&not_a_key, "hello").expect("write");
    let out = crispy()
        .args([
            "run",
            "--source",
            "testsrc",
            "--sink",
            "memory://",
            "--signing-key",
        ])
        .arg(&not_a_key)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notakey.pem") && err.contains("Ed25519"),
        "{err}"
    );
    // keygen never overwrites.
    let (key, _) = keygen(dir.path(), "k");
    let out = crispy()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert_eq!(out.status.code(), Some(4));
}

/// Runs a paced synthetic live source for `secs`, then SIGTERM.
fn live_run(sink: &Path, key: &Path, secs: u64) {
    live_run_with(sink, Some(key), secs)
}

/// [`live_run`], unsigned without a key.
fn live_run_with(sink: &Path, key: Option<&Path>, secs: u64) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("crispy"))
        .args([
            "-q",
            "run",
            "--source",
            "lavfi:testsrc2=size=160x120:rate=10",
            "--source-id",
            "cam",
            "--chunk",
            "1s",
            "--sink",
            &sink_url(sink),
        ])
        .args(
            key.map(|k| [std::ffi::OsStr::new("--signing-key"), k.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .env_remove("CRISPY_SIGNING_KEY")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("crispy starts");
    std::thread::sleep(Duration::from_secs(secs));
    signal(child.id(), "TERM").expect("kill -TERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_restarted_live_source_continues_its_chain_across_a_key_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (k1, p1) = keygen(dir.path(), "k1");
    let (k2, p2) = keygen(dir.path(), "k2");
    let sink = dir.path().join("sink");
    live_run(&sink, &k1, 3);
    let first = chunks(&sink).len();
    assert!(first >= 2, "{first} chunks");
    live_run(&sink, &k2, 3);
    let (p1, p2) = (p1.to_str().expect("utf8"), p2.to_str().expect("utf8"));
    let (code, report) = verify(&sink, &["--public-key", p1, "--public-key", p2], &[]);
    assert_eq!(code, Some(0), "{report}");
    let s = &report["sources"][0];
    assert_eq!(s["key_ids"].as_array().map(Vec::len), Some(2), "{report}");
    assert_eq!(
        s["chain_starts"], 1,
        "one chain across the restart: {report}"
    );
    assert_eq!(s["discontinuities"], 1, "the restart is recorded: {report}");
    assert_eq!(s["sequences"][0], 0);
    assert_eq!(
        s["sequences"][1].as_u64(),
        Some(s["chunks"].as_u64().expect("n") - 1),
        "sequence continues: {report}"
    );
    // Only one key trusted: the other run's manifests are reported.
    let (code, _) = verify(&sink, &["--public-key", p1], &[]);
    assert_eq!(code, Some(30));
    // Each run's last chunk says it was stopped.
    let ends = run_ends(&sink);
    let stopped: Vec<usize> = (0..ends.len()).filter(|&i| ends[i] == "stopped").collect();
    assert_eq!(stopped, [first - 1, ends.len() - 1], "{ends:?}");
    assert_eq!(report["sources"][0]["run_end"], "stopped", "{report}");
    // A live source's last chunks deleted: nothing tells them from a camera still recording.
    let files = chunks(&sink);
    let last = files.last().expect("chunks");
    remove_chunk(last);
    let (code, report) = verify(&sink, &["--public-key", p1, "--public-key", p2], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sources"][0]["run_end"], Value::Null, "{report}");
}

/// Every manifest's `run_end`, in object order.
fn run_ends(sink: &Path) -> Vec<Value> {
    chunks(sink)
        .iter()
        .map(|c| {
            let m: Value =
                serde_json::from_slice(&std::fs::read(with_ext(c, "json")).expect("read"))
                    .expect("manifest");
            m["run_end"].clone()
        })
        .collect()
}

#[test]
fn a_file_run_marks_its_end_and_verify_reports_a_lost_tail() {
    let (dir, sink, public) = signed_run();
    let pk = public.to_str().expect("utf8");
    let ends = run_ends(&sink);
    assert_eq!(ends.len(), 8);
    assert_eq!(ends[7], "end-of-input", "{ends:?}");
    assert!(ends[..7].iter().all(Value::is_null), "{ends:?}");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sources"][0]["run_end"], "end-of-input", "{report}");

    // The last chunk deleted with its manifest: the chain, sequences and times of what is
    // left are whole, and only the missing end tells.
    let files = chunks(&sink);
    let (last, before) = (&files[7], &files[6]);
    remove_chunk(last);
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(kinds(&report), ["unfinished"], "{report}");
    let object = report["problems"][0]["object"].as_str().expect("object");
    assert!(before.ends_with(object), "{object} is {}", before.display());

    // A window that ends where the chunks left end cannot hold the next one; one that ends
    // later should.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(with_ext(before, "json")).expect("read"))
            .expect("manifest");
    let end = manifest["end_time"].as_str().expect("end_time");
    let (code, report) = verify(&sink, &["--public-key", pk, "--to", end], &[]);
    assert_eq!(code, Some(0), "{report}");
    let later = "2100-01-01T00:00:00Z";
    let (code, report) = verify(&sink, &["--public-key", pk, "--to", later], &[]);
    assert_eq!(kinds(&report), ["unfinished"], "{report}");
    assert_eq!(code, Some(30));

    // Running the same file again stores what is missing.
    let key = dir.path().join("signing.key");
    run_file(
        &dir.path().join("clip.mp4"),
        &sink,
        &["--signing-key", key.to_str().expect("utf8")],
        &[],
    );
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(0), "{report}");
}

/// Two different files run under one id whose times overlap: their chunks interleave in
/// the sink, and each file's chain is followed on its own (they used to be reported as
/// broken chains, time gaps and reordered sequences). A lost chunk of either is still a gap,
/// and a lost tail still unfinished.
#[test]
fn two_files_under_one_id_with_overlapping_times_verify_chain_by_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "signing.key");
    let pk = public.to_str().expect("utf8");
    let sink = dir.path().join("sink");
    for (name, graph, created) in [
        ("a.mp4", "testsrc2", "2026-01-01T00:00:00.000000Z"),
        ("b.mp4", "mandelbrot", "2026-01-01T00:00:02.000000Z"),
    ] {
        let path = dir.path().join(name);
        recording(&path, graph, created);
        run_file(
            &path,
            &sink,
            &[
                "--source-id",
                "door",
                "--signing-key",
                key.to_str().expect("utf8"),
            ],
            &[],
        );
    }
    let files = chunks(&sink);
    assert_eq!(files.len(), 8, "{files:?}");
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sources"][0]["chunks"], 8, "{report}");
    assert_eq!(report["sources"][0]["chain_starts"], 2, "{report}");
    // A window starting inside both runs: each chain's first chunk in it links to one
    // before the window, whatever came between in path order.
    for from in ["2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"] {
        let (code, report) = verify(&sink, &["--public-key", pk, "--from", from], &[]);
        assert_eq!(code, Some(0), "--from {from}: {report}");
    }

    // (MP4 keeps creation times in whole seconds.) In path order: a0 a1 b0 a2 b1 a3 b2 b3.
    // b's second chunk lost: a gap in b's chain only.
    remove_chunk(&files[4]);
    let (code, report) = verify(&sink, &["--public-key", pk], &[]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(
        kinds(&report),
        ["gap", "broken-chain", "time-gap"],
        "{report}"
    );
    assert!(
        report["problems"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("sequence 2 follows 0")),
        "{report}"
    );
    // The same from inside the window (b0 is its first chunk, b1 a chunk later).
    let (_, report) = verify(
        &sink,
        &["--public-key", pk, "--from", "2026-01-01T00:00:02Z"],
        &[],
    );
    assert_eq!(
        kinds(&report),
        ["gap", "broken-chain", "time-gap"],
        "{report}"
    );

    // a's last chunk lost: a's run is unfinished.
    remove_chunk(&files[5]);
    let (_, report) = verify(&sink, &["--public-key", pk], &[]);
    let mut found = kinds(&report);
    found.sort();
    assert_eq!(
        found,
        ["broken-chain", "gap", "time-gap", "unfinished"],
        "{report}"
    );
}

/// A camera run under the id of a file run continues its chain; the file run whose tail
/// was lost is still unfinished.
#[test]
fn a_live_run_after_an_unfinished_file_run_does_not_hide_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = input(dir.path());
    let sink = dir.path().join("sink");
    run_file(&clip, &sink, &["--source-id", "cam"], &[]);
    let files = chunks(&sink);
    let last = files.last().expect("chunks");
    remove_chunk(last);
    live_run_with(&sink, None, 3);
    assert!(
        chunks(&sink).len() > files.len(),
        "the live run stored chunks"
    );
    let (code, report) = verify(&sink, &["--allow-unsigned"], &[]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(kinds(&report), ["unfinished"], "{report}");
}

/// Manifests of a version that wrote no `run_end` are not judged by it: their last chunk
/// may well be the file's last.
#[test]
fn manifests_without_run_end_are_not_reported_unfinished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = input(dir.path());
    let sink = dir.path().join("sink");
    run_file(&source, &sink, &[], &[]);
    // Rewritten as an older version wrote them: no member, chain links over the old text.
    let mut prev: Option<String> = None;
    let files = chunks(&sink);
    for chunk in &files {
        let path = with_ext(chunk, "json");
        let mut m: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("manifest");
        let object = m.as_object_mut().expect("object");
        assert!(object.remove("run_end").is_some());
        if let Some(link) = &prev {
            object.insert("prev_sha256".into(), Value::from(link.as_str()));
        }
        let text = serde_json::to_vec_pretty(&m).expect("json");
        let canonical = crispy_signer::canonical_bytes_of_json(&text).expect("canonical");
        prev = Some(crispy_signer::sha256_hex(&canonical));
        std::fs::write(&path, text).expect("write");
    }
    let (code, report) = verify(&sink, &["--allow-unsigned"], &[]);
    assert_eq!(code, Some(0), "{report}");
    let last = files.last().expect("chunks");
    remove_chunk(last);
    let (code, report) = verify(&sink, &["--allow-unsigned"], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sources"][0]["run_end"], Value::Null, "{report}");
}

/// A restarted live source links its chain to the last manifest as stored, even when
/// another version of crispy wrote it with members this one does not know.
#[test]
fn a_restart_links_to_the_stored_text_of_the_last_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = dir.path().join("sink");
    live_run_with(&sink, None, 3);
    let files = chunks(&sink);
    let newest = with_ext(files.last().expect("chunks"), "json");
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(&newest).expect("read")).expect("manifest");
    m.as_object_mut()
        .expect("object")
        .insert("written_by_a_later_version".into(), Value::from(true));
    std::fs::write(&newest, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
    live_run_with(&sink, None, 3);
    assert!(
        chunks(&sink).len() > files.len(),
        "the second run stored chunks"
    );
    let (code, report) = verify(&sink, &["--allow-unsigned"], &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["sources"][0]["chain_starts"], 1, "{report}");
}

/// Copies every chunk and manifest under `from` into `to`; their paths, sorted.
fn merge_into(from: &Path, to: &Path) -> Vec<PathBuf> {
    let mut merged = Vec::new();
    for ext in ["mp4", "json"] {
        for file in files_with_ext(from, ext).expect("list") {
            let rel = file.strip_prefix(from).expect("inside");
            let dest = to.join(rel);
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&file, &dest).expect("copy");
            merged.push(rel.to_owned());
        }
    }
    merged.sort();
    merged
}

/// A live chain starting again is judged against the source's last live chunk, even when
/// a file run's chunks under the same id lie between them.
#[test]
fn a_live_restart_is_reported_across_a_file_run_between() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "k");
    let key_arg = key.to_str().expect("utf8");
    let sink = dir.path().join("sink");
    live_run(&sink, &key, 3);
    // A recording of the camera dated just after the first live run, stored under its id.
    let created = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let clip = dir.path().join("recording.mp4");
    recording(&clip, "testsrc2", &created);
    let files = dir.path().join("files");
    run_file(
        &clip,
        &files,
        &["--source-id", "cam", "--signing-key", key_arg],
        &[],
    );
    merge_into(&files, &sink);
    // A second live run that could not see the first: a chain of its own from sequence 0,
    // starting after the recording's first chunk.
    let other = dir.path().join("other");
    live_run(&other, &key, 3);
    let merged = merge_into(&other, &sink);
    let all = chunks(&sink);
    let position = |rel: &Path| all.iter().position(|c| c.ends_with(rel));
    let first_of_second = merged
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "mp4"))
        .expect("the second run stored chunks");
    let first_file = files_with_ext(&files, "mp4")
        .expect("list")
        .into_iter()
        .map(|f| f.strip_prefix(&files).expect("inside").to_owned())
        .min()
        .expect("the file run stored chunks");
    assert!(
        position(&first_file) < position(first_of_second),
        "a file chunk lies between the live runs: {all:?}"
    );
    let public = public.to_str().expect("utf8");
    let (code, report) = verify(&sink, &["--public-key", public], &[]);
    assert_eq!(code, Some(30), "{report:#}");
    assert_eq!(kinds(&report), ["chain-restart"], "{report:#}");
    assert_eq!(
        report["problems"][0]["object"].as_str(),
        first_of_second.to_str(),
        "{report:#}"
    );
}

#[test]
fn a_live_chain_that_starts_again_after_earlier_chunks_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "k");
    let key_arg = key.to_str().expect("utf8");
    // A recording of the same camera, stored under its id and dated before its live chunks:
    // a file's chain is its own, so the live chain starting after it is no restart.
    let clip = input(dir.path());
    let files = dir.path().join("files");
    run_file(
        &clip,
        &files,
        &["--source-id", "cam", "--signing-key", key_arg],
        &[],
    );
    let sink = dir.path().join("sink");
    let other = dir.path().join("other");
    live_run(&sink, &key, 3);
    merge_into(&files, &sink);
    // A second run that could not see the first one's chunks: a chain of its own from
    // sequence 0. Its objects, merged into the first sink, follow the first run's by name.
    live_run(&other, &key, 3);
    let merged = merge_into(&other, &sink);
    let first_of_second = merged
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "mp4"))
        .expect("the second run stored chunks");
    let public = public.to_str().expect("utf8");
    let (code, report) = verify(&sink, &["--public-key", public], &[]);
    assert_eq!(code, Some(30), "{report:#}");
    assert_eq!(kinds(&report), ["chain-restart"], "{report:#}");
    let problem = &report["problems"][0];
    assert_eq!(
        problem["object"].as_str(),
        first_of_second.to_str(),
        "{report:#}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("a restarted live source continues its chain")),
        "{report:#}"
    );
    assert_eq!(report["sources"][0]["chain_starts"], 3, "{report:#}");
    // Each run alone is one clean chain.
    let (code, report) = verify(&other, &["--public-key", public], &[]);
    assert_eq!(code, Some(0), "{report:#}");
}

/// A file run again with another signing key, or with one over chunks stored unsigned (or
/// without one over signed chunks), finds each stored manifest signed otherwise. It used to
/// report the chunks as already present and succeed, signing nothing; it now stops at the
/// first chunk (exit 22) and leaves every manifest as it was.
#[test]
fn a_rerun_signed_otherwise_stops_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = input(dir.path());
    let (k1, p1) = keygen(dir.path(), "k1");
    let (k2, _) = keygen(dir.path(), "k2");
    let manifests = |sink: &Path| -> Vec<Vec<u8>> {
        chunks(sink)
            .iter()
            .map(|c| std::fs::read(with_ext(c, "json")).expect("read"))
            .collect()
    };
    let rerun = |sink: &Path, extra: &[&std::ffi::OsStr]| -> (Option<i32>, String) {
        let out = crispy()
            .args(["run", "--chunk", "1s", "--source"])
            .arg(&src)
            .args(["--sink", &sink_url(sink)])
            .args(extra)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    fn with(k: &Path) -> [&std::ffi::OsStr; 2] {
        [std::ffi::OsStr::new("--signing-key"), k.as_os_str()]
    }

    // Stored unsigned, run again signed.
    let unsigned = dir.path().join("unsigned");
    run_file(&src, &unsigned, &[], &[]);
    let before = manifests(&unsigned);
    assert_eq!(before.len(), 8);
    let (code, err) = rerun(&unsigned, &with(&k1));
    assert_eq!(code, Some(22), "{err}");
    assert!(
        err.contains("already exists for the same chunk but is unsigned")
            && err.contains("this run's is signed with ed25519 key"),
        "{err}"
    );
    assert_eq!(manifests(&unsigned), before, "nothing rewritten");
    // Run again as it was stored: complete, nothing to do.
    let (code, err) = rerun(&unsigned, &[]);
    assert_eq!(code, Some(0), "{err}");

    // Stored signed with k1: k1 again is fine, k2 or no key is not.
    let signed = dir.path().join("signed");
    let k1s = k1.to_str().expect("utf8");
    run_file(&src, &signed, &["--signing-key", k1s], &[]);
    let before = manifests(&signed);
    let (code, err) = rerun(&signed, &with(&k1));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = rerun(&signed, &with(&k2));
    assert_eq!(code, Some(22), "{err}");
    assert!(err.contains("but is signed with ed25519 key"), "{err}");
    let (code, err) = rerun(&signed, &[]);
    assert_eq!(code, Some(22), "{err}");
    assert!(err.contains("this run's is unsigned"), "{err}");
    assert_eq!(manifests(&signed), before, "nothing rewritten");
    let (code, report) = verify(&signed, &["--public-key", p1.to_str().expect("utf8")], &[]);
    assert_eq!(code, Some(0), "{report}");
}
