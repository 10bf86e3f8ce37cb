//! One set of cases run over every sink backend: memory, a local directory, S3 (moto) and
//! Azure Blob (Azurite) on 127.0.0.1, real GCS when `CRISPY_TEST_GCS_BUCKET` is set;
//! fake-gcs-server for GCS configuration and reads (it does not take object_store's XML
//! API writes).

use bytes::Bytes;
use chrono::TimeZone;
use crispy_core::{Chunk, ChunkMetadata, ChunkSink, Payload, PutOutcome};
use crispy_sink::{Backend, ObjectStoreSink, SinkError, SinkOptions, Walked, manifest_path_for};
use crispy_testkit::emulators::{Emulator, Kind};
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStoreExt};

fn chunk(sink: &ObjectStoreSink, payload: &'static [u8]) -> Chunk {
    chunk_at(sink, payload, (2026, 1, 1), 3)
}

fn chunk_at(
    sink: &ObjectStoreSink,
    payload: &'static [u8],
    (y, mo, d): (i32, u32, u32),
    sequence: u64,
) -> Chunk {
    let mut metadata: ChunkMetadata =
        serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("valid manifest");
    metadata.start_time = chrono::Utc
        .with_ymd_and_hms(y, mo, d, 0, 0, 0)
        .single()
        .expect("t");
    metadata.end_time = metadata.start_time + chrono::Duration::seconds(3);
    metadata.sequence = sequence;
    metadata.sha256 = crispy_signer::sha256_hex(payload);
    metadata.object = sink.object_path(&metadata);
    // In parts, as copy mode makes them: every store must write the parts in order (and
    // local files get them joined).
    Chunk {
        payload: Payload::from_parts(payload.chunks(4).map(Bytes::from_static)),
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

    // Content types and the chunk's facts travel as object metadata where stores keep it.
    if sink.backend().has_attributes() {
        for (path, content_type) in [
            (c.metadata.object.clone(), "video/mp4"),
            (manifest_path_for(&c.metadata.object), "application/json"),
        ] {
            let head = store
                .get_opts(
                    &Path::from(path.as_str()),
                    GetOptions {
                        head: true,
                        ..GetOptions::default()
                    },
                )
                .await
                .expect("head");
            let attr = |a: Attribute| head.attributes.get(&a).map(|v| v.to_string());
            // Azure metadata names are identifiers: `crispy_sha256`.
            let key = |k: &str| match sink.backend() {
                Backend::Azure => Attribute::Metadata(k.replace('-', "_").into()),
                _ => Attribute::Metadata(k.to_owned().into()),
            };
            assert_eq!(attr(Attribute::ContentType).as_deref(), Some(content_type));
            assert_eq!(attr(key("crispy-sha256")), Some(c.metadata.sha256.clone()));
            assert_eq!(attr(key("crispy-sequence")).as_deref(), Some("3"));
        }
    }

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

    // The same chunk with a signed manifest, where the stored one is unsigned (a re-run
    // with a signing key), or signed by another key: refused, nothing overwritten.
    let manifest_at = || async {
        store
            .get(&Path::from(manifest_path_for(&c.metadata.object)))
            .await
            .expect("manifest")
            .bytes()
            .await
            .expect("bytes")
    };
    let stored = manifest_at().await;
    for key_id in ["k1", "k2"] {
        let mut signed = c.clone();
        signed.metadata.signature = Some(crispy_core::ManifestSignature {
            alg: "ed25519".to_owned(),
            key_id: key_id.to_owned(),
            value: "00".repeat(64),
        });
        let err = sink
            .put(&signed, Bytes::from(signed.metadata.to_json()))
            .await
            .expect_err("signed otherwise");
        assert!(
            matches!(&err, SinkError::SignedOtherwise { theirs, ours, .. }
                if theirs == "unsigned" && *ours == format!("signed with ed25519 key {key_id}")),
            "{err}"
        );
        assert!(err.is_permanent());
        assert_eq!(manifest_at().await, stored);
    }

    // The newest manifest of a source, across days, months and years.
    let id = c.metadata.source_id.clone();
    assert_eq!(
        sink.last_manifest(None, &id)
            .await
            .expect("last")
            .map(|m| m.metadata.sequence),
        Some(3)
    );
    for (day, seq) in [((2025, 12, 31), 2), ((2026, 2, 3), 4)] {
        let c = chunk_at(&sink, b"more", day, seq);
        let m = Bytes::from(c.metadata.to_json());
        sink.put(&c, m).await.expect("put");
    }
    let last = sink.last_manifest(None, &id).await.expect("last");
    assert_eq!(last.map(|m| m.metadata.sequence), Some(4));
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

    // A time window lists its date folders only; a source named like a year is still seen.
    let mut year_named = chunk_at(&sink, b"odd", (2026, 1, 1), 0);
    year_named.metadata.source_id = "2019".parse().expect("id");
    year_named.metadata.object = sink.object_path(&year_named.metadata);
    let m = Bytes::from(year_named.metadata.to_json());
    sink.put(&year_named, m).await.expect("put");
    // A per-source prefix and an id made of digits: `2025/01/02/2026/01/01/…` reads like the
    // date folders of 2 January 2025 above the real ones.
    let mut digits = chunk_at(&sink, b"digits", (2026, 1, 1), 0);
    digits.metadata.source_id = "02".parse().expect("id");
    digits.metadata.object = sink.object_path_in("2025/01", &digits.metadata);
    let m = Bytes::from(digits.metadata.to_json());
    sink.put(&digits, m).await.expect("put");
    let at = |y, mo, d| {
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, 0, 0, 0)
            .single()
            .expect("t")
    };
    let window = |from: Option<_>, to: Option<_>| {
        let sink = &sink;
        async move {
            sink.list_window(from, to)
                .await
                .expect("window")
                .into_iter()
                .map(|(p, _)| p.strip_prefix(expect_prefix).unwrap_or(&p).to_owned())
                .collect::<Vec<String>>()
        }
    };
    let both = |stem: &str| [format!("{stem}.json"), format!("{stem}.mp4")];
    let jan1 = window(Some(at(2026, 1, 1)), Some(at(2026, 1, 2))).await;
    let expected: Vec<String> = [
        both("2019/2026/01/01/20260101T000000.000Z-00000000"),
        both("2025/01/02/2026/01/01/20260101T000000.000Z-00000000"),
        both("cam/2026/01/01/20260101T000000.000Z-00000003"),
    ]
    .concat();
    assert_eq!(jan1, expected);
    assert_eq!(
        window(Some(at(2026, 1, 2)), None).await,
        both("cam/2026/02/03/20260203T000000.000Z-00000004")
    );
    // Before 2026: `2025/01/02` is not proven a date folder by what it holds, so all of it
    // is listed (the caller filters by the names' start times).
    let expected: Vec<String> = [
        both("2025/01/02/2026/01/01/20260101T000000.000Z-00000000"),
        both("cam/2025/12/31/20251231T000000.000Z-00000002"),
    ]
    .concat();
    assert_eq!(window(None, Some(at(2026, 1, 1))).await, expected);
    assert_eq!(window(None, None).await.len(), 10, "no window: everything");

    // The walk hands out one folder at a time, paths ascending across folders; unbounded, it
    // finds everything a flat listing does.
    let walk = |from: Option<_>, to: Option<_>| {
        let sink = &sink;
        async move {
            use futures::TryStreamExt;
            let folders: Vec<Vec<(String, u64)>> = sink
                .walk_window(from, to)
                .map_ok(|walked| match walked {
                    Walked::Objects(objects) => objects,
                    other => panic!("nothing odd was stored: {other:?}"),
                })
                .try_collect()
                .await
                .expect("walk");
            assert!(folders.iter().all(|f| !f.is_empty()), "{folders:?}");
            // One folder per item: every item's objects share their folder.
            for f in &folders {
                let dir = |p: &str| p.rsplit_once('/').map(|(d, _)| d.to_owned());
                assert!(f.iter().all(|(p, _)| dir(p) == dir(&f[0].0)), "{f:?}");
            }
            folders.concat()
        }
    };
    let everything = sink.list("").await.expect("list");
    assert_eq!(
        walk(None, None).await,
        everything,
        "ascending, like the flat listing"
    );
    let walked = walk(Some(at(2026, 1, 1)), Some(at(2026, 1, 2))).await;
    assert!(walked.windows(2).all(|w| w[0].0 < w[1].0), "{walked:?}");
    assert_eq!(
        walked,
        sink.list_window(Some(at(2026, 1, 1)), Some(at(2026, 1, 2)))
            .await
            .expect("window")
    );

    // A source whose manifests are signed: the same key again is the same upload, another
    // key or none is refused (after the listings above, which count every object).
    let signed_by = |key_id: &str| {
        // Another source, so the listing cases below keep theirs.
        let mut signed = chunk_at(&sink, b"signed-chunk", (2026, 1, 1), 0);
        signed.metadata.source_id = crispy_core::SourceId::new("signed").expect("id");
        signed.metadata.object = sink.object_path(&signed.metadata);
        signed.metadata.signature = Some(crispy_core::ManifestSignature {
            alg: "ed25519".to_owned(),
            key_id: key_id.to_owned(),
            value: "00".repeat(64),
        });
        let manifest = Bytes::from(signed.metadata.to_json());
        (signed, manifest)
    };
    let (k1, k1_manifest) = signed_by("k1");
    assert_eq!(
        sink.put(&k1, k1_manifest.clone())
            .await
            .expect("signed put"),
        PutOutcome::Created
    );
    assert_eq!(
        sink.put(&k1, k1_manifest).await.expect("same key again"),
        PutOutcome::AlreadyPresent
    );
    let (k2, k2_manifest) = signed_by("k2");
    let err = sink.put(&k2, k2_manifest).await.expect_err("another key");
    assert!(
        matches!(&err, SinkError::SignedOtherwise { theirs, .. }
            if theirs == "signed with ed25519 key k1"),
        "{err}"
    );
    let mut unsigned = k1.clone();
    unsigned.metadata.signature = None;
    let err = sink
        .put(&unsigned, Bytes::from(unsigned.metadata.to_json()))
        .await
        .expect_err("unsigned over signed");
    assert!(
        matches!(&err, SinkError::SignedOtherwise { ours, .. } if ours == "unsigned"),
        "{err}"
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

fn cloud_sink(emulator: &Emulator, bucket: &str, prefix: &str) -> ObjectStoreSink {
    emulator.create_bucket(bucket).expect("bucket");
    let options = SinkOptions {
        options: emulator.sink_options(),
        ..SinkOptions::default()
    };
    let url = format!("{}://{bucket}/{prefix}", emulator.scheme());
    ObjectStoreSink::from_url_opts(&url, &options).expect("sink")
}

#[tokio::test]
async fn s3_backend_on_moto() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    let sink = cloud_sink(&moto, "footage", "site-a");
    assert_eq!(sink.backend(), Backend::S3);
    conformance(sink, "site-a/").await;
}

#[tokio::test]
async fn azure_backend_on_azurite() {
    let azurite = Emulator::start(Kind::Azurite).expect("azurite");
    let sink = cloud_sink(&azurite, "footage", "site-a");
    assert_eq!(sink.backend(), Backend::Azure);
    conformance(sink, "site-a/").await;
}

/// Real Google Cloud Storage: runs when `CRISPY_TEST_GCS_BUCKET` names a bucket the
/// application default credentials can write (each run writes under a fresh prefix).
#[tokio::test]
async fn gcs_backend_on_real_gcs_when_configured() {
    let Ok(bucket) = std::env::var("CRISPY_TEST_GCS_BUCKET") else {
        eprintln!("CRISPY_TEST_GCS_BUCKET not set: real-GCS conformance not run");
        return;
    };
    let prefix = format!(
        "crispy-test-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
    );
    let sink = ObjectStoreSink::from_url(&format!("gs://{bucket}/{prefix}")).expect("sink");
    conformance(sink, &format!("{prefix}/")).await;
}

#[tokio::test]
async fn gcs_configuration_and_reads_on_fake_gcs_server() {
    let gcs = Emulator::start(Kind::FakeGcs).expect("fake-gcs-server");
    gcs.create_bucket("footage").expect("bucket");
    // Objects written through the emulator's own API, read back through ours.
    let probe = ObjectStoreSink::from_url("memory://x/site-a").expect("memory");
    let c = chunk(&probe, b"chunk-bytes");
    let manifest = c.metadata.to_json();
    gcs.gcs_upload("footage", &c.metadata.object, b"chunk-bytes")
        .expect("upload chunk");
    gcs.gcs_upload("footage", &manifest_path_for(&c.metadata.object), &manifest)
        .expect("upload manifest");

    let options = SinkOptions {
        options: gcs.sink_options(),
        ..SinkOptions::default()
    };
    let sink = ObjectStoreSink::from_url_opts("gs://footage/site-a", &options).expect("sink");
    assert_eq!(sink.backend(), Backend::Gcs);
    sink.preflight().await.expect("preflight");
    let listed = sink.list("").await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        sink.get(&c.metadata.object).await.expect("get").as_deref(),
        Some(&b"chunk-bytes"[..])
    );
    let last = sink
        .last_manifest(None, &c.metadata.source_id)
        .await
        .expect("last manifest");
    assert_eq!(
        last.map(|m| m.metadata.sha256),
        Some(c.metadata.sha256.clone())
    );

    // A bucket that does not exist fails the preflight with a clear error.
    let missing = ObjectStoreSink::from_url_opts("gs://no-such-bucket/x", &options).expect("sink");
    let err = missing.preflight().await.expect_err("no bucket");
    assert!(matches!(err, SinkError::NoBucket { .. }), "{err}");
    assert!(err.to_string().contains("gs://no-such-bucket/x"), "{err}");
}

