//! Small operating-system helpers shared by the process and runc backends: signals to process
//! groups, `/proc` statistics, bounded output capture and mount-namespace detection.

use crate::cri::{ContainerStats, EXEC_OUTPUT_CAP, ExecResult, TerminalSize};
use crate::error::{Result, RuntimeError};
use rustix::process::{Pid, Signal};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::Command;

/// Sends a signal to a process group; a group that is gone already is not an error.
pub fn signal_group(pgid: i32, signal: i32) -> Result<()> {
    let pid = Pid::from_raw(pgid).ok_or_else(|| RuntimeError::Invalid(format!("bad process group {pgid}")))?;
    let sig = Signal::from_named_raw(signal).ok_or_else(|| RuntimeError::Invalid(format!("unknown signal {signal}")))?;
    match rustix::process::kill_process_group(pid, sig) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(RuntimeError::io(format!("signal {signal} to group {pgid}"), e.into())),
    }
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| stat_field(&s, 3).is_none_or(|st| st != "Z"))
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/<pid>/stat` line.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(n.checked_sub(3)?)
}

/// The start time of a process in clock ticks since boot (to tell a pid apart from a reused one).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 22)?.parse().ok()
}

/// CPU time and resident memory of every process in a process group, from `/proc`.
pub fn group_stats(pgid: i32) -> ContainerStats {
    const TICK_NANOS: u64 = 10_000_000; // USER_HZ is 100 on Linux.
    const PAGE: u64 = 4096;
    let mut stats = ContainerStats::default();
    let Ok(entries) = std::fs::read_dir("/proc") else { return stats };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if stat_field(&stat, 5).and_then(|g| g.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        let num = |n| stat_field(&stat, n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        stats.cpu_usage_nanos += (num(14) + num(15)) * TICK_NANOS;
        stats.memory_working_set_bytes += num(24) * PAGE;
    }
    stats
}

/// Reads a stream to its end, keeping at most [`EXEC_OUTPUT_CAP`] bytes.
pub async fn read_capped(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
    }
    out
}

/// Runs a prepared command (already in its own process group) to completion, killing its group when
/// `timeout` passes.
pub async fn exec_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<ExecResult> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| RuntimeError::io("spawn exec", e))?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let out = child.stdout.take().map(|s| tokio::spawn(read_capped(s)));
    let err = child.stderr.take().map(|s| tokio::spawn(read_capped(s)));
    let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (exit_code_of(status.map_err(|e| RuntimeError::io("wait exec", e))?), false),
        Err(_) => {
            if pid > 0 {
                let _ = signal_group(pid, Signal::KILL.as_raw());
            }
            let _ = child.wait().await;
            (-1, true)
        }
    };
    if pid > 0 {
        // Leftover members of the group (a backgrounded child holding the pipes) die too.
        let _ = signal_group(pid, Signal::KILL.as_raw());
    }
    let stdout = match out {
        Some(h) => h.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let stderr = match err {
        Some(h) => h.await.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(ExecResult { exit_code, stdout, stderr, timed_out })
}

/// The Kubernetes-style exit code of a status: the code, or 128 + the signal.
pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// How this process can give a container its own mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountSupport {
    /// As root: `unshare --mount`.
    Root,
    /// Unprivileged, through a user namespace: `unshare --mount --map-root-user`.
    UserNamespace,
    /// Not at all.
    Unavailable,
}

impl MountSupport {
    /// Probes what works here by trying it.
    pub fn detect() -> Self {
        let try_run = |args: &[&str]| {
            std::process::Command::new("unshare")
                .args(args)
                .arg("true")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if rustix::process::geteuid().is_root() && try_run(&["--mount", "--propagation", "private"]) {
            Self::Root
        } else if try_run(&["--mount", "--propagation", "private", "--map-root-user"]) {
            Self::UserNamespace
        } else {
            Self::Unavailable
        }
    }
}

/// Whether a process lives in a mount namespace of its own in which every one of `mounts` is a
/// mount point (read-only where asked), i.e. a volume wrapper has finished its bind mounts.
pub fn mounts_visible(pid: i32, mounts: &[crate::cri::Mount]) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let theirs = ns(&pid.to_string());
    if theirs.is_none() || theirs == ns("self") {
        return false;
    }
    let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else { return false };
    mounts.iter().all(|m| {
        let target = mountinfo_escape(m.container_path.trim_end_matches('/'));
        let target = if target.is_empty() { "/".to_string() } else { target };
        // The last mount at a path is the one in effect (a read-only remount comes after the bind).
        info.lines()
            .rev()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let point = f.nth(4)?;
                let options = f.next()?;
                (point == target).then_some(options)
            })
            .next()
            .is_some_and(|options| !m.read_only || options.split(',').any(|o| o == "ro"))
    })
}

/// A path as `/proc/<pid>/mountinfo` writes it (space, tab, newline and backslash in octal).
fn mountinfo_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// A new pseudo-terminal: the master side (non-blocking, for [`pty_streams`]) and the slave
/// side to give a command as its standard streams, at `size` when given.
pub fn open_pty(size: Option<TerminalSize>) -> Result<(OwnedFd, std::fs::File)> {
    use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, ptsname, unlockpt};
    let err = |what: &str, e: rustix::io::Errno| RuntimeError::io(format!("pseudo-terminal: {what}"), e.into());
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(|e| err("open", e))?;
    grantpt(&master).map_err(|e| err("grant", e))?;
    unlockpt(&master).map_err(|e| err("unlock", e))?;
    // The peer ioctl (Linux 4.13) needs no path; older kernels open the slave by name.
    let slave = match ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY) {
        Ok(fd) => std::fs::File::from(fd),
        Err(_) => {
            use std::os::unix::fs::OpenOptionsExt;
            let name = ptsname(&master, Vec::new()).map_err(|e| err("name", e))?;
            let path = std::ffi::OsStr::from_bytes(name.as_bytes());
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
                .open(path)
                .map_err(|e| RuntimeError::io("pseudo-terminal: open the slave", e))?
        }
    };
    if let Some(size) = size {
        set_terminal_size(&master, size)?;
    }
    Ok((master, slave))
}

/// A terminal's slave side as a command's standard stream.
pub fn terminal_stdio(slave: &std::fs::File) -> Result<std::process::Stdio> {
    slave.try_clone().map(std::process::Stdio::from).map_err(|e| RuntimeError::io("pseudo-terminal", e))
}

/// `cmd` again, run on the terminal whose slave side is `slave`: its standard streams, and,
/// through `setsid --ctty` (util-linux), its controlling terminal in a session the command leads
/// (so ^C reaches its process group). Program, arguments and working directory carry over.
pub fn on_terminal(cmd: &Command, slave: &std::fs::File) -> Result<Command> {
    let inner = cmd.as_std();
    let mut wrapped = Command::new("setsid");
    wrapped.arg("--ctty").arg(inner.get_program()).args(inner.get_args());
    if let Some(dir) = inner.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped.stdin(terminal_stdio(slave)?).stdout(terminal_stdio(slave)?).stderr(terminal_stdio(slave)?);
    Ok(wrapped)
}

/// Sets a terminal's size (`TIOCSWINSZ`; the foreground process group gets `SIGWINCH`).
pub fn set_terminal_size(fd: impl AsFd, size: TerminalSize) -> Result<()> {
    let winsize = rustix::termios::Winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(fd, winsize).map_err(|e| RuntimeError::io("set the terminal size", e.into()))
}

/// Reads and writes a pseudo-terminal's master side through the tokio reactor: the reader ends
/// (EOF) when no process holds the slave side any more; shutting the writer down types ^D.
pub fn pty_streams(master: OwnedFd) -> Result<(PtyReader, PtyWriter)> {
    let flags = rustix::fs::fcntl_getfl(&master).map_err(|e| RuntimeError::io("pseudo-terminal flags", e.into()))?;
    rustix::fs::fcntl_setfl(&master, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| RuntimeError::io("pseudo-terminal flags", e.into()))?;
    // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` may hand out another fd later;
    // an `OwnedFd` keeps the one fd open and unchanged until it is dropped, which is exactly what
    // `register` asks its caller to promise (and this workspace forbids `unsafe`).
    #[allow(deprecated)]
    let fd = Arc::new(AsyncFd::new(master).map_err(|e| RuntimeError::io("register the pseudo-terminal", e))?);
    Ok((PtyReader(fd.clone()), PtyWriter(fd)))
}

