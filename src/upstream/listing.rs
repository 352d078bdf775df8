//! A manifest listing: fetched conditionally on the last accepted
//! validators, its signature checked against the trusted keys, and the
//! trace of the tiers read beside it.

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use reqwest::header::{DATE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::errors::{Spool, check_status};
use super::{Dates, ListOutcome, Listing, MAX_LISTING_BYTES, Source, Upstreams, Validators, file_path};
use crate::manifest::{Digest, Manifest};

impl Upstreams {
    pub(super) async fn fetch_manifest(
        &self,
        upstream: usize,
        url: &Url,
        known: Option<Validators>,
    ) -> Result<ListOutcome> {
        let (doc, validators) = if url.scheme() == "file" {
            let bytes = read_local(&file_path(&self.bases[upstream])?, &self.manifest_name, MAX_LISTING_BYTES).await?;
            (Document::of(&bytes)?, Validators::default())
        } else {
            match self.retrying(|| self.get_manifest(url, known.as_ref())).await? {
                Some(fetched) => fetched,
                None => return Ok(ListOutcome::Unchanged { upstream, url: url.clone() }),
            }
        };
        // A signed manifest is kept whole, to be checked and then published as it came.
        let bytes = if self.trusted.is_empty() { None } else { Some(doc.bytes()?) };
        let signature = match &bytes {
            Some(bytes) => Some(self.check_signature(upstream, bytes).await?),
            None => None,
        };
        let manifest = doc.parse()?;
        let trace = self.fetch_trace(upstream).await;
        let deltas = self.fetch_deltas(upstream).await;
        let identity = doc.sha256;
        Ok(ListOutcome::Fetched(Box::new(Listing {
            upstream,
            url: url.clone(),
            source: Source::Manifest,
            identity,
            validators,
            manifest,
            signed_by: signature.as_ref().map(|(id, _)| id.clone()),
            unsigned_files: None,
            signed: signature
                .zip(bytes)
                .map(|((_, signature), manifest)| crate::signature::Signed { manifest, signature }),
            dates: Dates::EXACT,
            server: None,
            rechecks: Default::default(),
            trace,
            deltas,
        })))
    }

    /// The manifest's bytes and validators, or `None` when the upstream
    /// answers 304 to the validators we sent.
    async fn get_manifest(&self, url: &Url, known: Option<&Validators>) -> Result<Option<(Document, Validators)>> {
        let _slot = self.slot(url).await;
        let mut req = self.clients.first.get(url.clone());
        if let Some(v) = known {
            if let Some(etag) = &v.etag {
                req = req.header(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header(IF_MODIFIED_SINCE, lm);
            }
        }
        let resp = self.send(req, super::transport::Route::First).await?;
        if resp.status() == StatusCode::NOT_MODIFIED && known.is_some() {
            return Ok(None);
        }
        let resp = check_status(resp)?;
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let validators = Validators::of(header(ETAG), header(LAST_MODIFIED), header(DATE).as_deref());
        Ok(Some((self.spool_capped(resp, MAX_LISTING_BYTES, &Default::default()).await?, validators)))
    }

    /// The trace of the tiers beside upstream `i`'s manifest; none when there
    /// is none, or it cannot be read: it informs, it never fails a run.
    async fn fetch_trace(&self, i: usize) -> Vec<crate::trace::Tier> {
        let bytes = self.read_beside(i, crate::trace::TRACE_FILE, crate::trace::MAX_TRACE_BYTES).await;
        bytes.ok().and_then(|b| crate::trace::parse(&b)).unwrap_or_default()
    }

    /// The patches upstream `i` offers (`upmirror-deltas.json`): none when
    /// it has no list; a list that does not parse is told and not used
    /// (patches only save bytes, the whole files are there).
    async fn fetch_deltas(&self, i: usize) -> Vec<crate::delta::Delta> {
        let Ok(bytes) = self.read_beside(i, crate::delta::DELTAS_FILE, crate::delta::MAX_LIST_BYTES).await else {
            return Vec::new();
        };
        crate::delta::parse_list(&bytes).unwrap_or_else(|e| {
            self.tell(format!("{}: {e}; whole files are fetched", crate::delta::DELTAS_FILE));
            Vec::new()
        })
    }

    /// A small file at upstream `i`'s base, beside its manifest (the
    /// signature, the trace), at most `cap` bytes.
    async fn read_beside(&self, i: usize, name: &str, cap: u64) -> Result<Vec<u8>> {
        let base = &self.bases[i];
        if base.scheme() == "file" {
            return read_local(&file_path(base)?, name, cap).await;
        }
        let url = base.join(name).with_context(|| format!("{name} at {base}"))?;
        Ok(self.get_small(&url, cap).await?.0)
    }

    /// The manifest's detached signature, which must verify by one of the
    /// trusted keys: the key's id and the signature. Asked only with
    /// trusted keys.
    async fn check_signature(&self, upstream: usize, bytes: &[u8]) -> Result<(String, Vec<u8>)> {
        let name = crate::signature::beside(&self.manifest_name);
        let signature = self.read_beside(upstream, &name, crate::signature::MAX_SIGNATURE_BYTES).await;
        // A new error, not a context: a missing signature must not read as a missing manifest.
        let signature = signature.map_err(|e| {
            anyhow!(
                "no signature {name} beside the manifest ({}); trusted_keys requires one",
                crate::output::error_line(&e)
            )
        })?;
        let id = self.trusted.verify(bytes, &signature)?;
        Ok((id, signature))
    }
}

/// A manifest document as it came: in an unnamed temporary file, with its
/// sha256 (the listing's identity). Parsed from there, so a million entries
/// are never held beside the document.
pub(super) struct Document {
    file: std::fs::File,
    len: u64,
    hasher: Sha256,
    pub sha256: Digest,
}

impl Document {
    pub fn new() -> Result<Document> {
        let file = tempfile::tempfile().map_err(|e| Spool(format!("no temporary file for the listing: {e}")))?;
        Ok(Document { file, len: 0, hasher: Sha256::new(), sha256: Digest([0; 32]) })
    }

    /// A document of `bytes` read whole (a `file://` upstream's).
    fn of(bytes: &[u8]) -> Result<Document> {
        let mut doc = Document::new()?;
        doc.write(bytes)?;
        doc.finish()
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        std::io::Write::write_all(&mut self.file, bytes)
            .map_err(|e| Spool(format!("could not keep the listing in a temporary file: {e}")).into())
    }

    pub fn finish(mut self) -> Result<Document> {
        self.sha256 = Digest(self.hasher.finalize_reset().into());
        Ok(self)
    }

    /// From the start, through a buffer.
    fn reader(&self) -> Result<std::io::BufReader<std::fs::File>> {
        let mut file = self.file.try_clone().map_err(|e| Spool(format!("could not read the listing back: {e}")))?;
        std::io::Seek::rewind(&mut file).map_err(|e| Spool(format!("could not read the listing back: {e}")))?;
        Ok(std::io::BufReader::with_capacity(256 * 1024, file))
    }

    pub fn bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        std::io::Read::read_to_end(&mut self.reader()?, &mut out)
            .map_err(|e| Spool(format!("could not read the listing back: {e}")))?;
        Ok(out)
    }

    fn parse(&self) -> Result<Manifest> {
        Manifest::parse_from(self.reader()?).map_err(anyhow::Error::msg)
    }
}

/// A manifest (or its signature) from a `file://` upstream, at most `cap` bytes.
async fn read_local(base: &std::path::Path, name: &str, cap: u64) -> Result<Vec<u8>> {
    let (base, name) = (base.to_path_buf(), name.to_owned());
    let read = move || -> Result<Vec<u8>> {
        let f = crate::disk::open_regular_beneath(&base, &name)?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, cap + 1), &mut out)
            .with_context(|| format!("{}/{name}", base.display()))?;
        if out.len() as u64 > cap {
            bail!("{}/{name} is larger than {cap} bytes", base.display());
        }
        Ok(out)
    };
    tokio::task::spawn_blocking(read).await.map_err(|e| anyhow!("read task failed: {e}"))?
}
