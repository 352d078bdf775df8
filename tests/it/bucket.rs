//! Publishing to an object store: a real Ceph RGW (S3), shared by these
//! tests, each with a bucket of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest as _, Sha256};

use crate::serve::runtime;
use crate::support::rgw::{KEY_ID, SECRET, rgw};
use crate::support::{Env, Out, pseudo_random};

/// The flags that publish to `bucket` under `mirror/`.
fn publish_to(env: &Env, bucket: &str) -> Vec<String> {
    let creds = env.dir.path().join("s3-credentials");
    std::fs::write(&creds, format!("[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"))
        .unwrap();
    let flags = ["--publish-to", &format!("s3://{bucket}/mirror"), "--s3-endpoint", &rgw().endpoint];
    let more = ["--allow-plain-http", "--s3-credentials-file", creds.to_str().unwrap()];
    flags.iter().chain(&more).map(|s| s.to_string()).collect()
}

fn sync(env: &Env, url: &str, flags: &[String]) -> Out {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    env.sync(url, &args)
}

async fn read(store: &AmazonS3, key: &str) -> Option<Vec<u8>> {
    match store.get(&Key::parse(key).unwrap()).await {
        Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{key}: {e}"),
    }
}

/// The snapshot `mirror/current.json` names.
async fn pointed(store: &AmazonS3) -> Option<String> {
    let bytes = read(store, "mirror/current.json").await?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["format"], "upmirror-pointer/1");
    Some(doc["snapshot"].as_str().unwrap().to_owned())
}

/// Path → sha256 of snapshot `id`'s files, from its manifest in the bucket.
async fn listed(store: &AmazonS3, id: &str) -> Option<BTreeMap<String, String>> {
    let bytes = read(store, &format!("mirror/snapshots/{id}/upmirror-manifest.json")).await?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let files = doc["files"].as_array().unwrap().iter();
    Some(files.map(|f| (f["path"].as_str().unwrap().into(), f["sha256"].as_str().unwrap().into())).collect())
}

/// Follow the pointer and read every file its snapshot lists: the keys
/// missing and the files whose bytes are not the listed sha256.
async fn read_through(store: &AmazonS3) -> (Vec<String>, Vec<String>) {
    use futures_util::StreamExt;
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    let Some(id) = pointed(store).await else { return (missing, wrong) };
    let Some(files) = listed(store, &id).await else { return (vec![format!("{id}: its manifest")], wrong) };
    let reads = files.into_iter().map(|(path, digest)| {
        let id = &id;
        async move { (read(store, &format!("mirror/snapshots/{id}/{path}")).await, path, digest) }
    });
    let got: Vec<_> = futures_util::stream::iter(reads).buffer_unordered(16).collect().await;
    for (bytes, path, digest) in got {
        match bytes {
            None => missing.push(format!("{id}/{path}")),
            Some(bytes) if hex::encode(Sha256::digest(&bytes)) != digest => wrong.push(format!("{id}/{path}")),
            Some(_) => {}
        }
    }
    (missing, wrong)
}

fn tree(env: &Env, files: usize, version: u64) {
    for i in 0..files {
        env.write(&format!("pool/f{i:03}.bin"), &pseudo_random(10_000 + i, version * 1000 + i as u64));
    }
    env.make_manifest();
}

#[test]
fn a_changed_percent_is_uploaded_the_rest_copied_inside_the_bucket() {
    let env = Env::new();
    tree(&env, 200, 1);
    let server = env.serve();
    let bucket = rgw().bucket("changed");
    let flags = publish_to(&env, &bucket);
    let out = sync(&env, &server.url(), &flags);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains(SECRET), "credentials never printed");
    let first = env.last_status()["buckets"][0].clone();
    assert_eq!((first["uploaded_objects"].as_u64(), first["copied_objects"].as_u64()), (Some(202), Some(0)), "{first}");
    let store = rgw().store(&bucket);
    let rt = runtime();
    assert_eq!(rt.block_on(pointed(&store)), env.published_id());

    // 1 %: two files change.
    let changed: u64 = [7usize, 150]
        .iter()
        .map(|i| {
            let bytes = pseudo_random(10_000 + i, 99_000 + *i as u64);
            env.write(&format!("pool/f{i:03}.bin"), &bytes);
            bytes.len() as u64
        })
        .sum();
    env.make_manifest();
    let out = sync(&env, &server.url(), &flags);
    assert_eq!(out.code, 0, "{out:?}");
    let second = env.last_status()["buckets"][0].clone();
    let uploaded = second["uploaded_objects"].as_u64().unwrap();
    assert!(uploaded <= 2 + 3, "PUTs: the changed files, the manifest and the trace: {second}");
    assert_eq!(second["copied_objects"].as_u64(), Some(198), "{second}");
    let own = std::fs::metadata(env.current().join("upmirror-manifest.json")).unwrap().len()
        + std::fs::metadata(env.current().join("upmirror-trace.json")).unwrap().len();
    assert_eq!(second["uploaded_bytes"].as_u64(), Some(changed + own), "{second}");
    assert_eq!(rt.block_on(pointed(&store)), env.published_id());
    let (missing, wrong) = rt.block_on(read_through(&store));
    assert!(missing.is_empty() && wrong.is_empty(), "missing {missing:?}, wrong {wrong:?}");
    let doc = std::fs::read_to_string(env.root.join("public/status.json")).unwrap();
    assert!(!doc.contains(SECRET));
}

