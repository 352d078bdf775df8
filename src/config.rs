//! Configuration: the TOML file model and its layering with flags and
//! environment (flag > env > file > default) into one validated [`Config`].
//! Nothing after this module sees clap types or `Option` soup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// How upstreams are listed; clap parses it, the rest of the program reads it here.
pub use crate::cli::ListingKind;
use crate::cli::{GlobalArgs, Keys, PlanArgs, PublishArgs, UpstreamArgs};
use crate::filter::Filter;

pub const DEFAULT_CONFIG: &str = "/etc/upmirror/upmirror.toml";

/// A configuration or usage problem (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A `[[versions]]` table: of the paths `pattern` matches, the newest
/// `keep` versions of each series.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsEntry {
    pattern: String,
    keep: usize,
}

/// The manifest's file name unless `manifest_name` says otherwise.
const MANIFEST: &str = "upmirror-manifest.json";
/// HTTP/2 connections to one host at most, beside the one that asked first
/// (fewer when `max_connections_per_host` is lower).
const H2_CONNECTIONS: usize = 8;
/// Requests in flight on one HTTP/2 connection at most: the concurrent
/// streams RFC 9113 asks a server to allow (nginx allows 128).
const H2_STREAMS: usize = 50;

/// An `upstreams` entry: a URL, or `{ url = "...", proxy = "http://…" | "direct" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UpstreamEntry {
    Url(String),
    WithProxy(UpstreamWithProxy),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamWithProxy {
    url: String,
    proxy: String,
}

/// An upstream's own proxy, overriding `proxy` and the environment's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyChoice {
    Direct,
    Via(Url),
}

/// The file as written by the operator; every key optional, unknown keys an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub root: Option<PathBuf>,
    pub upstreams: Option<Vec<UpstreamEntry>>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keep: Option<usize>,
    pub listing: Option<ListingKind>,
    pub listing_timezone: Option<String>,
    pub manifest_name: Option<String>,
    pub allow_plain_http: Option<bool>,
    pub max_delete_percent: Option<f64>,
    pub concurrency: Option<usize>,
    pub max_connections_per_host: Option<usize>,
    pub recheck_budget: Option<usize>,
    pub free_space_margin: Option<String>,
    pub max_partial_size: Option<String>,
    pub metrics_file: Option<PathBuf>,
    pub auto_promote: Option<std::collections::BTreeMap<String, String>>,
    pub versions: Option<Vec<VersionsEntry>>,
    pub signing_key: Option<PathBuf>,
    pub make_deltas: Option<String>,
    pub publish_to: Option<Vec<String>>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_credentials_file: Option<PathBuf>,
    pub http2: Option<bool>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub retries: Option<u32>,
    pub retry_backoff: Option<String>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub low_speed_limit: Option<String>,
    pub low_speed_time: Option<String>,
    pub run_timeout: Option<String>,
    pub bandwidth_limit: Option<String>,
    pub grace: Option<String>,
    pub recheck_after: Option<String>,
    pub max_listing_age: Option<String>,
    pub seed_from: Option<Vec<PathBuf>>,
    pub proxy: Option<String>,
    pub proxy_ca_file: Option<PathBuf>,
    pub proxy_credentials_file: Option<PathBuf>,
    pub trusted_keys: Option<Vec<String>>,
    pub openpgp_keyring: Option<Vec<PathBuf>>,
    pub pre_publish: Option<String>,
    pub post_publish: Option<String>,
    pub on_failure: Option<String>,
    pub hook_timeout: Option<String>,
}

/// How hard the network is pushed and how long it is waited for.
#[derive(Debug, Clone)]
pub struct Net {
    pub retries: u32,
    pub retry_backoff: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Bytes per second below which a transfer is too slow …
    pub low_speed_limit: u64,
    /// … for this long.
    pub low_speed_time: Duration,
    pub run_timeout: Duration,
    /// Bytes per second for all transfers together, by local time.
    pub bandwidth_limit: Option<crate::bandwidth::Schedule>,
}

