//! What the controller needs to know about a release's revisions to act on a plan: the
//! models to ask the repository about, the revision the gates judge, and the digests a
//! revision's workload is made from. Answers read from the spec and status only.

use kube::ResourceExt;
use serde::Serialize;

use super::previous_promoted;
use crate::api::{ModelRelease, ModelReleaseStatus, Outcome};

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
}

/// A verified revision, ready to become a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revision<'a> {
    pub number: i64,
    pub hash: &'a str,
    pub sha256: &'a str,
    pub length: i64,
    pub files: i64,
}

/// Every model the planner may ask about (`ModelRef::key`), so the controller looks up
/// each one's verdict: the spec's, the running ones, and the earlier promoted ones
/// (rollback candidates).
pub fn models_to_verify(release: &ModelRelease) -> Vec<String> {
    let mut models = vec![release.spec.model.model().key()];
    if let Some(s) = &release.status {
        models.extend(s.stable.iter().map(|r| r.revision.model().key()));
        models.extend(s.canary.iter().map(|c| c.revision.model().key()));
        models.extend(s.history.iter().filter(|h| h.outcome == Outcome::Promoted).map(|h| h.revision.model().key()));
    }
    models.sort();
    models.dedup();
    models
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
    Some(GateContext { release: release.name_any(), namespace: namespace.to_string(), ..on_trial })
}

/// The digests the planner verified for the revision `hash` (the canary, or a stable
/// one whose workload must be made again). `None`: no verified revision has that hash,
/// so no workload may be made for it.
pub fn verified_revision<'a>(status: &'a ModelReleaseStatus, hash: &'a str) -> Option<Revision<'a>> {
    let verified = [status.canary.as_ref().map(|c| &c.revision), status.stable.as_ref().map(|s| &s.revision)]
        .into_iter()
        .flatten()
        .find(|r| r.hash == hash)?;
    Some(Revision {
        number: verified.number,
        hash,
        sha256: verified.sha256.as_deref()?,
        length: verified.length?,
        files: verified.files.unwrap_or(1),
    })
}