#[test]
fn a_killed_upload_goes_on_where_it_stopped_and_the_pointer_waits() {
    let env = Env::new();
    tree(&env, 5, 1);
    let server = env.serve();
    let bucket = rgw().bucket("killed");
    let flags = publish_to(&env, &bucket);
    assert_eq!(sync(&env, &server.url(), &flags).code, 0);
    let store = rgw().store(&bucket);
    let rt = runtime();
    let before = rt.block_on(pointed(&store)).unwrap();

    let big = pseudo_random(72 << 20, 7);
    env.write("images/big.iso", &big);
    env.make_manifest();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let out = env.sync_env(&server.url(), &args, &[("UPMIRROR_FAILPOINT", "bucket-third-part")]);
    assert!(out.stderr.contains("failpoint bucket-third-part"), "{out:?}");
    assert_ne!(env.published_id().unwrap(), before, "published on disk");
    assert_eq!(rt.block_on(pointed(&store)), Some(before.clone()), "the bucket's pointer unchanged");

    let out = sync(&env, &server.url(), &flags);
    assert_eq!(out.code, 0, "{out:?}");
    let pushed = env.last_status()["buckets"][0].clone();
    let parts_left = (72u64 << 20) - 3 * (16 << 20);
    let own = std::fs::metadata(env.current().join("upmirror-manifest.json")).unwrap().len()
        + std::fs::metadata(env.current().join("upmirror-trace.json")).unwrap().len();
    assert_eq!(pushed["uploaded_bytes"].as_u64(), Some(parts_left + own), "only the two parts not sent: {pushed}");
    assert_eq!(rt.block_on(pointed(&store)), env.published_id());
    let id = env.published_id().unwrap();
    let got = rt.block_on(read(&store, &format!("mirror/snapshots/{id}/images/big.iso"))).unwrap();
    assert!(got == big, "the object is whole");
    assert!(
        !env.root.join(".upmirror/uploads.json").exists() || {
            let text = std::fs::read_to_string(env.root.join(".upmirror/uploads.json")).unwrap();
            text.trim() == "{}"
        }
    );
}

#[test]
fn a_reader_following_the_pointer_never_meets_a_missing_key() {
    let env = Env::new();
    tree(&env, 40, 1);
    let server = env.serve();
    let bucket = rgw().bucket("reader");
    let flags = publish_to(&env, &bucket);
    assert_eq!(sync(&env, &server.url(), &flags).code, 0);
    let store = rgw().store(&bucket);
    let done = AtomicBool::new(false);
    let (passes, missing, wrong) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let rt = runtime();
            let (mut passes, mut missing, mut wrong) = (0, Vec::new(), Vec::new());
            while !done.load(Ordering::SeqCst) {
                let (m, w) = rt.block_on(read_through(&store));
                (passes, missing, wrong) = (passes + 1, [missing, m].concat(), [wrong, w].concat());
            }
            (passes, missing, wrong)
        });
        for round in 2..22u64 {
            for i in 0..4 {
                let n = (round as usize * 4 + i) % 40;
                env.write(&format!("pool/f{n:03}.bin"), &pseudo_random(10_000 + n, round * 1000 + n as u64));
            }
            env.write(&format!("new/r{round}.txt"), format!("round {round}\n").as_bytes());
            env.make_manifest();
            let out = sync(&env, &server.url(), &flags);
            assert_eq!(out.code, 0, "{out:?}");
            assert!(env.last_status()["buckets"][0]["error"].is_null());
        }
        done.store(true, Ordering::SeqCst);
        reader.join().unwrap()
    });
    assert!(passes >= 20, "{passes} passes");
    // The bucket keeps what the disk keeps: the rest was deleted after the pointer moved.
    let snapshots = Key::parse("mirror/snapshots").unwrap();
    let listed = runtime().block_on(store.list_with_delimiter(Some(&snapshots))).unwrap();
    let mut in_bucket: Vec<String> = listed.common_prefixes.iter().map(|p| p.filename().unwrap().to_owned()).collect();
    let mut on_disk = env.snapshot_ids();
    in_bucket.sort();
    on_disk.sort();
    assert!(on_disk.len() < 21, "some were pruned: {on_disk:?}");
    assert_eq!(in_bucket, on_disk);
    assert!(missing.is_empty(), "{} missing: {missing:?}", missing.len());
    assert!(wrong.is_empty(), "{} mismatched: {wrong:?}", wrong.len());
    eprintln!("20 publishes: {passes} reader passes, 0 missing keys, 0 mismatches");
}
