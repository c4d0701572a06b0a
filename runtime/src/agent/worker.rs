//! The per-pod worker: a level-triggered loop that brings one pod's containers to what its spec
//! asks (sandbox and volumes, init containers and sidecars in order, app containers with restart
//! policy and crash-loop backoff, probes), terminates it gracefully when it is deleted, and
//! reports its status.

use super::env::{self, EnvContext, ObjectCache};
use super::events::Recorder;
use super::probe::{self, ProbeState, ProbeTarget};
use super::status::{self, ContainerView, Terminated, ViewState};
use super::volume::{self, PodVolumes};
use super::{Ctx, POD_UID_LABEL};
use crate::cri::{ContainerConfig, ContainerId, ContainerResources, ContainerState, ContainerStatus, DnsConfig, SandboxConfig, SandboxId};
use crate::error::RuntimeError;
use bosun_core::k8s_openapi::api::core::v1::{Container, HostIP, ObjectReference, Pod, PodCondition, PodIP, PodSpec, PodStatus};
use bosun_core::{Api, DeleteParams, Patch, PatchParams, Preconditions, Quantity, TypedObject};
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How often emptyDir usage is compared with the volumes' `sizeLimit` (the kubelet's eviction
/// manager runs every 10 s).
const SIZE_LIMIT_CHECK: Duration = Duration::from_secs(10);

/// What the agent's handle can read about a pod's containers (for logs, exec and usage).
#[derive(Debug, Default, Clone)]
pub struct PodShared {
    /// The pod's namespace and name.
    pub key: (String, String),
    /// Its sandbox.
    pub sandbox: Option<SandboxId>,
    /// Per container name: (current instance, previous instance).
    pub containers: BTreeMap<String, (Option<ContainerId>, Option<ContainerId>)>,
}

/// What a recovered sandbox brings to a new worker.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The sandbox.
    pub sandbox: SandboxId,
    /// Its IP.
    pub ip: Option<IpAddr>,
    /// Its containers.
    pub containers: Vec<ContainerStatus>,
}

#[derive(Default)]
struct Slot {
    current: Option<ContainerId>,
    status: Option<ContainerStatus>,
    previous: Option<ContainerId>,
    last_terminated: Option<Terminated>,
    restart_count: u32,
    crash_restarts: u32,
    backoff_for: Option<ContainerId>,
    backoff_until: Option<Instant>,
    waiting: Option<(String, Option<String>)>,
    probes: Option<(tokio::task::JoinHandle<()>, Arc<Mutex<ProbeState>>)>,
    has_probes: bool,
    has_readiness: bool,
    has_startup: bool,
    retry_at: Option<Instant>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((h, _)) = &self.probes {
            h.abort();
        }
    }
}

impl Slot {
    fn state(&self) -> Option<ContainerState> {
        self.status.as_ref().map(|s| s.state)
    }

