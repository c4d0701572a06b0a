//! The EndpointSlice (and legacy Endpoints) controller: for every Service with a selector, the
//! addresses of matching pods with their ports (named target ports resolved per pod), ready,
//! serving and terminating, at most 100 endpoints per slice.

use super::{Shared, ignore_not_found, pod_is_ready};
use crate::runtime::{Action, Controller};
use bosun_core::meta::{controller_ref, is_deleting};
use bosun_core::watch::{INDEX_LABEL, INDEX_NAMESPACE, Store};
use bosun_core::{Api, DeleteParams, Error, LabelSelector, Object, ObjectKey, PostParams};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Endpoints per EndpointSlice at most.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Addresses a legacy Endpoints object holds at most.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
/// The annotation marking a truncated legacy Endpoints object.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const POD_INDEX: &str = "endpointslice-pod";

/// The EndpointSlice controller's state.
pub struct EndpointsCtx {
    shared: Shared,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
}

fn service_selector(svc: &Service) -> Option<LabelSelector> {
    let sel = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty())?;
    Some(LabelSelector::from_map(sel))
}

/// Builds the EndpointSlice controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<Service>, Arc<EndpointsCtx>) {
    let client = shared.client.clone();
    let services = shared.informers.all::<Service>().store().clone();
    let slices = shared.informers.all::<EndpointSlice>().store().clone();
    slices.add_index(
        POD_INDEX,
        Arc::new(|s: &EndpointSlice| {
            s.endpoints
                .iter()
                .flatten()
                .filter_map(|e| e.target_ref.as_ref())
                .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name.as_deref().unwrap_or("")))
                .collect()
        }),
    );
    let slices_for_pods = slices.clone();
    let c = shared
        .controller(Api::<Service>::all(client.clone()), "endpointslice")
        .owns(Api::<EndpointSlice>::all(client.clone()))
        .watches(Api::<Endpoints>::all(client.clone()), |e: &Endpoints| [ObjectKey::of(e)])
        .watches(Api::<Pod>::all(client), move |pod: &Pod| {
            let ns = pod.namespace().unwrap_or("default");
            let mut keys: BTreeSet<ObjectKey> = services
                .by_index(INDEX_NAMESPACE, ns)
                .iter()
                .filter(|svc| service_selector(svc).is_some_and(|s| s.matches_opt(pod.meta().labels.as_ref())))
                .map(|svc| ObjectKey::of(&**svc))
                .collect();
            // Services that list the pod now, in case it stopped matching.
            for slice in slices_for_pods.by_index(POD_INDEX, &format!("{ns}/{}", pod.name())) {
                if let Some(svc) = slice.meta().labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                    keys.insert(ObjectKey::new(Some(ns), svc.clone()));
                }
            }
            keys
        });
    let ctx = Arc::new(EndpointsCtx {
        shared: shared.clone(),
        pods: shared.informers.all::<Pod>().store().clone(),
        slices,
        endpoints: shared.informers.all::<Endpoints>().store().clone(),
    });
    (c, ctx)
}

/// One service port resolved for one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Port {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

/// Resolves the service's ports against a pod: numbers stay, names are looked up in the pod's
/// container ports (a name the pod does not declare leaves that port out for this pod).
fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<Port> {
    let mut out = Vec::new();
    for sp in svc.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten() {
        let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &sp.target_port {
            None => Some(sp.port),
            Some(IntOrString::Int(i)) => Some(*i),
            Some(IntOrString::String(name)) => match name.parse::<i32>() {
                Ok(i) => Some(i),
                Err(_) => pod
                    .spec
                    .iter()
                    .flat_map(|s| s.containers.iter())
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .map(|p| p.container_port),
            },
        };
        if let Some(port) = port {
            out.push(Port { name: sp.name.clone().unwrap_or_default(), port, protocol, app_protocol: sp.app_protocol.clone() });
        }
    }
    out.sort();
    out
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Reconciles the endpoints of one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<EndpointsCtx>) -> Result<Action, Error> {
    let Some(selector) = service_selector(&svc) else { return Ok(Action::await_change()) };
    if is_deleting(svc.meta()) {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or("default").to_owned();
    let publish_not_ready = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .select(Some(&ns), &selector)
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty()))
        .filter(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
        .collect();
    pods.sort_by(|a, b| a.name().cmp(b.name()));

    // Group pods by their resolved port set.
    let mut groups: BTreeMap<Vec<Port>, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods {
        groups.entry(resolve_ports(&svc, &pod)).or_default().push(pod);
    }
    sync_slices(&ctx, &svc, &ns, &groups, publish_not_ready).await?;
    sync_endpoints(&ctx, &svc, &ns, &groups, publish_not_ready).await?;
    Ok(Action::await_change())
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.meta().namespace.clone(),
        name: pod.meta().name.clone(),
        uid: pod.meta().uid.clone(),
        ..ObjectReference::default()
    }
}

fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