/// Commands run around a publish (see `hooks`).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub pre_publish: Option<String>,
    pub post_publish: Option<String>,
    pub on_failure: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: Option<PathBuf>,
    pub upstreams: Vec<Url>,
    /// Each upstream's own proxy, if it has one.
    pub upstream_proxies: Vec<Option<ProxyChoice>>,
    pub tls: Tls,
    pub keep: usize,
    pub listing: ListingKind,
    /// The zone a directory listing's dates are in, when the operator names it.
    pub listing_timezone: Option<jiff::tz::TimeZone>,
    pub manifest_name: String,
    pub allow_plain_http: bool,
    pub max_delete_percent: f64,
    /// Files in flight, fixed; `None`: adaptive (see `upstream::hosts`).
    pub concurrency: Option<usize>,
    /// Requests in flight to one upstream host at most.
    pub max_connections_per_host: usize,
    /// HEADs a crawl spends per run on files its listing shows nothing of.
    pub recheck_budget: usize,
    /// Bytes kept free beyond what a run downloads.
    pub free_space_margin: u64,
    /// Partial downloads kept for resuming at most this size in all.
    pub max_partial_size: Option<u64>,
    /// A Prometheus textfile written after every run.
    pub metrics_file: Option<PathBuf>,
    /// The mirror's own minisign key, for a manifest it writes itself.
    pub signing_key: Option<PathBuf>,
    /// Patches for the tiers below, for changed files of at least this size.
    pub make_deltas: Option<u64>,
    /// Buckets each snapshot is published to as well, and how to reach them.
    pub publish_to: Vec<crate::publish_to::Target>,
    pub s3: Option<crate::publish_to::S3>,
    /// One multiplexed HTTP/2 connection per upstream instead of an HTTP/1.1 pool.
    pub http2: bool,
    /// The proxy every upstream request goes through (`NO_PROXY` still
    /// exempts hosts); without it, `HTTPS_PROXY`/`NO_PROXY` are honoured.
    pub proxy: Option<Url>,
    /// Roots for a TLS proxy's certificate, for its name alone.
    pub proxy_ca_file: Option<PathBuf>,
    /// Where the proxy's credentials came from (they are in `proxy`).
    pub proxy_credentials_file: Option<PathBuf>,
    /// When set, a listing needs a valid signature by one of these keys.
    pub trusted_keys: Vec<String>,
    /// When set, a crawl's `SHA256SUMS` need an OpenPGP signature by one of these keys.
    pub openpgp_keyring: Vec<PathBuf>,
    pub hooks: Hooks,
    /// Which paths are mirrored.
    pub filter: Filter,
    /// How long a replaced snapshot still serves the paths missing from `current`.
    pub grace: Duration,
    /// Channels moved at every run, each with its cooldown.
    pub auto_promote: Vec<(String, Duration)>,
    /// Of the paths each rule matches, only the newest versions are mirrored.
    pub versions: Vec<crate::versions::Rule>,
    /// How long an upstream's validators are trusted before an unconditional fetch.
    pub recheck_after: Duration,
    /// A listing generated longer ago than this is refused.
    pub max_listing_age: Option<Duration>,
    /// Local trees a file to download is first looked for in.
    pub seed_from: Vec<PathBuf>,
    pub net: Net,
}

