//! Scaling behaviour: the stabilisation windows (a scale-down takes the highest recommendation of
//! the window, a scale-up the lowest) and the rate policies (`Pods`/`Percent` per period, chosen
//! by `selectPolicy` `Max`, `Min` or `Disabled`), with Kubernetes' defaults: scale up at once by
//! up to 4 pods or 100% per 15 s, whichever is more; scale down after a 300 s window by up to 100%
//! per 15 s.

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The default scale-down stabilisation window (kube-controller-manager's
/// `--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DOWNSCALE_STABILIZATION_SECONDS: i32 = 300;

/// How `selectPolicy` picks among the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy that allows the biggest change.
    Max,
    /// The policy that allows the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// One rate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `true` for `Percent`, `false` for `Pods`.
    pub percent: bool,
    /// Pods or percent allowed per period.
    pub value: i32,
    /// The period in seconds.
    pub period_seconds: i32,
}

/// The rules of one direction, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Stabilisation window in seconds.
    pub window_seconds: i32,
    /// How the policies combine.
    pub select: Select,
    /// The rate policies.
    pub policies: Vec<Policy>,
}

fn rules(spec: Option<&HPAScalingRules>, window: i32, defaults: &[Policy]) -> Rules {
    let select = match spec.and_then(|s| s.select_policy.as_deref()) {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    };
    let policies: Vec<Policy> = spec
        .and_then(|s| s.policies.as_ref())
        .filter(|p| !p.is_empty())
        .map(|ps| ps.iter().map(|p| Policy { percent: p.type_ == "Percent", value: p.value, period_seconds: p.period_seconds }).collect())
        .unwrap_or_else(|| defaults.to_vec());
    Rules { window_seconds: spec.and_then(|s| s.stabilization_window_seconds).unwrap_or(window).max(0), select, policies }
}

/// Scale-up rules with Kubernetes' defaults (no window; 4 pods or 100% per 15 s, the larger).
pub fn scale_up(behavior: Option<&HorizontalPodAutoscalerBehavior>) -> Rules {
    let defaults = [Policy { percent: false, value: 4, period_seconds: 15 }, Policy { percent: true, value: 100, period_seconds: 15 }];
    rules(behavior.and_then(|b| b.scale_up.as_ref()), 0, &defaults)
}

/// Scale-down rules with Kubernetes' defaults (300 s window; 100% per 15 s).
pub fn scale_down(behavior: Option<&HorizontalPodAutoscalerBehavior>) -> Rules {
    let defaults = [Policy { percent: true, value: 100, period_seconds: 15 }];
    rules(behavior.and_then(|b| b.scale_down.as_ref()), DOWNSCALE_STABILIZATION_SECONDS, &defaults)
}

/// What one autoscaler remembers between syncs: its recent recommendations and scale changes.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Recommendations with when they were made.
    pub recommendations: Vec<(Timestamp, i32)>,
    /// Scale-ups: when and by how many replicas.
    pub ups: Vec<(Timestamp, i32)>,
    /// Scale-downs: when and by how many replicas.
    pub downs: Vec<(Timestamp, i32)>,
}

fn ago(now: Timestamp, seconds: i32) -> Timestamp {
    now.checked_sub(SignedDuration::from_secs(i64::from(seconds))).unwrap_or(now)
}

fn changed_within(events: &[(Timestamp, i32)], now: Timestamp, period_seconds: i32) -> i32 {
    let cutoff = ago(now, period_seconds);
    events.iter().filter(|(t, _)| *t > cutoff).map(|(_, n)| *n).sum()
}

impl History {
    /// A history that starts with the current count recommended now, so that a scale-down waits
    /// for a full window after the autoscaler is first seen (as kube-controller-manager does).
    pub fn starting_at(now: Timestamp, current: i32) -> Self {
        Self { recommendations: vec![(now, current)], ..Self::default() }
    }

