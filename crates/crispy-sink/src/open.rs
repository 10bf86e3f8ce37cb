//! Opening a store from a sink URL: the backend, its builder (credentials from the
//! environment), extra `--sink-opt` options, and our client settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::HttpConnector;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::signer::Signer;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::SinkError;

/// Which storage service a sink writes to; decides what the sink can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// A local directory (`file://` or a plain path).
    Local,
    /// In-process memory (`memory://`), gone when the process ends.
    Memory,
    /// Amazon S3 or an S3-compatible store (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`, `azure://`).
    Azure,
}

impl Backend {
    /// Whether objects carry metadata attributes (`x-amz-meta-*`, `x-goog-meta-*`,
    /// `x-ms-meta-*`).
    pub fn has_attributes(self) -> bool {
        !matches!(self, Backend::Local)
    }

    /// Whether the ETag of a single-request upload is worth comparing with the content's
    /// MD5: GCS (which gets no checksum from object_store). Not S3: there the body's SHA-256
    /// is sent and checked by the store, and ETags of SSE-KMS/SSE-C objects are not MD5s.
    pub fn etag_is_md5(self) -> bool {
        matches!(self, Backend::Gcs)
    }

    /// Whether the store survives this process.
    pub fn is_durable(self) -> bool {
        !matches!(self, Backend::Memory)
    }

    /// Whether the store is reached over the network (and so may be unreachable).
    pub fn is_remote(self) -> bool {
        matches!(self, Backend::S3 | Backend::Gcs | Backend::Azure)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Local => "local directory",
            Backend::Memory => "memory",
            Backend::S3 => "S3",
            Backend::Gcs => "GCS",
            Backend::Azure => "Azure Blob",
        })
    }
}

/// How to open a cloud sink: extra store options and client settings.
///
/// Option values may be secrets (keys, tokens, SAS): `Debug` shows only the keys.
#[derive(Clone, Default)]
pub struct SinkOptions {
    /// `key=value` options as object_store's builders name them (`aws_endpoint`,
    /// `allow_http`, `google_service_account`, `azure_storage_account_name`, ...). Unknown
    /// keys are an error.
    pub options: Vec<(String, String)>,
    /// Replaces the HTTP client (tests inject faults with it).
    pub http_connector: Option<Arc<dyn HttpConnector>>,
    /// object_store's own retries of one request; ours run above them. `None` keeps ours
    /// (a few quick retries, 15 s in all).
    pub retry: Option<RetryConfig>,
}

impl fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SinkOptions")
            .field("option_keys", &keys)
            .field("http_connector", &self.http_connector.is_some())
            .field("retry", &self.retry)
            .finish()
    }
}

impl SinkOptions {
    /// Parses `key=value` strings (`--sink-opt`).
    pub fn parse_pairs<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<Self, SinkError> {
        let mut options = Vec::new();
        for (n, pair) in pairs.into_iter().enumerate() {
            // The text is not echoed: without `=` it may be a value, i.e. a secret.
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| SinkError::InvalidOption {
                    key: format!("number {}", n + 1),
                    reason: "no '=' in it (expected KEY=VALUE; the text is not shown, it may \
                             be a secret)"
                        .to_owned(),
                })?;
            options.push((k.trim().to_owned(), v.to_owned()));
        }
        Ok(Self {
            options,
            ..Self::default()
        })
    }
}

/// object_store's per-request retries: short, because a failed put comes back to our own
/// retry loop (which HEADs the object before trying again).
fn default_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
    }
}

/// A store opened from a cloud URL, with the prefix taken from the URL's path.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub signer: Arc<dyn Signer>,
    pub prefix: String,
    pub backend: Backend,
    /// The endpoint the store was given, from the options or the environment
    /// (`AWS_ENDPOINT_URL`, `GOOGLE_BASE_URL`, `AZURE_STORAGE_ENDPOINT`, the Azure emulator):
    /// part of the spool key.
    pub endpoint: Option<String>,
}

