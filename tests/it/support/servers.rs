//! Real file servers from Debian as upstreams: Apache (mod_autoindex, with
//! and without FancyIndexing), lighttpd (mod_dirlisting), Caddy (`file_server
//! browse`), `rclone serve http`, webfs and python's `http.server`, each on
//! a free port of 127.0.0.1 serving one directory — over TLS with the test
//! CA's certificate, except python (no TLS) and webfs (see below) — with an
//! access log the tests read (all but rclone, which keeps none). Stopped on
//! drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nginx::{Hit, free_port};
use super::pki::Pki;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's default autoindex: FancyIndexing, HTMLTable, sizes rounded from 1K.
    Apache,
    /// Apache with neither FancyIndexing nor dates: a plain list of names.
    ApachePlain,
    Lighttpd,
    Caddy,
    Rclone,
    Python,
    Webfs,
    /// webfs with `-S` (TLS, GnuTLS), its default 32 connections.
    WebfsTls,
    /// BusyBox's httpd: plain HTTP, no directory listings at all.
    Busybox,
    /// nginx with `autoindex_format xml`.
    NginxXml,
    /// nginx with the fancyindex module (Debian's libnginx-mod-http-fancyindex).
    NginxFancy,
    /// h2o's `file.dirlisting`: names only, directories without a `/`.
    H2o,
    /// mini_httpd: `.` and `..` listed, directories without a `/`.
    MiniHttpd,
    /// npm `http-server`: `./name` links, `./../` for the parent.
    HttpServer,
    /// npm `serve`: a JSON object to `Accept: application/json`.
    Serve,
}

pub struct FileServer {
    pub kind: Kind,
    pub port: u16,
    dir: PathBuf,
    ca: PathBuf,
    markers: std::sync::atomic::AtomicUsize,
    child: Child,
}

/// The path a test asks for to find its place in an access log.
const MARKER: &str = "/upmirror-test-marker-";

impl FileServer {
    /// Serve `root`, with the server's files under `dir`; `tz` sets the
    /// server's time zone (its listings show local time).
    pub fn start(kind: Kind, root: &Path, pki: &Pki, dir: &Path, tz: Option<&str>) -> FileServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut cmd = command(kind, root, pki, dir, port);
        cmd.env("TZ", tz.unwrap_or("UTC")).env("HOME", dir).stdin(Stdio::null());
        if !matches!(kind, Kind::HttpServer | Kind::Serve) {
            cmd.stdout(Stdio::null());
        }
        if kind != Kind::Python {
            cmd.stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{kind:?} did not start ({e}); ./test.sh installs it"));
        let server =
            FileServer { kind, port, dir: dir.to_path_buf(), ca: pki.ca.clone(), markers: Default::default(), child };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let why = || {
            let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
            format!("{:?} did not start: {log}", self.kind)
        };
        super::wait_listening(self.port, Duration::from_secs(20), why);
    }

