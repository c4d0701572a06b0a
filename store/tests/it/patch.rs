//! The patch engine through its public API: every patch type on built-in kinds, server-side apply
//! with field managers, and property tests of the merge laws.

use bosun_core::resource::builtin;
use bosun_core::{ApiResource, Patch};
use bosun_store::patch::{self, ApplyContext, FIELD_MANAGER_CONFLICT, PatchError};
use proptest::prelude::*;
use serde_json::{Value, json};

fn deployments() -> ApiResource {
    builtin("apps", "v1", "Deployment").cloned().expect("deployments are built in")
}

fn widgets() -> ApiResource {
    ApiResource::new("example.com", "v1", "Widget", "widgets", true)
}

const T0: &str = "2026-01-01T00:00:00Z";

fn ctx(manager: &str) -> ApplyContext {
    ApplyContext::new(manager).time(T0)
}

fn deploy(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}
        }
    })
}

fn apply(live: &Value, intent: Value, ctx: &ApplyContext) -> Result<Value, PatchError> {
    patch::apply_patch(&deployments(), live, &Patch::Apply(intent), ctx)
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter().map(|e| (e["manager"].as_str().unwrap_or("").to_owned(), e["operation"].as_str().unwrap_or("").to_owned())).collect()
        })
        .unwrap_or_default()
}

fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == manager))
        .map(|e| &e["fieldsV1"])
        .unwrap_or(&Value::Null)
}

#[test]
fn every_patch_type_goes_through_apply_patch() {
    let live = deploy(1, "nginx:1");
    let c = ctx("test");
    let json =
        patch::apply_patch(&deployments(), &live, &Patch::Json(json!([{"op": "replace", "path": "/spec/replicas", "value": 3}])), &c);
    assert_eq!(json.expect("json patch")["spec"]["replicas"], 3);
    let merge = patch::apply_patch(&deployments(), &live, &Patch::Merge(json!({"spec": {"replicas": 4}})), &c);
    assert_eq!(merge.expect("merge patch")["spec"]["replicas"], 4);
    let smp = patch::apply_patch(
        &deployments(),
        &live,
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}}})),
        &c,
    )
    .expect("strategic merge patch");
    assert_eq!(smp["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len), Some(2));
}

#[test]
fn strategic_merge_patch_on_a_custom_resource_is_415() {
    let err =
        patch::apply_patch(&widgets(), &json!({"spec": {}}), &Patch::Strategic(json!({"spec": {"a": 1}})), &ctx("x")).expect_err("415");
    assert_eq!(err.code(), 415);
    let status = bosun_core::Error::from(err).to_status();
    assert_eq!((status.code, status.reason.as_deref()), (Some(415), Some("UnsupportedMediaType")));
    // Merge patch works on custom resources.
    let ok = patch::apply_patch(&widgets(), &json!({"spec": {}}), &Patch::Merge(json!({"spec": {"a": 1}})), &ctx("x"));
    assert_eq!(ok.expect("merge patch")["spec"]["a"], 1);
}

#[test]
fn apply_creates_the_object_and_records_the_manager() {
    let obj = apply(&Value::Null, deploy(2, "nginx:1"), &ctx("kubectl")).expect("apply creates");
    assert_eq!(obj["spec"]["replicas"], 2);
    assert_eq!(managers(&obj), vec![("kubectl".to_owned(), "Apply".to_owned())]);
    let entry = &obj["metadata"]["managedFields"][0];
    assert_eq!(
        (entry["apiVersion"].as_str(), entry["time"].as_str(), entry["fieldsType"].as_str()),
        (Some("apps/v1"), Some(T0), Some("FieldsV1"))
    );
    let f = &entry["fieldsV1"];
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    assert_eq!(f["f:metadata"]["f:labels"]["f:app"], json!({}));
    assert_eq!(f["f:spec"]["f:selector"], json!({}), "a label selector is atomic");
    assert_eq!(f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"], json!({".": {}, "f:image": {}, "f:name": {}}));
    assert!(f.get("f:apiVersion").is_none() && f["f:metadata"].get("f:name").is_none(), "identity fields are not tracked: {f}");
}

#[test]
fn a_second_manager_changing_an_owned_field_conflicts_with_one_cause_per_field() {
    let obj = apply(&Value::Null, deploy(2, "nginx:1"), &ctx("kubectl")).expect("first apply");
    // Same values: shared ownership, no conflict.
    let shared = apply(
        &obj,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}}),
        &ctx("other"),
    )
    .expect("same value is no conflict");
    assert_eq!(managers(&shared).len(), 2);

    let intent = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
    let err = apply(&shared, intent.clone(), &ctx("other")).expect_err("conflict");
    let PatchError::Conflict(conflicts) = &err else { panic!("expected a conflict, got {err:?}") };
    let fields: Vec<&str> = conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, vec![".spec.replicas", ".spec.template.spec.containers[name=\"web\"].image"]);
    assert!(err.to_string().starts_with("Apply failed with 2 conflicts: conflicts with \"kubectl\":\n- .spec.replicas\n- "), "{err}");
    let status = bosun_core::Error::from(err).to_status();
    assert_eq!((status.code, status.reason.as_deref()), (Some(409), Some("Conflict")));
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    assert_eq!(causes.len(), 2);
    assert_eq!(causes[0].reason.as_deref(), Some(FIELD_MANAGER_CONFLICT));
    assert_eq!(causes[0].field.as_deref(), Some(".spec.replicas"));
    assert_eq!(causes[0].message.as_deref(), Some("conflict with \"kubectl\""));

    // Force takes the fields over.
    let forced = apply(&shared, intent, &ctx("other").force(true)).expect("force");
    assert_eq!(forced["spec"]["replicas"], 5);
    assert!(fields_of(&forced, "kubectl")["f:spec"].get("f:replicas").is_none());
    assert_eq!(fields_of(&forced, "other")["f:spec"]["f:replicas"], json!({}));
}

