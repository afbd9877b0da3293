//! The status a ModelRepository should have after a refresh: floors only go up,
//! conditions say what an SRE needs to know.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    api::{ModelRepositoryStatus, RoleState, condition, set_condition},
    trust::versions::{Floors, Trusted},
};

/// Condition types of a ModelRepository.
pub const TRUSTED: &str = "Trusted";
pub const EXPIRED: &str = "Expired";
pub const ROLLBACK_DETECTED: &str = "RollbackDetected";
pub const UNREACHABLE: &str = "Unreachable";

/// The outcome of a refresh as the planner sees it.
#[derive(Clone, Debug)]
pub enum Refresh {
    /// What the refresh trusted, and the digest of the pin it started from.
    Trusted { trusted: Trusted, pin_sha256: String },
    /// `reason` is a bounded word (see `TrustError::reason`), `message` the full text.
    Failed { reason: String, message: String },
}

/// The anti-rollback floors recorded in status.
pub fn floors(status: Option<&ModelRepositoryStatus>) -> Floors {
    let v = |r: &Option<RoleState>| r.as_ref().map_or(0, |r| r.version.max(0) as u64);
    status.map_or_else(Floors::default, |s| Floors {
        root: v(&s.root),
        timestamp: v(&s.timestamp),
        snapshot: v(&s.snapshot),
        targets: v(&s.targets),
    })
}

fn raise(old: &Option<RoleState>, (version, expires): (u64, Timestamp)) -> Option<RoleState> {
    let version = version as i64;
    match old {
        Some(o) if o.version > version => Some(o.clone()),
        Some(o) if o.version == version && o.expires.is_some() => Some(o.clone()),
        _ => Some(RoleState { version, expires: Some(Time(expires)) }),
    }
}

/// How long until the next refresh is due, when one ran successfully less than
/// `interval` ago for the current generation. Reconciles triggered by our own status
/// writes then do nothing, instead of refreshing in a loop.
pub fn next_refresh_in(
    status: Option<&ModelRepositoryStatus>,
    generation: Option<i64>,
    interval: std::time::Duration,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let status = status?;
    if status.observed_generation != generation {
        return None;
    }
    let trusted = status.conditions.iter().any(|c| c.type_ == TRUSTED && c.status == "True");
    let last = status.last_refresh_time.as_ref()?.0;
    let elapsed = now.duration_since(last).unsigned_abs();
    (trusted && elapsed < interval).then(|| interval - elapsed)
}

