//! SPDY/3.1 framing, the transport of `kubectl port-forward` (client-go's `httpstream/spdy` over
//! moby/spdystream): frames, and the name/value header blocks compressed with zlib and the
//! protocol's preset dictionary, one compression context per direction for the whole session.
//!
//! A control frame is `1 | version(15) | type(16) | flags(8) | length(24) | payload`; a data
//! frame is `0 | stream id(31) | flags(8) | length(24) | payload`. A header block is a 32-bit
//! count of pairs, each a 32-bit length and a lowercase name, a 32-bit length and a value
//! (several values separated by NUL). Every field is big-endian.
//!
//! [`FrameDecoder`] reads frames out of a byte buffer however the bytes arrived (a frame split
//! across reads waits for the rest); [`FrameEncoder`] writes them. Malformed input is a
//! [`SpdyError`], never a panic.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::sync::LazyLock;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// `FLAG_FIN` of a data frame, SYN_STREAM, SYN_REPLY or HEADERS: the sender's side is done.
pub const FLAG_FIN: u8 = 0x01;
/// `FLAG_UNIDIRECTIONAL` of a SYN_STREAM: the receiver sends nothing on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest payload the 24-bit length field allows.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The largest decompressed header block accepted (a guard against zlib bombs).
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// The largest control frame accepted: kubectl's are tens of bytes.
const MAX_CONTROL_PAYLOAD: usize = 64 * 1024;

/// RST_STREAM status `PROTOCOL_ERROR`.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status `INVALID_STREAM`.
pub const RST_INVALID_STREAM: u32 = 2;
/// RST_STREAM status `REFUSED_STREAM`.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status `CANCEL`.
pub const RST_CANCEL: u32 = 5;
/// RST_STREAM status `STREAM_IN_USE`.
pub const RST_STREAM_IN_USE: u32 = 8;

/// The control frame types.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Header names and values of a SYN_STREAM, SYN_REPLY or HEADERS frame, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock(pub Vec<(String, String)>);

