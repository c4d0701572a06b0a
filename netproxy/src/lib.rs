//! Service proxy backends (userspace L4, nftables), HTTP ingress and cluster DNS.
//!
//! Start with [`table`]: the service table built from Services and EndpointSlices, and [`ProxyBackend`], the
//! trait every backend implements; [`ServiceProxy`] keeps the table current by watch and hands backends only
//! what changed. [`userspace`] and [`nftables`] are the two backends; [`ingress`] routes HTTP by host and
//! path, and [`dns`] answers cluster names, both from the same table.

pub mod backend;
pub mod dns;
pub mod ingress;
pub mod nftables;
pub mod sync;
pub mod table;
pub mod userspace;

pub use backend::{ApplyError, ProxyBackend};
pub use dns::{ClusterDns, DnsServer};
pub use ingress::{IngressController, IngressProxy};
pub use nftables::{Cidr, CidrError, NftablesConfig, NftablesProxy};
pub use sync::{ServiceProxy, TableHandle};
pub use table::{
    Affinity, Endpoint, NodeContext, Protocol, ProxyService, ServiceInfo, ServiceKind, ServicePortName, ServiceTable, TableDiff,
};
pub use userspace::{Balance, UserspaceConfig, UserspaceProxy};
