//! Container log files in the CRI format (`<RFC 3339 time> <stream> <F|P> <text>`), written from a
//! container's pipes and read back with tail, since, timestamps, byte limits and follow.

use crate::cri::{LogByteStream, LogOptions};
use crate::error::{Result, RuntimeError};
use bytes::Bytes;
use jiff::Timestamp;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The longest line kept as one record; longer lines are split into partial (`P`) records.
const MAX_RECORD: usize = 16 * 1024;

/// Copies a container's output pipe into its log file, one record per line, until the pipe closes.
pub async fn pump(reader: impl AsyncRead + Unpin + Send, stream: &'static str, path: PathBuf) {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot open log file");
            return;
        }
    };
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = match (&mut reader).take(MAX_RECORD as u64).read_until(b'\n', &mut buf).await {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let (tag, text) = match buf.strip_suffix(b"\n") {
            Some(text) => ("F", text),
            None if n < MAX_RECORD => ("F", &buf[..]),
            None => ("P", &buf[..]),
        };
        let mut record = Vec::with_capacity(text.len() + 48);
        let _ = write!(record, "{} {} {} ", format_time(Timestamp::now()), stream, tag);
        record.extend_from_slice(text);
        record.push(b'\n');
        if let Err(error) = file.write_all(&record) {
            tracing::warn!(%error, "cannot write log record");
            break;
        }
    }
}

use tokio::io::AsyncReadExt as _;

/// Formats a time the way log records carry it (nanosecond precision, UTC).
pub fn format_time(ts: Timestamp) -> String {
    format!("{ts:.9}")
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When it was written.
    pub time: Timestamp,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Whether the line continues in the next record.
    pub partial: bool,
    /// The text without its newline.
    pub text: Vec<u8>,
}

/// Parses one record line (without its newline); `None` for a malformed one.
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse::<Timestamp>().ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let partial = parts.next()? == b"P";
    let text = parts.next().unwrap_or_default().to_vec();
    Some(LogRecord { time, stream, partial, text })
}

/// Appends one record to a log file (for backends that produce output themselves, like the fake).
pub fn append_record(path: &Path, stream: &str, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| RuntimeError::io(format!("open log {}", path.display()), e))?;
    writeln!(file, "{} {} F {}", format_time(Timestamp::now()), stream, text)
        .map_err(|e| RuntimeError::io(format!("write log {}", path.display()), e))
}

fn render(records: &[LogRecord], options: &LogOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        if options.timestamps {
            out.extend_from_slice(format_time(r.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&r.text);
        if !r.partial {
            out.push(b'\n');
        }
    }
    out
}

fn parse_all(data: &[u8], since: Option<Timestamp>) -> Vec<LogRecord> {
    data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).filter_map(parse_record).filter(|r| since.is_none_or(|s| r.time >= s)).collect()
}

/// Reads a log file as a byte stream. With `follow`, keeps polling for new records until
/// `finished()` says the writer is done and the file has been read to its end.
pub fn read(path: PathBuf, options: LogOptions, finished: Arc<dyn Fn() -> bool + Send + Sync>) -> LogByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(16);
    tokio::spawn(async move {
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                let _ = tx.send(Err(RuntimeError::io(format!("read log {}", path.display()), e))).await;
                return;
            }
        };
        // Only whole lines count; a trailing fragment is re-read when following.
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut offset = complete as u64;
        let mut records = parse_all(&data[..complete], options.since);
        if let Some(tail) = options.tail_lines {
            let keep = usize::try_from(tail).unwrap_or(usize::MAX);
            let skip = records.len().saturating_sub(keep);
            records.drain(..skip);
        }
        let mut budget = options.limit_bytes.unwrap_or(u64::MAX);
        let send = |budget: &mut u64, chunk: Vec<u8>| -> Option<Bytes> {
            if *budget == 0 || chunk.is_empty() {
                return None;
            }
            let take = usize::try_from(*budget).unwrap_or(usize::MAX).min(chunk.len());
            *budget -= take as u64;
            Some(Bytes::copy_from_slice(&chunk[..take]))
        };
        if let Some(b) = send(&mut budget, render(&records, &options))
            && tx.send(Ok(b)).await.is_err()
        {
            return;
        }
        if !options.follow {
            return;
        }
        loop {
            let done = finished();
            let data = match read_from(&path, offset).await {
                Ok(d) => d,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if complete > 0 {
                offset += complete as u64;
                let records = parse_all(&data[..complete], None);
                if let Some(b) = send(&mut budget, render(&records, &options))
                    && tx.send(Ok(b)).await.is_err()
                {
                    return;
                }
                if budget == 0 {
                    return;
                }
            } else if done {
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    use tokio::io::AsyncSeekExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RuntimeError::io(format!("open log {}", path.display()), e)),
    };
    file.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| RuntimeError::io("seek log", e))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).await.map_err(|e| RuntimeError::io("read log", e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn collect(mut s: LogByteStream) -> String {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.expect("log chunk"));
        }
        String::from_utf8(out).expect("utf8")
    }

    #[tokio::test]
    async fn records_round_trip_with_tail_timestamps_and_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let (mut w, r) = tokio::io::duplex(1024);
        let pump = tokio::spawn(pump(r, "stdout", path.clone()));
        tokio::io::AsyncWriteExt::write_all(&mut w, b"one\ntwo\nthree\nfour").await.expect("write");
        drop(w);
        pump.await.expect("pump");
        let done: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(|| true);
        let all = collect(read(path.clone(), LogOptions::default(), done.clone())).await;
        assert_eq!(all, "one\ntwo\nthree\nfour\n");
        let tail = collect(read(path.clone(), LogOptions { tail_lines: Some(2), ..Default::default() }, done.clone())).await;
        assert_eq!(tail, "three\nfour\n");
        let limited = collect(read(path.clone(), LogOptions { limit_bytes: Some(5), ..Default::default() }, done.clone())).await;
        assert_eq!(limited, "one\nt");
        let stamped = collect(read(path, LogOptions { timestamps: true, tail_lines: Some(1), ..Default::default() }, done)).await;
        let (ts, text) = stamped.split_once(' ').expect("timestamp prefix");
        assert!(ts.parse::<Timestamp>().is_ok(), "{ts}");
        assert_eq!(text, "four\n");
    }

    #[test]
    fn malformed_records_are_skipped() {
        assert!(parse_record(b"not a record").is_none());
        let r = parse_record(b"2026-01-01T00:00:00.000000000Z stderr P half").expect("record");
        assert!(r.partial);
        assert_eq!(r.stream, "stderr");
        assert_eq!(r.text, b"half");
    }
}
