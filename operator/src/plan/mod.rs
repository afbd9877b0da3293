//! The rollout brain: pure functions from what was observed (and the time, passed in)
//! to the status a release should have and the workloads it should run. No I/O, no
//! clock reads. The rules themselves are in `rollout/`, in one place.

pub mod admission;
mod gate;
pub mod judge;
pub mod pod_policy;
pub mod policy;
pub mod repository;
mod revisions;
mod rollout;

use std::{collections::BTreeMap, time::Duration};

use aws_lc_rs::digest;
use k8s_openapi::jiff::Timestamp;

use crate::api::{CACHED_REVISION_HASH, CACHED_TEMPLATE_REFUSALS, ModelRelease, ModelReleaseSpec};

pub use gate::{GateContext, GateOutcome, GateResult, gate_context};
pub use revisions::{Revision, models_to_verify, revision_number, verified_revision};
pub use rollout::{
    MAX_HISTORY, analysis_due, gates_due, plan,
    rollback::{previous_promoted, promoted_revision, untrusted_for_rollback},
    short,
};

/// Condition type: the spec's revision serves at full size and no rollout or rollback
/// is in progress (what `kubectl wait --for=condition=Ready` waits for).
pub const READY: &str = "Ready";
/// Condition type: the spec refers to things that exist and can be worked on.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: the newest revision's target verified against its repository.
pub const VERIFIED: &str = "Verified";
/// Condition type: a rollout is running.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the release had to roll back, or cannot roll back by itself.
pub const DEGRADED: &str = "Degraded";
/// Condition type: the serving model is no longer trusted by its repository.
pub const TRUST_DEGRADED: &str = "TrustDegraded";
/// Condition type: the release's Service (`spec.service`) is in place.
pub const SERVICE_READY: &str = "ServiceReady";
/// Condition type: ReplicaSets carry this release's labels but are not controlled by it
/// (someone else made them): they are never scaled, judged or counted.
pub const FOREIGN_WORKLOADS: &str = "ForeignWorkloads";
/// Condition type: the pod template of a ReplicaSet the release controls is no longer
/// the one modelgate made (`api::ANNOTATION_TEMPLATE_SHA256`): someone else changed it.
pub const WORKLOAD_CHANGED: &str = "WorkloadChanged";

/// Identity of a revision: what it serves and how. Any change to either starts a new
/// revision; the same pair is the same revision (its workload is reused).
pub fn revision_hash(spec: &ModelReleaseSpec) -> String {
    let m = &spec.model;
    let mut identity = serde_json::Map::new();
    identity.insert("target".into(), m.target.clone().into());
    identity.insert("mountPath".into(), m.mount_path.clone().into());
    identity.insert("template".into(), serde_json::to_value(&spec.template).unwrap_or_default());
    // Keys only for the forms of several files, so a one-file release keeps its hash.
    if !m.targets.is_empty() {
        identity.insert("targets".into(), m.targets.clone().into());
    }
    if let Some(prefix) = &m.prefix {
        identity.insert("prefix".into(), prefix.clone().into());
    }
    if let Some(image) = &m.image {
        identity.insert("image".into(), image.target.clone().into());
    }
    // A JSON value always serializes; the fallback only keeps this total.
    let bytes = serde_json::to_vec(&identity).unwrap_or_default();
    hex::encode(digest::digest(&digest::SHA256, &bytes).as_ref().get(..5).unwrap_or_default())
}

/// Why a model is refused: what verifying it against the repository found, or the
/// cluster repository's policy for the namespace. Its text is the `Verified`
/// condition's reason, the history's and the metrics' label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untrusted {
    Trust(crate::trust::Reason),
    NotAllowedByPolicy,
}

impl Untrusted {
    pub fn as_str(self) -> &'static str {
        match self {
            Untrusted::Trust(reason) => reason.as_str(),
            Untrusted::NotAllowedByPolicy => policy::NOT_ALLOWED,
        }
    }
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the repository says about one target now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Signed and current: the sha256 of the file (or of the manifest of a set of
    /// files), the total length and the number of files.
    /// `signer`: who signed the model (key or certificate), when its repository asks
    /// for a signature. `image`: for an image model, the reference its pods mount.
    Trusted { sha256: String, length: i64, files: i64, signer: Option<String>, image: Option<String> },
    /// Refused: not listed, expired, attacked, not allowed here.
    Untrusted { reason: Untrusted, message: String },
    /// Cannot tell yet (repository not refreshed, or unreachable with nothing cached).
    Unknown { message: String },
}