#[tokio::test]
async fn preflight_names_missing_buckets_bad_keys_and_dead_endpoints() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    let options = SinkOptions {
        options: moto.sink_options(),
        ..SinkOptions::default()
    };
    let sink = ObjectStoreSink::from_url_opts("s3://never-created/p", &options).expect("sink");
    let err = sink.preflight().await.expect_err("no bucket");
    assert!(matches!(err, SinkError::NoBucket { .. }), "{err}");

    let azurite = Emulator::start(Kind::Azurite).expect("azurite");
    azurite.create_bucket("footage").expect("container");
    let mut wrong_key = azurite.sink_options();
    for (k, v) in &mut wrong_key {
        if k == "azure_storage_account_key" {
            *v = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=".into();
        }
    }
    let sink = ObjectStoreSink::from_url_opts(
        "az://footage/p",
        &SinkOptions {
            options: wrong_key,
            ..SinkOptions::default()
        },
    )
    .expect("sink");
    let err = sink.preflight().await.expect_err("bad key");
    assert!(matches!(err, SinkError::Credentials { .. }), "{err}");
    assert!(!err.to_string().contains("d3Jvbmct"), "secret in {err}");
    assert!(!format!("{sink:?}").contains("d3Jvbmct"), "secret in Debug");

    // Nothing listens on a port we just freed.
    let dead = crispy_testkit::free_port().expect("port");
    let mut options = moto.sink_options();
    for (k, v) in &mut options {
        if k == "aws_endpoint" {
            *v = format!("http://127.0.0.1:{dead}");
        }
    }
    let sink = ObjectStoreSink::from_url_opts(
        "s3://footage/p",
        &SinkOptions {
            options,
            retry: Some(object_store::RetryConfig {
                max_retries: 0,
                ..object_store::RetryConfig::default()
            }),
            ..SinkOptions::default()
        },
    )
    .expect("sink");
    let err = sink.preflight().await.expect_err("dead endpoint");
    assert!(matches!(err, SinkError::Unreachable { .. }), "{err}");
}

