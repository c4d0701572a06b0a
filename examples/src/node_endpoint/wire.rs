//! What travels between the API server and a node endpoint: request paths and queries, usage
//! samples as JSON, errors as `Status` bodies.

use bosun_core::k8s_openapi::jiff::Timestamp;
use bosun_core::{Error, LogParams, Result};
use bosun_store::api::metrics::{ContainerSample, NodeSample, PodSample};
use bosun_store::http::ExecRequest;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space); a malformed escape is kept as it is.
pub(super) fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query string's pairs, decoded, in order.
pub(super) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn flag(pairs: &[(String, String)], key: &str) -> bool {
    first(pairs, key).is_some_and(|v| v == "true" || v == "1")
}

fn number(pairs: &[(String, String)], key: &str) -> Result<Option<u64>> {
    first(pairs, key)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().map_err(|_| Error::bad_request(format!("{key}={v:?} is not a number"))))
        .transpose()
}

fn push(query: &mut String, key: &str, value: &str) {
    query.push(if query.is_empty() { '?' } else { '&' });
    query.push_str(key);
    query.push('=');
    query.push_str(&encode(value));
}

/// `/containerLogs/{namespace}/{pod}?...`.
pub(super) fn logs_path(namespace: &str, pod: &str, params: &LogParams) -> String {
    let mut q = String::new();
    if let Some(c) = &params.container {
        push(&mut q, "container", c);
    }
    for (key, on) in [("follow", params.follow), ("timestamps", params.timestamps), ("previous", params.previous)] {
        if on {
            push(&mut q, key, "true");
        }
    }
    for (key, value) in [("tailLines", params.tail_lines), ("sinceSeconds", params.since_seconds), ("limitBytes", params.limit_bytes)] {
        if let Some(v) = value {
            push(&mut q, key, &v.to_string());
        }
    }
    format!("/containerLogs/{}/{}{q}", encode(namespace), encode(pod))
}

/// The log parameters of a `/containerLogs` query.
pub(super) fn log_params(pairs: &[(String, String)]) -> Result<LogParams> {
    Ok(LogParams {
        container: first(pairs, "container").filter(|c| !c.is_empty()).map(str::to_owned),
        follow: flag(pairs, "follow"),
        tail_lines: number(pairs, "tailLines")?,
        timestamps: flag(pairs, "timestamps"),
        previous: flag(pairs, "previous"),
        since_seconds: number(pairs, "sinceSeconds")?,
        limit_bytes: number(pairs, "limitBytes")?,
    })
}

/// `/exec/{namespace}/{pod}?...` or `/attach/...`.
pub(super) fn exec_path(request: &ExecRequest) -> String {
    let mut q = String::new();
    if let Some(c) = &request.container {
        push(&mut q, "container", c);
    }
    for arg in &request.command {
        push(&mut q, "command", arg);
    }
    for (key, on) in [("stdin", request.stdin), ("stdout", request.stdout), ("stderr", request.stderr), ("tty", request.tty)] {
        push(&mut q, key, if on { "true" } else { "false" });
    }
    push(&mut q, "protocol", &request.protocol);
    let verb = if request.attach { "attach" } else { "exec" };
    format!("/{verb}/{}/{}{q}", encode(&request.namespace), encode(&request.pod))
}

/// `/portForward/{namespace}/{pod}?port=N`: a raw byte stream to the pod's port after the upgrade.
pub(super) fn port_forward_path(namespace: &str, pod: &str, port: u16) -> String {
    let mut q = String::new();
    push(&mut q, "port", &port.to_string());
    format!("/portForward/{}/{}{q}", encode(namespace), encode(pod))
}

/// The port of a `/portForward` query: 1–65535, else 400.
pub(super) fn port_forward_port(pairs: &[(String, String)]) -> Result<u16> {
    match number(pairs, "port")? {
        Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| Error::bad_request(format!("port {p} is out of range"))),
        None => Err(Error::bad_request("port forwarding needs a port")),
    }
}

/// The exec request of an `/exec` or `/attach` query.
pub(super) fn exec_request(namespace: &str, pod: &str, attach: bool, pairs: &[(String, String)]) -> ExecRequest {
    ExecRequest {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: first(pairs, "container").filter(|c| !c.is_empty()).map(str::to_owned),
        command: pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect(),
        stdin: flag(pairs, "stdin"),
        stdout: flag(pairs, "stdout"),
        stderr: flag(pairs, "stderr"),
        tty: flag(pairs, "tty"),
        protocol: first(pairs, "protocol").unwrap_or_default().to_owned(),
        attach,
    }
}

/// `/usage`, for one namespace's pods or all of them.
pub(super) fn usage_path(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("/usage?namespace={}", encode(ns)),
        None => "/usage".to_owned(),
    }
}

