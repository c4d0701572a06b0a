//! The `channel.k8s.io` streaming protocol of `pods/exec` and `pods/attach` over a WebSocket: the
//! server side that any [`NodeConnector`](super::NodeConnector) uses on the connection it is given.
//!
//! Every WebSocket message carries one stream's bytes; its first byte names the stream: 0 stdin,
//! 1 stdout, 2 stderr, 3 the error stream (the outcome), 4 terminal resizes (`{"Width","Height"}`
//! JSON). `v5.channel.k8s.io` (what kubectl 1.30+ asks for, and only that) adds message
//! `[255, stream]`: the client closed that stream (how `echo hi | kubectl exec -i` ends stdin).
//! From v4 on the outcome is a `metav1.Status`: `Success`, or `Failure` with reason
//! `NonZeroExitCode` and an `ExitCode` cause, which kubectl turns into its own exit code. The
//! `base64` variants send text messages: the stream as an ASCII digit, then base64.
//!
//! [`serve_exec`] runs a whole session for a process with pipes; [`ChannelSession`] is the part
//! beneath it for connectors that move the bytes themselves.

use super::node::{ExecIo, ExecRequest};
use base64::Engine as _;
use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Error, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::debug;

/// A `channel.k8s.io` subprotocol version this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelProtocol {
    /// `v5.channel.k8s.io`: v4 plus the stream close signal (kubectl's only choice since 1.30).
    V5,
    /// `v4.channel.k8s.io`: binary messages, the outcome as a JSON `Status`.
    V4,
    /// `v4.base64.channel.k8s.io`: v4 in base64 text messages.
    V4Base64,
    /// `channel.k8s.io`: binary messages, the outcome as plain text (nothing on success).
    V1,
    /// `base64.channel.k8s.io`: v1 in base64 text messages.
    V1Base64,
}

impl ChannelProtocol {
    /// Every version, most preferred first.
    pub const ALL: [ChannelProtocol; 5] = [Self::V5, Self::V4, Self::V4Base64, Self::V1, Self::V1Base64];

    /// The subprotocol's name in `Sec-WebSocket-Protocol`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V5 => "v5.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
            Self::V4Base64 => "v4.base64.channel.k8s.io",
            Self::V1 => "channel.k8s.io",
            Self::V1Base64 => "base64.channel.k8s.io",
        }
    }

    /// The version a subprotocol name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Every name, most preferred first: what [`NodeConnector::exec_protocols`](super::NodeConnector::exec_protocols)
    /// returns for a connector that serves exec through this module.
    pub fn names() -> Vec<String> {
        Self::ALL.iter().map(|p| p.name().to_owned()).collect()
    }

    fn base64(self) -> bool {
        matches!(self, Self::V4Base64 | Self::V1Base64)
    }

    fn status_json(self) -> bool {
        matches!(self, Self::V5 | Self::V4 | Self::V4Base64)
    }

    fn stream_close(self) -> bool {
        self == Self::V5
    }
}

/// The streams of the protocol, by their number on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Channel {
    /// The command's standard input (client to server).
    Stdin = 0,
    /// The command's standard output.
    Stdout = 1,
    /// The command's standard error.
    Stderr = 2,
    /// The outcome of the session (server to client, once, at the end).
    Error = 3,
    /// Terminal size changes (client to server).
    Resize = 4,
}

/// The v5 message that closes a stream: `[CLOSE, stream]`.
const CLOSE_SIGNAL: u8 = 255;

/// A terminal size from the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How an exec session ended, as reported on the error stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExecOutcome {
    /// The command exited with this code.
    Exited(i32),
    /// The command could not run (or its container went away); kubectl prints the message.
    Failed(Error),
}

/// The WebSocket side of a session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The negotiated subprotocol is none of [`ChannelProtocol::ALL`].
    #[error("unsupported exec subprotocol {0:?}")]
    UnknownProtocol(String),
    /// The WebSocket connection failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tungstenite::Error>),
    /// The session is over (the client went away or the session was finished).
    #[error("the exec connection is closed")]
    Closed,
}