impl HeaderBlock {
    /// The first value of a header (names are lowercase on the wire).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Bytes of a stream.
    Data {
        /// The stream.
        stream: u32,
        /// The sender is done with the stream.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// Opens a stream.
    SynStream {
        /// The new stream (odd from the client, even from the server).
        stream: u32,
        /// The stream it is associated to (0 for none).
        associated: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// `FLAG_FIN` and `FLAG_UNIDIRECTIONAL`.
        flags: u8,
        /// The stream's headers.
        headers: HeaderBlock,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// Reply headers.
        headers: HeaderBlock,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream: u32,
        /// Why (`RST_*`).
        status: u32,
    },
    /// Session settings: `(flags, id, value)` entries.
    Settings {
        /// The entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// A ping; the receiver of an id of the other side's parity echoes it.
    Ping {
        /// The ping's id (odd from the client).
        id: u32,
    },
    /// The sender accepts no new streams.
    GoAway {
        /// The last stream the sender accepted.
        last_good: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream: u32,
        /// `FLAG_FIN`.
        flags: u8,
        /// The headers.
        headers: HeaderBlock,
    },
    /// Flow control credit.
    WindowUpdate {
        /// The stream (0 for the session).
        stream: u32,
        /// Bytes added to the window.
        delta: u32,
    },
    /// A control frame of a type SPDY/3.1 does not define (receivers ignore these).
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// Malformed SPDY input, or a header block that cannot be (de)compressed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpdyError {
    /// A control frame of another protocol version.
    #[error("unsupported SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    /// A frame's payload does not fit its type.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// The frame type.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A frame larger than this side accepts.
    #[error("{kind} frame of {len} bytes is larger than {max}")]
    TooLarge {
        /// The frame type.
        kind: &'static str,
        /// Its payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The compressed header block could not be inflated or deflated.
    #[error("header block compression: {0}")]
    Compression(String),
    /// A header block's structure is wrong (lengths past its end, bad names).
    #[error("malformed header block: {0}")]
    HeaderBlock(String),
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): header names and common
/// values, each with its 32-bit length, then a run of status codes, reason phrases, dates and
/// media types.
pub fn dictionary() -> &'static [u8] {
    static DICT: LazyLock<Vec<u8>> = LazyLock::new(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &[&str] = &[
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        ];
        let mut dict = Vec::with_capacity(1500);
        for word in WORDS {
            dict.extend_from_slice(&u32::try_from(word.len()).unwrap_or_default().to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        for part in TAIL {
            dict.extend_from_slice(part.as_bytes());
        }
        dict
    });
    &DICT
}

/// Serializes a header block (uncompressed).
fn header_block_bytes(headers: &HeaderBlock) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + headers.0.iter().map(|(n, v)| 8 + n.len() + v.len()).sum::<usize>());
    put_len(&mut out, headers.0.len());
    for (name, value) in &headers.0 {
        put_len(&mut out, name.len());
        out.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        put_len(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// Parses an uncompressed header block.
fn parse_header_block(mut b: &[u8]) -> Result<HeaderBlock, SpdyError> {
    fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], SpdyError> {
        if b.len() < n {
            return Err(SpdyError::HeaderBlock(format!("{what} runs past the end of the block")));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn len(b: &mut &[u8], what: &str) -> Result<usize, SpdyError> {
        let raw = take(b, 4, what)?;
        Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    }
    let count = len(&mut b, "the pair count")?;
    // Each pair takes at least 8 bytes: a count larger than that is a lie, not a reason to allocate.
    if count > b.len() / 8 {
        return Err(SpdyError::HeaderBlock(format!("{count} pairs do not fit in {} bytes", b.len())));
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let n = len(&mut b, "a name length")?;
        let name = take(&mut b, n, "a name")?;
        if name.is_empty() {
            return Err(SpdyError::HeaderBlock("empty header name".into()));
        }
        let n = len(&mut b, "a value length")?;
        let value = take(&mut b, n, "a value")?;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        pairs.push((name, String::from_utf8_lossy(value).into_owned()));
    }
    Ok(HeaderBlock(pairs))
}

/// The compressing side of a session's header blocks (one per direction, for its lifetime).
pub struct HeaderCompressor {
    deflate: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl HeaderCompressor {
    /// A fresh context primed with [`dictionary`].
    pub fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(dictionary()).map_err(|e| SpdyError::Compression(e.to_string()))?;
        Ok(Self { deflate })
    }

    /// Compresses one header block, ending with a sync flush so that the peer can decode it from
    /// this frame's bytes alone.
    pub fn compress(&mut self, headers: &HeaderBlock) -> Result<Vec<u8>, SpdyError> {
        let input = header_block_bytes(headers);
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0;
        // Bounded: every round either consumes input or grows the output, and a sync flush
        // that leaves spare output room is complete.
        for _ in 0..1024 {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.deflate.total_in();
            self.deflate.compress_vec(&input[pos..], &mut out, FlushCompress::Sync).map_err(|e| SpdyError::Compression(e.to_string()))?;
            pos += usize::try_from(self.deflate.total_in() - before).unwrap_or(usize::MAX).min(input.len() - pos);
            // zlib: a flush that returns with output room to spare is complete.
            if pos == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
        Err(SpdyError::Compression("deflate made no progress".into()))
    }
}

/// The decompressing side of a session's header blocks.
pub struct HeaderDecompressor {
    inflate: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary is supplied when the stream asks for it.
    pub fn new() -> Self {
        Self { inflate: Decompress::new(true) }
    }

    /// Inflates one frame's compressed header block (the context carries over between calls).
    pub fn decompress(&mut self, input: &[u8]) -> Result<HeaderBlock, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        let mut idle = 0;
        // Bounded: each round consumes input, grows the output (capped) or ends.
        for _ in 0..4096 {
            if out.capacity() == out.len() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::HeaderBlock(format!("a header block inflates past {MAX_HEADER_BLOCK} bytes")));
                }
                out.reserve(out.len().max(256));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let result = self.inflate.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += usize::try_from(self.inflate.total_in() - in_before).unwrap_or(usize::MAX).min(input.len() - pos);
            match result {
                Ok(Status::StreamEnd) => return Err(SpdyError::Compression("the header zlib stream ended".into())),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) if id == adler32(dictionary()) => {
                        self.inflate.set_dictionary(dictionary()).map_err(|e| SpdyError::Compression(e.to_string()))?;
                        continue;
                    }
                    Some(id) => return Err(SpdyError::Compression(format!("the peer's dictionary id {id:#x} is not SPDY/3's"))),
                    None => return Err(SpdyError::Compression(e.to_string())),
                },
            }
            if pos == input.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() == out_before && pos == input.len() {
                idle += 1;
                if idle > 2 {
                    break;
                }
            }
        }
        if pos < input.len() {
            return Err(SpdyError::Compression("inflate made no progress".into()));
        }
        parse_header_block(&out)
    }
}

/// Adler-32 of a byte string (the id zlib gives a preset dictionary).
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Reads frames out of a byte buffer.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    headers: HeaderDecompressor,
}