#[test]
fn hostile_cloud_prefixes_and_urls_are_rejected() {
    for url in [
        "s3://bucket/../x",
        "s3://bucket/a//b",
        "gs://bucket/./a",
        "az://container/a\u{1}b",
        "s3://user:secret@bucket/p",
        "s3:///p",
    ] {
        let err = ObjectStoreSink::from_url(url).expect_err(url);
        assert!(!err.to_string().contains("secret@"), "{err}");
    }
    let err = ObjectStoreSink::from_url_opts(
        "memory://x",
        &SinkOptions::parse_pairs(["aws_region=x"]).expect("pairs"),
    )
    .expect_err("options on memory");
    assert!(err.to_string().contains("--sink-opt"), "{err}");
}

#[tokio::test]
async fn hostile_ids_and_prefixes_never_write_outside_the_sink_root() {
    let outer = tempfile::tempdir().expect("tempdir");
    let root = outer.path().join("root");
    let sink = ObjectStoreSink::from_url(&format!("file://{}", root.display())).expect("sink");
    let long = "x".repeat(2048);
    for prefix in [
        "../x",
        "a/../../b",
        "%2e%2e",
        "%2e%2e/%2e%2e/x",
        "..%2f..%2fx",
        "a\u{1}b",
        "a\nb",
        long.as_str(),
        "/abs/path",
        "a\\..\\..\\b",
        "a/./b",
    ] {
        match crispy_sink::clean_prefix(prefix, "test") {
            Err(_) => continue, // rejected
            Ok(clean) => {
                let mut c = chunk(&sink, b"payload");
                c.metadata.object = sink.object_path_in(&clean, &c.metadata);
                let m = Bytes::from(c.metadata.to_json());
                // Stored (encoded as a name inside the root) or refused; never outside.
                let _ = sink.put(&c, m).await;
            }
        }
    }
    for id in ["../x", "a/b", "%2e%2e", "a\u{7}b", long.as_str(), ".."] {
        assert!(
            id.parse::<crispy_core::SourceId>().is_err(),
            "{id:?} accepted as a source id"
        );
    }
    let mut outside = Vec::new();
    let mut stack = vec![outer.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.starts_with(&root) {
                outside.push(p);
            }
        }
    }
    assert!(
        outside.is_empty(),
        "written outside the sink root: {outside:?}"
    );
    assert!(
        !sink.list("").await.expect("list").is_empty(),
        "the accepted prefixes did store their chunks inside the root"
    );
}