#[test]
fn fields_a_manager_stops_applying_are_removed_unless_someone_else_owns_them() {
    let mut first = deploy(2, "nginx:1");
    first["metadata"]["labels"] = json!({"app": "web", "tier": "front", "team": "a"});
    let obj = apply(&Value::Null, first, &ctx("kubectl")).expect("first apply");
    let obj = apply(
        &obj,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"team": "a"}}}),
        &ctx("other"),
    )
    .expect("co-own team");
    let obj = apply(&obj, deploy(2, "nginx:1"), &ctx("kubectl")).expect("re-apply without tier and team");
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web", "team": "a"}));
}

#[test]
fn list_items_are_owned_by_key_and_merged_between_managers() {
    let obj = apply(&Value::Null, deploy(1, "nginx:1"), &ctx("kubectl")).expect("first apply");
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy"}]}}}});
    let obj = apply(&obj, sidecar, &ctx("injector")).expect("second manager adds a container");
    let names: Vec<&str> =
        obj["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, vec!["web", "proxy"]);
    // The first manager drops its container: only its own item goes.
    let mut without = deploy(1, "nginx:1");
    without["spec"]["template"]["spec"]["containers"] = json!([{"name": "app", "image": "app:1"}]);
    let obj = apply(&obj, without, &ctx("kubectl")).expect("replace own container");
    let names: Vec<&str> =
        obj["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, vec!["proxy", "app"]);
}

#[test]
fn ports_without_protocol_match_the_defaulted_live_ports() {
    let mut intent = deploy(1, "nginx:1");
    intent["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    let mut obj = apply(&Value::Null, intent.clone(), &ctx("kubectl")).expect("first apply");
    // The API layer defaults the protocol after the apply.
    obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
    intent["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] = json!("http");
    let obj = apply(&obj, intent, &ctx("kubectl")).expect("re-apply");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
    );
    let f = fields_of(&obj, "kubectl");
    let port = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"];
    assert_eq!(port, &json!({".": {}, "f:containerPort": {}, "f:name": {}}));
}

#[test]
fn updates_take_ownership_and_make_later_applies_conflict() {
    let res = deployments();
    // kubectl create / client-side apply: an Update by kubectl-client-side-apply.
    let mut created = deploy(2, "nginx:1");
    patch::record_update(&res, None, &mut created, &ctx("kubectl-client-side-apply")).expect("record create");
    assert_eq!(managers(&created), vec![("kubectl-client-side-apply".to_owned(), "Update".to_owned())]);
    let f = fields_of(&created, "kubectl-client-side-apply");
    assert_eq!(f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."], json!({}));

    // Server-side apply of the same values migrates without conflict; a different replicas conflicts.
    assert!(apply(&created, deploy(2, "nginx:1"), &ctx("kubectl")).is_ok());
    let err = apply(&created, deploy(3, "nginx:1"), &ctx("kubectl")).expect_err("conflict with the client-side applier");
    assert!(
        matches!(&err, PatchError::Conflict(c) if c.len() == 1 && c[0].manager == "kubectl-client-side-apply" && c[0].field == ".spec.replicas")
    );

    // An autoscaler's update takes replicas from the applier.
    let applied = apply(&created, deploy(2, "nginx:1"), &ctx("kubectl")).expect("apply");
    let mut scaled = applied.clone();
    scaled["spec"]["replicas"] = json!(7);
    patch::record_update(&res, Some(&applied), &mut scaled, &ctx("hpa")).expect("record update");
    assert_eq!(fields_of(&scaled, "hpa")["f:spec"]["f:replicas"], json!({}));
    assert!(fields_of(&scaled, "kubectl")["f:spec"].get("f:replicas").is_none());
    let err = apply(&scaled, deploy(2, "nginx:1"), &ctx("kubectl")).expect_err("hpa owns replicas now");
    assert!(matches!(&err, PatchError::Conflict(c) if c[0].manager == "hpa"));
    assert_eq!(err.to_string(), format!("Apply failed with 1 conflict: conflict with \"hpa\" using apps/v1 at {T0}: .spec.replicas"));
}

#[test]
fn kubectl_takes_over_what_client_side_apply_set_without_conflicts() {
    let res = deployments();
    // `kubectl apply` (client-side): the object carries its last-applied configuration.
    let mut created = deploy(2, "nginx:1");
    created["metadata"]["annotations"] = json!({patch::apply::LAST_APPLIED_ANNOTATION: deploy(2, "nginx:1").to_string()});
    patch::record_update(&res, None, &mut created, &ctx("kubectl-client-side-apply")).expect("record create");
    // `kubectl apply --server-side` with changed values: no conflict for the kubectl manager.
    let obj = apply(&created, deploy(3, "nginx:2"), &ctx("kubectl")).expect("kubectl upgrades without conflicts");
    assert_eq!(obj["spec"]["replicas"], 3);
    assert!(fields_of(&obj, "kubectl-client-side-apply")["f:spec"].get("f:replicas").is_none());
    // Another manager still conflicts, and so does kubectl on a field last-applied does not hold.
    assert!(matches!(apply(&created, deploy(3, "nginx:1"), &ctx("other")), Err(PatchError::Conflict(_))));
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    patch::record_update(&res, Some(&created), &mut scaled, &ctx("hpa")).expect("hpa scales");
    let err = apply(&scaled, deploy(3, "nginx:1"), &ctx("kubectl")).expect_err("the autoscaler's replicas conflict");
    assert!(matches!(&err, PatchError::Conflict(c) if c.len() == 1 && c[0].manager == "hpa"), "{err:?}");
}

#[test]
fn managed_fields_set_by_the_request_replace_the_tracked_ones() {
    let res = deployments();
    let mut created = deploy(2, "nginx:1");
    patch::record_update(&res, None, &mut created, &ctx("kubectl-client-side-apply")).expect("record create");
    // kubectl's migration rewrites managedFields with a JSON patch: the manager becomes kubectl's Apply.
    let mut migrated = created.clone();
    migrated["metadata"]["managedFields"][0]["manager"] = json!("kubectl");
    migrated["metadata"]["managedFields"][0]["operation"] = json!("Apply");
    patch::record_update(&res, Some(&created), &mut migrated, &ctx("kubectl")).expect("record migration");
    assert_eq!(managers(&migrated), vec![("kubectl".to_owned(), "Apply".to_owned())]);
    // `[{}]` resets them.
    let mut reset = migrated.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    patch::record_update(&res, Some(&migrated), &mut reset, &ctx("kubectl")).expect("reset");
    assert!(reset["metadata"].get("managedFields").is_none(), "{}", reset["metadata"]);
}

#[test]
fn objects_created_before_tracking_belong_to_before_first_apply() {
    let live = deploy(2, "nginx:1");
    let err = apply(&live, deploy(4, "nginx:1"), &ctx("kubectl")).expect_err("conflict");
    assert!(matches!(&err, PatchError::Conflict(c) if c[0].manager == patch::apply::BEFORE_FIRST_APPLY));
}

#[test]
fn status_is_not_applied_through_the_main_resource() {
    let mut intent = deploy(1, "nginx:1");
    intent["status"] = json!({"replicas": 9});
    let obj = apply(&Value::Null, intent, &ctx("kubectl")).expect("apply");
    assert!(obj.get("status").is_none());
    assert!(fields_of(&obj, "kubectl").get("f:status").is_none());
}

#[test]
fn apply_refuses_requests_without_manager_or_type() {
    let no_manager = apply(&Value::Null, deploy(1, "x"), &ApplyContext::default()).expect_err("400");
    assert_eq!(no_manager.code(), 400);
    let no_kind = apply(&Value::Null, json!({"apiVersion": "apps/v1", "metadata": {"name": "web"}}), &ctx("k")).expect_err("400");
    assert_eq!(no_kind.code(), 400);
    let mut keyless = deploy(1, "x");
    keyless["spec"]["template"]["spec"]["containers"] = json!([{"image": "nginx"}]);
    let err = apply(&Value::Null, keyless, &ctx("k")).expect_err("422");
    assert_eq!(err.code(), 422);
    assert!(err.to_string().contains(".spec.template.spec.containers: element 0") && err.to_string().contains("\"name\""), "{err}");
}

#[test]
fn apply_to_custom_resources_merges_maps_and_replaces_lists() {
    let intent = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1, "tags": ["a"]}});
    let obj = patch::apply_patch(&widgets(), &Value::Null, &Patch::Apply(intent), &ctx("a")).expect("apply");
    let other =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"color": "red", "tags": ["b"]}});
    let err = patch::apply_patch(&widgets(), &obj, &Patch::Apply(other.clone()), &ctx("b")).expect_err("tags conflict");
    assert!(matches!(&err, PatchError::Conflict(c) if c.len() == 1 && c[0].field == ".spec.tags"));
    let obj = patch::apply_patch(&widgets(), &obj, &Patch::Apply(other), &ctx("b").force(true)).expect("forced");
    assert_eq!(obj["spec"], json!({"size": 1, "tags": ["b"], "color": "red"}));
}

