//! `pods/portforward`: the `portforward.k8s.io` protocol over SPDY/3.1 (see [`spdy`](super::spdy)),
//! as `kubectl port-forward` speaks it.
//!
//! kubectl (client-go `tools/portforward`, since 1.31) first asks for a WebSocket upgrade with
//! subprotocol `SPDY/3.1+portforward.k8s.io` and then speaks SPDY inside binary WebSocket
//! messages (a byte stream: frames may be split across messages or share one); when that upgrade
//! fails it falls back to a plain `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version:
//! portforward.k8s.io` (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false` forces the fallback). Both are
//! served here.
//!
//! For every local connection the client opens two streams with headers `streamType` (`error`,
//! then `data`), `port` and `requestID`; the server replies to each, connects to the pod's port
//! once it has both ([`NodeConnector::port_forward`]), copies bytes both ways on the data stream
//! and ends it with FIN when the pod side closes, then ends the error stream. When the port
//! cannot be reached the error stream carries the message (kubectl prints it, and since 1.29
//! closes the whole session). The server echoes the client's PINGs (every 10 s over the tunnel);
//! spdystream does no flow control, so WINDOW_UPDATE and SETTINGS are read and ignored, and none
//! are sent.

use super::body::{self, Body};
use super::node::{ExecIo, NodeConnector};
use super::rest::State;
use super::spdy::{self, Frame, FrameDecoder, FrameEncoder, HeaderBlock, SpdyError};
use bosun_core::{Error, Result, Target};
use bytes::{Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{Instrument, debug, info_span, warn};

/// The stream protocol (`X-Stream-Protocol-Version`).
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunneled in WebSocket messages (KEP-4006).
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The `Upgrade` token of plain SPDY.
const SPDY_UPGRADE: &str = "SPDY/3.1";

/// How long a connection's first stream waits for its partner (kubelet's stream creation timeout).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// How many connections may wait for their second stream at once.
const MAX_PENDING_PAIRS: usize = 256;
/// Frames queued for the writer before senders wait.
const OUT_QUEUE: usize = 64;
/// Chunks from the client queued for a pod connection before the session stops reading.
const TO_POD_QUEUE: usize = 16;
/// The most bytes one data frame carries from the pod.
const CHUNK: usize = 32 * 1024;

/// How the SPDY bytes travel after the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Straight on the upgraded connection (`Upgrade: SPDY/3.1`).
    Spdy,
    /// In binary messages of a WebSocket (`SPDY/3.1+portforward.k8s.io`).
    WebSocket,
}

/// A port-forward session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortForwardError {
    /// The client sent bad SPDY.
    #[error("spdy: {0}")]
    Spdy(#[from] SpdyError),
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket tunnel failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tungstenite::Error>),
    /// The tunnel carried a text message (SPDY travels in binary ones).
    #[error("the client sent a text WebSocket message; the SPDY tunnel is binary")]
    TextMessage,
}

/// Answers a `pods/portforward` request: checks that the pod exists, upgrades to plain SPDY or to
/// the WebSocket tunnel, and serves the session in the background.
pub(crate) async fn upgrade(
    state: &State,
    req: Request<Incoming>,
    target: Target<'_>,
    namespace: &str,
    pod: &str,
) -> Result<Response<Body>> {
    let Some(nodes) = state.nodes.clone() else {
        return Err(Error::method_not_allowed("no node connection serves pods/portforward"));
    };
    // Before the upgrade, so that kubectl prints a plain `pods "x" not found`.
    state.client.get(target, pod).await?;
    let headers = req.headers();
    let tokens = |name: &str| super::server::header_tokens(headers, name);
    let upgrades = tokens(header::UPGRADE.as_str());
    let (transport, response) = if upgrades.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let key = headers.get("sec-websocket-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if key.is_empty() {
            return Err(Error::bad_request("pods/portforward: a WebSocket upgrade needs Sec-WebSocket-Key"));
        }
        let offered = tokens("sec-websocket-protocol");
        if !offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
            return Err(Error::bad_request(format!(
                "pods/portforward: none of the WebSocket subprotocols {offered:?} is {TUNNEL_PROTOCOL}"
            )));
        }
        (Transport::WebSocket, super::server::websocket_switch(key, TUNNEL_PROTOCOL))
    } else if upgrades.iter().any(|u| u.eq_ignore_ascii_case(SPDY_UPGRADE)) {
        let offered = tokens("x-stream-protocol-version");
        if !offered.is_empty() && !offered.iter().any(|p| p == PORT_FORWARD_PROTOCOL) {
            return Err(Error::bad_request(format!(
                "pods/portforward: none of the stream protocols {offered:?} is {PORT_FORWARD_PROTOCOL}"
            )));
        }
        let mut response = Response::new(body::full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert("x-stream-protocol-version", HeaderValue::from_static(PORT_FORWARD_PROTOCOL));
        (Transport::Spdy, response)
    } else {
        return Err(Error::bad_request("pods/portforward needs an upgrade to SPDY/3.1 or a WebSocket (SPDY/3.1+portforward.k8s.io)"));
    };
    let (namespace, pod) = (namespace.to_owned(), pod.to_owned());
    let span = info_span!("portforward", %namespace, %pod, ?transport);
    tokio::spawn(
        async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let io: Box<dyn ExecIo> = Box::new(TokioIo::new(upgraded));
                    match serve_port_forward(io, transport, &namespace, &pod, nodes).await {
                        Ok(()) => debug!("port-forward session ended"),
                        Err(error) => warn!(%error, "port-forward session ended with an error"),
                    }
                }
                Err(error) => warn!(%error, "port-forward upgrade failed"),
            }
        }
        .instrument(span),
    );
    Ok(response)
}

