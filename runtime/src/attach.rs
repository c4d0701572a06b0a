//! The standard streams of a container's main process that attach sessions share (what
//! `kubectl attach` and `kubectl run -it` reach): one stdin fed by every session, output copied
//! to every session from the moment it attaches, and the terminal's size.
//!
//! A backend makes an [`AttachPoint`] when it starts a container, wraps the container's output
//! pipes in [`AttachPoint::tee`] before it pumps them into the log, and [`close`](AttachPoint::close)s
//! it once the container has exited and its output is drained, which ends every session.

use crate::cri::{AttachSession, Resize, TerminalSize};
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{broadcast, mpsc, watch};

/// Output chunks kept for a slow session before it misses some.
const OUTPUT_QUEUE: usize = 256;
/// Stdin chunks waiting for the container before the sessions' writers wait.
const STDIN_QUEUE: usize = 64;
/// Buffer of a session's pipes.
const PIPE: usize = 64 * 1024;

/// Which output stream a chunk belongs to.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;

/// The shared stdio of one running container (see the module documentation).
pub(crate) struct AttachPoint {
    inner: Mutex<Shared>,
    /// Set by [`close`](Self::close): sessions end even while an output pipe stays open.
    closed: watch::Sender<bool>,
    stdin_once: bool,
    tty: bool,
}

struct Shared {
    /// Feeds the task that owns the container's stdin; `None` once stdin is closed (or it has none).
    stdin: Option<mpsc::Sender<Bytes>>,
    /// Output to the sessions; `None` once the container has exited.
    output: Option<broadcast::Sender<(u8, Bytes)>>,
    resize: Option<Resize>,
}

impl std::fmt::Debug for AttachPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachPoint").field("stdin_once", &self.stdin_once).field("tty", &self.tty).finish_non_exhaustive()
    }
}

