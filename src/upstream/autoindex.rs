//! Pure parsers for directory listings: nginx `autoindex_format json`, nginx
//! and Apache HTML autoindex, and `SHA256SUMS` files. Each returns the names
//! of one directory, decoded once and checked to be a single path segment;
//! navigation links (parent, sort order, absolute or off-site URLs) are
//! skipped, never followed.

use std::borrow::Cow;

use serde::Deserialize;

use crate::manifest::Digest;
use crate::output::escape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// One name of a directory listing. `size` is `None` for directories and
/// where the listing shows a rounded size (`1.2K`); `mtime` is in seconds
/// since the epoch, at the listing's resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    pub kind: Kind,
    pub size: Option<u64>,
    pub mtime: Option<i64>,
}

/// One entry as nginx writes it, borrowed from the page where it can be.
#[derive(Deserialize)]
struct JsonItem<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    mtime: Option<Cow<'a, str>>,
    size: Option<u64>,
}

/// nginx `autoindex_format json`: names are raw, mtimes to the second.
pub fn parse_nginx_json(text: &str) -> Result<Vec<Item>, String> {
    let raw: Vec<JsonItem> = serde_json::from_str(text)
        .map_err(|e| format!("not an nginx JSON listing: {}", crate::output::quote(&e.to_string(), 300)))?;
    raw.into_iter()
        .filter(|r| r.kind == "file" || r.kind == "directory")
        .map(|r| {
            let name = check_name(r.name.into_owned())?;
            let mtime = r.mtime.as_deref().and_then(parse_http_date);
            let kind = if r.kind == "file" { Kind::File } else { Kind::Dir };
            Ok(Item { name, kind, size: if kind == Kind::File { r.size } else { None }, mtime })
        })
        .collect()
}

/// nginx or Apache HTML autoindex (pre or table layout): the name comes from
/// the link target, never from the (possibly cut) link text; the date and
/// size from the text after the link on the same line. Mtimes to the minute.
pub fn parse_html(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(start) = find_ci(rest, "<a ") {
            let tag_end = rest[start..].find('>').map(|i| start + i).ok_or("unterminated <a> tag")?;
            let href = attr(&rest[start..tag_end], "href");
            let after = &rest[tag_end + 1..];
            let close = find_ci(after, "</a>").map(|i| i + 4).unwrap_or(after.len());
            let tail_end = find_ci(&after[close..], "<a ").map(|i| close + i).unwrap_or(after.len());
            if let Some(item) = href.map(|h| item_from_link(&h, &after[close..tail_end])).transpose()?.flatten() {
                items.push(item);
            }
            rest = &after[tail_end..];
        }
    }
    Ok(items)
}

fn item_from_link(href: &str, tail: &str) -> Result<Option<Item>, String> {
    let href = decode_entities(href);
    if href.is_empty() || href == "../" || href.starts_with(['?', '#', '/']) || has_scheme(&href) {
        return Ok(None);
    }
    // Apache writes `./name` for names with a colon, so they read as paths.
    let href = href.strip_prefix("./").unwrap_or(&href);
    let (raw, kind) = match href.strip_suffix('/') {
        Some(dir) => (dir, Kind::Dir),
        None => (href, Kind::File),
    };
    let name = check_name(percent_decode(raw)?)?;
    let text = strip_tags(tail);
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mtime = tokens.get(..2).and_then(|t| parse_listing_date(t[0], t[1]));
    let size = match (kind, mtime.and_then(|_| tokens.get(2))) {
        (Kind::File, Some(s)) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    Ok(Some(Item { name, kind, size, mtime }))
}

/// `SHA256SUMS` (`HEX  name`, `HEX *name`, or BSD `SHA256 (name) = HEX`) →
/// (name, digest) pairs; names are relative to the file's directory.
pub fn parse_sha256sums(text: &str) -> Result<Vec<(String, Digest)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hex, name) = if let Some(bsd) = line.strip_prefix("SHA256 (") {
            let (name, hex) = bsd.rsplit_once(") = ").ok_or_else(|| format!("line {}: unreadable", n + 1))?;
            (hex, name)
        } else {
            let (hex, name) = line.split_once(' ').ok_or_else(|| format!("line {}: unreadable", n + 1))?;
            (hex, name.strip_prefix([' ', '*']).unwrap_or(name))
        };
        let digest = Digest::parse(hex).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push((name.strip_prefix("./").unwrap_or(name).to_owned(), digest));
    }
    Ok(out)
}

