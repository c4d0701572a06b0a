//! A StatefulSet's ControllerRevisions: one per distinct pod template, holding the strategic
//! merge patch `{"spec":{"template":{…,"$patch":"replace"}}}` that restores it (what `kubectl
//! rollout undo` applies and `kubectl rollout history` reads), numbered in order of use, pruned
//! to `revisionHistoryLimit`.

use bosun_core::meta::{controller_ref, is_deleting};
use bosun_core::{Api, DeleteParams, Error, Object, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// The label carrying a revision's hash.
pub const REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// Names longer than this are cut before `-<hash>` is appended (as Kubernetes).
const MAX_PREFIX: usize = 223;
/// Name collisions tolerated in one sync before giving up.
const MAX_COLLISIONS: i32 = 8;

/// The revision patch for the set's current template.
pub fn revision_data(set: &StatefulSet) -> Value {
    let mut template = serde_json::to_value(&set.spec.template).unwrap_or_else(|_| Value::Object(Default::default()));
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), Value::String("replace".into()));
    }
    serde_json::json!({"spec": {"template": template}})
}

/// The pod template a revision restores.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.0.get("spec")?.get("template")?.clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// The revision's number (0 when unset).
pub fn number(revision: &ControllerRevision) -> i64 {
    revision.revision.unwrap_or(0)
}

/// JSON with object keys sorted at every level, so that equal data hashes equally.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(k) {
                    canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The hash of revision data (FNV-1a over the canonical JSON and the collision count), spelled
/// in the vowel-free alphabet Kubernetes uses for generated names.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    canonical(data, &mut text);
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(text.as_bytes());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect()
}

/// `<set>-<hash>`, the set's name cut to fit.
pub fn revision_name(set_name: &str, hash: &str) -> String {
    let mut prefix = set_name;
    if prefix.len() > MAX_PREFIX {
        let mut cut = MAX_PREFIX;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix = &prefix[..cut];
    }
    format!("{prefix}-{hash}")
}

/// A new revision of the set's current template: the template's labels plus the hash label,
/// the set's annotations (`kubernetes.io/change-cause` shows in `kubectl rollout history`), the
/// set as controller.
pub fn new_revision(set: &StatefulSet, revision: i64, collision_count: Option<i32>) -> ControllerRevision {
    let data = revision_data(set);
    let hash = hash(&data, collision_count);
    let mut labels = set.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
    let mut annotations = set.meta().annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(set.name(), &hash)),
            namespace: set.meta().namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![controller_ref(set)]),
            ..ObjectMeta::default()
        },
        data: RawExtension(data),
        revision: Some(revision),
    }
}

/// The revisions a sync works with.
#[derive(Debug, Clone)]
pub struct Revisions {
    /// The revision the set's pods are at (`status.currentRevision`), or the update revision.
    pub current: Arc<ControllerRevision>,
    /// The revision of the set's template now (`status.updateRevision`).
    pub update: Arc<ControllerRevision>,
    /// `status.collisionCount` after this sync.
    pub collision_count: Option<i32>,
}

