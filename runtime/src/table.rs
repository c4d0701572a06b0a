//! [`Table`]: the sandbox and container bookkeeping that the process, runc and fake backends
//! share. A backend embeds one table, which owns the records behind one lock, writes them where
//! the backend persists them ([`JsonFiles`] under a state directory, or [`InMemory`]: nowhere),
//! keeps each container's exit watch and attach point, and broadcasts [`RuntimeEvent`]s.
//!
//! What differs per backend stays in the backend: how a container starts and stops (host process
//! groups, `runc`, a script), networks, mounts, and what a record holds beside its status.

use crate::attach::AttachPoint;
use crate::cri::{
    AttachSession, ContainerConfig, ContainerFilter, ContainerId, ContainerState, ContainerStatus, EventKind, LogByteStream, LogOptions,
    RuntimeEvent, SandboxId, SandboxStatus, TerminalSize,
};
use crate::error::{Result, RuntimeError};
use crate::logs;
use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// What a table keeps per sandbox: its status, and whatever else its backend needs.
pub(crate) trait SandboxEntry: Clone {
    /// The sandbox's status.
    fn status(&self) -> &SandboxStatus;
}

impl SandboxEntry for SandboxStatus {
    fn status(&self) -> &SandboxStatus {
        self
    }
}

/// What a table keeps per container beside its exit watch and attach point: its status, and
/// whatever else its backend needs.
pub(crate) trait ContainerEntry: Clone {
    /// The container's status.
    fn status(&self) -> &ContainerStatus;
    /// The container's status, to change.
    fn status_mut(&mut self) -> &mut ContainerStatus;
}

/// Implements [`ContainerEntry`] for a record whose status is its `status` field.
macro_rules! container_entry {
    ($record:ty) => {
        impl $crate::table::ContainerEntry for $record {
            fn status(&self) -> &$crate::cri::ContainerStatus {
                &self.status
            }

            fn status_mut(&mut self) -> &mut $crate::cri::ContainerStatus {
                &mut self.status
            }
        }
    };
}
pub(crate) use container_entry;

/// Where a table's records are kept so that a later instance finds them.
pub(crate) trait Store<S, R> {
    /// Writes a sandbox's record (after every change).
    fn save_sandbox(&self, sandbox: &S);
    /// Writes a container's record (after every change).
    fn save_container(&self, record: &R);
    /// Deletes a removed sandbox's record.
    fn delete_sandbox(&self, id: &SandboxId);
    /// Deletes a removed container's record.
    fn delete_container(&self, id: &ContainerId);
}

/// Keeps records nowhere but in memory (the fake: its containers end with it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InMemory;

impl<S, R> Store<S, R> for InMemory {
    fn save_sandbox(&self, _: &S) {}
    fn save_container(&self, _: &R) {}
    fn delete_sandbox(&self, _: &SandboxId) {}
    fn delete_container(&self, _: &ContainerId) {}
}

/// Keeps records as JSON files under a state directory: `sandboxes/<id>.json` and
/// `containers/<id>.json`, each replaced whole (written to a temporary file, then renamed).
#[derive(Debug, Clone)]
pub(crate) struct JsonFiles {
    root: PathBuf,
}

impl JsonFiles {
    /// Records under `root` (whose `sandboxes` and `containers` directories must exist).
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn sandbox_file(&self, id: &SandboxId) -> PathBuf {
        self.root.join("sandboxes").join(format!("{id}.json"))
    }

    fn container_file(&self, id: &ContainerId) -> PathBuf {
        self.root.join("containers").join(format!("{id}.json"))
    }

    /// Replaces the file at `path` with `value` as JSON. A failure is logged, not returned: the
    /// record stays right in memory, and only a later instance would miss the change.
    pub(crate) fn write<T: Serialize>(path: &Path, value: &T) {
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(value)
            .map_err(std::io::Error::other)
            .and_then(|data| std::fs::write(&tmp, data))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "cannot persist runtime state");
        }
    }

    /// The records in `sub` (`sandboxes` or `containers`) with their files; files that cannot be
    /// read or parsed as `T` are skipped.
    pub(crate) fn load<T: DeserializeOwned>(&self, sub: &str) -> Vec<(PathBuf, T)> {
        let paths: Vec<PathBuf> = std::fs::read_dir(self.root.join(sub))
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
            .unwrap_or_default();
        paths
            .into_iter()
            .filter_map(|path| {
                let value = std::fs::read(&path).ok().and_then(|data| serde_json::from_slice(&data).ok())?;
                Some((path, value))
            })
            .collect()
    }
}

