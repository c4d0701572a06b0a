//! The portable bosun snapshot format (`BOSUNSNAP1`), encoded and decoded for one tenant's keys.
//!
//! `bosun-store` keeps its codec private, so this follows the layout it documents: magic
//! `BOSUNSNAP1`, then revision, compaction point and next lease id (i64 each), lease count and key
//! count (u64), the leases (id i64, TTL in ms u64), the keys (key length u32, key, value length
//! u32, value, create revision, mod revision, version, lease id or 0, i64 each), and a CRC-32 of
//! everything before it; all little endian. A tenant's snapshot therefore restores into any
//! backend (a whole `MemoryStorage`, say) and any backend's snapshot restores into a tenant.

use std::time::Duration;

use bosun_store::storage::{KeyValue, LeaseId, Revision, StorageError};
use bytes::Bytes;

const MAGIC: &[u8; 10] = b"BOSUNSNAP1";

/// The content of a snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// The revision the keys were read at.
    pub revision: Revision,
    /// The compaction point (`0` when unknown).
    pub compacted: Revision,
    /// The next lease id a store restored from this snapshot hands out.
    pub next_lease: LeaseId,
    /// The leases with their TTLs.
    pub leases: Vec<(LeaseId, Duration)>,
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
}

fn len32(n: usize, what: &str) -> Result<[u8; 4], StorageError> {
    u32::try_from(n)
        .map(u32::to_le_bytes)
        .map_err(|_| StorageError::InvalidArgument(format!("{what} of {n} bytes is too large for a snapshot")))
}

/// Encodes a snapshot.
pub(super) fn encode(s: &Snapshot) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(64 + s.kvs.iter().map(|kv| kv.key.len() + kv.value.len() + 40).sum::<usize>());
    out.extend_from_slice(MAGIC);
    for v in [s.revision, s.compacted, s.next_lease] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(s.leases.len() as u64).to_le_bytes());
    out.extend_from_slice(&(s.kvs.len() as u64).to_le_bytes());
    for (id, ttl) in &s.leases {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).to_le_bytes());
    }
    for kv in &s.kvs {
        out.extend_from_slice(&len32(kv.key.len(), "key")?);
        out.extend_from_slice(kv.key.as_bytes());
        out.extend_from_slice(&len32(kv.value.len(), "value")?);
        out.extend_from_slice(&kv.value);
        for v in [kv.create_revision, kv.mod_revision, kv.version, kv.lease.unwrap_or(0)] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StorageError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| corrupt("snapshot is truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn i64(&mut self) -> Result<i64, StorageError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, StorageError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn len(&mut self) -> Result<usize, StorageError> {
        Ok(u32::from_le_bytes(self.arr()?) as usize)
    }
}

fn corrupt(msg: &str) -> StorageError {
    StorageError::Corrupt(msg.to_owned())
}

/// Decodes a snapshot, checking its magic and checksum first.
pub(super) fn decode(bytes: Bytes) -> Result<Snapshot, StorageError> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a bosun snapshot"));
    }
    let body = bytes.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[body..]);
    if crc32fast::hash(&bytes[..body]) != u32::from_le_bytes(crc) {
        return Err(corrupt("snapshot checksum mismatch"));
    }
    let mut r = Reader { buf: &bytes[..body], pos: MAGIC.len() };
    let mut s = Snapshot { revision: r.i64()?, compacted: r.i64()?, next_lease: r.i64()?, ..Snapshot::default() };
    let leases = r.u64()?;
    let keys = r.u64()?;
    for _ in 0..leases {
        let id = r.i64()?;
        s.leases.push((id, Duration::from_millis(r.u64()?)));
    }
    for _ in 0..keys {
        let n = r.len()?;
        let key = std::str::from_utf8(r.take(n)?).map_err(|_| corrupt("snapshot key is not UTF-8"))?.into();
        let n = r.len()?;
        let start = r.pos;
        r.take(n)?;
        let value = bytes.slice(start..start + n);
        let (create_revision, mod_revision, version) = (r.i64()?, r.i64()?, r.i64()?);
        let lease = Some(r.i64()?).filter(|l| *l != 0);
        s.kvs.push(KeyValue { key, value, create_revision, mod_revision, version, lease });
    }
    if r.pos != body {
        return Err(corrupt("trailing bytes after the snapshot"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_a_flipped_bit_is_refused() {
        let s = Snapshot {
            revision: 9,
            compacted: 2,
            next_lease: 8,
            leases: vec![(7, Duration::from_secs(60))],
            kvs: vec![KeyValue {
                key: "/a".into(),
                value: Bytes::from_static(b"v"),
                create_revision: 3,
                mod_revision: 4,
                version: 2,
                lease: Some(7),
            }],
        };
        let bytes = encode(&s).expect("encode");
        assert_eq!(decode(Bytes::from(bytes.clone())).expect("decode"), s);
        let mut bad = bytes;
        bad[14] ^= 1;
        assert!(matches!(decode(Bytes::from(bad)), Err(StorageError::Corrupt(_))));
    }
}