/// Serves one port-forward session on an upgraded connection until the client goes away: every
/// stream pair becomes a [`NodeConnector::port_forward`] connection to the pod.
pub async fn serve_port_forward(
    io: Box<dyn ExecIo>,
    transport: Transport,
    namespace: &str,
    pod: &str,
    nodes: Arc<dyn NodeConnector>,
) -> Result<(), PortForwardError> {
    let (reader, writer) = match transport {
        Transport::Spdy => {
            let (r, w) = tokio::io::split(io);
            (Reader::Raw(r), Writer::Raw(w))
        }
        Transport::WebSocket => {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            let (w, r) = ws.split();
            (Reader::Ws(r), Writer::Ws(w))
        }
    };
    let encoder = FrameEncoder::new()?;
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_frames(writer, encoder, out_rx));
    let mut session = Session {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        nodes,
        out,
        pairs: HashMap::new(),
        streams: HashMap::new(),
        last_stream: 0,
        tasks: JoinSet::new(),
    };
    let result = session.run(reader).await;
    if let Err(error) = &result {
        // Tell the client why before hanging up (GOAWAY with PROTOCOL_ERROR).
        let status = if matches!(error, PortForwardError::Spdy(_) | PortForwardError::TextMessage) { 1 } else { 2 };
        let _ = session.out.try_send(Frame::GoAway { last_good: session.last_stream, status });
    }
    let Session { out, mut tasks, .. } = session;
    tasks.abort_all();
    drop(out);
    // The writer ends once the queue is drained (bounded: the forwards are gone).
    let written = match tokio::time::timeout(Duration::from_secs(5), writer).await {
        Ok(Ok(written)) => written,
        Ok(Err(_)) | Err(_) => Ok(()),
    };
    result.and(written)
}

/// The bytes coming from the client.
enum Reader {
    Raw(ReadHalf<Box<dyn ExecIo>>),
    Ws(SplitStream<WebSocketStream<Box<dyn ExecIo>>>),
}

impl Reader {
    /// Appends what arrives to `buf`; `Ok(false)` at the end of the connection.
    async fn read_into(&mut self, buf: &mut BytesMut) -> Result<bool, PortForwardError> {
        match self {
            Self::Raw(r) => {
                buf.reserve(CHUNK);
                Ok(r.read_buf(buf).await? > 0)
            }
            Self::Ws(r) => loop {
                match r.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(false),
                    Some(Ok(Message::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        return Ok(true);
                    }
                    Some(Ok(Message::Text(_))) => return Err(PortForwardError::TextMessage),
                    Some(Ok(_)) => {}
                    Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => return Ok(false),
                    Some(Err(e)) => return Err(Box::new(e).into()),
                }
            },
        }
    }
}

/// The bytes going to the client.
enum Writer {
    Raw(WriteHalf<Box<dyn ExecIo>>),
    Ws(SplitSink<WebSocketStream<Box<dyn ExecIo>>, Message>),
}

