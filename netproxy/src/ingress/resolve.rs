//! Upstream addressing with connect fallback: the proxy sends each request to a synthetic host that
//! names the backend (service and port) and the endpoint to try first; resolving it yields that
//! endpoint followed by the backend's others, and hyper-util's connector tries them in order, so a
//! refused or timed-out connect moves on to the next endpoint before the request is sent.
//! Connections are pooled per synthetic host, so per backend and first-choice endpoint.

use super::routes::{Backend, PortRef};
use crate::sync::TableHandle;
use crate::table::Protocol;
use bosun_core::ObjectKey;
use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The suffix of synthetic upstream hosts (`.invalid` never resolves anywhere else).
const SUFFIX: &str = ".backend.invalid";

/// The ready endpoints of a backend (its service port's cluster endpoints), in table order.
pub(super) fn endpoints(services: &TableHandle, backend: &Backend) -> Vec<SocketAddr> {
    let table = services.read();
    let key = ObjectKey::new(Some(&backend.namespace), backend.service.clone());
    let port = table.ports_of(&key).find(|p| {
        p.name.protocol == Protocol::Tcp
            && match &backend.port {
                PortRef::Number(n) => p.port == *n,
                PortRef::Name(name) => p.name.port == *name,
            }
    });
    port.map(|p| p.cluster_endpoints.iter().map(|e| e.addr).collect()).unwrap_or_default()
}

/// `e<first>.<n<number>|p<name>>.<service>.<namespace>.backend.invalid` (no port: the resolved
/// addresses carry the endpoints' ports).
pub(super) fn upstream_host(backend: &Backend, first: usize) -> String {
    let port = match &backend.port {
        PortRef::Number(n) => format!("n{n}"),
        PortRef::Name(name) => format!("p{name}"),
    };
    format!("e{first}.{port}.{}.{}{SUFFIX}", backend.service, backend.namespace)
}

fn parse(host: &str) -> Option<(usize, Backend)> {
    let mut labels = host.strip_suffix(SUFFIX)?.split('.');
    let first = labels.next()?.strip_prefix('e')?.parse().ok()?;
    let port = labels.next()?;
    let port = match port.split_at_checked(1)? {
        ("n", n) => PortRef::Number(n.parse().ok()?),
        ("p", name) => PortRef::Name(name.to_owned()),
        _ => return None,
    };
    let service = labels.next()?.to_owned();
    let namespace = labels.next()?.to_owned();
    labels.next().is_none().then_some((first, Backend { namespace, service, port }))
}

/// Resolves synthetic upstream hosts from the service table.
#[derive(Clone)]
pub(crate) struct BackendResolver {
    services: TableHandle,
}

impl BackendResolver {
    pub(super) fn new(services: TableHandle) -> Self {
        Self { services }
    }
}

impl tower_service::Service<Name> for BackendResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let result = match parse(name.as_str()) {
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a backend host: {}", name.as_str()))),
            Some((first, backend)) => {
                let mut eps = endpoints(&self.services, &backend);
                if eps.is_empty() {
                    Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no ready endpoint"))
                } else {
                    let n = eps.len();
                    eps.rotate_left(first % n);
                    Ok(eps.into_iter())
                }
            }
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_hosts_round_trip() {
        for port in [PortRef::Number(8080), PortRef::Name("web-ui".into())] {
            let b = Backend { namespace: "shop".into(), service: "cart".into(), port };
            let host = upstream_host(&b, 3);
            assert!(host.parse::<http::uri::Authority>().is_ok(), "{host}");
            assert_eq!(parse(&host), Some((3, b)));
        }
        assert_eq!(parse("example.com"), None);
        assert_eq!(parse("e1.x80.a.b.backend.invalid"), None);
    }
}
