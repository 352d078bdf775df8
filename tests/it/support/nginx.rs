//! A real nginx upstream for the tests: TLS with the test CA's certificate,
//! HTTP/2, one server with HTML autoindex and one with JSON autoindex over
//! the same directory, an access log the tests read. Stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::pki::Pki;

pub struct Nginx {
    pub html_port: u16,
    pub json_port: u16,
    pub prefix: PathBuf,
    child: Child,
}

/// One line of the access log.
#[derive(Debug, Clone, Default)]
pub struct Hit {
    pub method: String,
    pub status: u16,
    pub uri: String,
    /// Body bytes sent.
    pub bytes: u64,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    /// nginx's serial number of the connection it came on.
    pub connection: u64,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nginx {
    /// Serve `root` (which may be a symlink, as a mirror's `current` is).
    pub fn start(root: &Path, pki: &Pki, prefix: &Path) -> Nginx {
        let (html_port, json_port) = (free_port(), free_port());
        let servers = format!(
            r#"
    ssl_certificate {cert}; ssl_certificate_key {key};
    server {{ listen 127.0.0.1:{html_port} ssl http2; root {root}; autoindex on; }}
    server {{ listen 127.0.0.1:{json_port} ssl http2; root {root}; autoindex on; autoindex_format json; }}
"#,
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            root = root.display(),
        );
        Nginx::with_servers(prefix, &servers, html_port, json_port)
    }

    /// Serve `root` with HTML listings in the local time of `tz` (a POSIX
    /// TZ value, so that no zone database is needed) on `html_port`.
    pub fn start_localtime(root: &Path, pki: &Pki, prefix: &Path, tz: &str) -> Nginx {
        let (html_port, json_port) = (free_port(), free_port());
        let servers = format!(
            r#"
    ssl_certificate {cert}; ssl_certificate_key {key};
    server {{ listen 127.0.0.1:{html_port} ssl; root {root}; autoindex on; autoindex_localtime on; }}
    server {{ listen 127.0.0.1:{json_port} ssl; root {root}; autoindex on; autoindex_format json; }}
"#,
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            root = root.display(),
        );
        Nginx::spawn(prefix, &servers, (html_port, json_port), tz)
    }

    /// Run nginx with these `server` blocks (and http-level lines) on two
    /// ports the caller put in them.
    pub fn with_servers(prefix: &Path, servers: &str, html_port: u16, json_port: u16) -> Nginx {
        Nginx::spawn(prefix, servers, (html_port, json_port), "UTC")
    }

    fn spawn(prefix: &Path, servers: &str, (html_port, json_port): (u16, u16), tz: &str) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists());
        let binary = binary.expect("nginx is not installed (apt-get install nginx); .ci/run installs it");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let user = if rustix_is_root() { "user root root;" } else { "" };
        let mime = if Path::new("/etc/nginx/mime.types").exists() { "include /etc/nginx/mime.types;" } else { "" };
        let conf = format!(
            r#"{user}
daemon off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    {mime}
    default_type application/octet-stream;
    log_format t '$request_method $status $body_bytes_sent $server_protocol $connection "$request_uri"';
    access_log {p}/logs/access.log t;
    client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
{servers}
}}
"#,
            p = prefix.display(),
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let test = Command::new(binary)
            .args(["-t", "-p", prefix.to_str().unwrap(), "-c", conf_path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(test.status.success(), "nginx -t: {}", String::from_utf8_lossy(&test.stderr));
        let child = Command::new(binary)
            .args(["-p", prefix.to_str().unwrap(), "-c", conf_path.to_str().unwrap(), "-e", "stderr"])
            .env("TZ", tz)
            .spawn()
            .unwrap();
        let nginx = Nginx { html_port, json_port, prefix: prefix.to_path_buf(), child };
        nginx.wait_ready();
        nginx
    }

    /// Poll until both ports accept connections (bounded).
    fn wait_ready(&self) {
        let why = || format!("nginx did not start; see {}", self.prefix.join("logs/error.log").display());
        for port in [self.html_port, self.json_port] {
            super::wait_listening(port, Duration::from_secs(10), why);
        }
    }

    /// The worker processes now, each with whether it is shutting down (a
    /// reload sends the old ones away; they take no new connection then).
    pub fn workers(&self) -> Vec<(u32, bool)> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(|pid: u32| {
                let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                (pid, String::from_utf8_lossy(&title).contains("shutting down"))
            })
            .collect()
    }

    pub fn html_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.html_port)
    }

    pub fn json_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.json_port)
    }

    /// Every request logged so far; nginx writes the line before the next
    /// request on the connection, and the client has exited by the time a
    /// test reads it.
    pub fn hits(&self) -> Vec<Hit> {
        let text = std::fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(6, ' ');
                Some(Hit {
                    method: parts.next()?.to_owned(),
                    status: parts.next()?.parse().ok()?,
                    bytes: parts.next()?.parse().ok()?,
                    protocol: parts.next()?.to_owned(),
                    connection: parts.next()?.parse().ok()?,
                    uri: parts.next()?.trim_matches('"').to_owned(),
                })
            })
            .collect()
    }

    /// Requests for files (not directory listings).
    pub fn file_hits(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| !h.uri.ends_with('/')).collect()
    }

    pub fn clear_log(&self) {
        std::fs::write(self.prefix.join("logs/access.log"), "").unwrap();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM makes the master stop its workers too; KILL would orphan them.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

fn rustix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}
