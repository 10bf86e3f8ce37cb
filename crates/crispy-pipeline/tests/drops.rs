//! A live source's dropped chunks outlive the run that dropped them: when a run ends before
//! any manifest records its last drops, the spool keeps them, and the source's next run
//! records them in its first manifest and numbers its chunks after them, so `verify`
//! reports the loss as dropped chunks, never as sequence numbers used twice or as a gap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crispy_core::ChunkMetadata;
use crispy_pipeline::verify::{ProblemKind, VerifyOptions, verify};
use crispy_pipeline::{
    NoopObserver, PipelineError, PipelineOptions, RunSummary, Shutdown, SourceJob, SourceSpec,
    SpoolOptions, run_sources,
};
use crispy_sink::ObjectStoreSink;
use crispy_source::SyntheticConfig;

fn live_job(id: &str) -> SourceJob {
    let mut synthetic = SyntheticConfig::graph("testsrc2=size=640x360:rate=25");
    synthetic.realtime = true;
    SourceJob {
        source_id: id.parse().expect("id"),
        spec: SourceSpec::Synthetic(synthetic),
        chunk: "1s".parse().expect("chunk"),
        prefix: None,
    }
}

fn options(spool: &Path, sink_key: &str, max_bytes: u64) -> PipelineOptions {
    PipelineOptions {
        spool: SpoolOptions {
            dir: Some(spool.to_path_buf()),
            sink_key: sink_key.to_owned(),
            max_bytes,
        },
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(30),
        ..PipelineOptions::default()
    }
}

/// Runs `job` into `sink` for `time`, then shuts it down.
async fn run_for(
    job: SourceJob,
    sink: Arc<ObjectStoreSink>,
    options: PipelineOptions,
    time: Duration,
) -> Result<Vec<RunSummary>, PipelineError> {
    let shutdown = Shutdown::new();
    let run = tokio::spawn(run_sources(
        vec![job],
        sink,
        options,
        shutdown.clone(),
        Arc::new(NoopObserver),
    ));
    tokio::time::sleep(time).await;
    shutdown.trigger();
    run.await.expect("join")
}

/// `crispy verify --allow-unsigned` of `sink`.
async fn check(sink: &ObjectStoreSink) -> crispy_pipeline::verify::VerifyReport {
    let options = VerifyOptions {
        allow_unsigned: true,
        ..VerifyOptions::default()
    };
    verify(sink, &options).await.expect("verify")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The manifests stored under `dir`, by sequence.
fn manifests(dir: &Path) -> Vec<ChunkMetadata> {
    let mut all: Vec<ChunkMetadata> = files(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read(p).expect("read manifest");
            serde_json::from_slice(&text).expect("manifest")
        })
        .collect();
    all.sort_by_key(|m| m.sequence);
    all
}

fn kept_record(spool: &Path) -> Option<PathBuf> {
    files(spool)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "dropped.json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_of_a_run_that_stored_nothing_are_recorded_by_the_next_run() {
    let out = tempfile::tempdir().expect("out");
    let spool = tempfile::tempdir().expect("spool");
    let url = format!("file://{}", out.path().display());
    let sink = Arc::new(ObjectStoreSink::from_url(&url).expect("sink"));

    // Every chunk is larger than the spool may hold: each one is dropped, none stored.
    let first = run_for(
        live_job("gate"),
        Arc::clone(&sink),
        options(spool.path(), &url, 1000),
        Duration::from_millis(3500),
    )
    .await
    .expect("first run");
    let dropped = first[0].dropped;
    assert!(dropped >= 2, "dropped {dropped}");
    assert!(manifests(out.path()).is_empty());
    assert!(
        kept_record(spool.path()).is_some(),
        "the drops were not kept"
    );

    let second = run_for(
        live_job("gate"),
        Arc::clone(&sink),
        options(spool.path(), &url, 256 << 20),
        Duration::from_millis(2500),
    )
    .await
    .expect("second run");
    assert!(second[0].chunks >= 1);
    let stored = manifests(out.path());
    let head = &stored[0];
    assert_eq!(head.sequence, dropped, "numbered after the drops");
    assert_eq!(head.dropped_sequences, (0..dropped).collect::<Vec<_>>());
    assert!(head.prev_sha256.is_none());
    assert!(
        stored
            .iter()
            .skip(1)
            .all(|m| m.dropped_sequences.is_empty()),
        "recorded once"
    );
    assert!(
        kept_record(spool.path()).is_none(),
        "the record stays behind"
    );

    let report = check(&sink).await;
    let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProblemKind::Dropped], "{:?}", report.problems);
    let detail = &report.problems[0].detail;
    assert!(
        detail.contains(&format!("sequences 0..={}", dropped - 1)),
        "{detail}"
    );

    // The same chain start without the record: a gap, not a drop.
    let head_path = files(out.path())
        .into_iter()
        .find(|p| {
            p.extension().is_some_and(|e| e == "json")
                && std::fs::read(p)
                    .ok()
                    .and_then(|t| serde_json::from_slice::<ChunkMetadata>(&t).ok())
                    .is_some_and(|m| m.sequence == dropped)
        })
        .expect("the head manifest");
    let mut text: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&head_path).expect("read")).expect("json");
    text["dropped_sequences"] = serde_json::json!((1..dropped).collect::<Vec<_>>());
    std::fs::write(&head_path, text.to_string()).expect("write");
    let report = check(&sink).await;
    let gap = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::Gap)
        .unwrap_or_else(|| panic!("{:?}", report.problems));
    assert!(gap.detail.contains("without a link"), "{}", gap.detail);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.kind != ProblemKind::Dropped),
        "{:?}",
        report.problems
    );
}