/// Opens `s3://`, `gs://`, `az://` / `azure://` URLs. Credentials come from the environment
/// (and, for GCS, application default credentials), then from `opts`.
pub(crate) fn open_cloud(url: &str, opts: &SinkOptions) -> Result<Option<Opened>, SinkError> {
    let invalid = |reason: String| SinkError::InvalidUrl {
        url: crispy_core::redact::redact_urls(url).into_owned(),
        reason,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(None);
    };
    let backend = match scheme {
        "s3" | "s3a" => Backend::S3,
        "gs" => Backend::Gcs,
        "az" | "azure" => Backend::Azure,
        _ => return Ok(None),
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid(format!("no bucket or container after {scheme}://")));
    }
    if bucket.contains(['@', ':', '?', '#']) {
        return Err(invalid(
            "the part after the scheme is not a bucket or container name (put credentials \
             in the environment or --sink-opt, never in the URL)"
                .to_owned(),
        ));
    }
    let retry = opts.retry.clone().unwrap_or_else(default_retry);
    let endpoint: Option<String>;
    let built = match backend {
        Backend::S3 => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                // S3 validates a SHA-256 of every upload it receives.
                .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
                .with_retry(retry);
            for (k, v) in &opts.options {
                let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown_key(k, "S3"))?;
                b = b.with_config(key, v);
            }
            if let Some(c) = &opts.http_connector {
                b = b.with_http_connector(SharedConnector(Arc::clone(c)));
            }
            // The S3-specific endpoint wins over the general one, as object_store uses them.
            endpoint = b
                .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
                .or_else(|| b.get_config_value(&AmazonS3ConfigKey::Endpoint));
            // object_store panics on its first request when the endpoint is not a URL.
            if let Some(endpoint) = &endpoint
                && let Some(problem) = endpoint_problem(endpoint)
            {
                return Err(SinkError::InvalidOption {
                    key: "aws_endpoint".to_owned(),
                    reason: format!(
                        "{:?} {problem} (from --sink-opt aws_endpoint or AWS_ENDPOINT_URL, or \
                         aws_endpoint_url_s3 / AWS_ENDPOINT_URL_S3); e.g. http://127.0.0.1:9000",
                        crispy_core::redact::redact_urls(endpoint)
                    ),
                });
            }
            b.build().map(both)
        }
        Backend::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry);
            for (k, v) in &opts.options {
                let key: GoogleConfigKey = k.parse().map_err(|_| unknown_key(k, "GCS"))?;
                b = b.with_config(key, v);
            }
            if let Some(c) = &opts.http_connector {
                b = b.with_http_connector(SharedConnector(Arc::clone(c)));
            }
            endpoint = b
                .get_config_value(&GoogleConfigKey::BaseUrl)
                .or_else(|| service_account_base_url(&b));
            b.build().map(both)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry);
            for (k, v) in &opts.options {
                let key: AzureConfigKey = k.parse().map_err(|_| unknown_key(k, "Azure"))?;
                b = b.with_config(key, v);
            }
            if let Some(c) = &opts.http_connector {
                b = b.with_http_connector(SharedConnector(Arc::clone(c)));
            }
            endpoint = Some(azure_account_url(&b));
            b.build().map(both)
        }
    };
    let (store, signer) = built.map_err(|e| SinkError::Configuration {
        url: crispy_core::redact::redact_urls(url).into_owned(),
        backend,
        reason: crispy_core::redact::redact_urls(&e.to_string()).into_owned(),
    })?;
    Ok(Some(Opened {
        store,
        signer,
        prefix: prefix.to_owned(),
        backend,
        endpoint: endpoint
            .map(|e| e.trim_end_matches('/').to_owned())
            .filter(|e| !e.is_empty()),
    }))
}

/// One store, seen both as a store and as a URL signer.
fn both<S: ObjectStore + Signer>(store: S) -> (Arc<dyn ObjectStore>, Arc<dyn Signer>) {
    let store = Arc::new(store);
    (Arc::clone(&store) as Arc<dyn ObjectStore>, store)
}

/// The `gcs_base_url` of the service-account credentials a GCS builder was given (a file
/// or an inline key), which object_store uses when no base URL is set: a test server's
/// credentials name it there. Unreadable credentials fail the build that follows.
fn service_account_base_url(b: &GoogleCloudStorageBuilder) -> Option<String> {
    let text = match b.get_config_value(&GoogleConfigKey::ServiceAccountKey) {
        Some(key) => key,
        None => {
            std::fs::read_to_string(b.get_config_value(&GoogleConfigKey::ServiceAccount)?).ok()?
        }
    };
    let credentials: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(credentials.get("gcs_base_url")?.as_str()?.to_owned())
}

/// The account URL an Azure builder will use, as object_store works it out: the emulator's
/// (`AZURITE_BLOB_STORAGE_URL`, its default account), the endpoint given, or the account's
/// public one. Container names are unique only within an account, so the account belongs in
/// the spool key.
fn azure_account_url(b: &MicrosoftAzureBuilder) -> String {
    let flag = |key: AzureConfigKey| {
        b.get_config_value(&key).is_some_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "1" | "true" | "on" | "yes" | "y"
            )
        })
    };
    let account = b.get_config_value(&AzureConfigKey::AccountName);
    if flag(AzureConfigKey::UseEmulator) {
        let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:10000".to_owned());
        let account = account.unwrap_or_else(|| "devstoreaccount1".to_owned());
        return format!("{}/{account} (emulator)", url.trim_end_matches('/'));
    }
    match (b.get_config_value(&AzureConfigKey::Endpoint), account) {
        (Some(endpoint), _) => endpoint,
        (None, Some(account)) if flag(AzureConfigKey::UseFabricEndpoint) => {
            format!("https://{account}.blob.fabric.microsoft.com")
        }
        (None, Some(account)) => format!("https://{account}.blob.core.windows.net"),
        (None, None) => String::new(),
    }
}

