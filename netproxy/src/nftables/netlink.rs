//! Map elements straight over `NETLINK_NETFILTER`: one nfnetlink batch (one kernel transaction) of
//! `NFT_MSG_DELSETELEM` and `NFT_MSG_NEWSETELEM` messages (and `NFT_MSG_DELTABLE`, which a full
//! sync uses to drop the table it replaces in the same transaction), built in memory.
//!
//! `nft -f` spends about two thirds of a large element load parsing text and evaluating expressions
//! in userspace; the kernel part is the rest. Encoding the elements here (a few bytes each, in the
//! layout nft gives the maps' concatenated types: every field padded to 4 bytes) skips all of it.
//! Tables, chains and rules still go through `nft`, which owns the expression encoding.

use super::script::{Element, Key, Value};
use crate::table::Protocol;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
/// `NFPROTO_INET`: the table's family.
pub(super) const NFPROTO_INET: u8 = 1;
/// `NFPROTO_IPV4`: the family of the table's IPv4-only layout of earlier versions, deleted on a full sync.
pub(super) const NFPROTO_IPV4: u8 = 2;

const NFTA_TABLE_NAME: u16 = 1;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_GOTO: i32 = -4;

/// An attribute's length is 16 bits: keep each message's element list well below that.
const MAX_ELEMENTS_BYTES: usize = 60_000;

/// How long to wait for the kernel's answer (it handles the batch inside `send`, so this is a safeguard).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a batch adds or deletes its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Add,
    Delete,
}