impl AttachPoint {
    /// A point over the container's stdin (`None`: it takes none). `stdin_once` closes stdin when
    /// the first session that wrote to it detaches; `tty` marks output as a terminal's (one
    /// stream) and `resize` sets its size.
    pub(crate) fn new(stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>, stdin_once: bool, tty: bool, resize: Option<Resize>) -> Arc<Self> {
        let stdin = stdin.map(|mut writer| {
            let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
            tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                        return;
                    }
                }
                // Every sender is gone: the container's stdin ends (^D on a terminal).
                let _ = writer.shutdown().await;
            });
            tx
        });
        let (output, _) = broadcast::channel(OUTPUT_QUEUE);
        let (closed, _) = watch::channel(false);
        Arc::new(Self { inner: Mutex::new(Shared { stdin, output: Some(output), resize }), closed, stdin_once, tty })
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wraps the container's stdout (`stderr == false`) or stderr pipe so that what is read from
    /// it also reaches the attached sessions.
    pub(crate) fn tee<R>(&self, reader: R, stderr: bool) -> Tee<R> {
        Tee { inner: reader, tx: self.shared().output.clone(), stream: if stderr { STDERR } else { STDOUT } }
    }

    /// The container has exited and its output is drained: sessions end, stdin closes.
    pub(crate) fn close(&self) {
        let mut shared = self.shared();
        shared.stdin = None;
        shared.output = None;
        shared.resize = None;
        drop(shared);
        self.closed.send_replace(true);
    }

    /// Whether the container's stdin is still open.
    #[cfg(test)]
    fn stdin_open(&self) -> bool {
        self.shared().stdin.is_some()
    }

    /// A new session: output from now on, the shared stdin (when open), the terminal's size set
    /// to `size` first.
    pub(crate) fn session(self: &Arc<Self>, size: Option<TerminalSize>) -> AttachSession {
        let (output, stdin, resize) = {
            let shared = self.shared();
            (shared.output.as_ref().map(broadcast::Sender::subscribe), shared.stdin.clone(), shared.resize.clone())
        };
        if let (Some(apply), Some(size)) = (&resize, size)
            && let Err(error) = apply(size)
        {
            tracing::debug!(%error, "attach: cannot set the terminal size");
        }
        let (mut out_w, out_r) = tokio::io::duplex(PIPE);
        let (mut err_w, err_r) = tokio::io::duplex(PIPE);
        if let Some(mut output) = output {
            let mut closed = self.closed.subscribe();
            tokio::spawn(async move {
                let mut draining = false;
                loop {
                    let next = if draining {
                        output.try_recv().map_err(|e| match e {
                            broadcast::error::TryRecvError::Lagged(n) => broadcast::error::RecvError::Lagged(n),
                            _ => broadcast::error::RecvError::Closed,
                        })
                    } else {
                        tokio::select! {
                            biased;
                            next = output.recv() => next,
                            _ = closed.wait_for(|c| *c) => {
                                // What was sent before the close still reaches the session.
                                draining = true;
                                continue;
                            }
                        }
                    };
                    let (stream, chunk) = match next {
                        Ok(item) => item,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::debug!(missed, "attach session too slow; output chunks dropped");
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    let to = if stream == STDERR { &mut err_w } else { &mut out_w };
                    if to.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
        let stdin = stdin.map(|tx| -> Pin<Box<dyn AsyncWrite + Send>> {
            let (w, mut r) = tokio::io::duplex(PIPE);
            let point = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                // The session detached (its client closed stdin or went away).
                drop(tx);
                if let Some(point) = point.upgrade()
                    && point.stdin_once
                {
                    point.shared().stdin = None;
                }
            });
            Box::pin(w)
        });
        AttachSession { stdin, stdout: Box::pin(out_r), stderr: Box::pin(err_r), tty: self.tty, resize }
    }
}

/// A container output pipe whose bytes are also copied to the attached sessions
/// ([`AttachPoint::tee`]).
#[derive(Debug)]
pub(crate) struct Tee<R> {
    inner: R,
    tx: Option<broadcast::Sender<(u8, Bytes)>>,
    stream: u8,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tee<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if let Some(tx) = &self.tx
            && !fresh.is_empty()
            && tx.receiver_count() > 0
        {
            let _ = tx.send((self.stream, Bytes::copy_from_slice(fresh)));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    async fn read_some(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await.map_err(std::io::Error::other)??;
        buf.truncate(n);
        Ok(buf)
    }

    #[tokio::test]
    async fn sessions_share_stdin_and_see_output_from_when_they_attach() -> TestResult {
        let (container_in, mut container_stdin) = tokio::io::duplex(1024);
        let point = AttachPoint::new(Some(Box::pin(container_in)), false, false, None);
        let (mut pipe_w, pipe_r) = tokio::io::duplex(1024);
        let mut tee = point.tee(pipe_r, false);
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tee, &mut tokio::io::sink()).await;
        });
        pipe_w.write_all(b"before\n").await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut first = point.session(None);
        pipe_w.write_all(b"after\n").await?;
        assert_eq!(read_some(&mut first.stdout).await?, b"after\n");
        first.stdin.as_mut().ok_or("no stdin")?.write_all(b"one\n").await?;
        assert_eq!(read_some(&mut container_stdin).await?, b"one\n");
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(point.stdin_open(), "stdin stays open across sessions without stdinOnce");
        let mut second = point.session(None);
        second.stdin.as_mut().ok_or("no stdin")?.write_all(b"two\n").await?;
        assert_eq!(read_some(&mut container_stdin).await?, b"two\n");
        point.close();
        drop(pipe_w);
        assert_eq!(read_some(&mut second.stdout).await?, b"", "output ends once the container exited");
        Ok(())
    }

    #[tokio::test]
    async fn stdin_once_closes_stdin_when_the_first_session_detaches() -> TestResult {
        let (container_in, mut container_stdin) = tokio::io::duplex(1024);
        let point = AttachPoint::new(Some(Box::pin(container_in)), true, false, None);
        let mut session = point.session(None);
        let mut stdin = session.stdin.take().ok_or("no stdin")?;
        stdin.write_all(b"data").await?;
        stdin.shutdown().await?;
        drop(session);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), container_stdin.read_to_end(&mut got)).await??;
        assert_eq!(got, b"data");
        assert!(point.session(None).stdin.is_none(), "a later session gets no stdin");
        Ok(())
    }
}
