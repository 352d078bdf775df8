//! Signed manifests: a detached minisign (Ed25519) signature beside the
//! manifest, `upmirror-manifest.json.minisig`, that the `minisign` tool
//! checks too. With `trusted_keys`, a listing is accepted only with a valid
//! signature by one of them, whoever served it (https or a carried disk).

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use crate::config::ConfigError;

/// The signature's file name: the manifest's, plus this.
pub const SUFFIX: &str = ".minisig";
/// The name of the signature of the manifest named `manifest`.
pub fn beside(manifest: &str) -> String {
    format!("{manifest}{SUFFIX}")
}

/// The largest signature file read.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// A manifest as its upstream signed it: the bytes and the detached
/// signature, kept as they came so that the next tier checks the same.
#[derive(Clone, Debug)]
pub struct Signed {
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Signed {
    /// The manifest at `path` and the signature beside it, if there is one.
    pub fn read(path: &Path) -> Result<Option<Signed>> {
        let sig_path = beside(&path.display().to_string());
        let signature = match std::fs::read(&sig_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other.with_context(|| format!("could not read {sig_path}"))?,
        };
        let manifest = std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
        Ok(Some(Signed { manifest, signature }))
    }
}

/// The public keys a listing may be signed by (several during a rotation).
#[derive(Clone, Default)]
pub struct TrustedKeys(Vec<(String, PublicKey)>);

impl TrustedKeys {
    /// Each of `specs` is a minisign public key file or the key itself
    /// (`RW…`, as the file's second line).
    pub fn load(specs: &[String]) -> Result<TrustedKeys, ConfigError> {
        let mut keys = Vec::new();
        for spec in specs {
            let bad = |why: String| ConfigError(format!("trusted key {spec}: {why}"));
            let key = if Path::new(spec).is_file() {
                let text = std::fs::read_to_string(spec).map_err(|e| bad(e.to_string()))?;
                PublicKeyBox::from_string(&text).and_then(PublicKeyBox::into_public_key)
            } else {
                PublicKey::from_base64(spec.trim())
            };
            let key = key.map_err(|e| bad(format!("not a minisign public key ({e})")))?;
            keys.push((key_id(key.keynum()), key));
        }
        Ok(TrustedKeys(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Check `signature` over `manifest`; the id of the trusted key that
    /// made it. An untrusted key, a malformed or a wrong signature is refused.
    pub fn verify(&self, manifest: &[u8], signature: &[u8]) -> Result<String> {
        let text = std::str::from_utf8(signature).map_err(|_| anyhow!("the signature is not text"))?;
        let sig = SignatureBox::from_string(text).map_err(|e| anyhow!("the signature is malformed ({e})"))?;
        let id = key_id(sig.keynum());
        let Some((_, key)) = self.0.iter().find(|(known, _)| *known == id) else {
            bail!("signed by key {id}, which is not in trusted_keys");
        };
        minisign::verify(key, &sig, Cursor::new(manifest), true, false, false)
            .map_err(|e| anyhow!("the signature by key {id} does not match the manifest ({e})"))?;
        Ok(id)
    }
}

/// A detached signature of `manifest` by the minisign secret key in
/// `key_file` (encrypted keys take their password from
/// `UPMIRROR_SIGNING_PASSWORD`).
pub fn sign(manifest: impl std::io::Read, key_file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(key_file).with_context(|| format!("signing key {}", key_file.display()))?;
    let sealed = SecretKeyBox::from_string(&text)
        .map_err(|e| anyhow!("signing key {}: not a minisign secret key ({e})", key_file.display()))?;
    let key: SecretKey = match std::env::var("UPMIRROR_SIGNING_PASSWORD") {
        Ok(password) => sealed.into_secret_key(Some(password)),
        Err(_) => without_checksum(&text).map_or_else(|| sealed.into_unencrypted_secret_key(), Ok),
    }
    .map_err(|e| {
        anyhow!(
            "signing key {}: {e}; a password-protected key (minisign -G) needs its password in UPMIRROR_SIGNING_PASSWORD",
            key_file.display()
        )
    })?;
    let sig = minisign::sign(None, &key, manifest, None, Some("signed by upmirror"))
        .map_err(|e| anyhow!("could not sign: {e}"))?;
    Ok(sig.into_string())
}

/// A secret key made without a password by minisign 0.11 (`minisign -G
/// -W`), which leaves its checksum zero: taken when it is whole by another
/// test, a signature it makes verifying with the public half it holds.
fn without_checksum(text: &str) -> Option<SecretKey> {
    use base64::Engine as _;
    // Algorithms (6 bytes), KDF salt and limits (48), key number (8), secret key (64), checksum (32).
    const LEN: usize = 6 + 48 + 8 + 64 + 32;
    let line = text.lines().nth(1)?.trim();
    let bytes = base64::engine::general_purpose::STANDARD.decode(line).ok()?;
    let unencrypted = bytes.len() == LEN && bytes[..6] == *b"Ed\0\0B2" && bytes[LEN - 32..].iter().all(|b| *b == 0);
    if !unencrypted {
        return None;
    }
    let key = SecretKey::from_bytes(&bytes).ok()?;
    let public = [&b"Ed"[..], &bytes[54..62], &bytes[94..126]].concat();
    let public = PublicKey::from_bytes(&public).ok()?;
    let probe = minisign::sign(None, &key, Cursor::new(b"probe"), None, None).ok()?;
    minisign::verify(&public, &probe, Cursor::new(b"probe"), true, false, false).ok()?;
    Some(key)
}

/// minisign's key id: the key number as 16 hex digits.
fn key_id(keynum: &[u8]) -> String {
    let mut n = [0u8; 8];
    n.copy_from_slice(&keynum[..8.min(keynum.len())]);
    format!("{:016X}", u64::from_le_bytes(n))
}
