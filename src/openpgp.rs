//! OpenPGP trust, for vendors that sign that way (`SHA256SUMS.gpg`, apt's
//! `InRelease`): a keyring of public keys (armored or binary files, several
//! keys each) and the check of a detached or clearsigned signature by them.
//! A document is trusted when at least one signature on it is good — made
//! by a keyring key, or its signing subkey, that is neither expired nor
//! revoked, and not expired itself — and none is bad. A signature by a key
//! not in the keyring is neither: alone, it is not trusted.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, Timestamp};

use crate::config::ConfigError;

/// The largest keyring file read.
const MAX_KEYRING_BYTES: u64 = 1 << 20;

/// Why a signed document is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("it carries no signature")]
    Unsigned,
    #[error("its signature is unreadable ({0})")]
    Malformed(String),
    #[error("the signature by key {0} does not match it")]
    Bad(String),
    #[error("it is signed by key {0}, which is not in openpgp_keyring")]
    Unknown(String),
    #[error("it is signed by key {0}, which expired at {1}")]
    KeyExpired(String, String),
    #[error("it is signed by key {0}, which is revoked")]
    Revoked(String),
    #[error("its signature by key {0} expired at {1}")]
    SignatureExpired(String, String),
}

/// The public keys a signature is checked against.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

/// What one signature says.
enum Verdict {
    Good(String),
    Unknown(String),
    Bad(Untrusted),
}