impl Verdict {
    /// What resolving a model means for a release: its identity, a refusal, or (for
    /// network trouble) no verdict yet.
    pub fn of(found: Result<(crate::trust::ModelSet, Option<String>), crate::trust::TrustError>) -> Self {
        match found {
            Ok((set, signer)) => {
                let id = set.identity();
                match (i64::try_from(id.length), i64::try_from(id.files)) {
                    (Ok(length), Ok(files)) => {
                        Verdict::Trusted { sha256: id.sha256, length, files, signer, image: set.image }
                    }
                    _ => Verdict::Untrusted {
                        reason: Untrusted::Trust(crate::trust::Reason::Malformed),
                        message: format!("{} is signed with a length beyond any real file", set.model),
                    },
                }
            }
            Err(e) if e.is_transient() => Verdict::Unknown { message: e.to_string() },
            Err(e) => Verdict::Untrusted { reason: Untrusted::Trust(e.reason()), message: e.to_string() },
        }
    }
}

/// A revision's workload as observed (a ReplicaSet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub revision: i64,
    /// The replica count the workload is asked to run.
    pub replicas: i32,
}

/// Why a revision's pods are not serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodProblem {
    /// Crash loop, OOM kill, failed init container: no point waiting.
    Hard { reason: String, message: String },
    /// `modelgate fetch` refused the model in the pod.
    Untrusted { message: String },
    /// Might resolve (image pull back-off, not ready yet): rolls back after the deadline.
    Waiting { reason: String, message: String },
}

/// The pods of one revision, summarized by the kubernetes gate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodHealth {
    pub ready: i32,
    pub problem: Option<PodProblem>,
    /// Pods that exist, are bound to a node, and finished their init containers (what
    /// counts as progress besides Ready: `CanaryStatus::pods`).
    pub created: i32,
    pub scheduled: i32,
    pub initialized: i32,
}

impl PodHealth {
    /// `n` pods, every one Ready (and so created, scheduled and initialized).
    pub fn all_ready(n: i32) -> Self {
        Self { ready: n, created: n, scheduled: n, initialized: n, problem: None }
    }
}

/// Commands given through annotations (their current values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands {
    pub promote: Option<String>,
    pub promote_full: Option<String>,
    pub retry: Option<String>,
    pub abort: Option<String>,
    /// `<revision>@<token>`.
    pub rollback: Option<String>,
    pub drop_warm: Option<String>,
}

/// The repository a release names, as the controller found it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Repository {
    /// No repository of that kind and name exists.
    #[default]
    Missing,
    /// A ModelRepository, and this installation accepts only ClusterModelRepositories
    /// (`trust.namespacedRepositories: false`).
    NamespacedDisabled,
    /// A ClusterModelRepository, and this installation serves none (a namespaced
    /// install holds no cluster-wide rights).
    ClusterDisabled,
    /// It exists. A cluster repository's policy says what a revocation does at least
    /// (`None` for a namespaced one: the release decides).
    Found { on_revocation: Option<crate::api::RevocationAction> },
}

impl Repository {
    /// Why a release naming `repo` in `namespace` is not accepted: a reason (the
    /// `Accepted` condition's) and what to do. `Found` has nothing to say.
    pub fn refusal(&self, repo: &crate::api::RepositoryRef, namespace: &str) -> (&'static str, String) {
        let name = &repo.name;
        match self {
            Repository::Found { .. } => ("RepositoryFound", format!("{} {name:?} found", repo.kind.as_str())),
            Repository::Missing => (
                "RepositoryNotFound",
                match repo.kind {
                    crate::api::RepositoryKind::ModelRepository => format!(
                        "ModelRepository {name:?} does not exist in namespace {namespace:?}: create it, or fix \
                         spec.repositoryRef.name"
                    ),
                    crate::api::RepositoryKind::ClusterModelRepository => format!(
                        "ClusterModelRepository {name:?} does not exist: ask the security team for its name \
                         (kubectl get clustermodelrepositories), or fix spec.repositoryRef.name"
                    ),
                },
            ),
            Repository::ClusterDisabled => (
                "ClusterRepositoriesDisabled",
                format!(
                    "this installation serves no ClusterModelRepositories (it is namespaced: rbac.clusterWide is \
                     false), so ClusterModelRepository {name:?} vouches for nothing here; name a ModelRepository in \
                     this namespace in a new release"
                ),
            ),
            Repository::NamespacedDisabled => (
                "NamespacedRepositoriesDisabled",
                format!(
                    "this installation trusts only ClusterModelRepositories (trust.namespacedRepositories is \
                     false): ModelRepository {name:?} vouches for nothing; create a new release with \
                     spec.repositoryRef.kind: ClusterModelRepository"
                ),
            ),
        }
    }
}

