//! The replica calculator: how many replicas bring a resource metric (CPU or memory, as a
//! utilisation of the pods' requests or as an average value) back to its target.
//!
//! It follows kube-controller-manager's `ReplicaCalculator`: deleted and failed pods are ignored;
//! pending pods and (for CPU) pods that are not yet ready count as unready; pods without a metric
//! count as missing. Within the tolerance nothing changes. When pods are missing or unready, the
//! ratio is recomputed assuming missing pods use 100% of the target on a scale-down and 0% on a
//! scale-up, and unready pods 0% on a scale-up; a recomputed ratio that flips direction or falls
//! within the tolerance keeps the current count.

use std::collections::HashMap;

/// The tolerance within which a usage ratio counts as on target (kube-controller-manager's
/// `--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

/// How a pod takes part in the calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Counts with its metric (or as missing when it has none).
    Ready,
    /// Pending, or for CPU not yet ready: left out, or counted as idle on a scale-up.
    Unready,
    /// Being deleted or finished: left out.
    Ignored,
}

/// One pod of the target, as the calculator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInput {
    /// Pod name.
    pub name: String,
    /// How it takes part.
    pub readiness: Readiness,
    /// Its usage of the resource in milli-units (millicores, millibytes), if a metric was found.
    pub usage: Option<i64>,
    /// The sum of its containers' requests for the resource in milli-units; `None` when a
    /// container has no request (utilisation targets then fail).
    pub request: Option<i64>,
}

/// What the metric is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Average usage per pod, in milli-units.
    AverageValue(i64),
}

/// The calculator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// The replica count this metric asks for.
    pub replicas: i32,
    /// The current utilisation in percent of requests (utilisation targets only).
    pub utilization: Option<i32>,
    /// The current average usage per pod, in milli-units.
    pub average: i64,
}

/// The ratio of usage to target and the current utilisation (or average) it came from. As in
/// Kubernetes the utilisation is a whole percent and the average a whole milli-unit before the
/// ratio is taken.
fn ratio(metrics: &HashMap<&str, i64>, requests: &HashMap<&str, i64>, target: Target) -> Result<(f64, Option<i32>, i64), String> {
    let count = i64::try_from(metrics.len()).unwrap_or(i64::MAX).max(1);
    let total: i64 = metrics.values().sum();
    let average = total / count;
    match target {
        Target::Utilization(percent) => {
            let mut requested = 0i64;
            for name in metrics.keys() {
                requested += requests.get(name).copied().ok_or_else(|| format!("no request known for pod {name}"))?;
            }
            if requested <= 0 {
                return Err("the pods' requests add up to zero".into());
            }
            let utilization = i32::try_from(total.saturating_mul(100) / requested).unwrap_or(i32::MAX);
            Ok((f64::from(utilization) / f64::from(percent.max(1)), Some(utilization), average))
        }
        Target::AverageValue(value) => {
            #[allow(clippy::cast_precision_loss)] // milli-units well inside f64's exact range
            let r = average as f64 / value.max(1) as f64;
            Ok((r, None, average))
        }
    }
}

fn ceil_replicas(ratio: f64, count: usize) -> i32 {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)] // pod counts are small
    let r = (ratio * count as f64).ceil() as i64;
    i32::try_from(r).unwrap_or(i32::MAX)
}