    pub fn url(&self) -> String {
        let scheme = if matches!(self.kind, Kind::Python | Kind::Webfs | Kind::Busybox) { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Every request logged so far (method, status, raw path).
    pub fn hits(&self) -> Vec<Hit> {
        assert!(self.kind != Kind::Rclone, "rclone serve http keeps no access log");
        if self.kind == Kind::Lighttpd {
            self.flush_lighttpd_log();
        }
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let hits = text.lines().filter_map(|l| match self.kind {
            Kind::Caddy => caddy_hit(l),
            Kind::HttpServer | Kind::Serve => node_hit(l),
            _ => common_hit(l),
        });
        hits.filter(|h| !h.uri.starts_with(MARKER)).collect()
    }

    pub fn clear_log(&self) {
        if self.kind == Kind::Lighttpd {
            self.flush_lighttpd_log();
        }
        std::fs::OpenOptions::new().write(true).truncate(true).open(self.log()).unwrap();
    }

    fn log(&self) -> PathBuf {
        self.dir.join(if self.kind == Kind::Python { "stderr.log" } else { "access.log" })
    }

    /// lighttpd writes its access log about once a second: ask for a marker
    /// path and wait until its line is written, and every line before it.
    fn flush_lighttpd_log(&self) {
        let marker = format!("{MARKER}{}", self.markers.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap();
        let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(client.get(format!("{}{}", self.url(), &marker[1..])).send()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(self.log()).unwrap_or_default().contains(&marker) {
            assert!(Instant::now() < deadline, "lighttpd did not log {marker}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        // TERM lets Apache stop its workers too.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

fn command(kind: Kind, root: &Path, pki: &Pki, dir: &Path, port: u16) -> Command {
    let (cert, key) = (pki.server_cert.to_str().unwrap(), pki.server_key.to_str().unwrap());
    let (r, d, addr) = (root.to_str().unwrap(), dir.to_str().unwrap(), format!("127.0.0.1:{port}"));
    match kind {
        Kind::Apache | Kind::ApachePlain => apache(kind, root, pki, dir, port),
        Kind::Lighttpd => {
            let conf = format!(
                "server.document-root = \"{r}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
                 server.modules = (\"mod_openssl\", \"mod_dirlisting\", \"mod_accesslog\", \"mod_staticfile\")\n\
                 dir-listing.activate = \"enable\"\nmimetype.assign = (\"\" => \"application/octet-stream\")\n\
                 ssl.engine = \"enable\"\nssl.pemfile = \"{cert}\"\nssl.privkey = \"{key}\"\n\
                 accesslog.filename = \"{d}/access.log\"\nserver.errorlog = \"{d}/error.log\"\n"
            );
            std::fs::write(dir.join("lighttpd.conf"), conf).unwrap();
            let mut cmd = Command::new("/usr/sbin/lighttpd");
            cmd.args(["-D", "-f"]).arg(dir.join("lighttpd.conf"));
            cmd
        }
        Kind::Caddy => {
            let conf = format!(
                "{{\n  admin off\n  storage file_system {d}/data\n}}\n\
                 https://127.0.0.1:{port} {{\n  tls {cert} {key}\n  root * {r}\n  file_server browse\n\
                 log {{\n    output file {d}/access.log\n  }}\n}}\n"
            );
            std::fs::write(dir.join("Caddyfile"), conf).unwrap();
            let mut cmd = Command::new("caddy");
            cmd.args(["run", "--adapter", "caddyfile", "--config"]).arg(dir.join("Caddyfile"));
            cmd
        }
        Kind::Rclone => {
            let mut cmd = Command::new("rclone");
            cmd.args(["serve", "http", r, "--addr", &addr, "--cert", cert, "--key", key, "--dir-cache-time", "0s"]);
            cmd.args(["--config", &format!("{d}/rclone.conf")]);
            cmd
        }
        Kind::Busybox => {
            let mut cmd = Command::new("busybox");
            cmd.args(["httpd", "-f", "-v", "-p", &addr, "-h", r]);
            cmd
        }
        Kind::Webfs | Kind::WebfsTls => {
            // No listing cache: it is keyed by the directory's mtime in
            // seconds, and the tests change a directory within one.
            let mut cmd = Command::new("webfsd");
            cmd.args(["-F", "-4", "-i", "127.0.0.1", "-p", &port.to_string(), "-r", r, "-a", "0", "-L"]);
            cmd.arg(dir.join("access.log"));
            if kind == Kind::WebfsTls {
                let both = dir.join("cert-and-key.pem");
                std::fs::write(&both, [std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()].concat()).unwrap();
                cmd.arg("-S").arg("-C").arg(both);
            }
            cmd
        }
        Kind::NginxXml | Kind::NginxFancy => {
            let (module, listing) = match kind {
                Kind::NginxXml => ("", "autoindex on; autoindex_format xml;"),
                _ => ("load_module /usr/lib/nginx/modules/ngx_http_fancyindex_module.so;\n", "fancyindex on;"),
            };
            let conf = format!(
                "{module}daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
                 http {{\n  log_format t '$remote_addr \"$request\" $status $body_bytes_sent';\n\
                 access_log {d}/access.log t;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
                 fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
                 server {{ listen {addr} ssl; ssl_certificate {cert}; ssl_certificate_key {key};\n\
                 root {r}; {listing} }}\n}}\n"
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let mut cmd = Command::new("nginx");
            cmd.arg("-c").arg(dir.join("nginx.conf")).arg("-p").arg(dir);
            cmd
        }
        Kind::H2o => {
            let conf = format!(
                "user: root\npid-file: {d}/h2o.pid\naccess-log: {d}/access.log\nerror-log: {d}/error.log\n\
                 listen:\n  host: 127.0.0.1\n  port: {port}\n  ssl:\n    certificate-file: {cert}\n    key-file: {key}\n\
                 hosts:\n  default:\n    paths:\n      /:\n        file.dir: {r}\n        file.dirlisting: ON\n"
            );
            std::fs::write(dir.join("h2o.conf"), conf).unwrap();
            let mut cmd = Command::new("h2o");
            cmd.arg("-c").arg(dir.join("h2o.conf"));
            cmd
        }
        Kind::MiniHttpd => {
            let both = dir.join("cert-and-key.pem");
            let pem = [std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()].concat();
            std::fs::write(&both, pem).unwrap();
            let mut cmd = Command::new("/usr/sbin/mini_httpd");
            cmd.args(["-D", "-S", "-E"]).arg(&both).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-d", r]);
            cmd.args(["-u", &whoami(), "-T", "UTF-8", "-l"]).arg(dir.join("access.log"));
            cmd
        }
        Kind::HttpServer => {
            let mut cmd = Command::new("http-server");
            cmd.args([r, "-a", "127.0.0.1", "-p", &port.to_string(), "-S", "-C", cert, "-K", key, "-c-1"]);
            cmd.stdout(std::fs::File::create(dir.join("access.log")).unwrap());
            cmd
        }
        Kind::Serve => {
            let mut cmd = Command::new("serve");
            cmd.args(["-l", &format!("tcp://{addr}"), "--ssl-cert", cert, "--ssl-key", key, "--no-clipboard", r]);
            cmd.stdout(std::fs::File::create(dir.join("access.log")).unwrap());
            cmd
        }
        Kind::Python => {
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory", r]);
            cmd.stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
            cmd
        }
    }
}

/// The user the tests run as, for servers that would switch to another.
fn whoami() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find(|l| l.split(':').nth(2) == Some(&uid.to_string())).and_then(|l| l.split(':').next());
    name.unwrap_or("root").to_owned()
}

/// Apache as Debian configures its autoindex, in the foreground. As root it
/// serves as www-data, so the tree is made readable to others.
fn apache(kind: Kind, root: &Path, pki: &Pki, dir: &Path, port: u16) -> Command {
    let modules = ["mpm_event", "authz_core", "dir", "autoindex", "mime", "ssl", "socache_shmcb"]
        .map(|m| format!("LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"))
        .concat();
    let user = if rustix::process::geteuid().is_root() {
        for p in root.ancestors().take_while(|p| p.starts_with(std::env::temp_dir()) && *p != std::env::temp_dir()) {
            let mode = std::fs::metadata(p).unwrap().permissions().mode();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        }
        "User www-data\nGroup www-data\n"
    } else {
        ""
    };
    let options = match kind {
        Kind::Apache => "FancyIndexing VersionSort HTMLTable NameWidth=* DescriptionWidth=* Charset=UTF-8",
        _ => "Charset=UTF-8",
    };
    let conf = format!(
        "ServerName 127.0.0.1\nListen 127.0.0.1:{port}\n{modules}{user}\
         PidFile {d}/apache.pid\nDefaultRuntimeDir {d}\nMutex file:{d} default\nTypesConfig /etc/mime.types\n\
         ErrorLog {d}/error.log\nLogFormat \"%h \\\"%r\\\" %>s\" t\nCustomLog {d}/access.log t\n\
         SSLEngine on\nSSLCertificateFile {cert}\nSSLCertificateKeyFile {key}\n\
         DocumentRoot {r}\n<Directory {r}>\n  Options +Indexes\n  Require all granted\n</Directory>\n\
         IndexOptions {options}\nIndexIgnore .??* *~ *# RCS CVS *,v *,t\n\
         ReadmeName README.html\nHeaderName HEADER.html\n",
        d = dir.display(),
        r = root.display(),
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
    );
    std::fs::write(dir.join("apache2.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/apache2");
    cmd.args(["-DFOREGROUND", "-f"]).arg(dir.join("apache2.conf"));
    cmd
}

/// `… "GET /path HTTP/1.1" 200 …` (Apache, lighttpd, webfs, python, h2o,
/// mini_httpd, which logs the path decoded: spaces and quotes in it).
fn common_hit(line: &str) -> Option<Hit> {
    let (_, rest) = line.split_once('"')?;
    let end = rest.find(" HTTP/")?;
    let (method, uri) = rest[..end].split_once(' ')?;
    let (method, uri) = (method.to_owned(), uri.to_owned());
    let (_, rest) = rest[end..].split_once('"')?;
    let mut fields = rest.split_whitespace();
    let status = fields.next()?.parse().ok()?;
    let bytes = fields.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    Some(Hit { method, status, uri, bytes, ..Hit::default() })
}

/// A request as npm's http-server (`[time]  "GET /path" "agent"`) or serve
/// (`HTTP  date time 127.0.0.1 GET /path`) logs it: no status, so 200.
fn node_hit(line: &str) -> Option<Hit> {
    let request = match line.split_once("]  \"") {
        Some((_, rest)) => rest.split_once('"')?.0.to_owned(),
        None => line.strip_prefix(" HTTP ")?.split(" 127.0.0.1 ").nth(1)?.to_owned(),
    };
    let (method, uri) = request.split_once(' ').filter(|(m, _)| matches!(*m, "GET" | "HEAD"))?;
    Some(Hit { method: method.to_owned(), status: 200, uri: uri.to_owned(), ..Hit::default() })
}

/// Caddy's JSON access log line.
fn caddy_hit(line: &str) -> Option<Hit> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Hit {
        method: v["request"]["method"].as_str()?.to_owned(),
        status: v["status"].as_u64()? as u16,
        uri: v["request"]["uri"].as_str()?.to_owned(),
        bytes: v["size"].as_u64().unwrap_or(0),
        ..Hit::default()
    })
}