/// Everything the controller saw, for one release.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The repository `spec.repositoryRef` names, as the controller found it.
    pub repository: Repository,
    /// Trust verdicts, by model: the spec's model, the stable and canary targets,
    /// and the targets of earlier revisions (rollback candidates).
    pub verdicts: BTreeMap<crate::api::ModelRef, Verdict>,
    /// Workloads by revision hash.
    pub workloads: BTreeMap<String, Workload>,
    /// Pod health by revision hash.
    pub pods: BTreeMap<String, PodHealth>,
    /// Gate checks that finished since the last reconcile (empty when none did).
    pub gates: Vec<GateOutcome>,
    /// When those checks started: they speak for the revision from then on, not for a
    /// step that began while they ran.
    pub gates_started: Option<Timestamp>,
    /// The judge's judgement made with those checks (`spec.analysis`), if it ran:
    /// counters not yet folded in.
    pub analysis: Option<crate::api::AnalysisStatus>,
    pub commands: Commands,
    /// Why the spec's pod may not be created (the admin's pod policy, or a template
    /// modelgate cannot render), if it may not.
    pub refusal: Option<String>,
    /// Why the release's Service is left alone, if it is (a Service of that name that
    /// the release does not own).
    pub service_conflict: Option<String>,
    /// ReplicaSets labelled as this release's that it does not control (owner reference
    /// with `controller: true` and its UID): their names.
    pub foreign: Vec<String>,
    /// ReplicaSets the release controls whose pod template is not the one modelgate
    /// made: revision hash and name.
    pub changed: Vec<(String, String)>,
}

/// Why an Event is published (its `reason`, a word kubectl shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// A revision verified; its rollout begins.
    RolloutStarted,
    /// A step passed; the next one begins.
    StepCompleted,
    /// A revision serves 100%.
    Promoted,
    /// A revision failed and the release returns to the stable one.
    RolledBack,
    /// The stable revision serves 100% again.
    RollbackComplete,
    /// A failure with automatic rollback off: a person decides.
    RollbackNeeded,
    /// The serving model is untrusted and no earlier one is.
    RollbackImpossible,
    /// A rollback command that cannot be carried out.
    RollbackRefused,
    /// A revision's model failed verification; nothing was deployed.
    Rejected,
    /// A new spec replaced a rollout in progress.
    Superseded,
    /// The spec's pods break the admin's pod policy.
    PodRefused,
    /// The Service name is taken by a Service the release does not own.
    ServiceNotOwned,
    /// The serving model is no longer trusted.
    TrustDegraded,
    /// The serving model's signature now names another signer (re-signed; same bytes).
    SignerChanged,
    /// Warm pods of the previous revision were let go.
    WarmDropped,
    /// ReplicaSets with the release's labels that it did not make.
    ForeignWorkload,
    /// Someone other than modelgate changed the pod template of a revision's ReplicaSet.
    WorkloadChanged,
    /// A first revision's pods made no progress within the deadline.
    ProgressDeadlineExceeded,
}

impl EventReason {
    /// The word the Event carries.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::RolloutStarted => "RolloutStarted",
            EventReason::StepCompleted => "StepCompleted",
            EventReason::Promoted => "Promoted",
            EventReason::RolledBack => "RolledBack",
            EventReason::RollbackComplete => "RollbackComplete",
            EventReason::RollbackNeeded => "RollbackNeeded",
            EventReason::RollbackImpossible => "RollbackImpossible",
            EventReason::RollbackRefused => "RollbackRefused",
            EventReason::Rejected => "Rejected",
            EventReason::Superseded => "Superseded",
            EventReason::PodRefused => "PodRefused",
            EventReason::ServiceNotOwned => "ServiceNotOwned",
            EventReason::TrustDegraded => "TrustDegraded",
            EventReason::SignerChanged => "SignerChanged",
            EventReason::WarmDropped => "WarmDropped",
            EventReason::ForeignWorkload => "ForeignWorkload",
            EventReason::WorkloadChanged => "WorkloadChanged",
            EventReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
        }
    }
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for EventReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An Event to publish once the new status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: EventReason,
    pub message: String,
    /// Why, as the bounded word conditions carry, for the decisions metrics count by
    /// cause (a rollback, a rejection).
    pub cause: Option<String>,
}

