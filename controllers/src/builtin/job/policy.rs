//! How a failed pod counts: the Job's `podFailurePolicy` rules (on container exit codes and pod
//! conditions, first match wins) and the exponential delay before a failed pod is replaced.

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use std::time::Duration;

/// The delay before the first replacement of a failed pod; it doubles with each further failure.
pub const POD_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay before replacing a failed pod (the six minutes the Job documentation gives).
pub const POD_BACKOFF_MAX: Duration = Duration::from_secs(6 * 60);

/// What a matching `podFailurePolicy` rule does with a failed pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// Fail the whole Job at once (reason `PodFailurePolicy`).
    FailJob,
    /// Do not count the failure toward `backoffLimit`; replace the pod.
    Ignore,
    /// Count the failure as usual.
    Count,
    /// Fail the pod's completion index without further retries (needs `backoffLimitPerIndex`).
    FailIndex,
}

/// The rule that matched a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMatch {
    /// What to do.
    pub action: FailureAction,
    /// The condition message Kubernetes uses for `FailJob` (`Container main for pod ns/p failed
    /// with exit code 42 matching FailJob rule at index 0`).
    pub message: String,
}

/// The delay before replacing a pod after `failures` consecutive failures: 10 s, 20 s, 40 s...
/// up to [`POD_BACKOFF_MAX`]; none without failures.
pub fn pod_backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    POD_BACKOFF_BASE.checked_mul(factor).map_or(POD_BACKOFF_MAX, |d| d.min(POD_BACKOFF_MAX))
}

/// The first rule of `policy` that matches the failed `pod`, if any (then the failure counts).
pub fn match_policy(policy: &PodFailurePolicy, pod: &Pod) -> Option<PolicyMatch> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let action = match rule.action.as_str() {
            "FailJob" => FailureAction::FailJob,
            "Ignore" => FailureAction::Ignore,
            "Count" => FailureAction::Count,
            "FailIndex" => FailureAction::FailIndex,
            // An action this controller does not know: the rule is skipped, as Kubernetes does.
            _ => continue,
        };
        let message = if let Some(req) = &rule.on_exit_codes {
            let Some(container) = match_exit_codes(pod, req) else { continue };
            let code = container.state.as_ref().and_then(|s| s.terminated.as_ref()).map_or(0, |t| t.exit_code);
            format!(
                "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                container.name, rule.action
            )
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let Some(cond) = match_conditions(pod, patterns) else { continue };
            format!("Pod {ns}/{name} has condition {} matching {} rule at index {index}", cond.type_, rule.action)
        } else {
            continue;
        };
        return Some(PolicyMatch { action, message });
    }
    None
}

/// The first terminated container (regular ones, then init ones) with a non-zero exit code the
/// requirement matches.
fn match_exit_codes<'a>(pod: &'a Pod, req: &PodFailurePolicyOnExitCodesRequirement) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let all = status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten());
    all.filter(|c| req.container_name.as_deref().is_none_or(|n| n == c.name)).find(|c| {
        let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code) else { return false };
        code != 0
            && match req.operator.as_str() {
                "In" => req.values.contains(&code),
                "NotIn" => !req.values.contains(&code),
                _ => false,
            }
    })
}

/// The first pod condition a pattern matches (type, and status defaulting to `True`).
fn match_conditions<'a>(pod: &'a Pod, patterns: &[PodFailurePolicyOnPodConditionsPattern]) -> Option<&'a PodCondition> {
    let conditions = pod.status.as_ref()?.conditions.as_deref()?;
    patterns.iter().find_map(|p| {
        let want = p.status.as_deref().unwrap_or("True");
        conditions.iter().find(|c| c.type_ == p.type_ && c.status == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::PodFailurePolicyRule;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, PodStatus};

    #[test]
    fn backoff_doubles_from_ten_seconds_until_six_minutes() {
        let secs: Vec<u64> = (0..8).map(|n| pod_backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 10, 20, 40, 80, 160, 320, 360]);
        assert_eq!(pod_backoff(100), POD_BACKOFF_MAX);
    }

    fn failed_pod(exit: i32, condition: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.name = Some("p".into());
        pod.status = Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated { exit_code: exit, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            conditions: condition.map(|c| vec![PodCondition { type_: c.into(), status: "True".into(), ..Default::default() }]),
            ..Default::default()
        });
        pod
    }

    fn policy() -> PodFailurePolicy {
        PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("main".into()),
                        operator: "In".into(),
                        values: vec![42],
                    }),
                    on_pod_conditions: None,
                },
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: None,
                    }]),
                },
            ],
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let m = match_policy(&policy(), &failed_pod(42, Some("DisruptionTarget")));
        assert_eq!(
            m,
            Some(PolicyMatch {
                action: FailureAction::FailJob,
                message: "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into(),
            })
        );
        let m = match_policy(&policy(), &failed_pod(1, Some("DisruptionTarget")));
        assert_eq!(m.map(|m| m.action), Some(FailureAction::Ignore));
        assert_eq!(match_policy(&policy(), &failed_pod(1, None)), None);
    }

    #[test]
    fn exit_code_zero_never_matches_not_in() {
        let mut p = policy();
        if let Some(req) = p.rules[0].on_exit_codes.as_mut() {
            req.operator = "NotIn".into();
            req.values = vec![1];
        }
        assert_eq!(match_policy(&p, &failed_pod(0, None)), None);
        assert_eq!(match_policy(&p, &failed_pod(1, None)), None);
        assert_eq!(match_policy(&p, &failed_pod(3, None)).map(|m| m.action), Some(FailureAction::FailJob));
    }
}
