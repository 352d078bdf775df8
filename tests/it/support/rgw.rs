//! A real single-node Ceph RGW (S3) from Debian's packages: one mon, one
//! OSD on memstore and radosgw, all on 127.0.0.1, started once for the
//! whole test process and shared (each test makes its own bucket). The
//! daemons run under `setpriv --pdeathsig KILL` from a thread that lives as
//! long as the process, so they end with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::nginx::free_port;

pub const KEY_ID: &str = "upmirror-test";
pub const SECRET: &str = "upmirror-test-secret";

pub struct Rgw {
    pub endpoint: String,
    dir: PathBuf,
}

static RGW: OnceLock<Rgw> = OnceLock::new();
static BUCKETS: AtomicUsize = AtomicUsize::new(0);

/// The shared RGW, started on first use.
pub fn rgw() -> &'static Rgw {
    RGW.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The daemons' parent thread: it must outlive every test.
        std::thread::spawn(move || {
            let (rgw, _daemons) = Rgw::start();
            tx.send(rgw).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap()
    })
}

fn conf(dir: &Path, mon: (u16, u16), port: u16) -> String {
    let d = dir.display();
    format!(
        "[global]\nfsid = 0b1d5d1e-8c1f-4a53-9a61-5d2f3c4e7a10\nmon host = [v2:127.0.0.1:{m2},v1:127.0.0.1:{m1}]\n\
         public addr = 127.0.0.1\ncluster addr = 127.0.0.1\nauth cluster required = none\n\
         auth service required = none\nauth client required = none\nms mon client mode = crc\n\
         client mount timeout = 30\npaxos propose interval = 0.05\nosd pool default size = 1\n\
         osd pool default min size = 1\nmon allow pool size one = true\nosd crush chooseleaf type = 0\n\
         osd pool default pg num = 8\nosd pool default pgp num = 8\nosd pool default pg autoscale mode = off\n\
         run dir = {d}/run\nadmin socket = {d}/run/$name.asok\npid file = {d}/run/$name.pid\n\
         log file = {d}/log/$name.log\ncrash dir = {d}/crash\nmon data = {d}/mon/$name\nosd data = {d}/osd/$name\n\
         osd objectstore = memstore\nmemstore device bytes = 2147483648\n\
         [mon.a]\npublic addrv = [v2:127.0.0.1:{m2},v1:127.0.0.1:{m1}]\n\
         [client.rgw.0]\nrgw frontends = beast endpoint=127.0.0.1:{port}\nrgw thread pool size = 16\nrgw data = {d}/rgw\n",
        m1 = mon.0,
        m2 = mon.1,
    )
}

/// Run a ceph tool to its end (bounded), failing the test with its output.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let conf = dir.join("ceph.conf");
    let out = Command::new("timeout")
        .args(["60", program, "-c", conf.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (./test.sh installs ceph-mon, ceph-osd, radosgw)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}: {text}; logs in {}", dir.join("log").display());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A daemon in the foreground, killed when the process ends.
fn daemon(dir: &Path, name: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("log/{name}.out"))).unwrap();
    Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", name, "-f", "-c", dir.join("ceph.conf").to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e} (./test.sh installs ceph-mon, ceph-osd, radosgw)"))
}

impl Rgw {
    fn start() -> (Rgw, Vec<Child>) {
        let dir = std::env::temp_dir().join(format!("upmirror-rgw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["run", "log", "crash", "mon", "osd/osd.0", "rgw"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let port = free_port();
        std::fs::write(dir.join("ceph.conf"), conf(&dir, (free_port(), free_port()), port)).unwrap();
        run(&dir, "ceph-mon", &["-i", "a", "--mkfs"]);
        let mut daemons = vec![daemon(&dir, "ceph-mon", &["-i", "a"])];
        let uuid = "6c0d3b8e-1f2a-4b5c-9d8e-7f6a5b4c3d2e";
        let id = run(&dir, "ceph", &["osd", "new", uuid]);
        run(&dir, "ceph-osd", &["-i", &id, "--mkfs", "--osd-uuid", uuid]);
        daemons.push(daemon(&dir, "ceph-osd", &["-i", &id]));
        daemons.push(daemon(&dir, "radosgw", &["-n", "client.rgw.0"]));
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Command::new("curl").args(["-sf", "-o", "/dev/null", &endpoint]).status().unwrap().success() {
            assert!(Instant::now() < deadline, "radosgw did not answer; logs in {}", dir.join("log").display());
            std::thread::sleep(Duration::from_millis(100));
        }
        let user = ["user", "create", "--uid=upmirror", "--display-name=upmirror"];
        run(
            &dir,
            "radosgw-admin",
            &[&user[..], &[&format!("--access-key={KEY_ID}"), &format!("--secret-key={SECRET}")]].concat(),
        );
        (Rgw { endpoint, dir }, daemons)
    }

    /// A new bucket of its own for a test.
    pub fn bucket(&self, name: &str) -> String {
        let bucket = self.unused_name(name);
        self.create(&bucket);
        bucket
    }

    /// A bucket name no test has used, not created.
    pub fn unused_name(&self, name: &str) -> String {
        format!("{name}-{}", BUCKETS.fetch_add(1, Ordering::SeqCst))
    }

    pub fn create(&self, bucket: &str) {
        let out = self.s3(&["-X", "PUT", &format!("{}/{bucket}", self.endpoint)]);
        assert!(out.is_empty(), "create bucket {bucket}: {out}");
    }

    /// A signed S3 request with curl; its body.
    pub fn s3(&self, args: &[&str]) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--aws-sigv4", "aws:amz:us-east-1:s3", "-u", &format!("{KEY_ID}:{SECRET}")])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}; logs in {}",
            String::from_utf8_lossy(&out.stderr),
            self.dir.display()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A client for `bucket`, to read what upmirror published.
    pub fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap()
    }
}
