//! Cluster DNS: answers `svc.ns.svc.cluster.local` and friends from the service table, on
//! hickory's server (wire format, UDP and TCP) with the records computed per query.
//!
//! Names (as the Kubernetes DNS specification and CoreDNS's `kubernetes` plugin define them):
//! - `svc.ns.svc.<domain>`: A/AAAA with the cluster IPs; the ready endpoint IPs for a headless
//!   service; a CNAME to `externalName` for an ExternalName service.
//! - `host.svc.ns.svc.<domain>`: a headless service's endpoint by hostname (StatefulSet pods) or by
//!   dashed IP.
//! - `_port._proto.svc.ns.svc.<domain>`: SRV for named ports.
//! - `a-b-c-d.ns.pod.<domain>`: the IP spelled in the name.
//!
//! Names under the cluster domain that do not exist get NXDOMAIN with the zone's SOA; names outside
//! it get REFUSED (this server does not recurse).

use crate::sync::TableHandle;
use crate::table::{ServiceInfo, ServiceKind, ServiceTable};
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}")]
    InvalidDomain {
        /// The domain given.
        domain: String,
    },
    /// A socket could not be bound.
    #[error("bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The result of resolving one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response code (NoError, NXDomain or Refused).
    pub code: ResponseCode,
    /// Answer records.
    pub answers: Vec<Record>,
    /// Additional records (addresses of SRV targets).
    pub additionals: Vec<Record>,
}

/// The cluster DNS: a resolver over a [`TableHandle`] and a hickory request handler.
#[derive(Clone)]
#[must_use]
pub struct ClusterDns {
    table: TableHandle,
    domain: String,
    ttl: u32,
}

impl ClusterDns {
    /// A DNS over a table, for the domain `cluster.local` with a 5 s TTL (CoreDNS's default).
    pub fn new(table: TableHandle) -> Self {
        Self { table, domain: "cluster.local".into(), ttl: 5 }
    }

