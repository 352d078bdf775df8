//! A case-insensitive, case-preserving file system (like ext4's casefold or
//! vfat) mounted with FUSE by `tests/fixtures/casefold/casefold.py` (Debian's
//! python3-fusepy) over a backing directory. Unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct CaseFold {
    pub mountpoint: PathBuf,
    child: Child,
}

impl CaseFold {
    pub fn mount(backing: &Path, mountpoint: &Path) -> CaseFold {
        std::fs::create_dir_all(backing).unwrap();
        std::fs::create_dir_all(mountpoint).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/casefold/casefold.py");
        let child = Command::new("/usr/bin/python3")
            .arg(script)
            .args([backing, mountpoint])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/bin/python3 is missing; ./test.sh installs it with python3-fusepy");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mounted = || std::fs::read_to_string("/proc/mounts").unwrap().contains(mountpoint.to_str().unwrap());
        while !mounted() {
            assert!(Instant::now() < deadline, "the FUSE file system did not mount (apt-get install python3-fusepy)");
            std::thread::sleep(Duration::from_millis(20));
        }
        CaseFold { mountpoint: mountpoint.to_path_buf(), child }
    }
}

impl Drop for CaseFold {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