impl FrameDecoder {
    /// A decoder with a fresh header context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one whole frame off the front of `buf`, or `None` (leaving `buf` alone) when the
    /// frame is not all there yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        let control = word & 0x8000_0000 != 0;
        if control {
            let version = ((word >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(SpdyError::Version(version));
            }
            if len > MAX_CONTROL_PAYLOAD {
                return Err(SpdyError::TooLarge { kind: "control", len, max: MAX_CONTROL_PAYLOAD });
            }
        }
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        buf.advance(8);
        let payload = buf.split_to(len).freeze();
        if !control {
            let stream = word & 0x7fff_ffff;
            if stream == 0 {
                return Err(malformed("DATA", "stream id 0"));
            }
            return Ok(Some(Frame::Data { stream, fin: flags & FLAG_FIN != 0, data: payload }));
        }
        self.control((word & 0xffff) as u16, flags, &payload).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Frame, SpdyError> {
        let word = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
        let need = |name: &'static str, n: usize, exact: bool| {
            if p.len() < n || (exact && p.len() != n) { Err(malformed(name, format!("{} payload bytes", p.len()))) } else { Ok(()) }
        };
        let stream_of =
            |name: &'static str, id: u32| if id & 0x7fff_ffff == 0 { Err(malformed(name, "stream id 0")) } else { Ok(id & 0x7fff_ffff) };
        Ok(match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10, false)?;
                let stream = stream_of("SYN_STREAM", word(0))?;
                let headers = self.headers.decompress(&p[10..])?;
                Frame::SynStream { stream, associated: word(4) & 0x7fff_ffff, priority: p[8] >> 5, flags, headers }
            }
            SYN_REPLY => {
                need("SYN_REPLY", 4, false)?;
                let stream = stream_of("SYN_REPLY", word(0))?;
                Frame::SynReply { stream, flags, headers: self.headers.decompress(&p[4..])? }
            }
            HEADERS => {
                need("HEADERS", 4, false)?;
                let stream = stream_of("HEADERS", word(0))?;
                Frame::Headers { stream, flags, headers: self.headers.decompress(&p[4..])? }
            }
            RST_STREAM => {
                need("RST_STREAM", 8, true)?;
                Frame::RstStream { stream: stream_of("RST_STREAM", word(0))?, status: word(4) }
            }
            SETTINGS => {
                need("SETTINGS", 4, false)?;
                let count = word(0) as usize;
                if p.len() != 4 + count.saturating_mul(8) {
                    return Err(malformed("SETTINGS", format!("{count} entries in {} bytes", p.len())));
                }
                let entries = (0..count).map(|i| 4 + i * 8).map(|at| (p[at], word(at) & 0x00ff_ffff, word(at + 4))).collect();
                Frame::Settings { entries }
            }
            PING => {
                need("PING", 4, true)?;
                Frame::Ping { id: word(0) }
            }
            GOAWAY => {
                need("GOAWAY", 8, true)?;
                Frame::GoAway { last_good: word(0) & 0x7fff_ffff, status: word(4) }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8, true)?;
                Frame::WindowUpdate { stream: word(0) & 0x7fff_ffff, delta: word(4) & 0x7fff_ffff }
            }
            kind => Frame::Unknown { kind },
        })
    }
}