    fn probe_state(&self) -> ProbeState {
        self.probes.as_ref().map(|(_, s)| s.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }

    fn started(&self) -> bool {
        self.state() == Some(ContainerState::Running) && (!self.has_startup || self.probe_state().started)
    }

    fn ready(&self) -> bool {
        let p = self.probe_state();
        self.started() && (!self.has_readiness || p.ready)
    }
}

fn terminated_of(st: &ContainerStatus) -> Terminated {
    Terminated {
        exit_code: st.exit_code.unwrap_or(0),
        signal: st.signal,
        reason: st.reason.clone().unwrap_or_else(|| "Error".into()),
        message: st.message.clone(),
        started_at: st.started_at,
        finished_at: st.finished_at,
        container_id: st.id.0.clone(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Always,
    OnFailure,
    Never,
}

impl Policy {
    fn of(s: Option<&str>) -> Self {
        match s {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// One pod's worker.
pub struct Worker {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    pod_rx: watch::Receiver<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    shared: Arc<Mutex<PodShared>>,
    recorder: Recorder,
    sandbox: Option<(SandboxId, Option<IpAddr>)>,
    volumes: Option<PodVolumes>,
    volumes_synced: Option<Instant>,
    slots: HashMap<String, Slot>,
    init_done: bool,
    terminal: Option<&'static str>,
    /// Why the pod ended, when the agent ended it (`DeadlineExceeded`, `Evicted`): the pod
    /// status's reason and message.
    terminal_reason: Option<(&'static str, String)>,
    pod_waiting: Option<(String, String)>,
    start_time: Timestamp,
    /// `start_time` on the tokio clock, for `activeDeadlineSeconds`.
    active_since: Instant,
    /// When emptyDir usage was last compared with the volumes' `sizeLimit`.
    limits_checked: Option<Instant>,
    /// The status the API server holds as far as the agent knows: the pod's at first, then what
    /// the agent wrote, or the pod's again when a newer version than the agent's write arrives.
    /// A status equal to it in the fields the agent owns is not written.
    reported: PodStatus,
    /// The resourceVersion the agent's last status write produced.
    reported_rv: Option<u64>,
    last_event: Option<String>,
    finished: bool,
}

impl Worker {
    /// A worker for a pod, adopting a recovered sandbox when there is one.
    pub fn new(
        ctx: Arc<Ctx>,
        pod: Arc<Pod>,
        pod_rx: watch::Receiver<Option<Arc<Pod>>>,
        wake: Arc<Notify>,
        shared: Arc<Mutex<PodShared>>,
        adopted: Option<Adopted>,
    ) -> Self {
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        let recorder = Recorder::new(ctx.events.get().cloned(), object);
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map_or_else(Timestamp::now, |t| t.0);
        // A pod started by an earlier agent has been active since its start time.
        let active_for = Timestamp::now().duration_since(start_time).unsigned_abs();
        let active_since = Instant::now().checked_sub(active_for).unwrap_or_else(Instant::now);
        let reported = pod.status.clone().unwrap_or_default();
        let mut w = Self {
            ctx,
            pod,
            pod_rx,
            wake,
            shared,
            recorder,
            sandbox: None,
            volumes: None,
            volumes_synced: None,
            slots: HashMap::new(),
            init_done: false,
            terminal: None,
            terminal_reason: None,
            pod_waiting: None,
            start_time,
            active_since,
            limits_checked: None,
            reported,
            reported_rv: None,
            last_event: None,
            finished: false,
        };
        if let Some(a) = adopted {
            w.adopt(a);
        }
        w
    }

    fn adopt(&mut self, a: Adopted) {
        self.sandbox = Some((a.sandbox, a.ip));
        let mut by_name: BTreeMap<String, Vec<ContainerStatus>> = BTreeMap::new();
        for c in a.containers {
            by_name.entry(c.name.clone()).or_default().push(c);
        }
        for (name, mut list) in by_name {
            list.sort_by_key(|c| c.attempt);
            let slot = self.slots.entry(name).or_default();
            let cur = list.pop();
            let prev = list.pop();
            slot.restart_count = cur.as_ref().map_or(0, |c| c.attempt);
            slot.current = cur.as_ref().map(|c| c.id.clone());
            slot.previous = prev.as_ref().map(|c| c.id.clone());
            slot.last_terminated = prev.as_ref().map(terminated_of);
            slot.status = cur;
        }
        // App containers only start after every init container has succeeded.
        let spec = self.pod.spec.clone().unwrap_or_default();
        self.init_done = spec.containers.iter().any(|c| self.slots.get(&c.name).is_some_and(|s| s.current.is_some()));
        for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
            if self.slots.get(&c.name).and_then(Slot::state) == Some(ContainerState::Running) {
                self.spawn_probes(c);
            }
        }
        self.publish_shared();
    }

    fn publish_shared(&self) {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.sandbox = self.sandbox.as_ref().map(|(id, _)| id.clone());
        s.containers = self.slots.iter().map(|(k, v)| (k.clone(), (v.current.clone(), v.previous.clone()))).collect();
    }

    /// Runs until the pod is gone (deleted and its containers stopped).
    pub async fn run(mut self) {
        let uid = self.uid().to_string();
        let span = tracing::info_span!("pod", pod.uid = %uid, pod.name = %self.pod.metadata.name.clone().unwrap_or_default());
        let _guard = span.enter();
        drop(_guard);
        loop {
            // Boxed: a parked worker then holds only this loop's state, not the deepest sync path's.
            let next = Box::pin(self.sync()).await;
            if self.finished {
                break;
            }
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.pod_rx.changed() => {
                    if changed.is_err() {
                        // The agent dropped the pod: it was removed from the API.
                        self.pod_rx = watch::channel(None).1;
                    }
                }
                () = self.wake.notified() => {}
                () = sleep => {}
            }
        }
        tracing::debug!(pod.uid = %uid, "pod worker done");
    }

    fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    fn pod_dir(&self) -> std::path::PathBuf {
        self.ctx.config.root_dir.join("pods").join(self.uid())
    }

    fn pod_ip(&self) -> Option<String> {
        match &self.sandbox {
            Some((_, Some(ip))) => Some(ip.to_string()),
            Some((_, None)) => Some(self.ctx.config.node_ip.clone()),
            None => None,
        }
    }

    async fn sync(&mut self) -> Option<Instant> {
        let latest = self.pod_rx.borrow_and_update().clone();
        let removed = latest.is_none();
        if let Some(p) = latest {
            // A version newer than the agent's own last write: its status is what the server holds.
            let rv = p.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
            if self.reported_rv.is_none_or(|ours| rv.is_none_or(|rv| rv > ours)) {
                self.reported = p.status.clone().unwrap_or_default();
            }
            self.pod = p;
        }
        let deleting = self.pod.metadata.deletion_timestamp.is_some();
        if removed || deleting {
            self.terminate(removed).await;
            self.finished = true;
            return None;
        }
        if self.terminal.is_some() {
            return None;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let soon = |at: Instant, next: &mut Option<Instant>| *next = Some(next.map_or(at, |n| n.min(at)));

        // `activeDeadlineSeconds`: active longer than that (since its start time), the pod fails.
        if let Some(deadline) = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) {
            let at = self.active_since + Duration::from_secs(u64::try_from(deadline).unwrap_or(0));
            if now >= at {
                let message = "Pod was active on the node longer than the specified deadline".to_string();
                self.recorder.warning("DeadlineExceeded", message.clone());
                self.fail("DeadlineExceeded", message).await;
                return None;
            }
            soon(at, &mut next);
        }

        // Sandbox and volumes.
        let needs_refresh = self.volumes_synced.is_none_or(|t| now >= t + self.ctx.config.volume_resync);
        if (self.sandbox.is_none() || (needs_refresh && has_generated_volumes(&self.pod)))
            && let Err(wait) = self.ensure_volumes().await
            && self.sandbox.is_none()
        {
            self.pod_waiting = Some(("ContainerCreating".into(), wait));
            self.publish().await;
            soon(now + Duration::from_secs(2), &mut next);
            return next;
        }
        if has_generated_volumes(&self.pod)
            && let Some(t) = self.volumes_synced
        {
            soon(t + self.ctx.config.volume_resync, &mut next);
        }
        if self.sandbox.is_none() {
            match self.run_sandbox().await {
                Ok(()) => self.pod_waiting = None,
                Err(msg) => {
                    self.event_once("Warning", "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {msg}"));
                    self.pod_waiting = Some(("ContainerCreating".into(), msg));
                    self.publish().await;
                    soon(now + Duration::from_secs(2), &mut next);
                    return next;
                }
            }
        }
        self.refresh().await;
        self.handle_probe_failures().await;

        // emptyDir `sizeLimit`: a pod whose volume outgrows it is evicted, as the kubelet's
        // eviction manager does (checked every 10 s).
        if volume::has_size_limits(&self.pod) {
            if self.limits_checked.is_none_or(|t| now >= t + SIZE_LIMIT_CHECK) {
                self.limits_checked = Some(now);
                let (pod, dir) = (self.pod.clone(), self.pod_dir());
                let over = tokio::task::spawn_blocking(move || volume::over_size_limit(&pod, &dir)).await.ok().flatten();
                if let Some(message) = over {
                    self.recorder.warning("Evicted", message.clone());
                    self.fail("Evicted", message).await;
                    return None;
                }
            }
            if let Some(t) = self.limits_checked {
                soon(t + SIZE_LIMIT_CHECK, &mut next);
            }
        }

        // The pod as this sync sees it (shared, not copied: the loop below mutates `self`).
        let pod = self.pod.clone();
        let no_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&no_spec);
        let policy = Policy::of(spec.restart_policy.as_deref());
        let mut inits_ok = true;
        for c in spec.init_containers.iter().flatten() {
            if c.restart_policy.as_deref() == Some("Always") {
                // A sidecar: started in order, kept running, restarted always.
                self.ensure(c, Policy::Always, &mut next).await;
                if !self.slots.get(&c.name).is_some_and(Slot::started) {
                    inits_ok = false;
                    break;
                }
                continue;
            }
            if self.init_done {
                continue;
            }
            let slot = self.slots.entry(c.name.clone()).or_default();
            match (slot.state(), slot.status.as_ref().and_then(|s| s.exit_code)) {
                (Some(ContainerState::Exited), Some(0)) => continue,
                (Some(ContainerState::Exited), Some(_)) if policy == Policy::Never => {
                    self.finish("Failed").await;
                    return None;
                }
                _ => {
                    // Init containers restart on failure unless the pod's policy is Never.
                    self.ensure(c, Policy::OnFailure, &mut next).await;
                    inits_ok = false;
                    break;
                }
            }
        }
        if inits_ok {
            self.init_done = true;
            for c in &spec.containers {
                self.ensure(c, policy, &mut next).await;
            }
            // Ephemeral containers (added through `pods/ephemeralcontainers`): started once the
            // pod runs, in its sandbox, and never restarted.
            for c in ephemeral_as_containers(spec) {
                self.ensure(&c, Policy::Never, &mut next).await;
            }
            if policy != Policy::Always {
                let mut all_done = true;
                let mut failed = false;
                for c in &spec.containers {
                    let slot = self.slots.get(&c.name);
                    match slot.and_then(|s| s.status.as_ref()) {
                        Some(st) if st.state == ContainerState::Exited && !policy.restarts(st.exit_code.unwrap_or(0)) => {
                            failed |= st.exit_code != Some(0);
                        }
                        _ => all_done = false,
                    }
                }
                if all_done {
                    self.finish(if failed { "Failed" } else { "Succeeded" }).await;
                    return None;
                }
            }
        }
        for slot in self.slots.values() {
            if let Some(at) = slot.backoff_until.filter(|at| *at > now) {
                soon(at, &mut next);
            }
            if let Some(at) = slot.retry_at.filter(|at| *at > now) {
                soon(at, &mut next);
            }
        }
        self.publish_shared();
        self.publish().await;
        next
    }

    fn event_once(&mut self, type_: &str, reason: &str, message: String) {
        let key = format!("{reason}:{message}");
        if self.last_event.as_deref() == Some(key.as_str()) {
            return;
        }
        self.last_event = Some(key);
        if type_ == "Warning" { self.recorder.warning(reason, message) } else { self.recorder.normal(reason, message) }
    }

    async fn ensure_volumes(&mut self) -> Result<(), String> {
        let pod = self.pod.clone();
        let host_ip = self.ctx.config.node_ip.clone();
        let pod_ip = self.pod_ip();
        let cx = EnvContext { pod: &pod, pod_ip: pod_ip.as_deref(), host_ip: &host_ip, allocatable: &self.ctx.allocatable };
        let mut cache = ObjectCache::new(self.ctx.client.clone(), self.namespace());
        match volume::prepare(&pod, &self.pod_dir(), &self.ctx.client, &cx, &mut cache).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.volumes_synced = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                let msg = format!("MountVolume.SetUp failed: {e}");
                self.event_once("Warning", "FailedMount", msg.clone());
                Err(msg)
            }
        }
    }

    async fn run_sandbox(&mut self) -> Result<(), String> {
        let pod = &self.pod;
        let no_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&no_spec);
        let mut labels = pod.metadata.labels.clone().unwrap_or_default();
        labels.insert(POD_UID_LABEL.into(), self.uid().to_string());
        labels.insert("io.kubernetes.pod.name".into(), self.name().to_string());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace().to_string());
        let config = SandboxConfig {
            name: self.name().to_string(),
            namespace: self.namespace().to_string(),
            uid: self.uid().to_string(),
            attempt: 0,
            hostname: spec.hostname.clone().unwrap_or_else(|| self.name().to_string()),
            host_network: spec.host_network.unwrap_or(false),
            log_directory: self.ctx.config.root_dir.join("logs").join(format!("{}_{}_{}", self.namespace(), self.name(), self.uid())),
            labels,
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            dns: pod_dns(spec, self.namespace(), &self.ctx.config.cluster_dns, &self.ctx.config.cluster_domain),
        };
        let id = self.ctx.runtime.run_sandbox(&config).await.map_err(|e| e.to_string())?;
        let st = self.ctx.runtime.sandbox_status(&id).await.map_err(|e| e.to_string())?;
        self.ctx.register_waker(id.clone(), self.wake.clone());
        self.sandbox = Some((id, st.ip));
        self.publish_shared();
        Ok(())
    }

    async fn refresh(&mut self) {
        for slot in self.slots.values_mut() {
            if let Some(id) = &slot.current {
                match self.ctx.runtime.container_status(id).await {
                    Ok(st) => slot.status = Some(st),
                    Err(e) if e.is_not_found() => {
                        slot.current = None;
                        slot.status = None;
                    }
                    Err(_) => {}
                }
            }
        }
    }

    async fn handle_probe_failures(&mut self) {
        let grace = self.grace_period();
        let mut kills = Vec::new();
        for (name, slot) in &mut self.slots {
            if slot.state() != Some(ContainerState::Running) {
                continue;
            }
            if let Some(msg) = slot.probe_state().failed
                && let Some(id) = slot.current.clone()
            {
                if let Some((h, _)) = slot.probes.take() {
                    h.abort();
                }
                kills.push((name.clone(), id, msg));
            }
        }
        for (name, id, msg) in kills {
            self.recorder.normal("Killing", format!("Container {name} failed: {msg}, will be restarted"));
            if let Err(e) = self.ctx.runtime.stop_container(&id, grace).await {
                tracing::warn!(error = %e, "cannot stop unhealthy container");
            }
            if let Some(slot) = self.slots.get_mut(&name)
                && let Ok(st) = self.ctx.runtime.container_status(&id).await
            {
                slot.status = Some(st);
            }
        }
    }

    fn grace_period(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// Brings one container toward running under a restart policy.
    async fn ensure(&mut self, c: &Container, policy: Policy, next: &mut Option<Instant>) {
        let now = Instant::now();
        let backoff = self.ctx.config.backoff.clone();
        let pod_label = format!("{}_{}({})", self.name(), self.namespace(), self.uid());
        let slot = self.slots.entry(c.name.clone()).or_default();
        if slot.retry_at.is_some_and(|at| now < at) {
            return;
        }
        match slot.status.clone() {
            None => {}
            Some(st) if st.state == ContainerState::Running => return,
            Some(st) if st.state == ContainerState::Created => {
                if let Err(e) = self.ctx.runtime.start_container(&st.id).await {
                    tracing::warn!(error = %e, "cannot start created container");
                }
                return;
            }
            Some(st) => {
                let code = st.exit_code.unwrap_or(0);
                if !policy.restarts(code) {
                    slot.waiting = None;
                    return;
                }
                if slot.backoff_for.as_ref() != Some(&st.id) {
                    let ran = match (st.started_at, st.finished_at) {
                        (Some(a), Some(b)) => b.duration_since(a).try_into().unwrap_or_default(),
                        _ => Duration::ZERO,
                    };
                    if ran >= backoff.reset_after() {
                        slot.crash_restarts = 0;
                    }
                    let delay = backoff.delay(slot.crash_restarts);
                    slot.crash_restarts = slot.crash_restarts.saturating_add(1);
                    slot.backoff_for = Some(st.id.clone());
                    slot.backoff_until = Some(now + delay);
                    if !delay.is_zero() {
                        let msg = format!("back-off {} restarting failed container={} pod={pod_label}", fmt_duration(delay), c.name);
                        slot.waiting = Some(("CrashLoopBackOff".into(), Some(msg)));
                        self.recorder.warning("BackOff", format!("Back-off restarting failed container {} in pod {}", c.name, pod_label));
                    }
                }
                if let Some(until) = slot.backoff_until.filter(|u| now < *u) {
                    *next = Some(next.map_or(until, |n| n.min(until)));
                    return;
                }
            }
        }
        self.start(c, next).await;
    }

    async fn start(&mut self, c: &Container, next: &mut Option<Instant>) {
        let now = Instant::now();
        let Some((sandbox, _)) = self.sandbox.clone() else { return };
        let image_name = c.image.clone().unwrap_or_default();
        let retry = |slot: &mut Slot, reason: &str, msg: String, next: &mut Option<Instant>, after: Duration| {
            slot.waiting = Some((reason.to_string(), Some(msg)));
            let at = now + after;
            slot.retry_at = Some(at);
            *next = Some(next.map_or(at, |n| n.min(at)));
        };
        let image = match self.ctx.images.ensure(&image_name).await {
            Ok(i) => i,
            Err(e) => {
                let slot = self.slots.entry(c.name.clone()).or_default();
                let reason = if slot.waiting.as_ref().is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff") {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                retry(slot, reason, e.to_string(), next, Duration::from_secs(5));
                self.event_once("Warning", "Failed", format!("Failed to pull image {image_name:?}: {e}"));
                return;
            }
        };
        let pod = self.pod.clone();
        let host_ip = self.ctx.config.node_ip.clone();
        let pod_ip = self.pod_ip();
        let cx = EnvContext { pod: &pod, pod_ip: pod_ip.as_deref(), host_ip: &host_ip, allocatable: &self.ctx.allocatable };
        let mut cache = ObjectCache::new(self.ctx.client.clone(), self.namespace());
        let resolved = env::resolve(c, &cx, &mut cache).await;
        let env = match resolved {
            Ok(env) => env,
            Err(e) => {
                let slot = self.slots.entry(c.name.clone()).or_default();
                retry(slot, "CreateContainerConfigError", e.to_string(), next, Duration::from_secs(2));
                self.event_once("Warning", "Failed", format!("Error: {e}"));
                return;
            }
        };
        let mounts = match self.volumes.as_ref().map(|v| v.mounts(c)).transpose() {
            Ok(m) => m.unwrap_or_default(),
            Err(e) => {
                let slot = self.slots.entry(c.name.clone()).or_default();
                retry(slot, "CreateContainerConfigError", e.to_string(), next, Duration::from_secs(2));
                self.event_once("Warning", "Failed", format!("Error: {e}"));
                return;
            }
        };
        let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
            let vars: HashMap<String, String> = env.iter().cloned().collect();
            v.iter().flatten().map(|s| env::expand(s, &vars)).collect()
        };
        let slot = self.slots.entry(c.name.clone()).or_default();
        let attempt = if slot.current.is_some() || slot.previous.is_some() { slot.restart_count + 1 } else { 0 };
        let mut labels = BTreeMap::new();
        labels.insert(POD_UID_LABEL.to_string(), self.pod.metadata.uid.clone().unwrap_or_default());
        labels.insert("io.kubernetes.container.name".to_string(), c.name.clone());
        let pod_security = self.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let config = ContainerConfig {
            name: c.name.clone(),
            attempt,
            image,
            command: expand_all(&c.command),
            args: expand_all(&c.args),
            env,
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            mounts,
            resources: resources_of(c),
            read_only_rootfs: c.security_context.as_ref().and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
            run_as_user: c
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user)
                .or(self.pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.run_as_user))
                .and_then(|u| u32::try_from(u).ok()),
            run_as_group: c
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_group)
                .or(pod_security.and_then(|s| s.run_as_group))
                .and_then(|g| u32::try_from(g).ok()),
            supplemental_groups: supplemental_groups(pod_security),
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin.unwrap_or(false) && c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            labels,
            annotations: self.pod.metadata.annotations.clone().unwrap_or_default(),
        };
        let id = match self.ctx.runtime.create_container(&sandbox, &config).await {
            Ok(id) => id,
            Err(e) => {
                let slot = self.slots.entry(c.name.clone()).or_default();
                retry(slot, "CreateContainerError", e.to_string(), next, Duration::from_secs(5));
                if let RuntimeError::Mount { mount_path, reason } = &e {
                    self.event_once(
                        "Warning",
                        "FailedMount",
                        format!("cannot mount volume at {mount_path} for container {}: {reason}", c.name),
                    );
                } else {
                    self.event_once("Warning", "Failed", format!("Error: {e}"));
                }
                return;
            }
        };
        // The old instance becomes "previous"; the one before it is removed.
        let runtime = self.ctx.runtime.clone();
        let slot = self.slots.entry(c.name.clone()).or_default();
        if let Some(old) = slot.current.take() {
            if let Some(older) = slot.previous.replace(old) {
                let _ = runtime.remove_container(&older).await;
            }
            slot.last_terminated = slot.status.as_ref().map(terminated_of);
            slot.restart_count = attempt;
        }
        slot.current = Some(id.clone());
        slot.status = None;
        slot.waiting = None;
        slot.retry_at = None;
        slot.backoff_until = None;
        if let Some((h, _)) = slot.probes.take() {
            h.abort();
        }
        self.recorder.normal("Pulled", format!("Container image {image_name:?} already present on machine"));
        self.recorder.normal("Created", format!("Created container: {}", c.name));
        if let Err(e) = runtime.start_container(&id).await {
            self.recorder.warning("Failed", format!("Error: failed to start container {:?}: {e}", c.name));
        } else {
            self.recorder.normal("Started", format!("Started container {}", c.name));
        }
        let st = runtime.container_status(&id).await.ok();
        let running = st.as_ref().is_some_and(|s| s.state == ContainerState::Running);
        if let Some(slot) = self.slots.get_mut(&c.name) {
            slot.status = st;
        }
        self.publish_shared();
        if running {
            self.spawn_probes(c);
            if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
                && let Some(exec) = &hook.exec
            {
                let cmd = exec.command.clone().unwrap_or_default();
                let ok = runtime.exec_sync(&id, &cmd, Duration::from_secs(30)).await.is_ok_and(|r| r.exit_code == 0);
                if !ok {
                    self.recorder.warning("FailedPostStartHook", format!("PostStartHook failed for container {}", c.name));
                    let _ = runtime.stop_container(&id, Duration::ZERO).await;
                }
            }
        }
    }

    fn spawn_probes(&mut self, c: &Container) {
        let Some(slot) = self.slots.get_mut(&c.name) else { return };
        slot.has_readiness = c.readiness_probe.is_some();
        slot.has_startup = c.startup_probe.is_some();
        slot.has_probes = slot.has_readiness || slot.has_startup || c.liveness_probe.is_some();
        if !slot.has_probes {
            return;
        }
        let Some(id) = slot.current.clone() else { return };
        let ip = self
            .sandbox
            .as_ref()
            .and_then(|(_, ip)| *ip)
            .or_else(|| self.ctx.config.node_ip.parse().ok())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let target = ProbeTarget { runtime: self.ctx.runtime.clone(), container_id: id, ip };
        let state = Arc::new(Mutex::new(ProbeState::default()));
        let handle = probe::spawn(c.clone(), target, state.clone(), self.wake.clone(), self.recorder.clone());
        if let Some((old, _)) = slot.probes.replace((handle, state)) {
            old.abort();
        }
    }

    /// The agent fails the pod (its deadline passed, or it is evicted): containers are killed
    /// (their grace period honoured) and the pod's status shows `reason` and `message`.
    async fn fail(&mut self, reason: &'static str, message: String) {
        self.terminal_reason = Some((reason, message));
        self.finish("Failed").await;
    }

    /// The pod reached Succeeded or Failed: stop what still runs (sidecars), free the sandbox.
    async fn finish(&mut self, phase: &'static str) {
        self.terminal = Some(phase);
        let grace = self.grace_period();
        self.stop_all(grace).await;
        if let Some((sb, _)) = &self.sandbox {
            let _ = self.ctx.runtime.stop_sandbox(sb).await;
        }
        self.refresh().await;
        self.publish_shared();
        self.publish().await;
    }

    async fn stop_all(&mut self, grace: Duration) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let runtime = self.ctx.runtime.clone();
        let deadline = Instant::now() + grace;
        let stop_one = |c: Container, id: ContainerId, recorder: Recorder| {
            let runtime = runtime.clone();
            async move {
                recorder.normal("Killing", format!("Stopping container {}", c.name));
                if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Some(exec) = &hook.exec {
                        let cmd = exec.command.clone().unwrap_or_default();
                        let _ = runtime.exec_sync(&id, &cmd, left).await;
                    } else if let Some(sleep) = &hook.sleep {
                        let d = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0)).min(left);
                        tokio::time::sleep(d).await;
                    } else if hook.http_get.is_some() {
                        let probe = bosun_core::k8s_openapi::api::core::v1::Probe {
                            http_get: hook.http_get.clone(),
                            timeout_seconds: Some(i32::try_from(left.as_secs().max(1)).unwrap_or(1)),
                            ..Default::default()
                        };
                        let ip = IpAddr::from([127, 0, 0, 1]);
                        let _ = probe::run_once(&probe, &c, &ProbeTarget { runtime: runtime.clone(), container_id: id.clone(), ip }).await;
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if let Err(e) = runtime.stop_container(&id, left).await {
                    tracing::warn!(error = %e, "cannot stop container");
                }
            }
        };
        let running = |slots: &HashMap<String, Slot>, c: &Container| -> Option<ContainerId> {
            let s = slots.get(&c.name)?;
            (s.state() == Some(ContainerState::Running)).then(|| s.current.clone()).flatten()
        };
        for slot in self.slots.values_mut() {
            if let Some((h, _)) = slot.probes.take() {
                h.abort();
            }
        }
        // App containers together, then sidecars in reverse order.
        let apps: Vec<_> = spec
            .containers
            .iter()
            .filter_map(|c| running(&self.slots, c).map(|id| stop_one(c.clone(), id, self.recorder.clone())))
            .collect();
        futures::future::join_all(apps).await;
        for c in spec.init_containers.iter().flatten().rev() {
            if let Some(id) = running(&self.slots, c) {
                stop_one(c.clone(), id, self.recorder.clone()).await;
            }
        }
    }

    async fn terminate(&mut self, removed: bool) {
        let grace = self.grace_period();
        self.stop_all(grace).await;
        if let Some((sb, _)) = &self.sandbox {
            let _ = self.ctx.runtime.stop_sandbox(sb).await;
        }
        self.refresh().await;
        if !removed {
            if self.terminal.is_none() {
                self.terminal = Some(if Policy::of(self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref())) == Policy::Always {
                    "Failed"
                } else {
                    self.current_phase()
                });
            }
            self.publish().await;
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: self.pod.metadata.uid.clone(), resource_version: None }),
                ..DeleteParams::default()
            };
            match Api::<Pod>::namespaced(self.ctx.client.clone(), self.namespace()).delete(self.name(), &params).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => tracing::warn!(error = %e, "cannot finish pod deletion"),
            }
        }
        if let Some((sb, _)) = self.sandbox.take() {
            let _ = self.ctx.runtime.remove_sandbox(&sb).await;
            self.ctx.wakers.lock().unwrap_or_else(|p| p.into_inner()).remove(&sb);
        }
        self.slots.clear();
        self.publish_shared();
        volume::teardown(&self.pod_dir()).await;
        let _ = tokio::fs::remove_dir_all(self.pod_dir()).await;
    }

    fn views(&self, containers: &[Container], init: bool) -> Vec<ContainerView> {
        containers
            .iter()
            .map(|c| {
                let sidecar = init && c.restart_policy.as_deref() == Some("Always");
                let slot = self.slots.get(&c.name);
                let default_reason = if init || self.init_done { "ContainerCreating" } else { "PodInitializing" };
                let (state, last) = match slot.and_then(|s| s.status.as_ref()) {
                    Some(st) if st.state == ContainerState::Running => {
                        (ViewState::Running { started_at: st.started_at }, slot.and_then(|s| s.last_terminated.clone()))
                    }
                    Some(st) if st.state == ContainerState::Exited => match slot.and_then(|s| s.waiting.clone()) {
                        Some((reason, message)) => (ViewState::Waiting { reason, message }, Some(terminated_of(st))),
                        None => (ViewState::Terminated(terminated_of(st)), slot.and_then(|s| s.last_terminated.clone())),
                    },
                    _ => {
                        let (reason, message) = slot.and_then(|s| s.waiting.clone()).unwrap_or((default_reason.into(), None));
                        let reason = self.pod_waiting.as_ref().map_or(reason, |(r, _)| r.clone());
                        (ViewState::Waiting { reason, message }, slot.and_then(|s| s.last_terminated.clone()))
                    }
                };
                ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    restart_count: i32::try_from(slot.map_or(0, |s| s.restart_count)).unwrap_or(i32::MAX),
                    state,
                    last_terminated: last,
                    ready: slot.is_some_and(Slot::ready),
                    started: (!init || sidecar).then(|| slot.is_some_and(Slot::started)),
                    container_id: slot.and_then(|s| s.current.as_ref().map(|id| id.0.clone())),
                }
            })
            .collect()
    }

    fn current_phase(&self) -> &'static str {
        if let Some(p) = self.terminal {
            return p;
        }
        if !self.init_done {
            return "Pending";
        }
        let containers = self.pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
        let ever_ran =
            containers.iter().all(|c| self.slots.get(&c.name).is_some_and(|s| s.status.is_some() || s.last_terminated.is_some()));
        if ever_ran { "Running" } else { "Pending" }
    }

    /// The pod's status as the agent sees it: the fields it owns, and of the conditions only its own.
    fn desired_status(&self) -> PodStatus {
        let spec = self.pod.spec.as_ref();
        let now = Timestamp::now();
        let init_views = self.views(spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default(), true);
        let app_views = self.views(spec.map(|s| s.containers.as_slice()).unwrap_or_default(), false);
        // Ephemeral containers are never ready and count for neither readiness nor the phase.
        let ephemeral_views: Vec<ContainerView> = spec
            .map(|s| self.views(&ephemeral_as_containers(s), false))
            .unwrap_or_default()
            .into_iter()
            .map(|v| ContainerView { ready: false, started: Some(matches!(v.state, ViewState::Running { .. })), ..v })
            .collect();
        let rt = &self.ctx.runtime_name;
        // The agent's conditions, their transition times kept from what the server holds.
        let mut conditions: Vec<PodCondition> =
            self.reported.conditions.iter().flatten().filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str())).cloned().collect();
        let sandbox_ready = self.sandbox.is_some() && self.terminal.is_none();
        let containers_ready = self.terminal.is_none() && !app_views.is_empty() && app_views.iter().all(|v| v.ready);
        status::set_condition(&mut conditions, "PodReadyToStartContainers", sandbox_ready, None, now);
        status::set_condition(&mut conditions, "Initialized", self.init_done, (!self.init_done).then_some("ContainersNotInitialized"), now);
        status::set_condition(
            &mut conditions,
            "ContainersReady",
            containers_ready,
            (!containers_ready).then_some("ContainersNotReady"),
            now,
        );
        status::set_condition(&mut conditions, "Ready", containers_ready, (!containers_ready).then_some("ContainersNotReady"), now);
        conditions.sort_by_key(|c| OWN_CONDITIONS.iter().position(|t| *t == c.type_));
        let pod_ip = self.pod_ip();
        let host_ip = self.ctx.config.node_ip.clone();
        PodStatus {
            phase: Some(self.current_phase().to_string()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: pod_ip.clone(),
            pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
            start_time: Some(status::api_time(self.start_time)),
            init_container_statuses: (!init_views.is_empty()).then(|| init_views.iter().map(|v| v.to_api(rt)).collect()),
            container_statuses: Some(app_views.iter().map(|v| v.to_api(rt)).collect()),
            ephemeral_container_statuses: (!ephemeral_views.is_empty()).then(|| ephemeral_views.iter().map(|v| v.to_api(rt)).collect()),
            qos_class: Some(status::qos_class(&self.pod).to_string()),
            message: self.terminal_reason.as_ref().map(|(_, m)| m.clone()).or_else(|| self.pod_waiting.as_ref().map(|(_, m)| m.clone())),
            reason: self.terminal_reason.as_ref().map(|(r, _)| (*r).to_string()),
            ..PodStatus::default()
        }
    }

    /// Writes the pod's status when it differs from what the server holds, as the kubelet does: one
    /// strategic merge patch of what changed (the agent's conditions merge by type, so the
    /// conditions others own stay).
    async fn publish(&mut self) {
        let desired = self.desired_status();
        // Compared in place: the trimmed copy is only made for a status that changed.
        if owns_same(&desired, &self.reported) {
            return;
        }
        let reported = owned_part(&self.reported);
        let Some(patch) = status_patch(&reported, &desired) else { return };
        let resource = Pod::api_resource();
        let target = bosun_core::Target::new(&resource, Some(self.namespace()));
        let patch = Patch::Strategic(serde_json::json!({ "status": patch }));
        let params = PatchParams { field_manager: Some("kubelet".into()), ..PatchParams::default() };
        match self.ctx.client.patch_subresource(target, self.name(), "status", &patch, &params).await {
            Ok(answer) => {
                self.reported_rv = answer.metadata.resource_version.as_deref().and_then(|v| v.parse().ok());
                // The server now holds the agent's fields; others' conditions are not compared.
                self.reported = desired;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(error = %e, "cannot update pod status"),
        }
    }
}

