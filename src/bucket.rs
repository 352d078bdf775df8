//! Each published snapshot also goes to S3-compatible buckets
//! (`publish_to`): its files under `PREFIX/snapshots/<id>/` — those the
//! bucket's current snapshot holds with the same digest copied inside the
//! bucket (no bytes through this host), the rest uploaded (in parts when
//! large, resumable after a kill) — then the snapshot's own files, its
//! manifest last, then `PREFIX/current.json`. A reader that follows the
//! pointer never meets a missing key. Snapshots no longer kept on disk are
//! deleted from the bucket only after the pointer moved.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use md5::{Digest as _, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::manifest::{Digest, Manifest};
pub use crate::publish_to::{S3, Target};

/// The pointer's name below the prefix.
pub const POINTER: &str = "current.json";
const POINTER_FORMAT: &str = "upmirror-pointer/1";
/// Files at least this large go up in parts of `PART` bytes.
const MULTIPART_FROM: u64 = 64 << 20;
const PART: u64 = 16 << 20;
/// Objects uploaded or copied at once.
const IN_FLIGHT: usize = 64;
/// The largest pointer read from a bucket.
const MAX_POINTER: usize = 64 << 10;
/// The user metadata field that holds an object's sha256.
const SHA256_FIELD: &str = "sha256";

/// What `PREFIX/current.json` says.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pointer {
    pub format: String,
    pub snapshot: String,
    pub published_at: String,
    /// The snapshots replaced within the grace window, newest first: a
    /// front serves the paths missing from `snapshot` from these.
    #[serde(default)]
    pub grace: Vec<String>,
}

/// What a publish to one bucket did, for the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pushed {
    pub target: String,
    /// The snapshot the bucket's pointer names after this run.
    pub snapshot: Option<String>,
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    pub copied_objects: u64,
    /// Objects an interrupted run had already put there.
    pub resumed_objects: u64,
    pub deleted_snapshots: u64,
    /// When this run wrote the pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The snapshot to publish and what else the bucket keeps.
pub struct Snap<'a> {
    pub id: &'a str,
    pub dir: &'a Path,
    pub manifest: &'a Manifest,
    /// Every snapshot kept on disk: the bucket keeps the same.
    pub kept: &'a [String],
    /// Those inside a grace window, newest first.
    pub grace: &'a [String],
}

/// The client for one bucket.
pub fn store(target: &Target, s3: &S3) -> Result<AmazonS3> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&target.bucket)
        .with_region(&s3.region)
        .with_access_key_id(&s3.key_id)
        .with_secret_access_key(&s3.secret)
        .with_virtual_hosted_style_request(false);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    builder.build().map_err(|e| anyhow!("{}: {e}", target.url))
}

/// Make `snap` the bucket's current snapshot, then delete what is not kept.
pub async fn publish(store: &AmazonS3, t: &Target, snap: &Snap<'_>, journal: &Journal) -> Result<Pushed> {
    let mut pushed = Pushed { target: t.url.clone(), ..Pushed::default() };
    let pointer = read_pointer(store, t).await?;
    if pointer.as_ref().is_none_or(|p| p.snapshot != snap.id) {
        let before = match &pointer {
            Some(p) => Some((p.snapshot.as_str(), previous_files(store, t, &p.snapshot).await?)),
            None => None,
        };
        put_files(store, t, snap, before.as_ref(), journal, &mut pushed).await?;
        put_own_files(store, t, snap, &mut pushed).await?;
    }
    pushed.published_at = Some(write_pointer(store, t, snap).await?);
    pushed.snapshot = Some(snap.id.to_owned());
    pushed.deleted_snapshots = prune(store, t, snap.kept).await?;
    Ok(pushed)
}

async fn read_pointer(store: &AmazonS3, t: &Target) -> Result<Option<Pointer>> {
    let bytes = match store.get(&t.key(POINTER)?).await {
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        other => other.with_context(|| format!("{}: could not read {POINTER}", t.url))?.bytes().await?,
    };
    if bytes.len() > MAX_POINTER {
        bail!("{}: {POINTER} is larger than {MAX_POINTER} bytes", t.url);
    }
    let pointer: Pointer =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: {POINTER} is not a pointer", t.url))?;
    if pointer.format != POINTER_FORMAT || !crate::ids::is_snapshot_id(&pointer.snapshot) {
        bail!("{}: {POINTER} is not an {POINTER_FORMAT} naming a snapshot id", t.url);
    }
    Ok(Some(pointer))
}