impl Config {
    /// Read the file (if any) and layer flags and environment over it.
    pub fn resolve(global: &GlobalArgs, keys: &Keys) -> Result<Config, ConfigError> {
        let file = match &global.config {
            Some(path) => load(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => load(Path::new(DEFAULT_CONFIG))?,
            None => FileConfig::default(),
        };
        let (upstreams, upstream_proxies) = upstream_entries(&keys.upstream.upstreams, &file.upstreams)?;
        let allow_plain_http = keys.upstream.allow_plain_http.or(file.allow_plain_http).unwrap_or(false);
        let (free_space_margin, max_partial_size) = resolve_sizes(&keys.plan, &file)?;
        let (recheck_after, max_listing_age, seed_from) = resolve_freshness_and_seeds(&keys.plan, &file)?;
        let up = &keys.upstream;
        let (publish_to, s3) = resolve_buckets(&keys.publish, &file, allow_plain_http)?;
        let config = Config {
            root: expand(keys.root.root.clone().or(file.root.clone()))?,
            upstreams: upstreams.iter().map(|u| parse_upstream(u, allow_plain_http)).collect::<Result<_, _>>()?,
            upstream_proxies,
            tls: Tls {
                ca_file: expand(keys.upstream.ca_file.clone().or(file.ca_file.clone()))?,
                client_cert: expand(keys.upstream.client_cert.clone().or(file.client_cert.clone()))?,
                client_key: expand(keys.upstream.client_key.clone().or(file.client_key.clone()))?,
            },
            keep: keys.publish.keep.or(file.keep).unwrap_or(3),
            listing: keys.upstream.listing.or(file.listing).unwrap_or(ListingKind::Auto),
            listing_timezone: zone(up.listing_timezone.clone().or(file.listing_timezone.clone()))?,
            manifest_name: up.manifest_name.clone().or(file.manifest_name.clone()).unwrap_or(MANIFEST.into()),
            allow_plain_http,
            max_delete_percent: keys.plan.max_delete_percent.or(file.max_delete_percent).unwrap_or(10.0),
            concurrency: keys.upstream.concurrency.or(file.concurrency),
            max_connections_per_host: up.max_connections_per_host.or(file.max_connections_per_host).unwrap_or(64),
            recheck_budget: up.recheck_budget.or(file.recheck_budget).unwrap_or(10_000),
            free_space_margin,
            max_partial_size,
            metrics_file: expand(keys.publish.metrics_file.clone().or(file.metrics_file.clone()))?,
            signing_key: expand(keys.publish.signing_key.clone().or(file.signing_key.clone()))?,
            make_deltas: bytes("make_deltas", keys.publish.make_deltas.clone().or(file.make_deltas.clone()), false)?,
            publish_to,
            s3,
            http2: keys.upstream.http2.or(file.http2).unwrap_or(true),
            trusted_keys: list(&keys.upstream.trusted_keys, &file.trusted_keys),
            openpgp_keyring: paths(&keys.upstream.openpgp_keyring, &file.openpgp_keyring)?,
            hooks: resolve_hooks(&keys.publish, &file)?,
            proxy: keys.upstream.proxy.clone().or(file.proxy.clone()).map(|p| parse_proxy(&p)).transpose()?,
            proxy_credentials_file: expand(up.proxy_credentials_file.clone().or(file.proxy_credentials_file.clone()))?,
            proxy_ca_file: expand(up.proxy_ca_file.clone().or(file.proxy_ca_file.clone()))?,
            filter: Filter::new(&list(&keys.plan.include, &file.include), &list(&keys.plan.exclude, &file.exclude))
                .map_err(|e| ConfigError(e.0))?,
            grace: grace(keys.publish.grace.clone().or(file.grace.clone()))?,
            auto_promote: auto_promote(&keys.publish.auto_promote, &file.auto_promote)?,
            versions: versions(&keys.plan.keep_versions, &file.versions)?,
            recheck_after,
            max_listing_age,
            seed_from,
            net: resolve_net(&keys.upstream, &file)?,
        };
        config.validate()?;
        config.with_proxy_credentials()
    }

    /// The proxy URL with the user and password of `proxy_credentials_file`.
    fn with_proxy_credentials(mut self) -> Result<Config, ConfigError> {
        let Some(file) = &self.proxy_credentials_file else { return Ok(self) };
        let err = |what: &str| ConfigError(format!("proxy_credentials_file {}: {what}", file.display()));
        let Some(proxy) = self.proxy.as_mut() else { return Err(err("set without a proxy; set proxy too")) };
        let mut text = String::new();
        let read = std::fs::File::open(file)
            .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut text));
        read.map_err(|e| err(&e.to_string()))?;
        let Some((user, password)) = text.trim().split_once(':').filter(|(u, _)| !u.is_empty()) else {
            return Err(err("expected one line user:password"));
        };
        let set = proxy.set_username(user).and_then(|()| proxy.set_password(Some(password)));
        set.map_err(|()| err("the proxy URL cannot carry credentials"))?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.keep < 1 {
            return Err(ConfigError("keep must be at least 1".into()));
        }
        if self.concurrency == Some(0) {
            return Err(ConfigError("concurrency must be at least 1".into()));
        }
        if self.max_connections_per_host < 1 {
            return Err(ConfigError("max_connections_per_host must be at least 1".into()));
        }
        if !(0.0..=100.0).contains(&self.max_delete_percent) {
            return Err(ConfigError("max_delete_percent must be between 0 and 100".into()));
        }
        if crate::manifest::RelPath::parse(&self.manifest_name).is_err() || self.manifest_name.contains('/') {
            return Err(ConfigError(format!("manifest_name \"{}\" must be a plain file name", self.manifest_name)));
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return Err(ConfigError("client_cert and client_key must be given together".into()));
        }
        for (key, path) in [
            ("ca_file", &self.tls.ca_file),
            ("client_cert", &self.tls.client_cert),
            ("client_key", &self.tls.client_key),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(ConfigError(format!("{key} {}: no such file", p.display())));
            }
        }
        Ok(())
    }

    /// Files in flight at once: the fixed `concurrency`, else as many as
    /// the upstream hosts could take (each host's limit decides).
    pub fn files_in_flight(&self) -> usize {
        self.concurrency.unwrap_or(self.requests_per_host() * self.upstreams.len().max(1))
    }

    /// HTTP/2 connections to one host that answered over HTTP/2, beside
    /// the one that asked first: one fewer than `max_connections_per_host`
    /// allows, at most [`H2_CONNECTIONS`].
    pub fn h2_connections(&self) -> usize {
        if self.http2 { H2_CONNECTIONS.min(self.max_connections_per_host.saturating_sub(1)) } else { 0 }
    }

    /// HTTP/1.1 connections to such a host for large bodies: those
    /// `max_connections_per_host` leaves beside the HTTP/2 ones.
    pub fn bulk_connections(&self) -> usize {
        self.max_connections_per_host.saturating_sub(1 + self.h2_connections())
    }

    /// Requests in flight to one host at most: one on each HTTP/1.1
    /// connection, [`H2_STREAMS`] on each HTTP/2 one.
    pub fn requests_per_host(&self) -> usize {
        let streams = if self.http2 { self.h2_connections().max(1) * H2_STREAMS } else { 0 };
        self.max_connections_per_host.max(streams)
    }

    /// The root, which every command but `manifest` needs.
    pub fn root(&self) -> Result<&Path, ConfigError> {
        self.root
            .as_deref()
            .ok_or_else(|| ConfigError("no mirror root: set root in the config, --root or UPMIRROR_ROOT".into()))
    }
}

