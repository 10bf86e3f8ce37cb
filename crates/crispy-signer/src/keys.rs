//! Signing and verifying keys: Ed25519 (PKCS#8 / SPKI PEM files, interoperable with
//! `openssl genpkey -algorithm ed25519`) and HMAC-SHA256 shared secrets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crispy_core::ManifestSignature;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, Verifier as _};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Algorithm name of Ed25519 signatures in manifests.
pub const ED25519: &str = "ed25519";
/// Algorithm name of HMAC-SHA256 tags in manifests.
pub const HMAC_SHA256: &str = "hmac-sha256";

/// Shortest HMAC secret accepted (bytes).
pub const MIN_HMAC_SECRET: usize = 16;

/// Problems with key files and secrets. Messages name the file, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("key file {path} is not {expected}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What it should have been.
        expected: &'static str,
    },
    /// `keygen` would overwrite an existing file.
    #[error("{path} already exists; not overwriting a key")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// An HMAC secret that is too short.
    #[error("the HMAC secret is {len} bytes; at least {MIN_HMAC_SECRET} are required")]
    ShortSecret {
        /// Its length.
        len: usize,
    },
    /// The system's random number generator failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The manifest carries no signature.
    #[error("unsigned")]
    Unsigned,
    /// No key with the manifest's key id was given.
    #[error("signed with key {key_id} ({alg}), which was not given")]
    UnknownKey {
        /// The manifest's key id.
        key_id: String,
        /// The manifest's algorithm.
        alg: String,
    },
    /// The signature does not match the manifest: tampered, or a wrong key with a
    /// colliding id.
    #[error("bad signature (key {key_id})")]
    BadSignature {
        /// The manifest's key id.
        key_id: String,
    },
}

/// A key that signs manifests. `Debug` never shows key material.
pub enum SigningKey {
    /// An Ed25519 private key.
    Ed25519 {
        /// The key.
        key: Box<ed25519_dalek::SigningKey>,
        /// Its id (from the public key).
        key_id: String,
    },
    /// An HMAC-SHA256 shared secret.
    Hmac {
        /// The secret.
        secret: Zeroizing<Vec<u8>>,
        /// Its id (from a hash of the secret).
        key_id: String,
    },
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (alg, key_id) = match self {
            SigningKey::Ed25519 { key_id, .. } => (ED25519, key_id),
            SigningKey::Hmac { key_id, .. } => (HMAC_SHA256, key_id),
        };
        f.debug_struct("SigningKey")
            .field("alg", &alg)
            .field("key_id", key_id)
            .finish_non_exhaustive()
    }
}

/// The id of an Ed25519 public key: `ed25519-` and 16 hex digits of its SHA-256.
pub fn ed25519_key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    format!(
        "ed25519-{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..16]
    )
}

/// The id of an HMAC secret: `hmac-` and 16 hex digits of a domain-separated SHA-256.
pub fn hmac_key_id(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"crispy-hmac-key-id\0");
    h.update(secret);
    format!("hmac-{}", &hex::encode(h.finalize())[..16])
}

fn read_text(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
}

impl SigningKey {
    /// Loads an Ed25519 private key from a PKCS#8 PEM file (`crispy keygen`, or
    /// `openssl genpkey -algorithm ed25519`).
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_text(path)?;
        let key =
            ed25519_dalek::SigningKey::from_pkcs8_pem(&text).map_err(|_| KeyError::Format {
                path: path.to_owned(),
                expected: "an Ed25519 private key (PKCS#8 PEM)",
            })?;
        let key_id = ed25519_key_id(&key.verifying_key());
        Ok(SigningKey::Ed25519 {
            key: Box::new(key),
            key_id,
        })
    }

    /// An HMAC-SHA256 key from a shared secret (at least [`MIN_HMAC_SECRET`] bytes).
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_HMAC_SECRET {
            return Err(KeyError::ShortSecret { len: secret.len() });
        }
        Ok(SigningKey::Hmac {
            key_id: hmac_key_id(secret),
            secret: Zeroizing::new(secret.to_vec()),
        })
    }

    /// The key's id, recorded in every manifest it signs.
    pub fn key_id(&self) -> &str {
        match self {
            SigningKey::Ed25519 { key_id, .. } | SigningKey::Hmac { key_id, .. } => key_id,
        }
    }

    /// Signs `canonical` (a manifest's canonical bytes).
    pub fn sign(&self, canonical: &[u8]) -> ManifestSignature {
        match self {
            SigningKey::Ed25519 { key, key_id } => ManifestSignature {
                alg: ED25519.to_owned(),
                key_id: key_id.clone(),
                value: hex::encode(key.sign(canonical).to_bytes()),
            },
            SigningKey::Hmac { secret, key_id } => ManifestSignature {
                alg: HMAC_SHA256.to_owned(),
                key_id: key_id.clone(),
                value: hex::encode(hmac_tag(secret, canonical)),
            },
        }
    }
}

