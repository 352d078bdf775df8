//! Pure parsers for directory listings — JSON from nginx (`autoindex_format
//! json`) and Caddy, HTML from nginx, Apache, lighttpd, Caddy, rclone,
//! python's `http.server` and webfs — and `SHA256SUMS` files. Each returns
//! the names of one directory, taken from the links (never the link text),
//! decoded once and checked to be a single path segment; navigation links
//! (parent, sort order, absolute or off-site URLs) are skipped, never
//! followed. An HTML page is a listing by its structure: its title names the
//! directory, and every other link is a plain name.

use std::borrow::Cow;

use serde::Deserialize;

use crate::manifest::Digest;
use crate::output::escape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A file the server lists as a symlink (Caddy): its listed date is the
    /// link's, not that of the file it serves, and it may point nowhere.
    Link,
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

/// One entry of a JSON listing, borrowed from the page where it can be:
/// nginx writes `name`, `type`, `mtime` (an HTTP date) and `size`; Caddy
/// writes `name`, `url`, `is_dir`, `mod_time` (RFC 3339) and `size`.
#[derive(Deserialize)]
struct JsonItem<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mtime: Option<Cow<'a, str>>,
    size: Option<u64>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    is_dir: Option<bool>,
    is_symlink: Option<bool>,
    #[serde(borrow)]
    mod_time: Option<Cow<'a, str>>,
}

/// Which server wrote a JSON listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Nginx,
    Caddy,
}

/// A JSON listing (nginx or Caddy): exact sizes, mtimes to the second.
pub fn parse_json(text: &str) -> Result<(Vec<Item>, JsonKind), String> {
    let raw: Vec<JsonItem> = serde_json::from_str(text)
        .map_err(|e| format!("not a JSON directory listing: {}", crate::output::quote(&e.to_string(), 300)))?;
    let kind = if raw.iter().any(|r| r.is_dir.is_some()) { JsonKind::Caddy } else { JsonKind::Nginx };
    let items = raw.into_iter().filter_map(|r| json_item(r, kind).transpose()).collect::<Result<_, _>>()?;
    Ok((items, kind))
}

fn json_item(r: JsonItem, kind: JsonKind) -> Result<Option<Item>, String> {
    let (name, dir, mtime) = match kind {
        JsonKind::Nginx => match r.kind.as_deref() {
            Some("file") => (check_name(r.name.into_owned())?, false, r.mtime.as_deref().and_then(parse_http_date)),
            Some("directory") => (check_name(r.name.into_owned())?, true, None),
            _ => return Ok(None),
        },
        JsonKind::Caddy => {
            let href = r.url.as_deref().ok_or_else(|| format!("entry \"{}\" has no url", escape(&r.name)))?;
            // A JSON listing has no navigation: every url must name an entry.
            let Some((name, kind)) = name_from_href(href)? else {
                return Err(format!("entry url \"{}\" is not a plain name", escape(href)));
            };
            (name, kind == Kind::Dir || r.is_dir == Some(true), r.mod_time.as_deref().and_then(parse_timestamp))
        }
    };
    let kind = match (dir, r.is_symlink == Some(true)) {
        (true, _) => Kind::Dir,
        (false, true) => Kind::Link,
        (false, false) => Kind::File,
    };
    let (size, mtime) = match kind {
        Kind::Dir => (None, None),
        Kind::Link => (r.size, None),
        Kind::File => (r.size, mtime),
    };
    Ok(Some(Item { name, kind, size, mtime }))
}

/// npm `serve`'s answer to `Accept: application/json`: `{"files": [{"base",
/// "type": "file" | "folder" | "directory" (the parent)}], …}`; names only
/// (its sizes are rounded, it shows no dates).
pub fn parse_serve_json(text: &str) -> Result<Vec<Item>, String> {
    #[derive(Deserialize)]
    struct Listing<'a> {
        #[serde(borrow)]
        files: Vec<Entry<'a>>,
    }
    #[derive(Deserialize)]
    struct Entry<'a> {
        #[serde(borrow)]
        base: Cow<'a, str>,
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let listing: Listing = serde_json::from_str(text)
        .map_err(|e| format!("not a JSON directory listing: {}", crate::output::quote(&e.to_string(), 300)))?;
    let item = |e: Entry| -> Result<Option<Item>, String> {
        let kind = match e.kind.as_ref() {
            "file" => Kind::File,
            "folder" => Kind::Dir,
            _ => return Ok(None),
        };
        let name = check_name(e.base.trim_end_matches('/').to_owned())?;
        Ok(Some(Item { name, kind, size: None, mtime: None }))
    };
    listing.files.into_iter().filter_map(|e| item(e).transpose()).collect()
}

