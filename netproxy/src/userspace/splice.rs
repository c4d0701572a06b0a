//! Zero-copy TCP relay with `splice(2)` through a pipe: bytes move socket → pipe → socket inside the
//! kernel, which roughly halves the copying a userspace proxy does on large transfers.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use tokio::io::Interest;
use tokio::net::TcpStream;

const PIPE_SIZE: usize = 1 << 20;

fn flags() -> rustix::pipe::SpliceFlags {
    rustix::pipe::SpliceFlags::MOVE | rustix::pipe::SpliceFlags::NONBLOCK
}

/// A kernel pipe used as the relay buffer of one direction.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    pub(super) fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK)?;
        // A larger pipe means fewer wakeups; the default (64 KiB) still works if this is refused.
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Self { read, write })
    }
}

/// Moves bytes from `from` to `to` until `from` reaches EOF, then shuts down `to`'s write side.
async fn one_way(from: &TcpStream, to: &TcpStream, pipe: &Pipe) -> io::Result<()> {
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                rustix::pipe::splice(from.as_fd(), None, &pipe.write, None, PIPE_SIZE, flags()).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = rustix::net::shutdown(to.as_fd(), rustix::net::Shutdown::Write);
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                rustix::pipe::splice(&pipe.read, None, to.as_fd(), None, left, flags()).map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Relays both directions until both reach EOF, or until one fails.
pub(super) async fn relay(a: &TcpStream, b: &TcpStream, pipes: (Pipe, Pipe)) -> io::Result<()> {
    let (ab, ba) = pipes;
    tokio::try_join!(one_way(a, b, &ab), one_way(b, a, &ba)).map(|_| ())
}