/// The pod conditions the agent owns (the others, `PodScheduled`, `DisruptionTarget`, readiness
/// gates, belong to other writers).
const OWN_CONDITIONS: [&str; 4] = ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"];

/// The fields of a status the agent writes (its own conditions only, in its order).
fn owned_part(status: &PodStatus) -> PodStatus {
    let mut conditions: Vec<PodCondition> =
        status.conditions.iter().flatten().filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str())).cloned().collect();
    conditions.sort_by_key(|c| OWN_CONDITIONS.iter().position(|t| *t == c.type_));
    PodStatus {
        phase: status.phase.clone(),
        conditions: Some(conditions),
        host_ip: status.host_ip.clone(),
        host_ips: status.host_ips.clone(),
        pod_ip: status.pod_ip.clone(),
        pod_ips: status.pod_ips.clone(),
        start_time: status.start_time.clone(),
        init_container_statuses: status.init_container_statuses.clone(),
        container_statuses: status.container_statuses.clone(),
        ephemeral_container_statuses: status.ephemeral_container_statuses.clone(),
        qos_class: status.qos_class.clone(),
        message: status.message.clone(),
        reason: status.reason.clone(),
        ..PodStatus::default()
    }
}

/// The agent's conditions of a status, in its order: `owned_part`'s conditions, without a copy.
fn owned_conditions(status: &PodStatus) -> impl Iterator<Item = &PodCondition> {
    // Type by type: what `owned_part`'s stable sort by type makes of them.
    OWN_CONDITIONS.iter().flat_map(move |t| status.conditions.iter().flatten().filter(move |c| c.type_ == *t))
}

