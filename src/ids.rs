//! Snapshot ids. A snapshot is named by what it holds, so that hosts which
//! publish the same upstream state with the same filters give it the same
//! name, and a pinned URL minted on one resolves on all of them:
//! `<origin time>-<12 hex>`, the origin time being when the upstream made
//! its listing (`YYYYMMDDTHHMMSSZ`), the hex the start of the sha256 of the
//! sorted file list. Older ids (`YYYYMMDDTHHMMSSZ`, `…-N`: the clock when the
//! snapshot was built) stay valid. Snapshots are ordered by when they were
//! first published, as the state records, never by name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::manifest::Entry;
use crate::state::State;

/// Hex digits of the file list's sha256 in an id: 48 bits.
const HASH_HEX: usize = 12;

/// The id of a snapshot of `files` (sorted by path, as a manifest holds
/// them) from a listing made at `origin`. Each file counts with its path,
/// size and sha256 (its mtime when the digest is unknown).
pub fn content_id(origin: SystemTime, files: &[Entry]) -> String {
    let mut h = Sha256::new();
    for e in files {
        let version = e.sha256.map_or_else(|| e.mtime.to_string(), |d| d.to_string());
        h.update(format!("{}\0{}\0{version}\n", e.path.as_str(), e.size).as_bytes());
    }
    let hex = hex::encode(h.finalize());
    format!("{}-{}", stamp(origin), &hex[..HASH_HEX])
}

/// `YYYYMMDDTHHMMSSZ` of `t`.
fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

/// Whether `s` is a snapshot id: a stamp alone, with a `-N` suffix (older
/// ids), or with 12 lowercase hex digits.
pub fn is_snapshot_id(s: &str) -> bool {
    let (stamp, suffix) = s.split_once('-').unwrap_or((s, "1"));
    let hashed = suffix.len() == HASH_HEX && suffix.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let numbered = !suffix.is_empty() && suffix.bytes().all(|c| c.is_ascii_digit());
    time_of(stamp).is_some() && (hashed || numbered)
}

/// The origin time of a content id; `None` for an older id, whose stamp is
/// only when it was built.
pub fn origin_of(id: &str) -> Option<SystemTime> {
    let hashed = id.split_once('-').is_some_and(|(_, h)| h.len() == HASH_HEX);
    time_of(id).filter(|_| hashed)
}

/// The time an id's stamp names: the origin's for a content id, the build's
/// for an older one.
pub fn time_of(id: &str) -> Option<SystemTime> {
    let stamp = id.split_once('-').map_or(id, |(s, _)| s);
    let b = stamp.as_bytes();
    let digits =
        b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !digits {
        return None;
    }
    let d = |r: std::ops::Range<usize>| &stamp[r];
    let text = format!("{}-{}-{}T{}:{}:{}Z", d(0..4), d(4..6), d(6..8), d(9..11), d(11..13), d(13..15));
    humantime::parse_rfc3339(&text).ok()
}

/// Sort `ids` oldest first: in the order the state says they were first
/// published; those it has no place for (published before it kept one,
/// or never), before them by when they were first published, else by the
/// time their stamp names, an older id's `-N` breaking ties.
pub fn order(ids: &mut [String], state: &State) {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    ids.sort_by_cached_key(|id| {
        let info = state.snapshots.get(id);
        let place = info.and_then(|i| i.publish_order).unwrap_or(0);
        let published = info.and_then(|i| i.first_published_at.or(i.published_at));
        let at = published.or_else(|| time_of(id).map(secs)).unwrap_or(0);
        let n: u64 = id.split_once('-').and_then(|(_, n)| n.parse().ok()).unwrap_or(0);
        (place, at, n, id.clone())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Digest, RelPath};

    fn entry(path: &str, size: u64, digest: Option<u8>) -> Entry {
        let sha256 = digest.map(|b| Digest([b; 32]));
        Entry { path: RelPath::parse(path).unwrap(), size, mtime: 7, sha256, local_mtime: None }
    }

    #[test]
    fn ids_are_recognised() {
        for good in ["20261124T190000Z", "20261124T190000Z-12", "20261124T190000Z-0123456789ab"] {
            assert!(is_snapshot_id(good), "{good}");
        }
        for bad in [
            "20261124T190000",
            "2026112T190000Z",
            "20261124T190000Z-",
            "20261124T190000Z-x",
            "20261124T190000Z-0123456789AB",
            "20261124T190000Z-0123456789abc",
            "20261324T190000Z",
            "../x",
            "current",
        ] {
            assert!(!is_snapshot_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_same_files_from_the_same_listing_get_the_same_id() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let files = [entry("a", 1, Some(1)), entry("b/c", 2, Some(2))];
        let id = content_id(t, &files);
        assert!(is_snapshot_id(&id), "{id}");
        assert_eq!((time_of(&id), origin_of(&id)), (Some(t), Some(t)));
        assert_eq!(origin_of("20261124T190000Z-12"), None);
        assert_eq!(id, content_id(t, &files.clone()));
        assert_ne!(id, content_id(t, &files[..1]), "a filter that drops a file");
        assert_ne!(id, content_id(t, &[entry("a", 1, Some(3)), entry("b/c", 2, Some(2))]), "other bytes");
        assert_ne!(id, content_id(t + Duration::from_secs(1), &files), "another listing");
        assert_ne!(content_id(t, &[entry("a", 1, None)]), content_id(t, &[entry("a", 1, Some(1))]));
    }

    #[test]
    fn ids_are_ordered_by_first_publish_then_by_stamp() {
        let mut state = State::default();
        // Two content ids published in one second, the one that sorts first by name last.
        state.published("20200101T000000Z-ffffffffffff", None, 1_900_000_000, true);
        state.published("20200101T000000Z-000000000000", None, 1_900_000_000, true);
        // An older id published before the state kept places; three it knows nothing of.
        let old = crate::state::SnapshotInfo { first_published_at: Some(1_800_000_000), ..Default::default() };
        state.snapshots.insert("20261124T190000Z".into(), old);
        let mut ids: Vec<String> = ["20200101T000000Z-000000000000", "20200101T000000Z-ffffffffffff"]
            .into_iter()
            .chain(["20261124T190000Z", "20261123T190000Z-10", "20261123T190000Z-2", "20261123T190000Z"])
            .map(String::from)
            .collect();
        order(&mut ids, &state);
        assert_eq!(
            ids,
            [
                "20261123T190000Z",
                "20261123T190000Z-2",
                "20261123T190000Z-10",
                "20261124T190000Z",
                "20200101T000000Z-ffffffffffff",
                "20200101T000000Z-000000000000"
            ]
        );
    }
}
