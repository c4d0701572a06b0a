//! Service allocations on write: cluster IPs and node ports from the server's allocators.

use super::ApiServer;
use bosun_core::{DynamicObject, Error, FieldError, Result};
use serde_json::{Value, json};

fn spec_mut(obj: &mut DynamicObject) -> Option<&mut serde_json::Map<String, Value>> {
    obj.data.get_mut("spec").and_then(Value::as_object_mut)
}

impl ApiServer {
    /// Allocates what a service needs and is missing: a cluster IP (unless headless or
    /// ExternalName) and node ports (NodePort and LoadBalancer). Returns the new allocations as
    /// `(is_ip, value)` so that a failed write can release them.
    pub(crate) async fn allocate_service(&self, obj: &mut DynamicObject, old: Option<&DynamicObject>) -> Result<Vec<(bool, String)>> {
        let owner = format!("{}/{}", obj.metadata.namespace.as_deref().unwrap_or(""), obj.metadata.name.as_deref().unwrap_or(""));
        let name = obj.metadata.name.clone().unwrap_or_default();
        let mut allocated = Vec::new();
        let result = self.allocate_into(obj, old, &owner, &mut allocated).await;
        if let Err(e) = result {
            self.release(&allocated).await;
            return Err(match e {
                Error::Invalid(_) => {
                    let causes: Vec<FieldError> = e
                        .causes()
                        .iter()
                        .map(|c| FieldError {
                            reason: c.reason.clone().unwrap_or_default(),
                            field: c.field.clone().unwrap_or_default(),
                            message: c.message.clone().unwrap_or_default(),
                        })
                        .collect();
                    Error::invalid("", "Service", &name, causes)
                }
                other => other,
            });
        }
        Ok(allocated)
    }

    async fn allocate_into(
        &self,
        obj: &mut DynamicObject,
        old: Option<&DynamicObject>,
        owner: &str,
        allocated: &mut Vec<(bool, String)>,
    ) -> Result<()> {
        let Some(spec) = spec_mut(obj) else { return Ok(()) };
        let kind = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
        let old_ip = old.and_then(|o| o.path_str("spec.clusterIP")).map(|s| s.into_owned()).filter(|s| !s.is_empty());
        if kind == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        } else {
            let ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").to_owned();
            let assigned = if ip == "None" {
                "None".to_owned()
            } else if !ip.is_empty() && old_ip.as_deref() == Some(ip.as_str()) {
                ip
            } else {
                let want = if ip.is_empty() {
                    None
                } else {
                    Some(self.ips.parse(&ip).ok_or_else(|| {
                        Error::invalid(
                            "",
                            "Service",
                            owner,
                            vec![FieldError::invalid("spec.clusterIPs[0]", &ip, "must be a valid IP address")],
                        )
                    })?)
                };
                let got = self.ips.allocate(&self.storage, want, owner, "spec.clusterIPs[0]").await?;
                allocated.push((true, got.clone()));
                got
            };
            spec.insert("clusterIP".into(), json!(assigned));
            spec.insert("clusterIPs".into(), json!([assigned]));
            spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
            spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
        }
        let old_ports: Vec<i64> = old
            .and_then(|o| o.data.get("spec"))
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        let wants_ports = kind == "NodePort"
            || (kind == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false));
        let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else { return Ok(()) };
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(port) = p.as_object_mut() else { continue };
            let current = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if !wants_ports {
                if current == 0 {
                    port.remove("nodePort");
                }
                continue;
            }
            if current != 0 && old_ports.contains(&current) {
                continue;
            }
            let want = if current == 0 { None } else { Some(u32::try_from(current).unwrap_or(u32::MAX)) };
            let got = self.ports.allocate(&self.storage, want, owner, &format!("spec.ports[{i}].nodePort")).await?;
            allocated.push((false, got.clone()));
            port.insert("nodePort".into(), json!(got.parse::<i64>().unwrap_or(0)));
        }
        Ok(())
    }

    /// Checks a dry-run service's requested values against the ranges, allocating nothing.
    pub(crate) fn check_service_dry_run(&self, obj: &DynamicObject) -> Result<()> {
        let ip = obj.path_str("spec.clusterIP").map(|s| s.into_owned()).unwrap_or_default();
        if !ip.is_empty() && ip != "None" && !self.ips.parse(&ip).is_some_and(|v| self.ips.contains(v)) {
            return Err(Error::invalid(
                "",
                "Service",
                obj.metadata.name.as_deref().unwrap_or(""),
                vec![FieldError::invalid("spec.clusterIPs[0]", ip, "provided IP is not in the valid range")],
            ));
        }
        Ok(())
    }

    /// Releases allocations `(is_ip, value)`.
    pub(crate) async fn release(&self, values: &[(bool, String)]) {
        for (is_ip, v) in values {
            if *is_ip {
                self.ips.release(&self.storage, v).await;
            } else {
                self.ports.release(&self.storage, v).await;
            }
        }
    }
}