/// How many WebSocket messages wait to be sent before a writer waits.
const OUT_QUEUE: usize = 16;
/// How many stdin messages wait for the command before the client is no longer read.
const STDIN_QUEUE: usize = 16;
/// The most bytes one stdout or stderr message carries.
const CHUNK: usize = 32 * 1024;
/// How long [`ChannelSession::finish`] waits for the client to answer the close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One WebSocket connection speaking `channel.k8s.io`: the client's stdin and resizes come out of
/// it, the command's output and outcome go in. A background task owns the WebSocket (it answers
/// pings and keeps reading while the command runs); drop the session or call
/// [`finish`](Self::finish) to close it.
pub struct ChannelSession {
    protocol: ChannelProtocol,
    out: mpsc::Sender<Message>,
    stdin: Option<ChannelReader>,
    resizes: Option<mpsc::Receiver<TerminalSize>>,
    gone: watch::Receiver<bool>,
    pump: tokio::task::JoinHandle<Result<(), ChannelError>>,
}

impl std::fmt::Debug for ChannelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSession").field("protocol", &self.protocol).finish_non_exhaustive()
    }
}

impl ChannelSession {
    /// Starts speaking `protocol` (the subprotocol agreed in the upgrade, e.g.
    /// [`ExecRequest::protocol`]) as the WebSocket server on an upgraded connection.
    pub async fn accept(io: Box<dyn ExecIo>, protocol: &str) -> Result<Self, ChannelError> {
        let protocol = ChannelProtocol::parse(protocol).ok_or_else(|| ChannelError::UnknownProtocol(protocol.to_owned()))?;
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        let (resize_tx, resize_rx) = mpsc::channel(STDIN_QUEUE);
        let (gone_tx, gone) = watch::channel(false);
        let pump = tokio::spawn(async move {
            let result = pump(ws, protocol, out_rx, Some(stdin_tx), resize_tx).await;
            let _ = gone_tx.send(true);
            if let Err(error) = &result {
                debug!(%error, "exec websocket ended");
            }
            result
        });
        Ok(Self { protocol, out, stdin: Some(ChannelReader { rx: stdin_rx, buf: Bytes::new() }), resizes: Some(resize_rx), gone, pump })
    }

    /// The negotiated protocol.
    pub fn protocol(&self) -> ChannelProtocol {
        self.protocol
    }

    /// The client's standard input, ending when the client closes it (v5) or goes away; `None`
    /// after the first call. Dropping it discards whatever the client sends.
    pub fn take_stdin(&mut self) -> Option<ChannelReader> {
        self.stdin.take()
    }

    /// Waits (at most `wait`) for the client's first terminal size, which kubectl sends as soon
    /// as a session with a terminal opens, so that a connector can start the command's terminal
    /// at it. Later sizes stay in the session: [`run_exec`] applies them. `None` when none came
    /// in time (or the resize stream was taken).
    pub async fn first_size(&mut self, wait: Duration) -> Option<TerminalSize> {
        let sizes = self.resizes.as_mut()?;
        tokio::time::timeout(wait, sizes.recv()).await.ok().flatten()
    }

    /// The client's terminal size changes; `None` after the first call.
    pub fn take_resizes(&mut self) -> Option<mpsc::Receiver<TerminalSize>> {
        self.resizes.take()
    }

    /// A writer of one output stream (stdout or stderr; any channel is accepted).
    pub fn writer(&self, channel: Channel) -> ChannelWriter {
        ChannelWriter { out: self.out.clone(), protocol: self.protocol, channel: channel as u8 }
    }

    /// Resolves once the client has gone away (or the session closed).
    pub fn hangup(&self) -> Hangup {
        Hangup(self.gone.clone())
    }

    /// Reports the outcome on the error stream, closes the WebSocket and waits (a few seconds at
    /// most) for the client to acknowledge. Output written before is delivered first.
    pub async fn finish(self, outcome: ExecOutcome) -> Result<(), ChannelError> {
        let Self { protocol, out, mut pump, .. } = self;
        if let Some(payload) = status_payload(protocol, &outcome) {
            out.send(encode(protocol, Channel::Error as u8, &payload)).await.map_err(|_| ChannelError::Closed)?;
        }
        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        out.send(Message::Close(Some(close))).await.map_err(|_| ChannelError::Closed)?;
        drop(out);
        match tokio::time::timeout(CLOSE_WAIT, &mut pump).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ChannelError::Closed),
            Err(_) => {
                pump.abort();
                Ok(())
            }
        }
    }
}

