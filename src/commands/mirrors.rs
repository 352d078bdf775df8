//! `upmirror mirrors`: each upstream's health, as a table or JSON.

use anyhow::Result;

use super::{client_identity, runtime};
use crate::client_cert::ClientCert;
use crate::config::Config;
use crate::output::{Reporter, human_duration};
use crate::upstream::{Probe, Upstreams};

pub(super) fn mirrors(cfg: &Config, out: Reporter) -> Result<()> {
    let cert = client_identity(cfg, out)?;
    let upstreams = Upstreams::new(cfg, out)?;
    let mut probes = runtime(false)?
        .block_on(futures_util::future::join_all((0..upstreams.bases.len()).map(|i| upstreams.probe(i))));
    let expires = cert.as_ref().map(ClientCert::expires);
    for p in &mut probes {
        p.client_cert_expires = expires.clone();
    }
    if out.json {
        crate::outln!("{}", serde_json::to_string_pretty(&probes)?);
    } else {
        crate::out!("{}", mirrors_table(&probes));
        if let (Some(c), Some(e)) = (&cert, &expires) {
            crate::outln!("client certificate {} expires {e}", c.subject);
        }
    }
    let usable = probes.iter().filter(|p| p.usable).count();
    let down: Vec<&str> = probes.iter().filter(|p| !p.usable).map(|p| p.url.as_str()).collect();
    match (usable, probes[0].usable) {
        (0, _) => anyhow::bail!("no upstream is usable (0 of {})", probes.len()),
        // Syncs fail over and succeed, so only this says the primary is down.
        (_, false) => anyhow::bail!("{usable} of {} upstreams usable; the primary is DOWN", probes.len()),
        _ if down.is_empty() => out.info(format!("all {usable} upstreams usable")),
        _ => out.info(format!("{usable} of {} upstreams usable; DOWN: {}", probes.len(), down.join(", "))),
    }
    Ok(())
}

/// The human table of `upmirror mirrors`, errors and crawl limits below it.
fn mirrors_table(probes: &[Probe]) -> String {
    let mut rows = vec![["UPSTREAM", "STATUS", "TLS", "CLIENT CERT", "LATENCY", "LISTING", "AGE"].map(String::from)];
    let mut notes = Vec::new();
    for p in probes {
        rows.push([
            p.url.clone(),
            if p.usable { "ok" } else { "DOWN" }.to_owned(),
            p.tls.clone().unwrap_or("-".into()),
            p.client_cert.clone().unwrap_or("-".into()),
            p.latency_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            match (p.listing, &p.server) {
                (Some(l), Some(server)) => format!("{l} ({server})"),
                (l, _) => l.unwrap_or("-").to_owned(),
            },
            p.age_secs.map_or("-".into(), |s| human_duration(s.max(0) as u64)),
        ]);
        if let Some(e) = &p.error {
            notes.push(format!("{}: {e}", p.url));
        }
        if let Some(proxy) = &p.proxy {
            notes.push(format!("{}: through the proxy {proxy}", p.url));
        }
        let named = url::Url::parse(&p.url).ok().is_some_and(|u| matches!(u.host(), Some(url::Host::Domain(_))));
        if let Some(address) = p.address.as_ref().filter(|_| named) {
            notes.push(format!("{}: answered from {address}", p.url));
        }
        if let Some(zone) = &p.listing_time_zone {
            notes.push(format!("{}: the listing shows local time {zone}; its dates are set back to UTC", p.url));
        }
        if p.listing.is_some_and(|l| l != "manifest") {
            notes.push(format!(
                "{}: no manifest; directory listings never show dotfiles, and a directory holding index.html \
                 shows that page instead: only a manifest lists everything",
                p.url
            ));
        }
    }
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut text = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    for n in notes {
        text.push_str(&n);
        text.push('\n');
    }
    text
}
