//! The judge's judgements (`spec.analysis`): folded into status against their limits,
//! passed since a step began, skipped for a first revision, and the baseline pods'
//! readiness they wait for. The judge compares a canary below 100% only: at 100% nothing
//! serves beside it (the last step's gates and pod health decide the promotion).

use super::*;
use crate::api::{AnalysisStatus, Judgement};

impl Planner<'_> {
    /// Folds the judgement made now into `status.analysis`. A failure rolls back at once;
    /// `marginalLimit` marginal or `gates.inconclusiveLimit` no-data judgements in a row
    /// do too. Judgements made while the canary's or the baseline's pods are not all
    /// Ready are shown as `Waiting` and counted for nothing.
    pub(super) fn record_analysis(&mut self, ready: bool) -> Option<Failure> {
        let analysis = self.spec.analysis.as_ref()?;
        let canary = self.status.canary.as_ref()?;
        let revision = canary.revision.number;
        if canary.weight >= 100 && self.status.stable.is_some() {
            return None;
        }
        if self.status.stable.is_none() {
            if self.status.analysis.as_ref().is_none_or(|a| a.revision != revision) {
                let message = format!(
                    "skipped: revision {revision} is the release's first, there is no stable model to compare with; \
                     pod health decides"
                );
                self.status.analysis =
                    Some(AnalysisStatus { revision, result: Judgement::Skipped, message, ..Default::default() });
            }
            return None;
        }
        // Baseline pods that never become Ready (not made: a stable template someone
        // changed, a quota; or failing) would hold the judge for ever: they get the
        // canary's progress deadline from the step's start.
        if let Some((key, baseline_ready)) = self.baseline() {
            let want = self.canary_replicas(canary.weight);
            let started = canary.step_started_at.as_ref().map_or(self.now, |t| t.0);
            if baseline_ready < want && after(started, self.spec.gates.progress_deadline()) <= self.now {
                let message = format!(
                    "{baseline_ready}/{want} baseline pods (ReplicaSet {}-{key}) Ready {} after the step began \
                     (progressDeadline): the judge cannot compare; see the release's WorkloadChanged condition and \
                     the operator's log",
                    self.name, self.spec.gates.progress_deadline
                );
                return Some(Failure::new("BaselineNotReady", message));
            }
        }
        let mut now = self.obs.analysis.clone().filter(|a| a.revision == revision)?;
        let before = self.status.analysis.clone().filter(|a| a.revision == revision).unwrap_or_default();
        now.last_evaluated = Some(Time(self.obs.gates_started.map_or(self.now, |t| t.min(self.now))));
        (now.consecutive_marginal, now.consecutive_no_data) = (before.consecutive_marginal, before.consecutive_no_data);
        if !ready {
            now.message = bounded(&format!(
                "not judged until the canary's and the baseline's pods are all Ready (then: {})",
                now.result.as_str()
            ));
            now.result = Judgement::Waiting;
        }
        match now.result {
            Judgement::Pass => (now.consecutive_marginal, now.consecutive_no_data) = (0, 0),
            Judgement::Marginal => {
                (now.consecutive_marginal, now.consecutive_no_data) = (before.consecutive_marginal + 1, 0)
            }
            Judgement::NoData => now.consecutive_no_data = before.consecutive_no_data + 1,
            Judgement::Fail | Judgement::Waiting | Judgement::Skipped => {}
        }
        now.message = bounded(&now.message);
        self.status.analysis = Some(now.clone());
        let said = &now.message;
        match now.result {
            Judgement::Fail => {
                Some(Failure::new("AnalysisFailed", format!("the judge failed revision {revision}: {said}")))
            }
            Judgement::Marginal if now.consecutive_marginal >= analysis.marginal_limit => Some(Failure::new(
                "AnalysisMarginal",
                format!(
                    "the judge found revision {revision} marginal {} times in a row: {said}",
                    now.consecutive_marginal
                ),
            )),
            Judgement::NoData if now.consecutive_no_data >= self.spec.gates.inconclusive_limit => Some(Failure::new(
                "AnalysisNoData",
                format!("the judge had too little data {} times in a row: {said}", now.consecutive_no_data),
            )),
            _ => None,
        }
    }

    /// Whether the judge passed the canary since `since` (always, without a judge or
    /// for a first revision).
    pub(super) fn analysis_passed_since(&self, since: Timestamp) -> bool {
        let (Some(_), Some(_), Some(canary)) = (&self.spec.analysis, &self.status.stable, &self.status.canary) else {
            return true;
        };
        if canary.weight >= 100 {
            return true;
        }
        self.status.analysis.as_ref().is_some_and(|a| {
            a.revision == canary.revision.number
                && a.result == Judgement::Pass
                && a.last_evaluated.as_ref().is_some_and(|t| t.0 > since)
        })
    }

    /// The baseline pods the canary's step runs beside, and how many of them are Ready.
    pub(super) fn baseline(&self) -> Option<(String, i32)> {
        let (Some(analysis), Some(stable), Some(canary)) =
            (&self.spec.analysis, &self.status.stable, &self.status.canary)
        else {
            return None;
        };
        if !analysis.baseline || stable.revision.hash == canary.revision.hash || canary.weight >= 100 {
            return None;
        }
        // New pods of a model no longer trusted are never started (with `onRevocation:
        // Alert` the stable keeps serving; its baseline does not start).
        if self.untrusted(&stable.revision).is_some() {
            return None;
        }
        let key = baseline_key(&stable.revision.hash);
        let ready = self.obs.pods.get(&key).map_or(0, |h| h.ready);
        Some((key, ready))
    }
}

/// Whether the judge should run now: a canary below 100% is out beside a stable revision, and its
/// last judgement is at least `gates.interval` old (or of another revision).
pub fn analysis_due(release: &ModelRelease, now: Timestamp) -> bool {
    let (Some(_), Some(status)) = (&release.spec.analysis, &release.status) else { return false };
    let (Some(canary), Some(_)) = (&status.canary, &status.stable) else { return false };
    if canary.weight >= 100 {
        return false;
    }
    let last = status.analysis.as_ref().filter(|a| a.revision == canary.revision.number);
    match last.and_then(|a| a.last_evaluated.as_ref()) {
        Some(at) => after(at.0, release.spec.gates.interval()) <= now,
        None => true,
    }
}
