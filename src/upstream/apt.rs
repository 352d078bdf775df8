//! An apt repository in a crawl under `openpgp_keyring`: each
//! `InRelease` (or `Release` with `Release.gpg` beside it) must be signed by
//! a keyring key; the indices it lists then get the sha256 it names, a
//! `Packages` among them (plain, else `.xz`, else `.gz`; checked before it
//! is unpacked, and unpacked within a bound) is read for the sha256 of
//! every package it lists, and a `by-hash/SHA256/` file is held to its name.

use std::collections::HashSet;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest as _, Sha256};

use super::Upstreams;
use super::sums::{Sums, verified_text};
use crate::manifest::{Digest, RelPath};

/// The largest `Release` or `Packages` read.
const MAX_INDEX_BYTES: u64 = 64 << 20;
/// The largest `Packages` unpacked (Debian's main for amd64 is ~60 MiB).
const MAX_UNPACKED_BYTES: u64 = 256 << 20;

/// The digests the signed `Release` files of the crawl name, with the
/// packages of their uncompressed `Packages` indices.
pub(super) async fn apt_digests(up: &Upstreams, i: usize, all: &HashSet<&str>) -> Result<Sums> {
    let mut sums = Sums::default();
    for (dir, signed) in releases(all) {
        let path = rel(dir, signed)?;
        let url = up.file_url(i, &path);
        let (bytes, _) = up.get_small(&url, MAX_INDEX_BYTES).await.with_context(|| url.to_string())?;
        // InRelease is clearsigned; Release has Release.gpg beside it.
        let detached = if signed == "Release" { Some(rel(dir, "Release.gpg")?) } else { None };
        let (text, signer) = verified_text(up, i, &path, &bytes, detached.as_ref()).await?;
        let release = parse_release(&text).map_err(|e| anyhow!("{url}: {e}"))?;
        sums.digests.extend(release.by_hash_sha512(dir, all));
        let root = dir.find("dists/").map_or("", |at| &dir[..at]);
        for (path, digest) in release.package_indices(dir, all) {
            sums.digests.extend(packages(up, i, &path, digest, root).await?);
        }
        // A release that lists itself (apt-ftparchive run over an old one) names a digest it cannot have.
        let own = |name: &str| matches!(name, "Release" | "InRelease" | "Release.gpg");
        let listed = release.sha256.into_iter().filter(|(name, _)| !own(name));
        sums.digests.extend(listed.map(|(name, digest)| (format!("{dir}{name}"), digest)));
        sums.signed_by(Some(signer));
    }
    for path in all.iter().filter(|p| p.contains("/by-hash/SHA256/")) {
        if let Some(digest) = path.rsplit('/').next().and_then(|hex| Digest::parse(hex).ok()) {
            sums.digests.entry(path.to_string()).or_insert(digest);
        }
    }
    Ok(sums)
}

/// Each directory with a signed release: its `InRelease`, else its
/// `Release` when `Release.gpg` is beside it.
fn releases<'a>(all: &HashSet<&'a str>) -> Vec<(&'a str, &'static str)> {
    let mut found: Vec<(&str, &str)> = Vec::new();
    for path in all {
        let (dir, name) = path.rsplit_once('/').map_or(("", *path), |(d, n)| (&path[..d.len() + 1], n));
        let inrelease = all.contains(format!("{dir}InRelease").as_str());
        match name {
            "InRelease" => found.push((dir, "InRelease")),
            "Release" if !inrelease && all.contains(format!("{dir}Release.gpg").as_str()) => {
                found.push((dir, "Release"))
            }
            _ => {}
        }
    }
    found.sort();
    found
}

fn rel(dir: &str, name: &str) -> Result<RelPath> {
    RelPath::parse(&format!("{dir}{name}")).map_err(|e| anyhow!("{dir}{name}: {e}"))
}

/// The `Packages` index at `path` (plain, `.xz` or `.gz`), its sha256
/// checked against the signed release's before it is unpacked: each
/// package's path (below `root`) and sha256.
async fn packages(up: &Upstreams, i: usize, path: &str, want: Digest, root: &str) -> Result<Vec<(String, Digest)>> {
    let url = up.file_url(i, &rel("", path)?);
    let (bytes, _) = up.get_small(&url, MAX_INDEX_BYTES).await.with_context(|| url.to_string())?;
    let got = Digest(Sha256::digest(&bytes).into());
    if got != want {
        bail!("{url}: not trusted: its sha256 is {got}, the signed Release says {want}");
    }
    let text = unpack(path, &bytes, MAX_UNPACKED_BYTES).map_err(|e| anyhow!("{url}: {e}"))?;
    let listed = parse_packages(&String::from_utf8_lossy(&text)).map_err(|e| anyhow!("{url}: {e}"))?;
    Ok(listed.into_iter().map(|(file, d)| (format!("{root}{file}"), d)).collect())
}

/// An index as its name says it is packed, at most `cap` bytes.
fn unpack(name: &str, bytes: &[u8], cap: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Bounded(Vec::new(), cap);
    if name.ends_with(".xz") {
        lzma_rs::xz_decompress(&mut &bytes[..], &mut out).map_err(|e| match e {
            lzma_rs::error::Error::IoError(io) => io,
            other => std::io::Error::other(format!("not xz: {other}")),
        })?;
    } else if name.ends_with(".gz") {
        std::io::copy(&mut flate2::read::GzDecoder::new(bytes), &mut out)?;
    } else {
        return Ok(bytes.to_vec());
    }
    Ok(out.0)
}