/// The `publish_to` buckets, and with them the endpoint, region and
/// credentials (needed only then).
fn resolve_buckets(
    args: &PublishArgs,
    file: &FileConfig,
    allow_plain_http: bool,
) -> Result<(Vec<crate::publish_to::Target>, Option<crate::publish_to::S3>), ConfigError> {
    let targets: Vec<crate::publish_to::Target> = list(&args.publish_to, &file.publish_to)
        .iter()
        .map(|url| crate::publish_to::Target::parse(url))
        .collect::<Result<_, _>>()
        .map_err(ConfigError)?;
    if targets.is_empty() {
        return Ok((targets, None));
    }
    let endpoint = args.s3_endpoint.clone().or(file.s3_endpoint.clone());
    if let Some(e) = &endpoint
        && Url::parse(e).map_or(true, |u| u.scheme() != "https" && (u.scheme() != "http" || !allow_plain_http))
    {
        return Err(ConfigError(format!(
            "s3_endpoint \"{e}\": expected an https:// URL (http:// needs allow_plain_http)"
        )));
    }
    let file_path = expand(args.s3_credentials_file.clone().or(file.s3_credentials_file.clone()))?;
    let (key_id, secret) = crate::publish_to::credentials(file_path.as_deref()).map_err(ConfigError)?;
    let region = args.s3_region.clone().or(file.s3_region.clone()).unwrap_or_else(|| "us-east-1".into());
    Ok((targets, Some(crate::publish_to::S3 { endpoint, region, key_id, secret })))
}

/// `recheck_after`, `max_listing_age` (off when unset) and the `seed_from` trees.
fn resolve_freshness_and_seeds(
    args: &PlanArgs,
    file: &FileConfig,
) -> Result<(Duration, Option<Duration>, Vec<PathBuf>), ConfigError> {
    let recheck_after = duration("recheck_after", args.recheck_after.clone().or(file.recheck_after.clone()), "24h")?;
    let age = args.max_listing_age.clone().or(file.max_listing_age.clone());
    let age = age.map(|age| duration("max_listing_age", Some(age), "7d")).transpose()?;
    Ok((recheck_after, age, paths(&args.seed_from, &file.seed_from)?))
}

/// A list of paths: the flags' when given, else the file's; `${VAR}` expanded.
fn paths(flags: &[PathBuf], file: &Option<Vec<PathBuf>>) -> Result<Vec<PathBuf>, ConfigError> {
    list(flags, file).into_iter().map(|p| expand(Some(p)).map(Option::unwrap_or_default)).collect()
}

/// A list key: the flags when given (they replace the file's), else the file's.
fn list<T: Clone>(flags: &[T], file: &Option<Vec<T>>) -> Vec<T> {
    if flags.is_empty() { file.clone().unwrap_or_default() } else { flags.to_vec() }
}

/// `free_space_margin` (default 64 MiB) and `max_partial_size` (no default).
fn resolve_sizes(args: &PlanArgs, file: &FileConfig) -> Result<(u64, Option<u64>), ConfigError> {
    let margin = bytes("free_space_margin", args.free_space_margin.clone().or(file.free_space_margin.clone()), true)?;
    let partial = bytes("max_partial_size", args.max_partial_size.clone().or(file.max_partial_size.clone()), true)?;
    Ok((margin.unwrap_or(64 << 20), partial))
}

