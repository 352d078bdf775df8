//! A small HTTPS/1.1 upstream for the tests: serves a directory with ETag,
//! `If-None-Match` (304) and `Range` (206), optionally demands a client
//! certificate, logs every request, and injects per-path faults.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// What the server does wrong for one path.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve the file with one byte flipped.
    Corrupt,
    /// Answer with this status and an empty body.
    Status(u16),
    /// Answer 503 with this `Retry-After` (seconds).
    RetryAfter(u64),
    /// Redirect to this location.
    Redirect(String),
    /// Send the headers and this many body bytes, then drop the connection.
    ResetAfter(usize),
    /// Send the headers, then nothing, until the client gives up.
    Stall,
    /// Send one byte every this many milliseconds.
    Drip(u64),
    /// Answer a range request with 200 and the whole body.
    IgnoreRange,
    /// Answer a range request with a 206 that starts one byte later.
    WrongStart,
    /// Append this many bytes beyond the file (and declare them).
    Extra(usize),
    /// Send the body gzip-compressed with `Content-Encoding: gzip`.
    Gzip,
    /// Read the request, then close the connection without an answer.
    Hangup,
    /// Answer every request, ranged or not, with a 206 of the whole file.
    AlwaysPartial,
    /// Answer 200 with this body instead of the file or listing.
    Body(Vec<u8>),
    /// Serve the file without a `Last-Modified` header.
    NoLastModified,
    /// Send the headers and this many body bytes, then nothing.
    StallAfter(usize),
}

/// How the body is written.
enum Mode {
    Whole,
    ResetAfter(usize),
    Stall,
    StallAfter(usize),
    Drip(u64),
}

/// Files larger than this are served from the disk in ranges (`bytes=A-B`
/// too), never read whole, and tagged by length and mtime.
const BIG: u64 = 4 << 20;

/// A body: bytes, or `len` bytes of a file from `start`.
enum Payload {
    Bytes(Vec<u8>),
    File(PathBuf, u64, u64),
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File(_, _, len) => *len,
        }
    }

    /// Write the first `limit` bytes (all without one).
    async fn write<W: tokio::io::AsyncWrite + Unpin>(&self, w: &mut W, limit: Option<usize>) -> std::io::Result<()> {
        let n = limit.map_or(self.len(), |l| (l as u64).min(self.len()));
        match self {
            Payload::Bytes(b) => w.write_all(&b[..n as usize]).await?,
            Payload::File(path, start, _) => {
                let mut f = tokio::fs::File::open(path).await?;
                tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(*start)).await?;
                tokio::io::copy(&mut tokio::io::AsyncReadExt::take(f, n), w).await?;
            }
        }
        w.flush().await
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub status: u16,
}

#[derive(Default)]
pub struct Options {
    /// Demand a client certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Serve this certificate and key instead of the test CA's.
    pub cert: Option<(PathBuf, PathBuf)>,
}

struct Shared {
    root: PathBuf,
    log: Mutex<Vec<Request>>,
    /// Sticky faults, by request path.
    faults: Mutex<HashMap<String, Fault>>,
    /// Faults used once each, before the sticky one, by request path.
    queued: Mutex<HashMap<String, std::collections::VecDeque<Fault>>>,
}

pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start(root: &Path, pki: &super::pki::Pki, opts: Options) -> Server {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let (cert, key) = opts.cert.clone().unwrap_or((pki.server_cert.clone(), pki.server_key.clone()));
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&cert).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let builder = ServerConfig::builder();
        let config = match &opts.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).unwrap() {
                    roots.add(c.unwrap()).unwrap();
                }
                // Like nginx: a missing certificate gets an HTTP 400, a foreign one a TLS alert.
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots)).allow_unauthenticated().build().unwrap();
                builder.with_client_cert_verifier(verifier).with_single_cert(certs, key).unwrap()
            }
            None => builder.with_no_client_auth().with_single_cert(certs, key).unwrap(),
        };
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let require_cert = opts.client_ca.is_some();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            log: Mutex::default(),
            faults: Mutex::default(),
            queued: Mutex::default(),
        });
        let s = shared.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let refuse = require_cert && tls.get_ref().1.peer_certificates().is_none();
                        let _ = serve_connection(tls, s, refuse).await;
                    }
                });
            }
        });
        Server { addr, shared, _runtime: runtime }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.addr.port())
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.shared.faults.lock().unwrap().insert(path.to_owned(), fault);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
        self.shared.queued.lock().unwrap().clear();
    }

    /// `fault` for the next `n` requests of `path` only.
    pub fn fault_times(&self, path: &str, fault: Fault, n: usize) {
        self.shared.queued.lock().unwrap().entry(path.to_owned()).or_default().extend(std::iter::repeat_n(fault, n));
    }

    /// Requests for `path`, in order.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.log().into_iter().filter(|r| r.path == path).collect()
    }

    pub fn log(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Requests for anything but the manifest and what is read beside it
    /// (the trace of the tiers, the list of patches).
    pub fn file_requests(&self) -> Vec<Request> {
        let beside = ["upmirror-manifest.json", "upmirror-trace.json", "upmirror-deltas.json"];
        let listing = |path: &str| beside.iter().any(|name| path.ends_with(name));
        self.log().into_iter().filter(|r| !listing(&r.path)).collect()
    }
}