/// Finds or makes the revision of the set's current template among `owned` (its revisions): the
/// newest equal one is reused, an older equal one (a rollback) is renumbered to be the newest,
/// otherwise a new one is created, stepping the collision count past names taken by other data.
pub async fn ensure(api: &Api<ControllerRevision>, set: &StatefulSet, mut owned: Vec<Arc<ControllerRevision>>) -> Result<Revisions, Error> {
    owned.sort_by(|a, b| number(a).cmp(&number(b)).then_with(|| a.name().cmp(b.name())));
    let data = revision_data(set);
    let next = owned.last().map_or(1, |r| number(r) + 1);
    let mut collision_count = set.status.as_ref().and_then(|s| s.collision_count);
    let equal: Vec<&Arc<ControllerRevision>> = owned.iter().filter(|r| r.data.0 == data && !is_deleting(r.meta())).collect();
    let update = match equal.last() {
        Some(r) if owned.last().is_some_and(|last| last.uid() == r.uid()) => (*r).clone(),
        Some(r) => {
            let patch = serde_json::json!({"metadata": {"resourceVersion": r.resource_version()}, "revision": next});
            Arc::new(api.patch(r.name(), &Patch::Merge(patch), &PatchParams::default()).await?)
        }
        None => {
            let mut made = None;
            for _ in 0..MAX_COLLISIONS {
                let revision = new_revision(set, next, collision_count);
                match api.create(&revision, &PostParams::default()).await {
                    Ok(r) => {
                        made = Some(r);
                        break;
                    }
                    Err(e) if e.is_already_exists() => {
                        let existing = api.get(revision.name()).await?;
                        let owner = bosun_core::meta::controller_of(existing.meta()).map(|r| r.uid.clone());
                        if existing.data.0 == data && owner.as_deref() == Some(set.uid()) {
                            // The cache had not seen it yet.
                            made = Some(existing);
                            break;
                        }
                        if existing.data.0 == data
                            && owner.is_none()
                            && let Some(adopted) = adopt(api, set, &existing).await?
                        {
                            made = Some(adopted);
                            break;
                        }
                        collision_count = Some(collision_count.unwrap_or(0) + 1);
                    }
                    Err(e) => return Err(e),
                }
            }
            Arc::new(made.ok_or_else(|| Error::conflict(format!("no free revision name for statefulset {}", set.name())))?)
        }
    };
    let current_name = set.status.as_ref().and_then(|s| s.current_revision.as_deref()).unwrap_or_default();
    let current = owned.iter().find(|r| r.name() == current_name).cloned().unwrap_or_else(|| update.clone());
    let current = if current.name() == update.name() { update.clone() } else { current };
    Ok(Revisions { current, update, collision_count })
}

/// Makes the set the controller of an orphaned revision; `None` if it is gone.
pub async fn adopt(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    revision: &ControllerRevision,
) -> Result<Option<ControllerRevision>, Error> {
    let mut refs = revision.meta().owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(set));
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": revision.resource_version()}});
    super::super::ignore_not_found(api.patch(revision.name(), &Patch::Merge(patch), &PatchParams::default()).await)
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit` (default 10) that no pod uses and
/// that are neither current nor the update revision.
pub async fn truncate(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    owned: &[Arc<ControllerRevision>],
    live: &HashSet<&str>,
) -> Result<(), Error> {
    let limit = usize::try_from(set.spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(0);
    let mut old: Vec<&Arc<ControllerRevision>> = owned.iter().filter(|r| !live.contains(r.name()) && !is_deleting(r.meta())).collect();
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| number(r));
    for r in &old[..old.len() - limit] {
        super::super::ignore_not_found(api.delete(r.name(), &DeleteParams::default()).await)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn set(image: &str) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.name = Some("web".into());
        s.spec.template = PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some([("app".to_owned(), "web".to_owned())].into()), ..ObjectMeta::default() }),
            spec: Some(PodSpec {
                containers: vec![Container { name: "c".into(), image: Some(image.into()), ..Container::default() }],
                ..PodSpec::default()
            }),
        };
        s
    }

    #[test]
    fn revision_data_is_a_replacing_template_patch_that_round_trips() {
        let s = set("web:1");
        let data = revision_data(&s);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(data.as_object().map(|m| m.len()), Some(1));
        let r = new_revision(&s, 3, None);
        assert_eq!(template_of(&r), Some(s.spec.template.clone()));
        assert_eq!(r.revision, Some(3));
        assert!(r.name().starts_with("web-"));
        let labels = r.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get(REVISION_HASH_LABEL).map(|h| format!("web-{h}")), Some(r.name().to_owned()));
    }

    #[test]
    fn hashes_depend_on_the_template_and_collision_count_only() {
        let a = revision_data(&set("web:1"));
        let b = revision_data(&set("web:2"));
        assert_eq!(hash(&a, None), hash(&revision_data(&set("web:1")), None));
        assert_ne!(hash(&a, None), hash(&b, None));
        assert_ne!(hash(&a, None), hash(&a, Some(1)));
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), MAX_PREFIX + 2);
    }
}