/// Write the pointer; returns its `published_at`.
async fn write_pointer(store: &AmazonS3, t: &Target, snap: &Snap<'_>) -> Result<String> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let pointer = Pointer {
        format: POINTER_FORMAT.into(),
        snapshot: snap.id.into(),
        published_at: now.clone(),
        grace: snap.grace.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&pointer)?;
    store.put(&t.key(POINTER)?, bytes.into()).await.with_context(|| format!("{}: could not write {POINTER}", t.url))?;
    Ok(now)
}

/// Path → sha256 of the files of the bucket's snapshot `id`, from its manifest.
async fn previous_files(store: &AmazonS3, t: &Target, id: &str) -> Result<HashMap<String, Digest>> {
    let key = t.snapshot_key(id, crate::snapshot::SNAPSHOT_MANIFEST)?;
    let bytes = match store.get(&key).await {
        Err(object_store::Error::NotFound { .. }) => return Ok(HashMap::new()),
        other => other.with_context(|| format!("{}: could not read {key}", t.url))?.bytes().await?,
    };
    let manifest = Manifest::parse(&bytes).map_err(|e| anyhow!("{}: {key}: {e}", t.url))?;
    Ok(manifest.files.into_iter().filter_map(|e| Some((e.path.as_str().to_owned(), e.sha256?))).collect())
}

/// The size of each object already under the new snapshot's prefix: what
/// an interrupted run finished (each object is written whole or not at all).
async fn already_there(store: &AmazonS3, t: &Target, id: &str) -> Result<HashMap<String, u64>> {
    let prefix = t.key(&format!("snapshots/{id}"))?;
    let strip = format!("{prefix}/");
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.with_context(|| format!("{}: list", t.url))?;
    Ok(listed
        .into_iter()
        .filter_map(|m| Some((m.location.as_ref().strip_prefix(&strip)?.to_owned(), m.size)))
        .collect())
}

/// Each listed file: left alone when an interrupted run put it there,
/// copied inside the bucket when the current snapshot has it with the same
/// digest, else uploaded.
async fn put_files(
    store: &AmazonS3,
    t: &Target,
    snap: &Snap<'_>,
    before: Option<&(&str, HashMap<String, Digest>)>,
    journal: &Journal,
    pushed: &mut Pushed,
) -> Result<()> {
    let there = already_there(store, t, snap.id).await?;
    let work = snap.manifest.files.iter().map(|e| {
        let there = &there;
        async move {
            let rel = e.path.as_str();
            let to = t.snapshot_key(snap.id, rel)?;
            if there.get(rel) == Some(&e.size) {
                return Ok(Put::Resumed);
            }
            if let Some((from, _)) = before.filter(|(_, files)| files.get(rel) == e.sha256.as_ref()) {
                let from = t.snapshot_key(from, rel)?;
                store.copy(&from, &to).await.with_context(|| format!("{}: could not copy {from} to {to}", t.url))?;
                return Ok(Put::Copied);
            }
            let digest = e.sha256.with_context(|| format!("{rel} has no digest"))?;
            let file = snap.dir.join(rel);
            let outgoing = Outgoing { file: &file, to: &to, size: e.size, digest };
            anyhow::Ok(Put::Uploaded(upload(store, t, &outgoing, journal).await?))
        }
    });
    let done: Vec<Put> = stream::iter(work).buffer_unordered(IN_FLIGHT).try_collect().await?;
    for put in done {
        match put {
            Put::Resumed => pushed.resumed_objects += 1,
            Put::Copied => pushed.copied_objects += 1,
            Put::Uploaded(sent) => {
                (pushed.uploaded_objects, pushed.uploaded_bytes) =
                    (pushed.uploaded_objects + 1, pushed.uploaded_bytes + sent)
            }
        }
    }
    Ok(())
}

/// What became of one listed file in the bucket.
enum Put {
    /// An interrupted run had put it there.
    Resumed,
    /// Copied from the bucket's current snapshot.
    Copied,
    /// Uploaded: the bytes sent.
    Uploaded(u64),
}