impl<S: SandboxEntry + Serialize, R: ContainerEntry + Serialize> Store<S, R> for JsonFiles {
    fn save_sandbox(&self, sandbox: &S) {
        Self::write(&self.sandbox_file(&sandbox.status().id), sandbox);
    }

    fn save_container(&self, record: &R) {
        Self::write(&self.container_file(&record.status().id), record);
    }

    fn delete_sandbox(&self, id: &SandboxId) {
        let _ = std::fs::remove_file(self.sandbox_file(id));
    }

    fn delete_container(&self, id: &ContainerId) {
        let _ = std::fs::remove_file(self.container_file(id));
    }
}

/// A container in a table.
#[derive(Debug)]
pub(crate) struct Entry<R> {
    /// What the backend keeps (and persists) for it.
    pub(crate) record: R,
    /// Becomes `true` once it exited.
    pub(crate) exited: watch::Sender<bool>,
    /// Its main process's stdio for attach sessions, while it runs (not after a recovery).
    pub(crate) attach: Option<Arc<AttachPoint>>,
}

/// The records behind a table's lock, with what the backend keeps beside them under the same
/// lock (`extra`).
#[derive(Debug)]
pub(crate) struct Records<S, R, X> {
    /// The sandboxes by id.
    pub(crate) sandboxes: HashMap<SandboxId, S>,
    /// The containers by id.
    pub(crate) containers: HashMap<ContainerId, Entry<R>>,
    /// The sequence number that the last id handed out ends in (ids end in `-<seq>`).
    pub(crate) seq: u64,
    /// The backend's own state.
    pub(crate) extra: X,
}

impl<S, R: ContainerEntry, X> Records<S, R, X> {
    /// The sequence number for a new id.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Notes an id that an earlier instance handed out, so that new ids do not repeat it.
    pub(crate) fn saw_id(&mut self, id: &str) {
        self.seq = self.seq.max(id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0));
    }

    /// Adds a container (its exit watch says whether it already exited).
    pub(crate) fn insert(&mut self, id: ContainerId, record: R) {
        let (exited, _) = watch::channel(record.status().state == ContainerState::Exited);
        self.containers.insert(id, Entry { record, exited, attach: None });
    }
}

/// How a container's main process ended.
#[derive(Debug)]
pub(crate) struct Exit {
    /// Its exit code.
    pub(crate) code: i32,
    /// The signal that ended it.
    pub(crate) signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub(crate) reason: String,
    /// A detail to show (`None` keeps the status's message as it is).
    pub(crate) message: Option<String>,
}

/// The sandboxes and containers of a backend. `S` and `R` are what it keeps per sandbox and per
/// container, `X` what else it keeps under the same lock, `P` where the records persist.
#[derive(Debug)]
pub(crate) struct Table<S, R, X, P> {
    records: Mutex<Records<S, R, X>>,
    events: broadcast::Sender<RuntimeEvent>,
    store: P,
}