/// A buffer that refuses to grow past its cap.
struct Bounded(Vec<u8>, u64);

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if (self.0.len() + data.len()) as u64 > self.1 {
            return Err(std::io::Error::other(format!("unpacks to more than {} bytes", self.1)));
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a release says of its indices.
#[derive(Debug, Default)]
pub struct Release {
    /// Each index's path (relative to the release) and sha256.
    pub sha256: Vec<(String, Digest)>,
    /// Each index's path and SHA512, in hex: the names of its `by-hash/SHA512/` copies.
    pub sha512: Vec<(String, String)>,
}

impl Release {
    /// Of each directory's `Packages` indices among `all` (the release in
    /// `dir`), the one read: plain, else `.xz`, else `.gz`; with its sha256.
    fn package_indices(&self, dir: &str, all: &HashSet<&str>) -> Vec<(String, Digest)> {
        let mut best: std::collections::BTreeMap<&str, (usize, String, Digest)> = Default::default();
        for (name, digest) in &self.sha256 {
            let (index_dir, file) = name.rsplit_once('/').unwrap_or(("", name));
            let Some(rank) = ["Packages", "Packages.xz", "Packages.gz"].iter().position(|p| *p == file) else {
                continue;
            };
            let path = format!("{dir}{name}");
            if all.contains(path.as_str()) && best.get(index_dir).is_none_or(|(r, _, _)| rank < *r) {
                best.insert(index_dir, (rank, path, *digest));
            }
        }
        best.into_values().map(|(_, path, digest)| (path, digest)).collect()
    }

    /// The sha256 of each `by-hash/SHA512/` copy of an index among `all`
    /// (the release in `dir`): the index's own.
    fn by_hash_sha512(&self, dir: &str, all: &HashSet<&str>) -> Vec<(String, Digest)> {
        let mut out = Vec::new();
        for (name, hex) in &self.sha512 {
            let index_dir = name.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/"));
            let copy = format!("{dir}{index_dir}by-hash/SHA512/{hex}");
            let sha256 = self.sha256.iter().find(|(n, _)| n == name).map(|(_, d)| *d);
            out.extend(sha256.filter(|_| all.contains(copy.as_str())).map(|d| (copy, d)));
        }
        out
    }
}

/// The `SHA256:` and `SHA512:` fields of a release.
pub fn parse_release(text: &str) -> Result<Release, String> {
    let mut release = Release::default();
    let mut field = "";
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            field = line.trim_end();
            continue;
        }
        if field != "SHA256:" && field != "SHA512:" {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(hex), Some(_size), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("a {field} line is not \"HEX SIZE PATH\": {}", crate::output::escape(line.trim())));
        };
        match field {
            "SHA256:" => release.sha256.push((name.to_owned(), Digest::parse(hex)?)),
            _ => release.sha512.push((name.to_owned(), hex.to_ascii_lowercase())),
        }
    }
    if release.sha256.is_empty() {
        return Err("it lists no SHA256 of any index".into());
    }
    Ok(release)
}

/// Each package of a `Packages` index: its `Filename` and `SHA256`.
pub fn parse_packages(text: &str) -> Result<Vec<(String, Digest)>, String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let field = |name: &str| {
            stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(str::trim))
        };
        let (Some(file), Some(hex)) = (field("Filename"), field("SHA256")) else { continue };
        out.push((file.to_owned(), Digest::parse(hex)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_release_names_its_indices() {
        let text = format!(
            "Origin: Vendor\nMD5Sum:\n 0123 10 main/binary-amd64/Packages\nSHA256:\n {HEX}   0 main/binary-amd64/Packages\n {HEX} 20 main/binary-amd64/Packages.xz\nDate: x\n"
        );
        let release = parse_release(&text).unwrap();
        assert!(release.sha512.is_empty());
        let names: Vec<&str> = release.sha256.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["main/binary-amd64/Packages", "main/binary-amd64/Packages.xz"]);
        assert!(parse_release("Origin: x\n").is_err());
        assert!(parse_release("SHA256:\n nothex 1 a\n").is_err());
    }

    #[test]
    fn indices_unpack_within_a_bound() {
        let text = b"Package: a\n".repeat(1000);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut xz).unwrap();
        assert_eq!(unpack("Packages.xz", &xz, 1 << 20).unwrap(), text);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &text).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(unpack("Packages.gz", &gz, 1 << 20).unwrap(), text);
        assert!(unpack("Packages.xz", b"not xz", 1 << 20).is_err());
        // Past the bound: refused, for either packing.
        for (name, packed) in [("Packages.xz", &xz), ("Packages.gz", &gz)] {
            let err = unpack(name, packed, 4096).unwrap_err();
            assert!(err.to_string().contains("unpacks to more than 4096 bytes"), "{name}: {err}");
        }
    }

    #[test]
    fn packages_name_their_files() {
        let text = format!("Package: a\nFilename: pool/main/a_1_all.deb\nSHA256: {HEX}\n\nPackage: b\nSHA256: {HEX}\n");
        let listed = parse_packages(&text).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "pool/main/a_1_all.deb");
    }
}
