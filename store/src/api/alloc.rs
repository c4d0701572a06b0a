//! Service ClusterIP and NodePort allocation. Each allocated value is a storage key created only
//! if absent, so that no value is handed out twice, across restarts and across API servers.

use crate::storage::{RangeRequest, Storage, StorageError};
use bosun_core::{Error, FieldError, Result};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Why an allocator's range could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid range {0:?}: expected an IPv4 CIDR such as 10.96.0.0/12")]
pub struct ParseRangeError(pub String);

/// A range of values handed out one by one: offsets `0..size` above `base`.
#[derive(Debug)]
pub(crate) struct Allocator {
    /// Storage prefix of the allocation keys.
    prefix: &'static str,
    kind: Kind,
    base: u32,
    size: u32,
    used: Mutex<HashSet<u32>>,
    next: Mutex<u32>,
    loaded: OnceCell<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ip,
    Port,
}

/// Parses `a.b.c.d/n` into the first usable address and the number of usable addresses.
pub(crate) fn parse_cidr(cidr: &str) -> std::result::Result<(u32, u32), ParseRangeError> {
    let err = || ParseRangeError(cidr.to_owned());
    let (ip, bits) = cidr.split_once('/').ok_or_else(err)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
    let bits: u32 = bits.parse().map_err(|_| err())?;
    if !(8..=30).contains(&bits) {
        return Err(err());
    }
    let mask = u32::MAX << (32 - bits);
    let network = u32::from(ip) & mask;
    let total = 1u32 << (32 - bits);
    // Skip the network and broadcast addresses.
    Ok((network + 1, total - 2))
}

impl Allocator {
    /// Cluster IPs from a CIDR.
    pub(crate) fn ips(cidr: &str) -> std::result::Result<Self, ParseRangeError> {
        let (base, size) = parse_cidr(cidr)?;
        Ok(Self::new("/registry/ranges/serviceips/", Kind::Ip, base, size))
    }

    /// Node ports from an inclusive range.
    pub(crate) fn ports(first: u16, last: u16) -> Self {
        let size = u32::from(last.max(first)) - u32::from(first) + 1;
        Self::new("/registry/ranges/servicenodeports/", Kind::Port, u32::from(first), size)
    }

    fn new(prefix: &'static str, kind: Kind, base: u32, size: u32) -> Self {
        Self {
            prefix,
            kind,
            base,
            size,
            used: Mutex::new(HashSet::new()),
            next: Mutex::new(fastrand::u32(0..size.max(1))),
            loaded: OnceCell::new(),
        }
    }

    fn show(&self, value: u32) -> String {
        match self.kind {
            Kind::Ip => Ipv4Addr::from(value).to_string(),
            Kind::Port => value.to_string(),
        }
    }

    /// Parses a value of this allocator's kind.
    pub(crate) fn parse(&self, s: &str) -> Option<u32> {
        match self.kind {
            Kind::Ip => s.parse::<Ipv4Addr>().ok().map(u32::from),
            Kind::Port => s.parse().ok(),
        }
    }

    /// Whether a value lies in the range.
    pub(crate) fn contains(&self, value: u32) -> bool {
        value >= self.base && value - self.base < self.size
    }

    fn key(&self, value: u32) -> String {
        format!("{}{}", self.prefix, self.show(value))
    }

    async fn load(&self, storage: &Arc<dyn Storage>) -> Result<()> {
        self.loaded
            .get_or_try_init(|| async {
                let resp = storage.range(RangeRequest::prefix(self.prefix)).await.map_err(super::codec::storage_error)?;
                let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for kv in resp.kvs {
                    if let Some(v) = kv.key.strip_prefix(self.prefix).and_then(|s| self.parse(s)) {
                        used.insert(v);
                    }
                }
                Ok::<(), Error>(())
            })
            .await
            .map(|_| ())
    }

    /// Allocates `want` (a specific value) or any free value for `owner`; the value as text.
    pub(crate) async fn allocate(&self, storage: &Arc<dyn Storage>, want: Option<u32>, owner: &str, field: &str) -> Result<String> {
        self.load(storage).await?;
        if let Some(v) = want {
            if !self.contains(v) {
                let detail = match self.kind {
                    Kind::Ip => format!("provided IP is not in the valid range. The range of valid IPs is {}", self.describe()),
                    Kind::Port => format!("provided port is not in the valid range. The range of valid ports is {}", self.describe()),
                };
                return Err(Error::invalid("", "Service", owner, vec![FieldError::invalid(field, self.show(v), detail)]));
            }
            return match storage.create(&self.key(v), owner.as_bytes().to_vec().into(), None).await {
                Ok(_) => {
                    self.mark(v, true);
                    Ok(self.show(v))
                }
                Err(StorageError::AlreadyExists { .. }) => {
                    self.mark(v, true);
                    let what = if self.kind == Kind::Ip { "IP" } else { "port" };
                    Err(Error::invalid(
                        "",
                        "Service",
                        owner,
                        vec![FieldError::invalid(field, self.show(v), format!("provided {what} is already allocated"))],
                    ))
                }
                Err(e) => Err(super::codec::storage_error(e)),
            };
        }
        for _ in 0..self.size.min(4096) {
            let Some(candidate) = self.candidate() else { break };
            match storage.create(&self.key(candidate), owner.as_bytes().to_vec().into(), None).await {
                Ok(_) => return Ok(self.show(candidate)),
                Err(StorageError::AlreadyExists { .. }) => continue,
                Err(e) => {
                    self.mark(candidate, false);
                    return Err(super::codec::storage_error(e));
                }
            }
        }
        let what = if self.kind == Kind::Ip { "serviceIP" } else { "nodePort" };
        Err(Error::internal(format!("failed to allocate a {what}: range is full")))
    }

    /// Picks a free value and marks it used.
    fn candidate(&self) -> Option<u32> {
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if used.len() as u64 >= u64::from(self.size) {
            return None;
        }
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..self.size {
            let v = self.base + *next;
            *next = (*next + 1) % self.size;
            if used.insert(v) {
                return Some(v);
            }
        }
        None
    }

    fn mark(&self, value: u32, used: bool) {
        let mut set = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if used {
            set.insert(value);
        } else {
            set.remove(&value);
        }
    }

    /// Releases a value (text form); unknown or out-of-range values are ignored.
    pub(crate) async fn release(&self, storage: &Arc<dyn Storage>, value: &str) {
        let Some(v) = self.parse(value).filter(|v| self.contains(*v)) else { return };
        match storage.delete(&self.key(v), None).await {
            Ok(_) | Err(StorageError::NotFound { .. }) => self.mark(v, false),
            Err(error) => tracing::warn!(%error, value, "release allocation"),
        }
    }

    fn describe(&self) -> String {
        match self.kind {
            Kind::Ip => format!("{}-{}", self.show(self.base), self.show(self.base + self.size - 1)),
            Kind::Port => format!("{}-{}", self.base, self.base + self.size - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_skip_network_and_broadcast() {
        assert_eq!(parse_cidr("10.96.0.0/12"), Ok((u32::from(Ipv4Addr::new(10, 96, 0, 1)), (1 << 20) - 2)));
        assert!(parse_cidr("10.96.0.0").is_err());
        assert!(parse_cidr("nonsense/12").is_err());
    }
}