/// What the controller should make true.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: crate::api::ModelReleaseStatus,
    /// Replica count of every revision workload that should exist, by hash. A hash
    /// without an observed workload is the spec's revision, to be created from the spec.
    pub scale: BTreeMap<String, i32>,
    /// Workloads of old revisions to delete.
    pub prune: Vec<String>,
    /// The spec's revision, when someone changed its workload's pod template: modelgate
    /// renders it again and puts it back (an earlier revision's spec is gone: it is only
    /// reported).
    pub restore: Option<String>,
    /// Revisions whose pods are kept out of service (warm): the previous revision after
    /// a promotion, or the stable one at 100% while it waits to become warm.
    pub idle: std::collections::BTreeSet<String>,
    pub events: Vec<Note>,
    /// When to look again even if nothing changes.
    pub requeue: Duration,
}

/// The workload key (in `Plan::scale`, the ReplicaSet's revision-hash label) of the
/// baseline pods started beside a canary: the stable revision's, marked. Never a
/// revision's own hash (those are hex).
pub fn baseline_key(stable_hash: &str) -> String {
    format!("{stable_hash}-{BASELINE_SUFFIX}")
}

const BASELINE_SUFFIX: &str = "baseline";

/// The stable revision a baseline workload key copies, if `key` is one.
pub fn baseline_of(key: &str) -> Option<&str> {
    key.strip_suffix(BASELINE_SUFFIX)?.strip_suffix('-').filter(|h| !h.is_empty())
}

/// What the pods of workload `key` are to the rollout (their `modelgate.dev/role`).
pub fn role_of(status: &crate::api::ModelReleaseStatus, key: &str) -> crate::api::Role {
    if baseline_of(key).is_some() {
        crate::api::Role::Baseline
    } else if status.canary.as_ref().is_some_and(|c| c.revision.hash == key) {
        crate::api::Role::Canary
    } else if status.stable.as_ref().is_some_and(|s| s.revision.hash == key) {
        crate::api::Role::Stable
    } else {
        crate::api::Role::Previous
    }
}

/// Pods of a canary at `weight` percent: ceil(replicas x weight / 100), so any weight
/// above 0 gets at least one pod.
pub fn canary_replicas(replicas: i32, weight: i32) -> i32 {
    if weight <= 0 || replicas <= 0 {
        return 0;
    }
    // In i64: the product of two i32 does not fit in one.
    let pods = (i64::from(replicas) * i64::from(weight.min(100)) + 99) / 100;
    i32::try_from(pods).unwrap_or(replicas)
}

/// A note the operator's cache left on a release in place of its template. Only a
/// release without a template carries one: the API server keeps none without a
/// container, so a note a team wrote on a release it applied is never read.
fn cached_note<'a>(release: &'a ModelRelease, key: &str) -> Option<&'a String> {
    if release.spec.template != Default::default() {
        return None;
    }
    release.metadata.annotations.as_ref()?.get(key)
}

/// The revision the spec asks for: as the cache noted it when it dropped the template,
/// or from the spec (a release read from the API server).
pub fn desired_hash(release: &ModelRelease) -> String {
    match cached_note(release, CACHED_REVISION_HASH) {
        Some(hash) => hash.clone(),
        None => revision_hash(&release.spec),
    }
}

/// Why the pod policy refuses the spec's template (empty: it does not): as the cache
/// noted it, or from the template.
pub fn template_refusals(release: &ModelRelease, namespace: &str, policy: &pod_policy::PodPolicy) -> Vec<String> {
    match cached_note(release, CACHED_TEMPLATE_REFUSALS) {
        Some(noted) => noted.lines().map(str::to_string).collect(),
        None => pod_policy::check(&release.spec.template, &release.spec.model.mount_path, namespace, policy),
    }
}

/// The reason a release needs a person, if it does: a rollback, a refusal, or a
/// condition that says so (a rollout that needs a manual rollback, a revoked model).
pub fn needs_attention(status: &crate::api::ModelReleaseStatus) -> Option<String> {
    let condition = |type_| crate::api::condition_with(&status.conditions, type_, crate::api::ConditionStatus::True);
    let phase = status.phase.unwrap_or_default();
    let reason = condition(TRUST_DEGRADED).or_else(|| condition(DEGRADED)).map(|c| c.reason.chars().take(64).collect());
    match phase {
        crate::api::Phase::RollingBack | crate::api::Phase::RolledBack | crate::api::Phase::Rejected => {
            Some(reason.unwrap_or_else(|| phase.as_str().into()))
        }
        _ => reason,
    }
}

/// Seconds precision, as status timestamps round-trip through the API.
pub fn truncate(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

#[cfg(test)]
mod tests;
