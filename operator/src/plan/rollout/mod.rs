//! The rollout rules, in one place: this module's summary, `Planner::run` (the order in
//! which they apply) and one file per seam (`canary`, `rollback`, `stable`, `gates`,
//! `commands`, `finish`).
//!
//! - A spec (target + template) that is neither the stable nor the canary revision is
//!   verified first; only a verified revision gets a workload. A refusal is `Rejected`.
//! - A running canary whose spec is replaced is `Superseded`; the new spec starts over.
//! - Steps run in order: `setWeight` moves that share of replicas once the canary pods are
//!   Ready and every gate passed since the step began; `pause` waits for its duration or
//!   for a promote. After the last step the canary goes to 100% and, once Ready and
//!   passing, is `Promoted`. A first revision (nothing stable yet) goes to 100% at once.
//! - Rollback, at once: a hard pod failure, a model the pod refused to verify, a target
//!   no longer trusted, a gate failing `failureLimit` times in a row or without data
//!   `inconclusiveLimit` times, pods not Ready by `progressDeadline`, or an abort.
//!   The failed revision is not started again until the spec changes or a retry.
//! - After promotion, gates keep running for `postPromotionWindow`; a failure there
//!   returns to the previous revision.
//! - A stable target that stops being trusted raises `TrustDegraded` and, with
//!   `onRevocation: Rollback` (the stricter of the release's and its cluster
//!   repository's), returns to the newest earlier revision still trusted, never to one
//!   that is not; with none left, it is scaled to zero (`Phase::Revoked`).
//! - A cluster repository's policy refusing the namespace or a path makes the model
//!   untrusted (`NotAllowedByPolicy`): never rolled out, and stopped if it serves.
//! - Status is the record of every decision: the controller writes it before it touches
//!   a workload, so a restart resumes from it and never starts a second canary.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::*;
use crate::api::{
    CanaryStatus, CommandsSeen, ConditionStatus, GateStatus, HistoryEntry, ModelRef, ModelRelease, ModelReleaseSpec,
    ModelReleaseStatus, Outcome, Phase, PodProgress, RevisionRef, RevisionStatus, RevocationAction, WarmStatus,
    condition, condition_with, set_condition,
};

pub use analysis::analysis_due;

// One `impl Planner` per seam, as argo-rollouts splits its rollout controller.
mod analysis;
mod canary;
mod commands;
mod finish;
mod gates;
pub(super) mod rollback;
mod stable;

/// A release at rest is looked at again after this long even if nothing woke it: a
/// safety net only (every change it depends on is watched, every timer is a wake-up of
/// its own), and such a look costs no API request.
const RESYNC: Duration = Duration::from_secs(1800);
const WAIT_FOR_TRUST: Duration = Duration::from_secs(5);
/// History entries kept in status.
pub const MAX_HISTORY: usize = 20;
/// Revisions (from the newest history entries) whose workloads are kept, at 0 replicas,
/// for rollback and inspection.
const KEEP_REVISIONS: usize = 5;

// Condition reasons: the history's and the Events' words.
const PROMOTED: &str = Outcome::Promoted.as_str();
const ROLLED_BACK: &str = Outcome::RolledBack.as_str();
/// A canary's pods made no progress within `progressDeadline`.
const DEADLINE_EXCEEDED: &str = EventReason::ProgressDeadlineExceeded.as_str();

/// Decides the status and workloads of `release` from what was observed at `now`
/// (whole seconds, as status keeps them).
pub fn plan(release: &ModelRelease, observed: &Observed, now: Timestamp) -> Plan {
    let mut planner = Planner {
        spec: &release.spec,
        generation: release.metadata.generation,
        name: release.metadata.name.as_deref().unwrap_or_default(),
        namespace: release.metadata.namespace.as_deref().unwrap_or("default"),
        obs: observed,
        now,
        status: release.status.clone().unwrap_or_default(),
        desired: desired_hash(release),
        events: Vec::new(),
        requeue: RESYNC,
        stalled: None,
    };
    let admitted = planner.run();
    planner.finish(admitted)
}

/// Whether the gate checks should run now: a canary is out (or the post-promotion window
/// is open) and the last evaluation is at least `gates.interval` old.
pub fn gates_due(release: &ModelRelease, now: Timestamp) -> bool {
    let Some(status) = &release.status else { return false };
    if release.spec.gates.checks.is_empty() || !(status.canary.is_some() || in_window(release, now)) {
        return false;
    }
    let interval = release.spec.gates.interval();
    release.spec.gates.checks.iter().any(|check| {
        match status.gates.iter().find(|g| g.name == check.name).and_then(|g| g.last_evaluated.as_ref()) {
            Some(last) => after(last.0, interval) <= now,
            None => true,
        }
    })
}

