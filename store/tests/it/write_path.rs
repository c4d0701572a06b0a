//! The write path's shortcuts (status writes default and check only `status`, merge patches merge
//! field by field, managedFields diff only the changed fields, typed round trips move instead of
//! copying) keep the answers of the general path.

use crate::api::{TestResult, client, pod};
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use bosun_core::{Api, Client, DynamicObject, Patch, PatchParams, PostParams, TypedObject};
use serde_json::json;
use std::sync::Arc;

fn named(manager: &str) -> PatchParams {
    PatchParams { field_manager: Some(manager.into()), ..PatchParams::default() }
}

fn managers(meta: &bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<(String, Option<String>)> {
    meta.managed_fields.iter().flatten().map(|m| (m.manager.clone().unwrap_or_default(), m.subresource.clone())).collect()
}

#[tokio::test]
async fn a_status_merge_patch_changes_status_only_and_types_it() -> TestResult {
    let c = client();
    let res = Pod::api_resource();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let created = pods.create(&pod("s"), &PostParams::default()).await?;
    let patch = json!({
        "metadata": {"labels": {"app": "other"}},
        "spec": {"nodeName": "elsewhere"},
        "status": {"phase": "Running", "podIP": "10.0.0.9", "bogus": 1,
                   "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null}]},
    });
    let patched = pods.patch_status("s", &Patch::Merge(patch), &PatchParams::default()).await?;
    let status = patched.status.clone().ok_or("status")?;
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.9"));
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"), "what create set stays");
    assert_eq!(patched.spec, created.spec, "spec is not the status subresource's");
    assert_eq!(patched.metadata.labels, created.metadata.labels, "nor metadata");
    assert_ne!(patched.metadata.resource_version, created.metadata.resource_version);
    // What is stored is the typed status: unknown fields and nulls are gone.
    let raw = c.get(bosun_core::Target::new(&res, Some("default")), "s").await?;
    assert!(raw.data["status"].get("bogus").is_none(), "{}", raw.data["status"]);
    assert_eq!(raw.data["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
    assert_eq!(raw.metadata.generation, Some(1), "a status write is no spec change");

    // A null member removes it, a null status removes the status.
    let patched = pods.patch_status("s", &Patch::Merge(json!({"status": {"podIP": null}})), &PatchParams::default()).await?;
    assert_eq!(patched.status.as_ref().and_then(|s| s.pod_ip.clone()), None);
    assert_eq!(patched.status.as_ref().and_then(|s| s.phase.clone()).as_deref(), Some("Running"));
    let cleared = pods.patch_status("s", &Patch::Merge(json!({"status": null})), &PatchParams::default()).await?;
    assert!(cleared.status.is_none_or(|s| s == Default::default()), "status removed");
    Ok(())
}

#[tokio::test]
async fn status_writes_keep_their_errors() -> TestResult {
    let c = client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let created = pods.create(&pod("e"), &PostParams::default()).await?;
    // A patch that leaves a badly shaped status is a 422 (as kube-apiserver answers a patch that
    // made its object undecodable) and changes nothing.
    let err = pods
        .patch_status("e", &Patch::Merge(json!({"status": {"phase": 5}})), &PatchParams::default())
        .await
        .err()
        .ok_or("a number for a phase passed")?;
    assert_eq!(err.code(), 422, "{err}");
    let err = pods
        .patch_status("e", &Patch::Merge(json!({"status": {"conditions": {"not": "a list"}}})), &PatchParams::default())
        .await
        .err()
        .ok_or("an object for conditions passed")?;
    assert_eq!(err.code(), 422, "{err}");
    assert_eq!(pods.get("e").await?.metadata.resource_version, created.metadata.resource_version, "nothing written");
    // Preconditions in the patch's metadata still hold: a stale version is 409, another name 400.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "status": {"phase": "Running"}});
    let err = pods.patch_status("e", &Patch::Merge(stale), &PatchParams::default()).await.err().ok_or("stale write passed")?;
    assert_eq!(err.code(), 409, "{err}");
    let renamed = json!({"metadata": {"name": "other"}, "status": {"phase": "Running"}});
    let err = pods.patch_status("e", &Patch::Merge(renamed), &PatchParams::default()).await.err().ok_or("rename passed")?;
    assert_eq!(err.code(), 400, "{err}");
    let current = json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "status": {"phase": "Running"}});
    pods.patch_status("e", &Patch::Merge(current), &PatchParams::default()).await?;
    // A merge patch that names a different kind is refused as before.
    let err = pods.patch("e", &Patch::Merge(json!({"kind": "Service"})), &PatchParams::default()).await.err().ok_or("kind change")?;
    assert_eq!(err.code(), 400, "{err}");
    Ok(())
}

#[tokio::test]
async fn merge_patches_of_metadata_and_spec_merge_as_before() -> TestResult {
    let c = client();
    let res = ConfigMap::api_resource();
    let cms = Api::<ConfigMap>::namespaced(c.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "m", "labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}},
        "data": {"k": "v", "gone": "soon"},
    }))?;
    cms.create(&cm, &PostParams::default()).await?;
    let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": {"gone": null, "new": "n"}, "binaryData": null});
    let patched = cms.patch("m", &Patch::Merge(patch), &PatchParams::default()).await?;
    let labels = patched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.into_iter().collect::<Vec<_>>(), vec![("b".to_owned(), "2".to_owned()), ("c".to_owned(), "3".to_owned())]);
    assert_eq!(patched.metadata.annotations.clone().unwrap_or_default().get("x").map(String::as_str), Some("y"));
    let data = patched.data.clone().unwrap_or_default();
    assert_eq!(data.get("k").map(String::as_str), Some("v"));
    assert_eq!(data.get("new").map(String::as_str), Some("n"));
    assert!(!data.contains_key("gone"));
    // Unknown top-level fields are pruned by the typed round trip, as on any write.
    cms.patch("m", &Patch::Merge(json!({"bogus": {"a": 1}})), &PatchParams::default()).await?;
    let raw = c.get(bosun_core::Target::new(&res, Some("default")), "m").await?;
    assert!(raw.data.get("bogus").is_none(), "{}", raw.data);
    // A patch that makes metadata not an object is a 422, as kube-apiserver answers.
    let err = cms.patch("m", &Patch::Merge(json!({"metadata": 5})), &PatchParams::default()).await.err().ok_or("metadata 5")?;
    assert_eq!(err.code(), 422, "{err}");
    Ok(())
}

