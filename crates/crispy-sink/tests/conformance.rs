//! One set of cases run over every sink backend available without emulators.

use bytes::Bytes;
use chrono::TimeZone;
use crispy_core::{Chunk, ChunkMetadata, ChunkSink, PutOutcome};
use crispy_sink::{ObjectStoreSink, SinkError, manifest_path_for};
use object_store::ObjectStoreExt;
use object_store::path::Path;

fn chunk(sink: &ObjectStoreSink, payload: &'static [u8]) -> Chunk {
    chunk_at(sink, payload, (2026, 1, 1), 3)
}

fn chunk_at(
    sink: &ObjectStoreSink,
    payload: &'static [u8],
    (y, mo, d): (i32, u32, u32),
    sequence: u64,
) -> Chunk {
    let mut metadata: ChunkMetadata = serde_json::from_str(
        r#"{"schema":"crispy.manifest/1","source_id":"cam","sequence":3,"object":"",
        "start_time":"2026-01-01T00:00:00.000Z","end_time":"2026-01-01T00:00:03.000Z",
        "clock":"run-start","start_pts":0,"time_base":"1/90000","duration_ts":270000,
        "duration_ms":3000,"requested_ms":3000,"frame_count":90,"fps":30.0,"width":640,
        "height":360,"codec":"h264","profile":null,"keyframe_aligned":true,
        "discontinuity":false,"bytes":0,"sha256":""}"#,
    )
    .expect("valid manifest");
    metadata.start_time = chrono::Utc
        .with_ymd_and_hms(y, mo, d, 0, 0, 0)
        .single()
        .expect("t");
    metadata.end_time = metadata.start_time + chrono::Duration::seconds(3);
    metadata.sequence = sequence;
    metadata.sha256 = crispy_signer::sha256_hex(payload);
    metadata.object = sink.object_path(&metadata);
    Chunk {
        payload: Bytes::from_static(payload),
        metadata,
    }
}

async fn conformance(sink: ObjectStoreSink, expect_prefix: &str) {
    sink.preflight().await.expect("preflight");
    let c = chunk(&sink, b"chunk-bytes");
    assert_eq!(
        c.metadata.object,
        format!("{expect_prefix}cam/2026/01/01/20260101T000000.000Z-00000003.mp4")
    );
    let manifest = Bytes::from(c.metadata.to_json());

    assert_eq!(
        sink.put(&c, manifest.clone()).await.expect("first put"),
        PutOutcome::Created
    );
    let store = sink.store();
    let got = store
        .get(&Path::from(c.metadata.object.as_str()))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&got[..], b"chunk-bytes");
    let m = store
        .get(&Path::from(manifest_path_for(&c.metadata.object)))
        .await
        .expect("manifest")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(m, manifest);

    // A retried upload of identical objects succeeds without writing.
    assert_eq!(
        sink.put(&c, manifest.clone()).await.expect("retry"),
        PutOutcome::AlreadyPresent
    );

    // Different content at the same name is a conflict and is never overwritten.
    let other = chunk(&sink, b"tampered");
    let err = sink.put(&other, manifest).await.expect_err("conflict");
    assert!(matches!(err, SinkError::Conflict { .. }), "{err}");
    assert!(!err.is_retryable());
    let still = store
        .get(&Path::from(c.metadata.object.as_str()))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&still[..], b"chunk-bytes");

    // A re-signed manifest of the same chunk is the same upload.
    let mut resigned = c.metadata.clone();
    resigned.prev_sha256 = Some("ab".repeat(32));
    assert_eq!(
        sink.put(&c, Bytes::from(resigned.to_json()))
            .await
            .expect("re-signed"),
        PutOutcome::AlreadyPresent
    );

    // The newest manifest of a source, across days, months and years.
    let id = c.metadata.source_id.clone();
    assert_eq!(
        sink.last_manifest(None, &id)
            .await
            .expect("last")
            .map(|m| m.sequence),
        Some(3)
    );
    for (day, seq) in [((2025, 12, 31), 2), ((2026, 2, 3), 4)] {
        let c = chunk_at(&sink, b"more", day, seq);
        let m = Bytes::from(c.metadata.to_json());
        sink.put(&c, m).await.expect("put");
    }
    let last = sink.last_manifest(None, &id).await.expect("last");
    assert_eq!(last.map(|m| m.sequence), Some(4));
    let other = crispy_core::SourceId::new("nobody").expect("id");
    assert_eq!(sink.last_manifest(None, &other).await.expect("none"), None);

    // Listing is sorted and complete; reading a missing object is `None`.
    let listed: Vec<String> = sink
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "{listed:?}");
    assert_eq!(
        sink.get(&format!("{expect_prefix}cam/none.mp4"))
            .await
            .expect("get"),
        None
    );
}

#[test]
fn a_source_prefix_goes_between_the_sink_prefix_and_the_source_id() {
    let sink = ObjectStoreSink::from_url("memory://bucket/footage").expect("sink");
    let c = chunk(&sink, b"x");
    assert_eq!(
        sink.object_path_in("site-a/door", &c.metadata),
        "footage/site-a/door/cam/2026/01/01/20260101T000000.000Z-00000003.mp4"
    );
    assert!(crispy_sink::clean_prefix("../x", "test").is_err());
    assert!(crispy_sink::clean_prefix("a//b", "test").is_err());
    assert_eq!(
        crispy_sink::clean_prefix("/a/b/", "test").ok().as_deref(),
        Some("a/b")
    );
}

#[tokio::test]
async fn memory_backend() {
    conformance(
        ObjectStoreSink::from_url("memory://bucket/site-a").expect("sink"),
        "site-a/",
    )
    .await;
}

#[tokio::test]
async fn local_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("out").display());
    conformance(ObjectStoreSink::from_url(&url).expect("sink"), "").await;
    assert!(
        dir.path()
            .join("out/cam/2026/01/01/20260101T000000.000Z-00000003.json")
            .is_file()
    );
}

#[tokio::test]
async fn unwritable_local_directory_fails_preflight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    // A directory cannot be created below a regular file.
    let err = ObjectStoreSink::from_url(&format!("file://{}/sub", file.display()))
        .expect_err("must fail");
    assert!(matches!(err, SinkError::Unwritable { .. }), "{err}");
    assert!(err.to_string().contains("a-file"), "{err}");
}
