//! Pieces shared by both resources: references, durations and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// CEL expression: a Go-style duration (`30s`, `5m`, `1h30m`), the shape `parse_duration`
/// reads: at most four parts of at most five digits each, so that `duration(self)` can
/// never overflow in the API server and a later rule can say what bound was crossed. A
/// macro, so rules can be built from it with `concat!`.
macro_rules! duration_shape {
    () => {
        "self.matches('^([0-9]{1,5}(\\\\.[0-9]{1,9})?(ms|s|m|h)){1,4}$')"
    };
}
pub(crate) use duration_shape;

/// A CEL rule: a duration between two bounds (Go duration literals), inclusive.
macro_rules! duration_between {
    ($min:literal, $max:literal) => {
        concat!(
            "!",
            $crate::api::common::duration_shape!(),
            " || (duration(self) >= duration('",
            $min,
            "') && duration(self) <= duration('",
            $max,
            "'))"
        )
    };
}
pub(crate) use duration_between;

/// CEL rule: a duration of any length, zero included.
pub(crate) const DURATION: &str = duration_shape!();
/// CEL rule: a URL without `user:password@` (credentials would end up in logs and status).
pub(crate) const NO_CREDENTIALS: &str = "!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')";
/// CEL rule: a DNS-1123 label, the shape of a Kubernetes object or check name.
pub(crate) const DNS_LABEL: &str = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
/// CEL rule: a DNS-1123 subdomain, the shape of a ConfigMap name.
pub(crate) const DNS_SUBDOMAIN: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";

/// A Go-style duration as a spec writes it (`30s`, `5m`, `1h30m`): parsed once, when
/// the object is read, and kept as written, so it goes back to the API server unchanged.
/// A string that does not parse (an object stored before a rule existed) is not an
/// error here: the field's `DurationBounds` give it their default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    parsed: Option<Duration>,
}

impl GoDuration {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let parsed = parse_duration(&text);
        Self { text, parsed }
    }

    /// As written in the spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<&str> for GoDuration {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for GoDuration {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.text)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// In the CRD: a string (the field's CEL rules give its shape and bounds).
impl schemars::JsonSchema for GoDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        String::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// Bounds of a duration field: its default, and what the API server enforces (CEL) and
/// the operator applies to whatever reaches it anyway: a value out of bounds is clamped,
/// one that does not parse takes the default.
#[derive(Clone, Copy, Debug)]
pub struct DurationBounds {
    /// As the CRD shows it (the `default` of an optional field's schema).
    pub default: &'static str,
    pub min: Duration,
    pub max: Duration,
}

impl DurationBounds {
    pub const fn new(default: &'static str, min_secs: u64, max_secs: u64) -> Self {
        Self { default, min: Duration::from_secs(min_secs), max: Duration::from_secs(max_secs) }
    }

    /// The default, as a spec value.
    pub fn default_value(&self) -> GoDuration {
        GoDuration::new(self.default)
    }

    /// The field's value as the operator uses it.
    pub fn of(&self, value: &GoDuration) -> Duration {
        match value.parsed {
            Some(d) => d.clamp(self.min, self.max),
            // Each bounds' default parses (a test holds them to it); the minimum only
            // keeps this total.
            None => parse_duration(self.default).unwrap_or(self.min),
        }
    }
}

