//! A real tinyproxy on 127.0.0.1, as a company's HTTP proxy: it logs every
//! CONNECT. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::nginx::free_port;

pub struct Proxy {
    pub port: u16,
    log: PathBuf,
    child: Child,
}

impl Proxy {
    pub fn start(dir: &Path) -> Proxy {
        Proxy::start_with(dir, None)
    }

    /// A proxy that answers 407 unless given these Basic credentials.
    pub fn start_with(dir: &Path, auth: Option<(&str, &str)>) -> Proxy {
        let auth = auth.map(|(user, password)| format!("BasicAuth {user} {password}\n")).unwrap_or_default();
        Proxy::start_conf(dir, &auth)
    }

    /// A proxy with these lines added to its configuration.
    pub fn start_conf(dir: &Path, extra: &str) -> Proxy {
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let (conf, log) = (dir.join("tinyproxy.conf"), dir.join("tinyproxy.log"));
        let settings = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Connect\nLogFile \"{}\"\n{extra}",
            log.display(),
        );
        std::fs::write(&conf, settings).unwrap();
        let child = Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy is missing (apt-get install tinyproxy); ./test.sh installs it");
        let why = || format!("tinyproxy did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        super::wait_listening(port, Duration::from_secs(10), why);
        Proxy { port, log, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The CONNECT requests it has relayed, as `host:port`.
    pub fn connects(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                l.split("Request (file descriptor")
                    .nth(1)?
                    .split("CONNECT ")
                    .nth(1)?
                    .split(' ')
                    .next()
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// A real stunnel in front of a proxy: the proxy reached over TLS, with
/// the certificate given. Stopped on drop.
pub struct TlsFront {
    pub port: u16,
    child: Child,
}

impl Proxy {
    pub fn tls_front(&self, dir: &Path, cert: &Path, key: &Path) -> TlsFront {
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("stunnel.conf");
        let settings = format!(
            "foreground = yes\npid =\n[proxy]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
            self.port,
            cert.display(),
            key.display()
        );
        std::fs::write(&conf, settings).unwrap();
        let child = Command::new("stunnel4")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel4 is missing (apt-get install stunnel4); ./test.sh installs it");
        super::wait_listening(port, Duration::from_secs(10), || "stunnel did not start".into());
        TlsFront { port, child }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
