//! The status a ModelRepository should have after a refresh, and the Events that say
//! what changed: floors only go up, conditions say what an SRE needs to know.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    api::{ConditionStatus, ModelRepositoryStatus, RoleState, condition, condition_with, set_condition},
    trust::{
        Reason,
        versions::{Floors, Trusted},
    },
};

/// Condition types of a ModelRepository.
pub const TRUSTED: &str = "Trusted";
pub const EXPIRED: &str = "Expired";
pub const ROLLBACK_DETECTED: &str = "RollbackDetected";
pub const UNREACHABLE: &str = "Unreachable";

/// When a failed refresh is tried again, at the latest: releases behind it are
/// untrusted meanwhile.
pub const FAILED_RETRY: Duration = Duration::from_secs(30);

/// The outcome of a refresh as the planner sees it.
#[derive(Clone, Debug)]
pub enum Refresh {
    /// What the refresh trusted, the digest of the pin it started from, and whether it
    /// set the recorded root chain aside because the pin changed.
    Trusted { trusted: Trusted, pin_sha256: String, reanchored: bool },
    /// Why (a bounded word) and the full text.
    Failed { cause: Failure, message: String },
}

/// Why a refresh failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The pin or CA bundle the spec names cannot be read.
    Configuration,
    /// The repository or its server failed verification.
    Trust(Reason),
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Configuration => "ConfigurationError",
            Failure::Trust(reason) => reason.as_str(),
        }
    }

    /// The condition that is True because of this failure, beside `Trusted=False`.
    fn condition(self) -> Option<&'static str> {
        match self {
            Failure::Trust(Reason::Expired) => Some(EXPIRED),
            Failure::Trust(Reason::RollbackDetected) => Some(ROLLBACK_DETECTED),
            Failure::Trust(Reason::Unreachable | Reason::NotFound) => Some(UNREACHABLE),
            _ => None,
        }
    }
}

/// Why a repository's Event is published (its `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// The repository became trusted (first refresh, or after a failure).
    Trusted,
    /// `spec.trustedRoot` changed: the recorded chain was set aside.
    ReAnchored,
    /// A refresh failed.
    Failed(Failure),
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::Trusted => "Trusted",
            EventReason::ReAnchored => "ReAnchored",
            EventReason::Failed(failure) => failure.as_str(),
        }
    }
}

/// An Event to publish once the new status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
}

/// What a repository's reconcile makes true after a refresh.
#[derive(Clone, Debug)]
pub struct Plan {
    pub status: ModelRepositoryStatus,
    pub notes: Vec<Note>,
    /// When to refresh again (sooner if a verdict's metadata expires before).
    pub refresh_in: Duration,
}

/// The status, Events and next refresh after `refresh`, for a repository whose status
/// is `current`.
pub fn plan(
    current: Option<&ModelRepositoryStatus>,
    generation: Option<i64>,
    refresh: &Refresh,
    interval: Duration,
    now: Timestamp,
) -> Plan {
    let was_trusted = current.is_some_and(|s| condition_with(&s.conditions, TRUSTED, ConditionStatus::True).is_some());
    let mut notes = Vec::new();
    let refresh_in = match refresh {
        Refresh::Trusted { trusted: t, pin_sha256, reanchored } => {
            if *reanchored {
                notes.push(Note {
                    warning: true,
                    reason: EventReason::ReAnchored,
                    message: format!(
                        "spec.trustedRoot changed (now sha256 {}): the recorded root chain was set aside and trust \
                         re-verified from the new pin",
                        crate::plan::short(pin_sha256)
                    ),
                });
            }
            if !was_trusted {
                let message = format!("verified root v{}, timestamp v{}", t.root.0, t.timestamp.0);
                notes.push(Note { warning: false, reason: EventReason::Trusted, message });
            }
            interval
        }
        Refresh::Failed { cause, message } => {
            // Every failed refresh is said: it is retried within `FAILED_RETRY`, and the
            // API server folds repeats into one Event with a count.
            notes.push(Note { warning: true, reason: EventReason::Failed(*cause), message: message.clone() });
            interval.min(FAILED_RETRY)
        }
    };
    Plan { status: status(current, generation, refresh, now), notes, refresh_in }
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
    let trusted = condition_with(&status.conditions, TRUSTED, ConditionStatus::True).is_some();
    let last = status.last_refresh_time.as_ref()?.0;
    let elapsed = now.duration_since(last).unsigned_abs();
    (trusted && elapsed < interval).then(|| interval - elapsed)
}

/// How long until a replica standing by refreshes again, from its own last attempt
/// (`None`: now): the interval after a success, `FAILED_RETRY` after a failure. Its
/// timing is its own: the leader's status says when the leader refreshed.
pub fn standby_refresh_in(
    attempted: Option<(Timestamp, bool)>,
    interval: std::time::Duration,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let (at, succeeded) = attempted?;
    let every = if succeeded { interval } else { FAILED_RETRY.min(interval) };
    let elapsed = now.duration_since(at).unsigned_abs();
    (elapsed < every).then(|| every - elapsed)
}