fn in_window(release: &ModelRelease, now: Timestamp) -> bool {
    let Some(status) = &release.status else { return false };
    let window = release.spec.rollback.post_promotion_window();
    status.phase == Some(Phase::Promoted)
        && status.canary.is_none()
        && status.stable.as_ref().and_then(|s| s.promoted_at.as_ref()).is_some_and(|at| after(at.0, window) > now)
}

/// `t + d`, saturating: times in a status and durations in a spec are bounded, but
/// arithmetic on them must not be able to panic whatever they hold.
pub(super) fn after(t: Timestamp, d: Duration) -> Timestamp {
    k8s_openapi::jiff::SignedDuration::try_from(d).ok().and_then(|d| t.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

struct Planner<'a> {
    spec: &'a ModelReleaseSpec,
    generation: Option<i64>,
    name: &'a str,
    namespace: &'a str,
    obs: &'a Observed,
    now: Timestamp,
    status: ModelReleaseStatus,
    desired: String,
    events: Vec<Note>,
    requeue: Duration,
    /// Why a first revision is stalled (past its deadline with nothing to roll back
    /// to), if it is: the phase message then says so, and `Progressing` stays False.
    stalled: Option<String>,
}

/// Why a revision failed: a short reason (condition reason, history, metrics label)
/// and the message an SRE reads.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    reason: String,
    message: String,
}

impl Failure {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { reason: reason.into(), message: message.into() }
    }

    /// A revision's pods failing in a way that waiting does not mend: a pod that refused
    /// its model, a crash loop, a failed init container. The same words on the canary
    /// and after promotion.
    fn of_pods(health: &PodHealth) -> Option<Self> {
        match &health.problem {
            Some(PodProblem::Untrusted { message }) => {
                Some(Failure::new("TrustFailure", format!("a pod refused the model: {message}")))
            }
            Some(PodProblem::Hard { reason, message }) => Some(Failure::new(reason.clone(), message.clone())),
            Some(PodProblem::Waiting { .. }) | None => None,
        }
    }
}

/// Whether a person asked for a rollback (abort, rollback command): it then happens
/// even with automatic rollback off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByPerson {
    Yes,
    No,
}

#[derive(Clone, Copy)]
enum Command {
    Promote,
    PromoteFull,
    Retry,
    Abort,
    Rollback,
    DropWarm,
}

