//! The listing data model: validated relative paths, entries and the
//! `upmirror-manifest/1` document. Every name an upstream sends becomes a
//! [`RelPath`] here, once, before anything touches the disk; code after this
//! point joins only `RelPath`s onto directories it owns.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::output::{escape, quote};

pub const FORMAT: &str = "upmirror-manifest/1";
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_COMPONENT_BYTES: usize = 255;
/// The most segments a path may have (the crawl's depth cap too): deeper
/// trees cost a file descriptor per level to remove, and more to check.
pub const MAX_DEPTH: usize = 64;
/// The largest file size accepted (2^53 bytes, 8 PiB): anything larger is a
/// lie, and sums of valid sizes stay far from overflowing.
pub const MAX_FILE_SIZE: u64 = 1 << 53;
/// The mtimes accepted: the epoch to the end of year 9999.
pub const MAX_MTIME: i64 = 253_402_300_799;

/// A path that is safe to join below a directory: relative, `/`-separated,
/// no `.`/`..`/empty segments, no `\`, no control characters, bounded length.
///
/// ```
/// use upmirror::manifest::RelPath;
/// assert!(RelPath::parse("releases/11.2/core.zip").is_ok());
/// assert!(RelPath::parse("a/../../etc/passwd").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    pub fn parse(s: &str) -> Result<RelPath, String> {
        let why = if s.is_empty() {
            Some("empty path")
        } else if s.len() > MAX_PATH_BYTES {
            Some("longer than 4096 bytes")
        } else if s.starts_with('/') {
            Some("absolute path")
        } else if s.contains('\\') {
            Some("backslash in path")
        } else if s.chars().any(char::is_control) {
            Some("control character in path")
        } else if s.split('/').count() > MAX_DEPTH {
            Some("more than 64 levels deep")
        } else {
            s.split('/').find_map(|seg| match seg {
                "" => Some("empty segment"),
                "." => Some("\".\" segment"),
                ".." => Some("\"..\" segment"),
                seg if seg.len() > MAX_COMPONENT_BYTES => Some("component longer than 255 bytes"),
                _ => None,
            })
        };
        match why {
            Some(why) => Err(format!("path \"{}\": {why}", quote(s, 200))),
            None => Ok(RelPath(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Each proper ancestor directory, shortest first: `a/b/c` → `a`, `a/b`.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0))
    }
}

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, String> {
        let mut d = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut d).is_err() {
            return Err(format!("\"{}\" is not a sha256 hex digest", quote(s, 80)));
        }
        Ok(Digest(d))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One file of a listing. `sha256` is known for manifest listings and for
/// files we hashed ourselves; a crawled listing may not have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub size: u64,
    pub mtime: i64,
    pub sha256: Option<Digest>,
    /// The mtime of the mirror's own copy, when it is not `mtime`: nudged
    /// past the previous version's so that validators made of mtime and
    /// size (nginx's ETag, Last-Modified) change with the content, and a
    /// client resuming with `If-Range` never mixes two versions.
    pub local_mtime: Option<i64>,
}

impl Entry {
    /// The mtime the file carries on disk.
    pub fn disk_mtime(&self) -> i64 {
        self.local_mtime.unwrap_or(self.mtime)
    }

    /// `path NUL size NUL mtime NUL sha256` (lowercase hex, empty when
    /// unknown): what identifies this version of the file.
    pub fn identity_line(&self) -> String {
        let digest = self.sha256.map(|d| d.to_string()).unwrap_or_default();
        format!("{}\0{}\0{}\0{digest}", self.path.as_str(), self.size, self.mtime)
    }
}

/// A manifest on disk, read and parsed the first time it is asked for: a
/// run that ends on a `304` never pays for a million entries.
pub struct Lazy {
    path: std::path::PathBuf,
    cell: std::sync::OnceLock<Manifest>,
}

impl Lazy {
    pub fn new(path: std::path::PathBuf) -> Lazy {
        Lazy { path, cell: std::sync::OnceLock::new() }
    }

    pub fn get(&self) -> anyhow::Result<&Manifest> {
        if let Some(m) = self.cell.get() {
            return Ok(m);
        }
        let m = Manifest::read(&self.path)?;
        Ok(self.cell.get_or_init(|| m))
    }

