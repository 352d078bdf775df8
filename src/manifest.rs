//! The listing data model: validated relative paths, entries and the
//! `upmirror-manifest/1` document. Every name an upstream sends becomes a
//! [`RelPath`] here, once, before anything touches the disk; code after this
//! point joins only `RelPath`s onto directories it owns.

use std::borrow::Cow;
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
/// Shared, not copied: the listing, the plan, the downloads and the new
/// snapshot's manifest name a million paths once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(std::sync::Arc<str>);

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
            None => Ok(RelPath(s.into())),
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
        f.pad(&escape(&self.0))
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

    /// Each entry in path order: from the manifest when it was read, else
    /// as its file is read, never held (a manifest upmirror wrote, whose
    /// paths are in order: see [`Manifest::each_from`]).
    pub fn each(&self, mut f: impl FnMut(Entry)) -> anyhow::Result<()> {
        if let Some(m) = self.cell.get() {
            m.files.iter().cloned().for_each(f);
            return Ok(());
        }
        Manifest::each_from(open(&self.path)?, &mut f).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))
    }
}

/// A validated listing: entries sorted by path, unique, no file/directory
/// conflicts.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub generated_at: SystemTime,
    pub files: Vec<Entry>,
}

/// What a manifest document says of itself beside its files.
#[derive(Default)]
struct Head {
    format: String,
    generated_at: String,
}

/// A manifest document as it is read: each file checked, made an [`Entry`]
/// and handed to the callback, its strings borrowed from the document until
/// then, so a million entries are never held twice.
struct Document<'f, F>(&'f mut F);

impl<'de, F: FnMut(Entry) -> Result<(), String>> serde::de::Visitor<'de> for Document<'_, F> {
    type Value = Head;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a manifest object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let (mut head, mut files) = (Head::default(), false);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match &*key {
                "format" => head.format = map.next_value::<Cow<'de, str>>()?.into_owned(),
                "generated_at" => head.generated_at = map.next_value::<Cow<'de, str>>()?.into_owned(),
                "files" => files = map.next_value_seed(Document(&mut *self.0)).map(|()| true)?,
                _ => drop(map.next_value::<serde::de::IgnoredAny>()?),
            }
        }
        match files {
            true => Ok(head),
            false => Err(serde::de::Error::missing_field("files")),
        }
    }
}

impl<'de, F: FnMut(Entry) -> Result<(), String>> serde::de::DeserializeSeed<'de> for Document<'_, F> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        struct Files<'f, F>(&'f mut F);
        impl<'de, F: FnMut(Entry) -> Result<(), String>> serde::de::Visitor<'de> for Files<'_, F> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of files")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                let mut n = 0;
                while let Some(raw) = seq.next_element::<RawEntryRef>()? {
                    n += 1;
                    raw.entry(n).and_then(&mut *self.0).map_err(serde::de::Error::custom)?;
                }
                Ok(())
            }
        }
        d.deserialize_seq(Files(self.0))
    }
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

impl RawEntryRef<'_> {
    /// The `n`th file of the document, checked.
    fn entry(&self, n: usize) -> Result<Entry, String> {
        let path = RelPath::parse(&self.path).map_err(|e| format!("file {n}: {e}"))?;
        let sha256 = Digest::parse(&self.sha256).map_err(|e| format!("file {n}: {path}: {e}"))?;
        Ok(Entry { path, size: self.size, mtime: self.mtime, sha256: Some(sha256), local_mtime: self.local_mtime })
    }
}

#[derive(Serialize)]
struct RawEntry<'a> {
    path: &'a str,
    size: u64,
    mtime: i64,
    sha256: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local_mtime: Option<i64>,
}

