//! The rollout rules, in one place.
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
//!   `onRevocation: Rollback`, returns to the newest earlier revision still trusted;
//!   never to one that is not.
//! - Status is the record of every decision: the controller writes it before it touches
//!   a workload, so a restart resumes from it and never starts a second canary.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::*;
use crate::api::{
    CanaryStatus, CommandsSeen, GateStatus, HistoryEntry, ModelRef, ModelRelease, ModelReleaseSpec, ModelReleaseStatus,
    Outcome, Phase, PodProgress, RevisionStatus, RevocationAction, WarmStatus, condition, set_condition,
};

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
        desired: revision_hash(&release.spec),
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
        let stable_hash = self.status.stable.as_ref().map(|s| s.hash.clone());
        if self.status.canary.is_none() && stable_hash.as_deref() != Some(self.desired.as_str()) {
            if let Some(refusal) = self.obs.refusal.clone() {
                self.refuse(refusal);
            } else if retry || !self.blocked() {
                self.start();
            }
        } else if self.status.canary.is_none() && self.status.phase != Some(Phase::RollingBack) {
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
        let repo = &self.spec.repository_ref.name;
        if self.obs.repository_found && self.obs.refusal.is_some() {
            // `refuse` says why, when the refused spec is the one to roll out.
            return true;
        }
        if self.obs.repository_found {
            let c = condition(
                ACCEPTED,
                true,
                "RepositoryFound",
                format!("ModelRepository {repo:?} found"),
                self.generation,
                self.now,
            );
            set_condition(&mut self.status.conditions, c);
            return true;
        }
        let message = format!(
            "ModelRepository {repo:?} does not exist in namespace {:?}: create it, or fix spec.repositoryRef.name",
            self.namespace
        );
        let c = condition(ACCEPTED, false, "RepositoryNotFound", message.clone(), self.generation, self.now);
        set_condition(&mut self.status.conditions, c);
        self.status.message = Some(message);
        self.status.phase.get_or_insert(Phase::Verifying);
        false
    }

    /// The spec's pod may not be created: nothing new is deployed, whatever serves keeps
    /// serving, and the release says why until the spec (or the policy) changes.
    fn refuse(&mut self, refusal: String) {
        const REASON: &str = "PodRefused";
        let serving = match &self.status.stable {
            Some(s) => format!("; revision {} keeps serving", s.revision),
            None => String::new(),
        };
        let message = format!("the pod template is refused: {refusal}; nothing was deployed{serving}");
        // A message listing several problems gets more room, still bounded.
        let message = truncated(&message, 2000);
        if !self.condition_is(ACCEPTED, "False", REASON) {
            self.note(true, EventReason::PodRefused, message.clone());
        }
        self.set_condition(ACCEPTED, false, REASON, message.clone());
        self.set_condition(DEGRADED, true, REASON, message.clone());
        self.set_phase(Phase::Rejected, message);
    }

    /// Whether the release's Service is modelgate's to apply.
    fn service(&mut self) {
        if self.spec.service.is_none() {
            self.status.conditions.retain(|c| c.type_ != SERVICE_READY);
            return;
        }
        match self.obs.service_conflict.clone() {
            Some(conflict) => {
                if !self.condition_is(SERVICE_READY, "False", "ServiceNotOwned") {
                    self.note(true, EventReason::ServiceNotOwned, conflict.clone());
                }
                self.set_condition(SERVICE_READY, false, "ServiceNotOwned", conflict);
            }
            None => {
                let message = format!("Service {:?} selects every revision's pods", self.name);
                self.set_condition(SERVICE_READY, true, "ServiceApplied", message);
            }
        }
    }

    /// A command is pending when its annotation has a value not yet carried out.
    fn take(&mut self, command: Command) -> bool {
        let seen = self.status.commands.get_or_insert_with(CommandsSeen::default);
        let (given, done) = match command {
            Command::Promote => (&self.obs.commands.promote, &mut seen.promote),
            Command::PromoteFull => (&self.obs.commands.promote_full, &mut seen.promote_full),
            Command::Rollback => (&self.obs.commands.rollback, &mut seen.rollback),
            Command::Retry => (&self.obs.commands.retry, &mut seen.retry),
            Command::Abort => (&self.obs.commands.abort, &mut seen.abort),
            Command::DropWarm => (&self.obs.commands.drop_warm, &mut seen.drop_warm),
        };
        let pending = given.is_some() && given != done;
        if pending {
            done.clone_from(given);
        }
        if self.status.commands == Some(CommandsSeen::default()) {
            self.status.commands = None;
        }
        pending
    }

    fn supersede(&mut self) {
        let Some(canary) = self.status.canary.take_if(|c| c.hash != self.desired) else { return };
        self.note(
            false,
            EventReason::Superseded,
            format!(
                "revision {} ({}) was superseded by a new spec before it was promoted",
                canary.revision, canary.target
            ),
        );
        let why = Some("spec changed during the rollout".into());
        self.record(history_of_canary(&canary, Outcome::Superseded, why, self.now));
        self.status.gates.clear();
    }

    /// `modelgate.dev/rollback: N@token`: back to promoted revision N, if it still has its
    /// workload and its target is still trusted; a running canary goes first.
    fn rollback_on_request(&mut self) {
        let value = self.obs.commands.rollback.clone().unwrap_or_default();
        let Some(to) = value.split('@').next().and_then(|n| n.trim().parse::<i64>().ok()) else {
            let message =
                format!("modelgate.dev/rollback={value:?} names no revision; use <revision>@<token>, such as 3@1");
            return self.note(true, EventReason::RollbackRefused, message);
        };
        if self.status.canary.is_some() {
            self.fail(Failure::new("RollbackRequested", format!("rollback to revision {to} requested")), ByPerson::Yes);
        }
        if self.status.stable.as_ref().is_some_and(|s| s.revision == to) {
            return;
        }
        let Some(entry) =
            self.status.history.iter().rev().find(|h| h.revision == to && h.outcome == Outcome::Promoted).cloned()
        else {
            let message = format!("revision {to} was never promoted (see status.history); nothing changed");
            return self.note(true, EventReason::RollbackRefused, message);
        };
        let refusal = if !self.obs.workloads.contains_key(&entry.hash) {
            Some("its ReplicaSet no longer exists (only the newest revisions are kept)".to_string())
        } else {
            match self.verdict(&entry.model().key()) {
                Verdict::Trusted { sha256, .. } if Some(&sha256) == entry.sha256.as_ref() => None,
                Verdict::Trusted { .. } => {
                    Some(format!("its target {:?} is now signed with other bytes", entry.target))
                }
                Verdict::Untrusted { message, .. } => Some(format!("its target is no longer trusted: {message}")),
                Verdict::Unknown { message } => Some(format!("its target cannot be verified now: {message}")),
            }
        };
        match refusal {
            Some(why) => {
                self.note(true, EventReason::RollbackRefused, format!("rollback to revision {to} refused: {why}"))
            }
            None => match self.status.stable.is_some() {
                true => self.revert_to(entry, "RollbackRequested", format!("rollback to revision {to} requested")),
                false => self.note(
                    true,
                    EventReason::RollbackRefused,
                    format!("rollback to revision {to} refused: nothing serves to return from"),
                ),
            },
        }
    }

    /// The spec's revision failed last time and nobody asked to retry it.
    fn blocked(&self) -> bool {
        self.status
            .history
            .last()
            .is_some_and(|h| h.hash == self.desired && matches!(h.outcome, Outcome::RolledBack | Outcome::Rejected))
    }

    /// Verifies the spec's target; a trusted one becomes the canary.
    fn start(&mut self) {
        let model = self.spec.model.model();
        let target = model.display();
        let revision = self.revision_for(&self.desired);
        match self.verdict(&model.key()) {
            Verdict::Unknown { message } => {
                self.set_verified("Unknown", "Verifying", format!("cannot verify {target:?} yet: {message}"));
                self.set_phase(Phase::Verifying, format!("verifying target {target:?}: {message}"));
                self.wake(WAIT_FOR_TRUST);
            }
            Verdict::Untrusted { reason, message } => {
                let serving = match &self.status.stable {
                    Some(s) => format!("; revision {} keeps serving", s.revision),
                    None => String::new(),
                };
                let message =
                    format!("target {target:?} failed verification: {message}; nothing was deployed{serving}");
                self.set_verified("False", &reason, message.clone());
                self.record(HistoryEntry {
                    revision,
                    hash: self.desired.clone(),
                    target,
                    targets: model.list(),
                    outcome: Outcome::Rejected,
                    reason: Some(reason),
                    started_at: Some(Time(self.now)),
                    finished_at: Some(Time(self.now)),
                    ..Default::default()
                });
                self.note(true, EventReason::Rejected, message.clone());
                self.set_phase(Phase::Rejected, message);
            }
            Verdict::Trusted { sha256, length, files } => {
                let first = self.status.stable.is_none();
                let mut canary = CanaryStatus {
                    revision,
                    hash: self.desired.clone(),
                    target: target.clone(),
                    targets: model.list(),
                    sha256: Some(sha256.clone()),
                    length: Some(length),
                    files: Some(files),
                    step: 0,
                    weight: 0,
                    started_at: Some(Time(self.now)),
                    step_started_at: Some(Time(self.now)),
                    pods: None,
                };
                if first {
                    canary.step = self.spec.strategy.steps.len() as i32;
                } else {
                    self.enter_step(&mut canary);
                }
                let what = match files {
                    1 => format!("{target:?}: sha256 {sha256}, {length} bytes"),
                    n => format!("{target:?}: {n} files, {length} bytes, manifest sha256 {sha256}"),
                };
                self.set_verified("True", "TargetVerified", what);
                self.note(
                    false,
                    EventReason::RolloutStarted,
                    format!("revision {revision} ({target}, sha256 {}) verified; rolling out", short(&sha256)),
                );
                self.status.canary = Some(canary);
                self.status.gates.clear();
                self.set_phase(Phase::Progressing, format!("revision {revision} verified; rolling out"));
            }
        }
    }

    fn progress(&mut self) {
        let Some(canary) = self.status.canary.clone() else { return };
        if let Some(Failure { reason, message }) = self.untrusted(&canary.model(), canary.sha256.as_deref()) {
            return self.fail(Failure::new("TrustFailure", format!("{reason}: {message}")), ByPerson::No);
        }
        let health = self.obs.pods.get(&canary.hash).cloned().unwrap_or_default();
        match &health.problem {
            Some(PodProblem::Untrusted { message }) => {
                let failure = Failure::new("TrustFailure", format!("a canary pod refused the model: {message}"));
                return self.fail(failure, ByPerson::No);
            }
            Some(PodProblem::Hard { reason, message }) => {
                return self.fail(Failure::new(reason.clone(), message.clone()), ByPerson::No);
            }
            _ => {}
        }
        if let Some(failure) = self.record_gates() {
            return self.fail(failure, ByPerson::No);
        }
        let want = self.canary_replicas(canary.weight);
        let since = self.record_progress(&health);
        let deadline = self.spec.gates.progress_deadline();
        if health.ready < want {
            if after(since, deadline) <= self.now {
                let why = match &health.problem {
                    Some(PodProblem::Waiting { reason, message }) => format!(": {reason}: {message}"),
                    _ => String::new(),
                };
                let message = format!(
                    "{}/{want} canary pods Ready and no progress for {} (progressDeadline){why}",
                    health.ready, self.spec.gates.progress_deadline
                );
                if self.status.stable.is_some() {
                    return self.fail(Failure::new(DEADLINE_EXCEEDED, message), ByPerson::No);
                }
                self.stall(canary.revision, message);
            } else {
                self.wake_at(after(since, deadline));
            }
        } else if self.condition_is(PROGRESSING, "False", DEADLINE_EXCEEDED) {
            self.set_condition(PROGRESSING, true, "ProgressResumed", "the canary's pods are Ready".into());
            self.set_condition(DEGRADED, false, "ProgressResumed", "the canary's pods are Ready".into());
        }
        self.wake_for_gates();
        if self.spec.paused {
            let message = format!(
                "revision {} paused at step {} (spec.paused); gates keep running",
                canary.revision, canary.step
            );
            return self.set_phase(Phase::Paused, message);
        }
        self.advance(health.ready);
    }

    /// Records how far the canary's pods have come, and returns when progressDeadline
    /// counts from: the last time more pods than ever before in this rollout were
    /// created, scheduled, initialized or Ready, or the step's start, whichever is
    /// later. High-water marks, so a pod that flaps between Ready and not Ready, or is
    /// deleted and made again, does not hold the deadline off for ever.
    fn record_progress(&mut self, health: &PodHealth) -> Timestamp {
        let now = self.now;
        let Some(canary) = self.status.canary.as_mut() else { return now };
        let step_started = canary.step_started_at.as_ref().map_or(now, |t| t.0);
        let before = canary.pods.clone().unwrap_or_default();
        let marks = PodProgress {
            created: before.created.max(health.created),
            scheduled: before.scheduled.max(health.scheduled),
            initialized: before.initialized.max(health.initialized),
            ready: before.ready.max(health.ready),
            last_progress_time: None,
        };
        let rose = PodProgress { last_progress_time: None, ..before.clone() } != marks;
        let last = match before.last_progress_time {
            Some(t) if !rose => t.0,
            _ => now,
        };
        canary.pods = Some(PodProgress { last_progress_time: Some(Time(last)), ..marks });
        last.max(step_started)
    }

    /// A first release whose pods stopped making progress: there is nothing to roll back
    /// to, so nothing is scaled down; the release says so, and goes on by itself once
    /// the pods become Ready (as a Deployment past its progress deadline does).
    fn stall(&mut self, revision: i64, why: String) {
        let message = format!(
            "revision {revision} is stalled: {why}; it is the first revision, so there is nothing to roll back to: \
             its pods are kept and the rollout continues when they become Ready (fix the cause, or delete the release)"
        );
        if !self.condition_is(PROGRESSING, "False", DEADLINE_EXCEEDED) {
            self.note(true, EventReason::ProgressDeadlineExceeded, message.clone());
        }
        self.set_condition(PROGRESSING, false, DEADLINE_EXCEEDED, message.clone());
        self.set_condition(DEGRADED, true, DEADLINE_EXCEEDED, message.clone());
        self.stalled = Some(message);
    }

    /// Walks the steps as far as they allow now.
    fn advance(&mut self, ready: i32) {
        let steps = &self.spec.strategy.steps;
        if self.take(Command::PromoteFull)
            && let Some(canary) = self.status.canary.as_mut()
            && (canary.step as usize) < steps.len()
        {
            canary.step = steps.len() as i32;
            canary.step_started_at = Some(Time(self.now));
            canary.weight = 100;
            let message = format!("revision {} skips its remaining steps (promote-full): now at 100%", canary.revision);
            self.note(false, EventReason::StepCompleted, message);
        }
        loop {
            let Some(mut canary) = self.status.canary.clone() else { return };
            // A step below 0 (a hand-edited status) starts from the first step; the
            // loop then advances one step per pass, at most `steps.len()` times.
            canary.step = canary.step.max(0);
            let step = usize::try_from(canary.step).unwrap_or(0);
            let started = canary.step_started_at.as_ref().map_or(self.now, |t| t.0);
            let last = step >= steps.len();
            let pause = steps.get(step).and_then(|s| s.pause.as_ref());
            if last {
                canary.weight = 100;
                self.status.canary = Some(canary.clone());
            }
            let want = self.canary_replicas(canary.weight);
            let done = match pause {
                Some(pause) if !self.take(Command::Promote) => match pause.duration() {
                    Some(d) => {
                        let end = after(started, d);
                        if end > self.now {
                            self.wake_at(end);
                            let message = format!("revision {} paused at step {step} until {end}", canary.revision);
                            return self.set_phase(Phase::Paused, message);
                        }
                        true
                    }
                    None => {
                        let message = format!(
                            "revision {} paused at step {step} at {}%: waiting for promote \
                             (kubectl modelgate promote {})",
                            canary.revision, canary.weight, self.name
                        );
                        return self.set_phase(Phase::Paused, message);
                    }
                },
                Some(_) => true,
                None => ready >= want && self.gates_passed_since(started) || self.take(Command::Promote),
            };
            if !done {
                let message = if ready < want {
                    format!("revision {} at {}%: {ready}/{want} canary pods Ready", canary.revision, canary.weight)
                } else {
                    format!("revision {} at {}%: waiting for every gate to pass", canary.revision, canary.weight)
                };
                return self.set_phase(Phase::Progressing, message);
            }
            if last {
                return self.promote();
            }
            canary.step += 1;
            canary.step_started_at = Some(Time(self.now));
            self.enter_step(&mut canary);
            self.note(
                false,
                EventReason::StepCompleted,
                format!(
                    "revision {} completed step {step}; now at step {} ({}%)",
                    canary.revision, canary.step, canary.weight
                ),
            );
            self.status.canary = Some(canary);
        }
    }

    fn enter_step(&self, canary: &mut CanaryStatus) {
        match self.spec.strategy.steps.get(canary.step as usize) {
            Some(step) => {
                if let Some(w) = step.set_weight {
                    canary.weight = w;
                }
            }
            None => canary.weight = 100,
        }
    }

    fn promote(&mut self) {
        let Some(canary) = self.status.canary.take() else { return };
        self.record(history_of_canary(&canary, Outcome::Promoted, None, self.now));
        let warm_replicas = self.spec.rollback.warm_replicas(self.spec.replicas);
        self.status.warm = match &self.status.stable {
            Some(previous) if warm_replicas > 0 && previous.hash != canary.hash => Some(WarmStatus {
                revision: previous.revision,
                hash: previous.hash.clone(),
                replicas: warm_replicas,
                until: Some(Time(after(self.now, self.spec.rollback.keep_warm_window()))),
            }),
            _ => None,
        };
        self.status.stable = Some(RevisionStatus {
            revision: canary.revision,
            hash: canary.hash,
            target: canary.target.clone(),
            targets: canary.targets,
            sha256: canary.sha256,
            length: canary.length,
            files: canary.files,
            promoted_at: Some(Time(self.now)),
        });
        self.status.gates.clear();
        let message = format!("revision {} ({}) promoted: it serves 100%", canary.revision, canary.target);
        self.note(false, EventReason::Promoted, message.clone());
        self.set_condition(PROGRESSING, false, PROMOTED, message.clone());
        self.set_condition(DEGRADED, false, PROMOTED, "the newest revision is healthy".into());
        self.set_phase(Phase::Promoted, message);
    }

    /// The canary failed: roll back, or, with automatic rollback off and nobody having
    /// asked for it, hold and say so.
    fn fail(&mut self, failure: Failure, by: ByPerson) {
        let Failure { reason, message } = failure;
        let reason = reason.as_str();
        let Some(canary) = self.status.canary.clone() else { return };
        if !self.spec.rollback.automatic && by == ByPerson::No {
            let message = format!(
                "revision {} failed: {message}; automatic rollback is off: abort (modelgate.dev/abort) or fix it",
                canary.revision
            );
            if !self.condition_is(DEGRADED, "True", reason) {
                self.note(true, EventReason::RollbackNeeded, message.clone());
            }
            self.set_condition(DEGRADED, true, reason, message.clone());
            return self.set_phase(Phase::Paused, message);
        }
        self.status.canary = None;
        let summary = format!("{reason}: {message}");
        self.record(history_of_canary(&canary, Outcome::RolledBack, Some(bounded(&summary)), self.now));
        let to = match &self.status.stable {
            Some(s) => format!("revision {} serves again", s.revision),
            None => "no earlier revision exists, so nothing serves".into(),
        };
        let message = format!("revision {} ({}) rolled back: {summary}; {to}", canary.revision, canary.target);
        self.note(true, EventReason::RolledBack, message.clone());
        self.set_condition(DEGRADED, true, reason, message.clone());
        self.set_condition(PROGRESSING, false, ROLLED_BACK, message.clone());
        let phase = if self.status.stable.is_some() { Phase::RollingBack } else { Phase::RolledBack };
        self.set_phase(phase, message);
    }

    /// No canary: finish a rollback, keep the stable trusted, watch the post-promotion window.
    fn watch_stable(&mut self) {
        let Some(stable) = self.status.stable.clone() else { return };
        let health = self.obs.pods.get(&stable.hash).cloned().unwrap_or_default();
        if self.status.phase == Some(Phase::RollingBack) {
            if health.ready >= self.spec.replicas {
                let message = format!("rolled back: revision {} ({}) serves 100%", stable.revision, stable.target);
                self.note(false, EventReason::RollbackComplete, message.clone());
                self.set_phase(Phase::RolledBack, message);
            } else {
                // Keep the reason in view while the stable pods come back.
                let why = self.status.conditions.iter().find(|c| c.type_ == DEGRADED).map(|c| c.message.clone());
                let progress =
                    format!("{}/{} pods of revision {} Ready", health.ready, self.spec.replicas, stable.revision);
                self.status.message = Some(match why {
                    Some(why) => format!("{why} ({progress})"),
                    None => format!("rolling back: {progress}"),
                });
            }
        }

        match self.untrusted(&stable.model(), stable.sha256.as_deref()) {
            Some(Failure { reason, message }) => {
                let message =
                    format!("revision {} ({}) is no longer trusted: {message}", stable.revision, stable.target);
                let candidate = (self.spec.rollback.on_revocation == RevocationAction::Rollback)
                    .then(|| self.rollback_candidate(&stable.hash))
                    .flatten();
                if let Some(candidate) = candidate {
                    self.set_condition(TRUST_DEGRADED, true, &reason, message.clone());
                    return self.revert_to(candidate, "TrustRevoked", message);
                }
                let message = match self.spec.rollback.on_revocation {
                    RevocationAction::Rollback => {
                        format!("{message}; no earlier revision is still trusted, so it keeps serving")
                    }
                    RevocationAction::Alert => format!("{message}; onRevocation is Alert, so it keeps serving"),
                };
                if !self.condition_is(TRUST_DEGRADED, "True", &reason) {
                    self.note(true, EventReason::TrustDegraded, message.clone());
                }
                self.set_condition(TRUST_DEGRADED, true, &reason, message);
                return;
            }
            None => {
                if matches!(self.verdict(&stable.model().key()), Verdict::Trusted { .. }) {
                    let message =
                        format!("revision {} ({}) is trusted by its repository", stable.revision, stable.target);
                    self.set_condition(TRUST_DEGRADED, false, "TargetTrusted", message);
                } else {
                    self.wake(WAIT_FOR_TRUST);
                }
            }
        }

        if !self.window_open(&stable) {
            return;
        }
        let failure = match &health.problem {
            Some(PodProblem::Untrusted { message }) => Some(Failure::new("TrustFailure", message.clone())),
            Some(PodProblem::Hard { reason, message }) => Some(Failure::new(reason.clone(), message.clone())),
            _ => None,
        }
        .or_else(|| self.record_gates());
        self.wake_for_gates();
        let Some(Failure { reason, message }) = failure else { return };
        if !self.spec.rollback.automatic {
            if !self.condition_is(DEGRADED, "True", &reason) {
                self.note(
                    true,
                    EventReason::RollbackNeeded,
                    format!("revision {} failed after promotion: {message}", stable.revision),
                );
            }
            return self.set_condition(DEGRADED, true, &reason, message);
        }
        match self.rollback_candidate(&stable.hash) {
            Some(candidate) => self.revert_to(candidate, &reason, format!("after promotion: {message}")),
            None => {
                let message = format!(
                    "revision {} failed after promotion ({message}); no earlier trusted revision",
                    stable.revision
                );
                if !self.condition_is(DEGRADED, "True", &reason) {
                    self.note(true, EventReason::RollbackImpossible, message.clone());
                }
                self.set_condition(DEGRADED, true, &reason, message);
            }
        }
    }

    fn window_open(&mut self, stable: &RevisionStatus) -> bool {
        if self.status.phase != Some(Phase::Promoted) {
            return false;
        }
        let window = self.spec.rollback.post_promotion_window();
        let Some(end) = stable.promoted_at.as_ref().map(|t| after(t.0, window)) else { return false };
        if end <= self.now {
            return false;
        }
        self.wake_at(end);
        true
    }

    /// The newest earlier promoted revision whose workload still exists and whose target
    /// is still trusted with the same digest.
    fn rollback_candidate(&self, failed: &str) -> Option<HistoryEntry> {
        self.status
            .history
            .iter()
            .rev()
            .filter(|h| h.outcome == Outcome::Promoted && h.hash != failed && self.obs.workloads.contains_key(&h.hash))
            .find(|h| matches!(self.verdict(&h.model().key()), Verdict::Trusted { sha256, .. } if Some(&sha256) == h.sha256.as_ref()))
            .cloned()
    }

    fn revert_to(&mut self, to: HistoryEntry, reason: &str, message: String) {
        let Some(from) = self.status.stable.take() else { return };
        // Its warm pods serve again at once; the rest are scaled up.
        let warm = self.status.warm.take_if(|w| w.hash == to.hash);
        let message = match warm {
            Some(w) => format!("{message}; {} warm pod(s) serve at once", w.replicas),
            None => message,
        };
        let summary = format!("{reason}: {message}");
        self.record(HistoryEntry {
            revision: from.revision,
            hash: from.hash,
            target: from.target.clone(),
            targets: from.targets,
            sha256: from.sha256,
            length: from.length,
            files: from.files,
            outcome: Outcome::RolledBack,
            reason: Some(bounded(&summary)),
            started_at: from.promoted_at,
            finished_at: Some(Time(self.now)),
        });
        let message =
            format!("revision {} ({}) rolled back to revision {}: {summary}", from.revision, from.target, to.revision);
        self.status.stable = Some(RevisionStatus {
            revision: to.revision,
            hash: to.hash,
            target: to.target,
            targets: to.targets,
            sha256: to.sha256,
            length: to.length,
            files: to.files,
            promoted_at: Some(Time(self.now)),
        });
        self.status.gates.clear();
        self.note(true, EventReason::RolledBack, message.clone());
        self.set_condition(DEGRADED, true, reason, message.clone());
        self.set_phase(Phase::RollingBack, message);
    }

    /// Folds the checks evaluated now into the gate statuses; the first check past its
    /// limit is the reason to roll back.
    fn record_gates(&mut self) -> Option<Failure> {
        let checks = &self.spec.gates.checks;
        self.status.gates.retain(|g| checks.iter().any(|c| c.name == g.name));
        for outcome in &self.obs.gates {
            let index = match self.status.gates.iter().position(|g| g.name == outcome.name) {
                Some(i) => i,
                None => {
                    self.status.gates.push(GateStatus { name: outcome.name.clone(), ..Default::default() });
                    self.status.gates.len() - 1
                }
            };
            let Some(gate) = self.status.gates.get_mut(index) else { continue };
            gate.last_value = Some(bounded(&outcome.detail));
            gate.last_evaluated = Some(Time(self.obs.gates_started.map_or(self.now, |t| t.min(self.now))));
            gate.result = outcome.result;
            match outcome.result {
                GateResult::Pass => (gate.consecutive_failures, gate.consecutive_inconclusive) = (0, 0),
                GateResult::Fail => {
                    (gate.consecutive_failures, gate.consecutive_inconclusive) = (gate.consecutive_failures + 1, 0)
                }
                GateResult::Inconclusive => gate.consecutive_inconclusive += 1,
            }
        }
        let gates = &self.spec.gates;
        self.status.gates.iter().find_map(|g| {
            if g.consecutive_failures >= gates.failure_limit {
                let value = g.last_value.as_deref().unwrap_or("");
                let message = format!("check {} failed {} times in a row ({value})", g.name, g.consecutive_failures);
                Some(Failure::new("GateFailed", message))
            } else if g.consecutive_inconclusive >= gates.inconclusive_limit {
                let value = g.last_value.as_deref().unwrap_or("");
                let message = format!(
                    "check {} had no usable result {} times in a row ({value})",
                    g.name, g.consecutive_inconclusive
                );
                Some(Failure::new("GateInconclusive", message))
            } else {
                None
            }
        })
    }

    fn gates_passed_since(&self, since: Timestamp) -> bool {
        self.spec.gates.checks.iter().all(|check| {
            self.status.gates.iter().any(|g| {
                g.name == check.name
                    && g.result == GateResult::Pass
                    && g.last_evaluated.as_ref().is_some_and(|t| t.0 > since)
            })
        })
    }

    fn wake_for_gates(&mut self) {
        if !self.spec.gates.checks.is_empty() {
            self.wake(self.spec.gates.interval());
        }
    }

    /// Why, when the repository refuses `model` or now lists other bytes.
    fn untrusted(&self, model: &ModelRef, sha256: Option<&str>) -> Option<Failure> {
        let target = model.display();
        match self.verdict(&model.key()) {
            Verdict::Untrusted { reason, message } => Some(Failure { reason, message }),
            Verdict::Trusted { sha256: now, .. } if Some(now.as_str()) != sha256 => Some(Failure::new(
                "TargetChanged",
                format!(
                    "the repository now lists {target:?} with sha256 {}, not the verified {}",
                    short(&now),
                    short(sha256.unwrap_or(""))
                ),
            )),
            _ => None,
        }
    }

    /// The verdict on a model, by `ModelRef::key`.
    fn verdict(&self, key: &str) -> Verdict {
        self.obs.verdicts.get(key).cloned().unwrap_or_else(|| Verdict::Unknown { message: "not looked up yet".into() })
    }

    /// The revision number of a hash seen before, or the next one.
    fn revision_for(&self, hash: &str) -> i64 {
        let s = &self.status;
        let known = s.stable.iter().map(|r| (r.hash.as_str(), r.revision));
        let known = known.chain(s.canary.iter().map(|c| (c.hash.as_str(), c.revision)));
        let known = known.chain(s.history.iter().map(|h| (h.hash.as_str(), h.revision)));
        let known: Vec<_> = known.collect();
        known
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| known.iter().map(|(_, r)| *r).max().unwrap_or(0) + 1)
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
        self.events.push(Note { warning, reason, message });
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

    fn set_verified(&mut self, status: &str, reason: &str, message: String) {
        let mut c = condition(VERIFIED, true, reason, message, self.generation, self.now);
        c.status = status.into();
        set_condition(&mut self.status.conditions, c);
    }

    fn condition_is(&self, type_: &str, status: &str, reason: &str) -> bool {
        self.status.conditions.iter().any(|c| c.type_ == type_ && c.status == status && c.reason == reason)
    }

    fn serving_message(&self) -> String {
        match &self.status.stable {
            Some(s) => format!("revision {} ({}) serves 100%", s.revision, s.target),
            None => "nothing serves yet".into(),
        }
    }

    /// `modelgate.dev/drop-warm`: the warm pods go now instead of at the window's end.
    fn drop_warm(&mut self) {
        match self.status.warm.take() {
            Some(w) => {
                let message = format!("{} warm pod(s) of revision {} dropped on request", w.replicas, w.revision);
                self.note(false, EventReason::WarmDropped, message);
            }
            None => self.note(false, EventReason::WarmDropped, "no warm pods to drop".into()),
        }
    }

    /// Warm pods last until their window ends, and only while their revision is neither
    /// serving nor rolling out again, and still trusted: a revoked model is not kept
    /// loaded even out of service.
    fn expire_warm(&mut self) {
        let Some(warm) = self.status.warm.clone() else { return };
        let entry = self.status.history.iter().rev().find(|h| h.hash == warm.hash);
        if let Some(Failure { reason, .. }) = entry.and_then(|h| self.untrusted(&h.model(), h.sha256.as_deref())) {
            let message =
                format!("warm pods of revision {} dropped: its model is no longer trusted ({reason})", warm.revision);
            self.note(true, EventReason::WarmDropped, message);
            self.status.warm = None;
            return;
        }
        let current = |h: &str| {
            self.status.stable.as_ref().is_some_and(|s| s.hash == h)
                || self.status.canary.as_ref().is_some_and(|c| c.hash == h)
        };
        match warm.until.as_ref().map(|t| t.0) {
            Some(until) if until > self.now && !current(&warm.hash) => self.wake_at(until),
            _ => self.status.warm = None,
        }
    }

    fn wake(&mut self, after: Duration) {
        self.requeue = self.requeue.min(after.max(Duration::from_secs(1)));
    }

    fn wake_at(&mut self, at: Timestamp) {
        let secs = at.as_second().saturating_sub(self.now.as_second()).max(1).unsigned_abs();
        self.wake(Duration::from_secs(secs));
    }

    fn finish(mut self, admitted: bool) -> Plan {
        if admitted {
            self.expire_warm();
        }
        let mut scale: std::collections::BTreeMap<String, i32> =
            self.obs.workloads.iter().map(|(hash, w)| (hash.clone(), if admitted { 0 } else { w.replicas })).collect();
        let mut idle = std::collections::BTreeSet::new();
        let replicas = self.spec.replicas.max(0);
        if admitted {
            let canary_n = self.status.canary.as_ref().map_or(0, |c| self.canary_replicas(c.weight));
            // The stable revision gives up a pod only for a Ready canary pod (a surge,
            // never an outage): a canary that crashes, is refused or loads slowly never
            // leaves fewer than `replicas` pods serving.
            let canary_ready =
                self.status.canary.as_ref().map_or(0, |c| self.obs.pods.get(&c.hash).map_or(0, |h| h.ready));
            if let Some(stable) = &self.status.stable {
                let serving = replicas - canary_n.min(canary_ready);
                // During a rollout the stable revision keeps the pods it will leave warm:
                // loaded, and out of service once the canary serves every replica.
                let warm = match &self.status.canary {
                    Some(c) if c.hash != stable.hash => self.spec.rollback.warm_replicas(replicas),
                    _ => 0,
                };
                scale.insert(stable.hash.clone(), serving.max(warm));
                if serving <= 0 && warm > 0 {
                    idle.insert(stable.hash.clone());
                }
            }
            if let Some(canary) = &self.status.canary {
                scale.insert(canary.hash.clone(), canary_n);
            }
            if let Some(warm) = &self.status.warm {
                scale.insert(warm.hash.clone(), warm.replicas.clamp(0, replicas));
                idle.insert(warm.hash.clone());
            }
        }
        let mut keep: Vec<&str> = self.status.stable.iter().map(|s| s.hash.as_str()).collect();
        keep.extend(self.status.canary.iter().map(|c| c.hash.as_str()));
        keep.extend(self.status.warm.iter().map(|w| w.hash.as_str()));
        keep.extend(self.status.history.iter().rev().take(KEEP_REVISIONS).map(|h| h.hash.as_str()));
        let prune: Vec<String> =
            scale.iter().filter(|(h, n)| **n == 0 && !keep.contains(&h.as_str())).map(|(h, _)| h.clone()).collect();
        for hash in &prune {
            scale.remove(hash);
        }
        Plan { status: self.status, scale, prune, idle, events: self.events, requeue: self.requeue }
    }
}

fn history_of_canary(canary: &CanaryStatus, outcome: Outcome, reason: Option<String>, now: Timestamp) -> HistoryEntry {
    HistoryEntry {
        revision: canary.revision,
        hash: canary.hash.clone(),
        target: canary.target.clone(),
        targets: canary.targets.clone(),
        sha256: canary.sha256.clone(),
        length: canary.length,
        files: canary.files,
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
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or_default())
}