    pub fn into_inner(self) -> anyhow::Result<Manifest> {
        match self.cell.into_inner() {
            Some(m) => Ok(m),
            None => Manifest::read(&self.path),
        }
    }
}

/// A validated listing: entries sorted by path, unique, no file/directory
/// conflicts.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub generated_at: SystemTime,
    pub files: Vec<Entry>,
}

/// A manifest as parsed: its strings borrowed from the document where they
/// need no unescaping, so a million entries cost no two million allocations
/// before they become [`Entry`]s.
#[derive(Deserialize)]
struct RawManifest<'a> {
    #[serde(borrow)]
    format: Cow<'a, str>,
    #[serde(borrow)]
    generated_at: Cow<'a, str>,
    #[serde(borrow)]
    files: Vec<RawEntryRef<'a>>,
}

#[derive(Deserialize)]
struct RawEntryRef<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    size: u64,
    mtime: i64,
    #[serde(borrow)]
    sha256: Cow<'a, str>,
    #[serde(default)]
    local_mtime: Option<i64>,
}

#[derive(Serialize)]
struct RawEntry {
    path: String,
    size: u64,
    mtime: i64,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local_mtime: Option<i64>,
}

impl Manifest {
    /// Parse and validate a manifest document whole; any bad entry rejects it.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        // serde's messages quote the offending value: clip them.
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a valid manifest: {}", quote(&e.to_string(), 300)))?;
        if raw.format != FORMAT {
            return Err(format!("unknown format \"{}\" (expected {FORMAT})", quote(&raw.format, 80)));
        }
        let generated_at = humantime::parse_rfc3339_weak(&raw.generated_at)
            .map_err(|e| format!("generated_at \"{}\": {e}", quote(&raw.generated_at, 80)))?;
        let files = raw
            .files
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let path = RelPath::parse(&r.path).map_err(|e| format!("file {}: {e}", i + 1))?;
                let sha256 = Digest::parse(&r.sha256).map_err(|e| format!("file {}: {path}: {e}", i + 1))?;
                Ok(Entry { path, size: r.size, mtime: r.mtime, sha256: Some(sha256), local_mtime: r.local_mtime })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Manifest::new(generated_at, files)
    }

    /// Sort `files` and check the listing as a whole: sizes and mtimes in
    /// range, no duplicate paths, no path that is both a file and a directory.
    pub fn new(generated_at: SystemTime, mut files: Vec<Entry>) -> Result<Manifest, String> {
        if let Some(e) = files.iter().find(|e| e.size > MAX_FILE_SIZE) {
            return Err(format!("\"{}\" claims {} bytes, more than the 2^53 accepted", e.path, e.size));
        }
        if let Some(e) = files.iter().find(|e| !(0..=MAX_MTIME).contains(&e.mtime.max(e.disk_mtime()))) {
            return Err(format!("\"{}\" has mtime {}, outside 1970 to 9999", e.path, e.mtime));
        }
        files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(format!("path \"{}\" is listed twice", w[0].path));
        }
        let names: HashSet<&str> = files.iter().map(|e| e.path.as_str()).collect();
        for e in &files {
            if let Some(dir) = e.path.ancestors().find(|a| names.contains(a)) {
                return Err(format!("\"{}\" is listed as a file and as the directory of \"{}\"", escape(dir), e.path));
            }
        }
        Ok(Manifest { generated_at, files })
    }

    /// Read and parse the manifest file at `path`; errors name the file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Manifest> {
        let read = std::fs::read(path);
        let bytes = anyhow::Context::with_context(read, || format!("could not read {}", path.display()))?;
        Manifest::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The entry at `path`, if the manifest lists it (its files are sorted by path).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.files.binary_search_by(|e| e.path.as_str().cmp(path)).ok().map(|i| &self.files[i])
    }

    /// The bytes of all files (saturating: only a listing's plan is summed
    /// for a decision, and that with checked arithmetic).
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().fold(0u64, |sum, e| sum.saturating_add(e.size))
    }

    /// Render the document: one entry per line, sorted, sha256 in lowercase hex.
    /// Every entry must carry its digest.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.files.len() * 160);
        let generated = humantime::format_rfc3339_seconds(self.generated_at);
        out.extend_from_slice(
            format!("{{\"format\":\"{FORMAT}\",\"generated_at\":\"{generated}\",\"files\":[").as_bytes(),
        );
        for (i, e) in self.files.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            let raw = RawEntry {
                path: e.path.as_str().to_owned(),
                size: e.size,
                mtime: e.mtime,
                sha256: e.sha256.map(|d| d.to_string()).unwrap_or_default(),
                local_mtime: e.local_mtime,
            };
            // Serialising a struct of strings and integers cannot fail.
            serde_json::to_writer(&mut out, &raw).expect("serialise manifest entry");
        }
        out.extend_from_slice(b"\n]}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_identified_in_plain_lowercase_hex() {
        let mut e = Entry { path: RelPath::parse("a/b").unwrap(), size: 3, mtime: 7, sha256: None, local_mtime: None };
        assert_eq!(e.identity_line(), "a/b\u{0}3\u{0}7\u{0}");
        e.sha256 = Some(Digest([0xab; 32]));
        assert_eq!(e.identity_line(), format!("a/b\u{0}3\u{0}7\u{0}{}", "ab".repeat(32)));
    }

    #[test]
    fn hostile_paths_are_rejected() {
        let long_component = "a".repeat(256);
        let long_path = format!("{}/x", "a/".repeat(2048));
        for bad in [
            "",
            "../x",
            "/etc/cron.d/x",
            "a/../../b",
            "a\\..\\b",
            "a//b",
            "a/./b",
            "./a",
            "a/",
            "a\0b",
            "a\u{1b}[2Jb",
            "line\nbreak",
            "..",
            ".",
            &long_component,
            &long_path,
        ] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn ordinary_paths_are_accepted() {
        for good in ["a", "a/b/c.zip", ".treeinfo", "dir/.hidden", "with space/100% #1?.txt", "ünï/cödé", "...", "a..b"]
        {
            assert!(RelPath::parse(good).is_ok(), "{good:?} was rejected");
        }
        assert!(RelPath::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn errors_escape_the_name() {
        let err = RelPath::parse("x/\u{1b}[31m/../y").unwrap_err();
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    fn doc(paths: &[&str]) -> String {
        let files: Vec<String> = paths
            .iter()
            .map(|p| {
                format!(r#"{{"path":{},"size":1,"mtime":0,"sha256":"{}"}}"#, serde_json::json!(p), "ab".repeat(32))
            })
            .collect();
        format!(r#"{{"format":"{FORMAT}","generated_at":"2026-11-24T19:00:00Z","files":[{}]}}"#, files.join(","))
    }

    #[test]
    fn duplicates_and_file_dir_conflicts_reject_the_listing() {
        assert!(Manifest::parse(doc(&["a", "b"]).as_bytes()).is_ok());
        assert!(Manifest::parse(doc(&["a", "a"]).as_bytes()).unwrap_err().contains("twice"));
        assert!(Manifest::parse(doc(&["a/b", "a"]).as_bytes()).unwrap_err().contains("directory"));
        assert!(Manifest::parse(doc(&["a", "b/../x"]).as_bytes()).is_err());
    }

    #[test]
    fn malformed_documents_are_rejected() {
        let neg = doc(&["a"]).replace(r#""size":1"#, r#""size":-1"#);
        assert!(Manifest::parse(neg.as_bytes()).is_err());
        let fmt = doc(&["a"]).replace(FORMAT, "other/9");
        assert!(Manifest::parse(fmt.as_bytes()).unwrap_err().contains("unknown format"));
        let digest = doc(&["a"]).replace(&"ab".repeat(32), "xyz");
        assert!(Manifest::parse(digest.as_bytes()).is_err());
        assert!(Manifest::parse(b"<html>captive portal</html>").is_err());
    }

    #[test]
    fn unknown_fields_are_ignored_and_output_round_trips() {
        let text = doc(&["b", "a/x"]).replace(r#""files""#, r#""vendor":{"x":1},"files""#);
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.files[0].path.as_str(), "a/x");
        let again = Manifest::parse(&m.to_json()).unwrap();
        assert_eq!(again.files, m.files);
        assert_eq!(again.generated_at, m.generated_at);
    }
}
