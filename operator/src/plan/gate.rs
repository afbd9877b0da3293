//! The gates' vocabulary, in one place: what a check judges (`GateContext`, also the
//! body a webhook check receives, so its fields are a contract), what one evaluation
//! gave (`GateOutcome`), and its result (`GateResult`, whose wire form is the status
//! field in `api`). `gates/` evaluates checks with these; the planner folds outcomes
//! into status (`rollout/gates.rs`).

use kube::ResourceExt;
use serde::Serialize;

use super::previous_promoted;
use crate::api::ModelRelease;

pub use crate::api::GateResult;

/// One check evaluated now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateOutcome {
    pub name: String,
    pub result: GateResult,
    /// The value seen, or why there was none.
    pub detail: String,
}

/// What a gate judges: the release, the revision on trial and the one it replaces.
/// Also the body a webhook check receives (docs/rollout.md, "webhook"), so its fields are a contract.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateContext {
    pub release: String,
    pub namespace: String,
    /// The revision on trial (the canary, or the new stable in its post-promotion window).
    pub canary_revision: i64,
    /// The revision it replaces, if any.
    pub stable_revision: Option<i64>,
    pub target: String,
    pub sha256: String,
    pub step: i32,
    pub weight: i32,
    /// When the step on trial began: the judge's samples start there. Not sent to webhooks.
    #[serde(skip)]
    pub step_started: Option<k8s_openapi::jiff::Timestamp>,
    /// The last time pods changed role (a promotion, a rollback): the judge's samples
    /// start after Prometheus can have seen it. Not sent to webhooks.
    #[serde(skip)]
    pub relabelled: Option<k8s_openapi::jiff::Timestamp>,
}

/// The revision the checks judge now: the canary, or the stable one in its
/// post-promotion window (its predecessor is the baseline). `None`: nothing on trial.
pub fn gate_context(release: &ModelRelease, namespace: &str) -> Option<GateContext> {
    let status = release.status.as_ref()?;
    let on_trial = match (&status.canary, &status.stable) {
        (Some(c), stable) => GateContext {
            canary_revision: c.revision.number,
            stable_revision: stable.as_ref().map(|s| s.revision.number),
            target: c.revision.target.clone(),
            sha256: c.revision.sha256.clone().unwrap_or_default(),
            step: c.step,
            weight: c.weight,
            step_started: c.step_started_at.as_ref().map(|t| t.0),
            ..Default::default()
        },
        (None, Some(s)) => GateContext {
            canary_revision: s.revision.number,
            stable_revision: previous_promoted(status).map(|h| h.revision.number),
            target: s.revision.target.clone(),
            sha256: s.revision.sha256.clone().unwrap_or_default(),
            step: i32::try_from(release.spec.strategy.steps.len()).unwrap_or(i32::MAX),
            weight: 100,
            ..Default::default()
        },
        (None, None) => return None,
    };
    let promoted = status.stable.as_ref().and_then(|s| s.promoted_at.as_ref()).map(|t| t.0);
    let ended = status.history.last().and_then(|h| h.finished_at.as_ref()).map(|t| t.0);
    let relabelled = promoted.max(ended);
    Some(GateContext { release: release.name_any(), namespace: namespace.to_string(), relabelled, ..on_trial })
}
