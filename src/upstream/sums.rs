//! The digests a crawl's `SHA256SUMS` files name. With `openpgp_keyring`,
//! each must be signed by a key of the keyring — clearsigned, or with a
//! detached `SHA256SUMS.gpg`, `.sig` or `.asc` beside it — or the crawl
//! fails naming the file and the key, and nothing is published.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt, stream};

use super::autoindex::parse_sha256sums;
use super::{MAX_LISTING_BYTES, Upstreams};
use crate::manifest::{Digest, RelPath};
use crate::openpgp::Untrusted;

pub(super) const SUMS_FILE: &str = "SHA256SUMS";
/// Where a detached signature of a `SHA256SUMS` may be, by suffix.
const SIGNATURES: [&str; 3] = [".gpg", ".sig", ".asc"];
/// The largest detached signature read.
const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// How a clearsigned document starts.
const CLEARSIGNED: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";

/// What the crawl's `SHA256SUMS` files say.
#[derive(Default)]
pub(super) struct Sums {
    /// Digest by full path.
    pub digests: HashMap<String, Digest>,
    /// The keys that signed them (fingerprints), when signatures are required.
    pub signers: Vec<String>,
}

impl Sums {
    /// Whether `path` is a signed list or a signature of one (`SHA256SUMS`,
    /// `InRelease`, `Release.gpg`): files no signed list can cover.
    pub fn is_own(path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        let sums = name == SUMS_FILE || SIGNATURES.iter().any(|s| name.strip_suffix(s) == Some(SUMS_FILE));
        sums || matches!(name, "InRelease" | "Release" | "Release.gpg")
    }

    /// Add what `other` names.
    pub fn merge(&mut self, other: Sums) {
        self.digests.extend(other.digests);
        other.signers.into_iter().for_each(|signer| self.signed_by(Some(signer)));
    }

    /// Note a key that signed one of the lists (each key once, in order).
    pub fn signed_by(&mut self, signer: Option<String>) {
        if let Some(signer) = signer.filter(|s| !self.signers.contains(s)) {
            self.signers.push(signer);
            self.signers.sort();
        }
    }
}

/// The digests of every `SHA256SUMS` among `found`, their signatures
/// checked when a keyring is set. They count against the run's listing
/// bytes, `listed` of which are spent.
pub(super) async fn fetch_sums(
    up: &Upstreams,
    i: usize,
    found: &[&RelPath],
    listed: u64,
    max_page: u64,
) -> Result<Sums> {
    let all: HashSet<&str> = found.iter().map(|p| p.as_str()).collect();
    let lists = found.iter().filter(|p| p.as_str().rsplit('/').next() == Some(SUMS_FILE));
    let mut lists = stream::iter(lists).map(|p| one_list(up, i, p, &all, max_page)).buffer_unordered(up.concurrency);
    let (mut sums, mut bytes) = (Sums::default(), listed);
    while let Some((pairs, len, signer)) = lists.try_next().await? {
        bytes += len;
        if bytes > MAX_LISTING_BYTES {
            bail!("{}: listings and {SUMS_FILE} files larger than {MAX_LISTING_BYTES} bytes in all", up.bases[i]);
        }
        sums.digests.extend(pairs);
        sums.signed_by(signer);
    }
    Ok(sums)
}

/// One `SHA256SUMS`: its entries by full path, its length, and who signed it.
async fn one_list(
    up: &Upstreams,
    i: usize,
    path: &RelPath,
    all: &HashSet<&str>,
    max_page: u64,
) -> Result<(Vec<(String, Digest)>, u64, Option<String>)> {
    let url = up.file_url(i, path);
    let (bytes, _) = up.get_small(&url, max_page).await.with_context(|| url.to_string())?;
    let (text, signer) = match up.keyring.is_empty() {
        true => {
            let text = String::from_utf8_lossy(&bytes);
            (crate::openpgp::cleartext(&text).unwrap_or_else(|| text.into_owned()), None)
        }
        false => {
            let (text, signer) = signed_text(up, i, path, &bytes, all).await?;
            (text, Some(signer))
        }
    };
    let prefix = &path.as_str()[..path.as_str().len() - SUMS_FILE.len()];
    let pairs = parse_sha256sums(&text).map_err(|e| anyhow!("{url}: {e}"))?;
    let pairs = pairs.into_iter().map(|(name, d)| (format!("{prefix}{name}"), d)).collect();
    Ok((pairs, bytes.len() as u64, signer))
}

/// The text of a `SHA256SUMS` whose signature by a keyring key is good,
/// and that key's fingerprint.
async fn signed_text(
    up: &Upstreams,
    i: usize,
    path: &RelPath,
    bytes: &[u8],
    all: &HashSet<&str>,
) -> Result<(String, String)> {
    if bytes.starts_with(CLEARSIGNED) {
        return verified_text(up, i, path, bytes, None).await;
    }
    let Some(sig_path) = SIGNATURES.iter().map(|s| format!("{path}{s}")).find(|p| all.contains(p.as_str())) else {
        let why = "no signature beside it (SHA256SUMS.gpg, .sig or .asc) and it is not clearsigned, but openpgp_keyring requires one";
        return Err(anyhow!("{}: not trusted: {why}", up.file_url(i, path)));
    };
    let sig_path = RelPath::parse(&sig_path).map_err(|e| anyhow!("{sig_path}: {e}"))?;
    verified_text(up, i, path, bytes, Some(&sig_path)).await
}

/// `bytes`, the file at `path`, with a good signature by a keyring key:
/// the detached one at `detached`, or else its own (clearsigned). Its text
/// and the key's fingerprint.
pub(super) async fn verified_text(
    up: &Upstreams,
    i: usize,
    path: &RelPath,
    bytes: &[u8],
    detached: Option<&RelPath>,
) -> Result<(String, String)> {
    let url = up.file_url(i, path);
    let now = SystemTime::now();
    let untrusted = |why: Untrusted| anyhow!("{url}: not trusted: {why}");
    let Some(sig_path) = detached else {
        return up.keyring.check_clearsigned(&String::from_utf8_lossy(bytes), now).map_err(untrusted);
    };
    let sig_url = up.file_url(i, sig_path);
    let (signature, _) = up.get_small(&sig_url, MAX_SIGNATURE_BYTES).await.with_context(|| sig_url.to_string())?;
    let signer = up.keyring.check_detached(bytes, &signature, now).map_err(untrusted)?;
    Ok((String::from_utf8_lossy(bytes).into_owned(), signer))
}
