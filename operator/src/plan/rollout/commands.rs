//! Commands given through annotations: promote, abort, retry, rollback, drop-warm; and a new spec replacing a rollout.

use super::*;

impl Planner<'_> {
    /// A command is pending when its annotation has a value not yet carried out.
    pub(super) fn take(&mut self, command: Command) -> bool {
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

    pub(super) fn supersede(&mut self) {
        let Some(canary) = self.status.canary.take_if(|c| c.revision.hash != self.desired) else { return };
        self.note(
            false,
            EventReason::Superseded,
            format!(
                "revision {} ({}) was superseded by a new spec before it was promoted",
                canary.revision.number, canary.revision.target
            ),
        );
        let why = Some("spec changed during the rollout".into());
        self.record(history_of_canary(&canary, Outcome::Superseded, why, self.now));
        self.status.gates.clear();
    }

    /// The spec's revision failed last time and nobody asked to retry it.
    pub(super) fn blocked(&self) -> bool {
        self.status.history.last().is_some_and(|h| {
            h.revision.hash == self.desired && matches!(h.outcome, Outcome::RolledBack | Outcome::Rejected)
        })
    }

    /// `modelgate.dev/rollback: N@token`: back to promoted revision N, if it still has its
    /// workload and its target is still trusted; a running canary goes first.
    pub(super) fn rollback_on_request(&mut self) {
        let value = self.obs.commands.rollback.clone().unwrap_or_default();
        let Some(to) = value.split('@').next().and_then(|n| n.trim().parse::<i64>().ok()) else {
            let message =
                format!("modelgate.dev/rollback={value:?} names no revision; use <revision>@<token>, such as 3@1");
            return self.note(true, EventReason::RollbackRefused, message);
        };
        if self.status.canary.is_some() {
            self.fail(Failure::new("RollbackRequested", format!("rollback to revision {to} requested")), ByPerson::Yes);
        }
        if self.status.stable.as_ref().is_some_and(|s| s.revision.number == to) {
            return;
        }
        let Some(entry) = rollback::promoted_revision(&self.status, to).cloned() else {
            let message = format!("revision {to} was never promoted (see status.history); nothing changed");
            return self.note(true, EventReason::RollbackRefused, message);
        };
        let refusal = if !self.obs.workloads.contains_key(&entry.revision.hash) {
            Some("its ReplicaSet no longer exists (only the newest revisions are kept)".to_string())
        } else {
            rollback::untrusted_for_rollback(&entry, &self.verdict(&entry.revision.model()))
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

    /// `modelgate.dev/drop-warm`: the warm pods go now instead of at the window's end.
    pub(super) fn drop_warm(&mut self) {
        match self.status.warm.take() {
            Some(w) => {
                let message = format!("{} warm pod(s) of revision {} dropped on request", w.replicas, w.revision);
                self.note(false, EventReason::WarmDropped, message);
            }
            None => self.note(false, EventReason::WarmDropped, "no warm pods to drop".into()),
        }
    }
}