/// nginx's `autoindex_format xml`: a `<list>` of `<directory
/// mtime="…">name</directory>` and `<file mtime="…" size="N">name</file>`;
/// exact sizes, mtimes to the second, names escaped as XML.
pub fn parse_xml(text: &str) -> Result<Vec<Item>, String> {
    let not = |why: &str| format!("not an XML directory listing: {why}");
    let (_, mut rest) = text.split_once("<list>").ok_or_else(|| not("no <list>"))?;
    let mut items = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.starts_with("</list>") {
            return Ok(items);
        }
        let (kind, tag) = match (rest.strip_prefix("<directory"), rest.strip_prefix("<file")) {
            (Some(r), _) => (Kind::Dir, r),
            (_, Some(r)) => (Kind::File, r),
            _ => return Err(not(&format!("unexpected \"{}\"", escape(&rest.chars().take(40).collect::<String>())))),
        };
        let (attrs, after) = tag.split_once('>').ok_or_else(|| not("an unclosed tag"))?;
        let close = if kind == Kind::Dir { "</directory>" } else { "</file>" };
        let (name, after) = after.split_once(close).ok_or_else(|| not("an entry without its end tag"))?;
        let attr = |key: &str| attrs.split(&format!(" {key}=\"")).nth(1).and_then(|v| v.split('"').next());
        let (size, mtime) = match kind {
            Kind::Dir => (None, None),
            _ => (attr("size").and_then(|s| s.parse().ok()), attr("mtime").and_then(parse_timestamp)),
        };
        items.push(Item { name: check_name(decode_entities(name))?, kind, size, mtime });
        rest = after;
    }
}

/// One HTML listing page, and the resolution of its mtimes in seconds.
#[derive(Debug)]
pub struct HtmlPage {
    pub items: Vec<Item>,
    pub precision: i64,
    /// The page writes its own directory or its parent without a trailing
    /// `/` (h2o, mini_httpd): its directories are not marked either, so a
    /// name it shows as a file may be one.
    pub unmarked: bool,
}

/// An HTML directory listing of the directory at URL path `dir` (as sent,
/// percent-encoded). Each link's date and size come from the rest of its
/// row: `datetime` and `data-order` attributes (Caddy, rclone), else the
/// text after the link (nginx, Apache, lighttpd). Pages that show neither
/// (python, webfs, Apache without FancyIndexing) give names only.
pub fn parse_html(text: &str, dir: &str) -> Result<HtmlPage, String> {
    if let Err(title) = names_directory(text, dir) {
        let seen = title.map_or("no title".to_owned(), |t| format!("title \"{}\"", crate::output::quote(&t, 80)));
        let dir = escape(&percent_decode(dir).unwrap_or_else(|_| dir.to_owned()));
        return Err(format!(
            "answered an HTML page that is not a directory listing ({seen}, which does not name the directory {dir}: \
             an index.html, a landing or a login page); set listing = \"manifest\" or point the upstream at the directory"
        ));
    }
    let (mut items, mut precision, mut unmarked) = (Vec::new(), 1, false);
    // One pass: each search below stops at the next link, so no byte of the
    // page is looked at more than a few times, whatever the page holds.
    let mut rest = apache_listing(text);
    while let Some(start) = find_ci(rest, "<a ") {
        let tag_end = tag_end(&rest[start..]).map(|i| start + i).ok_or("unterminated <a> tag")?;
        let href = attr(&rest[start..tag_end], "href");
        unmarked |= href.as_deref().is_some_and(|h| matches!(h, "." | ".." | "./.."));
        let after = &rest[tag_end + 1..];
        let close = match first_tag(after, &["</a>", "<a "]) {
            Some((at, 0)) => at + 4,
            Some((at, _)) => at,
            None => after.len(),
        };
        let row_end = first_tag(&after[close..], &["<a ", "</tr", "</li"]).map_or(after.len() - close, |(at, _)| at);
        let tail = &after[close..close + row_end];
        if let Some((name, kind)) = href.map(|h| name_from_href(&h)).transpose()?.flatten() {
            let (mtime, size, secs) = row_fields(kind, tail);
            precision = precision.max(secs);
            items.push(Item { name, kind, size, mtime });
        }
        rest = &after[close..];
    }
    Ok(HtmlPage { items, precision, unmarked })
}