impl<S, R, X, P> Table<S, R, X, P>
where
    S: SandboxEntry,
    R: ContainerEntry,
    X: Default,
    P: Store<S, R>,
{
    /// An empty table persisting to `store`, buffering `capacity` events per subscriber (a
    /// subscriber that falls further behind gets a `Resync`).
    pub(crate) fn new(store: P, capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity);
        let records = Records { sandboxes: HashMap::new(), containers: HashMap::new(), seq: 0, extra: X::default() };
        Self { records: Mutex::new(records), events, store }
    }

    /// The records, locked. Do not hold the guard across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Records<S, R, X>> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the records persist.
    pub(crate) fn store(&self) -> &P {
        &self.store
    }

    /// Tells subscribers about a container.
    pub(crate) fn emit(&self, kind: EventKind, sandbox_id: &SandboxId, container_id: &ContainerId) {
        let _ = self.events.send(RuntimeEvent { kind, sandbox_id: sandbox_id.clone(), container_id: container_id.clone() });
    }

    /// The events from now on; lost ones (a subscriber too far behind) come as one `Resync`.
    pub(crate) fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe())
            .map(|r| match r {
                Ok(ev) => ev,
                Err(_) => {
                    RuntimeEvent { kind: EventKind::Resync, sandbox_id: SandboxId(String::new()), container_id: ContainerId(String::new()) }
                }
            })
            .boxed()
    }

    /// Persists a sandbox's record.
    pub(crate) fn save_sandbox(&self, sandbox: &S) {
        self.store.save_sandbox(sandbox);
    }

    /// Persists a container's record.
    pub(crate) fn save_container(&self, record: &R) {
        self.store.save_container(record);
    }

    /// A sandbox's status.
    pub(crate) fn sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        self.lock().sandboxes.get(id).map(|s| s.status().clone()).ok_or_else(|| RuntimeError::not_found("sandbox", &id.0))
    }

    /// Every sandbox's status.
    pub(crate) fn list_sandboxes(&self) -> Vec<SandboxStatus> {
        self.lock().sandboxes.values().map(|s| s.status().clone()).collect()
    }

    /// Changes a sandbox's record and persists it (nothing when the sandbox is unknown).
    pub(crate) fn update_sandbox(&self, id: &SandboxId, change: impl FnOnce(&mut S)) {
        let snapshot = {
            let mut records = self.lock();
            let Some(sandbox) = records.sandboxes.get_mut(id) else { return };
            change(sandbox);
            sandbox.clone()
        };
        self.store.save_sandbox(&snapshot);
    }

    /// Forgets a sandbox and deletes its persisted record; returns it (`None` when unknown).
    pub(crate) fn remove_sandbox(&self, id: &SandboxId) -> Option<S> {
        let removed = self.lock().sandboxes.remove(id)?;
        self.store.delete_sandbox(id);
        Some(removed)
    }

    /// The containers of a sandbox.
    pub(crate) fn containers_in(&self, sandbox: &SandboxId) -> Vec<ContainerId> {
        self.lock().containers.iter().filter(|(_, c)| &c.record.status().sandbox_id == sandbox).map(|(k, _)| k.clone()).collect()
    }

    /// The running containers of a sandbox.
    pub(crate) fn running_in(&self, sandbox: &SandboxId) -> Vec<ContainerId> {
        self.lock()
            .containers
            .iter()
            .filter(|(_, c)| &c.record.status().sandbox_id == sandbox && c.record.status().state == ContainerState::Running)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A container's record (a copy: for a caller that needs the record after the lock, across
    /// awaits; [`Table::with_container`] reads a field or two in place).
    pub(crate) fn record(&self, id: &ContainerId) -> Result<R> {
        self.with_container(id, R::clone)
    }

    /// What `read` makes of a container's record, read in place under the lock (a not-found
    /// error for an unknown container). Do not await or lock the table again in `read`.
    pub(crate) fn with_container<T>(&self, id: &ContainerId, read: impl FnOnce(&R) -> T) -> Result<T> {
        self.lock().containers.get(id).map(|c| read(&c.record)).ok_or_else(|| RuntimeError::not_found("container", &id.0))
    }

    /// What `read` makes of a created (not yet started) container's record, read in place (an
    /// error for one that is unknown or was started).
    pub(crate) fn with_created<T>(&self, id: &ContainerId, read: impl FnOnce(&R) -> T) -> Result<T> {
        self.with_container(id, |r| (r.status().state == ContainerState::Created).then(|| read(r)))?
            .ok_or_else(|| RuntimeError::Invalid(format!("container {id} is not in the created state")))
    }

    /// What `read` makes of a running container's record, read in place (an error for one that
    /// is unknown or not running).
    pub(crate) fn with_running<T>(&self, id: &ContainerId, read: impl FnOnce(&R) -> T) -> Result<T> {
        self.with_container(id, |r| (r.status().state == ContainerState::Running).then(|| read(r)))?
            .ok_or_else(|| RuntimeError::Invalid(format!("container {id} is not running")))
    }

    /// A created (not yet started) container's record (an error for one that is unknown or was
    /// started).
    pub(crate) fn created(&self, id: &ContainerId) -> Result<R> {
        self.with_created(id, R::clone)
    }

    /// A container's status.
    pub(crate) fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.with_container(id, |r| r.status().clone())
    }

    /// The statuses of the containers that pass `filter`.
    pub(crate) fn list_containers(&self, filter: &ContainerFilter) -> Vec<ContainerStatus> {
        self.lock().containers.values().map(|c| c.record.status()).filter(|s| filter.matches(s)).cloned().collect()
    }

    /// Waits up to `limit` for a container to exit; whether it did (an unknown one has).
    pub(crate) async fn wait_exited(&self, id: &ContainerId, limit: Duration) -> bool {
        let rx = self.lock().containers.get(id).map(|c| c.exited.subscribe());
        let Some(mut rx) = rx else { return true };
        tokio::time::timeout(limit, rx.wait_for(|e| *e)).await.is_ok()
    }

    /// Marks a container running with its attach point (`update` adds what the backend records,
    /// such as the pid), persists it and emits `Started` (for `sandbox`, even when the container
    /// is gone by now).
    pub(crate) fn mark_running(&self, id: &ContainerId, sandbox: &SandboxId, attach: Arc<AttachPoint>, update: impl FnOnce(&mut R)) {
        self.set_running(id, |r| {
            update(r);
            Some(attach)
        });
        self.emit(EventKind::Started, sandbox, id);
    }

    /// Marks a container running and persists it, emitting nothing: `update` adds what the
    /// backend records and returns the attach point of the container's main process, if it has
    /// one. The container's sandbox (`None`, and nothing done, when the container is unknown).
    pub(crate) fn set_running(&self, id: &ContainerId, update: impl FnOnce(&mut R) -> Option<Arc<AttachPoint>>) -> Option<SandboxId> {
        let mut records = self.lock();
        let c = records.containers.get_mut(id)?;
        if let Some(attach) = update(&mut c.record) {
            c.attach = Some(attach);
        }
        let st = c.record.status_mut();
        st.state = ContainerState::Running;
        st.started_at = Some(Timestamp::now());
        self.store.save_container(&c.record);
        Some(c.record.status().sandbox_id.clone())
    }

    /// Marks a container exited as `exit` says (it sees the record first, may change it, and
    /// `None` leaves the container as it is): its attach sessions end, its record is persisted,
    /// its exit watchers wake, and subscribers hear `Exited`. Whether the container was marked.
    pub(crate) fn mark_exited(&self, id: &ContainerId, exit: impl FnOnce(&mut R) -> Option<Exit>) -> bool {
        let sandbox = {
            let mut records = self.lock();
            let Some(c) = records.containers.get_mut(id) else { return false };
            let Some(exit) = exit(&mut c.record) else { return false };
            let st = c.record.status_mut();
            st.state = ContainerState::Exited;
            st.finished_at = Some(Timestamp::now());
            st.exit_code = Some(exit.code);
            st.signal = exit.signal;
            st.reason = Some(exit.reason);
            if let Some(message) = exit.message {
                st.message = Some(message);
            }
            if let Some(point) = c.attach.take() {
                point.close();
            }
            self.store.save_container(&c.record);
            // `send_replace`, not `send`: with no receiver at this moment, `send` would leave the
            // value `false` for every later one (log followers, `wait_exited`).
            c.exited.send_replace(true);
            c.record.status().sandbox_id.clone()
        };
        self.emit(EventKind::Exited, &sandbox, id);
        true
    }

    /// Forgets a container: its entry, its persisted record and its log file. Its attach
    /// sessions end and its exit watchers wake (a no-op for one that exited, as a removed one
    /// has unless it outlived its stop); subscribers hear `Removed`. Nothing for an unknown one.
    pub(crate) fn remove_container(&self, id: &ContainerId) {
        let Some(removed) = self.lock().containers.remove(id) else { return };
        if let Some(point) = &removed.attach {
            point.close();
        }
        removed.exited.send_replace(true);
        self.store.delete_container(id);
        if let Some(log) = &removed.record.status().log_path {
            let _ = std::fs::remove_file(log);
        }
        self.emit(EventKind::Removed, &removed.record.status().sandbox_id, id);
    }

    /// An attach session to a running container's main process.
    pub(crate) fn attach(&self, id: &ContainerId, size: Option<TerminalSize>) -> Result<AttachSession> {
        let found = self.lock().containers.get(id).map(|c| (c.record.status().state, c.attach.clone()));
        match found {
            None => Err(RuntimeError::not_found("container", &id.0)),
            Some((ContainerState::Running, Some(point))) => Ok(point.session(size)),
            Some((ContainerState::Running, None)) => {
                Err(RuntimeError::Unsupported(format!("container {id} was started by a previous agent; its stdio cannot be attached to")))
            }
            Some(_) => Err(RuntimeError::Invalid(format!("container {id} is not running"))),
        }
    }

    /// A container's log file as a stream (following it until the container exits, when asked).
    pub(crate) fn logs(&self, id: &ContainerId, options: &LogOptions) -> Result<LogByteStream> {
        let (path, rx) = {
            let records = self.lock();
            let c = records.containers.get(id).ok_or_else(|| RuntimeError::not_found("container", &id.0))?;
            let path = c.record.status().log_path.clone().ok_or_else(|| RuntimeError::not_found("log", &id.0))?;
            (path, c.exited.subscribe())
        };
        Ok(logs::read(path, options.clone(), Arc::new(move || *rx.borrow())))
    }
}

