//! VolumeBinding (PreFilter): the volumes bosun's runtime supports (emptyDir, hostPath, configMap,
//! secret, projected, downwardAPI) need no binding; a pod with a PersistentVolumeClaim or another
//! volume source the runtime cannot mount is unschedulable.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, Handle, Plugin, PreFilterPlugin, PreFilterResult, Status,
};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// Checks that the pod's volumes need no binding.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeBinding;

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::always(EventResource::UnscheduledPod, ActionType::UPDATE)]
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        Some(self)
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot, _: &Handle) -> (Option<PreFilterResult>, Status) {
        let volumes = pod.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let Some(volumes) = volumes.filter(|v| !v.is_empty()) else { return (None, Status::skip()) };
        for v in volumes {
            let supported = v.empty_dir.is_some()
                || v.host_path.is_some()
                || v.config_map.is_some()
                || v.secret.is_some()
                || v.projected.is_some()
                || v.downward_api.is_some();
            if let Some(pvc) = &v.persistent_volume_claim {
                return (
                    None,
                    Status::unresolvable(format!("persistentvolumeclaim \"{}\" cannot be bound: no volume provisioner", pvc.claim_name)),
                );
            }
            if !supported {
                return (None, Status::unresolvable(format!("volume \"{}\" has a source the node runtime cannot mount", v.name)));
            }
        }
        (None, Status::skip())
    }
}
