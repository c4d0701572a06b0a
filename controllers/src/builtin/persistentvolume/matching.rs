//! Which PersistentVolume satisfies a claim: storage class, volume mode, access modes, capacity,
//! the claim's label selector, pre-binding and (for delayed binding) the selected node.

use bosun_core::{LabelSelector, Quantity};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use std::sync::Arc;

/// The storage class a claim asks for (`""`: no class).
pub fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// The storage class of a volume (`""`: no class).
pub fn volume_class(pv: &PersistentVolume) -> &str {
    pv.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// The storage a claim requests (`None`: none or unparsable).
pub fn requested(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    let q = pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?.get("storage")?;
    Quantity::parse(&q.0).ok()
}

/// The storage capacity of a volume (`None`: none or unparsable).
pub fn capacity(pv: &PersistentVolume) -> Option<Quantity> {
    let q = pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    Quantity::parse(&q.0).ok()
}

fn volume_mode(mode: Option<&String>) -> &str {
    mode.map_or("Filesystem", String::as_str)
}

/// Whether `pv` satisfies `pvc` regardless of who either is bound to: same class, same volume
/// mode, every requested access mode offered, enough capacity, and the claim's selector.
pub fn satisfies(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else { return false };
    if volume_class(pv) != claim_class(pvc) {
        return false;
    }
    if volume_mode(vs.volume_mode.as_ref()) != volume_mode(cs.volume_mode.as_ref()) {
        return false;
    }
    let offered = vs.access_modes.as_deref().unwrap_or_default();
    if !cs.access_modes.as_deref().unwrap_or_default().iter().all(|m| offered.contains(m)) {
        return false;
    }
    match (requested(pvc), capacity(pv)) {
        (Some(want), Some(have)) if have < want => return false,
        (Some(_), None) => return false,
        _ => {}
    }
    if let Some(sel) = &cs.selector {
        let Ok(sel) = LabelSelector::from_api(sel) else { return false };
        if !sel.matches_opt(pv.metadata.labels.as_ref()) {
            return false;
        }
    }
    true
}

/// Whether a volume's `claimRef` names this claim (by namespace and name, and by UID when the
/// reference carries one).
pub fn refers_to(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    r.name.as_deref() == pvc.metadata.name.as_deref()
        && r.namespace.as_deref() == pvc.metadata.namespace.as_deref()
        && r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == pvc.metadata.uid.as_deref())
}

/// Whether a volume's required node affinity admits `node` (no affinity admits every node).
pub fn node_admits(pv: &PersistentVolume, node: &Node) -> bool {
    let Some(required) = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()) else {
        return true;
    };
    crate::builtin::node_selector_admits(required, node)
}

/// Whether a volume can be bound now: not being deleted, not Released or Failed.
fn bindable(pv: &PersistentVolume) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    pv.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Released" | "Failed"))
}