/// The replica count that brings the metric to its target, from `current` (the target's
/// `spec.replicas`).
pub fn calculate(current: i32, pods: &[PodInput], target: Target, resource: &str, tolerance: f64) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let counted: Vec<&PodInput> = pods.iter().filter(|p| p.readiness != Readiness::Ignored).collect();
    let mut requests: HashMap<&str, i64> = HashMap::new();
    if let Target::Utilization(_) = target {
        for p in &counted {
            let request = p.request.filter(|r| *r > 0).ok_or_else(|| format!("missing request for {resource} in pod {}", p.name))?;
            requests.insert(&p.name, request);
        }
    }
    let mut metrics: HashMap<&str, i64> = HashMap::new();
    let mut missing: Vec<&str> = Vec::new();
    let mut unready: Vec<&str> = Vec::new();
    for p in &counted {
        match (p.readiness, p.usage) {
            (Readiness::Unready, _) => unready.push(&p.name),
            (_, Some(u)) => {
                metrics.insert(&p.name, u);
            }
            (_, None) => missing.push(&p.name),
        }
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let ready_count = metrics.len();
    let (usage_ratio, utilization, average) = ratio(&metrics, &requests, target)?;
    let proposal = |replicas| Proposal { replicas, utilization, average };
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= tolerance {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil_replicas(usage_ratio, ready_count)));
    }
    // Assume the worst for the direction of change: missing pods at the target on the way down,
    // idle on the way up; unready pods idle on the way up.
    for name in &missing {
        let assumed = if usage_ratio < 1.0 {
            match target {
                // 100% of the request, or the target when that is higher.
                Target::Utilization(percent) => requests.get(name).copied().unwrap_or(0) * i64::from(percent.max(100)) / 100,
                Target::AverageValue(v) => v,
            }
        } else {
            0
        };
        if usage_ratio != 1.0 {
            metrics.insert(name, assumed);
        }
    }
    if scale_up_with_unready {
        for name in &unready {
            metrics.insert(name, 0);
        }
    }
    let (new_ratio, _, _) = ratio(&metrics, &requests, target)?;
    if (1.0 - new_ratio).abs() <= tolerance || (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0) {
        return Ok(proposal(current));
    }
    let replicas = ceil_replicas(new_ratio, metrics.len());
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, usage: Option<i64>) -> PodInput {
        PodInput { name: name.into(), readiness: Readiness::Ready, usage, request: Some(100) }
    }

    #[test]
    fn high_utilisation_scales_by_the_usage_ratio() -> Result<(), String> {
        // 300% of request against a 50% target: ratio 6 over 2 pods.
        let pods = [pod("a", Some(300)), pod("b", Some(300))];
        let p = calculate(2, &pods, Target::Utilization(50), "cpu", TOLERANCE)?;
        assert_eq!(p, Proposal { replicas: 12, utilization: Some(300), average: 300 });
        Ok(())
    }

    #[test]
    fn a_ratio_within_the_tolerance_keeps_the_count() -> Result<(), String> {
        let pods = [pod("a", Some(53)), pod("b", Some(55))];
        assert_eq!(calculate(2, &pods, Target::Utilization(50), "cpu", TOLERANCE)?.replicas, 2);
        let pods = [pod("a", Some(60)), pod("b", Some(60))];
        assert_eq!(calculate(2, &pods, Target::Utilization(50), "cpu", TOLERANCE)?.replicas, 3);
        Ok(())
    }

    #[test]
    fn missing_pods_count_as_on_target_when_scaling_down() -> Result<(), String> {
        // Two pods at 10% would ask for 1 replica, but the third (no metric) is assumed at 100%
        // of its request: (10+10+100)/300 = 40% -> ceil(0.8 * 3) = 3: no change.
        let pods = [pod("a", Some(10)), pod("b", Some(10)), pod("c", None)];
        assert_eq!(calculate(3, &pods, Target::Utilization(50), "cpu", TOLERANCE)?.replicas, 3);
        Ok(())
    }

    #[test]
    fn unready_pods_count_as_idle_when_scaling_up() -> Result<(), String> {
        let mut pods = vec![pod("a", Some(200)), pod("b", Some(200))];
        pods.push(PodInput { readiness: Readiness::Unready, ..pod("c", Some(900)) });
        pods.push(PodInput { readiness: Readiness::Ignored, ..pod("d", Some(900)) });
        // (200+200+0)/300 = 133% of a 100% target -> ceil(1.33 * 3) = 4.
        assert_eq!(calculate(3, &pods, Target::Utilization(100), "cpu", TOLERANCE)?.replicas, 4);
        Ok(())
    }

    #[test]
    fn average_values_compare_per_pod_usage() -> Result<(), String> {
        let pods = [pod("a", Some(300_000)), pod("b", Some(100_000))];
        let p = calculate(2, &pods, Target::AverageValue(100_000), "memory", TOLERANCE)?;
        assert_eq!((p.replicas, p.utilization, p.average), (4, None, 200_000));
        Ok(())
    }

    #[test]
    fn no_metrics_or_no_requests_are_errors() -> Result<(), String> {
        assert!(calculate(2, &[pod("a", None)], Target::Utilization(50), "cpu", TOLERANCE).is_err());
        assert!(calculate(2, &[], Target::Utilization(50), "cpu", TOLERANCE).is_err());
        let no_request = PodInput { request: None, ..pod("a", Some(10)) };
        let err = calculate(2, std::slice::from_ref(&no_request), Target::Utilization(50), "cpu", TOLERANCE).err().unwrap_or_default();
        assert!(err.contains("missing request for cpu"), "{err}");
        assert!(calculate(2, &[no_request], Target::AverageValue(10), "cpu", TOLERANCE).is_ok());
        Ok(())
    }
}