impl Keyring {
    /// The keys of these files; a file that holds none, or is unreadable, is
    /// a configuration error naming it.
    pub fn load(files: &[PathBuf]) -> Result<Keyring, ConfigError> {
        let mut keys = Vec::new();
        for file in files {
            let err = |why: String| ConfigError(format!("openpgp_keyring {}: {why}", file.display()));
            let bytes = read_bounded(file).map_err(|e| err(e.to_string()))?;
            let (parsed, _) = SignedPublicKey::from_reader_many(&bytes[..]).map_err(|e| err(e.to_string()))?;
            let found: Vec<SignedPublicKey> = parsed.collect::<Result<_, _>>().map_err(|e| err(e.to_string()))?;
            if found.is_empty() {
                return Err(err("holds no OpenPGP public key (export one with gpg --export KEYID)".into()));
            }
            keys.extend(found);
        }
        Ok(Keyring { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Check `content` against a detached signature (armored or binary, one
    /// or several signatures); the fingerprint of the key that made a good one.
    pub fn check_detached(&self, content: &[u8], signature: &[u8], now: SystemTime) -> Result<String, Untrusted> {
        let malformed = |e: pgp::errors::Error| Untrusted::Malformed(e.to_string());
        let (parsed, _) = DetachedSignature::from_reader_many(signature).map_err(malformed)?;
        let sigs: Vec<Signature> =
            parsed.map(|s| s.map(|s| s.signature)).collect::<Result<_, _>>().map_err(malformed)?;
        self.decide(sigs.iter().map(|sig| self.verdict(sig, content, now)))
    }

    /// Check a clearsigned document; its text (line ends as `\n`) and the
    /// fingerprint of the key that made a good signature. (Split here in
    /// one pass: rPGP 0.21's cleartext reader searches the whole text again
    /// at every line, 38 s for a 10.9 MiB `SHA256SUMS`.)
    pub fn check_clearsigned(&self, document: &str, now: SystemTime) -> Result<(String, String), Untrusted> {
        let (body, signature) = split_clearsigned(document).ok_or(Untrusted::Malformed(
            "not a clearsigned document (-----BEGIN PGP SIGNED MESSAGE-----, text, -----BEGIN PGP SIGNATURE-----)"
                .into(),
        ))?;
        let lines = signed_lines(body);
        let signer = self.check_detached(lines.join("\r\n").as_bytes(), signature.as_bytes(), now)?;
        Ok((lines.iter().map(|l| format!("{l}\n")).collect(), signer))
    }

    /// At least one good and no bad.
    fn decide(&self, verdicts: impl Iterator<Item = Verdict>) -> Result<String, Untrusted> {
        let (mut good, mut unknown) = (None, None);
        for verdict in verdicts {
            match verdict {
                Verdict::Bad(why) => return Err(why),
                Verdict::Good(fp) => good = good.or(Some(fp)),
                Verdict::Unknown(id) => unknown = unknown.or(Some(id)),
            }
        }
        good.ok_or(unknown.map_or(Untrusted::Unsigned, Untrusted::Unknown))
    }

    fn verdict(&self, sig: &Signature, content: &[u8], now: SystemTime) -> Verdict {
        for key in &self.keys {
            let fp = format!("{:X}", key.fingerprint());
            let (verified, subkey) = if issued_by(sig, &key.primary_key) {
                (sig.verify(&key.primary_key, content), None)
            } else if let Some(sub) = key.public_subkeys.iter().find(|s| issued_by(sig, &s.key)) {
                (sig.verify(&sub.key, content), Some(sub))
            } else {
                continue;
            };
            if verified.is_err() {
                return Verdict::Bad(Untrusted::Bad(fp));
            }
            return match usable(key, subkey, now).and_then(|()| signature_alive(sig, now)) {
                Ok(()) => Verdict::Good(fp),
                Err(Fault::Revoked) => Verdict::Bad(Untrusted::Revoked(fp)),
                Err(Fault::KeyExpired(at)) => Verdict::Bad(Untrusted::KeyExpired(fp, at)),
                Err(Fault::SignatureExpired(at)) => Verdict::Bad(Untrusted::SignatureExpired(fp, at)),
            };
        }
        let issuer = sig.issuer_fingerprint().first().map(|f| format!("{f:X}"));
        Verdict::Unknown(issuer.or_else(|| sig.issuer_key_id().first().map(hex::encode_upper)).unwrap_or_default())
    }
}

/// The text of a clearsigned document, its signature unchecked (for a
/// `SHA256SUMS` read without `openpgp_keyring`); none when it is not one.
pub fn cleartext(document: &str) -> Option<String> {
    let (body, _) = split_clearsigned(document)?;
    Some(signed_lines(body).iter().map(|l| format!("{l}\n")).collect())
}

/// The lines a clearsigned body signs: dash escapes undone, trailing blanks cut.
fn signed_lines(body: &str) -> Vec<&str> {
    body.lines().map(|l| l.strip_prefix("- ").unwrap_or(l).trim_end_matches([' ', '\t', '\r'])).collect()
}

/// A clearsigned document's body (its last line break is the armor's) and
/// its signature block; none when it is not one.
fn split_clearsigned(document: &str) -> Option<(&str, &str)> {
    const SIGNATURE: &str = "\n-----BEGIN PGP SIGNATURE-----";
    let (first, mut rest) = document.split_once('\n')?;
    if first.trim_end() != "-----BEGIN PGP SIGNED MESSAGE-----" {
        return None;
    }
    // Armor headers (`Hash: SHA512`, or none) end at the first empty line.
    loop {
        let (line, tail) = rest.split_once('\n')?;
        rest = tail;
        if line.trim_end_matches('\r').is_empty() {
            break;
        }
    }
    let end = rest.find(SIGNATURE)?;
    let body = rest[..end].strip_suffix('\r').unwrap_or(&rest[..end]);
    Some((body, &rest[end + 1..]))
}

/// Why a key or signature that verifies is still not trusted.
enum Fault {
    Revoked,
    KeyExpired(String),
    SignatureExpired(String),
}

fn issued_by(sig: &Signature, key: &impl KeyDetails) -> bool {
    let fp = key.fingerprint();
    let id = key.legacy_key_id();
    sig.issuer_fingerprint().iter().any(|f| **f == fp) || sig.issuer_key_id().iter().any(|k| **k == id)
}

/// The primary key (and the subkey that signed, if one did) not revoked
/// and not expired at `now`, by their own valid self-signatures.
fn usable(key: &SignedPublicKey, subkey: Option<&SignedPublicSubKey>, now: SystemTime) -> Result<(), Fault> {
    let primary = &key.primary_key;
    if key.details.revocation_signatures.iter().any(|s| s.verify_key(primary).is_ok()) {
        return Err(Fault::Revoked);
    }
    let certified = key.details.users.iter().flat_map(|u| {
        u.signatures
            .iter()
            .filter(|s| issued_by(s, primary) && s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
    });
    let direct = key.details.direct_signatures.iter().filter(|s| s.verify_key(primary).is_ok());
    expiry(primary.created_at(), certified.chain(direct), now)?;
    let Some(sub) = subkey else { return Ok(()) };
    let valid = |s: &&Signature| s.verify_subkey_binding(primary, &sub.key).is_ok();
    let bindings: Vec<&Signature> = sub.signatures.iter().filter(valid).collect();
    if bindings.iter().any(|s| s.typ() == Some(SignatureType::SubkeyRevocation)) {
        return Err(Fault::Revoked);
    }
    let binds = bindings.into_iter().filter(|s| s.typ() == Some(SignatureType::SubkeyBinding));
    expiry(sub.key.created_at(), binds, now)
}

/// Expired at `now` by the newest of `self_sigs`' key expiration time.
fn expiry<'a>(
    created: Timestamp,
    self_sigs: impl Iterator<Item = &'a Signature>,
    now: SystemTime,
) -> Result<(), Fault> {
    let newest = self_sigs.max_by_key(|s| s.created().map(Timestamp::as_secs));
    let lifetime = newest.and_then(Signature::key_expiration_time).map(|d| d.as_secs()).filter(|d| *d > 0);
    match lifetime.map(|d| SystemTime::from(created) + Duration::from_secs(d.into())) {
        Some(end) if end <= now => Err(Fault::KeyExpired(rfc3339(end))),
        _ => Ok(()),
    }
}

fn signature_alive(sig: &Signature, now: SystemTime) -> Result<(), Fault> {
    let lifetime = sig.signature_expiration_time().map(|d| d.as_secs()).filter(|d| *d > 0);
    match sig.created().zip(lifetime).map(|(c, d)| SystemTime::from(c) + Duration::from_secs(d.into())) {
        Some(end) if end <= now => Err(Fault::SignatureExpired(rfc3339(end))),
        _ => Ok(()),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::open(path)?, MAX_KEYRING_BYTES), &mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clearsigned_document_splits_into_body_and_signature() {
        let doc = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n- -- dashed\nline  \n\n-----BEGIN PGP SIGNATURE-----\nAA\n-----END PGP SIGNATURE-----\n";
        let (body, sig) = split_clearsigned(doc).unwrap();
        assert_eq!(body, "- -- dashed\nline  \n");
        assert!(sig.starts_with("-----BEGIN PGP SIGNATURE-----"));
        let bare = "-----BEGIN PGP SIGNED MESSAGE-----\r\n\r\na\r\n\r\nb\r\n-----BEGIN PGP SIGNATURE-----\r\n";
        assert_eq!(split_clearsigned(bare).unwrap().0, "a\r\n\r\nb");
        assert!(split_clearsigned("Hash: x\n\nbody\n").is_none());
        assert!(split_clearsigned("-----BEGIN PGP SIGNED MESSAGE-----\n\nno signature\n").is_none());
    }
}
