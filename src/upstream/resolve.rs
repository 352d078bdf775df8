//! Host names to addresses through the system's resolver (`getaddrinfo`,
//! as std does, so `/etc/hosts` and nsswitch apply), with the answer typed:
//! a name that does not exist is [`NoSuchHost`], which no retry can fix.

use std::net::SocketAddr;

use dns_lookup::{AddrInfoHints, LookupErrorKind, SockType, getaddrinfo};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The resolver says the name does not exist (or has no address).
#[derive(Debug, thiserror::Error)]
#[error("no such host {0}: the name does not resolve; check the upstream URL")]
pub struct NoSuchHost(pub String);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The system's resolver, run on the blocking pool.
pub(super) struct System;

impl Resolve for System {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found =
                tokio::task::spawn_blocking(move || lookup(&host)).await.map_err(|e| Box::new(e) as BoxError)?;
            Ok(Box::new(found?.into_iter()) as Addrs)
        })
    }
}

fn lookup(host: &str) -> Result<Vec<SocketAddr>, BoxError> {
    let hints = AddrInfoHints { socktype: SockType::Stream.into(), ..AddrInfoHints::default() };
    match getaddrinfo(Some(host), None, Some(hints)) {
        Ok(found) => Ok(found.filter_map(Result::ok).map(|a| a.sockaddr).collect()),
        Err(e) if matches!(e.kind(), LookupErrorKind::NoName | LookupErrorKind::NoData) => {
            Err(Box::new(NoSuchHost(crate::output::quote(host, 200))))
        }
        Err(e) => Err(Box::new(std::io::Error::from(e))),
    }
}
