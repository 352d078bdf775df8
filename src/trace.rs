//! The trace of the tiers: each mirror that publishes a snapshot appends
//! itself to the trace its upstream served, in `upmirror-trace.json` beside
//! the snapshot's manifest — outside the manifest, so that a vendor's
//! signature stays whole. Every entry repeats the origin's `generated_at`:
//! how far the mirror is behind the origin, not just its direct upstream.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::output::clip;

/// The trace's file name in a snapshot (and at an upstream's base).
pub const TRACE_FILE: &str = "upmirror-trace.json";
/// The largest trace read from an upstream.
pub const MAX_TRACE_BYTES: u64 = 64 << 10;
/// Tiers kept: the nearest ones.
const MAX_TIERS: usize = 16;
const FORMAT: &str = "upmirror-trace/1";
/// Longest name or id kept from an upstream's trace.
const MAX_FIELD: usize = 200;

/// One mirror that published the snapshot on its way down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// The mirror's host name.
    pub name: String,
    pub snapshot: String,
    /// When the origin generated its listing (RFC 3339).
    pub origin_generated_at: String,
    /// When this tier built the snapshot (RFC 3339).
    pub published_at: String,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    format: String,
    tiers: Vec<Tier>,
}

/// An upstream's trace: at most the nearest 16 tiers, each field clipped;
/// `None` when it is not a trace whose dates read as RFC 3339.
pub fn parse(bytes: &[u8]) -> Option<Vec<Tier>> {
    let doc: Doc = serde_json::from_slice(bytes).ok()?;
    if doc.format != FORMAT || doc.tiers.iter().any(|t| !is_time(&t.origin_generated_at) || !is_time(&t.published_at)) {
        return None;
    }
    let skip = doc.tiers.len().saturating_sub(MAX_TIERS - 1);
    let clipped = |s: &str| clip(s, MAX_FIELD).to_owned();
    Some(
        doc.tiers
            .into_iter()
            .skip(skip)
            .map(|t| Tier { name: clipped(&t.name), snapshot: clipped(&t.snapshot), ..t })
            .collect(),
    )
}

fn is_time(s: &str) -> bool {
    s.len() <= 40 && humantime::parse_rfc3339_weak(s).is_ok()
}

/// The trace of a snapshot this mirror built: its upstream's, then itself.
/// Without an upstream trace, the listing's own `generated_at` is the
/// origin's; so it is when the trace (unsigned) names a later origin than
/// the listing shows, which would make the mirror look fresher than it is.
pub fn extend(mut tiers: Vec<Tier>, snapshot: &str, generated_at: SystemTime) -> Vec<Tier> {
    let listed = humantime::format_rfc3339_seconds(generated_at).to_string();
    let claimed = tiers.first().map(|t| t.origin_generated_at.clone());
    let later = |t: &String| humantime::parse_rfc3339_weak(t).is_ok_and(|t| t > generated_at);
    let origin = claimed.filter(|t| !later(t)).unwrap_or(listed);
    tiers.push(Tier {
        name: host_name(),
        snapshot: snapshot.to_owned(),
        origin_generated_at: origin,
        published_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    tiers
}

/// This host's name, as the kernel has it (empty when unknown).
pub fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    clip(name.trim(), MAX_FIELD).to_owned()
}

pub fn render(tiers: &[Tier]) -> Vec<u8> {
    let doc = Doc { format: FORMAT.into(), tiers: tiers.to_vec() };
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// The trace a snapshot carries (empty when it has none).
pub fn read(snapshot: &std::path::Path) -> Vec<Tier> {
    std::fs::read(snapshot.join(TRACE_FILE)).ok().and_then(|b| parse(&b)).unwrap_or_default()
}

/// The tiers above the one that built a snapshot (which, building it
/// again, appends itself again).
pub fn read_above(snapshot: &std::path::Path) -> Vec<Tier> {
    let mut tiers = read(snapshot);
    tiers.pop();
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_is_extended_bounded_and_checked() {
        let start = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let one = extend(Vec::new(), "A", start);
        assert_eq!(one[0].origin_generated_at, "2023-11-14T22:13:20Z");
        let two = extend(parse(&render(&one)).unwrap(), "B", SystemTime::now());
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].origin_generated_at, "2023-11-14T22:13:20Z", "the origin's time travels down");
        let mut many = two.clone();
        for _ in 0..40 {
            many.push(Tier { name: "x".repeat(10_000), ..two[1].clone() });
        }
        let parsed = parse(&render(&many)).unwrap();
        assert_eq!(parsed.len(), MAX_TIERS - 1, "room for this tier");
        assert!(parsed.iter().all(|t| t.name.len() <= MAX_FIELD));
        let bad = Tier { origin_generated_at: "yesterday".into(), ..two[0].clone() };
        assert_eq!(parse(&render(&[bad])), None);
        assert_eq!(parse(b"{\"format\":\"other\",\"tiers\":[]}"), None);
    }

    #[test]
    fn an_origin_later_than_the_listing_is_not_believed() {
        let listed = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let future = Tier {
            name: "up".into(),
            snapshot: "S".into(),
            origin_generated_at: "9999-01-01T00:00:00Z".into(),
            published_at: "9999-01-01T00:00:00Z".into(),
        };
        let tiers = extend(vec![future], "A", listed);
        assert_eq!(tiers[1].origin_generated_at, "2023-11-14T22:13:20Z", "the listing's own time, not 9999");
    }
}