fn hmac_tag(secret: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The keys a verifier trusts, by key id.
#[derive(Default)]
pub struct VerifyingKeys {
    ed25519: HashMap<String, ed25519_dalek::VerifyingKey>,
    hmac: HashMap<String, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for VerifyingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.ed25519.keys().chain(self.hmac.keys()).collect();
        ids.sort();
        f.debug_struct("VerifyingKeys")
            .field("key_ids", &ids)
            .finish()
    }
}

impl VerifyingKeys {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an Ed25519 public key from an SPKI PEM file (`PATH.pub` of `crispy keygen`).
    /// Returns its key id.
    pub fn add_public_pem_file(&mut self, path: &Path) -> Result<String, KeyError> {
        let text = read_text(path)?;
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&text).map_err(|_| {
            KeyError::Format {
                path: path.to_owned(),
                expected: "an Ed25519 public key (SPKI PEM)",
            }
        })?;
        let id = ed25519_key_id(&key);
        self.ed25519.insert(id.clone(), key);
        Ok(id)
    }

    /// Adds an HMAC secret. Returns its key id.
    pub fn add_hmac(&mut self, secret: &[u8]) -> Result<String, KeyError> {
        if secret.len() < MIN_HMAC_SECRET {
            return Err(KeyError::ShortSecret { len: secret.len() });
        }
        let id = hmac_key_id(secret);
        self.hmac
            .insert(id.clone(), Zeroizing::new(secret.to_vec()));
        Ok(id)
    }

    /// True when no key was added.
    pub fn is_empty(&self) -> bool {
        self.ed25519.is_empty() && self.hmac.is_empty()
    }

    /// Checks `signature` over `canonical`.
    pub fn verify(
        &self,
        canonical: &[u8],
        signature: Option<&ManifestSignature>,
    ) -> Result<(), VerifyError> {
        let Some(sig) = signature else {
            return Err(VerifyError::Unsigned);
        };
        let bad = || VerifyError::BadSignature {
            key_id: sig.key_id.clone(),
        };
        let unknown = || VerifyError::UnknownKey {
            key_id: sig.key_id.clone(),
            alg: sig.alg.clone(),
        };
        let value = hex::decode(&sig.value).map_err(|_| bad())?;
        match sig.alg.as_str() {
            ED25519 => {
                let key = self.ed25519.get(&sig.key_id).ok_or_else(unknown)?;
                let bytes: [u8; 64] = value.try_into().map_err(|_| bad())?;
                key.verify(canonical, &ed25519_dalek::Signature::from_bytes(&bytes))
                    .map_err(|_| bad())
            }
            HMAC_SHA256 => {
                let secret = self.hmac.get(&sig.key_id).ok_or_else(unknown)?;
                let mut mac =
                    <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| bad())?;
                mac.update(canonical);
                // Constant-time comparison.
                mac.verify_slice(&value).map_err(|_| bad())
            }
            _ => Err(unknown()),
        }
    }
}

/// Writes a new Ed25519 key pair: the private key to `out` (PKCS#8 PEM, mode 0600) and the
/// public key to `out.pub` (SPKI PEM). Refuses to overwrite either. Returns the key id.
pub fn generate_keypair(out: &Path) -> Result<String, KeyError> {
    let public_path = public_key_path(out);
    for p in [out, public_path.as_path()] {
        // A link to nowhere is there too: creating the file would fail (or follow it).
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: p.to_owned() });
        }
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Random("cannot encode the key".to_owned()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| KeyError::Random("cannot encode the public key".to_owned()))?;
    write_pair(out, private.as_bytes(), &public_path, public.as_bytes())?;
    Ok(ed25519_key_id(&key.verifying_key()))
}

