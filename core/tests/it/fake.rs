//! A scripted in-test `Client`: each list and watch call takes the next scripted answer and is recorded.

use async_trait::async_trait;
use bosun_core::client::{Deleted, LogStream};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use bosun_core::{
    Client, DeleteParams, DynamicObject, Error, ListParams, ObjectList, Patch, PatchParams, PostParams, Result, Target, TypeMeta,
    WatchEvent, WatchParams, WatchStream,
};
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::time::Instant;

/// What a scripted watch does.
pub enum WatchScript {
    /// Fail to start.
    Fail(Error),
    /// Deliver these events, then end the stream (a dropped connection or server timeout).
    Events(Vec<Result<WatchEvent<DynamicObject>>>),
    /// Deliver these events, then stay open forever.
    EventsThenHang(Vec<Result<WatchEvent<DynamicObject>>>),
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    List { continue_token: Option<String> },
    Watch { resource_version: Option<String> },
}

#[derive(Default)]
pub struct FakeClient {
    lists: Mutex<VecDeque<Result<ObjectList<DynamicObject>>>>,
    watches: Mutex<VecDeque<WatchScript>>,
    calls: Mutex<Vec<(Instant, Call)>>,
}

pub fn pod(name: &str, rv: &str) -> DynamicObject {
    let mut p =
        DynamicObject::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}}))
            .unwrap_or_default();
    p.metadata.resource_version = Some(rv.to_owned());
    p
}

pub fn page(rv: &str, items: Vec<DynamicObject>, continue_token: Option<&str>) -> ObjectList<DynamicObject> {
    ObjectList {
        types: TypeMeta { api_version: "v1".into(), kind: "PodList".into() },
        metadata: ListMeta { resource_version: Some(rv.into()), continue_: continue_token.map(str::to_owned), ..ListMeta::default() },
        items,
    }
}

impl FakeClient {
    pub fn list_answer(&self, answer: Result<ObjectList<DynamicObject>>) -> &Self {
        self.lists.lock().unwrap_or_else(|e| e.into_inner()).push_back(answer);
        self
    }

    pub fn watch_answer(&self, script: WatchScript) -> &Self {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).push_back(script);
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, c)| c.clone()).collect()
    }

    pub fn call_times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(t, _)| *t).collect()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), call));
    }
}

#[async_trait]
impl Client for FakeClient {
    async fn get(&self, _: Target<'_>, _: &str) -> Result<DynamicObject> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn list(&self, _: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        self.record(Call::List { continue_token: params.continue_token.clone() });
        let next = self.lists.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        match next {
            Some(answer) => answer,
            None => futures::future::pending().await,
        }
    }

    async fn create(&self, _: Target<'_>, _: &DynamicObject, _: &PostParams) -> Result<DynamicObject> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn update(&self, _: Target<'_>, _: &DynamicObject, _: &PostParams) -> Result<DynamicObject> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn patch(&self, _: Target<'_>, _: &str, _: &Patch, _: &PatchParams) -> Result<DynamicObject> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn delete(&self, _: Target<'_>, _: &str, _: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn delete_collection(&self, _: Target<'_>, _: &ListParams, _: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn watch(&self, _: Target<'_>, params: &WatchParams) -> Result<WatchStream> {
        self.record(Call::Watch { resource_version: params.resource_version.clone() });
        let next = self.watches.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        match next {
            Some(WatchScript::Fail(e)) => Err(e),
            Some(WatchScript::Events(events)) => Ok(futures::stream::iter(events).boxed()),
            Some(WatchScript::EventsThenHang(events)) => Ok(futures::stream::iter(events).chain(futures::stream::pending()).boxed()),
            None => futures::future::pending().await,
        }
    }

    async fn get_subresource(&self, _: Target<'_>, _: &str, _: &str) -> Result<DynamicObject> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn update_subresource(&self, _: Target<'_>, _: &str, _: &str, _: &DynamicObject, _: &PostParams) -> Result<DynamicObject> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn patch_subresource(&self, _: Target<'_>, _: &str, _: &str, _: &Patch, _: &PatchParams) -> Result<DynamicObject> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn create_subresource(
        &self,
        _: Target<'_>,
        _: &str,
        _: &str,
        _: &serde_json::Value,
        _: &PostParams,
    ) -> Result<serde_json::Value> {
        Err(Error::method_not_allowed("fake"))
    }

    async fn logs(&self, _: &str, _: &str, _: &bosun_core::LogParams) -> Result<LogStream> {
        Err(Error::method_not_allowed("fake"))
    }
}
