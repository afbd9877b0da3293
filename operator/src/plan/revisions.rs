//! What the controller needs to know about a release's revisions to act on a plan: the
//! models to ask the repository about, the revision the gates judge, and the digests a
//! revision's workload is made from. Answers read from the spec and status only.

use kube::ResourceExt;
use serde::Serialize;

use super::previous_promoted;
use crate::api::{ModelRef, ModelRelease, ModelReleaseStatus, Outcome};

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

/// A verified revision, ready to become a workload: the model it verified and its
/// digests, from one place in status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision<'a> {
    pub number: i64,
    pub hash: &'a str,
    pub model: ModelRef,
    pub sha256: &'a str,
    pub length: i64,
    pub files: i64,
    /// Its model was verified with a signature (its pods check the signature again).
    pub signed: bool,
}

/// The number of revision `hash`: the one it had when seen before (stable, canary or
/// history), else one above the highest.
pub fn revision_number(status: &ModelReleaseStatus, hash: &str) -> i64 {
    let known = status.stable.iter().map(|s| &s.revision);
    let known = known.chain(status.canary.iter().map(|c| &c.revision));
    let known: Vec<_> = known.chain(status.history.iter().map(|h| &h.revision)).collect();
    known
        .iter()
        .find(|r| r.hash == hash)
        .map(|r| r.number)
        .unwrap_or_else(|| known.iter().map(|r| r.number).max().unwrap_or(0) + 1)
}

/// Every model the planner may ask about, so the controller looks up each one's
/// verdict: the spec's, the running ones, and the earlier promoted ones (rollback
/// candidates).
pub fn models_to_verify(release: &ModelRelease) -> Vec<ModelRef> {
    let mut models = vec![release.spec.model.model()];
    if let Some(s) = &release.status {
        models.extend(s.stable.iter().map(|r| r.revision.model()));
        models.extend(s.canary.iter().map(|c| c.revision.model()));
        models.extend(s.history.iter().filter(|h| h.outcome == Outcome::Promoted).map(|h| h.revision.model()));
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
        model: verified.model(),
        sha256: verified.sha256.as_deref()?,
        length: verified.length?,
        files: verified.files.unwrap_or(1),
        signed: verified.signer.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryStatus, HistoryEntry, RevisionRef, RevisionStatus};

    fn id(number: i64, hash: &str) -> RevisionRef {
        RevisionRef { number, hash: hash.into(), target: "m/1".into(), ..Default::default() }
    }

    #[test]
    fn a_hash_seen_before_keeps_its_number_and_a_new_one_is_one_above_every_other() {
        assert_eq!(revision_number(&ModelReleaseStatus::default(), "a"), 1);
        let status = ModelReleaseStatus {
            stable: Some(RevisionStatus { revision: id(3, "s"), promoted_at: None }),
            canary: Some(CanaryStatus { revision: id(5, "c"), ..Default::default() }),
            history: vec![HistoryEntry { revision: id(1, "h"), ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(revision_number(&status, "s"), 3);
        assert_eq!(revision_number(&status, "c"), 5);
        assert_eq!(revision_number(&status, "h"), 1);
        // Above the canary too (`kubectl modelgate plan` once said 4 here).
        assert_eq!(revision_number(&status, "new"), 6);
    }
}