/// Encodes and writes the session's frames, in order (the header compression context follows
/// that order). Each frame goes out whole in one write, one WebSocket message in the tunnel.
async fn write_frames(mut writer: Writer, mut encoder: FrameEncoder, mut rx: mpsc::Receiver<Frame>) -> Result<(), PortForwardError> {
    while let Some(frame) = rx.recv().await {
        let mut bytes = Vec::new();
        encoder.encode(&frame, &mut bytes)?;
        let more = !rx.is_empty();
        match &mut writer {
            Writer::Raw(w) => {
                w.write_all(&bytes).await?;
                if !more {
                    w.flush().await?;
                }
            }
            Writer::Ws(w) => {
                let message = Message::Binary(bytes.into());
                if more { w.feed(message).await } else { w.send(message).await }.map_err(Box::new)?;
            }
        }
    }
    match &mut writer {
        Writer::Raw(w) => {
            let _ = w.shutdown().await;
        }
        Writer::Ws(w) => {
            let _ = w.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
            let _ = w.close().await;
        }
    }
    Ok(())
}

/// The streams of one forwarded connection, gathered by `requestID`.
struct Pair {
    port: std::result::Result<u16, String>,
    error: Option<u32>,
    data: Option<u32>,
    since: Instant,
}

/// A data stream whose forward runs.
struct Forwarding {
    /// The client's bytes for the pod; dropped at the client's FIN.
    to_pod: Option<mpsc::Sender<Bytes>>,
    /// Fired by the client's RST_STREAM.
    cancel: Option<oneshot::Sender<()>>,
}

struct Session {
    namespace: String,
    pod: String,
    nodes: Arc<dyn NodeConnector>,
    out: mpsc::Sender<Frame>,
    pairs: HashMap<String, Pair>,
    streams: HashMap<u32, Forwarding>,
    /// The highest stream id the client opened.
    last_stream: u32,
    /// The forwards, each ending with its data stream's id.
    tasks: JoinSet<u32>,
}