/// The snapshot's own files (everything in its directory the manifest does
/// not list: signature, trace, patches), its manifest last.
async fn put_own_files(store: &AmazonS3, t: &Target, snap: &Snap<'_>, pushed: &mut Pushed) -> Result<()> {
    let mut own: Vec<String> = walkdir::WalkDir::new(snap.dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.path().strip_prefix(snap.dir).ok()?.to_str().map(str::to_owned))
        .filter(|rel| snap.manifest.get(rel).is_none())
        .collect();
    own.sort_by_key(|rel| rel == crate::snapshot::SNAPSHOT_MANIFEST);
    for rel in own {
        let bytes = std::fs::read(snap.dir.join(&rel)).with_context(|| format!("could not read {rel}"))?;
        let (digest, len) = (Digest(sha2::Sha256::digest(&bytes).into()), bytes.len() as u64);
        put_checked(store, t, &t.snapshot_key(snap.id, &rel)?, bytes, digest).await?;
        (pushed.uploaded_objects, pushed.uploaded_bytes) = (pushed.uploaded_objects + 1, pushed.uploaded_bytes + len);
    }
    Ok(())
}

/// A snapshot's file on its way to a key.
struct Outgoing<'a> {
    file: &'a Path,
    to: &'a Key,
    size: u64,
    digest: Digest,
}

/// Upload one file whose bytes must have its listed digest: whole, or in
/// parts. Returns the bytes sent.
async fn upload(store: &AmazonS3, t: &Target, o: &Outgoing<'_>, journal: &Journal) -> Result<u64> {
    if o.size >= MULTIPART_FROM {
        return upload_parts(store, t, o, journal).await;
    }
    let bytes = tokio::fs::read(o.file).await.with_context(|| format!("could not read {}", o.file.display()))?;
    as_listed(o.file, Digest(sha2::Sha256::digest(&bytes).into()), o.digest)?;
    put_checked(store, t, o.to, bytes, o.digest).await?;
    Ok(o.size)
}

/// The bytes read from the snapshot's `file` must be the listed ones.
fn as_listed(file: &Path, got: Digest, want: Digest) -> Result<()> {
    if got != want {
        bail!("{} does not match its manifest's sha256: run `upmirror verify --repair`", file.display());
    }
    Ok(())
}

/// PUT with the sha256 in the object's metadata; the ETag the store answers
/// must be the MD5 of what was sent.
async fn put_checked(store: &AmazonS3, t: &Target, to: &Key, bytes: Vec<u8>, digest: Digest) -> Result<()> {
    let md5 = hex::encode(Md5::digest(&bytes));
    let options = PutOptions { attributes: metadata(digest), ..PutOptions::default() };
    let put = store.put_opts(to, PutPayload::from(bytes), options).await;
    let put = put.with_context(|| format!("{}: could not upload {to}", t.url))?;
    check_etag(t, to, put.e_tag.as_deref(), &md5)
}

fn metadata(digest: Digest) -> Attributes {
    Attributes::from_iter([(Attribute::Metadata(SHA256_FIELD.into()), digest.to_string())])
}

fn check_etag(t: &Target, key: &Key, etag: Option<&str>, md5: &str) -> Result<()> {
    match etag.map(|e| e.trim_matches('"')) {
        Some(e) if e == md5 => Ok(()),
        other => bail!("{}: {key} was stored with ETag {other:?}, not the MD5 of what was sent ({md5})", t.url),
    }
}

/// Multipart uploads under way, by object key: what a killed run had sent,
/// so the next goes on with the next part (`.upmirror/uploads.json`).
pub struct Journal {
    file: PathBuf,
    uploads: Mutex<BTreeMap<String, Upload>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Upload {
    id: String,
    size: u64,
    sha256: String,
    /// The ETag of each part sent, in order.
    parts: Vec<String>,
}

impl Journal {
    pub fn load(meta: &Path) -> Journal {
        let file = meta.join("uploads.json");
        let uploads = crate::disk::read_json(&file).unwrap_or_default();
        Journal { file, uploads: Mutex::new(uploads) }
    }

    fn get(&self, key: &str) -> Option<Upload> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    fn set(&self, key: &str, upload: Option<Upload>) -> Result<()> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        match upload {
            Some(u) => uploads.insert(key.to_owned(), u),
            None => uploads.remove(key),
        };
        crate::disk::write_private(&self.file, &serde_json::to_vec(&*uploads)?)
    }
}