/// A listed name must be one path segment.
fn check_name(name: String) -> Result<String, String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!("listing names \"{}\", which is not a plain file name", escape(&name)));
    }
    Ok(name)
}

fn has_scheme(href: &str) -> bool {
    match href.find(':') {
        Some(i) => {
            href[..i].bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) && !href[..i].contains('/')
        }
        None => false,
    }
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes().windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let at = find_ci(tag, &format!("{name}="))? + name.len() + 1;
    let value = &tag[at..];
    let quote = value.chars().next()?;
    if quote == '"' || quote == '\'' {
        let end = value[1..].find(quote)? + 1;
        Some(value[1..end].to_owned())
    } else {
        Some(value.split(|c: char| c.is_whitespace() || c == '>').next()?.to_owned())
    }
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
}

fn decode_entities(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Decode `%XX` escapes exactly once; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let byte = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad escape in link \"{}\"", escape(s)))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("link \"{}\" is not UTF-8 once decoded", escape(s)))
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `Tue, 24 Nov 2026 20:58:23 GMT` → seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let t: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = t[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    unix(day.parse().ok()?, month, year.parse().ok()?, h, m, sec)
}

/// `24-Nov-2026 20:58` (nginx, older Apache) or `2026-11-24 20:58` (Apache).
fn parse_listing_date(date: &str, time: &str) -> Option<i64> {
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 {
        return None;
    }
    let (year, month, day) = match MONTHS.iter().position(|m| *m == d[1]) {
        Some(m) => (d[2].parse().ok()?, m as i64 + 1, d[0].parse().ok()?),
        None => (d[0].parse().ok()?, d[1].parse().ok()?, d[2].parse().ok()?),
    };
    let (h, m) = time.split_once(':')?;
    unix(day, month, year, h.parse().ok()?, m.parse().ok()?, 0)
}