/// What [`Table::recover_containers`] reports of a persisted container that the table holds
/// already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Nothing: only the containers taken in are reported.
    Skipped,
    /// Its status as persisted, like those taken in.
    Reported,
}

impl<S, R, X> Table<S, R, X, JsonFiles>
where
    S: SandboxEntry + Serialize,
    R: ContainerEntry + Serialize + DeserializeOwned,
    X: Default,
{
    /// Takes in the containers that an earlier instance persisted and the table does not hold
    /// yet, in the order they load, and returns their statuses (with those of the ones it holds
    /// when `known` says so). One persisted as running is asked `alive` (the backend's own test:
    /// it may stop the container and answer `false`); one that no longer runs is marked lost,
    /// `lost` adds the backend's detail, and its file is rewritten. Each is inserted (its id
    /// noted, so that new ids do not repeat it), then `watch` follows each one still running.
    pub(crate) async fn recover_containers<F>(
        &self,
        known: Known,
        mut alive: impl FnMut(&R) -> F,
        lost: impl Fn(&mut R),
        watch: impl Fn(&ContainerId, &R),
    ) -> Vec<ContainerStatus>
    where
        F: Future<Output = bool>,
    {
        let mut found = Vec::new();
        for (path, mut record) in self.store.load::<R>("containers") {
            let id = record.status().id.clone();
            if self.lock().containers.contains_key(&id) {
                if known == Known::Reported {
                    found.push(record.status().clone());
                }
                continue;
            }
            let was_running = record.status().state == ContainerState::Running;
            let still_running = was_running && alive(&record).await;
            if was_running && !still_running {
                mark_lost(record.status_mut());
                lost(&mut record);
                JsonFiles::write(&path, &record);
            }
            {
                let mut records = self.lock();
                records.saw_id(&id.0);
                records.insert(id.clone(), record.clone());
            }
            if still_running {
                watch(&id, &record);
            }
            found.push(record.status().clone());
        }
        found
    }
}