    /// The cluster domain (default `cluster.local`).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into().trim_end_matches('.').to_ascii_lowercase();
        self
    }

    /// The TTL of answers in seconds (default 5).
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// The `resolv.conf` a pod in `namespace` gets: this server, the cluster search path, `ndots:5`.
    pub fn resolv_conf(&self, server: IpAddr, namespace: &str) -> String {
        let d = &self.domain;
        format!("nameserver {server}\nsearch {namespace}.svc.{d} svc.{d} {d}\noptions ndots:5\n")
    }

    /// The search domains of a pod in `namespace`, most specific first.
    pub fn search_domains(&self, namespace: &str) -> Vec<String> {
        let d = &self.domain;
        vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.clone()]
    }

    /// Answers one question.
    pub fn resolve(&self, name: &Name, rtype: RecordType) -> Answer {
        let fqdn = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let refused = Answer { code: ResponseCode::Refused, answers: Vec::new(), additionals: Vec::new() };
        let Some(rest) = fqdn.strip_suffix(&self.domain).and_then(|r| r.strip_suffix('.').or(r.is_empty().then_some(""))) else {
            return refused;
        };
        let labels: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('.').collect() };
        let table = self.table.read();
        let found = match labels.as_slice() {
            [svc, ns, "svc"] => self.service(&table, name, ns, svc, rtype),
            [host, svc, ns, "svc"] => self.endpoint(&table, name, ns, svc, host, rtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(&table, name, ns, svc, &port[1..], &proto[1..], rtype)
            }
            [ip, _ns, "pod"] => pod_ip(ip).map(|ip| self.addresses(name, &[ip], rtype)),
            // The zone apex and the `svc`/`pod` subzones exist (empty non-terminals).
            [] | ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => Some((Vec::new(), Vec::new())),
            _ => None,
        };
        match found {
            Some((answers, additionals)) => Answer { code: ResponseCode::NoError, answers, additionals },
            None => Answer { code: ResponseCode::NXDomain, answers: Vec::new(), additionals: Vec::new() },
        }
    }

    fn soa(&self) -> Record {
        let apex = Name::from_ascii(format!("{}.", self.domain)).unwrap_or_default();
        let ns = Name::from_ascii(format!("ns.dns.{}.", self.domain)).unwrap_or_default();
        let mbox = Name::from_ascii(format!("hostmaster.{}.", self.domain)).unwrap_or_default();
        Record::from_rdata(apex, self.ttl, RData::SOA(SOA::new(ns, mbox, 1, 7200, 1800, 86400, self.ttl)))
    }

    fn addresses(&self, name: &Name, ips: &[IpAddr], rtype: RecordType) -> (Vec<Record>, Vec<Record>) {
        let answers = ips
            .iter()
            .filter_map(|ip| match (ip, rtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
                _ => None,
            })
            .map(|rd| Record::from_rdata(name.clone(), self.ttl, rd))
            .collect();
        (answers, Vec::new())
    }

    fn service(&self, table: &ServiceTable, name: &Name, ns: &str, svc: &str, rtype: RecordType) -> Option<(Vec<Record>, Vec<Record>)> {
        let info = table.service_by_name(ns, svc)?;
        Some(match &info.kind {
            ServiceKind::ExternalName(target) => {
                let target = Name::from_ascii(format!("{}.", target.trim_end_matches('.'))).ok()?;
                (vec![Record::from_rdata(name.clone(), self.ttl, RData::CNAME(CNAME(target)))], Vec::new())
            }
            ServiceKind::Headless => {
                let ips: Vec<IpAddr> = info.dns_endpoints.iter().map(|e| e.ip).collect();
                self.addresses(name, &ips, rtype)
            }
            _ => self.addresses(name, &info.cluster_ips, rtype),
        })
    }

    fn endpoint(
        &self,
        table: &ServiceTable,
        name: &Name,
        ns: &str,
        svc: &str,
        host: &str,
        rtype: RecordType,
    ) -> Option<(Vec<Record>, Vec<Record>)> {
        let info = table.service_by_name(ns, svc)?;
        let ips: Vec<IpAddr> = info.dns_endpoints.iter().filter(|e| endpoint_label(e) == host).map(|e| e.ip).collect();
        if ips.is_empty() {
            return None;
        }
        Some(self.addresses(name, &ips, rtype))
    }

    #[allow(clippy::too_many_arguments)]
    fn srv(
        &self,
        table: &ServiceTable,
        name: &Name,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
        rtype: RecordType,
    ) -> Option<(Vec<Record>, Vec<Record>)> {
        let info: &ServiceInfo = table.service_by_name(ns, svc)?;
        let matches = |p: &crate::table::NamedPort| p.name == port && p.protocol.as_lower() == proto;
        let svc_name = format!("{svc}.{ns}.svc.{}.", self.domain);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &info.kind {
            ServiceKind::Headless => {
                for ep in &info.dns_endpoints {
                    let Some(p) = ep.ports.iter().find(|p| matches(p)) else { continue };
                    let target = Name::from_ascii(format!("{}.{svc_name}", endpoint_label(ep))).ok()?;
                    answers.push(Record::from_rdata(name.clone(), self.ttl, RData::SRV(SRV::new(0, 100, p.port, target.clone()))));
                    additionals.extend(self.addresses(&target, &[ep.ip], RecordType::ANY).0);
                }
            }
            ServiceKind::ExternalName(_) => return None,
            _ => {
                let p = info.ports.iter().find(|p| matches(p))?;
                let target = Name::from_ascii(&svc_name).ok()?;
                answers.push(Record::from_rdata(name.clone(), self.ttl, RData::SRV(SRV::new(0, 100, p.port, target.clone()))));
                additionals.extend(self.addresses(&target, &info.cluster_ips, RecordType::ANY).0);
            }
        }
        if answers.is_empty() {
            return None;
        }
        if !matches!(rtype, RecordType::SRV | RecordType::ANY) {
            return Some((Vec::new(), Vec::new()));
        }
        Some((answers, additionals))
    }

    /// Serves DNS on UDP and TCP at `addr` until the handle is dropped or shut down.
    pub async fn serve(self, addr: SocketAddr) -> Result<DnsServer, DnsError> {
        let bind = |source| DnsError::Bind { addr, source };
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(bind)?;
        let local = udp.local_addr().map_err(bind)?;
        let tcp = tokio::net::TcpListener::bind(local).await.map_err(|source| DnsError::Bind { addr: local, source })?;
        let mut server = hickory_server::Server::new(self);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tokio::select! {
                r = server.block_until_done() => if let Err(error) = r { tracing::warn!(%error, "dns server stopped") },
                _ = stopped => { let _ = server.shutdown_gracefully().await; }
            }
        });
        Ok(DnsServer { addr: local, stop: Some(stop), task })
    }
}

/// The label of a headless endpoint: its hostname, else its IP with dashes.
fn endpoint_label(ep: &crate::table::DnsEndpoint) -> String {
    ep.hostname.clone().unwrap_or_else(|| dashed(ep.ip))
}

fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => v.to_string().replace('.', "-"),
        IpAddr::V6(v) => v.to_string().replace(':', "-"),
    }
}

fn pod_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// The address it answers on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        meta.recursion_available = false;
        let fallback = |meta: Metadata| ResponseInfo::from(Header { metadata: meta, counts: HeaderCounts::default() });
        let builder = MessageResponseBuilder::from_message_request(request);
        let query = request.queries.queries().first();
        let (Some(query), MessageType::Query, OpCode::Query) = (query, request.metadata.message_type, request.metadata.op_code) else {
            let resp = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return response_handle.send_response(resp).await.unwrap_or_else(|_| fallback(meta));
        };
        let name: Name = query.name().into();
        let answer = self.resolve(&name, query.query_type());
        tracing::trace!(%name, rtype = %query.query_type(), code = %answer.code, answers = answer.answers.len(), "dns query");
        meta.response_code = answer.code;
        if answer.code == ResponseCode::Refused {
            meta.authoritative = false;
        }
        let soa = if answer.answers.is_empty() && answer.code != ResponseCode::Refused { vec![self.soa()] } else { Vec::new() };
        let resp = builder.build(meta, answer.answers.iter(), std::iter::empty(), soa.iter(), answer.additionals.iter());
        match response_handle.send_response(resp).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "dns response not sent");
                fallback(meta)
            }
        }
    }
}