pub fn status(
    current: Option<&ModelRepositoryStatus>,
    generation: Option<i64>,
    refresh: &Refresh,
    now: Timestamp,
) -> ModelRepositoryStatus {
    let mut s = current.cloned().unwrap_or_default();
    let flag = |s: &mut ModelRepositoryStatus, type_: &str, on: bool, reason: &str, message: &str| {
        set_condition(&mut s.conditions, condition(type_, on, reason, message, generation, now));
    };
    match refresh {
        Refresh::Trusted { trusted: t, pin_sha256 } => {
            s.pinned_root_sha256 = Some(pin_sha256.clone());
            s.root = raise(&s.root, t.root);
            s.timestamp = raise(&s.timestamp, t.timestamp);
            s.snapshot = raise(&s.snapshot, t.snapshot);
            s.targets = raise(&s.targets, t.targets);
            s.last_refresh_time = Some(Time(now));
            let msg = format!(
                "root v{}, timestamp v{} (expires {}), snapshot v{}, targets v{}",
                t.root.0, t.timestamp.0, t.timestamp.1, t.snapshot.0, t.targets.0
            );
            flag(&mut s, TRUSTED, true, "Verified", &msg);
            flag(&mut s, EXPIRED, false, "Fresh", "all metadata is within its expiry");
            flag(
                &mut s,
                ROLLBACK_DETECTED,
                false,
                "NoRollback",
                "no metadata older than the trusted versions was served",
            );
            flag(&mut s, UNREACHABLE, false, "Reachable", "the last refresh reached the repository");
        }
        Refresh::Failed { reason, message } => {
            flag(&mut s, TRUSTED, false, reason, message);
            // Each specific condition is True only when it is the cause of this failure.
            let causes: [(&str, &[&str], &str, &str); 3] = [
                (EXPIRED, &["Expired"], "Expired", "NotExpired"),
                (ROLLBACK_DETECTED, &["RollbackDetected"], "RollbackDetected", "NoRollback"),
                (UNREACHABLE, &["Unreachable", "NotFound"], "Unreachable", "Reachable"),
            ];
            for (type_, matching, yes, no) in causes {
                let cause = matching.contains(&reason.as_str());
                let (why, text) =
                    if cause { (yes, message.as_str()) } else { (no, "not the cause of the last failure") };
                flag(&mut s, type_, cause, why, text);
            }
        }
    }
    s.observed_generation = generation;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConfigMapKeyRef, ConfigMapSource, ModelRepository, ModelRepositorySpec};

    fn repo(status: Option<ModelRepositoryStatus>) -> ModelRepository {
        let mut r = ModelRepository::new(
            "ml",
            ModelRepositorySpec {
                metadata_url: "https://tuf/m/".into(),
                targets_url: "https://tuf/t/".into(),
                trusted_root: ConfigMapSource {
                    config_map_ref: ConfigMapKeyRef { name: "r".into(), key: "root.json".into() },
                },
                ca_bundle: None,
                refresh_interval: "5m".into(),
            },
        );
        r.status = status;
        r.metadata.generation = Some(1);
        r
    }

    fn status_of(r: &ModelRepository, refresh: &Refresh, now: Timestamp) -> ModelRepositoryStatus {
        status(r.status.as_ref(), r.metadata.generation, refresh, now)
    }

    fn t(v: u64) -> Trusted {
        let e: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        Trusted { root: (1, e), timestamp: (v, e), snapshot: (v, e), targets: (v, e) }
    }

    fn cond<'a>(s: &'a ModelRepositoryStatus, type_: &str) -> &'a str {
        &s.conditions.iter().find(|c| c.type_ == type_).unwrap().status
    }

    #[test]
    fn a_fresh_success_is_not_refreshed_again_until_due() {
        let now: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let interval = std::time::Duration::from_secs(300);
        let s = status_of(&repo(None), &Refresh::Trusted { trusted: t(1), pin_sha256: "p".into() }, now);
        let fresh = repo(Some(s.clone()));
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(60);
        assert_eq!(
            next_refresh_in(fresh.status.as_ref(), fresh.metadata.generation, interval, later),
            Some(std::time::Duration::from_secs(240))
        );
        let due = now + k8s_openapi::jiff::SignedDuration::from_secs(300);
        assert_eq!(next_refresh_in(fresh.status.as_ref(), fresh.metadata.generation, interval, due), None);
        // A spec change (new generation) refreshes at once.
        let mut changed = fresh.clone();
        changed.metadata.generation = Some(2);
        assert_eq!(next_refresh_in(changed.status.as_ref(), changed.metadata.generation, interval, later), None);
        // After a failure, nothing is skipped.
        let failed = status_of(&fresh, &Refresh::Failed { reason: "Unreachable".into(), message: "m".into() }, later);
        assert_eq!(next_refresh_in(Some(&failed), Some(1), interval, later), None);
    }

    #[test]
    fn floors_never_go_down() {
        let now = Timestamp::now();
        let high = status_of(&repo(None), &Refresh::Trusted { trusted: t(7), pin_sha256: "p".into() }, now);
        assert_eq!(floors(Some(&high)).timestamp, 7);
        let after = status_of(&repo(Some(high)), &Refresh::Trusted { trusted: t(3), pin_sha256: "p".into() }, now);
        assert_eq!(floors(Some(&after)).timestamp, 7);
    }

    #[test]
    fn failures_name_their_condition_and_keep_floors() {
        let now = Timestamp::now();
        let good = status_of(&repo(None), &Refresh::Trusted { trusted: t(5), pin_sha256: "p".into() }, now);
        for (reason, raised) in
            [("Expired", EXPIRED), ("RollbackDetected", ROLLBACK_DETECTED), ("Unreachable", UNREACHABLE)]
        {
            let s = status_of(
                &repo(Some(good.clone())),
                &Refresh::Failed { reason: reason.into(), message: "m".into() },
                now,
            );
            assert_eq!(cond(&s, TRUSTED), "False", "{reason}");
            assert_eq!(cond(&s, raised), "True", "{reason}");
            for other in [EXPIRED, ROLLBACK_DETECTED, UNREACHABLE].into_iter().filter(|c| *c != raised) {
                assert_eq!(cond(&s, other), "False", "{reason} raised {other}");
            }
            assert_eq!(floors(Some(&s)).timestamp, 5);
        }
    }
}
