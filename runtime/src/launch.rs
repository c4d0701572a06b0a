//! What the process and runc backends share to launch a container's main process (its
//! environment, its standard streams: a terminal of its own or pipes, and their wiring to the log
//! file and attach sessions) and to run an exec's process (over pipes or a terminal).

use crate::attach::AttachPoint;
use crate::cri::{ContainerConfig, ExecSession, Resize, SandboxStatus, TerminalSize};
use crate::error::{Result, RuntimeError};
use crate::{logs, sys};
use futures::future::BoxFuture;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A terminal's size when nobody gave one.
pub(crate) const DEFAULT_TERMINAL: TerminalSize = TerminalSize { width: 80, height: 24 };

/// The `TERM` a process on a terminal gets unless its environment names one.
pub(crate) const DEFAULT_TERM: (&str, &str) = ("TERM", "xterm");

/// Whether an environment names `TERM`.
pub(crate) fn names_term<'a>(env: impl IntoIterator<Item = &'a (String, String)>) -> bool {
    env.into_iter().any(|(k, _)| k == DEFAULT_TERM.0)
}

/// A container's environment in order (a later entry wins over an earlier one of the same name):
/// `PATH`, `HOSTNAME`, `POD_IP` (when the pod has one), the image's, then the config's.
pub(crate) fn container_env(config: &ContainerConfig, sandbox: &SandboxStatus) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("PATH".into(), DEFAULT_PATH.into()), ("HOSTNAME".into(), sandbox.config.hostname.clone())];
    if let Some(ip) = sandbox.ip {
        env.push(("POD_IP".into(), ip.to_string()));
    }
    env.extend(config.image.env.iter().cloned());
    env.extend(config.env.iter().cloned());
    env
}

/// Gives a main process its standard streams. With `tty`, a new terminal (at `size` when given):
/// `cmd` is wrapped in `setsid --ctty` so that the terminal becomes its controlling terminal in a
/// session it leads (its pid still names its process group), and the terminal's master side is
/// returned. Otherwise stdin is a pipe with `stdin` (else null), stdout and stderr are pipes, in
/// a process group of its own.
pub(crate) fn main_stdio(mut cmd: Command, config: &ContainerConfig, size: Option<TerminalSize>) -> Result<(Command, Option<OwnedFd>)> {
    if config.tty {
        let (master, slave) = sys::open_pty(size)?;
        return Ok((sys::on_terminal(&cmd, &slave)?, Some(master)));
    }
    let stdin = if config.stdin { std::process::Stdio::piped() } else { std::process::Stdio::null() };
    cmd.stdin(stdin).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).process_group(0);
    Ok((cmd, None))
}

/// Connects a spawned main process's output to its log file and to attach sessions: the
/// terminal's master side from [`main_stdio`] (`pty`), or else the child's pipes. Returns the
/// attach point and the tasks pumping output into the log (see [`drain`]).
pub(crate) fn wire_output(
    config: &ContainerConfig,
    pty: Option<OwnedFd>,
    child: &mut Child,
    log_path: &Path,
) -> Result<(Arc<AttachPoint>, Vec<JoinHandle<()>>)> {
    if let Some(master) = pty {
        let (reader, writer) = sys::pty_streams(master)?;
        let fd = writer.fd();
        let resize: Resize = Arc::new(move |size| sys::set_terminal_size(fd.get_ref(), size));
        let stdin = config.stdin.then(|| -> Pin<Box<dyn AsyncWrite + Send>> { Box::pin(writer) });
        let point = AttachPoint::new(stdin, config.stdin_once, true, Some(resize));
        let out = point.tee(reader, false);
        return Ok((point, vec![tokio::spawn(logs::pump(out, "stdout", log_path.to_path_buf()))]));
    }
    let stdin = child.stdin.take().map(|w| -> Pin<Box<dyn AsyncWrite + Send>> { Box::pin(w) });
    let point = AttachPoint::new(stdin, config.stdin_once, false, None);
    let stdout = child.stdout.take().map(|s| point.tee(s, false));
    let stderr = child.stderr.take().map(|s| point.tee(s, true));
    let mut pumps = Vec::new();
    pumps.extend(stdout.map(|s| tokio::spawn(logs::pump(s, "stdout", log_path.to_path_buf()))));
    pumps.extend(stderr.map(|s| tokio::spawn(logs::pump(s, "stderr", log_path.to_path_buf()))));
    Ok((point, pumps))
}

/// Waits (up to 2 s each) for the pumps from [`wire_output`]: the log is complete only once the
/// output is drained.
pub(crate) async fn drain(pumps: Vec<JoinHandle<()>>) {
    for pump in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    }
}

/// Spawns an exec's `command` with its standard streams as pipes (killed when the session is
/// dropped); `what` names a spawn failure.
pub(crate) fn piped_exec(mut command: Command, what: &str) -> Result<ExecSession> {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| RuntimeError::io(what, e))?;
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::Invalid("exec pipes missing".into()));
    };
    Ok(ExecSession { stdin: Box::pin(stdin), stdout: Box::pin(stdout), stderr: Box::pin(stderr), exit: exit_code(child), resize: None })
}

/// Spawns an exec's `command` on a new terminal (at `size` when given) as its standard streams
/// (killed when the session is dropped); `what` names a spawn failure. The command makes the
/// terminal its controlling terminal itself: it is `setsid --ctty ...` (util-linux), which runs
/// the rest in a session of its own that it leads (so ^C reaches its process group; `setsid`
/// forks only when it already leads a group, which a child of the agent does not).
pub(crate) fn terminal_exec(mut command: Command, size: Option<TerminalSize>, what: &str) -> Result<ExecSession> {
    let (master, slave) = sys::open_pty(size)?;
    let stdio = sys::terminal_stdio;
    command.stdin(stdio(&slave)?).stdout(stdio(&slave)?).stderr(stdio(&slave)?).kill_on_drop(true);
    let child = command.spawn().map_err(|e| RuntimeError::io(what, e))?;
    // Only the command may hold the slave side: the reader ends when the command's session does.
    drop(command);
    drop(slave);
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    tty_session(master, pid, exit_code(child))
}

/// The exit code of an exec's process, once it ends.
fn exit_code(mut child: Child) -> BoxFuture<'static, Result<i32>> {
    Box::pin(async move { child.wait().await.map(sys::exit_code_of).map_err(|e| RuntimeError::io("wait exec", e)) })
}

/// An exec session over a pseudo-terminal's master side whose command leads session `pid`: when
/// the command ends, what it left in its session goes too (it would hold the terminal open).
fn tty_session(master: OwnedFd, pid: i32, exit: BoxFuture<'static, Result<i32>>) -> Result<ExecSession> {
    let (reader, writer) = sys::pty_streams(master)?;
    let fd = writer.fd();
    let resize: Resize = Arc::new(move |size| sys::set_terminal_size(fd.get_ref(), size));
    Ok(ExecSession {
        stdin: Box::pin(writer),
        stdout: Box::pin(reader),
        stderr: Box::pin(tokio::io::empty()),
        exit: Box::pin(async move {
            let code = exit.await;
            if pid > 0 {
                let _ = sys::signal_group(pid, rustix::process::Signal::HUP.as_raw());
            }
            code
        }),
        resize: Some(resize),
    })
}