impl Session {
    async fn run(&mut self, mut reader: Reader) -> Result<(), PortForwardError> {
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            while let Some(frame) = decoder.decode(&mut buf)? {
                if !self.handle(frame).await {
                    return Ok(());
                }
            }
            tokio::select! {
                more = reader.read_into(&mut buf) => {
                    if !more? {
                        debug!("the client closed the connection");
                        return Ok(());
                    }
                }
                Some(ended) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(stream) = ended {
                        self.streams.remove(&stream);
                    }
                }
                _ = sweep.tick() => self.expire_pairs().await,
            }
        }
    }

    /// Acts on one frame; `false` ends the session.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream { stream, headers, .. } => self.open(stream, &headers).await,
            Frame::Data { stream, fin, data } => {
                if let Some(f) = self.streams.get_mut(&stream) {
                    if !data.is_empty()
                        && let Some(tx) = &f.to_pod
                    {
                        // Waits while the pod side is slow: spdystream has no flow control
                        // either, the connection itself pushes back.
                        let _ = tx.send(data).await;
                    }
                    if fin {
                        f.to_pod = None;
                    }
                }
            }
            Frame::RstStream { stream, status } => {
                debug!(stream, status, "the client reset a stream");
                if let Some(mut f) = self.streams.remove(&stream) {
                    f.to_pod = None;
                    if let Some(cancel) = f.cancel.take() {
                        let _ = cancel.send(());
                    }
                }
                self.pairs.retain(|_, p| p.error != Some(stream) && p.data != Some(stream));
            }
            Frame::Ping { id } => {
                // Odd ids are the client's: echo them; even ones would answer pings of ours.
                if !id.is_multiple_of(2) {
                    let _ = self.out.send(Frame::Ping { id }).await;
                }
            }
            Frame::GoAway { last_good, status } => {
                debug!(last_good, status, "the client went away");
                return false;
            }
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
        true
    }

    /// A SYN_STREAM: accept it and file it under its request; start forwarding once the request
    /// has both streams.
    async fn open(&mut self, stream: u32, headers: &HeaderBlock) {
        if stream.is_multiple_of(2) || stream <= self.last_stream {
            debug!(stream, last = self.last_stream, "refusing a stream id out of order");
            let _ = self.out.send(Frame::RstStream { stream, status: spdy::RST_PROTOCOL_ERROR }).await;
            return;
        }
        self.last_stream = stream;
        let kind = headers.get("streamtype").unwrap_or_default().to_owned();
        if kind != "error" && kind != "data" {
            debug!(stream, kind, "refusing a stream of unknown type");
            let _ = self.out.send(Frame::RstStream { stream, status: spdy::RST_PROTOCOL_ERROR }).await;
            return;
        }
        let request = headers.get("requestid").unwrap_or_default().to_owned();
        if !self.pairs.contains_key(&request) && self.pairs.len() >= MAX_PENDING_PAIRS {
            let _ = self.out.send(Frame::RstStream { stream, status: spdy::RST_REFUSED_STREAM }).await;
            return;
        }
        let port_header = headers.get("port").unwrap_or_default();
        let port = match port_header.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("invalid port {port_header:?}")),
        };
        let pair = self.pairs.entry(request.clone()).or_insert(Pair { port, error: None, data: None, since: Instant::now() });
        let slot = if kind == "error" { &mut pair.error } else { &mut pair.data };
        if slot.is_some() {
            let _ = self.out.send(Frame::RstStream { stream, status: spdy::RST_STREAM_IN_USE }).await;
            return;
        }
        *slot = Some(stream);
        let _ = self.out.send(Frame::SynReply { stream, flags: 0, headers: HeaderBlock::default() }).await;
        if pair.error.is_some()
            && pair.data.is_some()
            && let Some(Pair { port, error: Some(error), data: Some(data), .. }) = self.pairs.remove(&request)
        {
            self.start(port, error, data);
        }
    }

    fn start(&mut self, port: std::result::Result<u16, String>, error: u32, data: u32) {
        let (to_pod, from_client) = mpsc::channel(TO_POD_QUEUE);
        let (cancel, cancelled) = oneshot::channel();
        self.streams.insert(data, Forwarding { to_pod: Some(to_pod), cancel: Some(cancel) });
        let link = Link { out: self.out.clone(), error, data };
        let (nodes, namespace, pod) = (self.nodes.clone(), self.namespace.clone(), self.pod.clone());
        let span = info_span!("forward", port = ?port.as_ref().ok(), data);
        self.tasks.spawn(
            async move {
                let conn = match port {
                    Ok(port) => nodes.port_forward(&namespace, &pod, port).await.map_err(|e| {
                        let message = e.to_status().message.unwrap_or_else(|| e.to_string());
                        format!("error forwarding port {port} to pod {namespace}/{pod}: {message}")
                    }),
                    Err(message) => Err(message),
                };
                match conn {
                    Ok(conn) => link.copy(conn, from_client, cancelled).await,
                    Err(message) => link.fail(message).await,
                }
                data
            }
            .instrument(span),
        );
    }

    /// Pairs that waited too long for their second stream: kubelet's "timed out waiting for streams".
    async fn expire_pairs(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> =
            self.pairs.iter().filter(|(_, p)| now.duration_since(p.since) >= PAIR_TIMEOUT).map(|(k, _)| k.clone()).collect();
        for key in expired {
            let Some(pair) = self.pairs.remove(&key) else { continue };
            debug!(request = key, "a stream pair timed out");
            if let Some(error) = pair.error {
                let message = Bytes::from(format!("timed out waiting for the data stream of request {key}"));
                let _ = self.out.send(Frame::Data { stream: error, fin: true, data: message }).await;
            }
            if let Some(data) = pair.data {
                let _ = self.out.send(Frame::RstStream { stream: data, status: spdy::RST_CANCEL }).await;
            }
        }
    }
}

/// What a forward task needs of the session.
struct Link {
    out: mpsc::Sender<Frame>,
    error: u32,
    data: u32,
}

impl Link {
    /// The port could not be reached: the message on the error stream, then both streams end.
    async fn fail(self, message: String) {
        debug!(%message, "port-forward connection failed");
        let _ = self.out.send(Frame::Data { stream: self.error, fin: false, data: Bytes::from(message) }).await;
        self.finish(true).await;
    }