impl Manifest {
    /// Parse and validate a manifest document whole; any bad entry rejects it.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        Manifest::parse_with(serde_json::Deserializer::from_slice(bytes))
    }

    /// [`Manifest::parse`] of a document read as it is parsed: a million
    /// entries without the document in memory beside them.
    pub fn parse_from(reader: impl std::io::Read) -> Result<Manifest, String> {
        Manifest::parse_with(serde_json::Deserializer::from_reader(reader))
    }

    fn parse_with<'de, R: serde_json::de::Read<'de>>(de: serde_json::Deserializer<R>) -> Result<Manifest, String> {
        let mut files = Vec::new();
        let head = Manifest::each_with(de, |e| {
            files.push(e);
            Ok(())
        })?;
        let generated_at = humantime::parse_rfc3339_weak(&head.generated_at)
            .map_err(|e| format!("generated_at \"{}\": {e}", quote(&head.generated_at, 80)))?;
        Manifest::new(generated_at, files)
    }

    /// Each file of the document `de`, checked, handed to `f` as it is read;
    /// what the document says of itself, its format checked.
    fn each_with<'de, R: serde_json::de::Read<'de>>(
        mut de: serde_json::Deserializer<R>,
        mut f: impl FnMut(Entry) -> Result<(), String>,
    ) -> Result<Head, String> {
        // serde's messages quote the offending value: clip them.
        let invalid = |e: serde_json::Error| match e.is_io() {
            true => format!("could not be read: {e}"),
            false => format!("not a valid manifest: {}", quote(&e.to_string(), 300)),
        };
        let head = serde::Deserializer::deserialize_map(&mut de, Document(&mut f)).map_err(invalid)?;
        de.end().map_err(invalid)?;
        if head.format != FORMAT {
            return Err(format!("unknown format \"{}\" (expected {FORMAT})", quote(&head.format, 80)));
        }
        Ok(head)
    }

    /// Each entry of a manifest upmirror wrote (its paths in order), in
    /// order, as it is read: a snapshot's manifest is planned against
    /// without being held. A path out of order is an error.
    pub fn each_from(reader: impl std::io::Read, mut f: impl FnMut(Entry)) -> Result<(), String> {
        let mut last: Option<RelPath> = None;
        let in_order = |e: Entry| {
            if last.as_ref().is_some_and(|l| *l >= e.path) {
                return Err(format!("\"{}\" is out of order: it is no manifest upmirror wrote", e.path));
            }
            last = Some(e.path.clone());
            f(e);
            Ok(())
        };
        Manifest::each_with(serde_json::Deserializer::from_reader(reader), in_order).map(drop)
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
        // Neighbours share directories: each is looked up once per run of them.
        let is_file = |dir: &str| files.binary_search_by(|f| f.path.as_str().cmp(dir)).is_ok();
        let mut clear: Vec<&str> = Vec::new();
        for e in &files {
            if let Some(dir) = e.path.ancestors().find(|a| !clear.contains(a) && is_file(a)) {
                return Err(format!("\"{}\" is listed as a file and as the directory of \"{}\"", escape(dir), e.path));
            }
            clear.clear();
            clear.extend(e.path.ancestors());
        }
        Ok(Manifest { generated_at, files })
    }

    /// Read and parse the manifest file at `path`; errors name the file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Manifest> {
        Manifest::parse_from(open(path)?).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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
        let mut out = Vec::with_capacity(64 + self.files.len() * 170);
        // Writing to memory cannot fail.
        self.write_json(&mut out).expect("render manifest");
        out
    }

    /// [`Manifest::to_json`] written as it is rendered: a million entries
    /// never sit in memory as one document.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let generated = humantime::format_rfc3339_seconds(self.generated_at);
        write!(out, "{{\"format\":\"{FORMAT}\",\"generated_at\":\"{generated}\",\"files\":[")?;
        for (i, e) in self.files.iter().enumerate() {
            out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
            let sha256 = e.sha256.map(|d| d.to_string()).unwrap_or_default();
            let (path, sha256) = (e.path.as_str(), sha256.as_str());
            let raw = RawEntry { path, size: e.size, mtime: e.mtime, sha256, local_mtime: e.local_mtime };
            serde_json::to_writer(&mut *out, &raw)?;
        }
        out.write_all(b"\n]}\n")
    }
}

/// The manifest file at `path`, to be read through a buffer.
fn open(path: &std::path::Path) -> anyhow::Result<std::io::BufReader<std::fs::File>> {
    let file = std::fs::File::open(path);
    let file = anyhow::Context::with_context(file, || format!("could not read {}", path.display()))?;
    Ok(std::io::BufReader::with_capacity(256 * 1024, file))
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
    fn a_file_that_is_also_a_directory_is_found_past_its_sorted_neighbours() {
        let entry =
            |p: &str| Entry { path: RelPath::parse(p).unwrap(), size: 1, mtime: 1, sha256: None, local_mtime: None };
        let at = SystemTime::UNIX_EPOCH;
        // "a-b" and "a.c" sort between "a" and "a/x"; "x/d/e-1/g" and "x/d/e.1" after "x/d/e".
        for (paths, dir) in
            [(&["a/x", "a.c", "a", "a-b"][..], "a"), (&["x/d/e/f", "x/d/e", "x/d/e.1", "x/d/e-1/g"][..], "x/d/e")]
        {
            let err = Manifest::new(at, paths.iter().map(|p| entry(p)).collect()).unwrap_err();
            assert!(err.starts_with(&format!("\"{dir}\" is listed as a file and as the directory")), "{err}");
        }
        assert!(Manifest::new(at, ["a/x", "a/y", "a-b/c", "b"].iter().map(|p| entry(p)).collect()).is_ok());
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