#[test]
fn apply_to_custom_resources_follows_the_list_types_of_their_schema() {
    let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}}
        }}
    }});
    let c = |m: &str| ctx(m).schema(std::sync::Arc::new(schema.clone()));
    let widget = |spec: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec});
    let obj = patch::apply_patch(
        &widgets(),
        &Value::Null,
        &Patch::Apply(widget(json!({"ports": [{"name": "a", "port": 1}], "tags": ["x"], "selector": {"k": "v"}}))),
        &c("one"),
    )
    .expect("first apply");
    let f = fields_of(&obj, "one");
    assert_eq!(f["f:spec"]["f:ports"]["k:{\"name\":\"a\"}"], json!({".": {}, "f:name": {}, "f:port": {}}));
    assert_eq!(f["f:spec"]["f:tags"]["v:\"x\""], json!({}));
    assert_eq!(f["f:spec"]["f:selector"], json!({}));
    let obj =
        patch::apply_patch(&widgets(), &obj, &Patch::Apply(widget(json!({"ports": [{"name": "b", "port": 2}], "tags": ["y"]}))), &c("two"))
            .expect("a second manager adds items without conflict");
    assert_eq!(obj["spec"]["ports"], json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}]));
    assert_eq!(obj["spec"]["tags"], json!(["x", "y"]));
    let err = patch::apply_patch(&widgets(), &obj, &Patch::Apply(widget(json!({"selector": {"k": "w"}}))), &c("two"))
        .expect_err("atomic map conflict");
    assert!(matches!(&err, PatchError::Conflict(c) if c.len() == 1 && c[0].field == ".spec.selector"), "{err:?}");
}

