//! Where `publish_to` publishes: each bucket and prefix, and how to reach
//! the S3 API, as configured (the publishing itself is `bucket`'s).

use std::io::Read as _;
use std::path::Path;

use anyhow::{Result, anyhow};
use object_store::path::Path as Key;

/// A bucket and the prefix a mirror publishes under: `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl Target {
    /// `s3://BUCKET[/PREFIX]`: a bucket name as S3 allows it, a prefix of
    /// plain segments.
    pub fn parse(url: &str) -> Result<Target, String> {
        let why = |what: &str| format!("publish_to \"{}\": {what}", crate::output::quote(url, 200));
        let rest = url.strip_prefix("s3://").ok_or_else(|| why("not an s3://BUCKET/PREFIX URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let name_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
        if !name_ok {
            return Err(why("the bucket name must be 3 to 63 of a-z, 0-9, '-' and '.'"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            crate::manifest::RelPath::parse(prefix).map_err(|e| why(&e))?;
        }
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        Ok(Target { url: url.to_owned(), bucket: bucket.to_owned(), prefix })
    }

    pub fn key(&self, rel: &str) -> Result<Key> {
        Key::parse(format!("{}{rel}", self.prefix)).map_err(|e| anyhow!("{}: key {rel}: {e}", self.url))
    }

    pub fn snapshot_key(&self, id: &str, rel: &str) -> Result<Key> {
        self.key(&format!("snapshots/{id}/{rel}"))
    }
}

/// How to reach the S3 API. The secret is never printed.
#[derive(Clone)]
pub struct S3 {
    pub endpoint: Option<String>,
    pub region: String,
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3").field("endpoint", &self.endpoint).field("region", &self.region).finish_non_exhaustive()
    }
}

/// Credentials from an AWS-style ini file (`aws_access_key_id`,
/// `aws_secret_access_key`, the first of each), else from the environment.
pub fn credentials(file: Option<&Path>) -> Result<(String, String), String> {
    let Some(file) = file else {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        return var("AWS_ACCESS_KEY_ID").zip(var("AWS_SECRET_ACCESS_KEY")).ok_or_else(|| {
            "publish_to needs credentials: set s3_credentials_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .to_owned()
        });
    };
    let err = |what: &str| format!("s3_credentials_file {}: {what}", file.display());
    let mut text = String::new();
    let read = std::fs::File::open(file).and_then(|f| f.take(64 << 10).read_to_string(&mut text));
    read.map_err(|e| err(&e.to_string()))?;
    let value = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    value("aws_access_key_id")
        .zip(value("aws_secret_access_key"))
        .ok_or_else(|| err("expected aws_access_key_id = … and aws_secret_access_key = …"))
}