/// The publish hooks and their time limit.
fn resolve_hooks(args: &PublishArgs, file: &FileConfig) -> Result<Hooks, ConfigError> {
    Ok(Hooks {
        pre_publish: args.pre_publish.clone().or(file.pre_publish.clone()),
        post_publish: args.post_publish.clone().or(file.post_publish.clone()),
        on_failure: args.on_failure.clone().or(file.on_failure.clone()),
        timeout: duration("hook_timeout", args.hook_timeout.clone().or(file.hook_timeout.clone()), "10m")?,
    })
}

/// The network keys: how hard the network is pushed and how long it is waited for.
fn resolve_net(args: &UpstreamArgs, file: &FileConfig) -> Result<Net, ConfigError> {
    let pick = |flag: &Option<String>, key: &Option<String>| flag.clone().or_else(|| key.clone());
    Ok(Net {
        retries: args.retries.or(file.retries).unwrap_or(5),
        retry_backoff: duration("retry_backoff", pick(&args.retry_backoff, &file.retry_backoff), "1s")?,
        connect_timeout: duration("connect_timeout", pick(&args.connect_timeout, &file.connect_timeout), "15s")?,
        idle_timeout: duration("idle_timeout", pick(&args.idle_timeout, &file.idle_timeout), "60s")?,
        low_speed_limit: bytes("low_speed_limit", pick(&args.low_speed_limit, &file.low_speed_limit), false)?
            .unwrap_or(1024),
        low_speed_time: duration("low_speed_time", pick(&args.low_speed_time, &file.low_speed_time), "60s")?,
        run_timeout: duration("run_timeout", pick(&args.run_timeout, &file.run_timeout), "12h")?,
        bandwidth_limit: pick(&args.bandwidth_limit, &file.bandwidth_limit).map(|t| bandwidth(&t)).transpose()?,
    })
}

/// A rate or a timetable of rates (see `bandwidth`).
fn bandwidth(text: &str) -> Result<crate::bandwidth::Schedule, ConfigError> {
    let rate =
        |r: &str| bytes("bandwidth_limit", Some(r.to_owned()), false).map(Option::unwrap_or_default).map_err(|e| e.0);
    crate::bandwidth::Schedule::parse(text, rate).map_err(|e| {
        ConfigError(format!("bandwidth_limit \"{text}\": {e} (a rate like 20MiB/s, or \"08:00,4MiB/s 18:00,off\")"))
    })
}

/// Expand `${NAME}` from the environment in a path, e.g.
/// `${CREDENTIALS_DIRECTORY}/client.key` under systemd.
fn expand(path: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = path else { return Ok(None) };
    let Some(text) = path.to_str().filter(|t| t.contains("${")) else { return Ok(Some(path)) };
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').ok_or_else(|| ConfigError(format!("{text}: unclosed ${{")))? + start;
        let name = &rest[start + 2..end];
        let value = std::env::var(name).map_err(|_| ConfigError(format!("{text}: ${{{name}}} is not set")))?;
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(PathBuf::from(out)))
}

fn duration(key: &str, value: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_owned());
    match humantime::parse_duration(&text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(ConfigError(format!("{key} = \"{text}\": must be more than zero"))),
        Err(e) => Err(ConfigError(format!("{key} = \"{text}\": {e} (e.g. 30s, 5m, 2h)"))),
    }
}