async fn serve_connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    shared: Arc<Shared>,
    no_client_cert: bool,
) -> std::io::Result<()> {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = tokio::io::BufReader::new(r);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("/").to_owned());
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let queued = shared.queued.lock().unwrap().get_mut(&target).and_then(|q| q.pop_front());
        let fault = queued.or_else(|| shared.faults.lock().unwrap().get(&target).cloned());
        let fault = if no_client_cert { Some(Fault::Status(400)) } else { fault };
        if matches!(fault, Some(Fault::Hangup)) {
            shared.log.lock().unwrap().push(Request { method, path: target, headers, status: 0 });
            return Ok(());
        }
        let (status, extra, body, mode) = respond(&shared.root, &target, &headers, fault);
        shared.log.lock().unwrap().push(Request { method: method.clone(), path: target, headers, status });
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes()).await?;
        w.flush().await?;
        if method == "HEAD" {
            continue;
        }
        match (mode, body) {
            (Mode::Whole, body) => body.write(&mut w, None).await?,
            (Mode::ResetAfter(k), body) => {
                body.write(&mut w, Some(k)).await?;
                return Ok(()); // dropping the stream closes the connection mid-body
            }
            (Mode::Stall, _) => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                return Ok(());
            }
            (Mode::StallAfter(k), body) => {
                body.write(&mut w, Some(k)).await?;
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                return Ok(());
            }
            (Mode::Drip(_), Payload::File(..)) => unimplemented!("dripping a large file"),
            (Mode::Drip(ms), Payload::Bytes(body)) => {
                for b in body {
                    w.write_all(&[b]).await?;
                    w.flush().await?;
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
            }
        }
        w.flush().await?;
    }
}

type Reply = (u16, Vec<(String, String)>, Payload, Mode);

fn respond(root: &Path, target: &str, headers: &HashMap<String, String>, fault: Option<Fault>) -> Reply {
    let big = decode(target.trim_start_matches('/'))
        .filter(|rel| !rel.split('/').any(|s| s == ".."))
        .map(|rel| root.join(rel))
        .filter(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > BIG));
    let simple = matches!(
        fault,
        None | Some(Fault::IgnoreRange | Fault::WrongStart | Fault::StallAfter(_) | Fault::ResetAfter(_))
    );
    let (status, extra, body) = match big {
        Some(path) if simple => respond_big(&path, headers, fault.clone()),
        _ => {
            let (status, extra, body) = respond_file(root, target, headers, fault.clone());
            (status, extra, Payload::Bytes(body))
        }
    };
    let mode = match fault {
        Some(Fault::ResetAfter(k)) => Mode::ResetAfter(k),
        Some(Fault::Stall) => Mode::Stall,
        Some(Fault::StallAfter(k)) => Mode::StallAfter(k),
        Some(Fault::Drip(ms)) => Mode::Drip(ms),
        _ => Mode::Whole,
    };
    (status, extra, body, mode)
}

