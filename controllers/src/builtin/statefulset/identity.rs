//! A StatefulSet pod's stable identity and storage: its ordinal name, hostname, subdomain and
//! labels, and the PersistentVolumeClaims of the `volumeClaimTemplates`, owned as the
//! `persistentVolumeClaimRetentionPolicy` says.

use bosun_core::Object;
use bosun_core::meta::controller_ref;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The label naming the pod (`web-0`), for a per-pod Service.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The first ordinal (`spec.ordinals.start`, default 0).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0)
}

/// The wanted number of pods (`spec.replicas`, default 1).
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.replicas.unwrap_or(1).max(0)
}

/// The name of the pod with `ordinal`: `<set>-<ordinal>`.
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name())
}

/// The ordinal of a pod named `<set>-<ordinal>`, or `None` when the name is not one of the set's.
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let digits = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ordinal: i32 = digits.parse().ok()?;
    // `web-01` is not `web-1`.
    (ordinal.to_string() == digits).then_some(ordinal)
}

/// The claim of template `template` for `ordinal`: `<template>-<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", set.name())
}

/// The revision a pod was made from (its `controller-revision-hash` label).
pub fn revision_of(pod: &Pod) -> &str {
    pod.meta().labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map_or("", String::as_str)
}

/// The claims the pod with `ordinal` mounts, one per volume claim template, labelled with the
/// set's selector labels (owner references are left to [`claim_owners`]).
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let selector_labels = set.spec.selector.match_labels.clone().unwrap_or_default();
    set.spec
        .volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(t.name(), set, ordinal)),
                    namespace: set.meta().namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    ..ObjectMeta::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Points the volumes named after claim templates at the ordinal's claims; other volumes stay.
pub fn update_storage(set: &StatefulSet, ordinal: i32, spec: &mut PodSpec) {
    let templates: Vec<&str> = set.spec.volume_claim_templates.iter().flatten().map(|t| t.name()).collect();
    if templates.is_empty() {
        return;
    }
    let mut volumes: Vec<Volume> = templates
        .iter()
        .map(|t| Volume {
            name: (*t).to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim_name(t, set, ordinal), read_only: None }),
            ..Volume::default()
        })
        .collect();
    volumes.extend(spec.volumes.take().into_iter().flatten().filter(|v| !templates.contains(&v.name.as_str())));
    spec.volumes = Some(volumes);
}

/// A new pod for `ordinal` from `template` (the template of revision `revision`): named
/// `<set>-<ordinal>`, hostname = its name, subdomain = `serviceName`, identity and revision
/// labels, volumes bound to its claims, controlled by the set.
pub fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let name = pod_name(set, ordinal);
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_owned());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set.spec.service_name.clone().filter(|s| !s.is_empty());
    update_storage(set, ordinal, &mut spec);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.meta().namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Whether the pod carries its identity labels.
pub fn identity_matches(pod: &Pod, ordinal: i32) -> bool {
    let labels = pod.meta().labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    get(POD_NAME_LABEL) == Some(pod.name()) && get(POD_INDEX_LABEL) == Some(ordinal.to_string().as_str())
}

/// Whether the pod mounts each of its claims under the template's name.
pub fn storage_matches(set: &StatefulSet, pod: &Pod, ordinal: i32) -> bool {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
    set.spec.volume_claim_templates.iter().flatten().all(|t| {
        volumes.iter().any(|v| {
            v.name == t.name() && v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim_name(t.name(), set, ordinal))
        })
    })
}

/// `persistentVolumeClaimRetentionPolicy` as (delete when the set is deleted, delete when scaled
/// down); anything but `Delete` retains, the default.
pub fn retention(set: &StatefulSet) -> (bool, bool) {
    let policy = set.spec.persistent_volume_claim_retention_policy.as_ref();
    let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (delete(policy.and_then(|p| p.when_deleted.as_ref())), delete(policy.and_then(|p| p.when_scaled.as_ref())))
}

/// The owner references a claim gets when it is created for a pod in range: the set, as
/// controller, when claims go with the set.
pub fn creation_owners(set: &StatefulSet) -> Option<Vec<OwnerReference>> {
    let (when_deleted, _) = retention(set);
    when_deleted.then(|| vec![controller_ref(set)])
}

/// Whether the claim names some earlier pod of this name as owner: it belongs to a scaled-down
/// incarnation and is about to be collected, so a new pod must wait for it to go.
pub fn stale_pod_owner(claim: &PersistentVolumeClaim, pod_name: &str, pod_uid: Option<&str>) -> bool {
    claim.meta().owner_references.iter().flatten().any(|r| r.kind == "Pod" && r.name == pod_name && Some(r.uid.as_str()) != pod_uid)
}