#[tokio::test]
async fn unnamed_writers_are_recorded_only_where_fields_are_tracked() -> TestResult {
    let c = client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    // Created in-process without a manager: nothing is tracked, and a status patch without one
    // (a node agent's) keeps it that way.
    pods.create(&pod("quiet"), &PostParams::default()).await?;
    let patched = pods.patch_status("quiet", &Patch::Merge(json!({"status": {"phase": "Running"}})), &PatchParams::default()).await?;
    assert!(patched.metadata.managed_fields.is_none(), "{:?}", patched.metadata.managed_fields);
    let patched = pods.patch("quiet", &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})), &PatchParams::default()).await?;
    assert!(patched.metadata.managed_fields.is_none(), "{:?}", patched.metadata.managed_fields);

    // A named creator is tracked: the unnamed status patch is then recorded as `unknown`, on status.
    pods.create(&pod("tracked"), &PostParams { field_manager: Some("kubectl-create".into()), ..PostParams::default() }).await?;
    let patched = pods.patch_status("tracked", &Patch::Merge(json!({"status": {"phase": "Running"}})), &PatchParams::default()).await?;
    assert_eq!(managers(&patched.metadata), vec![("kubectl-create".to_owned(), None), ("unknown".to_owned(), Some("status".to_owned()))]);
    let unknown = patched.metadata.managed_fields.iter().flatten().find(|m| m.manager.as_deref() == Some("unknown")).ok_or("unknown")?;
    let fields = serde_json::to_value(&unknown.fields_v1)?;
    assert!(fields["f:status"].get("f:phase").is_some(), "{fields}");
    assert!(fields.get("f:spec").is_none() && fields.get("f:metadata").is_none(), "{fields}");
    Ok(())
}

