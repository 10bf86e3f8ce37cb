//! Faults injected into the HTTP client (object_store's `with_http_connector` hook) in front
//! of a real S3 emulator (moto): lost responses, 5xx answers and refused connections on
//! create-only puts are resolved by looking the object up, never by overwriting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use crispy_core::{Chunk, ChunkMetadata, ChunkSink, PutOutcome};
use crispy_sink::{ObjectStoreSink, SinkOptions, manifest_path_for};
use crispy_testkit::emulators::{Emulator, Kind};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService, ReqwestConnector,
};

/// What happens to the next PUT.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// The request reaches the store, the answer is lost (a timeout): did it land?
    LoseResponse,
    /// The store answers 503 without storing anything.
    Unavailable,
    /// The connection is refused before anything is sent.
    Refused,
}

#[derive(Debug, Clone, Default)]
struct Plan {
    faults: Arc<Mutex<VecDeque<Fault>>>,
    puts: Arc<Mutex<u32>>,
    /// `x-amz-checksum-sha256` of every PUT, by path.
    checksums: Arc<Mutex<Vec<SentChecksum>>>,
}

/// A PUT's path and the checksum header it carried.
type SentChecksum = (String, Option<String>);

#[derive(Debug)]
struct FaultyConnector(Plan);

impl HttpConnector for FaultyConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(FaultyService {
            inner,
            plan: self.0.clone(),
        }))
    }
}

#[derive(Debug)]
struct FaultyService {
    inner: HttpClient,
    plan: Plan,
}

#[async_trait]
impl HttpService for FaultyService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if req.method() != http::Method::PUT {
            return self.inner.execute(req).await;
        }
        *self.plan.puts.lock().expect("lock") += 1;
        self.plan.checksums.lock().expect("lock").push((
            req.uri().path().to_owned(),
            req.headers()
                .get("x-amz-checksum-sha256")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ));
        let fault = self.plan.faults.lock().expect("lock").pop_front();
        match fault {
            None => self.inner.execute(req).await,
            Some(Fault::LoseResponse) => {
                let _ = self.inner.execute(req).await;
                Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "injected: answer lost"),
                ))
            }
            Some(Fault::Unavailable) => {
                let mut res = HttpResponse::new(HttpResponseBody::from(Bytes::from_static(
                    b"<Error><Code>SlowDown</Code></Error>",
                )));
                *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                Ok(res)
            }
            Some(Fault::Refused) => Err(HttpError::new(
                HttpErrorKind::Connect,
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "injected: refused"),
            )),
        }
    }
}

fn chunk(sink: &ObjectStoreSink, payload: &'static [u8], sequence: u64) -> (Chunk, Bytes) {
    let mut metadata: ChunkMetadata =
        serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("valid manifest");
    metadata.sequence = sequence;
    metadata.start_time += chrono::Duration::seconds(3 * sequence as i64);
    metadata.end_time = metadata.start_time + chrono::Duration::seconds(3);
    metadata.bytes = payload.len() as u64;
    metadata.sha256 = crispy_signer::sha256_hex(payload);
    metadata.object = sink.object_path(&metadata);
    let manifest = Bytes::from(metadata.to_json());
    (
        Chunk {
            payload: Bytes::from_static(payload).into(),
            metadata,
        },
        manifest,
    )
}

#[tokio::test]
async fn ambiguous_put_failures_are_resolved_by_looking_the_object_up() {
    let moto = Emulator::start(Kind::Moto).expect("moto");
    moto.create_bucket("footage").expect("bucket");
    let plan = Plan::default();
    let options = SinkOptions {
        options: moto.sink_options(),
        http_connector: Some(Arc::new(FaultyConnector(plan.clone()))),
        retry: Some(object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(10),
                max_backoff: std::time::Duration::from_millis(50),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: std::time::Duration::from_secs(5),
        }),
    };
    let sink = ObjectStoreSink::from_url_opts("s3://footage/site", &options).expect("sink");

    // The chunk's PUT lands but its answer is lost: the sink finds our object and succeeds.
    let (c, m) = chunk(&sink, b"chunk-zero", 0);
    plan.faults
        .lock()
        .expect("lock")
        .push_back(Fault::LoseResponse);
    assert_eq!(
        sink.put(&c, m.clone()).await.expect("put"),
        PutOutcome::Created
    );
    assert_eq!(
        sink.get(&c.metadata.object).await.expect("get").as_deref(),
        Some(&b"chunk-zero"[..])
    );
    // The pipeline's retry of the same chunk finds both objects there.
    assert_eq!(
        sink.put(&c, m).await.expect("retry"),
        PutOutcome::AlreadyPresent
    );

    // 503s and refused connections: object_store retries them itself.
    let (c, m) = chunk(&sink, b"chunk-one", 1);
    plan.faults
        .lock()
        .expect("lock")
        .extend([Fault::Unavailable, Fault::Refused]);
    let before = *plan.puts.lock().expect("lock");
    assert_eq!(sink.put(&c, m).await.expect("put"), PutOutcome::Created);
    assert_eq!(
        *plan.puts.lock().expect("lock") - before,
        4,
        "2 failed + chunk + manifest"
    );

    // More failures than object_store retries: the error comes back (for our own retry
    // loop), nothing was stored, and the next attempt stores it.
    let (c, m) = chunk(&sink, b"chunk-two", 2);
    plan.faults
        .lock()
        .expect("lock")
        .extend([Fault::Unavailable; 3]);
    let err = sink.put(&c, m.clone()).await.expect_err("gives up");
    assert!(!err.is_permanent(), "{err}");
    assert_eq!(sink.get(&c.metadata.object).await.expect("get"), None);
    assert_eq!(sink.put(&c, m).await.expect("put"), PutOutcome::Created);

    // A lost answer on the manifest too.
    let (c, m) = chunk(&sink, b"chunk-three", 3);
    plan.faults
        .lock()
        .expect("lock")
        .extend([Fault::LoseResponse, Fault::LoseResponse]);
    assert_eq!(
        sink.put(&c, m.clone()).await.expect("put"),
        PutOutcome::Created
    );
    assert_eq!(
        sink.get(&manifest_path_for(&c.metadata.object))
            .await
            .expect("get")
            .as_deref(),
        Some(&m[..])
    );

    // Every object exactly once.
    let listed = sink.list("").await.expect("list");
    assert_eq!(listed.len(), 8, "{listed:?}");

    // Every upload carried the SHA-256 that S3 checks the body against.
    use base64::Engine;
    let (c, _) = chunk(&sink, b"chunk-zero", 0);
    let expected = base64::engine::general_purpose::STANDARD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(b"chunk-zero"));
    let sent = plan.checksums.lock().expect("lock").clone();
    assert!(sent.iter().all(|(_, sum)| sum.is_some()), "{sent:?}");
    assert!(
        sent.iter()
            .any(|(path, sum)| path.ends_with(&c.metadata.object)
                && sum.as_deref() == Some(expected.as_str())),
        "{sent:?}"
    );
}
