//! The portable bosun snapshot format, written by every backend's `snapshot` and read by every
//! backend's `restore` (so a snapshot taken from etcd restores into the durable backend).
//!
//! Layout (little endian): magic `BOSUNSNAP1`, then revision, compaction point and next lease id
//! (i64 each), lease count and key count (u64), the leases (id i64, TTL in ms u64), the keys
//! (key length u32, key, value length u32, value, create revision, mod revision, version, lease
//! id or 0, i64 each), and a CRC-32 of everything before it.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::mvcc::SnapshotData;
use super::{KeyValue, Result, SnapshotInfo, StorageError};

const MAGIC: &[u8; 10] = b"BOSUNSNAP1";
const CHUNK: usize = 1 << 20;

/// Incremental encoder: appends to a buffer while hashing it.
struct Encoder {
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    written: u64,
}

impl Encoder {
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn take(&mut self) -> Vec<u8> {
        self.crc.update(&self.buf);
        self.written += self.buf.len() as u64;
        std::mem::take(&mut self.buf)
    }
}

fn len32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StorageError::InvalidArgument(format!("{what} of {n} bytes is too large for a snapshot")))
}

/// Encodes `data` in chunks, handing each to `sink`.
fn encode_chunks(data: &SnapshotData, mut sink: impl FnMut(Vec<u8>) -> Result<()>) -> Result<SnapshotInfo> {
    let mut e = Encoder { buf: Vec::with_capacity(CHUNK + 4096), crc: crc32fast::Hasher::new(), written: 0 };
    e.bytes(MAGIC);
    e.i64(data.revision);
    e.i64(data.compacted);
    e.i64(data.next_lease);
    e.u64(data.leases.len() as u64);
    e.u64(data.kvs.len() as u64);
    for (id, ttl) in &data.leases {
        e.i64(*id);
        e.u64(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    }
    for kv in &data.kvs {
        e.u32(len32(kv.key.len(), "key")?);
        e.bytes(kv.key.as_bytes());
        e.u32(len32(kv.value.len(), "value")?);
        e.bytes(&kv.value);
        e.i64(kv.create_revision);
        e.i64(kv.mod_revision);
        e.i64(kv.version);
        e.i64(kv.lease.unwrap_or(0));
        if e.buf.len() >= CHUNK {
            sink(e.take())?;
        }
    }
    let chunk = e.take();
    sink(chunk)?;
    let crc = e.crc.clone().finalize();
    sink(crc.to_le_bytes().to_vec())?;
    Ok(SnapshotInfo { revision: data.revision, keys: data.kvs.len() as u64, bytes: e.written + 4 })
}

/// Writes a snapshot to a blocking writer.
pub(crate) fn write_sync(data: &SnapshotData, w: &mut impl std::io::Write) -> Result<SnapshotInfo> {
    encode_chunks(data, |chunk| Ok(w.write_all(&chunk)?))
}

/// Writes a snapshot to an async writer.
pub(crate) async fn write_async(data: &SnapshotData, w: &mut (dyn AsyncWrite + Send + Unpin)) -> Result<SnapshotInfo> {
    // Encoding is CPU work on data already in memory; collect chunks, then write each.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let data = data.clone();
    let encoder = tokio::task::spawn_blocking(move || encode_chunks(&data, |chunk| tx.blocking_send(chunk).map_err(|_| closed())));
    while let Some(chunk) = rx.recv().await {
        w.write_all(&chunk).await?;
    }
    w.flush().await?;
    encoder.await.map_err(|e| StorageError::Backend(Box::new(e)))?
}

fn closed() -> StorageError {
    StorageError::Closed("snapshot writer went away".into())
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| StorageError::Corrupt("snapshot is truncated".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
}

/// Decodes a whole snapshot.
pub(crate) fn decode(bytes: Bytes) -> Result<SnapshotData> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StorageError::Corrupt("not a bosun snapshot".into()));
    }
    let body = bytes.len() - 4;
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[body..]);
    if crc32fast::hash(&bytes[..body]) != u32::from_le_bytes(crc_bytes) {
        return Err(StorageError::Corrupt("snapshot checksum mismatch".into()));
    }
    let mut d = Decoder { buf: &bytes[..body], pos: MAGIC.len() };
    let revision = d.i64()?;
    let compacted = d.i64()?;
    let next_lease = d.i64()?;
    let leases_n = d.u64()?;
    let kvs_n = d.u64()?;
    let mut leases = Vec::new();
    for _ in 0..leases_n {
        let id = d.i64()?;
        let ttl = Duration::from_millis(d.u64()?);
        leases.push((id, ttl));
    }
    let mut kvs = Vec::new();
    for _ in 0..kvs_n {
        let klen = d.u32()? as usize;
        let key = std::str::from_utf8(d.take(klen)?).map_err(|_| StorageError::Corrupt("snapshot key is not UTF-8".into()))?.into();
        let vlen = d.u32()? as usize;
        let start = d.pos;
        d.take(vlen)?;
        let value = bytes.slice(start..start + vlen);
        let create_revision = d.i64()?;
        let mod_revision = d.i64()?;
        let version = d.i64()?;
        let lease = Some(d.i64()?).filter(|l| *l != 0);
        kvs.push(KeyValue { key, value, create_revision, mod_revision, version, lease });
    }
    if d.pos != body {
        return Err(StorageError::Corrupt("trailing bytes after the snapshot".into()));
    }
    Ok(SnapshotData { revision, compacted, next_lease, kvs, leases })
}

/// Reads and decodes a snapshot from an async reader.
pub(crate) async fn read_async(r: &mut (dyn AsyncRead + Send + Unpin)) -> Result<SnapshotData> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).await?;
    decode(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_detects_corruption() {
        let data = SnapshotData {
            revision: 7,
            compacted: 3,
            next_lease: 5,
            kvs: vec![KeyValue {
                key: "/a".into(),
                value: Bytes::from_static(b"v"),
                create_revision: 2,
                mod_revision: 6,
                version: 3,
                lease: Some(4),
            }],
            leases: vec![(4, Duration::from_secs(9))],
        };
        let mut out = Vec::new();
        let info = write_sync(&data, &mut out).expect("write");
        assert_eq!(info.bytes, out.len() as u64);
        let back = decode(Bytes::from(out.clone())).expect("decode");
        assert_eq!(back.kvs, data.kvs);
        assert_eq!(back.leases, data.leases);
        assert_eq!((back.revision, back.compacted, back.next_lease), (7, 3, 5));
        let n = out.len();
        out[n / 2] ^= 1;
        assert!(matches!(decode(Bytes::from(out)), Err(StorageError::Corrupt(_))));
    }
}
