//! Delivery under faults, against real stores: a live source into S3 (moto) through a TCP
//! proxy that cuts the network for 60 s; a live source into a throttled store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crispy_core::ChunkMetadata;
use crispy_pipeline::verify::{VerifyOptions, verify};
use crispy_pipeline::{
    ChunkReport, Observer, PipelineError, PipelineOptions, Shutdown, SourceJob, SourceSpec,
    SpoolOptions, UploadStage, run_sources,
};
use crispy_sink::{Backend, ObjectStoreSink, SinkOptions, manifest_path_for};
use crispy_source::SyntheticConfig;
use crispy_testkit::emulators::{Emulator, Kind, TcpProxy};

#[derive(Default)]
struct Recorder(Mutex<Vec<ChunkReport>>, Mutex<Vec<UploadStage>>);

impl Observer for Recorder {
    fn chunk_stored(&self, r: &ChunkReport) {
        self.0.lock().expect("lock").push(r.clone());
    }
    fn upload_stage(&self, s: &UploadStage) {
        self.1.lock().expect("lock").push(*s);
    }
}

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

fn options(spool: &std::path::Path, sink_key: &str) -> PipelineOptions {
    PipelineOptions {
        spool: SpoolOptions {
            dir: Some(spool.to_path_buf()),
            sink_key: sink_key.to_owned(),
            max_bytes: 256 << 20,
        },
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(60),
        ..PipelineOptions::default()
    }
}

fn quick_retries() -> Option<object_store::RetryConfig> {
    Some(object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            base: 2.0,
        },
        max_retries: 1,
        retry_timeout: Duration::from_secs(2),
    })
}

