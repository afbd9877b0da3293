//! The workloads a decided status implies: replica counts, warm (idle) revisions, old workloads to prune.

use super::*;

impl Planner<'_> {
    pub(super) fn finish(mut self, admitted: bool) -> Plan {
        if admitted {
            self.expire_warm();
        }
        self.readiness();
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
                self.status.canary.as_ref().map_or(0, |c| self.obs.pods.get(&c.revision.hash).map_or(0, |h| h.ready));
            let stopped = self.stable_stopped();
            if let Some(stable) = &self.status.stable {
                // A revoked model with nothing trusted to return to serves nothing.
                let serving = if stopped { 0 } else { replicas - canary_n.min(canary_ready) };
                // During a rollout the stable revision keeps the pods it will leave warm:
                // loaded, and out of service once the canary serves every replica.
                let warm = match &self.status.canary {
                    Some(c) if c.revision.hash != stable.revision.hash && !stopped => {
                        self.spec.rollback.warm_replicas(replicas)
                    }
                    _ => 0,
                };
                scale.insert(stable.revision.hash.clone(), serving.max(warm));
                if serving <= 0 && warm > 0 {
                    idle.insert(stable.revision.hash.clone());
                }
            }
            if let Some(canary) = &self.status.canary {
                scale.insert(canary.revision.hash.clone(), canary_n);
            }
            // Baseline pods: on top of the stable ones (a surge, never in their place),
            // the canary's size, gone with the canary (pruned once not scaled).
            if let Some((key, _)) = self.baseline().filter(|_| !stopped) {
                scale.insert(key, canary_n);
            }
            if let Some(warm) = &self.status.warm {
                scale.insert(warm.hash.clone(), warm.replicas.clamp(0, replicas));
                idle.insert(warm.hash.clone());
            }
        }
        let mut keep: Vec<&str> = self.status.stable.iter().map(|s| s.revision.hash.as_str()).collect();
        keep.extend(self.status.canary.iter().map(|c| c.revision.hash.as_str()));
        keep.extend(self.status.warm.iter().map(|w| w.hash.as_str()));
        keep.extend(self.status.history.iter().rev().take(KEEP_REVISIONS).map(|h| h.revision.hash.as_str()));
        let prune: Vec<String> =
            scale.iter().filter(|(h, n)| **n == 0 && !keep.contains(&h.as_str())).map(|(h, _)| h.clone()).collect();
        for hash in &prune {
            scale.remove(hash);
        }
        let restore =
            self.obs.changed.iter().map(|(hash, _)| hash).find(|h| **h == self.desired && scale.contains_key(*h));
        let restore = restore.cloned();
        Plan { status: self.status, scale, prune, restore, idle, events: self.events, requeue: self.requeue }
    }

    /// `Ready` and `status.ready`, from the decided status and the pods seen: Ready when
    /// the spec's revision is the stable one, no canary or rollback is under way, and
    /// all `spec.replicas` of its pods are Ready.
    fn readiness(&mut self) {
        let ready_of = |hash: Option<&str>| hash.and_then(|h| self.obs.pods.get(h)).map_or(0, |p| p.ready);
        let stable_ready = ready_of(self.status.stable.as_ref().map(|s| s.revision.hash.as_str()));
        let canary_ready = ready_of(self.status.canary.as_ref().map(|c| c.revision.hash.as_str()));
        let replicas = self.spec.replicas.max(0);
        self.status.ready = Some(format!("{}/{replicas}", stable_ready.saturating_add(canary_ready)));
        let stable = self.status.stable.as_ref();
        let (ready, reason, message) = match (stable, &self.status.canary, self.status.phase) {
            (_, Some(canary), _) => {
                (false, "RolloutInProgress", format!("revision {} is rolling out", canary.revision.number))
            }
            (Some(s), None, Some(Phase::Revoked)) => {
                (false, "Revoked", format!("revision {} is no longer trusted and scaled to zero", s.revision.number))
            }
            (Some(s), None, Some(Phase::RollingBack)) => {
                (false, "RollingBack", format!("rolling back to revision {}", s.revision.number))
            }
            (Some(s), None, _) if s.revision.hash != self.desired => (
                false,
                "NotServingSpec",
                format!(
                    "revision {} serves, not the spec's ({}): {}",
                    s.revision.number,
                    self.status.phase.map_or("Verifying", |p| p.as_str()),
                    self.status.message.as_deref().unwrap_or_default()
                ),
            ),
            (Some(s), None, _) if stable_ready < replicas => (
                false,
                "PodsNotReady",
                format!("{stable_ready}/{replicas} pods of revision {} Ready", s.revision.number),
            ),
            (Some(s), None, _) => (
                true,
                "Serving",
                format!(
                    "revision {} ({}) serves with {stable_ready}/{replicas} pods Ready",
                    s.revision.number, s.revision.target
                ),
            ),
            (None, None, _) => (false, "NothingServes", "no revision serves yet".to_string()),
        };
        let message = truncated(&message, 1000);
        self.set_condition(READY, ready, reason, message);
    }
}