/// `auto_promote`: the flags' `CHANNEL=DURATION` pairs when given, else
/// the file's table; each name a valid channel, each cooldown a duration.
fn auto_promote(
    flags: &[String],
    file: &Option<std::collections::BTreeMap<String, String>>,
) -> Result<Vec<(String, Duration)>, ConfigError> {
    let pairs: Vec<(String, String)> = if flags.is_empty() {
        file.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect()
    } else {
        let split = |f: &String| f.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()));
        flags
            .iter()
            .map(|f| {
                split(f).ok_or_else(|| {
                    ConfigError(format!("auto_promote \"{f}\": expected CHANNEL=DURATION, e.g. stable=7d"))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let check = |(name, cooldown): (String, String)| {
        if !crate::channels::valid_name(&name) {
            return Err(ConfigError(format!("auto_promote: \"{name}\" is no channel name (letters, digits, . _ -)")));
        }
        Ok((name.clone(), duration(&format!("auto_promote {name}"), Some(cooldown), "0")?))
    };
    pairs.into_iter().map(check).collect()
}

/// `versions`: the flags' `PATTERN=N` when given, else the file's tables.
fn versions(flags: &[String], file: &Option<Vec<VersionsEntry>>) -> Result<Vec<crate::versions::Rule>, ConfigError> {
    let rule =
        |pattern: &str, keep: usize| crate::versions::Rule::new(pattern, keep).map_err(|e| ConfigError(e.to_string()));
    if flags.is_empty() {
        return file.iter().flatten().map(|v| rule(&v.pattern, v.keep)).collect();
    }
    let parse = |f: &String| {
        let (pattern, keep) =
            f.rsplit_once('=').ok_or_else(|| ConfigError(format!("--keep-versions \"{f}\": expected PATTERN=N")))?;
        let keep =
            keep.trim().parse().map_err(|_| ConfigError(format!("--keep-versions \"{f}\": N is a whole number")))?;
        rule(pattern.trim(), keep)
    };
    flags.iter().map(parse).collect()
}

/// `listing_timezone`: a zone of the system's time zone database.
fn zone(name: Option<String>) -> Result<Option<jiff::tz::TimeZone>, ConfigError> {
    let Some(name) = name else { return Ok(None) };
    jiff::tz::TimeZone::get(name.trim()).map(Some).map_err(|e| {
        ConfigError(format!(
            "listing_timezone = \"{}\": {e}; name an IANA zone like \"America/New_York\" (the tzdata package holds them)",
            crate::output::quote(&name, 80)
        ))
    })
}

/// `grace`, which may be zero: no window at all.
fn grace(value: Option<String>) -> Result<Duration, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some("0" | "0s") => Ok(Duration::ZERO),
        _ => duration("grace", value, "2h"),
    }
}

/// A size given on the command line (`--budget 50GiB`), more than zero.
pub fn size(flag: &str, text: &str) -> Result<u64, ConfigError> {
    Ok(bytes(flag, Some(text.to_owned()), false)?.unwrap_or_default())
}

/// `20MiB/s`, `512K`, `1000` → bytes (per second, for rates).
fn bytes(key: &str, value: Option<String>, zero_ok: bool) -> Result<Option<u64>, ConfigError> {
    let Some(text) = value else { return Ok(None) };
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => 0,
    };
    match num.parse::<f64>() {
        Ok(n) if (n > 0.0 || zero_ok && n == 0.0) && scale > 0 => Ok(Some((n * scale as f64) as u64)),
        _ => Err(ConfigError(format!("{key} = \"{text}\": expected an amount like 20MiB/s, 512KiB or 1000"))),
    }
}

fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))?;
    parse_file(&text).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))
}

/// The file's keys, or an error naming the line, the column and the key.
fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let Some(span) = e.span() else { return e.message().to_owned() };
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        let line_text = text.lines().nth(line - 1).unwrap_or("");
        let key = line_text.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('#'));
        let said = key.and_then(|k| unknown_key(k, text)).unwrap_or_else(|| plain_words(e.message(), key));
        let key = key.map(|k| format!(", key {}", crate::output::quote(k, 60))).unwrap_or_default();
        format!("line {line}, column {column}{key}: {said}")
    })
}

/// Every key the file may hold, as serde knows them.
fn known_keys() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    /// A deserializer that only hears which fields a struct has.
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("fields only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            self.deserialize_any(visitor)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = FileConfig::deserialize(Fields(&mut fields));
    fields
}

/// `key` when the file's top level holds it and no such key exists: what
/// it is, and the known key it most likely means.
fn unknown_key(key: &str, text: &str) -> Option<String> {
    let known = known_keys();
    let top: toml::Table = text.parse().ok()?;
    if known.contains(&key) || !top.contains_key(key) {
        return None;
    }
    let nearest = known.iter().map(|k| (strsim::damerau_levenshtein(k, key), *k)).min()?;
    let hint = match nearest {
        (distance, k) if distance <= 3 => format!("; did you mean {k}?"),
        _ => "; see `man upmirror` for the keys".to_owned(),
    };
    Some(format!("there is no key {}{hint}", crate::output::quote(key, 60)))
}

/// A type error in words an operator uses: "a whole number", "a duration
/// like \"30s\"", "a size like \"64MiB\"".
fn plain_words(message: &str, key: Option<&str>) -> String {
    const WHOLE: [&str; 5] = ["expected usize", "expected u64", "expected u32", "expected u16", "expected u8"];
    let mut said = message.to_owned();
    for whole in WHOLE {
        said = said.replace(whole, "expected a whole number");
    }
    said = said.replace("expected f64", "expected a number");
    let duration = key.is_some_and(|k| {
        k.ends_with("timeout")
            || k.ends_with("_time")
            || ["grace", "recheck_after", "retry_backoff", "max_listing_age"].contains(&k)
    });
    let size = key.is_some_and(|k| {
        ["free_space_margin", "max_partial_size", "low_speed_limit", "bandwidth_limit", "make_deltas"].contains(&k)
    });
    match (duration, size) {
        (true, _) => said.replace("expected a string", "expected a duration like \"30s\""),
        (_, true) => said.replace("expected a string", "expected a size like \"64MiB\""),
        _ => said,
    }
}