/// The part of the page that lists the directory. Apache's FancyIndexing
/// listing starts at its Name column's sort link (`?C=N;O=`) and ends with
/// its table (or `<pre>`): the HEADER.html and README.html that Debian's
/// `HeaderName` and `ReadmeName` put around it are not part of it, whatever
/// they link to. Other pages: all of it.
fn apache_listing(text: &str) -> &str {
    let Some(start) = text.find("?C=N;O=") else { return text };
    let rest = &text[start..];
    let end = first_tag(rest, &["</table>", "</pre>"]).map_or(rest.len(), |(at, _)| at);
    &rest[..end]
}

/// Whether the page's `<title>` names the directory at `dir`: as a path
/// that ends the title (Caddy, rclone, webfs), or after "Index of " or
/// "Directory listing for " (nginx, Apache, lighttpd, python), which show
/// the server's own path, not always ours behind a proxy. At the root the
/// title must end with `/` itself: every title ends with the empty path.
/// Else the title seen, if any.
fn names_directory(text: &str, dir: &str) -> Result<(), Option<String>> {
    let start = find_ci(text, "<title>").map(|i| i + 7).ok_or(None)?;
    let len = find_ci(&text[start..], "</title>").ok_or(None)?;
    let title = decode_entities(text[start..start + len].trim());
    if title.starts_with("Index of /") || title.starts_with("Directory listing for /") {
        return Ok(());
    }
    let dir = dir.trim_end_matches('/');
    let decoded = percent_decode(dir).unwrap_or_default();
    let bare = title.trim_end_matches('/');
    // mini_httpd: "Index of ./" at the root, "Index of sub/dir/" below it.
    let relative = bare.strip_prefix("Index of ").map(|p| p.trim_start_matches("./").trim_start_matches('.'));
    let named = match dir.is_empty() {
        true => title.ends_with('/'),
        false => bare.ends_with(dir) || bare.ends_with(&decoded),
    } || relative.is_some_and(|p| [dir, decoded.as_str()].iter().any(|d| d.trim_start_matches('/') == p));
    named.then_some(()).ok_or(Some(title))
}

/// The name and kind a link points at, or `None` for navigation.
fn name_from_href(href: &str) -> Result<Option<(String, Kind)>, String> {
    let href = decode_entities(href);
    // Apache, Caddy and http-server write `./name` (`./../` for the parent),
    // so that a name with a colon reads as a path.
    let href = href.strip_prefix("./").unwrap_or(&href);
    let parent = matches!(href, "" | "." | "./" | "..") || href.starts_with("../");
    if parent || href.starts_with(['?', '#', '/']) || has_scheme(href) {
        return Ok(None);
    }
    let (raw, kind) = match href.strip_suffix('/') {
        Some(dir) => (dir, Kind::Dir),
        None => (href, Kind::File),
    };
    Ok(Some((check_name(percent_decode(raw)?)?, kind)))
}

