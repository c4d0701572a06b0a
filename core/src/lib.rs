//! bosun-core: the object model, the [`Client`] trait every bosun component talks through, and the
//! watch machinery they share.
//!
//! Start with [`Client`] (the object-safe API) and [`Api`] (its typed facade over `k8s-openapi`
//! kinds and [`DynamicObject`]); then [`watch::Informers`] for cached, indexed views of a kind.
//! Errors are one enum, [`Error`], whose variants are Kubernetes `Status` reasons.

pub mod api;
pub mod client;
pub mod error;
#[cfg(feature = "kube")]
pub mod kube_client;
pub mod layer;
pub mod meta;
pub mod object;
pub mod quantity;
pub mod resource;
pub mod selector;
pub mod watch;

pub use api::Api;
pub use client::{
    Bookmark, Client, DeleteParams, Deleted, FieldValidation, ListParams, LogParams, LogStream, Patch, PatchParams, PostParams,
    Preconditions, PropagationPolicy, Target, VersionMatch, WatchEvent, WatchParams, WatchStream,
};
pub use error::{Error, ErrorBody, FieldError, Result};
pub use meta::ObjectKey;
pub use object::{DynamicObject, Object, ObjectList, TypeMeta, TypedObject};
pub use quantity::Quantity;
pub use resource::ApiResource;
pub use selector::{FieldSelector, LabelSelector};

/// The `k8s-openapi` crate bosun is built on (API version `v1_37`), re-exported so that users share its types.
pub use k8s_openapi;