/// The best volume for a claim among `volumes`: one pre-bound to the claim if it satisfies it,
/// else the smallest free volume that satisfies it (ties by name). With `node` (delayed binding),
/// only volumes whose node affinity admits that node.
pub fn best_match(pvc: &PersistentVolumeClaim, volumes: &[Arc<PersistentVolume>], node: Option<&Node>) -> Option<Arc<PersistentVolume>> {
    let fits = |pv: &PersistentVolume| bindable(pv) && satisfies(pv, pvc) && node.is_none_or(|n| node_admits(pv, n));
    if let Some(pre) = volumes.iter().find(|pv| refers_to(pv, pvc) && fits(pv)) {
        return Some(pre.clone());
    }
    let mut free: Vec<&Arc<PersistentVolume>> =
        volumes.iter().filter(|pv| pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()) && fits(pv)).collect();
    free.sort_by(|a, b| capacity(a).cmp(&capacity(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
    free.first().map(|pv| (*pv).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec,
        VolumeNodeAffinity, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pv(name: &str, size: &str, modes: &[&str], class: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            spec: Some(PersistentVolumeSpec {
                capacity: Some([("storage".to_owned(), Q(size.into()))].into()),
                access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
                storage_class_name: (!class.is_empty()).then(|| class.to_owned()),
                ..PersistentVolumeSpec::default()
            }),
            status: None,
        }
    }

    fn pvc(name: &str, size: &str, modes: &[&str], class: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), Q(size.into()))].into()),
                    limits: None,
                }),
                storage_class_name: Some(class.to_owned()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn the_smallest_volume_that_fits_class_modes_and_size_wins() {
        let vols: Vec<Arc<PersistentVolume>> = vec![
            Arc::new(pv("big", "10Gi", &["ReadWriteOnce"], "slow")),
            Arc::new(pv("small", "1Gi", &["ReadWriteOnce"], "slow")),
            Arc::new(pv("mid", "2Gi", &["ReadWriteOnce", "ReadOnlyMany"], "slow")),
            Arc::new(pv("other-class", "2Gi", &["ReadWriteOnce"], "fast")),
        ];
        let name = |c: &PersistentVolumeClaim| best_match(c, &vols, None).and_then(|v| v.metadata.name.clone());
        assert_eq!(name(&pvc("a", "1500Mi", &["ReadWriteOnce"], "slow")).as_deref(), Some("mid"));
        assert_eq!(name(&pvc("a", "500Mi", &["ReadWriteOnce"], "slow")).as_deref(), Some("small"));
        assert_eq!(name(&pvc("a", "1Gi", &["ReadOnlyMany"], "slow")).as_deref(), Some("mid"));
        assert_eq!(name(&pvc("a", "20Gi", &["ReadWriteOnce"], "slow")), None);
        assert_eq!(name(&pvc("a", "1Gi", &["ReadWriteMany"], "slow")), None);
        assert_eq!(name(&pvc("a", "1Gi", &["ReadWriteOnce"], "fast")).as_deref(), Some("other-class"));
        assert_eq!(name(&pvc("a", "1Gi", &["ReadWriteOnce"], "")), None);
    }

    #[test]
    fn a_volume_pre_bound_to_a_claim_is_chosen_and_others_cannot_take_it() {
        let mut pre = pv("pre", "5Gi", &["ReadWriteOnce"], "");
        if let Some(s) = pre.spec.as_mut() {
            s.claim_ref = Some(ObjectReference { name: Some("mine".into()), namespace: Some("default".into()), ..Default::default() });
        }
        let vols = vec![Arc::new(pv("free", "1Gi", &["ReadWriteOnce"], "")), Arc::new(pre)];
        let name = |c: &PersistentVolumeClaim| best_match(c, &vols, None).and_then(|v| v.metadata.name.clone());
        assert_eq!(name(&pvc("mine", "1Gi", &["ReadWriteOnce"], "")).as_deref(), Some("pre"));
        assert_eq!(name(&pvc("theirs", "2Gi", &["ReadWriteOnce"], "")), None);
    }

    #[test]
    fn node_affinity_restricts_delayed_binding() {
        let mut local = pv("local", "1Gi", &["ReadWriteOnce"], "");
        if let Some(s) = local.spec.as_mut() {
            s.node_affinity = Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec!["node-b".into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            });
        }
        let node = |n: &str| Node {
            metadata: ObjectMeta {
                name: Some(n.into()),
                labels: Some([("kubernetes.io/hostname".to_owned(), n.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        assert!(node_admits(&local, &node("node-b")));
        assert!(!node_admits(&local, &node("node-a")));
        let vols = vec![Arc::new(local)];
        let claim = pvc("c", "1Gi", &["ReadWriteOnce"], "");
        assert!(best_match(&claim, &vols, Some(&node("node-a"))).is_none());
        assert!(best_match(&claim, &vols, Some(&node("node-b"))).is_some());
    }
}
