//! The command line: clap types only, no I/O. Every configuration key is an
//! `Option` here so that `config` can layer flag > env > file > default.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keep a private updates mirror: copy an upstream release tree over HTTPS and
/// publish each verified copy atomically.
#[derive(Debug, Parser)]
#[command(name = "upmirror", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

// One per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, plan, fetch, verify and publish a new snapshot.
    Sync(SyncArgs),
    /// Re-hash the published snapshot against its manifest; exit 1 if anything is wrong.
    Verify(VerifyArgs),
    /// Show the published snapshot, a run in progress, the last run, the snapshots kept and the mirror's size.
    Status(StatusArgs),
    /// Publish the previous snapshot again and reject the rolled-back listing.
    Rollback {
        #[command(flatten)]
        root: RootArgs,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Point a channel (`ROOT/channels/CHANNEL`, served at /channels/CHANNEL/) at a kept snapshot.
    Promote {
        /// The channel, e.g. `stable` (letters, digits, `.`, `_`, `-`).
        channel: String,
        /// The snapshot to promote [default: the published one].
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        #[command(flatten)]
        root: RootArgs,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Create the layout of a new mirror root and print the next steps.
    Init {
        /// The mirror root [default: root from the config].
        dir: Option<PathBuf>,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Write the manual pages (roff): upmirror.1 and one per subcommand.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Check each configured upstream: reachable, TLS, client certificate, latency, listing kind and age.
    Mirrors {
        #[command(flatten)]
        upstream: UpstreamArgs,
    },
    /// Write an air-gap bundle: the published snapshot's manifest and the files new or changed since a base.
    Export {
        /// Where to write the bundle (a new or empty directory).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Only what is new or changed since this snapshot (kept in the root) or this manifest file.
        #[arg(long, value_name = "SNAPSHOT_ID|MANIFEST")]
        since: Option<String>,
        /// Hard-link the served files into the bundle instead of copying them (same file system only;
        /// an edit to the bundle then edits the mirror).
        #[arg(long)]
        link: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Write upmirror-manifest.json for a directory.
    Manifest {
        /// The directory to describe; the manifest is written into it.
        dir: PathBuf,
        /// Also write upmirror-manifest.json.minisig, signed with this minisign secret key.
        #[arg(long, value_name = "KEYFILE")]
        sign: Option<PathBuf>,
        /// Also write zstd patches from this older tree for the changed files (.upmirror-deltas/, upmirror-deltas.json).
        #[arg(long, value_name = "OLD_DIR")]
        delta_from: Option<PathBuf>,
        /// Patch only files at least this large [default: 16MiB].
        #[arg(long, value_name = "SIZE", requires = "delta_from")]
        delta_min_size: Option<String>,
    },
}

impl Command {
    /// The configuration keys this command took; the others default.
    pub fn keys(&self) -> Keys {
        let mut keys = Keys::default();
        match self {
            Command::Sync(a) => {
                (keys.root, keys.publish, keys.plan, keys.upstream) =
                    (a.root.clone(), a.publish.clone(), a.plan_keys.clone(), a.upstream.clone());
            }
            Command::Verify(a) => {
                (keys.root, keys.publish, keys.upstream) = (a.root.clone(), a.publish.clone(), a.upstream.clone());
            }
            Command::Status(a) => keys.root = a.root.clone(),
            Command::Rollback { root, publish } | Command::Promote { root, publish, .. } => {
                (keys.root, keys.publish) = (root.clone(), publish.clone())
            }
            Command::Init { root, .. } | Command::Export { root, .. } => keys.root = root.clone(),
            Command::Mirrors { upstream } => keys.upstream = upstream.clone(),
            Command::Completions { .. } | Command::Man { .. } | Command::Manifest { .. } => {}
        }
        keys
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Re-fetch what is wrong into a new snapshot and publish it.
    #[arg(long)]
    pub repair: bool,
    /// Re-hash at most SIZE (e.g. 50GiB), going on from where the last budgeted verify stopped.
    #[arg(long, value_name = "SIZE")]
    pub budget: Option<String>,
    #[command(flatten)]
    pub root: RootArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One line and an exit code for monitoring: 0 when the last run succeeded (or is held)
    /// within --stale-after, 1 when it failed or the mirror is stale, 2 when the root is unknown.
    #[arg(long)]
    pub check: bool,
    /// With --check: how long since the last successful run is still fresh.
    #[arg(long, value_name = "DURATION", default_value = "6h", requires = "check")]
    pub stale_after: humantime::Duration,
    #[command(flatten)]
    pub root: RootArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Override the delete guard and publish a listing that was rolled back.
    #[arg(long)]
    pub force: bool,
    /// Accept a listing older than the published one.
    #[arg(long)]
    pub allow_rollback: bool,
    /// With --dry-run: save the plan to FILE, to apply later with --plan.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub save_plan: Option<PathBuf>,
    /// Apply exactly the plan saved in FILE; refuse (exit 3) if the upstream or the mirror changed since.
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub plan: Option<PathBuf>,
    /// Fetch the listing unconditionally now, whatever the validators say.
    #[arg(long)]
    pub recheck: bool,
    #[command(flatten)]
    pub root: RootArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub plan_keys: PlanArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListingKind {
    /// The manifest when the upstream has one, else a crawl of its directory listings.
    Auto,
    /// Only the manifest.
    Manifest,
    /// Only a crawl of directory listings (nginx JSON or HTML, Apache HTML).
    Autoindex,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: /etc/upmirror/upmirror.toml; a missing default is not an error].
    #[arg(long, global = true, env = "UPMIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print errors only (cron mails nothing on success).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Mirror root")]
pub struct RootArgs {
    /// The mirror root: snapshots/, current and .upmirror/ live here.
    #[arg(long, env = "UPMIRROR_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Snapshots and status")]
pub struct PublishArgs {
    /// Run after a snapshot is built and verified, before it is published; failing refuses it (exit 3).
    #[arg(long, env = "UPMIRROR_PRE_PUBLISH", value_name = "CMD")]
    pub pre_publish: Option<String>,
    /// Run after a snapshot is published; failing is a warning.
    #[arg(long, env = "UPMIRROR_POST_PUBLISH", value_name = "CMD")]
    pub post_publish: Option<String>,
    /// Run when a sync fails.
    #[arg(long, env = "UPMIRROR_ON_FAILURE", value_name = "CMD")]
    pub on_failure: Option<String>,
    /// Time limit of each hook [default: 10m].
    #[arg(long, env = "UPMIRROR_HOOK_TIMEOUT", value_name = "DURATION")]
    pub hook_timeout: Option<String>,
    /// Snapshots kept, the published one included [default: 3].
    #[arg(long, env = "UPMIRROR_KEEP", value_name = "N")]
    pub keep: Option<usize>,
    /// After a publish, paths missing from current are served from the snapshots it replaced for this long [default: 2h].
    #[arg(long, env = "UPMIRROR_GRACE", value_name = "DURATION")]
    pub grace: Option<String>,
    /// Sign the manifest of a snapshot that is not the upstream's signed one (a filtered subset) with this minisign key.
    #[arg(long, env = "UPMIRROR_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Write zstd patches from the previous snapshot for changed files of at least SIZE, for the tiers below.
    #[arg(long, env = "UPMIRROR_MAKE_DELTAS", value_name = "SIZE")]
    pub make_deltas: Option<String>,
    /// Every run points CHANNEL at the newest snapshot published at least DURATION ago (repeat; e.g. stable=7d).
    #[arg(
        long = "auto-promote",
        env = "UPMIRROR_AUTO_PROMOTE",
        value_delimiter = ',',
        value_name = "CHANNEL=DURATION"
    )]
    pub auto_promote: Vec<String>,
    /// Also write Prometheus metrics to this file (node_exporter textfile collector).
    #[arg(long, env = "UPMIRROR_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Also publish each snapshot to this S3-compatible bucket, s3://BUCKET/PREFIX (repeat).
    #[arg(long = "publish-to", env = "UPMIRROR_PUBLISH_TO", value_delimiter = ',', value_name = "URL")]
    pub publish_to: Vec<String>,
    /// The S3 API endpoint of publish_to (Ceph RGW, Garage, MinIO) [default: AWS].
    #[arg(long, env = "UPMIRROR_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region of publish_to [default: us-east-1].
    #[arg(long, env = "UPMIRROR_S3_REGION", value_name = "NAME")]
    pub s3_region: Option<String>,
    /// An AWS-style ini file with aws_access_key_id and aws_secret_access_key [default: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY].
    #[arg(long, env = "UPMIRROR_S3_CREDENTIALS_FILE", value_name = "FILE")]
    pub s3_credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "What a sync accepts")]
pub struct PlanArgs {
    /// Refuse a plan that deletes more than this percentage of the published files [default: 10].
    #[arg(long, env = "UPMIRROR_MAX_DELETE_PERCENT", value_name = "P")]
    pub max_delete_percent: Option<f64>,
    /// Mirror only paths matching this glob (repeat; `*` within a segment, `**` across) [default: all].
    #[arg(long = "include", env = "UPMIRROR_INCLUDE", value_delimiter = ',', value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never mirror paths matching this glob (repeat); they are neither fetched nor deleted.
    #[arg(long = "exclude", env = "UPMIRROR_EXCLUDE", value_delimiter = ',', value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Of the paths PATTERN matches (e.g. releases/{series}/{version}/**), mirror only the newest N versions
    /// of each series (repeat as PATTERN=N).
    #[arg(long = "keep-versions", env = "UPMIRROR_KEEP_VERSIONS", value_delimiter = ',', value_name = "PATTERN=N")]
    pub keep_versions: Vec<String>,
    /// Free space kept beyond the bytes to download (e.g. 1GiB) [default: 64MiB].
    #[arg(long, env = "UPMIRROR_FREE_SPACE_MARGIN", value_name = "SIZE")]
    pub free_space_margin: Option<String>,
    /// Partial downloads kept for resuming at most this size in all, the oldest dropped first [default: no limit].
    #[arg(long, env = "UPMIRROR_MAX_PARTIAL_SIZE", value_name = "SIZE")]
    pub max_partial_size: Option<String>,
    /// Trust an upstream's validators (ETag, Last-Modified) at most this long [default: 24h].
    #[arg(long, env = "UPMIRROR_RECHECK_AFTER", value_name = "DURATION")]
    pub recheck_after: Option<String>,
    /// Before downloading a file, take one of the same size and sha256 from this local tree (repeat; read only).
    #[arg(long = "seed-from", env = "UPMIRROR_SEED_FROM", value_delimiter = ',', value_name = "DIR")]
    pub seed_from: Vec<PathBuf>,
    /// Refuse a listing generated longer ago than this: a frozen or replayed upstream [default: off].
    #[arg(long, env = "UPMIRROR_MAX_LISTING_AGE", value_name = "DURATION")]
    pub max_listing_age: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Upstreams and network")]
pub struct UpstreamArgs {
    /// Upstream base URL; repeat in order, primary first (env: comma-separated).
    #[arg(long = "upstream", env = "UPMIRROR_UPSTREAMS", value_delimiter = ',', value_name = "URL")]
    pub upstreams: Vec<String>,
    /// PEM file of the only CA roots to trust (the pin).
    #[arg(long, env = "UPMIRROR_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[arg(long, env = "UPMIRROR_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "UPMIRROR_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// Where the file list comes from [default: auto].
    #[arg(long, env = "UPMIRROR_LISTING", value_name = "KIND")]
    pub listing: Option<ListingKind>,
    /// The time zone (IANA name, e.g. America/New_York) a directory listing shows dates in,
    /// daylight saving included [default: found from one file's Last-Modified].
    #[arg(long, env = "UPMIRROR_LISTING_TIMEZONE", value_name = "ZONE")]
    pub listing_timezone: Option<String>,
    /// Name of the manifest file on the upstream [default: upmirror-manifest.json].
    #[arg(long, env = "UPMIRROR_MANIFEST_NAME", value_name = "NAME")]
    pub manifest_name: Option<String>,
    /// Permit plain http:// upstreams.
    #[arg(long, env = "UPMIRROR_ALLOW_PLAIN_HTTP", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub allow_plain_http: Option<bool>,
    /// Offer HTTP/2 and carry a host's requests over a few HTTP/2 connections when it accepts [default: true].
    #[arg(long, env = "UPMIRROR_HTTP2", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub http2: Option<bool>,
    /// Downloads in flight at once, fixed [default: adaptive, per host up to max_connections_per_host].
    #[arg(long, env = "UPMIRROR_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Connections to one upstream host at most (over HTTP/2, up to 50 requests each) [default: 64].
    #[arg(long, env = "UPMIRROR_MAX_CONNECTIONS_PER_HOST", value_name = "N")]
    pub max_connections_per_host: Option<usize>,
    /// Files a crawl asks again with a HEAD per run when their listing shows neither size nor date,
    /// in turn; the rest keep what was published until their turn [default: 10000].
    #[arg(long, env = "UPMIRROR_RECHECK_BUDGET", value_name = "N")]
    pub recheck_budget: Option<usize>,
    /// Attempts per file beyond the first, across all upstreams [default: 5].
    #[arg(long, env = "UPMIRROR_RETRIES", value_name = "N")]
    pub retries: Option<u32>,
    /// First wait before a file is retried, doubled each round [default: 1s].
    #[arg(long, env = "UPMIRROR_RETRY_BACKOFF", value_name = "DURATION")]
    pub retry_backoff: Option<String>,
    /// Give up a TCP + TLS connection after this long [default: 15s].
    #[arg(long, env = "UPMIRROR_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Give up a request that sends no byte for this long [default: 60s].
    #[arg(long, env = "UPMIRROR_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Abort a transfer slower than this (bytes/s, e.g. 10KiB) for low_speed_time [default: 1KiB].
    #[arg(long, env = "UPMIRROR_LOW_SPEED_LIMIT", value_name = "RATE")]
    pub low_speed_limit: Option<String>,
    /// The window of the low-speed check [default: 60s].
    #[arg(long, env = "UPMIRROR_LOW_SPEED_TIME", value_name = "DURATION")]
    pub low_speed_time: Option<String>,
    /// Fail the whole run after this long [default: 12h].
    #[arg(long, env = "UPMIRROR_RUN_TIMEOUT", value_name = "DURATION")]
    pub run_timeout: Option<String>,
    /// A minisign public key (file, or the key itself) a listing must be signed by; repeat
    /// for a rotation (env: comma-separated) [default: none, no signature needed].
    #[arg(long = "trusted-key", env = "UPMIRROR_TRUSTED_KEYS", value_delimiter = ',', value_name = "KEY")]
    pub trusted_keys: Vec<String>,
    /// OpenPGP public keys (a file, armored or binary; repeat) a crawl's SHA256SUMS must be signed by
    /// [default: none, no signature needed].
    #[arg(long = "openpgp-keyring", env = "UPMIRROR_OPENPGP_KEYRING", value_delimiter = ',', value_name = "FILE")]
    pub openpgp_keyring: Vec<PathBuf>,
    /// HTTP(S) proxy for every upstream (CONNECT), e.g. http://proxy.corp:3128
    /// [default: HTTPS_PROXY / NO_PROXY from the environment].
    #[arg(long, env = "UPMIRROR_PROXY", value_name = "URL")]
    pub proxy: Option<String>,
    /// PEM roots for an https:// proxy's own certificate; they vouch for the proxy's name alone, never for an upstream.
    #[arg(long, env = "UPMIRROR_PROXY_CA_FILE", value_name = "FILE")]
    pub proxy_ca_file: Option<PathBuf>,
    /// A file holding the proxy's `user:password` on one line, kept out of the proxy URL.
    #[arg(long, env = "UPMIRROR_PROXY_CREDENTIALS_FILE", value_name = "FILE")]
    pub proxy_credentials_file: Option<PathBuf>,
    /// Cap on download speed, shared by all transfers (20MiB/s), or a local-time timetable ("08:00,4MiB/s 18:00,off") [default: none].
    #[arg(long, env = "UPMIRROR_BANDWIDTH_LIMIT", value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
}

/// Every key a command took, each group defaulted where the command has none.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub root: RootArgs,
    pub publish: PublishArgs,
    pub plan: PlanArgs,
    pub upstream: UpstreamArgs,
}