#[tokio::test]
async fn managed_fields_credit_only_what_a_write_changed() -> TestResult {
    let c = client();
    let cms = Api::<ConfigMap>::namespaced(c.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "f", "labels": {"l": "1"}}, "data": {"a": "1", "b": "2"}}))?;
    cms.create(&cm, &PostParams { field_manager: Some("alice".into()), ..PostParams::default() }).await?;
    let patched = cms.patch("f", &Patch::Merge(json!({"data": {"b": "3", "c": "4"}})), &named("bob")).await?;
    let entries = patched.metadata.managed_fields.clone().unwrap_or_default();
    let fields = |who: &str| {
        entries.iter().find(|m| m.manager.as_deref() == Some(who)).and_then(|m| serde_json::to_value(&m.fields_v1).ok()).unwrap_or_default()
    };
    assert_eq!(fields("bob"), json!({"f:data": {"f:b": {}, "f:c": {}}}));
    assert_eq!(fields("alice"), json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {"f:l": {}}}}));
    // Removing a field takes it from its owner; a write that changes nothing changes no entry.
    let patched = cms.patch("f", &Patch::Merge(json!({"metadata": {"labels": {"l": null}}})), &named("bob")).await?;
    let entries = patched.metadata.managed_fields.clone().unwrap_or_default();
    let alice = entries.iter().find(|m| m.manager.as_deref() == Some("alice")).ok_or("alice")?;
    let alice = serde_json::to_value(&alice.fields_v1)?;
    assert!(alice.pointer("/f:metadata/f:labels/f:l").is_none(), "{alice}");
    assert!(alice.pointer("/f:data/f:a").is_some(), "{alice}");
    let same = cms.patch("f", &Patch::Merge(json!({"data": {"a": "1"}})), &named("carol")).await?;
    assert_eq!(same.metadata.resource_version, patched.metadata.resource_version, "a no-op patch writes nothing");
    assert!(managers(&same.metadata).iter().all(|(m, _)| m != "carol"));
    Ok(())
}

#[tokio::test]
async fn typed_round_trips_default_and_prune_every_built_in_kind() -> TestResult {
    let c: Arc<dyn Client> = client();
    // A kind with its own defaults (Pod) and kinds that only go through their type (Event, Node).
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let mut p = DynamicObject::from_typed(&pod("d"))?;
    p.data["spec"]["bogus"] = json!(true);
    let res = Pod::api_resource();
    let created = c.create(bosun_core::Target::new(&res, Some("default")), &p, &PostParams::default()).await?;
    assert!(created.data["spec"].get("bogus").is_none());
    assert_eq!(created.data["spec"]["restartPolicy"], "Always");
    assert_eq!(created.data["status"]["phase"], "Pending");
    assert_eq!(created.metadata.labels.clone().unwrap_or_default().get("app").map(String::as_str), Some("web"));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(pods.get("d").await?.metadata.uid, created.metadata.uid);

    let events = Api::<Event>::namespaced(c.clone(), "default");
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "e1", "labels": {"k": "v"}},
        "involvedObject": {"kind": "Pod", "name": "d", "namespace": "default"},
        "reason": "Started", "message": "started", "type": "Normal", "count": 1,
    }))?;
    let mut raw = DynamicObject::from_typed(&event)?;
    raw.data["unknownField"] = json!("x");
    let ev_res = Event::api_resource();
    let created = c.create(bosun_core::Target::new(&ev_res, Some("default")), &raw, &PostParams::default()).await?;
    assert!(created.data.get("unknownField").is_none(), "{}", created.data);
    assert_eq!(created.data["reason"], "Started");
    assert_eq!(created.metadata.labels.clone().unwrap_or_default().get("k").map(String::as_str), Some("v"));
    let got = events.get("e1").await?;
    assert_eq!(got.involved_object.name.as_deref(), Some("d"));
    let mut bad = DynamicObject::from_typed(&event)?;
    bad.metadata.name = Some("e2".into());
    bad.data["count"] = json!("many");
    let err = c.create(bosun_core::Target::new(&ev_res, Some("default")), &bad, &PostParams::default()).await.err().ok_or("bad count")?;
    assert_eq!(err.code(), 400, "{err}");

    // A node's status patch goes through NodeStatus: unknown fields dropped, shapes checked.
    let nodes = Api::<Node>::all(c.clone());
    nodes.create(&serde_json::from_value(json!({"metadata": {"name": "n1"}}))?, &PostParams::default()).await?;
    let patch = json!({"status": {"capacity": {"cpu": "4"}, "nodeInfo": {"kubeletVersion": "v1"}, "extra": 1}});
    let node = nodes.patch_status("n1", &Patch::Merge(patch), &PatchParams::default()).await?;
    assert_eq!(node.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("cpu")).map(|q| q.0.as_str()), Some("4"));
    let err = nodes
        .patch_status("n1", &Patch::Merge(json!({"status": {"capacity": "lots"}})), &PatchParams::default())
        .await
        .err()
        .ok_or("a string for capacity")?;
    assert_eq!(err.code(), 422, "{err}");
    Ok(())
}