/// A large file in parts of `PART` bytes, each recorded in the journal as
/// it is sent: after a kill, the parts sent are not sent again. Returns the
/// bytes sent.
async fn upload_parts(store: &AmazonS3, t: &Target, o: &Outgoing<'_>, journal: &Journal) -> Result<u64> {
    let (file, to, size, digest) = (o.file, o.to, o.size, o.digest);
    let key = to.to_string();
    let ours = |u: &Upload| u.size == size && u.sha256 == digest.to_string();
    let mut upload = match journal.get(&key).filter(ours) {
        Some(u) => u,
        None => {
            let options = PutMultipartOptions { attributes: metadata(digest), ..PutMultipartOptions::default() };
            let started = store.create_multipart_opts(to, options).await;
            let id = started.with_context(|| format!("{}: could not start {to}", t.url))?;
            Upload { id, size, sha256: digest.to_string(), parts: Vec::new() }
        }
    };
    journal.set(&key, Some(upload.clone()))?;
    let (parts, mut sent) = (size.div_ceil(PART), 0);
    let mut reader = std::fs::File::open(file).with_context(|| format!("could not open {}", file.display()))?;
    let mut whole = sha2::Sha256::new();
    for n in 0..parts {
        let len = PART.min(size - n * PART) as usize;
        let mut buf = vec![0u8; len];
        reader.read_exact(&mut buf).with_context(|| format!("could not read {}", file.display()))?;
        whole.update(&buf);
        if (n as usize) < upload.parts.len() {
            continue;
        }
        let md5 = hex::encode(Md5::digest(&buf));
        let part = store.put_part(to, &upload.id, n as usize, buf.into()).await;
        let part = part.with_context(|| format!("{}: could not upload part {} of {to}", t.url, n + 1))?;
        check_etag(t, to, Some(&part.content_id), &md5)?;
        upload.parts.push(part.content_id);
        journal.set(&key, Some(upload.clone()))?;
        sent += len as u64;
        if n == 2 {
            crate::disk::failpoint("bucket-third-part");
        }
    }
    as_listed(file, Digest(whole.finalize().into()), digest)?;
    let parts: Vec<PartId> = upload.parts.iter().map(|e| PartId { content_id: e.clone() }).collect();
    let done = store.complete_multipart(to, &upload.id, parts).await;
    done.with_context(|| format!("{}: could not complete {to}", t.url))?;
    journal.set(&key, None)?;
    Ok(sent)
}

/// The mirror's public status (`status.json` and its page, from `public`)
/// under `PREFIX/status/`, for the fronts to serve.
pub async fn put_status(store: &AmazonS3, t: &Target, public: &Path) -> Result<()> {
    for (name, kind) in [("status.json", "application/json"), ("index.html", "text/html; charset=utf-8")] {
        let bytes = std::fs::read(public.join(name)).with_context(|| format!("could not read {name}"))?;
        let attributes = Attributes::from_iter([(Attribute::ContentType, kind)]);
        let options = PutOptions { attributes, ..PutOptions::default() };
        let key = t.key(&format!("status/{name}"))?;
        store
            .put_opts(&key, bytes.into(), options)
            .await
            .with_context(|| format!("{}: could not write {key}", t.url))?;
    }
    Ok(())
}

/// Delete every snapshot under the prefix that is not kept on disk.
async fn prune(store: &AmazonS3, t: &Target, kept: &[String]) -> Result<u64> {
    let snapshots = t.key("snapshots")?;
    let listed = store.list_with_delimiter(Some(&snapshots)).await.with_context(|| format!("{}: list", t.url))?;
    let mut deleted = 0;
    for dir in listed.common_prefixes {
        let Some(id) = dir.filename().map(str::to_owned) else { continue };
        if kept.contains(&id) || !crate::ids::is_snapshot_id(&id) {
            continue;
        }
        let keys = store.list(Some(&dir)).map_ok(|m| m.location).boxed();
        let gone: Vec<Key> =
            store.delete_stream(keys).try_collect().await.with_context(|| format!("{}: delete {dir}", t.url))?;
        deleted += u64::from(!gone.is_empty());
    }
    Ok(deleted)
}