/// Stores two days of chunks of `cam`, then an object with a name no object path can hold in
/// the newest day's folder (through `store_odd`, given the name relative to the sink's
/// root): the walk reports it and goes on. Returns what the walk found, split into objects
/// (paths and sizes) and `(folder, detail)` of what it could not list.
async fn walk_past_an_odd_name(
    sink: &ObjectStoreSink,
    store_odd: impl FnOnce(&str),
) -> (
    Vec<(String, u64)>,
    Vec<(String, u64)>,
    Vec<(String, String)>,
    Vec<(String, u64)>,
) {
    use futures::TryStreamExt;
    for (day, sequence) in [(1, 3), (2, 4)] {
        let c = chunk_at(sink, b"payload", (2026, 1, day), sequence);
        let m = Bytes::from(c.metadata.to_json());
        sink.put(&c, m).await.expect("put");
    }
    let before = sink.list("").await.expect("list");
    assert_eq!(before.len(), 4, "{before:?}");
    store_odd("cam/2026/01/02/odd\tname.json");
    let walked: Vec<Walked> = sink
        .walk_window(None, None)
        .try_collect()
        .await
        .expect("the walk goes on past an odd name");
    let mut objects = Vec::new();
    let mut odd = Vec::new();
    for w in walked {
        match w {
            Walked::Objects(o) => objects.extend(o),
            Walked::Unlisted { folder, detail } => {
                assert!(
                    !folder.contains(char::is_control) && !detail.contains(char::is_control),
                    "{detail}"
                );
                odd.push((folder, detail));
            }
        }
    }
    assert_eq!(odd.len(), 1, "{odd:?}");
    // Within a window, the day folder is listed whole, the same way.
    let day = |d| {
        chrono::Utc
            .with_ymd_and_hms(2026, 1, d, 0, 0, 0)
            .single()
            .expect("t")
    };
    let windowed: Vec<Walked> = sink
        .walk_window(Some(day(2)), Some(day(3)))
        .try_collect()
        .await
        .expect("the walk goes on past an odd name");
    assert!(
        windowed
            .iter()
            .any(|w| matches!(w, Walked::Unlisted { detail, .. } if detail.contains("name"))),
        "{windowed:?}"
    );
    let windowed_objects: Vec<(String, u64)> = windowed
        .into_iter()
        .flat_map(|w| match w {
            Walked::Objects(o) => o,
            Walked::Unlisted { .. } => Vec::new(),
        })
        .collect();
    (before, objects, odd, windowed_objects)
}

