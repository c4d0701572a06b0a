//! The router re-reads the shared credentials when a node refuses the ones it holds, over real
//! TLS on loopback.

use super::{Credentials, LocalNodeSet, NodeEndpoint, NodeRouter, SECRET_NAME, SECRET_NAMESPACE};
use async_trait::async_trait;
use bosun_core::k8s_openapi::ByteString;
use bosun_core::k8s_openapi::api::core::v1::{
    Container, DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeStatus, Pod, PodSpec, Secret,
};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::{Api, Client, DeleteParams, LogParams, LogStream, Patch, PatchParams, PostParams, Result};
use bosun_store::ApiServer;
use bosun_store::api::metrics::{MetricsSource, NodeSample, PodSample};
use bosun_store::http::NodeConnector;
use futures::StreamExt as _;
use std::net::SocketAddr;
use std::sync::Arc;

/// `far-1`, answering every log request with the node's name for it.
struct FarNode {
    serves: bool,
    answer: &'static str,
}

#[async_trait]
impl NodeConnector for FarNode {
    async fn logs(&self, _namespace: &str, _pod: &str, _params: &LogParams) -> Result<LogStream> {
        Ok(futures::stream::iter([Ok(bytes::Bytes::from_static(self.answer.as_bytes()))]).boxed())
    }
}

#[async_trait]
impl MetricsSource for FarNode {
    async fn nodes(&self) -> Result<Vec<NodeSample>> {
        Ok(Vec::new())
    }

    async fn pods(&self, _namespace: Option<&str>) -> Result<Vec<PodSample>> {
        Ok(Vec::new())
    }
}

impl LocalNodeSet for FarNode {
    fn serves(&self, node: &str) -> bool {
        self.serves && node == "far-1"
    }
}

async fn cluster() -> Arc<dyn Client> {
    let client: Arc<dyn Client> = ApiServer::in_memory();
    let node = Node { metadata: ObjectMeta { name: Some("far-1".into()), ..ObjectMeta::default() }, ..Node::default() };
    Api::<Node>::all(client.clone()).create(&node, &PostParams::default()).await.unwrap_or_else(|e| panic!("node: {e}"));
    let pod = Pod {
        metadata: ObjectMeta { name: Some("p".into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(PodSpec {
            node_name: Some("far-1".into()),
            containers: vec![Container { name: "c".into(), image: Some("busybox".into()), ..Container::default() }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    Api::<Pod>::namespaced(client.clone(), "default").create(&pod, &PostParams::default()).await.unwrap_or_else(|e| panic!("pod: {e}"));
    client
}

/// Starts an endpoint for `far-1` with `credentials` and publishes it in the Node.
async fn serve(client: &Arc<dyn Client>, credentials: Credentials, answer: &'static str) -> NodeEndpoint {
    let endpoint =
        NodeEndpoint::start(Some(SocketAddr::from(([127, 0, 0, 1], 0))), Arc::new(FarNode { serves: true, answer }), credentials)
            .await
            .unwrap_or_else(|e| panic!("endpoint: {e}"));
    let status = NodeStatus {
        addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: "127.0.0.1".into() }]),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(endpoint.addr().port()) }) }),
        ..NodeStatus::default()
    };
    Api::<Node>::all(client.clone())
        .patch_status("far-1", &Patch::Merge(serde_json::json!({ "status": status })), &PatchParams::default())
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    endpoint
}

/// Replaces the credentials' Secret, as an operator rotating them would.
async fn store(client: &Arc<dyn Client>, credentials: &Credentials) {
    let secrets = Api::<Secret>::namespaced(client.clone(), SECRET_NAMESPACE);
    secrets.delete(SECRET_NAME, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("delete the secret: {e}"));
    secrets.create(&credentials.to_secret(), &PostParams::default()).await.unwrap_or_else(|e| panic!("store the secret: {e}"));
}

fn with_token(credentials: &Credentials, token: &str) -> Credentials {
    let mut secret = credentials.to_secret();
    if let Some(data) = secret.data.as_mut() {
        data.insert("token".into(), ByteString(token.as_bytes().to_vec()));
    }
    Credentials::from_secret(&secret).unwrap_or_else(|e| panic!("credentials: {e}"))
}

async fn logs(router: &NodeRouter) -> Result<String> {
    let mut stream = router.logs("default", "p", &LogParams::default()).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn the_router_rereads_rotated_credentials_when_a_node_refuses_its_own() {
    let client = cluster().await;
    let first = Credentials::load_or_create(&client).await.unwrap_or_else(|e| panic!("credentials: {e}"));
    let one = serve(&client, first.clone(), "one").await;
    let router = NodeRouter::new(client.clone(), Arc::new(FarNode { serves: false, answer: "" }));
    assert_eq!(logs(&router).await.ok().as_deref(), Some("one"), "the router loads the credentials on first use");
    one.shutdown().await;

    // A new token (same CA) in the Secret, and a node process that started with it: the node
    // answers 401 to the token the router holds, the router re-reads the Secret and retries.
    let second = with_token(&first, "rotated-token");
    store(&client, &second).await;
    let two = serve(&client, second.clone(), "two").await;
    assert_eq!(logs(&router).await.map_err(|e| e.to_string()).as_deref(), Ok("two"), "a 401 makes the router re-read the token");
    assert_eq!(logs(&router).await.ok().as_deref(), Some("two"), "and keep the new one");
    two.shutdown().await;

    // A new CA too: the node's certificate fails the handshake, which also sends the router back
    // to the Secret.
    let third = Credentials::generate().unwrap_or_else(|e| panic!("credentials: {e}"));
    store(&client, &third).await;
    let three = serve(&client, third.clone(), "three").await;
    assert_eq!(logs(&router).await.map_err(|e| e.to_string()).as_deref(), Ok("three"), "a foreign certificate makes it re-read the CA");
    three.shutdown().await;

    // A node holding credentials the Secret does not: the re-read changes nothing, the 401 stands.
    let impostor = serve(&client, with_token(&third, "not-in-the-secret"), "four").await;
    let refused = logs(&router).await.err().unwrap_or_else(|| panic!("a node with other credentials is refused"));
    assert_eq!(refused.code(), 401, "{refused}");
    impostor.shutdown().await;
}
