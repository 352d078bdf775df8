//! Publishing to an object store: a real Ceph RGW (S3), shared by these
//! tests, each with a bucket of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest as _, Sha256};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::apt::{Apt, Repo};
use crate::serve::{runtime, shipped};
use crate::support::nginx::free_port;
use crate::support::rgw::{KEY_ID, SECRET, rgw};
use crate::support::{Env, Out, pseudo_random};
use crate::support::{Nginx, SetOnDrop};

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
fn a_bucket_that_fails_leaves_the_local_publish_and_is_tried_again() {
    let env = Env::new();
    tree(&env, 5, 1);
    let server = env.serve();
    let bucket = rgw().unused_name("absent");
    let flags = publish_to(&env, &bucket);
    let root = env.root.to_str().unwrap();
    let out = sync(&env, &server.url(), &flags);
    assert_eq!(out.code, 0, "the local publish stands: {out:?}");
    let id = env.published_id().unwrap();
    assert!(out.stderr.contains(&format!("{id} was not published to s3://{bucket}/mirror")), "{}", out.stderr);
    let check = env.run(&["status", "--check", "--root", root]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(check.stderr.contains(&format!("did not publish to s3://{bucket}/mirror")), "{check:?}");
    let metrics = env.dir.path().join("metrics.prom");
    rgw().create(&bucket);
    let args = [flags.clone(), vec!["--metrics-file".into(), metrics.display().to_string()]].concat();
    let out = sync(&env, &server.url(), &args);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("is unchanged"), "no upstream change: {out:?}");
    assert_eq!(runtime().block_on(pointed(&rgw().store(&bucket))), Some(id), "tried again with no upstream change");
    assert_eq!(env.run(&["status", "--check", "--root", root]).code, 0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains(&format!("upmirror_bucket_published{{target=\"s3://{bucket}/mirror\"}} 1")), "{text}");
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
    let key = Key::parse(format!("mirror/snapshots/{id}/images/big.iso")).unwrap();
    let attributes = rt.block_on(async { store.get(&key).await.unwrap().attributes });
    let sha = attributes.get(&object_store::Attribute::Metadata("sha256".into())).map(|v| v.to_string());
    assert_eq!(sha, Some(hex::encode(Sha256::digest(&big))), "its sha256 in its metadata");
    assert!(pushed["published_at"].is_string(), "{pushed}");
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

/// The shipped bucket front (`nginx/upmirror-s3.conf`) over `bucket`, with
/// only its ports, certificates, allow list, endpoint and include moved.
struct Front {
    nginx: Nginx,
    port: u16,
    include: PathBuf,
    bucket: String,
    ca: PathBuf,
}

impl Front {
    fn start(env: &Env, bucket: &str) -> Front {
        let (https, spare) = (free_port(), free_port());
        let rgw_port = rgw().endpoint.rsplit(':').next().unwrap().to_owned();
        let include = env.dir.path().join(format!("{bucket}-current.conf"));
        let allow = shipped("nginx/upmirror-allow.conf");
        let mut text = std::fs::read_to_string(shipped("nginx/upmirror-s3.conf")).unwrap();
        for (from, to) in [
            ("    listen [::]:443 ssl http2;\n", String::new()),
            ("listen 443 ssl http2;", format!("listen 127.0.0.1:{https} ssl http2;")),
            ("server rgw.example.internal:443;", format!("server 127.0.0.1:{rgw_port};")),
            ("https://upmirror_bucket/", "http://upmirror_bucket/".to_owned()),
            ("BUCKET/PREFIX", format!("{bucket}/mirror")),
            ("/etc/ssl/upmirror/mirror.crt", env.pki.server_cert.display().to_string()),
            ("/etc/ssl/upmirror/mirror.key", env.pki.server_key.display().to_string()),
            ("/etc/nginx/upmirror-allow.conf", allow.display().to_string()),
            ("/etc/nginx/upmirror-s3-current.conf", include.display().to_string()),
        ] {
            assert!(text.contains(from), "the shipped front no longer has {from:?}");
            text = text.replace(from, &to);
        }
        text += &format!("server {{ listen 127.0.0.1:{spare}; return 404; }}\n");
        assert_eq!(follow(bucket, &include, "true"), 0, "the pointer is read before nginx starts");
        let nginx = Nginx::with_servers(&env.dir.path().join(format!("{bucket}-front")), &text, https, spare);
        Front { nginx, port: https, include, bucket: bucket.into(), ca: env.pki.ca.clone() }
    }

    /// Run the shipped follower: when the pointer moved, rewrite the include
    /// and reload this nginx; then wait until the reload is done (every
    /// worker from before is gone or shutting down, so it takes no new
    /// connection) and the front serves `path` as `want`.
    fn follow(&self, path: &str, want: &[u8]) {
        let prefix = self.nginx.prefix.display();
        let reload = format!("/usr/sbin/nginx -p {prefix} -c {prefix}/nginx.conf -s reload");
        let before: Vec<u32> = self.nginx.workers().into_iter().map(|(pid, _)| pid).collect();
        assert_eq!(follow(&self.bucket, &self.include, &reload), 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let reloaded = || self.nginx.workers().iter().all(|(pid, leaving)| *leaving || !before.contains(pid));
        while !reloaded() || self.get(path) != (200, want.to_vec()) {
            assert!(Instant::now() < deadline, "the front never served the new {path}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `nginx/upmirror-s3-follow.sh` against the shared RGW; its exit code.
fn follow(bucket: &str, include: &Path, reload: &str) -> i32 {
    let script = shipped("nginx/upmirror-s3-follow.sh");
    let out = Command::new("sh")
        .arg(script)
        .args([&rgw().endpoint, bucket, "mirror", include.to_str().unwrap()])
        .env("UPMIRROR_NGINX_RELOAD", reload)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.status.code().unwrap_or(-1)
}

impl Front {
    /// A GET through the front with the real curl: status and body.
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-s", "--cacert", self.ca.to_str().unwrap(), "-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        let mut body = out.stdout;
        let split = body.iter().rposition(|&b| b == b'\n').unwrap();
        let code = String::from_utf8_lossy(&body[split + 1..]).parse().unwrap_or(0);
        body.truncate(split);
        (code, body)
    }
}

/// Let anyone read `mirror/` of `bucket` (the front reads unsigned).
fn public_read(bucket: &str) {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": ["*"]},
            "Action": ["s3:GetObject"],
            "Resource": [format!("arn:aws:s3:::{bucket}/mirror/*")],
        }],
    });
    let url = format!("{}/{bucket}?policy=", rgw().endpoint);
    let out = rgw().s3(&["-X", "PUT", &url, "-d", &policy.to_string()]);
    assert!(out.is_empty(), "bucket policy: {out}");
}

#[test]
fn an_nginx_front_serves_the_bucket_to_apt_and_curl_across_publishes() {
    let env = Env::new();
    let mut repo = Repo::new(&env);
    repo.build();
    env.make_manifest();
    let server = env.serve();
    let bucket = rgw().bucket("front");
    public_read(&bucket);
    let flags = [publish_to(&env, &bucket), vec!["--max-delete-percent".into(), "90".into()]].concat();
    assert_eq!(sync(&env, &server.url(), &flags).code, 0);
    let front = Front::start(&env, &bucket);
    let apt = Apt::new(&env, "apt-front", front.port);
    let (ok, text) = apt.apt_get(&["update"], None);
    assert!(ok, "{text}");
    let done = AtomicBool::new(false);
    let (mut updates, mut failures, mut fetched) = (0, Vec::new(), 0);
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let (ok, text) = apt.apt_get(&["update"], None);
                updates += 1;
                failures.extend((!ok).then_some(text));
            }
        });
        let _stop = SetOnDrop(&done);
        let mut before: Option<(String, Vec<u8>)> = None;
        for version in 2..8 {
            *repo.packages.get_mut("vendor-tool1").unwrap() = version;
            repo.build();
            env.make_manifest();
            assert_eq!(sync(&env, &server.url(), &flags).code, 0);
            front.follow("/dists/stable/Release", &std::fs::read(env.current().join("dists/stable/Release")).unwrap());
            // curl: the new package at its path and at its pinned URL, byte for byte.
            let deb = format!("pool/main/vendor-tool1_{version}.0_all.deb");
            let want = std::fs::read(env.current().join(&deb)).unwrap();
            let id = env.published_id().unwrap();
            assert_eq!(front.get(&format!("/{deb}")), (200, want.clone()));
            assert_eq!(front.get(&format!("/.well-known/upmirror/snapshots/{id}/{deb}")), (200, want.clone()));
            // The version this publish deleted: from the snapshot the pointer replaced (grace).
            if let Some((old, bytes)) = before.replace((deb.clone(), want)) {
                assert!(!env.current().join(&old).exists());
                let why = || format!("{old} from the grace window; {:?}", std::fs::read_to_string(&front.include));
                assert!(front.get(&format!("/{old}")) == (200, bytes), "{}", why());
            }
            fetched += 3;
        }
        done.store(true, Ordering::SeqCst);
        client.join().unwrap();
    });
    assert!(updates >= 6, "{updates} updates");
    assert!(failures.is_empty(), "{} of {updates} apt updates failed: {failures:#?}", failures.len());
    assert_eq!(front.get("/pool/main/nothing.deb").0, 404);
    let (status, body) = front.get("/.well-known/upmirror/status.json");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!((status, doc["last_run"]["snapshot"].as_str()), (200, env.published_id().as_deref()), "{doc}");
    let csp = |file: &str| {
        let text = std::fs::read_to_string(shipped(file)).unwrap();
        text.lines().find(|l| l.contains("script-src 'sha256-")).map(|l| l.trim().to_owned())
    };
    assert_eq!(csp("nginx/upmirror-s3.conf"), csp("nginx/upmirror.conf"), "one status page policy");
    assert_eq!(front.get("/pool/%2e%2e/%2e%2e/current.json").0, 400, "never outside the snapshot");
    eprintln!("bucket front: 6 publishes, {updates} apt updates, 0 failed; {fetched} curl fetches byte-identical");
}