#[tokio::test]
async fn an_odd_name_in_a_local_directory_is_reported_and_everything_else_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("out");
    let sink = ObjectStoreSink::from_url(&format!("file://{}", root.display())).expect("sink");
    let (before, objects, odd, day) = walk_past_an_odd_name(&sink, |name| {
        std::fs::write(root.join(name), b"x").expect("odd file");
        // A FIFO next to it: read by hand, the folder must not list what is not a file.
        let folder = root.join(name).parent().expect("folder").to_owned();
        let fifo = std::process::Command::new("mkfifo")
            .arg(folder.join("pipe"))
            .status()
            .expect("mkfifo");
        assert!(fifo.success());
    })
    .await;
    // Only the odd name is left out, in the whole walk and in the day's.
    assert_eq!(objects, before);
    let day_before: Vec<_> = before
        .iter()
        .filter(|(p, _)| p.contains("/02/"))
        .cloned()
        .collect();
    assert_eq!(day, day_before);
    assert_eq!(odd[0].0, "cam/2026/01/02/odd\\tname.json", "{odd:?}");
    assert!(odd[0].1.contains("rename or delete it"), "{odd:?}");
    // A restart still finds the newest manifest.
    let id = "cam".parse().expect("id");
    let last = sink.last_manifest(None, &id).await.expect("last manifest");
    assert_eq!(last.map(|m| m.metadata.sequence), Some(4));
    // At the top, in a folder listed level by level, the same.
    std::fs::write(root.join("top\u{1}level"), b"x").expect("odd file");
    let walked: Vec<Walked> = {
        use futures::TryStreamExt;
        sink.walk_window(None, None)
            .try_collect()
            .await
            .expect("walk")
    };
    let mut odd: Vec<&str> = walked
        .iter()
        .filter_map(|w| match w {
            Walked::Unlisted { folder, .. } => Some(folder.as_str()),
            Walked::Objects(_) => None,
        })
        .collect();
    odd.sort();
    assert_eq!(odd, ["cam/2026/01/02/odd\\tname.json", "top\\u{1}level"]);
    let listed: usize = walked
        .iter()
        .map(|w| match w {
            Walked::Objects(o) => o.len(),
            Walked::Unlisted { .. } => 0,
        })
        .sum();
    assert_eq!(listed, 4);
}