/// Writes a new private key, then its public key; when the second cannot be written (a
/// file appeared there meanwhile, a full disk), the first (create-only, so ours) is removed
/// again: never half a pair.
fn write_pair(
    private_path: &Path,
    private: &[u8],
    public_path: &Path,
    public: &[u8],
) -> Result<(), KeyError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    write_new(private_path, private, 0o600).map_err(io(private_path))?;
    if let Err(e) = write_new(public_path, public, 0o644) {
        let _ = std::fs::remove_file(private_path);
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: public_path.to_owned(),
            }
        } else {
            io(public_path)(e)
        });
    }
    Ok(())
}

/// `PATH.pub` for a private key at `PATH`.
pub fn public_key_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Creates `path` (never replacing a file) with `mode`, writes and syncs `data`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("signing.key");
        let id = generate_keypair(&out).expect("keygen");
        assert!(id.starts_with("ed25519-") && id.len() == 24, "{id}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = SigningKey::from_pem_file(&out).expect("load");
        assert_eq!(key.key_id(), id);
        assert!(!format!("{key:?}").contains("PRIVATE"), "{key:?}");
        let mut keys = VerifyingKeys::new();
        assert_eq!(
            keys.add_public_pem_file(&public_key_path(&out))
                .expect("pub"),
            id
        );
        let sig = key.sign(b"manifest");
        assert_eq!(keys.verify(b"manifest", Some(&sig)), Ok(()));
        assert!(matches!(
            keys.verify(b"manifesT", Some(&sig)),
            Err(VerifyError::BadSignature { .. })
        ));
        assert!(matches!(
            generate_keypair(&out),
            Err(KeyError::Exists { .. })
        ));
        // A public key is not a private key, and the error names the file only.
        let err = SigningKey::from_pem_file(&public_key_path(&out))
            .expect_err("not private")
            .to_string();
        assert!(
            err.contains("signing.key.pub") && !err.contains("BEGIN"),
            "{err}"
        );
    }

    /// A dangling link where the public key goes: nothing is written, not half a pair.
    #[cfg(unix)]
    #[test]
    fn keygen_leaves_no_half_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("k");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), public_key_path(&out))
            .expect("symlink");
        assert!(matches!(
            generate_keypair(&out),
            Err(KeyError::Exists { path }) if path == public_key_path(&out)
        ));
        assert!(out.symlink_metadata().is_err(), "no private key left");
        assert!(
            !dir.path().join("nowhere").exists(),
            "the link not followed"
        );
        // A public key file that appears after the check: the private key goes again.
        let (private, public) = (dir.path().join("late"), dir.path().join("late.pub"));
        std::fs::write(&public, b"someone else's").expect("write");
        assert!(matches!(
            write_pair(&private, b"secret", &public, b"pub"),
            Err(KeyError::Exists { path }) if path == public
        ));
        assert!(private.symlink_metadata().is_err(), "no private key left");
        assert_eq!(std::fs::read(&public).expect("read"), b"someone else's");
    }

    #[test]
    fn openssl_generated_keys_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("k.pem");
        let public = dir.path().join("k.pub");
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public)
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "the openssl CLI is part of the test tooling");
        let signer = SigningKey::from_pem_file(&key).expect("openssl private key");
        let mut keys = VerifyingKeys::new();
        let id = keys
            .add_public_pem_file(&public)
            .expect("openssl public key");
        assert_eq!(signer.key_id(), id);
        assert_eq!(keys.verify(b"x", Some(&signer.sign(b"x"))), Ok(()));
    }

    #[test]
    fn hmac_keys_verify_only_with_the_same_secret() {
        let key = SigningKey::hmac(b"0123456789abcdef-shared").expect("key");
        let sig = key.sign(b"m");
        assert_eq!(sig.alg, HMAC_SHA256);
        assert_eq!(sig.value.len(), 64);
        let mut right = VerifyingKeys::new();
        right.add_hmac(b"0123456789abcdef-shared").expect("add");
        assert_eq!(right.verify(b"m", Some(&sig)), Ok(()));
        let mut wrong = VerifyingKeys::new();
        wrong.add_hmac(b"0123456789abcdef-other!").expect("add");
        assert!(matches!(
            wrong.verify(b"m", Some(&sig)),
            Err(VerifyError::UnknownKey { .. })
        ));
        assert!(matches!(
            SigningKey::hmac(b"short"),
            Err(KeyError::ShortSecret { len: 5 })
        ));
        assert_eq!(right.verify(b"m", None), Err(VerifyError::Unsigned));
    }
}
