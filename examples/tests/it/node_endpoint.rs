//! The node endpoint and the API server's router, in one process over real TLS on loopback: logs
//! and usage reach a node through its published endpoint; a wrong token, a foreign certificate and
//! a silent node are refused with errors naming the node.

use async_trait::async_trait;
use bosun_core::k8s_openapi::api::core::v1::{
    Container, DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeStatus, Pod, PodSpec, Secret,
};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::k8s_openapi::jiff::Timestamp;
use bosun_core::{Api, Client, LogParams, LogStream, Patch, PatchParams, PostParams, Result};
use bosun_examples::node_endpoint::{Credentials, LocalNodeSet, NodeEndpoint, NodeRouter, SECRET_NAME, SECRET_NAMESPACE};
use bosun_store::ApiServer;
use bosun_store::api::metrics::{ContainerSample, MetricsSource, NodeSample, PodSample};
use bosun_store::http::NodeConnector;
use futures::StreamExt as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A node set standing in for node agents: `far-1` with one pod, fixed logs and usage; or, with
/// `serves` false, no node at all (the API server's process).
struct FarNodes {
    serves: bool,
}

#[async_trait]
impl NodeConnector for FarNodes {
    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let line = format!("{namespace}/{pod} tail={:?} follow={}\n", params.tail_lines, params.follow);
        Ok(futures::stream::iter([Ok(bytes::Bytes::from(line)), Ok(bytes::Bytes::from_static(b"done\n"))]).boxed())
    }
}

#[async_trait]
impl MetricsSource for FarNodes {
    async fn nodes(&self) -> Result<Vec<NodeSample>> {
        if !self.serves {
            return Ok(Vec::new());
        }
        let sample = NodeSample {
            name: "far-1".into(),
            timestamp: Timestamp::now(),
            window: Duration::from_secs(15),
            cpu_nanocores: 5_000_000,
            memory_bytes: 1 << 20,
        };
        // A node the cluster does not place here is not reported for it.
        Ok(vec![sample.clone(), NodeSample { name: "stray".into(), ..sample }])
    }

    async fn pods(&self, namespace: Option<&str>) -> Result<Vec<PodSample>> {
        if !self.serves {
            return Ok(Vec::new());
        }
        let pod = PodSample {
            namespace: "default".into(),
            name: "p".into(),
            timestamp: Timestamp::now(),
            window: Duration::from_secs(15),
            containers: vec![ContainerSample { name: "c".into(), cpu_nanocores: 1_000_000, memory_bytes: 4096 }],
        };
        Ok(vec![pod].into_iter().filter(|p| namespace.is_none_or(|ns| ns == p.namespace)).collect())
    }
}

impl LocalNodeSet for FarNodes {
    fn serves(&self, node: &str) -> bool {
        self.serves && node == "far-1"
    }
}

async fn publish(client: &Arc<dyn Client>, port: u16) {
    let status = NodeStatus {
        addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: "127.0.0.1".into() }]),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(port) }) }),
        ..NodeStatus::default()
    };
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    Api::<Node>::all(client.clone())
        .patch_status("far-1", &patch, &PatchParams::default())
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
}