/// The reading half of [`pty_streams`].
#[derive(Debug)]
pub struct PtyReader(Arc<AsyncFd<OwnedFd>>);

/// The writing half of [`pty_streams`].
#[derive(Debug)]
pub struct PtyWriter(Arc<AsyncFd<OwnedFd>>);

impl PtyWriter {
    /// The master side, e.g. for [`set_terminal_size`].
    pub fn fd(&self) -> Arc<AsyncFd<OwnedFd>> {
        self.0.clone()
    }
}

impl AsyncRead for PtyReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(std::io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Linux answers EIO once the last holder of the slave side closed it: the end.
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for PtyWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(std::io::Error::from)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A terminal has no half-close: end-of-file is the EOF character (^D) at a line start.
        self.poll_write(cx, &[0x04]).map_ok(drop)
    }
}

/// Quotes a string for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether a path is a directory (mount targets for directories are directories).
pub fn is_dir(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_spaces_in_the_command_name() {
        let stat = "42 (my prog) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5555 1000 25";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 5), Some("42"));
        assert_eq!(stat_field(stat, 14), Some("7"));
        assert_eq!(stat_field(stat, 22), Some("5555"));
    }

    #[test]
    fn mount_points_are_escaped_as_mountinfo_writes_them() {
        assert_eq!(mountinfo_escape("/data/my dir\\x"), "/data/my\\040dir\\134x");
    }

    #[test]
    fn quoting_escapes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[tokio::test]
    async fn an_overrunning_command_is_killed_at_its_timeout() {
        let started = std::time::Instant::now();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo before; sleep 30; echo after"]);
        let r = exec_with_timeout(&mut cmd, Duration::from_millis(300)).await.expect("exec");
        assert!(r.timed_out);
        assert_eq!(r.exit_code, -1);
        assert_eq!(r.stdout, b"before\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
