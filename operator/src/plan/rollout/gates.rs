//! Gate results: recorded against their limits, passed since a step began, when to look again.

use super::*;

impl Planner<'_> {
    /// Folds the checks evaluated now into the gate statuses; the first check past its
    /// limit is the reason to roll back.
    pub(super) fn record_gates(&mut self) -> Option<Failure> {
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

    pub(super) fn gates_passed_since(&self, since: Timestamp) -> bool {
        self.spec.gates.checks.iter().all(|check| {
            self.status.gates.iter().any(|g| {
                g.name == check.name
                    && g.result == GateResult::Pass
                    && g.last_evaluated.as_ref().is_some_and(|t| t.0 > since)
            })
        })
    }

    pub(super) fn wake_for_gates(&mut self) {
        if !self.spec.gates.checks.is_empty() || self.spec.analysis.is_some() {
            self.wake(self.spec.gates.interval());
        }
    }
}