impl Planner<'_> {
    fn run(&mut self) -> bool {
        self.status.observed_generation = self.generation;
        if !self.admit() {
            return false;
        }
        let retry = self.take(Command::Retry);
        let abort = self.take(Command::Abort);
        let rollback = self.take(Command::Rollback);
        if self.take(Command::DropWarm) {
            self.drop_warm();
        }
        self.supersede();
        if rollback {
            self.rollback_on_request();
            return true;
        }
        self.service();
        self.foreign();
        self.changed();
        let stable_hash = self.status.stable.as_ref().map(|s| s.revision.hash.clone());
        if self.status.canary.is_none() && stable_hash.as_deref() != Some(self.desired.as_str()) {
            if let Some(refusal) = self.obs.refusal.clone() {
                self.refuse(refusal);
            } else if retry || !self.blocked() {
                self.start();
            }
        } else if self.status.canary.is_none()
            && !matches!(self.status.phase, Some(Phase::RollingBack | Phase::Revoked))
        {
            // The spec is the stable revision (again): nothing to roll out.
            self.set_phase(Phase::Promoted, self.serving_message());
        }
        if self.status.canary.is_some() {
            if abort {
                self.fail(Failure::new("Aborted", "aborted by the modelgate.dev/abort annotation"), ByPerson::Yes);
            } else {
                self.progress();
            }
        } else {
            self.watch_stable();
        }
        true
    }

    fn admit(&mut self) -> bool {
        let repo = &self.spec.repository_ref;
        let (kind, name) = (repo.kind.as_str(), &repo.name);
        let (reason, message) = match &self.obs.repository {
            // `refuse` says why, when the refused spec is the one to roll out.
            Repository::Found { .. } if self.obs.refusal.is_some() => return true,
            Repository::Found { .. } => {
                let message = format!("{kind} {name:?} found");
                self.set_condition(ACCEPTED, true, "RepositoryFound", message);
                return true;
            }
            other => other.refusal(repo, self.namespace),
        };
        set_condition(
            &mut self.status.conditions,
            condition(ACCEPTED, false, reason, message.clone(), self.generation, self.now),
        );
        self.status.message = Some(message);
        self.status.phase.get_or_insert(Phase::Verifying);
        false
    }

    /// The spec's pod may not be created: nothing new is deployed, whatever serves keeps
    /// serving, and the release says why until the spec (or the policy) changes.
    fn refuse(&mut self, refusal: String) {
        const REASON: &str = "PodRefused";
        let serving = match &self.status.stable {
            Some(s) => format!("; revision {} keeps serving", s.revision.number),
            None => String::new(),
        };
        let message = format!("the pod template is refused: {refusal}; nothing was deployed{serving}");
        // A message listing several problems gets more room, still bounded.
        let message = truncated(&message, 2000);
        self.raise(ACCEPTED, false, REASON, EventReason::PodRefused, message.clone(), message.clone());
        self.set_condition(DEGRADED, true, REASON, message.clone());
        self.set_phase(Phase::Rejected, message);
    }

    /// ReplicaSets that look like this release's but are not: said once, kept in view.
    /// The condition appears only once there were some (no write for every release).
    fn foreign(&mut self) {
        if self.obs.foreign.is_empty() {
            if self.condition_is(FOREIGN_WORKLOADS, ConditionStatus::True, "NotControlled") {
                let message = "every ReplicaSet labelled for this release is its own".to_string();
                self.set_condition(FOREIGN_WORKLOADS, false, "AllControlled", message);
            }
            return;
        }
        let mut names = self.obs.foreign.clone();
        names.sort();
        names.truncate(5);
        let message = truncated(
            &format!(
                "ReplicaSets {names:?} carry this release's labels but were not made by it (no controller owner \
                 reference to it): modelgate never scales, judges or serves them; delete them"
            ),
            1000,
        );
        self.raise(FOREIGN_WORKLOADS, true, "NotControlled", EventReason::ForeignWorkload, message.clone(), message);
    }

    /// ReplicaSets of this release whose pod template someone else changed: said once,
    /// kept in view until every template is as modelgate made it again.
    fn changed(&mut self) {
        const REASON: &str = "TemplateChanged";
        if self.obs.changed.is_empty() {
            if self.condition_is(WORKLOAD_CHANGED, ConditionStatus::True, REASON) {
                let message = "every revision's pod template is as modelgate made it".to_string();
                self.set_condition(WORKLOAD_CHANGED, false, "AsMade", message);
            }
            return;
        }
        let mut names: Vec<&str> = self.obs.changed.iter().map(|(_, name)| name.as_str()).collect();
        names.sort_unstable();
        names.truncate(5);
        let spec_revision = self.obs.changed.iter().any(|(hash, _)| *hash == self.desired);
        let earlier = self.obs.changed.iter().any(|(hash, _)| *hash != self.desired);
        let mut message = format!(
            "the pod template of ReplicaSets {names:?} is not the one modelgate made (someone else changed it): \
             its pods may not run what was verified"
        );
        if spec_revision {
            message.push_str("; the spec's revision's template is put back");
        }
        if earlier {
            message.push_str("; an earlier revision's cannot be made again (its spec is gone): roll forward or back");
        }
        message.push_str("; pods made from a changed template keep running until replaced: delete them");
        let message = truncated(&message, 1000);
        self.raise(WORKLOAD_CHANGED, true, REASON, EventReason::WorkloadChanged, message.clone(), message);
    }

    /// Whether the release's Service is modelgate's to apply.
    fn service(&mut self) {
        if self.spec.service.is_none() {
            self.status.conditions.retain(|c| c.type_ != SERVICE_READY);
            return;
        }
        match self.obs.service_conflict.clone() {
            Some(conflict) => {
                let event = EventReason::ServiceNotOwned;
                self.raise(SERVICE_READY, false, "ServiceNotOwned", event, conflict.clone(), conflict);
            }
            None => {
                let message = format!("Service {:?} selects every revision's pods", self.name);
                self.set_condition(SERVICE_READY, true, "ServiceApplied", message);
            }
        }
    }

    /// Why, when the repository refuses the revision's model or now lists other bytes
    /// (or, for an image, another registry repository) than the ones it verified.
    fn untrusted(&self, revision: &crate::api::RevisionRef) -> Option<Failure> {
        let model = revision.model();
        let target = model.display();
        let sha256 = revision.sha256.as_deref();
        match self.verdict(&model) {
            Verdict::Untrusted { reason, message } => Some(Failure::new(reason.as_str(), message)),
            Verdict::Trusted { sha256: now, .. } if Some(now.as_str()) != sha256 => Some(Failure::new(
                "TargetChanged",
                format!(
                    "the repository now lists {target:?} with sha256 {}, not the verified {}",
                    short(&now),
                    short(sha256.unwrap_or(""))
                ),
            )),
            // The same digest from another registry: its pods would pull from where it was
            // never allowed and verified, so it is a change like any other.
            Verdict::Trusted { image: now, .. } if now != revision.image => Some(Failure::new(
                "TargetChanged",
                format!(
                    "the repository now signs {target:?} as image {}, not the verified {}",
                    now.as_deref().unwrap_or("-"),
                    revision.image.as_deref().unwrap_or("-")
                ),
            )),
            _ => None,
        }
    }

    /// The verdict on a model.
    fn verdict(&self, model: &ModelRef) -> Verdict {
        self.obs
            .verdicts
            .get(model)
            .cloned()
            .unwrap_or_else(|| Verdict::Unknown { message: "not looked up yet".into() })
    }

    /// The revision number of a hash seen before, or the next one.
    fn revision_for(&self, hash: &str) -> i64 {
        super::revision_number(&self.status, hash)
    }

    fn canary_replicas(&self, weight: i32) -> i32 {
        super::canary_replicas(self.spec.replicas, weight)
    }

    fn record(&mut self, entry: HistoryEntry) {
        self.status.history.push(entry);
        let excess = self.status.history.len().saturating_sub(MAX_HISTORY);
        self.status.history.drain(..excess);
    }

    fn note(&mut self, warning: bool, reason: EventReason, message: String) {
        self.events.push(Note { warning, reason, message, cause: None });
    }

    /// A warning about a decision metrics count by `cause`.
    fn note_because(&mut self, reason: EventReason, cause: &str, message: String) {
        self.events.push(Note { warning: true, reason, message, cause: Some(cause.to_owned()) });
    }

    fn set_phase(&mut self, phase: Phase, message: String) {
        if let Some(stalled) = &self.stalled
            && phase == Phase::Progressing
        {
            self.status.phase = Some(phase);
            self.status.message = Some(stalled.clone());
            return;
        }
        let canary = self.status.canary.is_some();
        if canary {
            let reason = if phase == Phase::Paused { "Paused" } else { "RolloutInProgress" };
            self.set_condition(PROGRESSING, true, reason, message.clone());
        }
        self.status.phase = Some(phase);
        self.status.message = Some(message);
    }

    fn set_condition(&mut self, type_: &str, status: bool, reason: &str, message: String) {
        let c = condition(type_, status, reason, message, self.generation, self.now);
        set_condition(&mut self.status.conditions, c);
    }

    /// Sets a condition that needs a person's eye, and says it as a warning Event only
    /// when it changes (another status or reason): one Event per change, not one per
    /// reconcile. `said` is the Event's text.
    fn raise(&mut self, type_: &str, status: bool, reason: &str, event: EventReason, said: String, message: String) {
        if !self.condition_is(type_, status.into(), reason) {
            self.note(true, event, said);
        }
        self.set_condition(type_, status, reason, message);
    }

    fn set_verified(&mut self, status: ConditionStatus, reason: &str, message: String) {
        let c = condition(VERIFIED, status, reason, message, self.generation, self.now);
        set_condition(&mut self.status.conditions, c);
    }

    fn condition_is(&self, type_: &str, status: ConditionStatus, reason: &str) -> bool {
        condition_with(&self.status.conditions, type_, status).is_some_and(|c| c.reason == reason)
    }

    fn serving_message(&self) -> String {
        match &self.status.stable {
            Some(s) => format!("revision {} ({}) serves 100%", s.revision.number, s.revision.target),
            None => "nothing serves yet".into(),
        }
    }

    fn wake(&mut self, after: Duration) {
        self.requeue = self.requeue.min(after.max(Duration::from_secs(1)));
    }

    fn wake_at(&mut self, at: Timestamp) {
        let secs = at.as_second().saturating_sub(self.now.as_second()).max(1).unsigned_abs();
        self.wake(Duration::from_secs(secs));
    }
}

fn history_of_canary(canary: &CanaryStatus, outcome: Outcome, reason: Option<String>, now: Timestamp) -> HistoryEntry {
    HistoryEntry {
        revision: canary.revision.clone(),
        outcome,
        reason,
        started_at: canary.started_at.clone(),
        finished_at: Some(Time(now)),
    }
}

/// The first 12 characters of a digest, for messages (whatever the string holds).
pub fn short(sha256: &str) -> &str {
    sha256.char_indices().nth(12).and_then(|(end, _)| sha256.get(..end)).unwrap_or(sha256)
}

/// Status strings stay short enough to read in `kubectl get -o wide`.
fn bounded(s: &str) -> String {
    truncated(s, 300)
}

/// At most `max` bytes of `s` (cut at a character boundary), marked when cut.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.to_string();
    crate::text::cut(&mut cut, max);
    format!("{cut}...")
}