/// An nfnetlink batch under construction.
pub(super) struct Batch {
    buf: Vec<u8>,
    seq: u32,
    messages: usize,
    /// Offset of the last message's header (it asks for the acknowledgement).
    last: Option<usize>,
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Starts an attribute; returns where its length goes.
fn attr_start(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    put_u16(buf, 0);
    put_u16(buf, kind);
    at
}

/// Finishes an attribute started at `at` (length without padding, then pads).
fn attr_end(buf: &mut Vec<u8>, at: usize) {
    let len = u16::try_from(buf.len() - at).unwrap_or(u16::MAX);
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    pad(buf);
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let at = attr_start(buf, kind);
    buf.extend_from_slice(data);
    attr_end(buf, at);
}

fn attr_str(buf: &mut Vec<u8>, kind: u16, s: &str) {
    let at = attr_start(buf, kind);
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    attr_end(buf, at);
}

fn proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// A key in the maps' layout: concatenated fields, each padded to 4 bytes; addresses and ports in
/// network order, marks and `numgen` results in host order.
fn key_bytes(key: &Key, out: &mut Vec<u8>) {
    match key {
        Key::Addr(ip, p, port) => {
            ip_bytes(ip, out);
            out.extend_from_slice(&[proto(*p), 0, 0, 0]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        Key::Port(p, port) => {
            out.extend_from_slice(&[proto(*p), 0, 0, 0]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        Key::Backend(id, i) => {
            out.extend_from_slice(&id.to_ne_bytes());
            out.extend_from_slice(&i.to_ne_bytes());
        }
        Key::Hairpin(id, ip) => {
            out.extend_from_slice(&id.to_ne_bytes());
            ip_bytes(ip, out);
            ip_bytes(ip, out);
        }
    }
}

fn ip_bytes(ip: &std::net::IpAddr, out: &mut Vec<u8>) {
    match ip {
        std::net::IpAddr::V4(v) => out.extend_from_slice(&v.octets()),
        std::net::IpAddr::V6(v) => out.extend_from_slice(&v.octets()),
    }
}

fn element(buf: &mut Vec<u8>, e: &Element, verb: Verb, scratch: &mut Vec<u8>) {
    let elem = attr_start(buf, NFTA_LIST_ELEM | NLA_F_NESTED);
    let key = attr_start(buf, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
    scratch.clear();
    key_bytes(&e.key, scratch);
    attr(buf, NFTA_DATA_VALUE, scratch);
    attr_end(buf, key);
    if verb == Verb::Add && e.value != Value::Member {
        let data = attr_start(buf, NFTA_SET_ELEM_DATA | NLA_F_NESTED);
        match &e.value {
            Value::Mark(m) => attr(buf, NFTA_DATA_VALUE, &m.to_ne_bytes()),
            Value::Target(ep) => {
                scratch.clear();
                ip_bytes(&ep.ip(), scratch);
                scratch.extend_from_slice(&ep.port().to_be_bytes());
                scratch.extend_from_slice(&[0, 0]);
                attr(buf, NFTA_DATA_VALUE, scratch);
            }
            Value::Member => {}
            Value::Goto(chain) => {
                let verdict = attr_start(buf, NFTA_DATA_VERDICT | NLA_F_NESTED);
                attr(buf, NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
                attr_str(buf, NFTA_VERDICT_CHAIN, chain);
                attr_end(buf, verdict);
            }
        }
        attr_end(buf, data);
    }
    attr_end(buf, elem);
}

impl Batch {
    pub(super) fn new() -> Self {
        let mut b = Self { buf: Vec::new(), seq: 0, messages: 0, last: None };
        b.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        b.finish_message(0);
        b
    }

    /// Starts a message; returns its offset.
    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let at = self.buf.len();
        self.seq += 1;
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        put_u16(&mut self.buf, kind);
        put_u16(&mut self.buf, flags);
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version, resource id (big endian).
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        at
    }

    fn finish_message(&mut self, at: usize) {
        pad(&mut self.buf);
        let len = u32::try_from(self.buf.len() - at).unwrap_or(u32::MAX);
        self.buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Adds (or deletes) `elements` of table `table`, in as many messages as their size needs.
    pub(super) fn elements<'a>(&mut self, table: &str, verb: Verb, elements: impl IntoIterator<Item = &'a Element>) {
        let (kind, flags) = match verb {
            Verb::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE),
            Verb::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
        };
        let mut scratch = Vec::with_capacity(16);
        let mut open: Option<(&'static str, usize, usize)> = None;
        for e in elements {
            if let Some((map, msg, list)) = open
                && (map != e.map || self.buf.len() - list > MAX_ELEMENTS_BYTES)
            {
                attr_end(&mut self.buf, list);
                self.finish_message(msg);
                open = None;
            }
            let (_, _, _) = *open.get_or_insert_with(|| {
                let msg = self.header((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, NFPROTO_INET, 0);
                attr_str(&mut self.buf, NFTA_SET_ELEM_LIST_TABLE, table);
                attr_str(&mut self.buf, NFTA_SET_ELEM_LIST_SET, e.map);
                let list = attr_start(&mut self.buf, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
                self.messages += 1;
                self.last = Some(msg);
                (e.map, msg, list)
            });
            element(&mut self.buf, e, verb, &mut scratch);
        }
        if let Some((_, msg, list)) = open {
            attr_end(&mut self.buf, list);
            self.finish_message(msg);
        }
    }

    /// Deletes table `name` of family `family` (`NFPROTO_*`); the batch fails if it does not exist.
    pub(super) fn delete_table(&mut self, family: u8, name: &str) {
        let msg = self.header((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, NLM_F_REQUEST, family, 0);
        attr_str(&mut self.buf, NFTA_TABLE_NAME, name);
        self.finish_message(msg);
        self.messages += 1;
        self.last = Some(msg);
    }

    /// True when no message was added.
    pub(super) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Closes the batch; returns its bytes and the sequence number whose acknowledgement ends it.
    fn finish(mut self) -> (Vec<u8>, u32) {
        let Some(last) = self.last else { return (Vec::new(), 0) };
        // The last message asks for an acknowledgement: the kernel answers it after the
        // commit (or after the abort, behind the errors), so it marks the end of the answers.
        let flags = u16::from_ne_bytes([self.buf[last + 6], self.buf[last + 7]]) | NLM_F_ACK;
        self.buf[last + 6..last + 8].copy_from_slice(&flags.to_ne_bytes());
        let ack_seq = u32::from_ne_bytes([self.buf[last + 8], self.buf[last + 9], self.buf[last + 10], self.buf[last + 11]]);
        let at = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.finish_message(at);
        (self.buf, ack_seq)
    }
}

/// Opens a `NETLINK_NETFILTER` socket in the named network namespace (or the current one).
/// Entering a namespace happens on a thread of its own; the socket stays in the namespace.
pub(super) fn open(netns: Option<&str>) -> io::Result<OwnedFd> {
    let socket =
        || rustix::net::socket(rustix::net::AddressFamily::NETLINK, rustix::net::SocketType::RAW, Some(rustix::net::netlink::NETFILTER));
    let Some(ns) = netns else { return Ok(socket()?) };
    let path = std::path::Path::new("/run/netns").join(ns);
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path)?;
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?;
            Ok(socket()?)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

/// Sends a batch on `socket` and waits for the kernel's verdict: `Ok` when it committed, the first
/// error otherwise (then nothing of the batch was applied).
pub(super) fn send(socket: &OwnedFd, batch: Batch) -> io::Result<()> {
    let (buf, ack_seq) = batch.finish();
    if buf.is_empty() {
        return Ok(());
    }
    rustix::net::sockopt::set_socket_send_buffer_size_force(socket, buf.len() + 4096)
        .or_else(|_| rustix::net::sockopt::set_socket_send_buffer_size(socket, buf.len() + 4096))?;
    rustix::net::sockopt::set_socket_timeout(socket, rustix::net::sockopt::Timeout::Recv, Some(ANSWER_TIMEOUT))?;
    let sent = rustix::net::send(socket, &buf, rustix::net::SendFlags::empty())?;
    if sent != buf.len() {
        return Err(io::Error::other(format!("netlink batch sent {sent} of {} bytes", buf.len())));
    }
    let mut answer = vec![0u8; 256 * 1024];
    let mut first_error: Option<io::Error> = None;
    loop {
        // After an error, whatever else the kernel had to say is already queued: do not wait for more.
        let flags = if first_error.is_some() { rustix::net::RecvFlags::DONTWAIT } else { rustix::net::RecvFlags::empty() };
        let n = match rustix::net::recv(socket, &mut answer[..], flags) {
            Ok((_, n)) => n,
            Err(e) => {
                return Err(first_error.unwrap_or_else(|| {
                    if e == rustix::io::Errno::AGAIN {
                        io::Error::new(io::ErrorKind::TimedOut, "no answer to the netlink batch")
                    } else {
                        e.into()
                    }
                }));
            }
        };
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes([answer[at], answer[at + 1], answer[at + 2], answer[at + 3]]) as usize;
            let kind = u16::from_ne_bytes([answer[at + 4], answer[at + 5]]);
            let seq = u32::from_ne_bytes([answer[at + 8], answer[at + 9], answer[at + 10], answer[at + 11]]);
            if len < NLMSG_HDRLEN || at + len > n {
                break;
            }
            if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                let p = at + NLMSG_HDRLEN;
                let code = i32::from_ne_bytes([answer[p], answer[p + 1], answer[p + 2], answer[p + 3]]);
                if code != 0 && first_error.is_none() {
                    first_error = Some(io::Error::from_raw_os_error(-code));
                }
                if seq == ack_seq {
                    return first_error.map_or(Ok(()), Err);
                }
            }
            at += (len + 3) & !3;
        }
    }
}

/// The tables the kernel has, as (`NFPROTO_*` family, name): one `NFT_MSG_GETTABLE` dump. (`nft list
/// tables` would fetch every set's elements first, seconds with 100,000 of them.)
pub(super) fn tables(socket: &OwnedFd) -> io::Result<Vec<(u8, String)>> {
    let mut request = Batch { buf: Vec::new(), seq: 0, messages: 0, last: None };
    let at = request.header((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_DUMP, 0, 0);
    request.finish_message(at);
    rustix::net::sockopt::set_socket_timeout(socket, rustix::net::sockopt::Timeout::Recv, Some(ANSWER_TIMEOUT))?;
    rustix::net::send(socket, &request.buf, rustix::net::SendFlags::empty())?;
    let mut out = Vec::new();
    let mut answer = vec![0u8; 64 * 1024];
    loop {
        let (_, n) = rustix::net::recv(socket, &mut answer[..], rustix::net::RecvFlags::empty())?;
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes([answer[at], answer[at + 1], answer[at + 2], answer[at + 3]]) as usize;
            let kind = u16::from_ne_bytes([answer[at + 4], answer[at + 5]]);
            if len < NLMSG_HDRLEN || at + len > n {
                return Err(io::Error::other("truncated netlink answer"));
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR if len >= NLMSG_HDRLEN + 4 => {
                    let p = at + NLMSG_HDRLEN;
                    let code = i32::from_ne_bytes([answer[p], answer[p + 1], answer[p + 2], answer[p + 3]]);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                _ if len >= NLMSG_HDRLEN + 4 => {
                    let family = answer[at + NLMSG_HDRLEN];
                    // Attributes after the 4-byte nfgenmsg.
                    let mut a = at + NLMSG_HDRLEN + 4;
                    while a + 4 <= at + len {
                        let alen = u16::from_ne_bytes([answer[a], answer[a + 1]]) as usize;
                        let akind = u16::from_ne_bytes([answer[a + 2], answer[a + 3]]) & 0x3fff;
                        if alen < 4 || a + alen > at + len {
                            break;
                        }
                        if akind == NFTA_TABLE_NAME {
                            let name = &answer[a + 4..a + alen];
                            let name = name.split(|b| *b == 0).next().unwrap_or_default();
                            out.push((family, String::from_utf8_lossy(name).into_owned()));
                        }
                        a += (alen + 3) & !3;
                    }
                }
                _ => {}
            }
            at += (len + 3) & !3;
        }
    }
}
