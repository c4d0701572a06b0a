//! The write-ahead log: numbered segment files of checksummed records.
//!
//! A record is `[payload length u32][CRC-32 of payload u32][payload]`; the payload starts with the
//! record's log sequence number (u64) and a tag. A record whose length or checksum does not hold
//! ends the log: at the tail of the last segment it is a write torn by a crash (and is cut off),
//! anywhere else it is corruption. Segments are preallocated, so their data ends at the first
//! all-zero record header.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::storage::mvcc::Batch;
use crate::storage::{LeaseId, Result, Revision, StorageError, WatchEvent};

const TAG_BATCH: u8 = 1;
const TAG_LEASE_GRANT: u8 = 2;
const TAG_LEASE_REVOKE: u8 = 3;
const TAG_COMPACT: u8 = 4;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

pub(crate) use crate::storage::mvcc::LoggedWrite as Write1;

/// A decoded log record.
#[derive(Debug)]
pub(crate) enum Record {
    /// The writes of one revision.
    Batch { revision: Revision, writes: Vec<Write1> },
    /// A lease was granted.
    LeaseGrant { id: LeaseId, ttl: Duration },
    /// A lease was revoked, deleting its keys at `revision` (0 when it had none).
    LeaseRevoke { id: LeaseId, revision: Revision, writes: Vec<Write1> },
    /// History up to `revision` was compacted.
    Compact { revision: Revision },
}