/// Resolves when the client of a [`ChannelSession`] has gone away.
#[derive(Debug, Clone)]
pub struct Hangup(watch::Receiver<bool>);

impl Hangup {
    /// Waits until the client has gone away.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|gone| *gone).await;
    }
}

/// The client's standard input of a [`ChannelSession`].
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    buf: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while this.buf.is_empty() {
            match ready!(this.rx.poll_recv(cx)) {
                Some(bytes) => this.buf = bytes,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = out.remaining().min(this.buf.len());
        out.put_slice(&this.buf.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// Writes one output stream of a [`ChannelSession`].
#[derive(Debug, Clone)]
pub struct ChannelWriter {
    out: mpsc::Sender<Message>,
    protocol: ChannelProtocol,
    channel: u8,
}

impl ChannelWriter {
    /// Sends bytes as one message (nothing for an empty slice).
    pub async fn write(&self, data: &[u8]) -> Result<(), ChannelError> {
        if data.is_empty() {
            return Ok(());
        }
        self.out.send(encode(self.protocol, self.channel, data)).await.map_err(|_| ChannelError::Closed)
    }

    /// Copies a reader to the stream until its end; returns the bytes copied.
    pub async fn copy_from<R: AsyncRead + Unpin + ?Sized>(&self, reader: &mut R) -> Result<u64, ChannelError> {
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    debug!(%error, "exec output read failed");
                    return Ok(total);
                }
            };
            self.write(&buf[..n]).await?;
            total += n as u64;
        }
    }
}

/// A message from the client, decoded.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// Bytes for a stream.
    Data(u8, Bytes),
    /// v5: the client closed a stream.
    Close(u8),
    /// The client closed the connection.
    Closed,
    /// Nothing for us (pings, pongs, empty messages).
    Ignored,
}

fn encode(protocol: ChannelProtocol, channel: u8, data: &[u8]) -> Message {
    if protocol.base64() {
        let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        text.push(char::from(b'0'.wrapping_add(channel)));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::Text(text.into())
    } else {
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::Binary(bytes.into())
    }
}

fn decode(protocol: ChannelProtocol, message: Message) -> Incoming {
    match message {
        Message::Binary(bytes) if !protocol.base64() => match bytes.first() {
            None => Incoming::Ignored,
            Some(&CLOSE_SIGNAL) if protocol.stream_close() => bytes.get(1).map_or(Incoming::Ignored, |&c| Incoming::Close(c)),
            Some(&channel) => Incoming::Data(channel, bytes.slice(1..)),
        },
        Message::Text(text) if protocol.base64() => {
            let text = text.as_str();
            let Some(first) = text.bytes().next() else { return Incoming::Ignored };
            match base64::engine::general_purpose::STANDARD.decode(text.get(1..).unwrap_or_default()) {
                Ok(data) => Incoming::Data(first.wrapping_sub(b'0'), data.into()),
                Err(_) => Incoming::Ignored,
            }
        }
        Message::Close(_) => Incoming::Closed,
        _ => Incoming::Ignored,
    }
}

/// What the error stream carries for an outcome; `None` when nothing is sent (v1 success).
fn status_payload(protocol: ChannelProtocol, outcome: &ExecOutcome) -> Option<Vec<u8>> {
    let (status, message) = match outcome {
        ExecOutcome::Exited(0) => (json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}), None),
        ExecOutcome::Exited(code) => {
            // kubectl parses the cause as an 8-bit exit code.
            let code = u8::try_from(*code).unwrap_or(u8::MAX);
            let message = format!("command terminated with non-zero exit code: exit status {code}");
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            });
            (status, Some(message))
        }
        ExecOutcome::Failed(error) => {
            let status = error.to_status();
            let message = status.message.clone().unwrap_or_else(|| error.to_string());
            (serde_json::to_value(&status).unwrap_or_else(|_| json!({"status": "Failure", "message": message})), Some(message))
        }
    };
    if protocol.status_json() { serde_json::to_vec(&status).ok() } else { message.map(String::into_bytes) }
}

