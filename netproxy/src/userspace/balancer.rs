//! Picking an endpoint for a new connection: round robin or least connections, ClientIP affinity,
//! and the drain signal connections to a removed endpoint watch.

use crate::table::{Affinity, Endpoint};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the userspace proxy spreads new connections over endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest open connections (ties in turn).
    LeastConnections,
}

struct Slot {
    addr: SocketAddr,
    active: Arc<AtomicUsize>,
    gone: watch::Sender<bool>,
}

struct State {
    slots: Vec<Slot>,
    cursor: usize,
    affinity: Affinity,
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

/// The endpoints of one service port for one kind of traffic, shared by its listeners.
pub(crate) struct Balancer {
    policy: Balance,
    drain: Duration,
    state: Mutex<State>,
}

/// A chosen endpoint; counts as an open connection until dropped.
pub(crate) struct Pick {
    pub addr: SocketAddr,
    /// Turns true when the endpoint is gone and its drain time is over: close the connection.
    pub gone: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    pub(crate) fn new(policy: Balance, drain: Duration) -> Self {
        Self { policy, drain, state: Mutex::new(State { slots: Vec::new(), cursor: 0, affinity: Affinity::None, sticky: HashMap::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the endpoint set. Kept endpoints keep their connections; removed ones stop getting new
    /// connections at once and have their open ones closed after the drain time.
    pub(crate) fn update(&self, endpoints: &[Endpoint], affinity: Affinity) {
        let mut st = self.lock();
        let old = std::mem::take(&mut st.slots);
        let mut removed = Vec::new();
        let mut kept: HashMap<SocketAddr, Slot> = HashMap::new();
        for slot in old {
            if endpoints.iter().any(|e| e.addr == slot.addr) {
                kept.insert(slot.addr, slot);
            } else {
                removed.push(slot);
            }
        }
        st.slots = endpoints
            .iter()
            .map(|e| {
                kept.remove(&e.addr).unwrap_or_else(|| Slot {
                    addr: e.addr,
                    active: Arc::new(AtomicUsize::new(0)),
                    gone: watch::channel(false).0,
                })
            })
            .collect();
        if st.affinity != affinity {
            st.sticky.clear();
        }
        st.affinity = affinity;
        let live: Vec<SocketAddr> = st.slots.iter().map(|s| s.addr).collect();
        st.sticky.retain(|_, (addr, _)| live.contains(addr));
        drop(st);
        self.drain(removed);
    }

    /// Stops everything (the service port went away).
    pub(crate) fn close(&self) {
        let slots = std::mem::take(&mut self.lock().slots);
        self.drain(slots);
    }

    fn drain(&self, slots: Vec<Slot>) {
        if slots.is_empty() {
            return;
        }
        if self.drain.is_zero() {
            for s in slots {
                s.gone.send_replace(true);
            }
            return;
        }
        let deadline = Instant::now() + self.drain;
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            for s in slots {
                s.gone.send_replace(true);
            }
        });
    }

    /// Picks an endpoint for a client, skipping `exclude` (endpoints a connect just failed on).
    pub(crate) fn pick(&self, client: IpAddr, exclude: &[SocketAddr]) -> Option<Pick> {
        let mut st = self.lock();
        let now = Instant::now();
        if let Affinity::ClientIp { timeout } = st.affinity
            && let Some((addr, last)) = st.sticky.get(&client).copied()
        {
            if now.duration_since(last) <= timeout
                && !exclude.contains(&addr)
                && let Some(i) = st.slots.iter().position(|s| s.addr == addr)
            {
                st.sticky.insert(client, (addr, now));
                return Some(Self::take(&st.slots[i]));
            }
            st.sticky.remove(&client);
        }
        let n = st.slots.len();
        let candidates = (0..n).map(|k| (st.cursor + k) % n).filter(|&i| !exclude.contains(&st.slots[i].addr));
        let chosen = match self.policy {
            Balance::RoundRobin => candidates.into_iter().next(),
            Balance::LeastConnections => candidates.min_by_key(|&i| st.slots[i].active.load(Ordering::Relaxed)),
        }?;
        st.cursor = (chosen + 1) % n;
        let pick = Self::take(&st.slots[chosen]);
        if matches!(st.affinity, Affinity::ClientIp { .. }) {
            st.sticky.insert(client, (pick.addr, now));
        }
        Some(pick)
    }

    fn take(slot: &Slot) -> Pick {
        slot.active.fetch_add(1, Ordering::Relaxed);
        Pick { addr: slot.addr, gone: slot.gone.subscribe(), active: slot.active.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(ports: &[u16]) -> Vec<Endpoint> {
        ports.iter().map(|p| Endpoint::ready(SocketAddr::from(([127, 0, 0, 1], *p)))).collect()
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9));

    #[tokio::test]
    async fn round_robin_visits_each_endpoint_in_turn_and_skips_excluded_ones() {
        let b = Balancer::new(Balance::RoundRobin, Duration::ZERO);
        b.update(&eps(&[1, 2, 3]), Affinity::None);
        let got: Vec<u16> = (0..6).map(|_| b.pick(CLIENT, &[]).map(|p| p.addr.port()).unwrap_or(0)).collect();
        assert_eq!(got, [1, 2, 3, 1, 2, 3]);
        let skip = [SocketAddr::from(([127, 0, 0, 1], 1))];
        assert_eq!(b.pick(CLIENT, &skip).map(|p| p.addr.port()), Some(2));
        let all: Vec<SocketAddr> = eps(&[1, 2, 3]).iter().map(|e| e.addr).collect();
        assert!(b.pick(CLIENT, &all).is_none());
    }

    #[tokio::test]
    async fn least_connections_prefers_the_idlest_endpoint() {
        let b = Balancer::new(Balance::LeastConnections, Duration::ZERO);
        b.update(&eps(&[1, 2]), Affinity::None);
        let first = b.pick(CLIENT, &[]).expect("pick");
        let second = b.pick(CLIENT, &[]).expect("pick");
        assert_ne!(first.addr, second.addr);
        drop(first);
        for _ in 0..3 {
            let third = b.pick(CLIENT, &[]).expect("pick");
            assert_ne!(third.addr, second.addr, "the endpoint with no connection wins");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn client_ip_affinity_sticks_until_the_timeout_passes() {
        let b = Balancer::new(Balance::RoundRobin, Duration::ZERO);
        b.update(&eps(&[1, 2, 3]), Affinity::ClientIp { timeout: Duration::from_secs(10) });
        let first = b.pick(CLIENT, &[]).expect("pick").addr;
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(9)).await;
            assert_eq!(b.pick(CLIENT, &[]).expect("pick").addr, first);
        }
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 10));
        assert_ne!(b.pick(other, &[]).expect("pick").addr, first);
        tokio::time::advance(Duration::from_secs(11)).await;
        // Round robin moved on while the entry expired, so a fresh pick lands elsewhere.
        assert_ne!(b.pick(CLIENT, &[]).expect("pick").addr, first);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_endpoints_get_no_new_connections_and_close_after_the_drain_time() {
        let b = Balancer::new(Balance::RoundRobin, Duration::from_secs(5));
        b.update(&eps(&[1, 2]), Affinity::None);
        let p1 = b.pick(CLIENT, &[]).expect("pick");
        assert_eq!(p1.addr.port(), 1);
        b.update(&eps(&[2]), Affinity::None);
        for _ in 0..3 {
            assert_eq!(b.pick(CLIENT, &[]).expect("pick").addr.port(), 2);
        }
        let mut gone = p1.gone.clone();
        tokio::time::advance(Duration::from_secs(4)).await;
        tokio::task::yield_now().await;
        assert!(!*gone.borrow());
        tokio::time::timeout(Duration::from_secs(2), gone.wait_for(|g| *g)).await.expect("closed after drain").expect("signal");
    }
}
