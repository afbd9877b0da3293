//! No canary: finishing a rollback, keeping the serving model trusted, the post-promotion window, warm pods expiring.

use super::*;

impl Planner<'_> {
    /// No canary: finish a rollback, keep the stable trusted, watch the post-promotion window.
    pub(super) fn watch_stable(&mut self) {
        let Some(stable) = self.status.stable.clone() else { return };
        let health = self.obs.pods.get(&stable.revision.hash).cloned().unwrap_or_default();
        if self.status.phase == Some(Phase::RollingBack) {
            self.finish_rollback(&stable, &health);
        }
        if self.keep_trusted(&stable) && self.window_open(&stable) {
            self.judge_after_promotion(&stable, &health);
        }
    }

    /// The same bytes signed anew (another key, a renewed certificate) or no longer
    /// asked to be signed: status names the signer that vouches for them now.
    fn record_signer(&mut self, stable: &RevisionStatus, signer: Option<String>) {
        if stable.revision.signer == signer {
            return;
        }
        let now = signer.as_deref().unwrap_or("nobody (the repository no longer asks for a signature)");
        let message = format!(
            "revision {} ({}) is now signed by {now}, was {}",
            stable.revision.number,
            stable.revision.target,
            stable.revision.signer.as_deref().unwrap_or("unsigned")
        );
        if let Some(s) = self.status.stable.as_mut() {
            s.revision.signer = signer;
        }
        self.note(false, EventReason::SignerChanged, message);
    }

    /// A rollback is complete when the stable revision's pods are all Ready again.
    fn finish_rollback(&mut self, stable: &RevisionStatus, health: &PodHealth) {
        if health.ready >= self.spec.replicas {
            let message =
                format!("rolled back: revision {} ({}) serves 100%", stable.revision.number, stable.revision.target);
            self.note(false, EventReason::RollbackComplete, message.clone());
            self.set_phase(Phase::RolledBack, message);
        } else {
            // Keep the reason in view while the stable pods come back.
            let why = self.status.conditions.iter().find(|c| c.type_ == DEGRADED).map(|c| c.message.clone());
            let progress =
                format!("{}/{} pods of revision {} Ready", health.ready, self.spec.replicas, stable.revision.number);
            self.status.message = Some(match why {
                Some(why) => format!("{why} ({progress})"),
                None => format!("rolling back: {progress}"),
            });
        }
    }

    /// Reacts to the serving model losing its trust (`spec.rollback.onRevocation`).
    /// `false`: it did (a rollback started, or TrustDegraded is raised), and nothing
    /// else is judged now.
    fn keep_trusted(&mut self, stable: &RevisionStatus) -> bool {
        let Some(Failure { reason, message }) = self.untrusted(&stable.revision) else {
            if let Verdict::Trusted { signer, .. } = self.verdict(&stable.revision.model()) {
                self.record_signer(stable, signer);
                let message = format!(
                    "revision {} ({}) is trusted by its repository",
                    stable.revision.number, stable.revision.target
                );
                if self.status.phase == Some(Phase::Revoked) {
                    // Trust returned (the revocation was itself withdrawn): it serves again.
                    let phase = if stable.revision.hash == self.desired { Phase::Promoted } else { Phase::RolledBack };
                    self.set_phase(phase, format!("{message} again; it serves"));
                }
                self.set_condition(TRUST_DEGRADED, false, "TargetTrusted", message);
            } else {
                self.wake(WAIT_FOR_TRUST);
            }
            return true;
        };
        let message =
            format!("revision {} ({}) is no longer trusted: {message}", stable.revision.number, stable.revision.target);
        let action = self.on_revocation();
        let candidate =
            (action == RevocationAction::Rollback).then(|| self.rollback_candidate(&stable.revision.hash)).flatten();
        if let Some(candidate) = candidate {
            self.set_condition(TRUST_DEGRADED, true, &reason, message.clone());
            self.revert_to(candidate, "TrustRevoked", message);
            return false;
        }
        if action == RevocationAction::Rollback {
            // Nothing trusted is left: an outage is the price of a revocation.
            let message = format!("{message}; no earlier revision is still trusted, so it is scaled to zero");
            if self.status.phase != Some(Phase::Revoked) {
                self.note(true, EventReason::RollbackImpossible, message.clone());
            }
            self.set_condition(TRUST_DEGRADED, true, &reason, message.clone());
            self.set_phase(Phase::Revoked, message);
            return false;
        }
        let message = format!("{message}; onRevocation is Alert, so it keeps serving");
        self.raise(TRUST_DEGRADED, true, &reason, EventReason::TrustDegraded, message.clone(), message);
        false
    }

    /// What a revoked model does: the stricter of the release's `onRevocation` and its
    /// cluster repository's policy.
    pub(super) fn on_revocation(&self) -> RevocationAction {
        let repository = match &self.obs.repository {
            Repository::Found { on_revocation } => *on_revocation,
            _ => None,
        };
        policy::on_revocation(repository, self.spec.rollback.on_revocation)
    }

    /// Whether the stable revision must serve nothing: what a revocation does is to stop
    /// serving, and its model is no longer trusted (also while a canary runs: pausing a
    /// rollout must not keep a revoked model serving), or it was stopped and nothing
    /// says it is trusted again (a verdict not known yet after a restart).
    pub(super) fn stable_stopped(&self) -> bool {
        self.status.stable.as_ref().is_some_and(|s| {
            let trusted = matches!(self.verdict(&s.revision.model()), Verdict::Trusted { .. });
            self.on_revocation() == RevocationAction::Rollback
                && (self.untrusted(&s.revision).is_some() || (self.status.phase == Some(Phase::Revoked) && !trusted))
        })
    }

    /// In the post-promotion window, a revision that crashes, is refused in its pods or
    /// fails its checks goes back to the previous one (or says why it cannot).
    fn judge_after_promotion(&mut self, stable: &RevisionStatus, health: &PodHealth) {
        let failure = Failure::of_pods(health).or_else(|| self.record_gates());
        self.wake_for_gates();
        let Some(Failure { reason, message }) = failure else { return };
        if !self.spec.rollback.automatic {
            let said = format!("revision {} failed after promotion: {message}", stable.revision.number);
            return self.raise(DEGRADED, true, &reason, EventReason::RollbackNeeded, said, message);
        }
        match self.rollback_candidate(&stable.revision.hash) {
            Some(candidate) => self.revert_to(candidate, &reason, format!("after promotion: {message}")),
            None => {
                let message = format!(
                    "revision {} failed after promotion ({message}); no earlier trusted revision",
                    stable.revision.number
                );
                self.raise(DEGRADED, true, &reason, EventReason::RollbackImpossible, message.clone(), message);
            }
        }
    }

    pub(super) fn window_open(&mut self, stable: &RevisionStatus) -> bool {
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

    /// Warm pods last until their window ends, and only while their revision is neither
    /// serving nor rolling out again, and still trusted: a revoked model is not kept
    /// loaded even out of service.
    pub(super) fn expire_warm(&mut self) {
        let Some(warm) = self.status.warm.clone() else { return };
        let entry = self.status.history.iter().rev().find(|h| h.revision.hash == warm.hash);
        if let Some(Failure { reason, .. }) = entry.and_then(|h| self.untrusted(&h.revision)) {
            let message =
                format!("warm pods of revision {} dropped: its model is no longer trusted ({reason})", warm.revision);
            self.note(true, EventReason::WarmDropped, message);
            self.status.warm = None;
            return;
        }
        let current = |h: &str| {
            self.status.stable.as_ref().is_some_and(|s| s.revision.hash == h)
                || self.status.canary.as_ref().is_some_and(|c| c.revision.hash == h)
        };
        match warm.until.as_ref().map(|t| t.0) {
            Some(until) if until > self.now && !current(&warm.hash) => self.wake_at(until),
            _ => self.status.warm = None,
        }
    }
}