/// The upstream URLs, from the flags (or environment) when given, else from
/// the file, with each one's own proxy.
fn upstream_entries(
    flags: &[String],
    file: &Option<Vec<UpstreamEntry>>,
) -> Result<(Vec<String>, Vec<Option<ProxyChoice>>), ConfigError> {
    if !flags.is_empty() {
        return Ok((flags.to_vec(), vec![None; flags.len()]));
    }
    let mut pairs = Vec::new();
    for entry in file.iter().flatten() {
        pairs.push(match entry {
            UpstreamEntry::Url(url) => (url.clone(), None),
            UpstreamEntry::WithProxy(UpstreamWithProxy { url, proxy }) if proxy == "direct" => {
                (url.clone(), Some(ProxyChoice::Direct))
            }
            UpstreamEntry::WithProxy(UpstreamWithProxy { url, proxy }) => {
                (url.clone(), Some(ProxyChoice::Via(parse_proxy(proxy)?)))
            }
        });
    }
    Ok(pairs.into_iter().unzip())
}

/// A proxy URL: http or https, host and port, credentials allowed (never
/// printed back).
fn parse_proxy(s: &str) -> Result<Url, ConfigError> {
    let shown = || s.split_once('@').map_or(s.to_owned(), |(_, host)| format!("…@{host}"));
    let url = Url::parse(s.trim()).map_err(|e| ConfigError(format!("proxy \"{}\": {e}", shown())))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError(format!("proxy \"{}\": expected http://HOST:PORT or https://HOST:PORT", shown())));
    }
    Ok(url)
}