/// The owner references the claim should have for `pod` under the retention policy, or `None`
/// when it already has them. Kubernetes' rules: Retain/Retain no owner; Delete on set deletion
/// the set as controller; Delete on scale-down the pod as controller once the pod is scaled
/// down (and then not the set). Claims owned by another controller or by an earlier set or pod
/// of the same name are left alone, beyond dropping our own references.
pub fn claim_owners(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod, scaled_down: bool) -> Option<Vec<OwnerReference>> {
    let refs = claim.meta().owner_references.clone().unwrap_or_default();
    let stale = refs.iter().any(|r| {
        (r.kind == "StatefulSet" && r.name == set.name() && r.uid != set.uid())
            || (r.kind == "Pod" && r.name == pod.name() && r.uid != pod.uid())
    });
    if stale {
        return None;
    }
    let ours = |r: &OwnerReference| r.uid == set.uid() || r.uid == pod.uid();
    let mut want: Vec<OwnerReference> = refs.iter().filter(|r| !ours(r)).cloned().collect();
    let foreign_controller = want.iter().any(|r| r.controller == Some(true));
    if !foreign_controller {
        match retention(set) {
            (false, false) => {}
            (true, false) => want.push(controller_ref(set)),
            (false, true) if scaled_down => want.push(controller_ref(pod)),
            (false, true) => {}
            (true, true) => want.push(if scaled_down { controller_ref(pod) } else { controller_ref(set) }),
        }
    }
    (want != refs).then_some(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};

    fn set(when_deleted: &str, when_scaled: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("set-uid".into()),
                ..ObjectMeta::default()
            },
            spec: StatefulSetSpec {
                persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.into()),
                    when_scaled: Some(when_scaled.into()),
                }),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta { name: Some("data".into()), ..ObjectMeta::default() },
                    ..PersistentVolumeClaim::default()
                }]),
                ..StatefulSetSpec::default()
            },
            status: None,
        }
    }

    fn pod(uid: &str) -> Pod {
        Pod { metadata: ObjectMeta { name: Some("web-2".into()), uid: Some(uid.into()), ..ObjectMeta::default() }, ..Pod::default() }
    }

    #[test]
    fn ordinals_parse_only_from_the_sets_own_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "web-x-1"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
        assert_eq!(ordinal_of("web", "web--1"), None);
        assert_eq!(ordinal_of("web-x", "web-x-3"), Some(3));
    }

    #[test]
    fn pods_get_identity_labels_hostname_and_claim_volumes() {
        let mut s = set("Retain", "Retain");
        s.spec.service_name = Some("nginx".into());
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some([("app".to_owned(), "web".to_owned())].into()), ..ObjectMeta::default() }),
            spec: Some(PodSpec {
                volumes: Some(vec![
                    Volume { name: "data".into(), ..Volume::default() },
                    Volume { name: "cache".into(), ..Volume::default() },
                ]),
                ..PodSpec::default()
            }),
        };
        let p = pod_for(&s, &template, 3, "web-abc");
        assert_eq!(p.name(), "web-3");
        let spec = p.spec.clone().unwrap_or_default();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-3"), Some("nginx")));
        let volumes = spec.volumes.unwrap_or_default();
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()), Some("data-web-3"));
        assert_eq!(volumes[1].name, "cache");
        assert!(identity_matches(&p, 3) && storage_matches(&s, &p, 3));
        assert_eq!(revision_of(&p), "web-abc");
        assert_eq!(claims_for(&s, 3)[0].name(), "data-web-3");
    }

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let claim = PersistentVolumeClaim::default();
        let p = pod("pod-uid");
        let uids = |refs: Option<Vec<OwnerReference>>| refs.map(|r| r.into_iter().map(|r| r.uid).collect::<Vec<_>>());
        assert_eq!(uids(claim_owners(&claim, &set("Retain", "Retain"), &p, true)), None);
        assert_eq!(uids(claim_owners(&claim, &set("Delete", "Retain"), &p, false)), Some(vec!["set-uid".into()]));
        assert_eq!(uids(claim_owners(&claim, &set("Retain", "Delete"), &p, false)), None);
        assert_eq!(uids(claim_owners(&claim, &set("Retain", "Delete"), &p, true)), Some(vec!["pod-uid".into()]));
        assert_eq!(uids(claim_owners(&claim, &set("Delete", "Delete"), &p, false)), Some(vec!["set-uid".into()]));
        // Scaled down under Delete/Delete: the pod replaces the set as owner.
        let owned = PersistentVolumeClaim {
            metadata: ObjectMeta { owner_references: Some(vec![controller_ref(&set("Delete", "Delete"))]), ..ObjectMeta::default() },
            ..PersistentVolumeClaim::default()
        };
        assert_eq!(uids(claim_owners(&owned, &set("Delete", "Delete"), &p, true)), Some(vec!["pod-uid".into()]));
        assert_eq!(uids(claim_owners(&owned, &set("Delete", "Delete"), &p, false)), None);
        // A claim owned by an earlier pod of that name is not touched, and blocks a new pod.
        let stale = PersistentVolumeClaim {
            metadata: ObjectMeta { owner_references: Some(vec![controller_ref(&pod("old-uid"))]), ..ObjectMeta::default() },
            ..PersistentVolumeClaim::default()
        };
        assert_eq!(uids(claim_owners(&stale, &set("Retain", "Delete"), &p, true)), None);
        assert!(stale_pod_owner(&stale, "web-2", None));
        assert!(!stale_pod_owner(&stale, "web-2", Some("old-uid")));
    }
}