    /// Copies both ways until the pod closes its side (then FIN on the data stream) or the client
    /// resets the stream.
    async fn copy(self, conn: Box<dyn ExecIo>, mut from_client: mpsc::Receiver<Bytes>, cancelled: oneshot::Receiver<()>) {
        let (mut rd, mut wr) = tokio::io::split(conn);
        let upstream = async {
            while let Some(bytes) = from_client.recv().await {
                if let Err(error) = wr.write_all(&bytes).await {
                    debug!(%error, "writing to the pod failed");
                    break;
                }
            }
            // The client is done sending (FIN): half-close toward the pod, keep reading it.
            let _ = wr.shutdown().await;
            std::future::pending::<()>().await;
        };
        let out = self.out.clone();
        let data = self.data;
        let downstream = async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match read_some(&mut rd, &mut buf).await {
                    Ok(0) => return true,
                    Ok(n) => n,
                    Err(error) => {
                        debug!(%error, "reading from the pod failed");
                        return true;
                    }
                };
                if out.send(Frame::Data { stream: data, fin: false, data: Bytes::copy_from_slice(&buf[..n]) }).await.is_err() {
                    return false;
                }
            }
        };
        let fin_data = tokio::select! {
            ended = downstream => ended,
            () = upstream => false,
            _ = cancelled => false,
        };
        self.finish(fin_data).await;
    }

    /// Ends the data stream (unless the client reset it) and then the error stream.
    async fn finish(self, fin_data: bool) {
        if fin_data {
            let _ = self.out.send(Frame::Data { stream: self.data, fin: true, data: Bytes::new() }).await;
        }
        let _ = self.out.send(Frame::Data { stream: self.error, fin: true, data: Bytes::new() }).await;
    }
}