/// Whether `owned_part(reported) == *desired`, compared in place. The fields the agent does not
/// write are `None` in `owned_part`: equal only when `desired` leaves them `None` too (as
/// `desired_status` does). Destructured whole, so that a field k8s-openapi adds is decided here.
fn owns_same(desired: &PodStatus, reported: &PodStatus) -> bool {
    let PodStatus {
        phase,
        conditions,
        host_ip,
        host_ips,
        pod_ip,
        pod_ips,
        start_time,
        init_container_statuses,
        container_statuses,
        qos_class,
        message,
        reason,
        allocated_resources,
        ephemeral_container_statuses,
        extended_resource_claim_status,
        node_allocatable_resource_claim_statuses,
        nominated_node_name,
        observed_generation,
        resize,
        resource_claim_statuses,
        resources,
        volume_health,
    } = desired;
    let unowned_none = allocated_resources.is_none()
        && extended_resource_claim_status.is_none()
        && node_allocatable_resource_claim_statuses.is_none()
        && nominated_node_name.is_none()
        && observed_generation.is_none()
        && resize.is_none()
        && resource_claim_statuses.is_none()
        && resources.is_none()
        && volume_health.is_none();
    unowned_none
        && *phase == reported.phase
        && *host_ip == reported.host_ip
        && *pod_ip == reported.pod_ip
        && *qos_class == reported.qos_class
        && *message == reported.message
        && *reason == reported.reason
        && *start_time == reported.start_time
        && *host_ips == reported.host_ips
        && *pod_ips == reported.pod_ips
        && conditions.as_deref().is_some_and(|c| c.iter().eq(owned_conditions(reported)))
        && *init_container_statuses == reported.init_container_statuses
        && *container_statuses == reported.container_statuses
        && *ephemeral_container_statuses == reported.ephemeral_container_statuses
}

