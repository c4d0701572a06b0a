//! TCP: accept on the service address, connect to an endpoint (the next one when a connect fails), relay.

use super::balancer::Balancer;
use futures::FutureExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// The copy buffer of each direction when bytes are not spliced.
const BUFFER: usize = 256 * 1024;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub(super) async fn serve(
    listener: TcpListener,
    balancer: Arc<Balancer>,
    connect_timeout: Duration,
    splice: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((inbound, client)) => {
                    tokio::spawn(handle(inbound, client, balancer.clone(), connect_timeout, splice));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stop.wait_for(|s| *s).map(|_| ()) => return,
        }
    }
}

async fn handle(mut inbound: TcpStream, client: SocketAddr, balancer: Arc<Balancer>, connect_timeout: Duration, splice: bool) {
    let _ = inbound.set_nodelay(true);
    let mut tried: Vec<SocketAddr> = Vec::new();
    loop {
        let Some(pick) = balancer.pick(client.ip(), &tried) else {
            tracing::debug!(%client, tried = tried.len(), "no endpoint left; closing");
            return;
        };
        match tokio::time::timeout(connect_timeout, TcpStream::connect(pick.addr)).await {
            Ok(Ok(mut outbound)) => {
                let _ = outbound.set_nodelay(true);
                let mut gone = pick.gone.clone();
                let relay = async {
                    let pipes = if splice { (super::splice::Pipe::new().ok(), super::splice::Pipe::new().ok()) } else { (None, None) };
                    match pipes {
                        (Some(p1), Some(p2)) => {
                            let _ = super::splice::relay(&inbound, &outbound, (p1, p2)).await;
                        }
                        _ => {
                            let _ = tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, BUFFER, BUFFER).await;
                        }
                    }
                };
                tokio::select! {
                    () = relay => {}
                    () = gone.wait_for(|g| *g).map(|_| ()) => tracing::debug!(endpoint = %pick.addr, "endpoint drained; closing"),
                }
                return;
            }
            Ok(Err(error)) => tracing::debug!(endpoint = %pick.addr, %error, "connect failed; trying the next endpoint"),
            Err(_) => tracing::debug!(endpoint = %pick.addr, "connect timed out; trying the next endpoint"),
        }
        tried.push(pick.addr);
    }
}
