//! Integration tests of bosun-netproxy over real sockets (loopback), real nftables (network
//! namespaces), real HTTP/TLS and a real DNS resolver.

mod dns;
mod ingress;
mod masquerade;
mod netns;
mod nftables;
mod support;
mod sync;
mod userspace;