fn malformed(kind: &'static str, reason: impl Into<String>) -> SpdyError {
    SpdyError::Malformed { kind, reason: reason.into() }
}

/// Writes frames.
#[derive(Debug)]
pub struct FrameEncoder {
    headers: HeaderCompressor,
}

impl FrameEncoder {
    /// An encoder with a fresh header context.
    pub fn new() -> Result<Self, SpdyError> {
        Ok(Self { headers: HeaderCompressor::new()? })
    }

    /// Appends one frame to `out` (a data frame longer than [`MAX_PAYLOAD`] is refused: split it).
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let mut payload = Vec::new();
        let (kind, flags) = match frame {
            Frame::Data { stream, fin, data } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(SpdyError::TooLarge { kind: "DATA", len: data.len(), max: MAX_PAYLOAD });
                }
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                head_len(out, if *fin { FLAG_FIN } else { 0 }, data.len());
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream { stream, associated, priority, flags, headers } => {
                payload.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                payload.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
                payload.extend_from_slice(&[(priority & 0x7) << 5, 0]);
                payload.extend_from_slice(&self.headers.compress(headers)?);
                (SYN_STREAM, *flags)
            }
            Frame::SynReply { stream, flags, headers } => {
                payload.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                payload.extend_from_slice(&self.headers.compress(headers)?);
                (SYN_REPLY, *flags)
            }
            Frame::Headers { stream, flags, headers } => {
                payload.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                payload.extend_from_slice(&self.headers.compress(headers)?);
                (HEADERS, *flags)
            }
            Frame::RstStream { stream, status } => {
                payload.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                payload.extend_from_slice(&status.to_be_bytes());
                (RST_STREAM, 0)
            }
            Frame::Settings { entries } => {
                put_len(&mut payload, entries.len());
                for (flags, id, value) in entries {
                    payload.extend_from_slice(&((u32::from(*flags) << 24) | (id & 0x00ff_ffff)).to_be_bytes());
                    payload.extend_from_slice(&value.to_be_bytes());
                }
                (SETTINGS, 0)
            }
            Frame::Ping { id } => {
                payload.extend_from_slice(&id.to_be_bytes());
                (PING, 0)
            }
            Frame::GoAway { last_good, status } => {
                payload.extend_from_slice(&(last_good & 0x7fff_ffff).to_be_bytes());
                payload.extend_from_slice(&status.to_be_bytes());
                (GOAWAY, 0)
            }
            Frame::WindowUpdate { stream, delta } => {
                payload.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                payload.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                (WINDOW_UPDATE, 0)
            }
            Frame::Unknown { kind } => (*kind, 0),
        };
        out.extend_from_slice(&(0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind)).to_be_bytes());
        head_len(out, flags, payload.len());
        out.extend_from_slice(&payload);
        Ok(())
    }
}

