//! The Kubernetes REST API over HTTP: discovery, CRUD, watch, patch, subresources, Table output,
//! OpenAPI and health endpoints, in front of any [`bosun_core::Client`]; field validation
//! (unknown and repeated fields) and the `Warning` headers kube-apiserver sends; the access and
//! identity reviews behind `kubectl auth can-i` and `kubectl auth whoami`; the streaming
//! subresources through a [`NodeConnector`]: `pods/log`, `pods/exec` and `pods/attach`
//! ([`channel`]), `pods/portforward` ([`portforward`] over [`spdy`]).
//!
//! Start with [`serve`]: it binds a plain HTTP listener (HTTP/1.1, or HTTP/2 with prior
//! knowledge) and optionally an HTTPS one with a self-signed certificate (HTTP/2 or HTTP/1.1 by
//! ALPN; the upgrades of exec and port-forward take HTTP/1.1), and returns a [`Server`] handle
//! with the bound addresses.
//! [`Server::write_kubeconfig`] writes a kubeconfig that points `kubectl` at it.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bosun_store::ApiServer;
//! use bosun_store::http::{HttpConfig, serve};
//!
//! let api = ApiServer::in_memory();
//! // The API server is also the catalog (custom resources show up in discovery) and the list encoder.
//! let config = HttpConfig::for_api_server(&api).https(([127, 0, 0, 1], 6443).into());
//! let server = serve(api, config).await?;
//! server.write_kubeconfig("/tmp/bosun.kubeconfig")?;
//! println!("kubectl --kubeconfig /tmp/bosun.kubeconfig get ns  # {}", server.url());
//! # Ok(()) }
//! ```

mod body;
mod catalog;
pub mod channel;
mod discovery;
mod lists;
mod metrics;
mod node;
mod openapi;
pub mod portforward;
mod rest;
mod review;
mod router;
mod server;
pub mod spdy;
mod strict;
mod table;
mod tls;
mod validation;
mod warnings;
mod watch;

pub use catalog::{FnCatalog, ResourceCatalog, StaticCatalog};
pub use channel::{ChannelSession, ExecProcess, run_exec, serve_exec};
pub use lists::EncodedLists;
pub use node::{ExecIo, ExecRequest, NoNodes, NodeConnector};
pub use portforward::{PortForwardError, Transport, serve_port_forward};
pub use server::{HttpConfig, Server, serve};
pub use table::{Column, TableRow, table_columns, table_row};
pub use tls::{SelfSignedCert, kubeconfig_yaml};

/// Starting or running the HTTP server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("bind {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The self-signed certificate could not be made or loaded.
    #[error("tls setup: {0}")]
    Tls(String),
    /// The kubeconfig could not be written.
    #[error("write kubeconfig {path}")]
    Kubeconfig {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
