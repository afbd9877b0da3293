//! Rolling back: a failed canary, and a return to an earlier revision.

use super::*;

/// The promoted revision `to` in `status.history` (the newest entry for it), if it
/// was ever promoted: the only revisions a rollback may return to.
pub fn promoted_revision(status: &ModelReleaseStatus, to: i64) -> Option<&HistoryEntry> {
    status.history.iter().rev().find(|h| h.revision.number == to && h.outcome == Outcome::Promoted)
}

/// The revision a rollback without a number returns to: the newest promoted one that
/// is not serving now.
pub fn previous_promoted(status: &ModelReleaseStatus) -> Option<&HistoryEntry> {
    let stable = status.stable.as_ref().map(|s| s.revision.number);
    status.history.iter().rev().find(|h| h.outcome == Outcome::Promoted && Some(h.revision.number) != stable)
}

/// Why `entry` may not serve again, given what its repository says about its model now:
/// it must still be signed, with the very bytes it served. `None`: it may.
pub fn untrusted_for_rollback(entry: &HistoryEntry, verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Trusted { sha256, image, .. }
            if Some(sha256) == entry.revision.sha256.as_ref() && *image != entry.revision.image =>
        {
            Some(format!(
                "its image {:?} is now signed as {}, not the {} it served",
                entry.revision.target,
                image.as_deref().unwrap_or("-"),
                entry.revision.image.as_deref().unwrap_or("-")
            ))
        }
        Verdict::Trusted { sha256, .. } if Some(sha256) == entry.revision.sha256.as_ref() => None,
        Verdict::Trusted { sha256, .. } => Some(format!(
            "its target {:?} is now signed with sha256 {sha256}, not the {} it served",
            entry.revision.target,
            entry.revision.sha256.as_deref().unwrap_or("?")
        )),
        Verdict::Untrusted { message, .. } => {
            Some(format!("its target {:?} is no longer trusted (not trusted now: {message})", entry.revision.target))
        }
        Verdict::Unknown { message } => {
            Some(format!("its target {:?} cannot be verified now: {message}", entry.revision.target))
        }
    }
}

impl Planner<'_> {
    /// The canary failed: roll back, or, with automatic rollback off and nobody having
    /// asked for it, hold and say so.
    pub(super) fn fail(&mut self, failure: Failure, by: ByPerson) {
        let Failure { reason, message } = failure;
        let reason = reason.as_str();
        let Some(canary) = self.status.canary.clone() else { return };
        if !self.spec.rollback.automatic && by == ByPerson::No {
            let message = format!(
                "revision {} failed: {message}; automatic rollback is off: abort (modelgate.dev/abort) or fix it",
                canary.revision.number
            );
            self.raise(DEGRADED, true, reason, EventReason::RollbackNeeded, message.clone(), message.clone());
            return self.set_phase(Phase::Paused, message);
        }
        self.status.canary = None;
        let summary = format!("{reason}: {message}");
        self.record(history_of_canary(&canary, Outcome::RolledBack, Some(bounded(&summary)), self.now));
        let to = match &self.status.stable {
            Some(s) => format!("revision {} serves again", s.revision.number),
            None => "no earlier revision exists, so nothing serves".into(),
        };
        let message =
            format!("revision {} ({}) rolled back: {summary}; {to}", canary.revision.number, canary.revision.target);
        self.note_because(EventReason::RolledBack, reason, message.clone());
        self.set_condition(DEGRADED, true, reason, message.clone());
        self.set_condition(PROGRESSING, false, ROLLED_BACK, message.clone());
        let phase = if self.status.stable.is_some() { Phase::RollingBack } else { Phase::RolledBack };
        self.set_phase(phase, message);
    }

    /// The newest earlier promoted revision whose workload still exists and whose target
    /// is still trusted with the same digest.
    pub(super) fn rollback_candidate(&self, failed: &str) -> Option<HistoryEntry> {
        self.status
            .history
            .iter()
            .rev()
            .filter(|h| {
                h.outcome == Outcome::Promoted
                    && h.revision.hash != failed
                    && self.obs.workloads.contains_key(&h.revision.hash)
            })
            .find(|h| untrusted_for_rollback(h, &self.verdict(&h.revision.model())).is_none())
            .cloned()
    }

    pub(super) fn revert_to(&mut self, to: HistoryEntry, reason: &str, message: String) {
        let Some(from) = self.status.stable.take() else { return };
        // Its warm pods serve again at once; the rest are scaled up.
        let warm = self.status.warm.take_if(|w| w.hash == to.revision.hash);
        let message = match warm {
            Some(w) => format!("{message}; {} warm pod(s) serve at once", w.replicas),
            None => message,
        };
        let summary = format!("{reason}: {message}");
        let message = format!(
            "revision {} ({}) rolled back to revision {}: {summary}",
            from.revision.number, from.revision.target, to.revision.number
        );
        self.record(HistoryEntry {
            revision: from.revision,
            outcome: Outcome::RolledBack,
            reason: Some(bounded(&summary)),
            started_at: from.promoted_at,
            finished_at: Some(Time(self.now)),
        });
        self.status.stable = Some(RevisionStatus { revision: to.revision, promoted_at: Some(Time(self.now)) });
        self.status.gates.clear();
        self.note_because(EventReason::RolledBack, reason, message.clone());
        self.set_condition(DEGRADED, true, reason, message.clone());
        self.set_phase(Phase::RollingBack, message);
    }
}
