//! `verify` fetches objects concurrently: against a store that takes its time per read (as
//! a cloud store does, tens of milliseconds), reads overlap, boundedly, and the report is
//! the same as one read at a time would give.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use crispy_pipeline::verify::{ProblemKind, VerifyOptions, verify};
use crispy_pipeline::{FileRun, NoopObserver, run_file};
use crispy_sink::{Backend, ObjectStoreSink};
use crispy_testkit::Fixture;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// An in-memory store whose reads and folder listings each take 30 ms; it counts how many
/// reads overlap, and logs reads and listings in the order they start.
#[derive(Debug, Default)]
struct SlowReads {
    inner: InMemory,
    reading: AtomicUsize,
    most_at_once: AtomicUsize,
    reads: AtomicUsize,
    log: std::sync::Mutex<Vec<String>>,
}

impl SlowReads {
    fn note(&self, what: String) {
        self.log.lock().expect("log").push(what);
    }
}

impl fmt::Display for SlowReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlowReads")
    }
}

#[async_trait]
impl ObjectStore for SlowReads {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }

    async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
        self.note(format!("get {l}"));
        let now = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let result = self.inner.get_opts(l, o).await;
        self.reading.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn get_ranges(&self, l: &Path, r: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(l, r).await
    }

    fn delete_stream(
        &self,
        l: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(l)
    }

    fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(p)
    }

    async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
        self.note(format!(
            "list {}",
            p.map(ToString::to_string).unwrap_or_default()
        ));
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.inner.list_with_delimiter(p).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

#[tokio::test]
async fn verify_reads_objects_concurrently_and_reports_in_order() {
    let path = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let store = Arc::new(SlowReads::default());
    let sink = Arc::new(
        ObjectStoreSink::new(store.clone(), "site", "memory://slow/site", Backend::Memory)
            .expect("sink"),
    );
    let summary = run_file(
        FileRun::new(&path),
        Arc::clone(&sink),
        Arc::new(NoopObserver),
    )
    .await
    .expect("run");
    assert_eq!(summary.chunks, 4);
    let options = VerifyOptions {
        allow_unsigned: true,
        ..VerifyOptions::default()
    };

    store.reads.store(0, Ordering::SeqCst);
    store.most_at_once.store(0, Ordering::SeqCst);
    let report = verify(&sink, &options).await.expect("verify");
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.sources[0].chunks, 4);
    // 4 manifests and their 4 chunks, read at once, at most 16 at a time.
    assert_eq!(store.reads.load(Ordering::SeqCst), 8);
    let most = store.most_at_once.load(Ordering::SeqCst);
    assert!((2..=16).contains(&most), "{most} reads at once");

    // Damage the second and fourth chunks: reported in object order.
    let listing = sink.list("").await.expect("list");
    let chunks: Vec<&str> = listing
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.ends_with(".mp4"))
        .collect();
    for damaged in [chunks[3], chunks[1]] {
        store
            .inner
            .put(
                &Path::from(damaged),
                PutPayload::from_static(b"not the chunk"),
            )
            .await
            .expect("overwrite");
    }
    let report = verify(&sink, &options).await.expect("verify");
    let tampered: Vec<(&str, ProblemKind)> = report
        .problems
        .iter()
        .map(|p| (p.object.as_str(), p.kind))
        .collect();
    assert_eq!(
        tampered,
        [
            (chunks[1], ProblemKind::TamperedChunk),
            (chunks[3], ProblemKind::TamperedChunk)
        ]
    );
}

#[tokio::test]
async fn verify_checks_each_folder_as_it_is_listed() {
    let path = Fixture::H264_1080p30Gop30.path().expect("fixture");
    let store = Arc::new(SlowReads::default());
    let sink = Arc::new(
        ObjectStoreSink::new(store.clone(), "", "memory://slow", Backend::Memory).expect("sink"),
    );
    for id in ["cam-a", "cam-b"] {
        let mut run = FileRun::new(&path);
        run.source_id = Some(id.parse().expect("id"));
        run_file(run, Arc::clone(&sink), Arc::new(NoopObserver))
            .await
            .expect("run");
    }
    let options = VerifyOptions {
        allow_unsigned: true,
        ..VerifyOptions::default()
    };
    store.log.lock().expect("log").clear();
    let report = verify(&sink, &options).await.expect("verify");
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.sources.len(), 2);
    assert!(report.sources.iter().all(|s| s.chunks == 4));
    // The first camera's objects are read while the second camera's folders are still being
    // listed (its year folder is listed once its own listing is done): nothing waits for,
    // or holds, the whole listing.
    let log = store.log.lock().expect("log").clone();
    let first_read = log.iter().position(|l| l.starts_with("get cam-a/"));
    let second_listed = log.iter().position(|l| l.starts_with("list cam-b/"));
    assert!(
        matches!((first_read, second_listed), (Some(r), Some(l)) if r < l),
        "{log:#?}"
    );
}
