//! The canary: verified and started, its progress and deadline, its steps, its promotion.

use super::*;

impl Planner<'_> {
    /// Verifies the spec's target; a trusted one becomes the canary.
    pub(super) fn start(&mut self) {
        let model = self.spec.model.model();
        let target = model.display();
        let revision = self.revision_for(&self.desired);
        match self.verdict(&model) {
            Verdict::Unknown { message } => {
                self.set_verified(
                    ConditionStatus::Unknown,
                    "Verifying",
                    format!("cannot verify {target:?} yet: {message}"),
                );
                self.set_phase(Phase::Verifying, format!("verifying target {target:?}: {message}"));
                self.wake(WAIT_FOR_TRUST);
            }
            Verdict::Untrusted { reason, message } => {
                let serving = match &self.status.stable {
                    Some(s) => format!("; revision {} keeps serving", s.revision.number),
                    None => String::new(),
                };
                let message =
                    format!("target {target:?} failed verification: {message}; nothing was deployed{serving}");
                let reason = reason.as_str();
                self.set_verified(ConditionStatus::False, reason, message.clone());
                self.record(HistoryEntry {
                    revision: RevisionRef {
                        number: revision,
                        hash: self.desired.clone(),
                        target,
                        targets: model.list(),
                        ..Default::default()
                    },
                    outcome: Outcome::Rejected,
                    reason: Some(reason.into()),
                    started_at: Some(Time(self.now)),
                    finished_at: Some(Time(self.now)),
                });
                self.note_because(EventReason::Rejected, reason, message.clone());
                self.set_phase(Phase::Rejected, message);
            }
            Verdict::Trusted { sha256, length, files, signer, image } => {
                let verified = RevisionRef {
                    number: revision,
                    hash: self.desired.clone(),
                    target,
                    targets: model.list(),
                    sha256: Some(sha256),
                    length: Some(length),
                    files: Some(files),
                    signer,
                    image,
                };
                self.begin(verified);
            }
        }
    }

    /// A verified revision becomes the canary: at its first step, or at full size for
    /// a release's first revision.
    fn begin(&mut self, verified: RevisionRef) {
        let (revision, target) = (verified.number, verified.target.clone());
        let (sha256, length, files) =
            (verified.sha256.clone().unwrap_or_default(), verified.length.unwrap_or(0), verified.files.unwrap_or(1));
        let mut what = match files {
            1 => format!("{target:?}: sha256 {sha256}, {length} bytes"),
            n => format!("{target:?}: {n} files, {length} bytes, manifest sha256 {sha256}"),
        };
        if let Some(signer) = &verified.signer {
            what.push_str(&format!(", signed by {signer}"));
        }
        if let Some(image) = &verified.image {
            what.push_str(&format!(", image {image}"));
        }
        let mut canary = CanaryStatus {
            revision: verified,
            step: 0,
            weight: 0,
            started_at: Some(Time(self.now)),
            step_started_at: Some(Time(self.now)),
            pods: None,
        };
        if self.status.stable.is_none() {
            canary.step = self.spec.strategy.steps.len() as i32;
        } else {
            self.enter_step(&mut canary);
        }
        self.set_verified(ConditionStatus::True, "TargetVerified", what);
        self.note(
            false,
            EventReason::RolloutStarted,
            format!("revision {revision} ({target}, sha256 {}) verified; rolling out", short(&sha256)),
        );
        self.status.canary = Some(canary);
        self.status.gates.clear();
        self.status.analysis = None;
        self.set_phase(Phase::Progressing, format!("revision {revision} verified; rolling out"));
    }

    pub(super) fn progress(&mut self) {
        let Some(canary) = self.status.canary.clone() else { return };
        if let Some(Failure { reason, message }) = self.untrusted(&canary.revision) {
            return self.fail(Failure::new("TrustFailure", format!("{reason}: {message}")), ByPerson::No);
        }
        let health = self.obs.pods.get(&canary.revision.hash).cloned().unwrap_or_default();
        if let Some(failure) = Failure::of_pods(&health) {
            return self.fail(failure, ByPerson::No);
        }
        if let Some(failure) = self.record_gates() {
            return self.fail(failure, ByPerson::No);
        }
        let want = self.canary_replicas(canary.weight);
        let baseline_ready = self.baseline().is_none_or(|(_, ready)| ready >= want);
        if let Some(failure) = self.record_analysis(health.ready >= want && baseline_ready) {
            return self.fail(failure, ByPerson::No);
        }
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
                self.stall(canary.revision.number, message);
            } else {
                self.wake_at(after(since, deadline));
            }
        } else if self.condition_is(PROGRESSING, ConditionStatus::False, DEADLINE_EXCEEDED) {
            self.set_condition(PROGRESSING, true, "ProgressResumed", "the canary's pods are Ready".into());
            self.set_condition(DEGRADED, false, "ProgressResumed", "the canary's pods are Ready".into());
        }
        self.wake_for_gates();
        if self.spec.paused {
            let message = format!(
                "revision {} paused at step {} (spec.paused); gates keep running",
                canary.revision.number, canary.step
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
    pub(super) fn record_progress(&mut self, health: &PodHealth) -> Timestamp {
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
    pub(super) fn stall(&mut self, revision: i64, why: String) {
        let message = format!(
            "revision {revision} is stalled: {why}; it is the first revision, so there is nothing to roll back to: \
             its pods are kept and the rollout continues when they become Ready (fix the cause, or delete the release)"
        );
        let event = EventReason::ProgressDeadlineExceeded;
        self.raise(PROGRESSING, false, DEADLINE_EXCEEDED, event, message.clone(), message.clone());
        self.set_condition(DEGRADED, true, DEADLINE_EXCEEDED, message.clone());
        self.stalled = Some(message);
    }

    /// Walks the steps as far as they allow now.
    pub(super) fn advance(&mut self, ready: i32) {
        let steps = &self.spec.strategy.steps;
        if self.take(Command::PromoteFull)
            && let Some(canary) = self.status.canary.as_mut()
            && (canary.step as usize) < steps.len()
        {
            canary.step = steps.len() as i32;
            canary.step_started_at = Some(Time(self.now));
            canary.weight = 100;
            let message =
                format!("revision {} skips its remaining steps (promote-full): now at 100%", canary.revision.number);
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
                            let message =
                                format!("revision {} paused at step {step} until {end}", canary.revision.number);
                            return self.set_phase(Phase::Paused, message);
                        }
                        true
                    }
                    None => {
                        let message = format!(
                            "revision {} paused at step {step} at {}%: waiting for promote \
                             (kubectl modelgate promote {})",
                            canary.revision.number, canary.weight, self.name
                        );
                        return self.set_phase(Phase::Paused, message);
                    }
                },
                Some(_) => true,
                None => {
                    ready >= want && self.gates_passed_since(started) && self.analysis_passed_since(started)
                        || self.take(Command::Promote)
                }
            };
            if !done {
                let message = self.waiting_for(&canary, ready, want, started);
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
                    canary.revision.number, canary.step, canary.weight
                ),
            );
            self.status.canary = Some(canary);
        }
    }

    /// What a `setWeight` step waits for: its pods, its gates, or the judge.
    fn waiting_for(&self, canary: &CanaryStatus, ready: i32, want: i32, started: Timestamp) -> String {
        let (revision, weight) = (canary.revision.number, canary.weight);
        if ready < want {
            format!("revision {revision} at {weight}%: {ready}/{want} canary pods Ready")
        } else if !self.gates_passed_since(started) {
            format!("revision {revision} at {weight}%: waiting for every gate to pass")
        } else {
            format!("revision {revision} at {weight}%: waiting for the judge to pass it")
        }
    }

    pub(super) fn enter_step(&self, canary: &mut CanaryStatus) {
        match self.spec.strategy.steps.get(canary.step as usize) {
            Some(step) => {
                if let Some(w) = step.set_weight {
                    canary.weight = w;
                }
            }
            None => canary.weight = 100,
        }
    }

    pub(super) fn promote(&mut self) {
        let Some(canary) = self.status.canary.take() else { return };
        self.record(history_of_canary(&canary, Outcome::Promoted, None, self.now));
        let warm_replicas = self.spec.rollback.warm_replicas(self.spec.replicas);
        self.status.warm = match &self.status.stable {
            Some(previous) if warm_replicas > 0 && previous.revision.hash != canary.revision.hash => Some(WarmStatus {
                revision: previous.revision.number,
                hash: previous.revision.hash.clone(),
                replicas: warm_replicas,
                until: Some(Time(after(self.now, self.spec.rollback.keep_warm_window()))),
            }),
            _ => None,
        };
        self.status.stable =
            Some(RevisionStatus { revision: canary.revision.clone(), promoted_at: Some(Time(self.now)) });
        self.status.gates.clear();
        let message =
            format!("revision {} ({}) promoted: it serves 100%", canary.revision.number, canary.revision.target);
        self.note(false, EventReason::Promoted, message.clone());
        self.set_condition(PROGRESSING, false, PROMOTED, message.clone());
        self.set_condition(DEGRADED, false, PROMOTED, "the newest revision is healthy".into());
        self.set_phase(Phase::Promoted, message);
    }
}