/// The usage samples of a node endpoint's agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Usage {
    pub nodes: Vec<NodeUsage>,
    pub pods: Vec<PodUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NodeUsage {
    name: String,
    timestamp: String,
    window_millis: u64,
    cpu_nanocores: u64,
    memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PodUsage {
    namespace: String,
    name: String,
    timestamp: String,
    window_millis: u64,
    containers: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ContainerUsage {
    name: String,
    cpu_nanocores: u64,
    memory_bytes: u64,
}

fn millis(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

fn timestamp(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

impl From<&NodeSample> for NodeUsage {
    fn from(s: &NodeSample) -> Self {
        Self {
            name: s.name.clone(),
            timestamp: s.timestamp.to_string(),
            window_millis: millis(s.window),
            cpu_nanocores: s.cpu_nanocores,
            memory_bytes: s.memory_bytes,
        }
    }
}

impl From<&PodSample> for PodUsage {
    fn from(s: &PodSample) -> Self {
        Self {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            timestamp: s.timestamp.to_string(),
            window_millis: millis(s.window),
            containers: s
                .containers
                .iter()
                .map(|c| ContainerUsage { name: c.name.clone(), cpu_nanocores: c.cpu_nanocores, memory_bytes: c.memory_bytes })
                .collect(),
        }
    }
}

impl NodeUsage {
    /// The node's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The sample (`None` with an unreadable timestamp).
    pub(super) fn sample(&self) -> Option<NodeSample> {
        Some(NodeSample {
            name: self.name.clone(),
            timestamp: timestamp(&self.timestamp)?,
            window: Duration::from_millis(self.window_millis),
            cpu_nanocores: self.cpu_nanocores,
            memory_bytes: self.memory_bytes,
        })
    }
}

impl PodUsage {
    /// The sample (`None` with an unreadable timestamp).
    pub(super) fn sample(&self) -> Option<PodSample> {
        Some(PodSample {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            timestamp: timestamp(&self.timestamp)?,
            window: Duration::from_millis(self.window_millis),
            containers: self
                .containers
                .iter()
                .map(|c| ContainerSample { name: c.name.clone(), cpu_nanocores: c.cpu_nanocores, memory_bytes: c.memory_bytes })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forward_ports_cross_the_wire_and_bad_ones_are_refused() {
        let path = port_forward_path("default", "web-0", 8080);
        let (at, query) = path.split_once('?').unwrap_or_default();
        assert_eq!(at, "/portForward/default/web-0");
        assert_eq!(port_forward_port(&parse_query(Some(query))).ok(), Some(8080));
        for bad in ["port=0", "port=65536", "port=http", "", "port="] {
            assert_eq!(port_forward_port(&parse_query(Some(bad))).err().map(|e| e.code()), Some(400), "{bad}");
        }
    }

    #[test]
    fn exec_requests_cross_the_wire_unchanged() {
        let request = ExecRequest {
            namespace: "default".into(),
            pod: "shell".into(),
            container: Some("main".into()),
            command: vec!["sh".into(), "-c".into(), "echo 'a  b' $HOME & 100%+x=y".into(), String::new()],
            stdin: true,
            stdout: true,
            stderr: false,
            tty: false,
            protocol: "v5.channel.k8s.io".into(),
            attach: false,
        };
        let path = exec_path(&request);
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        assert_eq!(route, "/exec/default/shell");
        assert_eq!(exec_request("default", "shell", false, &parse_query(Some(query))), request);
    }

    #[test]
    fn log_parameters_cross_the_wire_unchanged() -> Result<()> {
        let params = LogParams {
            container: Some("c".into()),
            follow: true,
            tail_lines: Some(5),
            timestamps: true,
            previous: false,
            since_seconds: Some(60),
            limit_bytes: Some(1024),
        };
        let path = logs_path("ns", "p", &params);
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        assert_eq!(route, "/containerLogs/ns/p");
        assert_eq!(log_params(&parse_query(Some(query)))?, params);
        assert_eq!(log_params(&parse_query(None))?, LogParams::default());
        assert!(log_params(&parse_query(Some("tailLines=x"))).is_err());
        Ok(())
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%41"), "%zzA");
        assert_eq!(decode("a+b%20c"), "a b c");
    }

    #[test]
    fn usage_samples_round_trip() {
        let now = Timestamp::now();
        let node = NodeSample { name: "n".into(), timestamp: now, window: Duration::from_secs(15), cpu_nanocores: 7, memory_bytes: 9 };
        let pod = PodSample {
            namespace: "ns".into(),
            name: "p".into(),
            timestamp: now,
            window: Duration::from_secs(15),
            containers: vec![ContainerSample { name: "c".into(), cpu_nanocores: 1, memory_bytes: 2 }],
        };
        let usage = Usage { nodes: vec![NodeUsage::from(&node)], pods: vec![PodUsage::from(&pod)] };
        let json = serde_json::to_vec(&usage).unwrap_or_default();
        let back: Usage = serde_json::from_slice(&json).unwrap_or_default();
        assert_eq!(back.nodes.first().and_then(NodeUsage::sample), Some(node));
        assert_eq!(back.pods.first().and_then(PodUsage::sample), Some(pod));
    }
}