/// Parses the Go durations the CRDs accept (`30s`, `5m`, `1h30m`, `250ms`): the shape
/// `duration_shape!` describes, so a string the API server refused is refused here too.
/// Integer arithmetic only: no float conversion that could panic on a huge value.
pub fn parse_duration(s: &str) -> Option<Duration> {
    const MAX_PARTS: usize = 4;
    const MAX_DIGITS: usize = 5;
    const MAX_FRACTION: usize = 9;
    let mut total = Duration::ZERO;
    let mut rest = s;
    let mut parts = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        parts += 1;
        if parts > MAX_PARTS {
            return None;
        }
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at_checked(digits)?;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || whole.len() > MAX_DIGITS || fraction.len() > MAX_FRACTION || fraction.contains('.') {
            return None;
        }
        if number.ends_with('.') {
            return None;
        }
        let (unit_nanos, unit_len): (u128, usize) = if tail.starts_with("ms") {
            (1_000_000, 2)
        } else if tail.starts_with('s') {
            (1_000_000_000, 1)
        } else if tail.starts_with('m') {
            (60_000_000_000, 1)
        } else if tail.starts_with('h') {
            (3_600_000_000_000, 1)
        } else {
            return None;
        };
        let whole: u128 = whole.parse().ok()?;
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
        let nanos = whole * unit_nanos + fraction * unit_nanos / scale;
        total = total.checked_add(Duration::from_nanos(u64::try_from(nanos).ok()?))?;
        rest = tail.get(unit_len..)?;
    }
    Some(total)
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

/// A condition's status, spelled as the API conventions spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(on: bool) -> Self {
        if on { ConditionStatus::True } else { ConditionStatus::False }
    }
}

/// The condition of `type_` in `conditions` if its status is `status`.
pub fn condition_with<'a>(conditions: &'a [Condition], type_: &str, status: ConditionStatus) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_ && c.status == status.as_str())
}

/// Builds a condition in the shape the Kubernetes API conventions ask for.
pub fn condition(
    type_: &str,
    status: impl Into<ConditionStatus>,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.into().as_str().to_string(),
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
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration(""), None);
        // What a hostile spec writes never panics and never parses past the bounds.
        assert_eq!(parse_duration("99999999999999999999h"), None);
        assert_eq!(parse_duration("1h1h1h1h1h"), None);
        assert_eq!(parse_duration("1..5s"), None);
        assert_eq!(parse_duration("1.s"), None);
        assert_eq!(parse_duration(".5s"), None);
        assert_eq!(parse_duration("99999h99999h99999h99999h"), Some(Duration::from_secs(4 * 99999 * 3600)));
        let bounds = DurationBounds::new("30s", 5, 3600);
        assert_eq!(bounds.of(&"1ms".into()), Duration::from_secs(5));
        assert_eq!(bounds.of(&"99999h".into()), Duration::from_secs(3600));
        assert_eq!(bounds.of(&"garbage".into()), Duration::from_secs(30));
        assert_eq!(bounds.of(&"1m".into()), Duration::from_secs(60));
    }

    #[test]
    fn every_default_is_a_duration_within_its_bounds() {
        use crate::api::{release, repository};
        let fields = [
            ("gates.interval", release::GATE_INTERVAL),
            ("gates.progressDeadline", release::PROGRESS_DEADLINE),
            ("webhook.timeout", release::WEBHOOK_TIMEOUT),
            ("rollback.postPromotionWindow", release::POST_PROMOTION_WINDOW),
            ("refreshInterval", repository::REFRESH_INTERVAL),
        ];
        for (field, bounds) in fields {
            let default = parse_duration(bounds.default).unwrap_or_else(|| panic!("{field}: {}", bounds.default));
            assert!(bounds.min <= default && default <= bounds.max, "{field}: {default:?} out of {bounds:?}");
            assert_eq!(bounds.of(&bounds.default_value()), default, "{field}");
        }
        // A pause has no default (none waits for promote); what does not parse is no pause.
        assert_eq!(release::PAUSE.of(&"later".into()), Duration::ZERO);
    }

    #[test]
    fn a_duration_goes_back_as_written() {
        let read: GoDuration = serde_json::from_value(serde_json::json!("1h30m")).unwrap();
        assert_eq!(read.as_str(), "1h30m");
        assert_eq!(serde_json::to_value(&read).unwrap(), serde_json::json!("1h30m"));
        // Unparseable text is kept (and written back) as it was, not refused.
        let odd: GoDuration = serde_json::from_value(serde_json::json!("soon")).unwrap();
        assert_eq!(serde_json::to_value(&odd).unwrap(), serde_json::json!("soon"));
        assert!(serde_json::from_value::<GoDuration>(serde_json::json!(30)).is_err());
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