/// An upstream base URL: https, file, or http when permitted; always ending in `/`.
fn parse_upstream(s: &str, allow_plain_http: bool) -> Result<Url, ConfigError> {
    let mut url = Url::parse(s.trim()).map_err(|e| ConfigError(format!("upstream \"{s}\": {e}")))?;
    match url.scheme() {
        "https" | "file" => {}
        "http" if allow_plain_http => {}
        "http" => {
            return Err(ConfigError(format!(
                "upstream {url}: plain http is refused; use https or set allow_plain_http = true"
            )));
        }
        other => {
            return Err(ConfigError(format!("upstream {url}: unsupported scheme \"{other}\" (use https or file)")));
        }
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError(format!("upstream {url}: no query, fragment or credentials in the URL")));
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses() {
        let f = parse_file(include_str!("../etc/upmirror.toml")).unwrap();
        assert_eq!(f.root.as_deref(), Some(Path::new("/srv/upmirror")));
        assert!(!f.upstreams.unwrap().is_empty());
        assert_eq!(f.keep, Some(3));
    }

    #[test]
    fn the_shipped_examples_of_channels_versions_and_listing_age_parse_uncommented() {
        let text = include_str!("../etc/upmirror.toml");
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| {
                        l.starts_with("auto_promote")
                            || l.starts_with("max_listing_age")
                            || l.starts_with("seed_from")
                            || l.starts_with("openpgp_keyring")
                            || l.starts_with("make_deltas")
                            || l.starts_with("listing_timezone")
                            || l.starts_with("publish_to")
                            || l.starts_with("s3_")
                            || l.starts_with("[[versions]]")
                            || l.starts_with("pattern")
                            || l.starts_with("keep = 2")
                    })
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let f = parse_file(&uncommented).unwrap();
        assert_eq!(
            auto_promote(&[], &f.auto_promote).unwrap(),
            [("stable".to_owned(), Duration::from_secs(7 * 86400))]
        );
        assert_eq!(versions(&[], &f.versions).unwrap().len(), 1);
        assert_eq!(f.max_listing_age.as_deref(), Some("8d"));
        assert_eq!(f.seed_from, Some(vec![PathBuf::from("/media/vendor-dvd")]));
        assert_eq!(f.openpgp_keyring, Some(vec![PathBuf::from("/etc/upmirror/vendor-archive.asc")]));
        assert_eq!(f.make_deltas.as_deref(), Some("16MiB"));
        assert!(zone(f.listing_timezone).unwrap().is_some(), "America/New_York");
        let targets = f.publish_to.unwrap().iter().map(|u| crate::publish_to::Target::parse(u)).collect::<Vec<_>>();
        assert_eq!(targets[0].as_ref().map(|t| (t.bucket.as_str(), t.prefix.as_str())), Ok(("updates", "vendor/")));
        assert_eq!(f.s3_credentials_file, Some(PathBuf::from("/etc/upmirror/s3-credentials")));
        for bad in ["s3://ab/x", "s3://Upper/x", "https://bucket/x", "s3://bucket/../x"] {
            assert!(crate::publish_to::Target::parse(bad).is_err(), "{bad}");
        }
        assert!(versions(&["releases/{version}/**=x".into()], &None).is_err());
        assert!(auto_promote(&["stable".into()], &None).is_err());
    }

    #[test]
    fn rates_and_durations_parse_with_units() {
        assert_eq!(bytes("k", Some("20MiB/s".into()), false).unwrap(), Some(20 << 20));
        assert_eq!(bytes("k", Some("512K".into()), false).unwrap(), Some(512 << 10));
        assert_eq!(bytes("k", Some("1.5 MB/s".into()), false).unwrap(), Some(1_500_000));
        assert_eq!(bytes("k", Some("1000".into()), false).unwrap(), Some(1000));
        assert!(bytes("k", Some("fast".into()), false).unwrap_err().0.contains("20MiB/s"));
        assert!(bytes("k", Some("0".into()), false).is_err());
        assert_eq!(bytes("k", Some("0".into()), true).unwrap(), Some(0));
        assert_eq!(duration("k", None, "15s").unwrap(), Duration::from_secs(15));
        assert_eq!(duration("k", Some("2h".into()), "1s").unwrap(), Duration::from_secs(7200));
        assert!(duration("k", Some("0s".into()), "1s").is_err());
        assert!(duration("k", Some("soon".into()), "1s").unwrap_err().0.contains("e.g. 30s"));
    }

    #[test]
    fn paths_expand_environment_variables() {
        let home = std::env::var("PATH").unwrap();
        assert_eq!(expand(Some("${PATH}/k".into())).unwrap(), Some(PathBuf::from(format!("{home}/k"))));
        assert_eq!(expand(Some("/plain/k".into())).unwrap(), Some(PathBuf::from("/plain/k")));
        assert!(expand(Some("${UPMIRROR_SURELY_UNSET_VAR}/k".into())).unwrap_err().0.contains("is not set"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse_file("roots = \"/x\"").unwrap_err();
        assert!(e.contains("there is no key roots; did you mean root?"), "{e}");
        let e = parse_file("keep = -1\n").unwrap_err();
        assert!(e.contains("a whole number"), "{e}");
        let e = parse_file("run_timeout = 30\n").unwrap_err();
        assert!(e.contains("expected a duration like \"30s\""), "{e}");
    }

    #[test]
    fn errors_name_the_line_column_and_key() {
        let e = parse_file("# mirror\nroot = \"/srv\"\nkeep = \"3\"\n").unwrap_err();
        assert!(e.starts_with("line 3, column 8, key keep: invalid type: string \"3\""), "{e}");
        let e = parse_file("root = /srv\n").unwrap_err();
        assert!(e.starts_with("line 1, column 8, key root: "), "{e}");
    }

    #[test]
    fn upstream_urls_are_checked_and_normalised() {
        assert_eq!(parse_upstream("https://h/pub", false).unwrap().as_str(), "https://h/pub/");
        assert!(parse_upstream("http://h/", false).unwrap_err().0.contains("plain http"));
        assert!(parse_upstream("http://h/", true).is_ok());
        assert!(parse_upstream("ftp://h/", true).is_err());
        assert!(parse_upstream("https://u:p@h/", false).is_err());
        assert_eq!(parse_upstream("file:///srv/x", false).unwrap().as_str(), "file:///srv/x/");
    }

    #[test]
    fn an_upstream_entry_may_name_its_own_proxy() {
        let text = r#"upstreams = ["https://a/", { url = "https://b/", proxy = "direct" }, { url = "https://c/", proxy = "http://p:3128" }]"#;
        let (urls, proxies) = upstream_entries(&[], &parse_file(text).unwrap().upstreams).unwrap();
        assert_eq!(urls, ["https://a/", "https://b/", "https://c/"]);
        let via = Url::parse("http://p:3128").unwrap();
        assert_eq!(proxies, [None, Some(ProxyChoice::Direct), Some(ProxyChoice::Via(via))]);
        let bad = r#"upstreams = [{ url = "https://b/", proxy = "ftp://p" }]"#;
        assert!(upstream_entries(&[], &parse_file(bad).unwrap().upstreams).unwrap_err().0.contains("proxy"));
        assert!(parse_file(r#"upstreams = [{ url = "https://b/", via = "x" }]"#).is_err());
    }
}
