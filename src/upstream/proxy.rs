//! Which proxy each upstream's requests go through: its own (`proxy` in its
//! `upstreams` entry, or `direct`), else the `proxy` key, else the
//! environment's `HTTPS_PROXY`; `NO_PROXY` always exempts its hosts.

use url::Url;

use super::{describe, host_key};
use crate::config::{Config, ConfigError, ProxyChoice};

/// The proxy for every request of the client, if any is configured.
pub fn client_proxy(cfg: &Config) -> Result<Option<reqwest::Proxy>, ConfigError> {
    let own: Vec<(String, ProxyChoice)> = cfg
        .upstreams
        .iter()
        .zip(&cfg.upstream_proxies)
        .filter_map(|(url, choice)| Some((host_key(url), choice.clone()?)))
        .collect();
    let proxy = match (&cfg.proxy, own.is_empty()) {
        (None, true) => return Ok(None),
        (Some(proxy), true) => reqwest::Proxy::all(proxy.as_str()),
        (_, false) => {
            let global = configured(cfg);
            Ok(reqwest::Proxy::custom(move |url| match own.iter().find(|(host, _)| *host == host_key(url)) {
                Some((_, ProxyChoice::Direct)) => None,
                Some((_, ProxyChoice::Via(proxy))) => Some(proxy.clone()),
                None => global.clone(),
            }))
        }
    };
    let proxy = proxy.map_err(|e| ConfigError(format!("proxy: {}", describe(e))))?;
    Ok(Some(proxy.no_proxy(reqwest::NoProxy::from_env())))
}

/// The proxy upstream `i` goes through (its credentials included).
fn url(cfg: &Config, i: usize) -> Option<Url> {
    if cfg.upstreams[i].scheme() == "file" {
        return None;
    }
    match cfg.upstream_proxies.get(i).cloned().flatten() {
        Some(ProxyChoice::Direct) => None,
        Some(ProxyChoice::Via(url)) => Some(url),
        None => configured(cfg),
    }
}

/// A proxy an upstream goes through: its URL (credentials included) and
/// its label for reports (without them).
#[derive(Clone)]
pub struct Via {
    pub url: Url,
    pub label: String,
}

/// The proxy upstream `i` goes through, and its label: `scheme://host:port`
/// without credentials.
pub fn via(cfg: &Config, i: usize) -> Option<Via> {
    let url = url(cfg, i)?;
    let exempt = std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy")).is_ok_and(|v| !v.is_empty());
    let caveat = if exempt { " (unless NO_PROXY exempts the host)" } else { "" };
    let label = format!("{}://{}:{}{caveat}", url.scheme(), url.host_str()?, url.port_or_known_default()?);
    Some(Via { url, label })
}

/// The proxy for every upstream without one of its own: `proxy`, else the
/// environment's.
pub fn configured(cfg: &Config) -> Option<Url> {
    let from_env = || {
        let var =
            ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"].iter().find_map(|v| std::env::var(v).ok())?;
        Url::parse(&var).ok()
    };
    cfg.proxy.clone().or_else(from_env)
}

/// Why an `http://` proxy refused to open a tunnel to `target`, asked again
/// in plain words after a connection through it failed: its status line
/// (`403 Forbidden`), or none when it opens the tunnel, cannot be asked
/// (a TLS proxy) or does not answer within a few seconds.
pub async fn refusal(proxy: &Url, target: &Url) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if proxy.scheme() != "http" {
        return None;
    }
    let authority = format!("{}:{}", target.host_str()?, target.port_or_known_default()?);
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if !proxy.username().is_empty() {
        use base64::Engine as _;
        let user = percent_decoded(proxy.username());
        let password = percent_decoded(proxy.password().unwrap_or(""));
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    let ask = async {
        let mut conn =
            tokio::net::TcpStream::connect((proxy.host_str()?, proxy.port_or_known_default()?)).await.ok()?;
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut head = vec![0u8; 1024];
        let n = conn.read(&mut head).await.ok()?;
        let line = String::from_utf8_lossy(&head[..n]).lines().next()?.to_owned();
        let mut words = line.splitn(3, ' ');
        let (_, status) = (words.next()?, words.next()?.parse::<u16>().ok()?);
        Some((status, crate::output::quote(words.next().unwrap_or("").trim(), 80)))
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), ask).await.ok().flatten()?;
    (!(200..300).contains(&answer.0)).then_some(answer)
}

fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