async fn read_some<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf).await {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};

    /// Connects every port to an in-memory echo, except port 9 (refused).
    struct Echo;

    #[async_trait]
    impl NodeConnector for Echo {
        async fn port_forward(&self, _namespace: &str, _pod: &str, port: u16) -> Result<Box<dyn ExecIo>> {
            if port == 9 {
                return Err(Error::internal("connection refused"));
            }
            let (a, mut b) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = b.read(&mut buf).await {
                    if n == 0 || b.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Box::new(a))
        }
    }

    struct Client<S> {
        io: S,
        enc: FrameEncoder,
        dec: FrameDecoder,
        buf: BytesMut,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
        async fn send(&mut self, frame: Frame) {
            let mut bytes = Vec::new();
            assert!(self.enc.encode(&frame, &mut bytes).is_ok());
            assert!(self.io.write_all(&bytes).await.is_ok());
        }

        async fn next(&mut self) -> Option<Frame> {
            for _ in 0..1000 {
                if let Ok(Some(frame)) = self.dec.decode(&mut self.buf) {
                    return Some(frame);
                }
                let read = tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf)).await;
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return None,
                }
            }
            None
        }

        async fn open(&mut self, stream: u32, kind: &str, port: u16, request: u32) {
            let headers = HeaderBlock(vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.to_string()),
                ("requestid".into(), request.to_string()),
            ]);
            self.send(Frame::SynStream { stream, associated: 0, priority: 0, flags: 0, headers }).await;
            assert_eq!(self.next().await, Some(Frame::SynReply { stream, flags: 0, headers: HeaderBlock::default() }));
        }
    }

    fn session() -> (Client<DuplexStream>, tokio::task::JoinHandle<Result<(), PortForwardError>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move { serve_port_forward(Box::new(server), Transport::Spdy, "default", "p", Arc::new(Echo)).await });
        let enc = FrameEncoder::new().unwrap_or_else(|e| panic!("{e}"));
        (Client { io: client, enc, dec: FrameDecoder::new(), buf: BytesMut::new() }, task)
    }

    #[tokio::test]
    async fn a_pair_of_streams_forwards_bytes_and_ends_with_fin() {
        let (mut c, task) = session();
        c.open(1, "error", 80, 0).await;
        c.send(Frame::Data { stream: 1, fin: true, data: Bytes::new() }).await;
        c.open(3, "data", 80, 0).await;
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 1 }));
        c.send(Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"ping") }).await;
        assert_eq!(c.next().await, Some(Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"ping") }));
        // The client's FIN half-closes the pod side; the echo closes, so the data stream ends,
        // then the error stream, empty.
        c.send(Frame::Data { stream: 3, fin: true, data: Bytes::new() }).await;
        assert_eq!(c.next().await, Some(Frame::Data { stream: 3, fin: true, data: Bytes::new() }));
        assert_eq!(c.next().await, Some(Frame::Data { stream: 1, fin: true, data: Bytes::new() }));
        drop(c);
        assert!(matches!(task.await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn an_unreachable_port_is_reported_on_the_error_stream() {
        let (mut c, _task) = session();
        c.open(1, "error", 9, 0).await;
        c.open(3, "data", 9, 0).await;
        match c.next().await {
            Some(Frame::Data { stream: 1, fin: false, data }) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                assert!(text.contains("error forwarding port 9 to pod default/p") && text.contains("connection refused"), "{text}");
            }
            other => panic!("expected the error message, got {other:?}"),
        }
        let mut ends = vec![c.next().await, c.next().await];
        ends.sort_by_key(|f| format!("{f:?}"));
        assert_eq!(
            ends,
            vec![
                Some(Frame::Data { stream: 1, fin: true, data: Bytes::new() }),
                Some(Frame::Data { stream: 3, fin: true, data: Bytes::new() })
            ]
        );
        // The session still serves new connections.
        c.open(5, "error", 80, 1).await;
        c.open(7, "data", 80, 1).await;
        c.send(Frame::Data { stream: 7, fin: false, data: Bytes::from_static(b"again") }).await;
        assert_eq!(c.next().await, Some(Frame::Data { stream: 7, fin: false, data: Bytes::from_static(b"again") }));
    }

    #[tokio::test]
    async fn streams_out_of_order_or_of_unknown_type_are_reset() {
        let (mut c, _task) = session();
        c.open(5, "error", 80, 0).await;
        let headers =
            HeaderBlock(vec![("streamtype".into(), "data".into()), ("port".into(), "80".into()), ("requestid".into(), "0".into())]);
        c.send(Frame::SynStream { stream: 3, associated: 0, priority: 0, flags: 0, headers }).await;
        assert_eq!(c.next().await, Some(Frame::RstStream { stream: 3, status: spdy::RST_PROTOCOL_ERROR }));
        let headers = HeaderBlock(vec![("streamtype".into(), "video".into())]);
        c.send(Frame::SynStream { stream: 7, associated: 0, priority: 0, flags: 0, headers }).await;
        assert_eq!(c.next().await, Some(Frame::RstStream { stream: 7, status: spdy::RST_PROTOCOL_ERROR }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_left_without_its_partner_times_out() {
        let (mut c, _task) = session();
        c.open(1, "error", 80, 0).await;
        tokio::time::sleep(PAIR_TIMEOUT + Duration::from_secs(6)).await;
        match c.next().await {
            Some(Frame::Data { stream: 1, fin: true, data }) => assert!(String::from_utf8_lossy(&data).contains("timed out"), "{data:?}"),
            other => panic!("expected the timeout on the error stream, got {other:?}"),
        }
        // The request id is free again.
        c.open(3, "error", 80, 0).await;
    }

    #[tokio::test]
    async fn the_websocket_tunnel_carries_frames_split_and_merged_and_refuses_text() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task =
            tokio::spawn(async move { serve_port_forward(Box::new(server), Transport::WebSocket, "default", "p", Arc::new(Echo)).await });
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut enc = FrameEncoder::new().unwrap_or_else(|e| panic!("{e}"));
        let mut wire = Vec::new();
        for (stream, kind) in [(1, "error"), (3, "data")] {
            let headers =
                HeaderBlock(vec![("streamtype".into(), kind.into()), ("port".into(), "80".into()), ("requestid".into(), "0".into())]);
            assert!(enc.encode(&Frame::SynStream { stream, associated: 0, priority: 0, flags: 0, headers }, &mut wire).is_ok());
        }
        assert!(enc.encode(&Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"tunneled") }, &mut wire).is_ok());
        // Both SYN_STREAMs and the data in messages cut at odd places, as a byte stream.
        for piece in wire.chunks(7) {
            assert!(ws.send(Message::Binary(Bytes::copy_from_slice(piece))).await.is_ok());
        }
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => buf.extend_from_slice(&b),
                other => panic!("expected binary messages, got {other:?}"),
            }
            while let Ok(Some(frame)) = dec.decode(&mut buf) {
                got.push(frame);
            }
        }
        assert_eq!(got[2], Frame::Data { stream: 3, fin: false, data: Bytes::from_static(b"tunneled") });
        assert!(ws.send(Message::Text("hello".into())).await.is_ok());
        assert!(matches!(task.await, Ok(Err(PortForwardError::TextMessage))));
    }

    #[tokio::test]
    async fn garbage_ends_the_session_with_an_error_and_a_goaway() {
        let (mut c, task) = session();
        assert!(c.io.write_all(&[0x80, 0x02, 0, 1, 0, 0, 0, 0]).await.is_ok());
        assert_eq!(c.next().await, Some(Frame::GoAway { last_good: 0, status: 1 }));
        assert!(matches!(task.await, Ok(Err(PortForwardError::Spdy(SpdyError::Version(2))))));
    }
}
