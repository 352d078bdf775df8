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

/// The proxy upstream `i` goes through, without credentials, for reports.
pub fn label(cfg: &Config, i: usize) -> Option<String> {
    if cfg.upstreams[i].scheme() == "file" {
        return None;
    }
    let url = match cfg.upstream_proxies.get(i).cloned().flatten() {
        Some(ProxyChoice::Direct) => return None,
        Some(ProxyChoice::Via(url)) => url,
        None => configured(cfg)?,
    };
    let exempt = std::env::var("NO_PROXY").or_else(|_| std::env::var("no_proxy")).is_ok_and(|v| !v.is_empty());
    let caveat = if exempt { " (unless NO_PROXY exempts the host)" } else { "" };
    Some(format!("{}://{}:{}{caveat}", url.scheme(), url.host_str()?, url.port_or_known_default()?))
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