#[test]
fn yaml_apply_bodies_parse_with_positions() {
    let body = b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
    let intent = patch::parse_yaml_or_json(body).expect("yaml");
    let obj = apply(&Value::Null, intent, &ctx("kubectl")).expect("apply");
    assert_eq!(obj["spec"]["replicas"], 3);
    let err = patch::parse_yaml_or_json(b"apiVersion: v1\nkind: [\n").expect_err("bad yaml");
    assert!(matches!(err, PatchError::Parse { line: 2..=3, .. }), "{err:?}");
    assert_eq!(bosun_core::Error::from(err).code(), 400);
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch cases from apimachinery's own suite (strategicpatch/patch_test.go),
// carried onto Pod fields: its `mergingList` (merge key `name`) is `spec.containers`, its
// `mergingIntList` (merged scalars) is `metadata.finalizers`, `value`/`other` are `image`/`workingDir`.

fn pod_smp(doc: &str, patch: &str) -> Result<Value, PatchError> {
    let node = patch::Node::for_kind("", "v1", "Pod").expect("pod schema");
    let doc = patch::parse_yaml_or_json(doc.as_bytes()).expect("doc yaml");
    let patch = patch::parse_yaml_or_json(patch.as_bytes()).expect("patch yaml");
    patch::strategic_merge_patch(node, &doc, &patch)
}

fn smp_case(description: &str, doc: &str, patch: &str, expected: &str) {
    let got = pod_smp(doc, patch).unwrap_or_else(|e| panic!("{description}: {e}"));
    let expected = patch::parse_yaml_or_json(expected.as_bytes()).expect("expected yaml");
    assert_eq!(got, expected, "{description}");
}

#[test]
fn apimachinery_strategic_merge_patch_cases_hold() {
    smp_case(
        "preserve the order from the patch in a merging list",
        "spec: {containers: [{name: '1'}, {name: '2', image: b}, {name: '3'}]}",
        "spec: {containers: [{name: '3', image: c}, {name: '1', image: a}, {name: '2', workingDir: x}]}",
        "spec: {containers: [{name: '3', image: c}, {name: '1', image: a}, {name: '2', image: b, workingDir: x}]}",
    );
    smp_case(
        "preserve the order from the patch in a merging list 2",
        "spec: {containers: [{name: '1'}, {name: '2', image: b}, {name: '3'}]}",
        "spec: {containers: [{name: '3', image: c}, {name: '1', image: a}]}",
        "spec: {containers: [{name: '2', image: b}, {name: '3', image: c}, {name: '1', image: a}]}",
    );
    smp_case(
        "preserve the order in a merging scalar list",
        "metadata: {finalizers: ['1', '2', '3']}",
        "metadata: {finalizers: ['3', '1', '2']}",
        "metadata: {finalizers: ['3', '1', '2']}",
    );
    smp_case(
        "preserve the order in a merging scalar list 2",
        "metadata: {finalizers: ['1', '2', '3']}",
        "metadata: {finalizers: ['3', '1']}",
        "metadata: {finalizers: ['2', '3', '1']}",
    );
    smp_case(
        "unique scalars when merging lists",
        "metadata: {finalizers: ['1', '2']}",
        "metadata: {finalizers: ['2', '3']}",
        "metadata: {finalizers: ['1', '2', '3']}",
    );
    smp_case(
        "$setElementOrder contains an item not present in the list to be merged",
        "spec: {containers: [{name: '1'}, {name: '3'}]}",
        "spec: {$setElementOrder/containers: [{name: '3'}, {name: '2'}, {name: '1'}], containers: [{name: '3', image: '3'}, {name: '1', image: '1'}]}",
        "spec: {containers: [{name: '3', image: '3'}, {name: '1', image: '1'}]}",
    );
    smp_case(
        "$setElementOrder contains an item not present in the scalar list",
        "metadata: {finalizers: ['1', '3']}",
        "metadata: {$setElementOrder/finalizers: ['3', '2', '1']}",
        "metadata: {finalizers: ['3', '1']}",
    );
    smp_case(
        "delete items in lists of scalars",
        "metadata: {finalizers: ['1', '2', '3', '4']}",
        "metadata: {$setElementOrder/finalizers: ['1', '2'], $deleteFromPrimitiveList/finalizers: ['3']}",
        "metadata: {finalizers: ['1', '2', '4']}",
    );
    smp_case(
        "delete all duplicate items in lists of scalars",
        "metadata: {finalizers: ['1', '2', '3', '3', '4']}",
        "metadata: {$setElementOrder/finalizers: ['1', '2'], $deleteFromPrimitiveList/finalizers: ['3']}",
        "metadata: {finalizers: ['1', '2', '4']}",
    );
    smp_case(
        "add and delete items in lists of scalars",
        "metadata: {finalizers: ['1', '2', '3', '4']}",
        "metadata: {$setElementOrder/finalizers: ['1', '2', '4'], $deleteFromPrimitiveList/finalizers: ['3'], finalizers: ['4']}",
        "metadata: {finalizers: ['1', '2', '4']}",
    );
    smp_case(
        "merge lists of maps",
        "spec: {containers: [{name: '1', workingDir: a}, {name: '2', image: '2', workingDir: b}]}",
        "spec: {$setElementOrder/containers: [{name: '4'}, {name: '1'}, {name: '2'}, {name: '3'}], containers: [{name: '4', image: '4'}, {name: '3', image: '3'}]}",
        "spec: {containers: [{name: '4', image: '4'}, {name: '1', workingDir: a}, {name: '2', image: '2', workingDir: b}, {name: '3', image: '3'}]}",
    );
    smp_case(
        "add field to map in merging list",
        "spec: {containers: [{name: '1', workingDir: a}, {name: '2', image: '2', workingDir: b}]}",
        "spec: {$setElementOrder/containers: [{name: '1'}, {name: '2'}], containers: [{name: '1', image: '1'}]}",
        "spec: {containers: [{name: '1', image: '1', workingDir: a}, {name: '2', image: '2', workingDir: b}]}",
    );
    smp_case(
        "delete all maps from merging list",
        "spec: {containers: [{name: '1'}, {name: '2'}]}",
        "spec: {containers: [{name: '1', $patch: delete}, {name: '2', $patch: delete}]}",
        "spec: {containers: []}",
    );
    smp_case(
        "delete all items from merging list",
        "spec: {containers: [{name: '1'}, {name: '2'}]}",
        "spec: {containers: [{$patch: replace}]}",
        "spec: {containers: []}",
    );
    smp_case(
        "delete map from nested map",
        "metadata: {labels: {key1: '1', key2: '1'}}",
        "metadata: {labels: {$patch: delete}}",
        "metadata: {labels: {}}",
    );
    smp_case("add key and delete all keys from map", "{name: '1', value: '1'}", "{other: a, $patch: replace}", "{other: a}");
    smp_case(
        "delete field from nested map",
        "metadata: {labels: {key1: '1', key2: '1', other: a}}",
        "metadata: {labels: {key2: null}}",
        "metadata: {labels: {key1: '1', other: a}}",
    );
    smp_case(
        "retainKeys list can add a field when no retainKeys directive present",
        "spec: {volumes: [{name: bar}, {name: foo}]}",
        "spec: {volumes: [{name: foo, emptyDir: {}}]}",
        "spec: {volumes: [{name: bar}, {name: foo, emptyDir: {}}]}",
    );
    smp_case(
        "retainKeys in a list item clears the other volume sources",
        "spec: {volumes: [{name: foo, emptyDir: {}}]}",
        "spec: {volumes: [{$retainKeys: [configMap, name], name: foo, configMap: {name: cm}}]}",
        "spec: {volumes: [{name: foo, configMap: {name: cm}}]}",
    );
    smp_case(
        "defined null values remove original fields",
        "{name: original-name, value: original-value, other: current-other}",
        "{name: modified-name, value: null}",
        "{name: modified-name, other: current-other}",
    );
    smp_case(
        "maps merge and untouched lists stay",
        "spec: {nodeSelector: {a: b}, imagePullSecrets: [{name: x}], hostAliases: []}",
        "spec: {nodeSelector: {c: d}}",
        "spec: {nodeSelector: {a: b, c: d}, imagePullSecrets: [{name: x}], hostAliases: []}",
    );
}

#[test]
fn apimachinery_strategic_merge_patch_error_cases_hold() {
    let mismatch = pod_smp(
        "spec: {containers: [{name: '1'}, {name: '3'}, {name: '2'}]}",
        "spec: {$setElementOrder/containers: [{name: '1'}, {name: '2'}, {name: '3'}], containers: [{name: '3', image: '3'}, {name: '1', image: '1'}]}",
    );
    assert!(mismatch.as_ref().err().is_some_and(|e| e.to_string().contains("doesn't match")), "{mismatch:?}");
    let scalars = pod_smp(
        "metadata: {finalizers: ['1', '3', '2']}",
        "metadata: {$setElementOrder/finalizers: ['1', '2', '3'], finalizers: ['3', '1']}",
    );
    assert!(scalars.as_ref().err().is_some_and(|e| e.to_string().contains("doesn't match")), "{scalars:?}");
    let no_key = pod_smp("spec: {containers: [{name: '1', image: a}]}", "spec: {containers: [{image: b}]}");
    assert!(no_key.as_ref().err().is_some_and(|e| e.to_string().contains("does not contain declared merge key")), "{no_key:?}");
}

// ---------------------------------------------------------------------------------------------
// Properties

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![any::<bool>().prop_map(Value::from), (-5i64..5).prop_map(Value::from), "[a-c]{0,2}".prop_map(Value::from)]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-d]", json_value(), 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn patch_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-d]", prop_oneof![1 => Just(Value::Null), 4 => json_value()], 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn containers() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::btree_map("[a-f]", ("[x-z]", prop::option::of(0i64..3)), 0..5).prop_map(|m| {
        m.into_iter()
            .map(|(name, (image, port))| match port {
                Some(p) => json!({"name": name, "image": image, "ports": [{"containerPort": p}]}),
                None => json!({"name": name, "image": image}),
            })
            .collect()
    })
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect()
}