/// Owns the WebSocket: sends what the session queues, reads the client (stdin, resizes, close
/// signals, pings) without ever blocking the sending side.
async fn pump(
    mut ws: WebSocketStream<Box<dyn ExecIo>>,
    protocol: ChannelProtocol,
    mut out: mpsc::Receiver<Message>,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    resizes: mpsc::Sender<TerminalSize>,
) -> Result<(), ChannelError> {
    // Stdin the command has not taken yet: the client is not read until it has.
    let mut pending: Option<Bytes> = None;
    // We sent our close; only the client's answer is awaited.
    let mut closing = false;
    loop {
        let stdin_room = {
            let stdin = stdin.clone();
            async move {
                match stdin {
                    Some(tx) => tx.reserve_owned().await.ok(),
                    None => None,
                }
            }
        };
        tokio::select! {
            permit = stdin_room, if pending.is_some() => match (permit, pending.take()) {
                (Some(permit), Some(data)) => {
                    permit.send(data);
                }
                _ => stdin = None,
            },
            incoming = ws.next(), if pending.is_none() => match incoming {
                None => return Ok(()),
                Some(Err(_)) if closing => return Ok(()),
                Some(Err(error)) => return Err(Box::new(error).into()),
                Some(Ok(message)) => match decode(protocol, message) {
                    Incoming::Data(0, data) => {
                        if stdin.is_some() && !data.is_empty() {
                            pending = Some(data);
                        }
                    }
                    Incoming::Data(4, data) => match serde_json::from_slice::<TerminalSize>(&data) {
                        Ok(size) => {
                            let _ = resizes.try_send(size);
                        }
                        Err(error) => debug!(%error, "bad terminal size message"),
                    },
                    Incoming::Data(..) | Incoming::Ignored => {}
                    Incoming::Close(0) => stdin = None,
                    Incoming::Close(_) => {}
                    // The library answers the close; the stream ends after that.
                    Incoming::Closed => stdin = None,
                },
            },
            message = out.recv(), if !closing => {
                let message = message.unwrap_or(Message::Close(None));
                closing = matches!(message, Message::Close(_));
                if let Err(error) = ws.send(message).await {
                    return if closing { Ok(()) } else { Err(Box::new(error).into()) };
                }
            }
        }
    }
}

/// A command with pipes, as a node runs it for [`serve_exec`].
pub struct ExecProcess {
    /// The command's standard input (`None`: it takes none).
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// The command's standard output.
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// The command's standard error.
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// Resolves to the exit code when the command ends; dropping it must stop the command.
    pub exit: BoxFuture<'static, Result<i32>>,
    /// Applies a terminal size (`None`: resizes are ignored, e.g. without a terminal).
    pub resize: Option<Box<dyn Fn(TerminalSize) + Send + Sync>>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess").finish_non_exhaustive()
    }
}

/// Runs a whole exec session on an upgraded connection: the client's stdin into the command (and
/// closed when the client closes it), its stdout and stderr out (stderr on stdout with a
/// terminal, as kubectl expects), the exit code as the outcome. `process` is the command, or why
/// it could not start (sent to the client as the outcome). When the client goes away the command
/// is dropped, which stops it.
pub async fn serve_exec(io: Box<dyn ExecIo>, request: &ExecRequest, process: Result<ExecProcess>) -> Result<(), ChannelError> {
    let session = ChannelSession::accept(io, &request.protocol).await?;
    run_exec(session, request, process).await
}