/// A large file, or the range of it asked for (`bytes=A-B` or `bytes=A-`).
fn respond_big(
    path: &Path,
    headers: &HashMap<String, String>,
    fault: Option<Fault>,
) -> (u16, Vec<(String, String)>, Payload) {
    let meta = std::fs::metadata(path).unwrap();
    let (len, modified) = (meta.len(), meta.modified().unwrap());
    let nanos = modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let etag = format!("\"{nanos:x}-{len:x}\"");
    let extra = vec![("ETag".to_owned(), etag.clone()), ("Last-Modified".to_owned(), httpdate(modified))];
    let range = headers.get("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-'));
    let if_range_ok = headers.get("if-range").is_none_or(|v| *v == etag);
    let Some((start, end)) = range.filter(|_| if_range_ok && !matches!(fault, Some(Fault::IgnoreRange))) else {
        return (200, extra, Payload::File(path.to_owned(), 0, len));
    };
    let start: u64 = start.parse().unwrap();
    let end: u64 = end.parse().map_or(len - 1, |e: u64| e.min(len - 1));
    if start >= len {
        return (416, vec![("Content-Range".into(), format!("bytes */{len}"))], Payload::Bytes(vec![]));
    }
    let from = if matches!(fault, Some(Fault::WrongStart)) { start + 1 } else { start };
    let mut extra = extra;
    extra.push(("Content-Range".into(), format!("bytes {from}-{end}/{len}")));
    (206, extra, Payload::File(path.to_owned(), from, end + 1 - from))
}

fn respond_file(
    root: &Path,
    target: &str,
    headers: &HashMap<String, String>,
    fault: Option<Fault>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    match fault {
        Some(Fault::Status(code)) => return (code, vec![], vec![]),
        Some(Fault::RetryAfter(secs)) => return (503, vec![("Retry-After".into(), secs.to_string())], vec![]),
        Some(Fault::Redirect(to)) => return (302, vec![("Location".into(), to)], vec![]),
        Some(Fault::Body(body)) => return (200, vec![], body),
        _ => {}
    }
    let Some(rel) = decode(target.trim_start_matches('/')) else {
        return (400, vec![], vec![]);
    };
    if rel.split('/').any(|s| s == "..") {
        return (400, vec![], vec![]);
    }
    let path = root.join(&rel);
    let Ok(meta) = std::fs::metadata(&path) else {
        return (404, vec![], vec![]);
    };
    if meta.is_dir() && (rel.is_empty() || rel.ends_with('/')) {
        return (200, vec![], autoindex_json(&path));
    }
    if !meta.is_file() {
        return (404, vec![], vec![]);
    }
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut BufReader::new(std::fs::File::open(&path).unwrap()), &mut body).unwrap();
    // A content hash: tests rewrite files faster than an mtime-based tag could tell.
    let etag =
        format!("\"{:x}-{:x}\"", Sha256::digest(&body)[..8].iter().fold(0u64, |a, b| a << 8 | *b as u64), meta.len());
    if headers.get("if-none-match") == Some(&etag) {
        return (304, vec![("ETag".into(), etag)], vec![]);
    }
    match fault {
        Some(Fault::Corrupt) if !body.is_empty() => body[0] ^= 0xff,
        Some(Fault::Extra(n)) => body.extend(std::iter::repeat_n(b'x', n)),
        _ => {}
    }
    let modified = httpdate(meta.modified().unwrap());
    let mut extra = vec![("ETag".to_owned(), etag.clone()), ("Last-Modified".to_owned(), modified)];
    if matches!(fault, Some(Fault::NoLastModified)) {
        extra.pop();
    }
    if matches!(fault, Some(Fault::Gzip)) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        extra.push(("Content-Encoding".into(), "gzip".into()));
        return (200, extra, gz.finish().unwrap());
    }
    if matches!(fault, Some(Fault::AlwaysPartial)) {
        extra.push(("Content-Range".into(), format!("bytes 0-{}/{}", body.len().saturating_sub(1), body.len())));
        return (206, extra, body);
    }
    let range = headers.get("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-'));
    let if_range_ok = headers.get("if-range").is_none_or(|v| *v == etag);
    if let Some(start) = range.filter(|_| if_range_ok && !matches!(fault, Some(Fault::IgnoreRange))) {
        let start: usize = start.parse().unwrap_or(0);
        if start >= body.len() {
            return (416, vec![("Content-Range".into(), format!("bytes */{}", body.len()))], vec![]);
        }
        let from = if matches!(fault, Some(Fault::WrongStart)) { start + 1 } else { start };
        extra.push(("Content-Range".into(), format!("bytes {from}-{}/{}", body.len() - 1, body.len())));
        return (206, extra, body.split_off(from.min(body.len())));
    }
    (200, extra, body)
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `Tue, 24 Nov 2026 19:00:00 GMT`.
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        MO[month as usize - 1],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A directory as nginx's `autoindex_format json` shows it (dotfiles hidden).
fn autoindex_json(dir: &Path) -> Vec<u8> {
    let mut items = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let meta = e.metadata().unwrap();
        if name.starts_with('.') {
            continue;
        }
        let mut item = serde_json::json!({"name": name, "type": if meta.is_dir() { "directory" } else { "file" }, "mtime": httpdate(meta.modified().unwrap())});
        if meta.is_file() {
            item["size"] = meta.len().into();
        }
        items.push(item);
    }
    serde_json::to_vec(&items).unwrap()
}