    /// Records `proposal` and returns the stabilised recommendation: no lower than the lowest
    /// recommendation of the scale-up window, no higher than the highest of the scale-down window.
    pub fn stabilize(&mut self, now: Timestamp, current: i32, proposal: i32, up: &Rules, down: &Rules) -> i32 {
        let (up_cutoff, down_cutoff) = (ago(now, up.window_seconds), ago(now, down.window_seconds));
        let (mut up_rec, mut down_rec) = (proposal, proposal);
        for (t, r) in &self.recommendations {
            if *t > up_cutoff {
                up_rec = up_rec.min(*r);
            }
            if *t > down_cutoff {
                down_rec = down_rec.max(*r);
            }
        }
        let mut recommendation = current;
        if recommendation < up_rec {
            recommendation = up_rec;
        }
        if recommendation > down_rec {
            recommendation = down_rec;
        }
        let keep = ago(now, up.window_seconds.max(down.window_seconds));
        self.recommendations.retain(|(t, _)| *t > keep);
        self.recommendations.push((now, proposal));
        recommendation
    }

    /// Records a change of scale from `from` to `to`.
    pub fn record_scale(&mut self, now: Timestamp, from: i32, to: i32, up: &Rules, down: &Rules) {
        let longest = |r: &Rules| r.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0);
        let (up_keep, down_keep) = (ago(now, longest(up)), ago(now, longest(down)));
        self.ups.retain(|(t, _)| *t > up_keep);
        self.downs.retain(|(t, _)| *t > down_keep);
        if to > from {
            self.ups.push((now, to - from));
        } else if to < from {
            self.downs.push((now, from - to));
        }
    }
}

/// The bounded count and why: the `ScalingLimited` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The count to scale to.
    pub replicas: i32,
    /// `DesiredWithinRange`, `TooManyReplicas`, `TooFewReplicas`, `ScaleUpLimit`,
    /// `ScaleDownLimit`, `ScaleUpDisabled` or `ScaleDownDisabled`.
    pub reason: &'static str,
    /// The condition's message.
    pub message: &'static str,
}