/// Two seconds of black (chunks of a few KiB, stored), then a test pattern whose chunks do
/// not fit in the spool (dropped).
fn black_then_busy(id: &str) -> SourceJob {
    let mut synthetic = SyntheticConfig::graph(
        "color=c=black:size=640x360:rate=25:duration=2[a];\
         testsrc2=size=640x360:rate=25[b];[a][b]concat",
    );
    synthetic.realtime = true;
    SourceJob {
        spec: SourceSpec::Synthetic(synthetic),
        ..live_job(id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_after_the_last_stored_chunk_are_recorded_after_the_restart() {
    let out = tempfile::tempdir().expect("out");
    let spool = tempfile::tempdir().expect("spool");
    let url = format!("file://{}", out.path().display());
    let sink = Arc::new(ObjectStoreSink::from_url(&url).expect("sink"));

    let first = run_for(
        black_then_busy("yard"),
        Arc::clone(&sink),
        options(spool.path(), &url, 8 << 10),
        Duration::from_millis(5000),
    )
    .await
    .expect("first run");
    let before = manifests(out.path());
    assert!(before.len() >= 2, "the black chunks are stored: {before:?}");
    assert!(before.iter().all(|m| m.dropped_sequences.is_empty()));
    assert!(first[0].dropped >= 2, "dropped {}", first[0].dropped);
    let last = before.last().expect("stored").sequence;
    let dropped: Vec<u64> = (last + 1..last + 1 + first[0].dropped).collect();
    assert!(
        kept_record(spool.path()).is_some(),
        "the drops were not kept"
    );

    let second = run_for(
        live_job("yard"),
        Arc::clone(&sink),
        options(spool.path(), &url, 256 << 20),
        Duration::from_millis(2500),
    )
    .await
    .expect("second run");
    assert!(second[0].chunks >= 1);
    let stored = manifests(out.path());
    let restart = &stored[before.len()];
    assert!(restart.discontinuity);
    assert_eq!(restart.dropped_sequences, dropped, "{restart:?}");
    assert_eq!(restart.sequence, last + 1 + first[0].dropped);
    assert!(
        kept_record(spool.path()).is_none(),
        "the record stays behind"
    );

    let report = check(&sink).await;
    let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProblemKind::Dropped], "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_older_than_the_sinks_last_chunk_is_not_used() {
    let out = tempfile::tempdir().expect("out");
    let (spool, other_spool) = (
        tempfile::tempdir().expect("spool"),
        tempfile::tempdir().expect("spool"),
    );
    let url = format!("file://{}", out.path().display());
    let sink = Arc::new(ObjectStoreSink::from_url(&url).expect("sink"));
    run_for(
        black_then_busy("dock"),
        Arc::clone(&sink),
        options(spool.path(), &url, 8 << 10),
        Duration::from_millis(5000),
    )
    .await
    .expect("first run");
    assert!(
        kept_record(spool.path()).is_some(),
        "the drops were not kept"
    );

    // Another run, with its own spool, stores newer chunks of the source meanwhile.
    run_for(
        live_job("dock"),
        Arc::clone(&sink),
        options(other_spool.path(), &url, 256 << 20),
        Duration::from_millis(2500),
    )
    .await
    .expect("second run");
    let before = manifests(out.path()).len();

    // The first spool's record predates those chunks: recording it now would call stored
    // sequence numbers dropped.
    run_for(
        live_job("dock"),
        Arc::clone(&sink),
        options(spool.path(), &url, 256 << 20),
        Duration::from_millis(2500),
    )
    .await
    .expect("third run");
    let stored = manifests(out.path());
    let restart = &stored[before];
    assert!(restart.discontinuity);
    assert!(restart.dropped_sequences.is_empty(), "{restart:?}");
    assert_eq!(restart.sequence, stored[before - 1].sequence + 1);
    assert!(
        kept_record(spool.path()).is_none(),
        "the stale record stays"
    );
}