/// The mtime, exact size and the mtime's resolution from the rest of a
/// file link's row.
fn row_fields(kind: Kind, tail: &str) -> (Option<i64>, Option<u64>, i64) {
    if kind == Kind::Dir {
        return (None, None, 1);
    }
    let exact = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten();
    if let Some(when) = find_ci(tail, "<time ").and_then(|i| attr(&tail[i..], "datetime")) {
        let size = find_ci(tail, " data-order=").and_then(|i| attr(&tail[i..], "data-order")).and_then(|s| exact(&s));
        return (parse_timestamp(&decode_entities(&when)), size, 1);
    }
    let text = decode_entities(&strip_tags(tail));
    let tokens: Vec<&str> = text.split_whitespace().collect();
    // Date, time, size (nginx, Apache, lighttpd); or size, date, time (nginx's fancyindex).
    let date_at = |at: usize| tokens.get(at..at + 2).and_then(|t| parse_listing_date(t[0], t[1]));
    match (date_at(0), date_at(1)) {
        (Some((mtime, secs)), _) => (Some(mtime), tokens.get(2).and_then(|s| exact(s)), secs),
        (None, Some((mtime, secs))) => (Some(mtime), exact(tokens[0]), secs),
        (None, None) => (None, None, 1),
    }
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

/// Whether a link leaves the listing: it names a scheme a browser would
/// follow elsewhere. webfs writes `colon:name.txt` unescaped, so a name
/// with a colon is a name unless what precedes the colon is such a scheme.
fn has_scheme(href: &str) -> bool {
    const LEAVING: [&str; 10] = ["http", "https", "ftp", "ftps", "mailto", "javascript", "data", "file", "tel", "blob"];
    href.split_once(':').is_some_and(|(scheme, _)| LEAVING.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
}

/// Where `needle` (ASCII) first stands in `hay`, ignoring ASCII case.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    let first = needle.first()?.to_ascii_lowercase();
    (0..hay.len().saturating_sub(needle.len() - 1))
        .find(|&i| hay[i].to_ascii_lowercase() == first && hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// The first of `tags` (each starting with `<`) in `s`, ignoring ASCII
/// case: where it stands and which it is.
fn first_tag(s: &str, tags: &[&str]) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&c| c == b'<').map(|i| from + i) {
        if let Some(which) =
            tags.iter().position(|t| b[i..].get(..t.len()).is_some_and(|w| w.eq_ignore_ascii_case(t.as_bytes())))
        {
            return Some((i, which));
        }
        from = i + 1;
    }
    None
}

/// Where a tag that starts `s` ends: the first `>` outside quotes (webfs
/// writes `<` and `>` into its links unescaped).
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The value of attribute `name` in the tag that starts `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let tag = &tag[..tag_end(tag).unwrap_or(tag.len())];
    let needle = format!("{name}=");
    let mut from = 0;
    let at = loop {
        let i = from + find_ci(&tag[from..], &needle)?;
        if tag[..i].ends_with(char::is_whitespace) {
            break i + needle.len();
        }
        from = i + 1;
    };
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
    out
}

/// Decode the character references listings use: the named ones for
/// markup, `&nbsp;`, and numeric ones (`&#39;`, `&#x26;`).
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| Some((entity(&rest[1..end])?, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    let code = match name {
        "lt" => '<' as u32,
        "gt" => '>' as u32,
        "amp" => '&' as u32,
        "quot" => '"' as u32,
        "apos" => '\'' as u32,
        "nbsp" => ' ' as u32,
        _ => match name.strip_prefix('#')? {
            hex if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16).ok()?,
            dec => dec.parse().ok()?,
        },
    };
    char::from_u32(code)
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

/// A listing's date and time → (seconds since the epoch, resolution):
/// `24-Nov-2026 20:58` (nginx, older Apache), `2026-11-24 20:58` (Apache),
/// `2026-Nov-24 20:58:07` (lighttpd); seconds are optional in each.
fn parse_listing_date(date: &str, time: &str) -> Option<(i64, i64)> {
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 {
        return None;
    }
    let month = |s: &str| MONTHS.iter().position(|m| *m == s).map(|m| m as i64 + 1);
    let (year, month, day) = match (month(d[1]), d[0].len()) {
        (Some(m), 4) => (d[0].parse().ok()?, m, d[2].parse().ok()?),
        (Some(m), _) => (d[2].parse().ok()?, m, d[0].parse().ok()?),
        (None, _) => (d[0].parse().ok()?, d[1].parse().ok()?, d[2].parse().ok()?),
    };
    let t: Vec<&str> = time.split(':').collect();
    let (h, m, s, precision) = match t[..] {
        [h, m] => (h, m, "0", 60),
        [h, m, s] => (h, m, s, 1),
        _ => return None,
    };
    Some((unix(day, month, year, h.parse().ok()?, m.parse().ok()?, s.parse().ok()?)?, precision))
}

/// An RFC 3339 time (`2025-06-15T15:08:18.5+05:30`, Caddy) or Go's default
/// format (`2025-06-15 15:08:18 +0530 IST`, rclone) → seconds since the
/// epoch, the offset applied and any fraction dropped.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = (s.get(..10)?, s.get(11..)?);
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hh, mm, ss) = (rest.get(..2)?.parse().ok()?, rest.get(3..5)?.parse().ok()?, rest.get(6..8)?.parse().ok()?);
    let zone = rest[8..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit()).trim_start();
    let offset = match zone.as_bytes().first() {
        Some(b'Z') | None => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let digits: String = zone[1..].chars().take_while(|c| c.is_ascii_digit() || *c == ':').collect();
            let digits = digits.replace(':', "");
            let (h, m): (i64, i64) = (digits.get(..2)?.parse().ok()?, digits.get(2..4)?.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            (h * 3600 + m * 60) * if sign == b'-' { -1 } else { 1 }
        }
        Some(_) => return None,
    };
    Some(unix(day, month, year, hh, mm, ss)? - offset)
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
    /// When every file of the tree captured from lighttpd, Caddy, rclone,
    /// python and webfs was written (2025-06-15 15:08:18 UTC).
    const CAPTURED: i64 = 1_750_000_098;

    fn find<'a>(items: &'a [Item], name: &str) -> &'a Item {
        items.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("{name} not listed"))
    }

    fn html(text: &str) -> Vec<Item> {
        parse_html(text, "/").unwrap().items
    }

    fn names(items: &[Item]) -> Vec<String> {
        let mut names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
        names.sort();
        names
    }

    /// The names of the tree the other servers were captured on.
    fn captured_names() -> Vec<String> {
        let mut want: Vec<String> = [
            "-leading-dash.txt",
            "amp&er=sand.txt",
            "big.bin",
            "colon:name.txt",
            "dir%pct",
            "emoji-📦.txt",
            "empty-file",
            "hash#frag.txt",
            "huge.bin",
            "lt<gt>.txt",
            "percent%41.txt",
            "plain.txt",
            "question?mark.txt",
            "quote\"double.txt",
            "quote'single.txt",
            "sub dir",
            "trailing.dot.",
            "with space.txt",
            "ünï",
            "日本語.txt",
        ]
        .map(String::from)
        .to_vec();
        want.push(format!("{}.txt", "a".repeat(200)));
        want.sort();
        want
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
        assert_eq!(parse_listing_date("24-Nov-2026", "19:00"), Some((1_795_546_800, 60)));
        assert_eq!(parse_listing_date("2026-11-24", "19:00"), Some((1_795_546_800, 60)));
        assert_eq!(parse_listing_date("2026-Nov-24", "19:00:07"), Some((1_795_546_807, 1)));
        assert_eq!(parse_listing_date("29-Feb-2024", "00:00"), Some((1_709_164_800, 60)));
        assert_eq!(parse_listing_date("29-Feb-2024", "00:00:00:00"), None);
    }

    #[test]
    fn timestamps_with_offsets_convert_to_utc() {
        assert_eq!(parse_timestamp("2025-06-15T15:08:18Z"), Some(CAPTURED));
        assert_eq!(parse_timestamp(" 2025-06-15T15:08:18.123456789Z"), Some(CAPTURED));
        assert_eq!(parse_timestamp("2025-06-15T20:38:18+05:30"), Some(CAPTURED));
        assert_eq!(parse_timestamp("2025-06-15 11:08:18 -0400 EDT"), Some(CAPTURED));
        assert_eq!(parse_timestamp("2025-06-15 15:08:18 +0000 UTC"), Some(CAPTURED));
        for bad in ["2025-06-15", "2025-06-15T15:08:18+99:00", "2025-06-15T15:08:18 EDT", "9999999-06-15T15:08:18Z"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn nginx_html_takes_names_from_links_and_sizes_in_bytes() {
        let page = parse_html(NGINX_HTML, "/").unwrap();
        assert_eq!(page.precision, 60);
        let items = page.items;
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
        assert_eq!(find(&items, "-leading-dash.txt").mtime, parse_listing_date("23-Apr-2025", "23:36").map(|d| d.0));
    }

    #[test]
    fn nginx_json_and_html_list_the_same_names() {
        let (json, kind) = parse_json(NGINX_JSON).unwrap();
        assert_eq!(kind, JsonKind::Nginx);
        assert_eq!(names(&html(NGINX_HTML)), names(&json));
        let f = find(&json, "plain.txt");
        assert_eq!(f.size, Some(1934));
        assert_eq!(f.mtime.map(|m| m - m % 60), parse_listing_date("08-Oct-2025", "02:13").map(|d| d.0));
        assert!(
            parse_html(NGINX_SUBDIR, "/dir%20with%20space/").unwrap().items.iter().any(|i| i.name == "inner file.txt")
        );
    }

    #[test]
    fn apache_table_listing_gives_names_dates_and_exact_sizes_only_below_1k() {
        let items =
            parse_html(include_str!("../../tests/fixtures/autoindex/apache-names.html"), "/names/").unwrap().items;
        assert!(!items.iter().any(|i| i.name == "Parent Directory" || i.name.starts_with('?')));
        assert_eq!(
            items.len(),
            39,
            "every name of the directory (captured without index.htm, which Apache would serve instead)"
        );
        let upper = find(&items, "UPPER.TXT");
        assert_eq!((upper.size, upper.mtime), (Some(677), parse_listing_date("2025-10-13", "09:33").map(|d| d.0)));
        assert_eq!(find(&items, "日本語.txt").size, None, "3.3K is rounded, so no size");
        assert_eq!(find(&items, "amp&er=sand.txt").kind, Kind::File);
        assert_eq!(find(&items, "colon:name.txt").size, Some(665));
        assert_eq!(find(&items, "quote'single.txt").kind, Kind::File);
        assert_eq!(find(&items, "ünï").kind, Kind::Dir);
        let sub = include_str!("../../tests/fixtures/autoindex/apache-subdir.html");
        let sub = parse_html(sub, "/names/dir%20with%20space/").unwrap().items;
        assert_eq!(sub.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["inner file.txt"]);
    }

    #[test]
    fn lighttpd_shows_seconds_and_rounded_sizes() {
        let page = parse_html(include_str!("../../tests/fixtures/autoindex/lighttpd-names.html"), "/").unwrap();
        assert_eq!(page.precision, 1);
        assert_eq!(names(&page.items), captured_names());
        let plain = find(&page.items, "plain.txt");
        assert_eq!((plain.size, plain.mtime), (None, Some(CAPTURED)), "0.1K is rounded");
        assert_eq!(find(&page.items, "sub dir").kind, Kind::Dir);
    }

    #[test]
    fn caddy_json_and_rclone_html_give_exact_sizes_and_seconds() {
        let (caddy, kind) = parse_json(include_str!("../../tests/fixtures/autoindex/caddy-names.json")).unwrap();
        assert_eq!(kind, JsonKind::Caddy);
        let rclone = parse_html(include_str!("../../tests/fixtures/autoindex/rclone-names.html"), "/").unwrap();
        assert_eq!(rclone.precision, 1);
        for items in [&caddy, &rclone.items] {
            assert_eq!(names(items), captured_names());
            let huge = find(items, "huge.bin");
            assert_eq!((huge.kind, huge.size, huge.mtime), (Kind::File, Some(3_000_000), Some(CAPTURED)));
            assert_eq!(find(items, "empty-file").size, Some(0));
            let dir = find(items, "dir%pct");
            assert_eq!((dir.kind, dir.size, dir.mtime), (Kind::Dir, None, None));
        }
        let sub = include_str!("../../tests/fixtures/autoindex/rclone-subdir.html");
        assert_eq!(names(&parse_html(sub, "/sub%20dir/").unwrap().items), ["inner file.txt"]);
        let sub = parse_json(include_str!("../../tests/fixtures/autoindex/caddy-subdir.json")).unwrap().0;
        assert_eq!(names(&sub), ["inner file.txt"]);
        // Caddy's HTML, should it be sent instead of JSON, reads the same.
        let caddy_html = parse_html(include_str!("../../tests/fixtures/autoindex/caddy-names.html"), "/").unwrap();
        assert_eq!(names(&caddy_html.items), captured_names());
        assert_eq!(find(&caddy_html.items, "big.bin").size, Some(5000));
    }

    #[test]
    fn pages_without_dates_give_names_only() {
        for fixture in [
            include_str!("../../tests/fixtures/autoindex/python-names.html"),
            include_str!("../../tests/fixtures/autoindex/apache-plain.html"),
            include_str!("../../tests/fixtures/autoindex/webfs-names.html"),
        ] {
            let items = html(fixture);
            assert_eq!(names(&items), captured_names());
            assert!(items.iter().all(|i| i.mtime.is_none() && i.size.is_none()), "{items:?}");
            assert_eq!(find(&items, "sub dir").kind, Kind::Dir);
        }
    }

    #[test]
    fn a_page_is_a_listing_only_when_its_title_names_the_directory() {
        let page = |title: &str| format!("<title>{title}</title><a href=\"a.txt\">a.txt</a>");
        assert!(parse_html(&page("Index of /pub/"), "/mirror/pub/").is_ok(), "behind a proxy");
        assert!(parse_html(&page("/pub/sub dir"), "/pub/sub%20dir/").is_ok());
        assert!(parse_html(&page("host:8080/pub/sub%20dir/"), "/pub/sub%20dir/").is_ok());
        let err = parse_html(&page("Acme Downloads"), "/pub/").unwrap_err();
        assert!(err.contains("not a directory listing (title \"Acme Downloads\"") && err.contains("/pub/"), "{err}");
        assert!(parse_html("<html><body>Sign in</body></html>", "/").is_err());
        // At the root, every title ends with the empty path: it must end with "/".
        let err = parse_html(&page("Acme Corp – Downloads"), "/").unwrap_err();
        assert!(err.contains("set listing = \"manifest\""), "{err}");
        assert!(parse_html(&page("Sign in"), "/").is_err());
        for root in ["Index of /", "/", "Directory listing for /", "127.0.0.1:18004/", "Index of ./"] {
            assert!(parse_html(&page(root), "/").is_ok(), "{root}");
        }
        assert!(parse_html(&page("Index of sub dir/"), "/sub%20dir/").is_ok(), "mini_httpd");
        assert!(parse_html(&page("Index of other/"), "/sub/").is_err());
    }

    #[test]
    fn traversal_in_links_is_rejected_after_one_decode() {
        for href in ["%2e%2e/", "..%2Fetc", "a%2Fb", "%2e%2e", "x%00y", "%ff%fe", "%zz"] {
            let page = format!("<title>Index of /</title><a href=\"{href}\">x</a> 24-Nov-2026 19:00 5\n");
            assert!(parse_html(&page, "/").is_err(), "{href} accepted");
        }
        // Double encoding decodes once: a literal name, not a traversal.
        let items = html("<title>Index of /</title><a href=\"%252e%252e\">x</a> 24-Nov-2026 19:00 5\n");
        assert_eq!(items[0].name, "%2e%2e");
        assert!(parse_json(r#"[{"name":"../x","type":"file","size":1}]"#).is_err());
        assert!(parse_json(r#"[{"name":"..","type":"directory"}]"#).is_err());
        assert!(parse_json(r#"[{"name":"x","url":"./..%2Fx","is_dir":false,"size":1}]"#).is_err());
        assert!(parse_json(r#"[{"name":"x","url":"../../etc/","is_dir":true}]"#).is_err());
    }

    #[test]
    fn navigation_and_off_site_links_are_skipped() {
        let page = "<title>Index of /</title><a href=\"?C=N;O=D\">Name</a>\n<a href=\"/pub/\">Parent Directory</a>\n\
                    <a href=\"https://elsewhere.example/x\">x</a>\n<a href=\"./colon:name.txt\">colon:name.txt</a> 2026-11-24 19:00 12\n";
        let items = html(page);
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].name.as_str(), items[0].size), ("colon:name.txt", Some(12)));
    }

    #[test]
    fn a_large_page_parses_whole_in_one_pass() {
        // nginx rows close their links but no `</tr>` or `</li>` follows:
        // a search for the row's end that ran to the page's end made a
        // 2 MiB page take minutes.
        let rows: String = (0..200_000)
            .map(|i| format!("<a href=\"f{i:06}.bin\">f{i:06}.bin</a>  24-Nov-2026 19:00  {i}\n"))
            .collect();
        let page = format!("<html><head><title>Index of /</title></head><body><pre>{rows}</pre></body></html>");
        assert!(page.len() > 10 << 20);
        let items = html(&page);
        assert_eq!(items.len(), 200_000);
        assert_eq!((items[199_999].name.as_str(), items[199_999].size), ("f199999.bin", Some(199_999)));
        // Links never closed: each ends where the next begins.
        let open: String = (0..3).map(|i| format!("<a href=\"g{i}\">g{i}  24-Nov-2026 19:00  7\n")).collect();
        let items = html(&format!("<title>Index of /</title>{open}"));
        assert_eq!(names(&items), ["g0", "g1", "g2"]);
    }

    #[test]
    fn entities_decode_once() {
        assert_eq!(decode_entities("a&amp;b&#x26;c&#39;d&lt;&amp;lt;&bogus;&"), "a&b&c'd<&lt;&bogus;&");
        assert_eq!(decode_entities("&#1114112;&#xD800;"), "&#1114112;&#xD800;", "not a character");
    }

    #[test]
    fn fancyindex_rows_give_the_size_before_the_date() {
        let page = "<title>Index of /</title><table><tbody><tr><td class=\"link\"><a href=\"sub/\" title=\"sub\">sub/</a></td>\
                    <td class=\"size\">-</td><td class=\"date\">2025-Jun-15 15:08</td></tr>\n<tr><td class=\"link\">\
                    <a href=\"a.txt\" title=\"a.txt\">a.txt</a></td><td class=\"size\">      1234</td>\
                    <td class=\"date\">2026-Dec-05 12:08</td></tr></tbody></table>";
        let items = parse_html(page, "/").unwrap().items;
        let a = find(&items, "a.txt");
        assert_eq!((a.size, a.mtime), (Some(1234), parse_timestamp("2026-12-05T12:08:00Z")));
    }

    #[test]
    fn npm_serve_json_names() {
        let page = r#"{"files":[{"type":"directory","base":"..","relative":"/"},{"base":"c.txt","type":"file","size":"2 B"},{"base":"sub/","type":"folder"}],"directory":"root/sub/"}"#;
        let items = parse_serve_json(page).unwrap();
        assert_eq!(names(&items), ["c.txt", "sub"]);
        assert_eq!((items[0].kind, items[1].kind), (Kind::File, Kind::Dir));
        assert!(parse_serve_json(r#"{"files":[{"base":"../x","type":"file"}]}"#).is_err());
    }

    #[test]
    fn nginx_xml_names_sizes_and_dates() {
        let page = "<?xml version=\"1.0\"?>\n<list>\n<directory mtime=\"2025-06-15T15:08:18Z\">sub</directory>\n\
                    <file mtime=\"2026-12-05T12:08:48Z\" size=\"2\">a &amp; &lt;b&gt; &quot;q&quot; 'x'.txt</file>\n</list>\n";
        let items = parse_xml(page).unwrap();
        assert_eq!(items[0], Item { name: "sub".into(), kind: Kind::Dir, size: None, mtime: None });
        assert_eq!(items[1].name, "a & <b> \"q\" 'x'.txt");
        assert_eq!((items[1].size, items[1].mtime), (Some(2), parse_timestamp("2026-12-05T12:08:48Z")));
        assert!(parse_xml("<list><file size=\"1\">../x</file></list>").is_err());
        assert!(parse_xml("<list><file size=\"1\">x").is_err());
        assert!(parse_xml("<html>").is_err());
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
