//! The rollout brain: pure functions from what was observed (and the time, passed in)
//! to the status the release should have. No I/O, no clock reads.
//!
//! Today it decides admission only: does the release refer to a repository that exists.
//! Verification and the step machine build on this.

pub mod repository;

use k8s_openapi::jiff::Timestamp;

use crate::api::{ModelRelease, ModelReleaseStatus, Phase, condition, set_condition};

/// What the controller saw about a release's surroundings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Whether `spec.repositoryRef` names an existing ModelRepository.
    pub repository_found: bool,
}

/// Condition type: the spec refers to things that exist and can be worked on.
pub const ACCEPTED: &str = "Accepted";

/// The status a release should have, given what was observed at `now`.
pub fn status(release: &ModelRelease, observed: &Observed, now: Timestamp) -> ModelReleaseStatus {
    let mut status = release.status.clone().unwrap_or_default();
    let generation = release.metadata.generation;
    let repo = &release.spec.repository_ref.name;
    let namespace = release.metadata.namespace.as_deref().unwrap_or("default");

    let accepted = if observed.repository_found {
        condition(ACCEPTED, true, "RepositoryFound", format!("ModelRepository {repo:?} found"), generation, now)
    } else {
        condition(
            ACCEPTED,
            false,
            "RepositoryNotFound",
            format!(
                "ModelRepository {repo:?} does not exist in namespace {namespace:?}: create it, or fix spec.repositoryRef.name"
            ),
            generation,
            now,
        )
    };
    status.message = Some(if observed.repository_found {
        format!("verifying target {:?} against repository {repo:?}", release.spec.model.target)
    } else {
        accepted.message.clone()
    });
    set_condition(&mut status.conditions, accepted);
    status.phase = Some(status.phase.unwrap_or(Phase::Verifying));
    status.observed_generation = generation;
    status
}

#[cfg(test)]
mod tests;