#[tokio::test]
async fn an_odd_key_in_a_bucket_is_reported_and_the_walk_goes_on() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    let sink = cloud_sink(&moto, "footage", "site-a");
    let (_, objects, odd, day) = walk_past_an_odd_name(&sink, |name| {
        let key = name.replace('\t', "%09");
        let (status, body) = crispy_testkit::emulators::http(
            moto.port(),
            "PUT",
            &format!("/footage/site-a/{key}"),
            &[],
            b"x",
        )
        .expect("put through moto's own API");
        assert_eq!(status, 200, "{body}");
    })
    .await;
    // The odd day's folder could not be listed (its one page held the odd key); the other
    // day's objects were.
    assert!(day.is_empty(), "{day:?}");
    assert_eq!(odd[0].0, "site-a/cam/2026/01/02", "{odd:?}");
    assert!(odd[0].1.contains("not checked"), "{odd:?}");
    let paths: Vec<&str> = objects.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.iter().any(|p| p.contains("/01/01/")), "{paths:?}");
    // A restart cannot know the newest manifest: an error, not an older manifest.
    let id = "cam".parse().expect("id");
    let err = sink
        .last_manifest(None, &id)
        .await
        .expect_err("the newest day could not be listed");
    assert!(err.to_string().contains("site-a/cam/2026/01/02"), "{err}");
}