#[test]
fn strategic_patches_merge_field_by_field_as_on_the_whole_object() -> TestResult {
    use bosun_store::patch::{Node, has_top_level_directives, strategic_merge_fields, strategic_merge_patch};
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}, {"name": "d", "image": "j"}]},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]},
    });
    let patches = [
        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "reason": null}]}}),
        json!({"status": {"$setElementOrder/conditions": [{"type": "Ready"}, {"type": "PodScheduled"}], "conditions": [{"type": "Ready", "status": "True"}]}}),
        json!({"spec": {"containers": [{"name": "c", "image": "k"}, {"name": "d", "$patch": "delete"}]}, "metadata": {"labels": {"a": null, "b": "2"}}}),
        json!({"metadata": {"finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]}, "status": null}),
        json!({"spec": {"containers": [{"name": "e", "image": "l"}], "$retainKeys": ["containers"]}}),
        json!({"status": {"conditions": [{"type": "Ready", "$patch": "delete"}], "podIP": "10.0.0.1"}, "newTop": {"x": 1}}),
    ];
    let root = Node::for_kind("", "v1", "Pod").ok_or("pod schema")?;
    for patch in patches {
        let whole = strategic_merge_patch(root, &pod, &patch)?;
        let members = patch.as_object().ok_or("object")?;
        assert!(!has_top_level_directives(members));
        let mut fields = pod.as_object().cloned().ok_or("object")?;
        strategic_merge_fields(root, &mut fields, members)?;
        assert_eq!(serde_json::Value::Object(fields), whole, "{patch}");
    }
    assert!(has_top_level_directives(json!({"$patch": "replace", "spec": {}}).as_object().ok_or("object")?));
    let mut fields = serde_json::Map::new();
    let directive = json!({"$retainKeys": ["spec"]});
    assert!(strategic_merge_fields(root, &mut fields, directive.as_object().ok_or("object")?).is_err());
    Ok(())
}

#[tokio::test]
async fn a_strategic_status_patch_merges_conditions_by_type() -> TestResult {
    let c = client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    pods.create(&pod("sm"), &PostParams::default()).await?;
    let first = json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}});
    pods.patch_status("sm", &Patch::Merge(first), &PatchParams::default()).await?;
    let patch = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "bogus": 1}});
    let patched = pods.patch_status("sm", &Patch::Strategic(patch), &named("kubelet")).await?;
    let status = patched.status.clone().ok_or("status")?;
    let mut types: Vec<String> = status.conditions.iter().flatten().map(|c| c.type_.clone()).collect();
    types.sort();
    assert_eq!(types, ["PodScheduled", "Ready"], "merged by type, the other writer's condition kept");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let raw = c.get(bosun_core::Target::new(&Pod::api_resource(), Some("default")), "sm").await?;
    assert!(raw.data["status"].get("bogus").is_none(), "{}", raw.data["status"]);
    assert_eq!(managers(&patched.metadata), vec![("kubelet".to_owned(), Some("status".to_owned()))]);
    // A top-level directive still applies to the whole object (here: the status is replaced whole).
    let replace = json!({"$patch": "replace", "status": {"phase": "Failed"}});
    let err_or_obj = pods.patch_status("sm", &Patch::Strategic(replace), &PatchParams::default()).await;
    if let Ok(p) = err_or_obj {
        assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Failed"));
        assert_eq!(p.spec, patched.spec, "the spec is still the stored one");
    }
    Ok(())
}