/// [`serve_exec`] on a session already accepted, e.g. by a connector that waited for the
/// client's first terminal size before it started the command.
pub async fn run_exec(mut session: ChannelSession, request: &ExecRequest, process: Result<ExecProcess>) -> Result<(), ChannelError> {
    let process = match process {
        Ok(process) => process,
        Err(error) => return session.finish(ExecOutcome::Failed(error)).await,
    };
    let ExecProcess { stdin, mut stdout, mut stderr, exit, resize } = process;
    let mut hangup = session.hangup();
    let client_stdin = session.take_stdin();
    let stdin_task = match (request.stdin, stdin, client_stdin) {
        (true, Some(mut to), Some(mut from)) => Some(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        })),
        // Dropping the command's stdin closes it.
        _ => None,
    };
    let resize_task = match (resize, session.take_resizes()) {
        (Some(apply), Some(mut sizes)) => Some(tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                apply(size);
            }
        })),
        _ => None,
    };
    let out = request.stdout.then(|| session.writer(Channel::Stdout));
    let err = if request.tty { out.clone() } else { request.stderr.then(|| session.writer(Channel::Stderr)) };
    let run = async {
        let (code, (), ()) = tokio::join!(exit, forward(&mut stdout, out), forward(&mut stderr, err));
        code
    };
    let outcome = tokio::select! {
        code = run => code,
        () = hangup.wait() => {
            debug!(pod = %request.pod, "exec client went away; stopping the command");
            Err(Error::internal("the client went away"))
        }
    };
    for task in [stdin_task, resize_task].into_iter().flatten() {
        task.abort();
    }
    if *session.gone.borrow() {
        return Ok(());
    }
    session
        .finish(match outcome {
            Ok(code) => ExecOutcome::Exited(code),
            Err(error) => ExecOutcome::Failed(error),
        })
        .await
}

/// Copies one output pipe to its stream, or drains it when nobody wants it (so that the command
/// never blocks on a full pipe).
async fn forward(reader: &mut Pin<Box<dyn AsyncRead + Send>>, writer: Option<ChannelWriter>) {
    if let Some(writer) = writer
        && writer.copy_from(reader).await.is_ok()
    {
        return;
    }
    let _ = tokio::io::copy(reader, &mut tokio::io::sink()).await;
}

