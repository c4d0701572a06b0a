//! Resource arithmetic: a pod's effective requests and a node's allocatable, as plain integers.

use bosun_core::Quantity;
use bosun_core::k8s_openapi::api::core::v1::{Container, Pod};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use std::collections::BTreeMap;

/// The CPU request assumed for scoring when a container sets none (100m, as kube-scheduler).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory request assumed for scoring when a container sets none (200 MiB, as kube-scheduler).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Resource name of CPU.
pub const CPU: &str = "cpu";
/// Resource name of memory.
pub const MEMORY: &str = "memory";
/// Resource name of local ephemeral storage.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// Resource name of the pod count.
pub const PODS: &str = "pods";

/// An amount of every resource the scheduler tracks: CPU in millicores, memory and ephemeral
/// storage in bytes, the pod count, and scalar (extended, hugepages) resources in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pods (for allocatable: how many the node accepts).
    pub allowed_pod_number: i64,
    /// Extended and hugepages resources by name, in whole units.
    pub scalar: Vec<(String, i64)>,
}

fn quantity(q: &ApiQuantity) -> Option<Quantity> {
    Quantity::try_from(q).ok()
}

impl Resource {
    /// Reads a resource list (`allocatable`, `requests`); unparsable quantities count as zero.
    pub fn from_list(list: &BTreeMap<String, ApiQuantity>) -> Self {
        let mut r = Self::default();
        for (name, q) in list {
            let Some(q) = quantity(q) else { continue };
            match name.as_str() {
                CPU => r.milli_cpu += q.milli_value(),
                MEMORY => r.memory += q.value(),
                EPHEMERAL_STORAGE => r.ephemeral_storage += q.value(),
                PODS => r.allowed_pod_number += q.value(),
                other if is_scalar(other) => r.add_scalar(other, q.value()),
                _ => {}
            }
        }
        r
    }

    /// The amount of a scalar resource.
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    /// Adds to a scalar resource.
    pub fn add_scalar(&mut self, name: &str, value: i64) {
        match self.scalar.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v += value,
            None => self.scalar.push((name.to_owned(), value)),
        }
    }

    /// Adds another amount.
    pub fn add(&mut self, other: &Self) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (n, v) in &other.scalar {
            self.add_scalar(n, *v);
        }
    }

    /// Subtracts another amount.
    pub fn sub(&mut self, other: &Self) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (n, v) in &other.scalar {
            self.add_scalar(n, -*v);
        }
    }

    /// Raises every field to at least `other`'s.
    pub fn max_with(&mut self, other: &Self) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (n, v) in &other.scalar {
            let mine = self.scalar(n);
            if *v > mine {
                self.add_scalar(n, *v - mine);
            }
        }
    }

    /// The amount of a resource by name (`cpu` in millicores).
    pub fn by_name(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pod_number,
            other => self.scalar(other),
        }
    }

    /// True when nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalar.iter().all(|(_, v)| *v == 0)
    }
}

/// Whether a resource name is a scalar (extended or hugepages) resource the scheduler accounts.
pub fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/") && !name.starts_with("requests."))
        || name.starts_with("attachable-volumes-")
}

fn container_requests(c: &Container) -> Resource {
    c.resources.as_ref().and_then(|r| r.requests.as_ref()).map(Resource::from_list).unwrap_or_default()
}

fn container_non_zero(c: &Container) -> (i64, i64) {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let cpu = requests.and_then(|r| r.get(CPU)).and_then(quantity).map(|q| q.milli_value());
    let mem = requests.and_then(|r| r.get(MEMORY)).and_then(quantity).map(|q| q.value());
    (cpu.unwrap_or(DEFAULT_MILLI_CPU_REQUEST), mem.unwrap_or(DEFAULT_MEMORY_REQUEST))
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A pod's effective requests as kube-scheduler computes them: the sum over containers, raised to
/// each init container's need (restartable sidecars add up), plus the pod overhead.
/// The second value is the non-zero (CPU, memory) request used by scoring.
pub fn pod_requests(pod: &Pod) -> (Resource, (i64, i64)) {
    let Some(spec) = pod.spec.as_ref() else { return (Resource::default(), (0, 0)) };
    let mut sum = Resource::default();
    let mut nz = (0, 0);
    for c in &spec.containers {
        sum.add(&container_requests(c));
        let (cpu, mem) = container_non_zero(c);
        nz.0 += cpu;
        nz.1 += mem;
    }
    let mut sidecars = Resource::default();
    let mut sidecars_nz = (0, 0);
    let mut init_max = Resource::default();
    let mut init_nz = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        let (cpu, mem) = container_non_zero(c);
        if is_sidecar(c) {
            sidecars.add(&r);
            sidecars_nz.0 += cpu;
            sidecars_nz.1 += mem;
            init_max.max_with(&sidecars);
            init_nz = (init_nz.0.max(sidecars_nz.0), init_nz.1.max(sidecars_nz.1));
        } else {
            let mut need = sidecars.clone();
            need.add(&r);
            init_max.max_with(&need);
            init_nz = (init_nz.0.max(sidecars_nz.0 + cpu), init_nz.1.max(sidecars_nz.1 + mem));
        }
    }
    sum.add(&sidecars);
    nz = (nz.0 + sidecars_nz.0, nz.1 + sidecars_nz.1);
    sum.max_with(&init_max);
    nz = (nz.0.max(init_nz.0), nz.1.max(init_nz.1));
    if let Some(overhead) = spec.overhead.as_ref() {
        let o = Resource::from_list(overhead);
        sum.add(&o);
        nz = (nz.0 + o.milli_cpu, nz.1 + o.memory);
    }
    (sum, nz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn container(cpu: &str, mem: &str, sidecar: bool) -> Container {
        let mut requests = BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert(CPU.to_owned(), ApiQuantity(cpu.into()));
        }
        if !mem.is_empty() {
            requests.insert(MEMORY.to_owned(), ApiQuantity(mem.into()));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements { requests: Some(requests), ..Default::default() }),
            restart_policy: sidecar.then(|| "Always".to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn requests_take_the_larger_of_containers_and_init_containers() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("100m", "1Gi", false), container("200m", "", false)],
                init_containers: Some(vec![container("1", "512Mi", false)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (r, nz) = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(nz, (1000, (1 << 30) + DEFAULT_MEMORY_REQUEST));
    }

    #[test]
    fn sidecars_add_to_the_main_containers() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("100m", "100Mi", false)],
                init_containers: Some(vec![container("50m", "10Mi", true), container("120m", "1Mi", false)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (r, _) = pod_requests(&pod);
        // containers + sidecar = 150m; init phase = 50m + 120m = 170m.
        assert_eq!(r.milli_cpu, 170);
        assert_eq!(r.memory, 110 * 1024 * 1024);
    }

    #[test]
    fn extended_resources_are_scalars() {
        let mut list = BTreeMap::new();
        list.insert("example.com/gpu".to_owned(), ApiQuantity("2".into()));
        list.insert("hugepages-2Mi".to_owned(), ApiQuantity("4Mi".into()));
        list.insert(PODS.to_owned(), ApiQuantity("110".into()));
        let r = Resource::from_list(&list);
        assert_eq!(r.scalar("example.com/gpu"), 2);
        assert_eq!(r.scalar("hugepages-2Mi"), 4 * 1024 * 1024);
        assert_eq!(r.allowed_pod_number, 110);
    }
}
