//! Network namespaces the tests create (and delete on drop), and sockets opened inside them.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr))) }
}

impl Netns {
    /// Creates `bnp-<tag>-<pid>-<n>` with loopback up.
    pub fn create(tag: &str) -> Result<Self, String> {
        let name = format!("bnp-{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n <ns> …`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Connects two namespaces with a veth pair and addresses `a_cidr` / `b_cidr`.
    pub fn link(&self, other: &Netns, a_dev: &str, a_cidr: &str, b_dev: &str, b_cidr: &str) -> Result<(), String> {
        ip(&["link", "add", a_dev, "netns", &self.name, "type", "veth", "peer", "name", b_dev, "netns", &other.name])?;
        self.ip(&["addr", "add", a_cidr, "dev", a_dev])?;
        other.ip(&["addr", "add", b_cidr, "dev", b_dev])?;
        self.ip(&["link", "set", a_dev, "up"])?;
        other.ip(&["link", "set", b_dev, "up"])
    }

    /// Connects two namespaces with a veth pair without addresses (`a_dev` here, `b_dev` in `other`), both up.
    pub fn veth(&self, other: &Netns, a_dev: &str, b_dev: &str) -> Result<(), String> {
        ip(&["link", "add", a_dev, "netns", &self.name, "type", "veth", "peer", "name", b_dev, "netns", &other.name])?;
        self.ip(&["link", "set", a_dev, "up"])?;
        other.ip(&["link", "set", b_dev, "up"])
    }

    /// Writes a sysctl of this namespace (`net.ipv4.ip_forward` as `net/ipv4/ip_forward`).
    pub fn sysctl(&self, path: &'static str, value: &'static str) -> Result<(), String> {
        self.enter(move || std::fs::write(format!("/proc/sys/{path}"), value)).map_err(|e| format!("sysctl {path}: {e}"))
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it opens stay in the namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&file), Some(rustix::thread::LinkNameSpaceType::Network))
                .expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// Whether this machine lets us create network namespaces and run nft (root, tools installed).
pub fn available() -> bool {
    let Ok(ns) = Netns::create("probe") else { return false };
    let name = ns.name.clone();
    Command::new("ip").args(["netns", "exec", &name, "nft", "list", "tables"]).output().is_ok_and(|o| o.status.success())
}