/// Seconds since the epoch of a UTC date and time, for years 1970 to 9999
/// only: every field is checked, so nothing here can overflow.
fn unix(day: i64, month: i64, year: i64, h: i64, m: i64, s: i64) -> Option<i64> {
    let valid = (1970..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&h)
        && (0..60).contains(&m)
        && (0..=60).contains(&s);
    if !valid {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX_HTML: &str = include_str!("../../tests/fixtures/autoindex/nginx-names.html");
    const NGINX_JSON: &str = include_str!("../../tests/fixtures/autoindex/nginx-names.json");
    const NGINX_SUBDIR: &str = include_str!("../../tests/fixtures/autoindex/nginx-subdir.html");

    fn find<'a>(items: &'a [Item], name: &str) -> &'a Item {
        items.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("{name} not listed"))
    }

    #[test]
    fn dates_convert_to_unix_seconds() {
        assert_eq!(parse_http_date("Tue, 24 Nov 2026 19:00:00 GMT"), Some(1_795_546_800));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("garbage"), None);
        // Huge or out-of-range fields are refused, never overflowed.
        assert_eq!(parse_http_date("Thu, 01 Jan 9223372036854775807 00:00:00 GMT"), None);
        assert_eq!(parse_http_date("Thu, 99 Jan 2026 00:00:00 GMT"), None);
        assert_eq!(parse_http_date("Thu, 01 Jan 2026 00:00:9223372036854775807 GMT"), None);
        assert_eq!(parse_listing_date("01-Jan-9223372036854775807", "00:00"), None);
        assert_eq!(parse_listing_date("2026-13-01", "00:00"), None);
        assert_eq!(parse_listing_date("24-Nov-2026", "19:00"), Some(1_795_546_800));
        assert_eq!(parse_listing_date("2026-11-24", "19:00"), Some(1_795_546_800));
        assert_eq!(parse_listing_date("29-Feb-2024", "00:00"), Some(1_709_164_800));
    }

    #[test]
    fn nginx_html_takes_names_from_links_and_sizes_in_bytes() {
        let items = parse_html(NGINX_HTML).unwrap();
        assert!(!items.iter().any(|i| i.name == ".."), "parent link skipped");
        let long = format!("{}.txt", "a".repeat(200));
        let cut = find(&items, &long);
        assert_eq!((cut.kind, cut.size), (Kind::File, Some(2972)), "a cut link text still gives the whole name");
        assert_eq!(find(&items, "amp&er=sand.txt").size, Some(3051));
        assert_eq!(find(&items, "percent%41.txt").size, Some(2371));
        assert_eq!(find(&items, "quote\"double.txt").size, Some(2460));
        assert_eq!(find(&items, "日本語.txt").size, Some(3363));
        assert_eq!(find(&items, "empty-file").size, Some(0));
        let dir = find(&items, "dir%25pct");
        assert_eq!((dir.kind, dir.size), (Kind::Dir, None));
        assert_eq!(find(&items, "-leading-dash.txt").mtime, parse_listing_date("23-Apr-2025", "23:36"));
    }

    #[test]
    fn nginx_json_and_html_list_the_same_names() {
        let mut html: Vec<String> = parse_html(NGINX_HTML).unwrap().into_iter().map(|i| i.name).collect();
        let mut json: Vec<String> = parse_nginx_json(NGINX_JSON).unwrap().into_iter().map(|i| i.name).collect();
        html.sort();
        json.sort();
        assert_eq!(html, json);
        let items = parse_nginx_json(NGINX_JSON).unwrap();
        let f = find(&items, "plain.txt");
        assert_eq!(f.size, Some(1934));
        assert_eq!(f.mtime.map(|m| m - m % 60), parse_listing_date("08-Oct-2025", "02:13"));
        assert!(parse_html(NGINX_SUBDIR).unwrap().iter().any(|i| i.name == "inner file.txt"));
    }

    #[test]
    fn apache_table_listing_gives_names_dates_and_exact_sizes_only_below_1k() {
        let items = parse_html(include_str!("../../tests/fixtures/autoindex/apache-names.html")).unwrap();
        assert!(!items.iter().any(|i| i.name == "Parent Directory" || i.name.starts_with('?')));
        assert_eq!(
            items.len(),
            39,
            "every name of the directory (captured without index.htm, which Apache would serve instead)"
        );
        let upper = find(&items, "UPPER.TXT");
        assert_eq!((upper.size, upper.mtime), (Some(677), parse_listing_date("2025-10-13", "09:33")));
        assert_eq!(find(&items, "日本語.txt").size, None, "3.3K is rounded, so no size");
        assert_eq!(find(&items, "amp&er=sand.txt").kind, Kind::File);
        assert_eq!(find(&items, "colon:name.txt").size, Some(665));
        assert_eq!(find(&items, "quote'single.txt").kind, Kind::File);
        assert_eq!(find(&items, "ünï").kind, Kind::Dir);
        let sub = parse_html(include_str!("../../tests/fixtures/autoindex/apache-subdir.html")).unwrap();
        assert_eq!(sub.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["inner file.txt"]);
    }

    #[test]
    fn traversal_in_links_is_rejected_after_one_decode() {
        for href in ["%2e%2e/", "..%2Fetc", "a%2Fb", "%2e%2e", "x%00y", "%ff%fe", "%zz"] {
            let page = format!("<a href=\"{href}\">x</a> 24-Nov-2026 19:00 5\n");
            assert!(parse_html(&page).is_err(), "{href} accepted");
        }
        // Double encoding decodes once: a literal name, not a traversal.
        let items = parse_html("<a href=\"%252e%252e\">x</a> 24-Nov-2026 19:00 5\n").unwrap();
        assert_eq!(items[0].name, "%2e%2e");
        assert!(parse_nginx_json(r#"[{"name":"../x","type":"file","size":1}]"#).is_err());
        assert!(parse_nginx_json(r#"[{"name":"..","type":"directory"}]"#).is_err());
    }

    #[test]
    fn navigation_and_off_site_links_are_skipped() {
        let page = "<a href=\"?C=N;O=D\">Name</a>\n<a href=\"/pub/\">Parent Directory</a>\n\
                    <a href=\"https://elsewhere.example/x\">x</a>\n<a href=\"./colon:name.txt\">colon:name.txt</a> 2026-11-24 19:00 12\n";
        let items = parse_html(page).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].name.as_str(), items[0].size), ("colon:name.txt", Some(12)));
    }

    #[test]
    fn sha256sums_in_both_styles() {
        let d = "ab".repeat(32);
        let text = format!("# comment\n{d}  plain.iso\n{d} *binary.iso\nSHA256 (bsd name.iso) = {d}\n{d}  ./dot.iso\n");
        let sums = parse_sha256sums(&text).unwrap();
        let names: Vec<&str> = sums.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["plain.iso", "binary.iso", "bsd name.iso", "dot.iso"]);
        assert!(parse_sha256sums("nothex  x\n").is_err());
    }
}
