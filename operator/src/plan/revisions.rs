//! What the controller needs to know about a release's revisions to act on a plan: the
//! models to ask the repository about and the digests a revision's workload is made
//! from. Answers read from the spec and status only.

use crate::api::{ModelRef, ModelRelease, ModelReleaseStatus, Outcome};

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
    /// An image model: the reference its pods mount (`<repository>@sha256:<digest>`).
    pub image: Option<&'a str>,
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
        image: verified.image.as_deref(),
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