/// A file read to its end while the store is dead: a shutdown then ends after the drain
/// timeout, leaving the chunks in the spool. (It waited forever: with the readers done, only
/// finished uploads woke the upload stage, and uploads to a dead store never finish.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_into_a_dead_store_ends_at_its_timeout() {
    let port = crispy_testkit::free_port().expect("port");
    let options_of = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let sink_options = SinkOptions {
        options: options_of(&[
            ("aws_endpoint", &endpoint),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]),
        retry: quick_retries(),
        ..SinkOptions::default()
    };
    let url = "s3://footage/dead";
    let sink = Arc::new(ObjectStoreSink::from_url_opts(url, &sink_options).expect("sink"));
    let spool = tempfile::tempdir().expect("spool");
    let mut synthetic = SyntheticConfig::graph("testsrc2=size=160x120:rate=25:duration=2");
    synthetic.realtime = false;
    let job = SourceJob {
        spec: SourceSpec::Synthetic(synthetic),
        ..live_job("file")
    };
    let mut options = options(spool.path(), url);
    options.drain_timeout = Duration::from_secs(2);
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    let run = tokio::spawn(run_sources(
        vec![job],
        sink,
        options,
        shutdown.clone(),
        recorder.clone(),
    ));
    // Both chunks handed to the upload stage: the source is read to its end.
    let t0 = Instant::now();
    while !recorder
        .1
        .lock()
        .expect("lock")
        .iter()
        .any(|s| s.queued + s.in_flight == 2)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the source was not read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    shutdown.trigger();
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the shutdown never ended")
        .expect("join");
    match result {
        Err(PipelineError::DrainTimeout { pending, .. }) => assert_eq!(pending, 2),
        other => panic!("expected a drain timeout, got {other:?}"),
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "a 2 s drain took {:?}",
        stopped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_second_outage_loses_nothing_and_duplicates_nothing() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    moto.create_bucket("footage").expect("bucket");
    let proxy = TcpProxy::start(moto.port()).expect("proxy");
    let sink_options = SinkOptions {
        options: moto.sink_options_via(&proxy.endpoint()),
        retry: quick_retries(),
        ..SinkOptions::default()
    };
    let url = "s3://footage/outage";
    let sink = Arc::new(ObjectStoreSink::from_url_opts(url, &sink_options).expect("sink"));
    let spool = tempfile::tempdir().expect("spool");
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    let run = tokio::spawn(run_sources(
        vec![live_job("gate")],
        Arc::clone(&sink),
        options(spool.path(), url),
        shutdown.clone(),
        recorder.clone(),
    ));

    let stored = |r: &Recorder| r.0.lock().expect("lock").len();
    let t0 = Instant::now();
    while stored(&recorder) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no chunks before the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.cut();
    let during = stored(&recorder);
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Nothing got through, while the camera kept being read into the spool.
    assert!(
        stored(&recorder) <= during + 2,
        "uploads went through a cut network"
    );
    proxy.restore();
    let resumed = Instant::now();
    while stored(&recorder) < during + 60 {
        assert!(
            resumed.elapsed() < Duration::from_secs(60),
            "the spooled chunks did not go out after the outage: {} stored",
            stored(&recorder)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.trigger();
    let summaries = run.await.expect("join").expect("run");
    let summary = &summaries[0];
    assert_eq!(summary.dropped, 0);

    // Read back directly from the emulator, not through the proxy.
    let direct = SinkOptions {
        options: moto.sink_options(),
        ..SinkOptions::default()
    };
    let reader = ObjectStoreSink::from_url_opts(url, &direct).expect("reader");
    let objects = reader.list("").await.expect("list");
    let chunks: Vec<&(String, u64)> = objects
        .iter()
        .filter(|(p, _)| p.ends_with(".mp4"))
        .collect();
    assert_eq!(
        chunks.len() as u64,
        summary.chunks,
        "every chunk exactly once"
    );
    assert_eq!(
        objects.len(),
        chunks.len() * 2,
        "a manifest beside every chunk"
    );
    let mut sequences = Vec::new();
    for (path, size) in chunks {
        let manifest = reader
            .get(&manifest_path_for(path))
            .await
            .expect("get")
            .expect("manifest present");
        let m: ChunkMetadata = serde_json::from_slice(&manifest).expect("manifest json");
        let bytes = reader.get(path).await.expect("get").expect("chunk");
        assert_eq!(crispy_signer::sha256_hex(&bytes), m.sha256, "{path}");
        assert_eq!(*size, m.bytes);
        sequences.push(m.sequence);
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (0..summary.chunks).collect::<Vec<_>>());

    // `crispy verify`'s checks on the S3 sink: hashes, chain, gaps, timing.
    let report = verify(
        &reader,
        &VerifyOptions {
            allow_unsigned: true,
            ..VerifyOptions::default()
        },
    )
    .await
    .expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Nothing left behind in the spool.
    let left: Vec<_> = walk(spool.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mp4" || e == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "last.json"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_sink_never_stalls_the_camera() {
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    let store = ThrottledStore::new(
        object_store::memory::InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: Duration::from_millis(1500),
            ..ThrottleConfig::default()
        },
    );
    let sink = Arc::new(
        ObjectStoreSink::new(Arc::new(store), "slow", "memory://slow", Backend::Memory)
            .expect("sink"),
    );
    let spool = tempfile::tempdir().expect("spool");
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    let mut opts = options(spool.path(), "memory://slow");
    opts.max_in_flight = 1;
    opts.drain_timeout = Duration::from_secs(1);
    let run = tokio::spawn(run_sources(
        vec![live_job("lobby")],
        Arc::clone(&sink),
        opts,
        shutdown.clone(),
        recorder.clone(),
    ));
    let spooled = |dir: &std::path::Path| {
        walk(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter(|p| p.file_name().is_some_and(|n| n != "last.json"))
            .count()
    };
    tokio::time::sleep(Duration::from_secs(12)).await;
    let stored = recorder.0.lock().expect("lock").len();
    let waiting = spooled(spool.path());
    shutdown.trigger();
    let result = run.await.expect("join");
    // Each chunk takes two 1.5 s puts: about 4 are stored in 12 s, while the camera was
    // read at its own pace (about 11 one-second chunks) and the rest waits in the spool.
    assert!(stored <= 5, "stored {stored}");
    assert!(
        stored + waiting >= 9,
        "the camera stalled: {stored} stored + {waiting} spooled after 12 s"
    );
    // Memory stays flat: while the queue grew, the stage held the payloads of the upload in
    // flight and the one next in line, never the queue's.
    let stages = recorder.1.lock().expect("lock").clone();
    let longest = stages.iter().map(|s| s.queued).max().unwrap_or(0);
    assert!(longest >= 4, "the queue never grew: {longest}");
    let largest_chunk = walk(spool.path())
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
        .max(
            recorder
                .0
                .lock()
                .expect("lock")
                .iter()
                .map(|r| r.metadata.bytes)
                .max()
                .unwrap_or(0),
        );
    let held = stages.iter().map(|s| s.bytes_in_memory).max().unwrap_or(0);
    assert!(
        held <= 2 * (largest_chunk + 4096),
        "held {held} bytes in memory with chunks of at most {largest_chunk} bytes"
    );
    // The drain timeout leaves the rest in the spool for the next start, and says so.
    let err = result.expect_err("drain timeout");
    assert!(err.to_string().contains("stay in the spool"), "{err}");
    assert!(spooled(spool.path()) > 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A file whose reading is ahead of a slow store (waiting for room in the spool) when a
/// shutdown comes: the chunks not yet taken are not stored, and the run says the file was not
/// finished. It said nothing, and `crispy run` exited 0, whenever the reader was waiting on
/// the spool rather than reading at that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_stopped_while_waiting_for_the_spool_is_unfinished() {
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    let store = ThrottledStore::new(
        object_store::memory::InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: Duration::from_millis(300),
            ..ThrottleConfig::default()
        },
    );
    let sink = Arc::new(
        ObjectStoreSink::new(Arc::new(store), "slow", "memory://slow", Backend::Memory)
            .expect("sink"),
    );
    let path = crispy_testkit::Fixture::H264_1080p30Gop30
        .path()
        .expect("fixture");
    let job = SourceJob {
        source_id: "clip".parse().expect("id"),
        spec: SourceSpec::File(path),
        chunk: "1s".parse().expect("chunk"),
        prefix: None,
    };
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    let opts = PipelineOptions {
        spool: SpoolOptions {
            dir: None,
            sink_key: "memory://slow".to_owned(),
            // About three of the file's ten chunks.
            max_bytes: 2 << 20,
        },
        max_in_flight: 1,
        drain_timeout: Duration::from_secs(30),
        ..PipelineOptions::default()
    };
    let run = tokio::spawn(run_sources(
        vec![job],
        sink,
        opts,
        shutdown.clone(),
        recorder.clone(),
    ));
    let t0 = Instant::now();
    while recorder.0.lock().expect("lock").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "nothing stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    let summaries = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends")
        .expect("join")
        .expect("run");
    let s = &summaries[0];
    assert!(s.chunks < 10, "the whole file was stored: {s:?}");
    assert!(
        s.unfinished_at_ms.is_some(),
        "not said to be unfinished: {s:?}"
    );
    // What was stored is the file's start, in order, without its end.
    let stored: Vec<u64> = recorder
        .0
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.metadata.sequence)
        .collect();
    assert_eq!(stored, (0..s.chunks).collect::<Vec<_>>());
}
