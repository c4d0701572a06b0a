//! Service proxy backends (userspace L4, nftables), HTTP ingress and cluster DNS.