/// A new container's status: `Created` now, from its config.
pub(crate) fn created_status(
    id: &ContainerId,
    sandbox: &SandboxId,
    config: &ContainerConfig,
    log_path: Option<PathBuf>,
) -> ContainerStatus {
    ContainerStatus {
        id: id.clone(),
        sandbox_id: sandbox.clone(),
        name: config.name.clone(),
        attempt: config.attempt,
        image: config.image.name.clone(),
        state: ContainerState::Created,
        created_at: Timestamp::now(),
        started_at: None,
        finished_at: None,
        exit_code: None,
        signal: None,
        reason: None,
        message: None,
        log_path,
        labels: config.labels.clone(),
    }
}

/// Where a container of `sandbox` writes its log: under the sandbox's log directory (or the
/// runtime's `logs/<sandbox>` when it names none), `<name>/<attempt>.log`.
pub(crate) fn log_path(root: &Path, sandbox: &SandboxStatus, config: &ContainerConfig) -> PathBuf {
    let dir = if sandbox.config.log_directory.as_os_str().is_empty() {
        root.join("logs").join(&sandbox.id.0)
    } else {
        sandbox.config.log_directory.clone()
    };
    dir.join(&config.name).join(format!("{}.log", config.attempt))
}

/// Marks a container that ended while no runtime watched it: its exit code is lost.
pub(crate) fn mark_lost(status: &mut ContainerStatus) {
    status.state = ContainerState::Exited;
    status.finished_at = Some(Timestamp::now());
    status.exit_code = Some(137);
    status.reason = Some("ContainerStatusUnknown".into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{SandboxConfig, SandboxState};
    use futures::StreamExt;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        status: ContainerStatus,
        pid: Option<i32>,
    }

    container_entry!(Record);

    fn sandbox(id: &str) -> SandboxStatus {
        SandboxStatus {
            id: SandboxId(id.into()),
            config: SandboxConfig::default(),
            state: SandboxState::Ready,
            ip: None,
            created_at: Timestamp::now(),
        }
    }

    /// A table over `dir` with sandbox `sb-1` and its created container `c-1` (log file at `log`).
    fn table_with_container(dir: &Path, log: Option<PathBuf>) -> (Table<SandboxStatus, Record, (), JsonFiles>, ContainerId) {
        for sub in ["sandboxes", "containers"] {
            std::fs::create_dir_all(dir.join(sub)).expect("state dirs");
        }
        let table = Table::new(JsonFiles::new(dir.to_path_buf()), 16);
        let sb = sandbox("sb-1");
        table.save_sandbox(&sb);
        table.lock().sandboxes.insert(sb.id.clone(), sb);
        let id = ContainerId("c-1".into());
        let config = ContainerConfig { name: "main".into(), ..ContainerConfig::default() };
        let record = Record { status: created_status(&id, &SandboxId("sb-1".into()), &config, log), pid: None };
        table.save_container(&record);
        table.lock().insert(id.clone(), record);
        (table, id)
    }

    #[tokio::test]
    async fn a_container_goes_through_started_exited_and_removed_with_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("main.log");
        std::fs::write(&log, "x\n").expect("log");
        let (table, id) = table_with_container(dir.path(), Some(log.clone()));
        let mut events = table.events();
        let sb = SandboxId("sb-1".into());
        assert!(table.with_running(&id, |_| ()).is_err(), "a created container is not running");
        table.mark_running(&id, &sb, AttachPoint::new(None, false, false, None), |r| r.pid = Some(42));
        assert_eq!(table.with_running(&id, |r| r.pid).expect("running"), Some(42));
        assert!(table.created(&id).is_err(), "a started container is not in the created state");
        assert!(table.with_created(&id, |_| ()).is_err(), "a started container is not in the created state");
        assert!(table.with_container(&ContainerId("c-2".into()), |_| ()).expect_err("unknown").is_not_found());
        // `None` leaves it running: no event, no change.
        assert!(!table.mark_exited(&id, |_| None));
        assert!(!table.wait_exited(&id, Duration::from_millis(1)).await);
        let exit = |_: &mut Record| Some(Exit { code: 3, signal: None, reason: "Error".into(), message: None });
        assert!(table.mark_exited(&id, exit));
        assert!(table.wait_exited(&id, Duration::from_millis(1)).await);
        let on_disk: Vec<(PathBuf, Record)> = table.store().load("containers");
        assert_eq!(on_disk.len(), 1);
        assert_eq!(on_disk[0].1.status.exit_code, Some(3));
        assert_eq!(on_disk[0].1.status.state, ContainerState::Exited);
        assert_eq!(table.list_containers(&ContainerFilter { state: Some(ContainerState::Exited), ..ContainerFilter::default() }).len(), 1);
        table.remove_container(&id);
        table.remove_container(&id);
        assert!(table.container_status(&id).is_err());
        assert!(!log.exists(), "the log file goes with the container");
        assert!(table.store().load::<Record>("containers").is_empty());
        let kinds: Vec<EventKind> = (&mut events).take(3).map(|e| e.kind).collect().await;
        assert_eq!(kinds, [EventKind::Started, EventKind::Exited, EventKind::Removed]);
        let sandbox = table.remove_sandbox(&sb).expect("known sandbox");
        assert_eq!(sandbox.id, sb);
        assert!(table.remove_sandbox(&sb).is_none());
        assert!(table.store().load::<SandboxStatus>("sandboxes").is_empty());
    }

    #[tokio::test]
    async fn set_running_persists_and_tells_nothing_and_skips_an_unknown_container() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (table, id) = table_with_container(dir.path(), None);
        let mut events = table.events();
        assert_eq!(table.set_running(&ContainerId("c-2".into()), |_| unreachable!("an unknown container")), None);
        let started = table.set_running(&id, |r| {
            r.pid = Some(7);
            None
        });
        assert_eq!(started, Some(SandboxId("sb-1".into())));
        let on_disk: Vec<(PathBuf, Record)> = table.store().load("containers");
        assert_eq!((on_disk[0].1.status.state, on_disk[0].1.pid), (ContainerState::Running, Some(7)));
        assert!(on_disk[0].1.status.started_at.is_some());
        let attached = table.attach(&id, None).map(|_| ());
        assert!(matches!(attached, Err(RuntimeError::Unsupported(_))), "no attach point given, none kept: {attached:?}");
        // The first event is the caller's own: `set_running` emitted none.
        table.emit(EventKind::Created, &SandboxId("sb-1".into()), &id);
        assert_eq!(events.next().await.map(|e| e.kind), Some(EventKind::Created));
    }

    #[tokio::test]
    async fn removing_a_container_that_never_exited_wakes_its_watchers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (table, id) = table_with_container(dir.path(), None);
        let logs_of = table.logs(&id, &LogOptions::default());
        assert!(logs_of.is_err(), "no log path: no logs");
        let rx = table.lock().containers.get(&id).map(|c| c.exited.subscribe()).expect("entry");
        table.remove_container(&id);
        assert!(*rx.borrow());
    }

    #[tokio::test]
    async fn recovery_takes_in_what_it_does_not_hold_and_marks_the_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (table, known) = table_with_container(dir.path(), None);
        let config = ContainerConfig { name: "main".into(), ..ContainerConfig::default() };
        let persisted = |id: &str, state: ContainerState, pid: i32| {
            let id = ContainerId(id.into());
            let mut status = created_status(&id, &SandboxId("sb-1".into()), &config, None);
            status.state = state;
            table.save_container(&Record { status, pid: Some(pid) });
            id
        };
        let running = persisted("c-run-2", ContainerState::Running, 1);
        let dead = persisted("c-dead-3", ContainerState::Running, 2);
        let done = persisted("c-done-7", ContainerState::Exited, 4);
        let watched = Mutex::new(Vec::new());
        let alive = |r: &Record| {
            assert_ne!(r.pid, Some(4), "only a container persisted as running is asked");
            std::future::ready(r.pid == Some(1))
        };
        let lost = |r: &mut Record| r.status.message = Some("lost".into());
        let watch = |id: &ContainerId, r: &Record| watched.lock().expect("watched").push((id.clone(), r.pid));
        let mut found: Vec<ContainerId> =
            table.recover_containers(Known::Skipped, alive, lost, watch).await.into_iter().map(|st| st.id).collect();
        found.sort();
        assert_eq!(found, [dead.clone(), done.clone(), running.clone()], "the known one is not reported");
        assert_eq!(*watched.lock().expect("watched"), [(running.clone(), Some(1))]);
        let st = table.container_status(&dead).expect("taken in");
        assert_eq!(
            (st.state, st.exit_code, st.reason.as_deref(), st.message.as_deref()),
            (ContainerState::Exited, Some(137), Some("ContainerStatusUnknown"), Some("lost"))
        );
        let on_disk: Vec<(PathBuf, Record)> = table.store().load("containers");
        let dead_on_disk = on_disk.iter().find(|(_, r)| r.status.id == dead).expect("persisted");
        assert_eq!(dead_on_disk.1.status.state, ContainerState::Exited, "the lost one's file is rewritten");
        assert_eq!(table.container_status(&running).expect("taken in").state, ContainerState::Running);
        assert!(table.lock().next_seq() > 7, "recovered ids are not handed out again");
        // Again: everything is known now.
        let never = |_: &Record| -> std::future::Ready<bool> { unreachable!("nothing to take in") };
        let again = table.recover_containers(Known::Skipped, never, |_| {}, |_, _| {}).await;
        assert!(again.is_empty());
        let mut reported: Vec<ContainerId> =
            table.recover_containers(Known::Reported, never, |_| {}, |_, _| {}).await.into_iter().map(|st| st.id).collect();
        reported.sort();
        assert_eq!(reported, [known, dead, done, running]);
    }

    #[test]
    fn loading_skips_records_that_do_not_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (table, _) = table_with_container(dir.path(), None);
        std::fs::write(dir.path().join("containers/broken.json"), "{").expect("write");
        std::fs::write(dir.path().join("containers/notes.txt"), "{}").expect("write");
        let loaded: Vec<(PathBuf, Record)> = table.store().load("containers");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, dir.path().join("containers/c-1.json"));
        let mut records = table.lock();
        records.saw_id("c-main-0-41");
        assert_eq!(records.next_seq(), 42);
    }
}