/// A pod's ephemeral containers as containers (the fields they share; `targetContainerName` is
/// not one: the agent's sandbox already shares what a target would).
fn ephemeral_as_containers(spec: &PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .map(|e| Container {
            name: e.name.clone(),
            image: e.image.clone(),
            command: e.command.clone(),
            args: e.args.clone(),
            env: e.env.clone(),
            env_from: e.env_from.clone(),
            working_dir: e.working_dir.clone(),
            volume_mounts: e.volume_mounts.clone(),
            volume_devices: e.volume_devices.clone(),
            security_context: e.security_context.clone(),
            image_pull_policy: e.image_pull_policy.clone(),
            stdin: e.stdin,
            stdin_once: e.stdin_once,
            tty: e.tty,
            termination_message_path: e.termination_message_path.clone(),
            termination_message_policy: e.termination_message_policy.clone(),
            ..Container::default()
        })
        .collect()
}

/// The two-way strategic merge patch from `old` to `new` (both JSON objects): changed keys, `null`
/// for removed ones, nested objects patched in turn.
fn object_diff(
    old: &serde_json::Map<String, serde_json::Value>,
    new: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut out = serde_json::Map::new();
    for (k, v) in new {
        match (old.get(k), v) {
            (Some(o), v) if o == v => {}
            (Some(Value::Object(o)), Value::Object(n)) => {
                out.insert(k.clone(), Value::Object(object_diff(o, n)));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

/// The status patch from what the server holds to what the agent wants: changed fields only;
/// `conditions` merge by `type` (changed ones only); `podIPs`/`hostIPs` (merged by `ip`) are
/// replaced whole; container statuses are atomic lists. `None` when nothing differs.
fn status_patch(reported: &PodStatus, desired: &PodStatus) -> Option<serde_json::Value> {
    use serde_json::Value;
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (serde_json::to_value(reported), serde_json::to_value(desired)) else {
        return None;
    };
    let mut patch = serde_json::Map::new();
    for (k, v) in &new {
        if old.get(k) == Some(v) {
            continue;
        }
        let value = match (k.as_str(), v) {
            ("conditions", Value::Array(conds)) => {
                let before = old.get(k).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                let changed: Vec<Value> = conds
                    .iter()
                    .filter_map(|c| {
                        let c = c.as_object()?;
                        let type_ = c.get("type")?;
                        let prev = before.iter().filter_map(Value::as_object).find(|p| p.get("type") == Some(type_));
                        let mut d = match prev {
                            Some(p) if p == c => return None,
                            Some(p) => object_diff(p, c),
                            None => c.clone(),
                        };
                        d.insert("type".into(), type_.clone());
                        Some(Value::Object(d))
                    })
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                Value::Array(changed)
            }
            ("podIPs" | "hostIPs", Value::Array(items)) => {
                let mut items = items.clone();
                items.push(serde_json::json!({ "$patch": "replace" }));
                Value::Array(items)
            }
            _ => v.clone(),
        };
        patch.insert(k.clone(), value);
    }
    for k in old.keys() {
        if !new.contains_key(k) && k != "conditions" {
            patch.insert(k.clone(), Value::Null);
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// A pod's resolver, the kubelet's way: `ClusterFirst` (the default; for a hostNetwork pod only
/// as `ClusterFirstWithHostNet`) uses the cluster DNS with the namespace's search path and
/// `ndots:5` when the node has one; `Default` (and `ClusterFirst` without cluster DNS) keeps the
/// image's or host's; `None` takes `dnsConfig` alone. `dnsConfig` adds servers and searches and
/// overrides options by name. `None` here: the runtime leaves resolv.conf alone.
fn pod_dns(spec: &bosun_core::k8s_openapi::api::core::v1::PodSpec, namespace: &str, servers: &[String], domain: &str) -> Option<DnsConfig> {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !spec.host_network.unwrap_or(false),
        _ => false,
    };
    let mut dns = if policy == "None" {
        Some(DnsConfig::default())
    } else if cluster && !servers.is_empty() {
        Some(DnsConfig {
            servers: servers.to_vec(),
            searches: vec![format!("{namespace}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()],
            options: vec!["ndots:5".into()],
        })
    } else {
        None
    };
    if let Some(extra) = &spec.dns_config {
        let dns = dns.get_or_insert_with(DnsConfig::default);
        dns.servers.extend(extra.nameservers.iter().flatten().cloned());
        dns.searches.extend(extra.searches.iter().flatten().cloned());
        for option in extra.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else { continue };
            dns.options.retain(|o| o.split(':').next() != Some(name));
            dns.options.push(match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name.to_string(),
            });
        }
    }
    dns
}

/// The additional groups of a pod's processes, as the kubelet gives them: `supplementalGroups`
/// and the `fsGroup` that owns the pod's volumes.
fn supplemental_groups(security: Option<&bosun_core::k8s_openapi::api::core::v1::PodSecurityContext>) -> Vec<u32> {
    let Some(security) = security else { return Vec::new() };
    let mut groups: Vec<u32> =
        security.supplemental_groups.iter().flatten().chain(security.fs_group.as_ref()).filter_map(|g| u32::try_from(*g).ok()).collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn has_generated_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.config_map.is_some() || v.secret.is_some() || v.projected.is_some() || v.downward_api.is_some())
}

fn resources_of(c: &Container) -> ContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let get = |m: &Option<BTreeMap<String, bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).and_then(|q| Quantity::parse(&q.0).ok())
    };
    ContainerResources {
        cpu_request_millis: get(&res.requests, "cpu").and_then(|q| u64::try_from(q.milli_value()).ok()),
        cpu_limit_millis: get(&res.limits, "cpu").and_then(|q| u64::try_from(q.milli_value()).ok()),
        memory_limit_bytes: get(&res.limits, "memory").and_then(|q| u64::try_from(q.value()).ok()),
    }
}

/// Formats a backoff the way the kubelet does (`10s`, `5m0s`).
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{}s", s / 60, s % 60) } else { format!("{s}s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> PodStatus {
        serde_json::from_value(v).expect("status")
    }

    fn cond(type_: &str, status: &str, reason: Option<&str>) -> serde_json::Value {
        let mut c = json!({ "type": type_, "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z" });
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        c
    }

    #[test]
    fn the_status_patch_holds_only_what_changed() {
        let pending = status(json!({
            "phase": "Pending",
            "conditions": [cond("PodScheduled", "True", None), cond("Ready", "False", Some("ContainersNotReady")), cond("Initialized", "True", None)],
            "podIP": "10.0.0.1", "podIPs": [{ "ip": "10.0.0.1" }],
            "message": "sandbox failed once",
            "containerStatuses": [{ "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": { "waiting": { "reason": "ContainerCreating" } } }],
        }));
        let mut running = owned_part(&pending);
        running.phase = Some("Running".into());
        running.message = None;
        if let Some(c) = running.conditions.as_mut().and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready")) {
            c.status = "True".into();
            c.reason = None;
        }
        running.container_statuses = Some(vec![serde_json::from_value(json!({
            "name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": { "running": { "startedAt": "2026-01-01T00:00:01Z" } }
        })).expect("container status")]);
        let patch = status_patch(&owned_part(&pending), &running).expect("a patch");
        assert_eq!(
            patch,
            json!({
                "phase": "Running",
                "message": null,
                // Only the changed condition, merged by type: its removed reason is nulled.
                "conditions": [{ "type": "Ready", "status": "True", "reason": null }],
                // Container statuses are atomic: the whole list.
                "containerStatuses": [{ "name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": { "running": { "startedAt": "2026-01-01T00:00:01Z" } } }],
            })
        );
        assert_eq!(status_patch(&running, &running), None, "nothing changed, nothing to write");
        assert!(
            owned_part(&pending).conditions.iter().flatten().all(|c| c.type_ != "PodScheduled"),
            "others' conditions are not the agent's"
        );
    }

    #[test]
    fn the_in_place_comparison_agrees_with_the_trimmed_copy() {
        let server = status(json!({
            "phase": "Running",
            // Others' conditions between the agent's, which come out of order.
            "conditions": [cond("Ready", "True", None), cond("PodScheduled", "True", None), cond("Initialized", "True", None),
                cond("DisruptionTarget", "False", None), cond("ContainersReady", "True", None)],
            "podIP": "10.0.0.1", "podIPs": [{ "ip": "10.0.0.1" }], "hostIP": "10.1.0.1", "qosClass": "BestEffort",
            "nominatedNodeName": "n2",
        }));
        let same = owned_part(&server);
        let mut reordered = same.clone();
        reordered.conditions.as_mut().expect("conditions").swap(0, 1);
        let mut phase = same.clone();
        phase.phase = Some("Succeeded".into());
        let mut condition = same.clone();
        condition.conditions.as_mut().expect("conditions")[2].status = "False".into();
        let mut fewer = same.clone();
        fewer.conditions.as_mut().expect("conditions").pop();
        let mut no_conditions = same.clone();
        no_conditions.conditions = None;
        let mut unowned = same.clone();
        unowned.nominated_node_name = Some("n2".into());
        let mut ip = same.clone();
        ip.pod_ips = Some(Vec::new());
        let cases = [
            (&same, true),
            (&reordered, false),
            (&phase, false),
            (&condition, false),
            (&fewer, false),
            (&no_conditions, false),
            (&unowned, false),
            (&ip, false),
        ];
        for (i, (desired, equal)) in cases.into_iter().enumerate() {
            assert_eq!(owned_part(&server) == *desired, equal, "case {i}: the trimmed copy");
            assert_eq!(owns_same(desired, &server), equal, "case {i}: in place");
        }
        // Duplicate types (which the server's merge by type would not keep) compare alike too.
        let mut twice = server.clone();
        twice.conditions.as_mut().expect("conditions").push(cond_value("Initialized", "False"));
        assert!(!owns_same(&same, &twice));
        assert!(owns_same(&owned_part(&twice), &twice));
        assert!(owns_same(&PodStatus { conditions: Some(Vec::new()), ..PodStatus::default() }, &PodStatus::default()));
    }

    fn cond_value(type_: &str, status_: &str) -> PodCondition {
        serde_json::from_value(cond(type_, status_, None)).expect("condition")
    }

    #[test]
    fn a_new_pod_ip_replaces_the_list() {
        let before = status(json!({ "podIP": "10.0.0.1", "podIPs": [{ "ip": "10.0.0.1" }] }));
        let after = status(json!({ "podIP": "10.0.0.2", "podIPs": [{ "ip": "10.0.0.2" }] }));
        assert_eq!(
            status_patch(&before, &after),
            Some(json!({ "podIP": "10.0.0.2", "podIPs": [{ "ip": "10.0.0.2" }, { "$patch": "replace" }] }))
        );
    }

    #[test]
    fn ephemeral_containers_run_as_containers_and_their_statuses_are_the_agents() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{ "name": "app", "image": "busybox" }],
            "ephemeralContainers": [{ "name": "dbg", "image": "busybox", "command": ["sh"], "args": ["-c", "true"],
                "stdin": true, "tty": true, "env": [{ "name": "A", "value": "1" }], "targetContainerName": "app" }]
        }))
        .expect("spec");
        let cs = ephemeral_as_containers(&spec);
        assert_eq!(cs.len(), 1);
        let c = &cs[0];
        assert_eq!((c.name.as_str(), c.image.as_deref(), c.stdin, c.tty), ("dbg", Some("busybox"), Some(true), Some(true)));
        assert_eq!((c.command.clone(), c.args.clone()), (Some(vec!["sh".into()]), Some(vec!["-c".into(), "true".into()])));
        assert_eq!(c.env.as_ref().map(Vec::len), Some(1));
        assert!(c.ports.is_none() && c.readiness_probe.is_none() && c.restart_policy.is_none());
        // The agent owns ephemeralContainerStatuses: a change there is a change to write.
        let with = status(json!({ "ephemeralContainerStatuses": [{ "name": "dbg", "image": "busybox", "imageID": "",
            "ready": false, "restartCount": 0, "state": { "running": {} } }] }));
        assert!(!owns_same(&owned_part(&with), &PodStatus::default()));
        assert!(owns_same(&owned_part(&with), &with));
        assert!(status_patch(&PodStatus::default(), &with).is_some_and(|p| p.get("ephemeralContainerStatuses").is_some()));
    }
}