proptest! {
    #[test]
    fn merge_patch_is_idempotent(target in json_object(), p in patch_object()) {
        let once = patch::merge_patch(&target, &p).expect("object patch");
        let twice = patch::merge_patch(&once, &p).expect("object patch");
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn merge_diff_then_merge_patch_reaches_the_target(from in json_object(), to in json_object()) {
        let p = patch::merge_patch::merge_diff(&from, &to);
        prop_assert_eq!(patch::merge_patch(&from, &p).expect("object patch"), to);
    }

    #[test]
    fn merge_patch_sets_every_non_null_member(target in json_object(), p in patch_object()) {
        let out = patch::merge_patch(&target, &p).expect("object patch");
        for (k, v) in p.as_object().into_iter().flatten() {
            if v.is_null() {
                prop_assert!(out.get(k).is_none());
            } else if !v.is_object() {
                prop_assert_eq!(&out[k], v);
            }
        }
    }

    #[test]
    fn strategic_list_merge_unions_by_name_and_patch_values_win(live in containers(), p in containers()) {
        let node = patch::Node::for_kind("", "v1", "Pod").expect("pod schema");
        let doc = json!({"spec": {"containers": live}});
        let out = patch::strategic_merge_patch(node, &doc, &json!({"spec": {"containers": p}})).expect("patch applies");
        let merged = &out["spec"]["containers"];
        let got = names(merged);
        let mut expected: Vec<String> = names(&doc["spec"]["containers"]);
        for n in names(&Value::from(p.clone())) {
            if !expected.contains(&n) { expected.push(n); }
        }
        let mut sorted_got = got.clone();
        sorted_got.sort();
        sorted_got.dedup();
        prop_assert_eq!(sorted_got.len(), got.len(), "no duplicates");
        let mut sorted_expected = expected.clone();
        sorted_expected.sort();
        prop_assert_eq!(sorted_got, sorted_expected);
        // Patched items carry the patch's image, and patch items keep their relative order.
        let patch_names = names(&Value::from(p.clone()));
        let positions: Vec<usize> = patch_names.iter().filter_map(|n| got.iter().position(|g| g == n)).collect();
        prop_assert!(positions.windows(2).all(|w| w[0] < w[1]));
        for item in &p {
            let found = merged.as_array().into_iter().flatten().find(|c| c["name"] == item["name"]);
            prop_assert_eq!(&found.expect("present")["image"], &item["image"]);
        }
    }

    #[test]
    fn strategic_delete_directives_remove_exactly_the_named_items(live in containers(), drop in prop::collection::vec("[a-f]", 0..3)) {
        let node = patch::Node::for_kind("", "v1", "Pod").expect("pod schema");
        let doc = json!({"spec": {"containers": live}});
        let directives: Vec<Value> = drop.iter().map(|n| json!({"name": n, "$patch": "delete"})).collect();
        let out = patch::strategic_merge_patch(node, &doc, &json!({"spec": {"containers": directives}})).expect("patch applies");
        let expected: Vec<String> = names(&doc["spec"]["containers"]).into_iter().filter(|n| !drop.contains(n)).collect();
        prop_assert_eq!(names(&out["spec"]["containers"]), expected);
    }

    #[test]
    fn json_patch_add_then_remove_restores_the_document(doc in json_object(), key in "[e-h]", v in json_value()) {
        let path = format!("/{key}");
        let p = json!([{"op": "add", "path": path, "value": v}, {"op": "remove", "path": path}]);
        prop_assert_eq!(patch::json_patch(&doc, &p).expect("applies"), doc);
    }

    #[test]
    fn a_forced_apply_lands_every_applied_value_and_keeps_other_managers_items(first in containers(), second in containers()) {
        let with = |list: &Vec<Value>| {
            let mut d = deploy(1, "nginx");
            d["spec"]["template"]["spec"]["containers"] = Value::from(list.clone());
            d
        };
        let obj = apply(&Value::Null, with(&first), &ctx("one")).expect("first apply");
        let obj = apply(&obj, with(&second), &ctx("two").force(true)).expect("forced apply");
        let merged = &obj["spec"]["template"]["spec"]["containers"];
        for item in &second {
            let found = merged.as_array().into_iter().flatten().find(|c| c["name"] == item["name"]);
            prop_assert_eq!(&found.expect("applied item present")["image"], &item["image"]);
        }
        let got = names(merged);
        for n in names(&Value::from(first.clone())) {
            prop_assert!(got.contains(&n), "{} of the first manager is kept", n);
        }
        prop_assert_eq!(got.len(), names(&Value::from(first)).into_iter().chain(names(&Value::from(second))).collect::<std::collections::BTreeSet<_>>().len());
    }

    #[test]
    fn no_patch_input_panics(doc in json_object(), p in json_value(), directive in prop_oneof![Just("$patch"), Just("$retainKeys"), Just("$setElementOrder/containers"), Just("$deleteFromPrimitiveList/finalizers"), Just("containers")], dv in json_value()) {
        let node = patch::Node::for_kind("", "v1", "Pod").expect("pod schema");
        let mut smp = p.clone();
        if let Value::Object(m) = &mut smp {
            m.insert(directive.to_owned(), dv.clone());
        }
        let nested = json!({"spec": smp.clone(), "metadata": smp.clone()});
        let live = json!({"spec": doc.clone(), "metadata": doc.clone()});
        let _ = patch::strategic_merge_patch(node, &live, &smp);
        let _ = patch::strategic_merge_patch(node, &live, &nested);
        let _ = patch::json_patch(&doc, &json!([{"op": "add", "path": format!("/{directive}"), "value": dv}, {"op": "move", "from": "/a", "path": "/b/c"}]));
        let _ = patch::merge_patch(&doc, &p);
        let mut intent = nested.clone();
        intent["apiVersion"] = json!("v1");
        intent["kind"] = json!("Pod");
        let pods = builtin("", "v1", "Pod").cloned().expect("pods");
        let _ = patch::server_side_apply(&pods, &live, &intent, &ctx("fuzz"));
        let mut new = live.clone();
        new["spec"] = p;
        let _ = patch::record_update(&pods, Some(&live), &mut new, &ctx("fuzz"));
    }

    #[test]
    fn apply_then_reapply_is_stable(live in containers(), replicas in 0i64..5) {
        let mut intent = deploy(replicas, "nginx");
        intent["spec"]["template"]["spec"]["containers"] = Value::from(live);
        let once = apply(&Value::Null, intent.clone(), &ctx("kubectl")).expect("apply");
        let twice = apply(&once, intent, &ctx("kubectl")).expect("re-apply");
        prop_assert_eq!(once, twice);
    }
}
