//! Integration tests: the real binary against a real HTTPS upstream started
//! in the test (certificates made here), or a `file://` upstream.

mod airgap;
mod apt;
mod bucket;
mod channels;
mod cli;
mod consistency;
mod crash;
mod crawl;
mod delta;
mod failures;
mod fleet;
mod hostile;
mod listings;
mod network;
mod openpgp;
mod operator;
mod seeds;
mod segments;
mod serve;
mod style;
mod support;
mod sync;
mod tls;
mod trust;
mod versions;