/// What is wrong with a store endpoint, if anything: it must be an `http://` or `https://`
/// URL with a host.
fn endpoint_problem(endpoint: &str) -> Option<&'static str> {
    let Some(rest) = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return Some("is not an http:// or https:// URL");
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("has no valid host");
    }
    None
}

fn unknown_key(key: &str, backend: &str) -> SinkError {
    SinkError::InvalidOption {
        key: key.chars().take(64).collect(),
        reason: format!("not an option of the {backend} store (see object_store's config keys)"),
    }
}

/// Lets one connector (an `Arc`) be handed to a builder that takes it by value.
#[derive(Debug)]
struct SharedConnector(Arc<dyn HttpConnector>);

impl HttpConnector for SharedConnector {
    fn connect(
        &self,
        options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        self.0.connect(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What names an Azure container's account, as object_store resolves it.
    #[test]
    fn the_azure_account_url_follows_object_store() {
        let with = |pairs: &[(AzureConfigKey, &str)]| {
            let b = pairs
                .iter()
                .fold(MicrosoftAzureBuilder::new(), |b, (k, v)| {
                    b.with_config(*k, *v)
                });
            azure_account_url(&b)
        };
        assert_eq!(
            with(&[(AzureConfigKey::AccountName, "acct")]),
            "https://acct.blob.core.windows.net"
        );
        assert_eq!(
            with(&[
                (AzureConfigKey::AccountName, "acct"),
                (AzureConfigKey::UseFabricEndpoint, "Yes")
            ]),
            "https://acct.blob.fabric.microsoft.com"
        );
        assert_eq!(
            with(&[
                (AzureConfigKey::AccountName, "acct"),
                (AzureConfigKey::Endpoint, "http://127.0.0.1:1/acct")
            ]),
            "http://127.0.0.1:1/acct"
        );
        // Every spelling of "true" that object_store takes turns the emulator on.
        for on in ["true", "1", "TRUE", "yes", "on", "y"] {
            let url = with(&[(AzureConfigKey::UseEmulator, on)]);
            assert!(url.ends_with("/devstoreaccount1 (emulator)"), "{on}: {url}");
        }
        assert_eq!(
            with(&[
                (AzureConfigKey::AccountName, "acct"),
                (AzureConfigKey::UseEmulator, "false")
            ]),
            "https://acct.blob.core.windows.net"
        );
    }

    #[test]
    fn a_gcs_base_url_in_the_credentials_is_the_endpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = |url: &str| {
            format!(
                r#"{{"private_key": "k", "private_key_id": "i", "client_email": "e",
                    "disable_oauth": true, "gcs_base_url": "{url}"}}"#
            )
        };
        let file = dir.path().join("sa.json");
        std::fs::write(&file, creds("http://127.0.0.1:4443")).expect("write");
        let path = file.to_str().expect("utf8");
        let endpoint = |pairs: &[&str]| {
            let opts = SinkOptions::parse_pairs(pairs.iter().copied()).expect("parses");
            open_cloud("gs://bucket/p", &opts)
                .expect("opens")
                .expect("cloud")
                .endpoint
        };
        let by_file = format!("google_service_account={path}");
        assert_eq!(
            endpoint(&[&by_file]).as_deref(),
            Some("http://127.0.0.1:4443")
        );
        let by_key = format!(
            "google_service_account_key={}",
            creds("http://127.0.0.1:4444/")
        );
        assert_eq!(
            endpoint(&[&by_key]).as_deref(),
            Some("http://127.0.0.1:4444")
        );
        // A base URL given wins, as in object_store.
        let both = [by_file.as_str(), "google_base_url=http://127.0.0.1:9"];
        assert_eq!(endpoint(&both).as_deref(), Some("http://127.0.0.1:9"));
    }

    #[test]
    fn debug_shows_option_keys_only() {
        let opts = SinkOptions::parse_pairs(["aws_secret_access_key=hunter2-very-secret"])
            .expect("parses");
        let shown = format!("{opts:?}");
        assert!(shown.contains("aws_secret_access_key"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(SinkOptions::parse_pairs(["no-equals-sign"]).is_err());
    }

    #[test]
    fn unknown_options_and_credentials_in_urls_are_rejected() {
        let opts = SinkOptions::parse_pairs(["aws_endpoitn=http://x"]).expect("parses");
        let e = open_cloud("s3://bucket/p", &opts)
            .err()
            .expect("typo rejected");
        assert!(e.to_string().contains("aws_endpoitn"), "{e}");
        let e = open_cloud("s3://key:secret@bucket/p", &SinkOptions::default())
            .err()
            .expect("credentials in URL rejected");
        assert!(!e.to_string().contains("secret@"), "{e}");
        assert!(open_cloud("gs:///p", &SinkOptions::default()).is_err());
        assert!(
            open_cloud("file:///tmp", &SinkOptions::default())
                .expect("not cloud")
                .is_none()
        );
    }
}