fn status(
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
        Refresh::Trusted { trusted: t, pin_sha256, .. } => {
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
        Refresh::Failed { cause, message } => {
            flag(&mut s, TRUSTED, false, cause.as_str(), message);
            // Each specific condition is True only when it is the cause of this failure.
            let raised = cause.condition();
            for (type_, yes, no) in [
                (EXPIRED, "Expired", "NotExpired"),
                (ROLLBACK_DETECTED, "RollbackDetected", "NoRollback"),
                (UNREACHABLE, "Unreachable", "Reachable"),
            ] {
                let cause = raised == Some(type_);
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
                provenance: None,
                images: None,
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
    fn a_replica_standing_by_times_its_refreshes_by_its_own_attempts() {
        let interval = Duration::from_secs(300);
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let later = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        assert_eq!(standby_refresh_in(None, interval, at), None, "never tried: now");
        assert_eq!(standby_refresh_in(Some((at, true)), interval, later(100)), Some(Duration::from_secs(200)));
        assert_eq!(standby_refresh_in(Some((at, true)), interval, later(300)), None);
        assert_eq!(
            standby_refresh_in(Some((at, false)), interval, later(10)),
            Some(FAILED_RETRY - Duration::from_secs(10))
        );
        assert_eq!(standby_refresh_in(Some((at, false)), interval, later(30)), None, "a failure is retried soon");
    }

    #[test]
    fn a_fresh_success_is_not_refreshed_again_until_due() {
        let now: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let interval = std::time::Duration::from_secs(300);
        let s =
            status_of(&repo(None), &Refresh::Trusted { trusted: t(1), pin_sha256: "p".into(), reanchored: false }, now);
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
        let failed = status_of(
            &fresh,
            &Refresh::Failed { cause: Failure::Trust(Reason::Unreachable), message: "m".into() },
            later,
        );
        assert_eq!(next_refresh_in(Some(&failed), Some(1), interval, later), None);
    }

    #[test]
    fn floors_never_go_down() {
        let now = Timestamp::now();
        let high =
            status_of(&repo(None), &Refresh::Trusted { trusted: t(7), pin_sha256: "p".into(), reanchored: false }, now);
        assert_eq!(floors(Some(&high)).timestamp, 7);
        let after = status_of(
            &repo(Some(high)),
            &Refresh::Trusted { trusted: t(3), pin_sha256: "p".into(), reanchored: false },
            now,
        );
        assert_eq!(floors(Some(&after)).timestamp, 7);
    }

    #[test]
    fn failures_name_their_condition_and_keep_floors() {
        let now = Timestamp::now();
        let good =
            status_of(&repo(None), &Refresh::Trusted { trusted: t(5), pin_sha256: "p".into(), reanchored: false }, now);
        for (reason, raised) in [
            (Reason::Expired, EXPIRED),
            (Reason::RollbackDetected, ROLLBACK_DETECTED),
            (Reason::Unreachable, UNREACHABLE),
            (Reason::NotFound, UNREACHABLE),
        ] {
            let s = status_of(
                &repo(Some(good.clone())),
                &Refresh::Failed { cause: Failure::Trust(reason), message: "m".into() },
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

    #[test]
    fn a_failure_that_is_none_of_the_three_raises_none_of_them() {
        let now = Timestamp::now();
        let failed = Refresh::Failed { cause: Failure::Configuration, message: "no ConfigMap r".into() };
        let s = status_of(&repo(None), &failed, now);
        let trusted = s.conditions.iter().find(|c| c.type_ == TRUSTED).unwrap();
        assert_eq!((trusted.status.as_str(), trusted.reason.as_str()), ("False", "ConfigurationError"));
        for other in [EXPIRED, ROLLBACK_DETECTED, UNREACHABLE] {
            assert_eq!(cond(&s, other), "False", "{other}");
        }
    }

    #[test]
    fn trusted_is_said_once_and_every_failure_each_time() {
        let now = Timestamp::now();
        let interval = Duration::from_secs(300);
        let ok = Refresh::Trusted { trusted: t(1), pin_sha256: "p".into(), reanchored: false };
        let first = plan(None, Some(1), &ok, interval, now);
        assert_eq!(first.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), [EventReason::Trusted]);
        assert_eq!(first.refresh_in, interval);
        // Trusted again: nothing to say.
        let again = plan(Some(&first.status), Some(1), &ok, interval, now);
        assert!(again.notes.is_empty(), "{:?}", again.notes);
        // A failure is said each time, as a warning with its reason, and retried soon.
        let failed = Refresh::Failed { cause: Failure::Trust(Reason::BadSignature), message: "bad".into() };
        let down = plan(Some(&again.status), Some(1), &failed, interval, now);
        assert_eq!(down.notes.len(), 1);
        assert!(down.notes[0].warning);
        assert_eq!(down.notes[0].reason.as_str(), "BadSignature");
        assert_eq!(down.refresh_in, FAILED_RETRY);
        let still = plan(Some(&down.status), Some(1), &failed, interval, now);
        assert_eq!(still.notes.len(), 1);
        // Back: trusted is said again.
        let back = plan(Some(&still.status), Some(1), &ok, interval, now);
        assert_eq!(back.notes.iter().map(|n| n.reason).collect::<Vec<_>>(), [EventReason::Trusted]);
        // A short interval is not lengthened by a failure.
        assert_eq!(plan(None, Some(1), &failed, Duration::from_secs(10), now).refresh_in, Duration::from_secs(10));
    }

    #[test]
    fn a_new_pin_is_said_as_a_warning_naming_its_digest() {
        let now = Timestamp::now();
        let trusted = plan(
            None,
            Some(1),
            &Refresh::Trusted { trusted: t(1), pin_sha256: "p".into(), reanchored: false },
            Duration::from_secs(300),
            now,
        );
        let repinned = Refresh::Trusted { trusted: t(2), pin_sha256: "ab".repeat(32), reanchored: true };
        let p = plan(Some(&trusted.status), Some(2), &repinned, Duration::from_secs(300), now);
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].reason, EventReason::ReAnchored);
        assert!(p.notes[0].warning);
        assert!(p.notes[0].message.contains("abababab"), "{}", p.notes[0].message);
        assert_eq!(p.status.pinned_root_sha256.as_deref(), Some("ab".repeat(32).as_str()));
    }
}
