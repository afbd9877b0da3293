//! Pieces shared by both resources: references, durations and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// CEL expression: a Go-style duration (`30s`, `5m`, `1h30m`), the shape `parse_duration`
/// reads. A macro, so rules can be built from it with `concat!`.
macro_rules! duration_shape {
    () => {
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')"
    };
}
pub(crate) use duration_shape;

/// CEL rule: a duration of any length, zero included.
pub(crate) const DURATION: &str = duration_shape!();
/// CEL rule: a duration greater than zero.
pub(crate) const POSITIVE_DURATION: &str = concat!(duration_shape!(), " && duration(self) > duration('0s')");
/// CEL rule: a DNS-1123 label, the shape of a Kubernetes object or check name.
pub(crate) const DNS_LABEL: &str = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
/// CEL rule: a DNS-1123 subdomain, the shape of a ConfigMap name.
pub(crate) const DNS_SUBDOMAIN: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";

/// Parses the Go durations the CRDs accept (`30s`, `5m`, `1h30m`, `250ms`).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        total += value * unit;
        rest = &rest[len..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

/// A key of a ConfigMap in the same namespace as the referring object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap, in the namespace of this object.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(DNS_SUBDOMAIN).message("must be a ConfigMap name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
    /// Key inside the ConfigMap's `data` that holds the file.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("must be a ConfigMap key: letters, digits, '-', '_' and '.' only"))]
    pub key: String,
}

/// Where a file comes from. Only ConfigMaps for now: trust roots and CA bundles are
/// public material, so they need no Secret (and the operator needs no Secret access).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// The ConfigMap key holding the file.
    pub config_map_ref: ConfigMapKeyRef,
}

/// Builds a condition in the shape the Kubernetes API conventions ask for.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(now),
    }
}

/// Replaces the condition of the same type, keeping its `lastTransitionTime` when the
/// status did not change, so `kubectl describe` tells when something really changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let mut conds = vec![condition("Ready", true, "A", "a", Some(1), t0)];

        set_condition(&mut conds, condition("Ready", true, "B", "b", Some(2), t1));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time.0, t0);
        assert_eq!(conds[0].reason, "B");
        assert_eq!(conds[0].observed_generation, Some(2));

        set_condition(&mut conds, condition("Ready", false, "C", "c", Some(3), t1));
        assert_eq!(conds[0].last_transition_time.0, t1);
        assert_eq!(conds[0].status, "False");

        set_condition(&mut conds, condition("Other", true, "D", "d", Some(3), t1));
        assert_eq!(conds.len(), 2);
    }
}