/// The container an exec or attach request reaches in `pod`, checked the way kube-apiserver does
/// before it connects to the node: the pod must be on a node, a named container must be one of
/// the pod's, an unnamed one is the pod's only container.
pub fn exec_container(pod: &Pod, container: Option<&str>) -> Result<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or_else(|| Error::bad_request(format!("pod {name} has no spec")))?;
    if spec.node_name.as_deref().is_none_or(str::is_empty) {
        return Err(Error::bad_request(format!("pod {name} does not have a host assigned")));
    }
    let names: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .chain(spec.containers.iter().map(|c| c.name.as_str()))
        .chain(spec.ephemeral_containers.iter().flatten().map(|c| c.name.as_str()))
        .collect();
    match container.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_owned()),
        Some(c) => Err(Error::bad_request(format!("container {c} is not valid for pod {name}"))),
        None => match spec.containers.as_slice() {
            [only] => Ok(only.name.clone()),
            all => {
                let all: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                Err(Error::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", all.join(" "))))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    type Client = WebSocketStream<DuplexStream>;
    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn request(protocol: ChannelProtocol, stdin: bool) -> ExecRequest {
        ExecRequest {
            namespace: "default".into(),
            pod: "p".into(),
            command: vec!["cmd".into()],
            stdin,
            stdout: true,
            stderr: true,
            protocol: protocol.name().into(),
            ..ExecRequest::default()
        }
    }

    /// A client and the server end of a connection.
    async fn connect() -> (Client, Box<dyn ExecIo>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        (WebSocketStream::from_raw_socket(client, Role::Client, None).await, Box::new(server))
    }

    /// Everything the client receives until the server closes: bytes per channel.
    async fn collect(client: &mut Client, protocol: ChannelProtocol) -> std::collections::BTreeMap<u8, Vec<u8>> {
        let mut got = std::collections::BTreeMap::<u8, Vec<u8>>::new();
        while let Some(Ok(message)) = client.next().await {
            if let Incoming::Data(channel, data) = decode(protocol, message) {
                got.entry(channel).or_default().extend_from_slice(&data);
            }
        }
        got
    }

    /// A process that writes `out` and `err` and exits with `code`, and echoes stdin to stdout
    /// when `echo` is set.
    fn process(out: &'static [u8], err: &'static [u8], code: i32, echo: bool) -> ExecProcess {
        let (stdin_w, mut stdin_r) = tokio::io::duplex(1024);
        let (mut stdout_w, stdout_r) = tokio::io::duplex(1024);
        let (mut stderr_w, stderr_r) = tokio::io::duplex(1024);
        let exit = async move {
            stdout_w.write_all(out).await.map_err(|e| Error::internal(e.to_string()))?;
            stderr_w.write_all(err).await.map_err(|e| Error::internal(e.to_string()))?;
            if echo {
                tokio::io::copy(&mut stdin_r, &mut stdout_w).await.map_err(|e| Error::internal(e.to_string()))?;
            }
            Ok(code)
        };
        ExecProcess {
            stdin: Some(Box::pin(stdin_w)),
            stdout: Box::pin(stdout_r),
            stderr: Box::pin(stderr_r),
            exit: Box::pin(exit),
            resize: None,
        }
    }

    #[tokio::test]
    async fn output_streams_and_a_non_zero_exit_code_reach_the_client() -> TestResult {
        let (mut client, io) = connect().await;
        let req = request(ChannelProtocol::V5, false);
        let server = tokio::spawn(async move { serve_exec(io, &req, Ok(process(b"out\n", b"err\n", 3, false))).await });
        let got = collect(&mut client, ChannelProtocol::V5).await;
        server.await??;
        assert_eq!(got.get(&1).map(Vec::as_slice), Some(&b"out\n"[..]));
        assert_eq!(got.get(&2).map(Vec::as_slice), Some(&b"err\n"[..]));
        let status: serde_json::Value = serde_json::from_slice(got.get(&3).ok_or("no status")?)?;
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        Ok(())
    }

    #[tokio::test]
    async fn stdin_is_delivered_and_closed_by_the_v5_close_signal() -> TestResult {
        let (mut client, io) = connect().await;
        let req = request(ChannelProtocol::V5, true);
        let server = tokio::spawn(async move { serve_exec(io, &req, Ok(process(b"", b"", 0, true))).await });
        client.send(Message::Binary(Bytes::from_static(b"\x00hello "))).await?;
        client.send(Message::Binary(Bytes::from_static(b"\x00world"))).await?;
        client.send(Message::Binary(Bytes::from_static(&[CLOSE_SIGNAL, 0]))).await?;
        let got = tokio::time::timeout(Duration::from_secs(10), collect(&mut client, ChannelProtocol::V5)).await?;
        server.await??;
        assert_eq!(got.get(&1).map(Vec::as_slice), Some(&b"hello world"[..]));
        let status: serde_json::Value = serde_json::from_slice(got.get(&3).ok_or("no status")?)?;
        assert_eq!(status["status"], "Success");
        Ok(())
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_reported_as_a_failure_status() -> TestResult {
        let (mut client, io) = connect().await;
        let req = request(ChannelProtocol::V4, false);
        let failed = Err(Error::bad_request("container nope is not valid for pod p"));
        let server = tokio::spawn(async move { serve_exec(io, &req, failed).await });
        let got = collect(&mut client, ChannelProtocol::V4).await;
        server.await??;
        let status: serde_json::Value = serde_json::from_slice(got.get(&3).ok_or("no status")?)?;
        assert_eq!((status["status"].as_str(), status["reason"].as_str()), (Some("Failure"), Some("BadRequest")));
        assert_eq!(status["message"], "container nope is not valid for pod p");
        Ok(())
    }

    #[tokio::test]
    async fn base64_and_v1_protocols_encode_as_text_and_plain_errors() -> TestResult {
        let (mut client, io) = connect().await;
        let req = request(ChannelProtocol::V1Base64, false);
        let server = tokio::spawn(async move { serve_exec(io, &req, Ok(process(b"hi", b"", 2, false))).await });
        let mut texts = Vec::new();
        while let Some(Ok(message)) = client.next().await {
            if let Message::Text(text) = message {
                texts.push(text.as_str().to_owned());
            }
        }
        server.await??;
        assert!(texts.contains(&"1aGk=".to_owned()), "{texts:?}");
        let error = texts.iter().find(|t| t.starts_with('3')).ok_or("no error message")?;
        let error = base64::engine::general_purpose::STANDARD.decode(&error[1..])?;
        assert_eq!(std::str::from_utf8(&error)?, "command terminated with non-zero exit code: exit status 2");
        Ok(())
    }

    #[tokio::test]
    async fn resizes_reach_the_session_and_pings_are_answered() -> TestResult {
        let (mut client, io) = connect().await;
        let mut session = ChannelSession::accept(io, "v5.channel.k8s.io").await?;
        let mut sizes = session.take_resizes().ok_or("no resizes")?;
        client.send(Message::Binary(Bytes::from_static(b"\x04{\"Width\":80,\"Height\":24}"))).await?;
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 80, height: 24 }));
        client.send(Message::Ping(Bytes::from_static(b"beat"))).await?;
        let pong = tokio::time::timeout(Duration::from_secs(5), client.next()).await?.ok_or("closed")??;
        assert_eq!(pong, Message::Pong(Bytes::from_static(b"beat")));
        session.writer(Channel::Stdout).write(b"x").await?;
        let finish = tokio::spawn(session.finish(ExecOutcome::Exited(0)));
        let got = collect(&mut client, ChannelProtocol::V5).await;
        finish.await??;
        assert_eq!(got.get(&1).map(Vec::as_slice), Some(&b"x"[..]));
        Ok(())
    }

    #[tokio::test]
    async fn the_first_size_is_taken_and_later_ones_reach_the_command() -> TestResult {
        let (mut client, io) = connect().await;
        let mut session = ChannelSession::accept(io, "v5.channel.k8s.io").await?;
        client.send(Message::Binary(Bytes::from_static(b"\x04{\"Width\":80,\"Height\":24}"))).await?;
        assert_eq!(session.first_size(Duration::from_secs(5)).await, Some(TerminalSize { width: 80, height: 24 }));
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let mut proc = process(b"", b"", 0, false);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        proc.exit = Box::pin(async move {
            let _ = done_rx.await;
            Ok(0)
        });
        proc.resize = Some(Box::new(move |size| {
            let _ = seen_tx.send(size);
        }));
        let mut req = request(ChannelProtocol::V5, false);
        req.tty = true;
        let server = tokio::spawn(async move { run_exec(session, &req, Ok(proc)).await });
        client.send(Message::Binary(Bytes::from_static(b"\x04{\"Width\":100,\"Height\":30}"))).await?;
        let later = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await?;
        assert_eq!(later, Some(TerminalSize { width: 100, height: 30 }));
        let _ = done_tx.send(());
        let _ = collect(&mut client, ChannelProtocol::V5).await;
        server.await??;
        Ok(())
    }

    #[tokio::test]
    async fn a_client_that_goes_away_stops_the_command() -> TestResult {
        let (client, io) = connect().await;
        let req = request(ChannelProtocol::V5, false);
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let mut proc = process(b"", b"", 0, false);
        proc.exit = Box::pin(async move {
            let _guard = dropped_tx;
            futures::future::pending::<()>().await;
            Ok(0)
        });
        let server = tokio::spawn(async move { serve_exec(io, &req, Ok(proc)).await });
        drop(client);
        // The exit future (the command) is dropped, which closes the guard's channel.
        assert!(tokio::time::timeout(Duration::from_secs(5), dropped_rx).await?.is_err());
        tokio::time::timeout(Duration::from_secs(5), server).await???;
        Ok(())
    }

    #[test]
    fn exec_container_checks_like_the_api_server() -> TestResult {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
        }))?;
        assert_eq!(exec_container(&pod, Some("b"))?, "b");
        let missing = exec_container(&pod, Some("c")).err().ok_or("accepted c")?;
        assert_eq!(missing.to_status().message.as_deref(), Some("container c is not valid for pod p"));
        let ambiguous = exec_container(&pod, None).err().ok_or("accepted no name")?;
        assert!(ambiguous.to_string().contains("choose one of: [a b]"), "{ambiguous}");
        let unscheduled: Pod = serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "a"}]}}))?;
        assert!(exec_container(&unscheduled, None).is_err());
        Ok(())
    }

    #[test]
    fn protocols_round_trip_their_names() {
        for p in ChannelProtocol::ALL {
            assert_eq!(ChannelProtocol::parse(p.name()), Some(p));
        }
        assert_eq!(ChannelProtocol::names()[0], "v5.channel.k8s.io");
        assert_eq!(ChannelProtocol::parse("SPDY/3.1"), None);
    }
}