async fn sync_slices(
    ctx: &EndpointsCtx,
    svc: &Service,
    ns: &str,
    groups: &BTreeMap<Vec<Port>, Vec<Arc<Pod>>>,
    publish_not_ready: bool,
) -> Result<(), Error> {
    let mut desired: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let labels: BTreeMap<String, String> =
        [(SERVICE_NAME_LABEL.to_owned(), svc.name().to_owned()), (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())].into();
    let slice = |name: String, ports: &[Port], endpoints: Vec<Endpoint>, ipv6: bool| EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.to_owned()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![controller_ref(svc)]),
            ..ObjectMeta::default()
        },
        address_type: if ipv6 { "IPv6".into() } else { "IPv4".into() },
        endpoints: Some(endpoints),
        ports: Some(
            ports
                .iter()
                .map(|p| SlicePort {
                    name: Some(p.name.clone()),
                    port: Some(p.port),
                    protocol: Some(p.protocol.clone()),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect(),
        ),
    };
    for (ports, pods) in groups {
        let tag = fnv(&format!("{ports:?}"));
        for (i, chunk) in pods.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            let endpoints: Vec<Endpoint> = chunk
                .iter()
                .map(|p| {
                    let terminating = is_deleting(p.meta());
                    let ready = pod_is_ready(p);
                    Endpoint {
                        addresses: vec![pod_ip(p)],
                        conditions: Some(EndpointConditions {
                            ready: Some((ready || publish_not_ready) && !terminating),
                            serving: Some(ready || publish_not_ready),
                            terminating: Some(terminating),
                        }),
                        node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                        target_ref: Some(pod_ref(p)),
                        ..Endpoint::default()
                    }
                })
                .collect();
            let ipv6 = chunk.first().is_some_and(|p| pod_ip(p).contains(':'));
            let name = format!("{}-{tag:08x}-{i}", svc.name());
            desired.insert(name.clone(), slice(name, ports, endpoints, ipv6));
        }
    }
    if desired.is_empty() {
        // A Service with no endpoints keeps one empty slice, so consumers see it is known and empty.
        let name = format!("{}-empty", svc.name());
        let mut s = slice(name.clone(), &[], Vec::new(), false);
        s.ports = None;
        desired.insert(name, s);
    }
    let api = Api::<EndpointSlice>::namespaced(ctx.shared.client.clone(), ns);
    let existing: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .by_index(INDEX_LABEL, &format!("{SERVICE_NAME_LABEL}={}", svc.name()))
        .into_iter()
        .filter(|s| s.namespace() == Some(ns))
        .filter(|s| s.meta().labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY))
        .collect();
    for old in &existing {
        if !desired.contains_key(old.name()) {
            ignore_not_found(api.delete(old.name(), &DeleteParams::default()).await)?;
        }
    }
    for (name, want) in desired {
        match existing.iter().find(|s| s.name() == name) {
            Some(have) => {
                if have.endpoints != want.endpoints || have.ports != want.ports || have.address_type != want.address_type {
                    let mut update = want;
                    update.metadata = have.metadata.clone();
                    update.metadata.labels = Some(labels.clone());
                    api.replace(&update, &PostParams::default()).await?;
                }
            }
            None => match api.create(&want, &PostParams::default()).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {
                    // Our cache is behind; the watch will bring the slice and another pass.
                }
                Err(e) => return Err(e),
            },
        }
    }
    Ok(())
}

async fn sync_endpoints(
    ctx: &EndpointsCtx,
    svc: &Service,
    ns: &str,
    groups: &BTreeMap<Vec<Port>, Vec<Arc<Pod>>>,
    publish_not_ready: bool,
) -> Result<(), Error> {
    let mut subsets = Vec::new();
    for (ports, pods) in groups {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for p in pods {
            if is_deleting(p.meta()) && !publish_not_ready {
                continue;
            }
            let addr = EndpointAddress {
                ip: pod_ip(p),
                node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_ref(p)),
                hostname: None,
            };
            if pod_is_ready(p) || publish_not_ready { ready.push(addr) } else { not_ready.push(addr) }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: (!p.name.is_empty()).then(|| p.name.clone()),
                        port: p.port,
                        protocol: Some(p.protocol.clone()),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect(),
            ),
        });
    }
    // The legacy object holds at most 1000 addresses; the rest are only in the slices.
    let mut budget = MAX_ENDPOINTS_ADDRESSES;
    let mut truncated = false;
    for subset in &mut subsets {
        for list in [&mut subset.addresses, &mut subset.not_ready_addresses] {
            if let Some(l) = list.as_mut() {
                if l.len() > budget {
                    l.truncate(budget);
                    truncated = true;
                }
                budget -= l.len();
            }
        }
    }
    subsets
        .retain(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()) || s.not_ready_addresses.as_ref().is_some_and(|a| !a.is_empty()));
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let over = truncated.then(|| [(OVER_CAPACITY.to_owned(), "truncated".to_owned())].into_iter().collect::<BTreeMap<_, _>>());
    let api = Api::<Endpoints>::namespaced(ctx.shared.client.clone(), ns);
    let labels: BTreeMap<String, String> = [(SERVICE_NAME_LABEL.to_owned(), svc.name().to_owned())].into();
    match ctx.endpoints.get(&ObjectKey::new(Some(ns), svc.name())) {
        Some(have) => {
            let have_over = have.metadata.annotations.as_ref().and_then(|a| a.get(OVER_CAPACITY)).is_some();
            if have.subsets != subsets || have_over != truncated {
                let mut update = (*have).clone();
                update.subsets = subsets;
                let mut annotations = update.metadata.annotations.take().unwrap_or_default();
                annotations.remove(OVER_CAPACITY);
                annotations.extend(over.into_iter().flatten());
                update.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
                api.replace(&update, &PostParams::default()).await?;
            }
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(svc.name().to_owned()),
                    namespace: Some(ns.to_owned()),
                    labels: Some(labels),
                    annotations: over,
                    ..ObjectMeta::default()
                },
                subsets,
            };
            match api.create(&ep, &PostParams::default()).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