async fn read_all(stream: Result<LogStream>) -> Result<String> {
    let mut stream = stream?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn the_router_reaches_a_node_endpoint_only_with_the_clusters_credentials() {
    let api = ApiServer::in_memory();
    let client: Arc<dyn Client> = api.clone();
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

    // The node process and the API server share the credentials through the Secret.
    let credentials = Credentials::load_or_create(&client).await.unwrap_or_else(|e| panic!("credentials: {e}"));
    let again = Credentials::load_or_create(&client).await.unwrap_or_else(|e| panic!("credentials: {e}"));
    assert_eq!(again.token(), credentials.token(), "the first credentials stay");
    let endpoint =
        NodeEndpoint::start(Some(SocketAddr::from(([127, 0, 0, 1], 0))), Arc::new(FarNodes { serves: true }), credentials.clone())
            .await
            .unwrap_or_else(|e| panic!("endpoint: {e}"));
    publish(&client, endpoint.addr().port()).await;
    let router = NodeRouter::new(client.clone(), Arc::new(FarNodes { serves: false }));

    let params = LogParams { tail_lines: Some(3), follow: true, ..LogParams::default() };
    assert_eq!(
        read_all(router.logs("default", "p", &params).await).await.ok().as_deref(),
        Some("default/p tail=Some(3) follow=true\ndone\n")
    );
    let nodes = MetricsSource::nodes(&router).await.unwrap_or_else(|e| panic!("nodes: {e}"));
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["far-1"]);
    assert_eq!(nodes.first().map(|n| n.cpu_nanocores), Some(5_000_000));
    let pods = router.pods(Some("default")).await.unwrap_or_else(|e| panic!("pods: {e}"));
    assert_eq!(pods.first().map(|p| (p.name.as_str(), p.containers.len())), Some(("p", 1)));
    assert!(router.pods(Some("other")).await.unwrap_or_else(|e| panic!("pods: {e}")).is_empty());

    // The same CA but another token: the node refuses the caller.
    let mut secret: Secret = credentials.to_secret();
    if let Some(data) = secret.data.as_mut() {
        data.insert("token".into(), bosun_core::k8s_openapi::ByteString(b"not-the-token".to_vec()));
    }
    let impostor = Credentials::from_secret(&secret).unwrap_or_else(|e| panic!("credentials: {e}"));
    let other = NodeEndpoint::start(Some(SocketAddr::from(([127, 0, 0, 1], 0))), Arc::new(FarNodes { serves: true }), impostor)
        .await
        .unwrap_or_else(|e| panic!("endpoint: {e}"));
    publish(&client, other.addr().port()).await;
    let refused = router.logs("default", "p", &LogParams::default()).await.err().unwrap_or_else(|| panic!("a wrong token is refused"));
    assert_eq!(refused.code(), 401, "{refused}");
    // Without usage from a node that refuses, metrics carry on without it.
    assert!(MetricsSource::nodes(&router).await.unwrap_or_else(|e| panic!("nodes: {e}")).is_empty());

    // A certificate from another CA: the router does not talk to that node.
    let stranger = Credentials::generate().unwrap_or_else(|e| panic!("credentials: {e}"));
    let foreign = NodeEndpoint::start(Some(SocketAddr::from(([127, 0, 0, 1], 0))), Arc::new(FarNodes { serves: true }), stranger)
        .await
        .unwrap_or_else(|e| panic!("endpoint: {e}"));
    publish(&client, foreign.addr().port()).await;
    let untrusted = router.logs("default", "p", &LogParams::default()).await.err().unwrap_or_else(|| panic!("a foreign node is refused"));
    assert_eq!(untrusted.code(), 503, "{untrusted}");
    assert!(untrusted.to_string().contains("\"far-1\"") && untrusted.to_string().contains("tls"), "{untrusted}");

    // A node whose endpoint is gone.
    let port = foreign.addr().port();
    foreign.shutdown().await;
    let gone = router.logs("default", "p", &LogParams::default()).await.err().unwrap_or_else(|| panic!("a silent node is an error"));
    assert_eq!(gone.code(), 503, "{gone}");
    assert!(gone.to_string().contains("\"far-1\"") && gone.to_string().contains(&format!("127.0.0.1:{port}")), "{gone}");

    // The credentials' Secret is where the processes find them.
    let stored = Api::<Secret>::namespaced(client, SECRET_NAMESPACE).get(SECRET_NAME).await.unwrap_or_else(|e| panic!("secret: {e}"));
    assert_eq!(Credentials::from_secret(&stored).map(|c| c.token().to_owned()).ok().as_deref(), Some(credentials.token()));
    endpoint.shutdown().await;
    other.shutdown().await;
}
