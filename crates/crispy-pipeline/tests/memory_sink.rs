//! The pipeline as a library: a real file into an in-memory object store.

use std::sync::{Arc, Mutex};

use crispy_core::ChunkMetadata;
use crispy_pipeline::{ChunkReport, FileRun, Observer, PipelineError, SourceStarted, run_file};
use crispy_sink::ObjectStoreSink;
use crispy_testkit::Fixture;
use object_store::path::Path;
use object_store::{Attribute, ObjectStoreExt};

/// Lists every object in `store`, sorted by path.
async fn collect_list(store: &dyn object_store::ObjectStore) -> Vec<object_store::ObjectMeta> {
    let mut out: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
        .await
        .expect("list");
    out.sort_by(|a, b| a.location.cmp(&b.location));
    out
}

#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<SourceStarted>>,
    progress: Mutex<Vec<u64>>,
    stored: Mutex<Vec<ChunkReport>>,
}

impl Observer for Recorder {
    fn started(&self, e: &SourceStarted) {
        self.started.lock().expect("lock").push(e.clone());
    }
    fn progress(&self, ms: u64) {
        self.progress.lock().expect("lock").push(ms);
    }
    fn chunk_stored(&self, r: &ChunkReport) {
        self.stored.lock().expect("lock").push(r.clone());
    }
}

#[tokio::test]
async fn file_to_memory_store_with_attributes_and_events() {
    let path = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let sink = Arc::new(ObjectStoreSink::from_url("memory://bucket/site").expect("sink"));
    let recorder = Arc::new(Recorder::default());
    let mut job = FileRun::new(&path);
    job.max_in_flight = 2;
    let summary = run_file(job, Arc::clone(&sink), recorder.clone())
        .await
        .expect("run");

    assert_eq!(
        (summary.chunks, summary.frames, summary.media_ms),
        (4, 300, 10_000)
    );
    assert_eq!(summary.source_id.as_str(), "h264_1080p30_gop30");
    // Latency from hand-over to a readable object, kept per source.
    let (p50, p99) = (
        summary.latency_p50.expect("p50 measured"),
        summary.latency_p99.expect("p99 measured"),
    );
    assert!(
        p50 <= p99 && p99 <= summary.wall,
        "{p50:?} {p99:?} {:?}",
        summary.wall
    );

    {
        let started = recorder.started.lock().expect("lock");
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].duration_ms, Some(10_000));
        let progress = recorder.progress.lock().expect("lock");
        assert!(
            progress.len() >= 4 && progress.windows(2).all(|w| w[0] <= w[1]),
            "{progress:?}"
        );
        assert_eq!(recorder.stored.lock().expect("lock").len(), 4);
    }

    let store = sink.store();
    let objects = collect_list(store.as_ref()).await;
    assert_eq!(objects.len(), 8, "4 chunks + 4 manifests");
    for meta in objects
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".json"))
    {
        let got = store.get(&meta.location).await.expect("get");
        assert_eq!(
            got.attributes
                .get(&Attribute::ContentType)
                .map(|v| v.as_ref()),
            Some("application/json")
        );
        let m: ChunkMetadata =
            serde_json::from_slice(&got.bytes().await.expect("bytes")).expect("manifest");
        assert!(
            m.object.starts_with("site/h264_1080p30_gop30/"),
            "{}",
            m.object
        );

        let chunk = store
            .get(&Path::from(m.object.as_str()))
            .await
            .expect("chunk");
        let attrs = chunk.attributes.clone();
        let attr = |k: &'static str| {
            attrs
                .get(&Attribute::Metadata(k.into()))
                .map(|v| v.as_ref().to_owned())
        };
        assert_eq!(
            attrs.get(&Attribute::ContentType).map(|v| v.as_ref()),
            Some("video/mp4")
        );
        assert_eq!(attr("crispy-sha256"), Some(m.sha256.clone()));
        assert_eq!(attr("crispy-sequence"), Some(m.sequence.to_string()));
        assert_eq!(attr("crispy-resolution").as_deref(), Some("1920x1080"));
        let bytes = chunk.bytes().await.expect("bytes");
        assert_eq!(crispy_signer::sha256_hex(&bytes), m.sha256);
    }
}

#[tokio::test]
async fn missing_file_is_a_source_error() {
    let sink = Arc::new(ObjectStoreSink::from_url("memory://").expect("sink"));
    let err = run_file(
        FileRun::new("/no/such/file.mp4"),
        sink,
        Arc::new(crispy_pipeline::NoopObserver),
    )
    .await
    .expect_err("must fail");
    assert!(
        matches!(
            err,
            PipelineError::Source {
                chunks_stored: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("/no/such/file.mp4"), "{err}");
}
