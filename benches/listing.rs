//! Parsing directory listing pages: an nginx HTML page of 200,000 links
//! (about 13 MiB, near the 16 MiB page cap), an Apache table of the same,
//! and nginx's JSON of the same names. Prints the time of each.
//!
//!     cargo bench --bench listing

use std::time::Instant;

use upmirror::upstream::autoindex::{parse_html, parse_json};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let nginx: String =
        (0..n).map(|i| format!("<a href=\"f{i:07}.bin\">f{i:07}.bin</a>  24-Nov-2026 19:00  {i}\n")).collect();
    let nginx = format!("<html><head><title>Index of /</title></head><body><pre>{nginx}</pre></body></html>");
    let apache: String = (0..n)
        .map(|i| {
            format!(
                "<tr><td valign=\"top\"><img src=\"/icons/unknown.gif\" alt=\"[   ]\"></td><td><a href=\"f{i:07}.bin\">f{i:07}.bin</a></td><td align=\"right\">2026-11-24 19:00  </td><td align=\"right\">{i} </td><td>&nbsp;</td></tr>\n"
            )
        })
        .collect();
    let apache = format!("<html><head><title>Index of /</title></head><body><table>{apache}</table></body></html>");
    let json: Vec<String> = (0..n)
        .map(|i| {
            format!(r#"{{ "name":"f{i:07}.bin", "type":"file", "mtime":"Tue, 24 Nov 2026 19:00:00 GMT", "size":{i} }}"#)
        })
        .collect();
    let json = format!("[\n{}\n]", json.join(",\n"));
    for (what, page) in [("nginx HTML", &nginx), ("Apache HTML", &apache), ("nginx JSON", &json)] {
        let t = Instant::now();
        let items = if what.ends_with("JSON") {
            parse_json(page).map(|(items, _)| items)
        } else {
            parse_html(page, "/").map(|p| p.items)
        };
        let secs = t.elapsed().as_secs_f64();
        let count = items.map_or(0, |i| i.len());
        println!("{what:<12} {:>6.1} MiB  {count:>7} entries  {secs:>7.3} s", page.len() as f64 / (1 << 20) as f64);
    }
}