/// The flags byte and 24-bit length of a frame header.
fn head_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    let len = u32::try_from(len.min(MAX_PAYLOAD)).unwrap_or_default();
    out.extend_from_slice(&((u32::from(flags) << 24) | len).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderBlock {
        HeaderBlock(pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect())
    }

    fn all_kinds() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply { stream: 1, flags: 0, headers: HeaderBlock::default() },
            Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"hello") },
            Frame::Data { stream: 1, fin: true, data: Bytes::new() },
            Frame::RstStream { stream: 3, status: RST_CANCEL },
            Frame::Settings { entries: vec![(0, 4, 100), (1, 7, 65536)] },
            Frame::Ping { id: 1 },
            Frame::GoAway { last_good: 3, status: 0 },
            Frame::Headers { stream: 3, flags: FLAG_FIN, headers: headers(&[("x", "a\0b")]) },
            Frame::WindowUpdate { stream: 3, delta: 4096 },
        ]
    }

    #[test]
    fn the_dictionary_is_spdy_3s() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert!(dict.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dict.ends_with(b"utf-,*,enq=0."));
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn every_frame_round_trips_with_one_context_per_direction() -> Result<(), SpdyError> {
        let mut enc = FrameEncoder::new()?;
        let mut dec = FrameDecoder::new();
        let mut wire = Vec::new();
        for frame in all_kinds() {
            enc.encode(&frame, &mut wire)?;
        }
        let mut buf = BytesMut::from(&wire[..]);
        for want in all_kinds() {
            assert_eq!(dec.decode(&mut buf)?, Some(want));
        }
        assert!(buf.is_empty());
        assert_eq!(dec.decode(&mut buf)?, None);
        Ok(())
    }

    #[test]
    fn a_frame_split_across_reads_waits_for_the_rest() -> Result<(), SpdyError> {
        let mut enc = FrameEncoder::new()?;
        let mut wire = Vec::new();
        for frame in all_kinds() {
            enc.encode(&frame, &mut wire)?;
        }
        // Feed one byte at a time: every frame comes out once, whole, in order.
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in &wire {
            buf.extend_from_slice(&[*byte]);
            while let Some(frame) = dec.decode(&mut buf)? {
                got.push(frame);
            }
        }
        assert_eq!(got, all_kinds());
        Ok(())
    }

    #[test]
    fn header_names_go_out_lowercase_and_multiple_values_split_on_nul() -> Result<(), SpdyError> {
        let mut c = HeaderCompressor::new()?;
        let mut d = HeaderDecompressor::new();
        let block = d.decompress(&c.compress(&headers(&[("StreamType", "data"), ("v", "a\0b")]))?)?;
        assert_eq!(block.get("streamtype"), Some("data"));
        assert_eq!(block.get("v"), Some("a"));
        assert_eq!(block.get("missing"), None);
        Ok(())
    }

    #[test]
    fn bad_frames_are_errors_not_panics() -> Result<(), SpdyError> {
        let mut dec = FrameDecoder::new();
        // SPDY/2 control frame.
        let mut buf = BytesMut::from(&[0x80, 2, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(dec.decode(&mut buf), Err(SpdyError::Version(2))));
        // A PING with a short payload.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 1][..]);
        assert!(matches!(dec.decode(&mut buf), Err(SpdyError::Malformed { .. })));
        // A SYN_STREAM whose header block is not zlib.
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::from(&[0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4][..]);
        assert!(matches!(dec.decode(&mut buf), Err(SpdyError::Compression(_))));
        // A data frame on stream 0.
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 1, 9][..]);
        assert!(dec.decode(&mut buf).is_err());
        // A huge control frame is refused before it is buffered.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(matches!(dec.decode(&mut buf), Err(SpdyError::TooLarge { .. })));
        // SETTINGS whose count disagrees with its length.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9][..]);
        assert!(matches!(dec.decode(&mut buf), Err(SpdyError::Malformed { .. })));
        // Unknown control types are skipped, as the spec asks.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 42, 0, 0, 0, 2, 7, 7][..]);
        assert_eq!(dec.decode(&mut buf)?, Some(Frame::Unknown { kind: 42 }));
        Ok(())
    }

    #[test]
    fn malformed_header_blocks_are_errors() {
        assert!(parse_header_block(&[0, 0, 0]).is_err());
        assert!(parse_header_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a', 0, 0, 0, 0]).is_err());
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let ok = parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 1, b'b']).ok();
        assert_eq!(ok.and_then(|h| h.get("a").map(str::to_owned)).as_deref(), Some("b"));
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let len = rng.usize(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if rng.bool() && bytes.len() >= 8 {
                // Mostly well-formed headers, so that payload parsers run too.
                bytes[0] = 0x80;
                bytes[1] = 3;
                bytes[5] = 0;
                bytes[6] = 0;
                bytes[7] = u8::try_from(len - 8).unwrap_or(0);
            }
            let mut dec = FrameDecoder::new();
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..16 {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
