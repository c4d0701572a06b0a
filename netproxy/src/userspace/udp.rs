//! UDP: one session per client address, each with a connected socket to its endpoint; replies go back
//! from the service address. Sessions end on idle, and at once when their endpoint is removed, so a
//! removed endpoint never keeps swallowing a client's datagrams.

use super::balancer::{Balancer, Pick};
use futures::FutureExt;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

struct Session {
    upstream: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
    gone: watch::Receiver<bool>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

pub(super) async fn serve(socket: UdpSocket, balancer: Arc<Balancer>, idle: Duration, mut stop: watch::Receiver<bool>) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(error) => {
                    tracing::debug!(%error, "udp receive failed");
                    continue;
                }
            },
            () = stop.wait_for(|s| *s).map(|_| ()) => return,
        };
        let data = &buf[..n];
        let existing = {
            let mut map = sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match map.get(&client) {
                Some(s) if !*s.gone.borrow() => {
                    *s.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
                    Some(s.upstream.clone())
                }
                Some(_) => {
                    map.remove(&client);
                    None
                }
                None => None,
            }
        };
        if let Some(up) = existing {
            if up.send(data).await.is_ok() {
                continue;
            }
            lock(&sessions).remove(&client);
        }
        let mut tried = Vec::new();
        while let Some(pick) = balancer.pick(client.ip(), &tried) {
            match open(&pick, data).await {
                Ok(upstream) => {
                    let upstream = Arc::new(upstream);
                    let last = Arc::new(Mutex::new(Instant::now()));
                    lock(&sessions).insert(client, Session { upstream: upstream.clone(), last: last.clone(), gone: pick.gone.clone() });
                    tokio::spawn(replies(socket.clone(), upstream, client, pick, last, idle, sessions.clone()));
                    break;
                }
                Err(error) => {
                    tracing::debug!(endpoint = %pick.addr, %error, "udp send failed; trying the next endpoint");
                    tried.push(pick.addr);
                }
            }
        }
    }
}

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Session>> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn open(pick: &Pick, first: &[u8]) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if pick.addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let up = UdpSocket::bind(local).await?;
    up.connect(pick.addr).await?;
    up.send(first).await?;
    Ok(up)
}

async fn replies(
    socket: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    pick: Pick,
    last: Arc<Mutex<Instant>>,
    idle: Duration,
    sessions: Sessions,
) {
    let mut gone = pick.gone.clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        let since = *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let deadline = since + idle;
        tokio::select! {
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
                    let _ = socket.send_to(&buf[..n], client).await;
                }
                // An ICMP error from the endpoint: end the session so the next datagram picks anew.
                Err(_) => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                let latest = *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if latest + idle <= Instant::now() {
                    break;
                }
            }
            () = gone.wait_for(|g| *g).map(|_| ()) => break,
        }
    }
    let mut map = lock(&sessions);
    if map.get(&client).is_some_and(|s| Arc::ptr_eq(&s.upstream, &upstream)) {
        map.remove(&client);
    }
    drop(map);
    drop(pick);
}