fn scale_up_limit(current: i32, history: &History, now: Timestamp, rules: &Rules) -> i32 {
    let mut result = if rules.select == Select::Min { i32::MAX } else { i32::MIN };
    for p in &rules.policies {
        let start = current - changed_within(&history.ups, now, p.period_seconds);
        let proposed = if p.percent {
            #[allow(clippy::cast_possible_truncation)] // bounded by i32 inputs times a percentage
            let v = (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64;
            i32::try_from(v).unwrap_or(i32::MAX)
        } else {
            start.saturating_add(p.value)
        };
        result = if rules.select == Select::Min { result.min(proposed) } else { result.max(proposed) };
    }
    result
}

fn scale_down_limit(current: i32, history: &History, now: Timestamp, rules: &Rules) -> i32 {
    let mut result = if rules.select == Select::Min { i32::MIN } else { i32::MAX };
    for p in &rules.policies {
        let start = current + changed_within(&history.downs, now, p.period_seconds);
        let proposed = if p.percent {
            #[allow(clippy::cast_possible_truncation)] // bounded by i32 inputs times a percentage
            let v = (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i64;
            i32::try_from(v).unwrap_or(0)
        } else {
            start.saturating_sub(p.value)
        };
        result = if rules.select == Select::Min { result.max(proposed) } else { result.min(proposed) };
    }
    result
}

/// Bounds a stabilised recommendation by the rate policies and by min/maxReplicas.
#[allow(clippy::too_many_arguments)]
pub fn limit(desired: i32, current: i32, min: i32, max: i32, history: &History, now: Timestamp, up: &Rules, down: &Rules) -> Limited {
    if desired > current {
        if up.select == Select::Disabled {
            return Limited { replicas: current, reason: "ScaleUpDisabled", message: "scaling up is disabled by the scale-up policy" };
        }
        let rate = scale_up_limit(current, history, now, up).max(current);
        let (allowed, reason, message) = if max > rate {
            (rate, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if desired > allowed {
            return Limited { replicas: allowed, reason, message };
        }
    } else if desired < current {
        if down.select == Select::Disabled {
            return Limited {
                replicas: current,
                reason: "ScaleDownDisabled",
                message: "scaling down is disabled by the scale-down policy",
            };
        }
        let rate = scale_down_limit(current, history, now, down).min(current);
        let (allowed, reason, message) = if min < rate {
            (rate, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if desired < allowed {
            return Limited { replicas: allowed, reason, message };
        }
    }
    Limited { replicas: desired, reason: "DesiredWithinRange", message: "the desired count is within the acceptable range" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn defaults_scale_up_by_four_pods_or_double_per_period() {
        let (up, down) = (scale_up(None), scale_down(None));
        let h = History::default();
        assert_eq!(limit(100, 2, 1, 100, &h, t(0), &up, &down).replicas, 6);
        assert_eq!(limit(100, 10, 1, 100, &h, t(0), &up, &down).replicas, 20);
        let capped = limit(100, 10, 1, 15, &h, t(0), &up, &down);
        assert_eq!((capped.replicas, capped.reason), (15, "TooManyReplicas"));
        let floor = limit(0, 10, 3, 15, &h, t(0), &up, &down);
        assert_eq!((floor.replicas, floor.reason), (3, "TooFewReplicas"));
    }

    #[test]
    fn changes_within_a_period_use_up_the_allowance() {
        let behavior = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                policies: Some(vec![HPAScalingPolicy { type_: "Pods".into(), value: 2, period_seconds: 60 }]),
                ..HPAScalingRules::default()
            }),
            scale_down: None,
        };
        let (up, down) = (scale_up(Some(&behavior)), scale_down(Some(&behavior)));
        let mut h = History::default();
        let first = limit(10, 1, 1, 10, &h, t(0), &up, &down);
        assert_eq!((first.replicas, first.reason), (3, "ScaleUpLimit"));
        h.record_scale(t(0), 1, 3, &up, &down);
        assert_eq!(limit(10, 3, 1, 10, &h, t(30), &up, &down).replicas, 3, "the period's two pods are spent");
        assert_eq!(limit(10, 3, 1, 10, &h, t(61), &up, &down).replicas, 5);
    }

    #[test]
    fn select_policy_min_and_disabled() {
        let behavior = HorizontalPodAutoscalerBehavior {
            scale_up: None,
            scale_down: Some(HPAScalingRules {
                select_policy: Some("Min".into()),
                policies: Some(vec![
                    HPAScalingPolicy { type_: "Pods".into(), value: 1, period_seconds: 60 },
                    HPAScalingPolicy { type_: "Percent".into(), value: 50, period_seconds: 60 },
                ]),
                ..HPAScalingRules::default()
            }),
        };
        let (up, down) = (scale_up(Some(&behavior)), scale_down(Some(&behavior)));
        assert_eq!(down.window_seconds, 300);
        assert_eq!(limit(1, 10, 1, 10, &History::default(), t(0), &up, &down).replicas, 9, "Min picks the 1-pod step over 50%");
        let disabled = Rules { select: Select::Disabled, ..down };
        let l = limit(1, 10, 1, 10, &History::default(), t(0), &up, &disabled);
        assert_eq!((l.replicas, l.reason), (10, "ScaleDownDisabled"));
    }

    #[test]
    fn scale_down_takes_the_highest_recommendation_of_the_window() {
        let (up, down) = (scale_up(None), scale_down(None));
        let mut h = History::starting_at(t(0), 8);
        assert_eq!(h.stabilize(t(15), 8, 2, &up, &down), 8);
        assert_eq!(h.stabilize(t(200), 8, 3, &up, &down), 8);
        // Past the window of the initial 8 the highest is 3 (at 200 s).
        assert_eq!(h.stabilize(t(301), 8, 2, &up, &down), 3);
        assert_eq!(h.stabilize(t(501), 3, 2, &up, &down), 2);
        // A scale-up is not delayed.
        assert_eq!(h.stabilize(t(502), 2, 9, &up, &down), 9);
    }
}