/// Appends framed records to a buffer.
pub(crate) struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Encoder<'a> {
    fn begin(out: &'a mut Vec<u8>, lsn: u64, tag: u8) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0u8; 8]);
        out.extend_from_slice(&lsn.to_le_bytes());
        out.push(tag);
        Self { out, start }
    }
    fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Keys and values are bounded well below 4 GiB by the callers.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.out.extend_from_slice(b);
    }
    fn batch(&mut self, batch: Option<&Batch>) {
        let Some(batch) = batch else {
            self.i64(0);
            self.u32(0);
            return;
        };
        self.i64(batch.revision);
        self.u32(u32::try_from(batch.events.len()).unwrap_or(u32::MAX));
        for e in &batch.events {
            match e {
                WatchEvent::Put { kv, .. } => {
                    self.out.push(OP_PUT);
                    self.bytes(kv.key.as_bytes());
                    self.bytes(&kv.value);
                    self.i64(kv.lease.unwrap_or(0));
                }
                WatchEvent::Delete { key, .. } => {
                    self.out.push(OP_DELETE);
                    self.bytes(key.as_bytes());
                }
                WatchEvent::Progress { .. } => {}
            }
        }
    }
    fn finish(self) {
        let payload = &self.out[self.start + 8..];
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(payload);
        self.out[self.start..self.start + 4].copy_from_slice(&len.to_le_bytes());
        self.out[self.start + 4..self.start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Encodes a batch record.
pub(crate) fn encode_batch(out: &mut Vec<u8>, lsn: u64, batch: &Batch) {
    let mut e = Encoder::begin(out, lsn, TAG_BATCH);
    e.batch(Some(batch));
    e.finish();
}

/// Encodes a lease grant.
pub(crate) fn encode_lease_grant(out: &mut Vec<u8>, lsn: u64, id: LeaseId, ttl: Duration) {
    let mut e = Encoder::begin(out, lsn, TAG_LEASE_GRANT);
    e.i64(id);
    e.i64(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    e.finish();
}

/// Encodes a lease revocation with the deletions it caused.
pub(crate) fn encode_lease_revoke(out: &mut Vec<u8>, lsn: u64, id: LeaseId, batch: Option<&Batch>) {
    let mut e = Encoder::begin(out, lsn, TAG_LEASE_REVOKE);
    e.i64(id);
    e.batch(batch);
    e.finish();
}

/// Encodes a compaction.
pub(crate) fn encode_compact(out: &mut Vec<u8>, lsn: u64, revision: Revision) {
    let mut e = Encoder::begin(out, lsn, TAG_COMPACT);
    e.i64(revision);
    e.finish();
}

struct Decoder<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Option<usize> {
        let start = self.pos;
        let end = start.checked_add(n).filter(|e| *e <= self.end)?;
        self.pos = end;
        Some(start)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| self.buf[s])
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[s..s + N]);
        Some(a)
    }
    fn i64(&mut self) -> Option<i64> {
        self.arr().map(i64::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.arr().map(u64::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.arr().map(u32::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        Some(self.buf.slice(s..s + n))
    }
    fn batch(&mut self) -> Option<(Revision, Vec<Write1>)> {
        let revision = self.i64()?;
        let n = self.u32()?;
        let mut writes = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let op = self.u8()?;
            let key = self.bytes()?;
            let key: Arc<str> = std::str::from_utf8(&key).ok()?.into();
            match op {
                OP_PUT => {
                    let value = self.bytes()?;
                    let lease = Some(self.i64()?).filter(|l| *l != 0);
                    writes.push((key, Some((value, lease))));
                }
                OP_DELETE => writes.push((key, None)),
                _ => return None,
            }
        }
        Some((revision, writes))
    }
}

/// The records of one segment and where its valid part ends.
pub(crate) struct SegmentContents {
    pub records: Vec<(u64, Record)>,
    pub valid_len: u64,
    pub torn: bool,
}

/// Reads every valid record of a segment.
pub(crate) fn read_segment(path: &Path) -> Result<SegmentContents> {
    let buf = Bytes::from(fs::read(path)?);
    let mut pos = 0usize;
    let mut records = Vec::new();
    loop {
        // The end of the data: the end of the file, or the zeros of preallocated space.
        if pos == buf.len() || (buf.len() - pos >= 8 && buf[pos..pos + 8] == [0u8; 8]) {
            return Ok(SegmentContents { records, valid_len: pos as u64, torn: false });
        }
        let torn = SegmentContents { records: Vec::new(), valid_len: pos as u64, torn: true };
        if buf.len() - pos < 8 {
            return Ok(SegmentContents { records, ..torn });
        }
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        let start = pos + 8;
        let Some(end) = start.checked_add(len).filter(|e| *e <= buf.len()) else {
            return Ok(SegmentContents { records, ..torn });
        };
        if crc32fast::hash(&buf[start..end]) != crc {
            return Ok(SegmentContents { records, ..torn });
        }
        let mut d = Decoder { buf: &buf, pos: start, end };
        let record = (|| {
            let lsn = d.u64()?;
            let rec = match d.u8()? {
                TAG_BATCH => {
                    let (revision, writes) = d.batch()?;
                    Record::Batch { revision, writes }
                }
                TAG_LEASE_GRANT => {
                    let id = d.i64()?;
                    let ttl = Duration::from_millis(u64::try_from(d.i64()?).ok()?);
                    Record::LeaseGrant { id, ttl }
                }
                TAG_LEASE_REVOKE => {
                    let id = d.i64()?;
                    let (revision, writes) = d.batch()?;
                    Record::LeaseRevoke { id, revision, writes }
                }
                TAG_COMPACT => Record::Compact { revision: d.i64()? },
                _ => return None,
            };
            (d.pos == end).then_some((lsn, rec))
        })();
        match record {
            Some(r) => records.push(r),
            // A record with a valid checksum that does not parse was written by something else.
            None => return Err(StorageError::Corrupt(format!("undecodable record in {} at offset {pos}", path.display()))),
        }
        pos = end;
    }
}

/// The open tail segment the committer appends to.
pub(crate) struct Segment {
    pub seq: u64,
    pub file: File,
    pub len: u64,
}

/// The path of segment `seq`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

/// Lists the segments in a directory, in order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name.strip_prefix("wal-").and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse().ok()) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Creates a new empty segment and makes its directory entry durable.
pub(crate) fn create_segment(dir: &Path, seq: u64, size: u64) -> Result<Segment> {
    let file = File::options().create_new(true).write(true).open(segment_path(dir, seq))?;
    // Allocate the whole segment up front: appends then overwrite allocated space instead of
    // growing the file, so `fdatasync` need not commit a size change to the filesystem journal
    // (shared with every other process's metadata) on each group. Filesystems without
    // `fallocate` simply grow the file.
    if rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size).is_ok() {
        file.sync_all()?;
    }
    sync_dir(dir)?;
    Ok(Segment { seq, file, len: 0 })
}

impl Segment {
    /// Writes at the end of the log and fsyncs the data.
    pub fn append_sync(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
