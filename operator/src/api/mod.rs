//! The modelgate API, `modelgate.dev/v1alpha1`: what users write (spec) and what the
//! operator reports (status). The CRD YAML in `crds/` is generated from these types.

mod analysis;
mod cluster_repository;
mod common;
mod crd;
mod model;
mod reference;
mod release;
mod repository;

pub use analysis::*;
pub use cluster_repository::*;
pub use common::{
    ConditionStatus, ConfigMapKeyRef, ConfigMapSource, DurationBounds, GoDuration, condition, condition_with,
    parse_duration, set_condition,
};
pub use crd::{crds, crds_yaml};
pub use model::{MANIFEST_FILE, MAX_IMAGE_MANIFEST_BYTES, MAX_MODEL_FILES, MAX_TARGET_LIST, ModelRef, mount_path_of};
pub use reference::reference_markdown;
pub use release::*;
pub use repository::*;

/// API group of every modelgate resource.
pub const GROUP: &str = "modelgate.dev";
/// The only served version so far.
pub const VERSION: &str = "v1alpha1";
/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "modelgate";

/// Label on every object that belongs to a release (pods, workloads, services).
pub const LABEL_RELEASE: &str = "modelgate.dev/release";
/// Label naming the revision (a number) of a release that an object serves.
pub const LABEL_REVISION: &str = "modelgate.dev/revision";
/// Label with the revision's hash; a workload's selector uses it with the release label.
pub const LABEL_HASH: &str = "modelgate.dev/revision-hash";
/// Annotation an SRE sets (to any new value) to pass the current pause step.
pub const ANNOTATION_PROMOTE: &str = "modelgate.dev/promote";
/// Annotation an SRE sets (to any new value) to skip the remaining steps: the canary goes
/// to 100% and is promoted once Ready and passing.
pub const ANNOTATION_PROMOTE_FULL: &str = "modelgate.dev/promote-full";
/// Annotation an SRE sets to `<revision>@<any new token>` to return to an earlier
/// promoted revision (refused when its target is no longer trusted).
pub const ANNOTATION_ROLLBACK: &str = "modelgate.dev/rollback";
/// Annotation an SRE sets (to any new value) to roll out a rolled-back or rejected revision again.
pub const ANNOTATION_RETRY: &str = "modelgate.dev/retry";
/// Annotation an SRE sets (to any new value) to stop the rollout and return to stable.
pub const ANNOTATION_ABORT: &str = "modelgate.dev/abort";
/// Annotation an SRE sets (to any new value) to scale away the warm pods of the
/// previous revision before their window ends.
pub const ANNOTATION_DROP_WARM: &str = "modelgate.dev/drop-warm";
/// Pod label: `"true"` for pods that may receive requests, `"false"` for warm pods kept
/// out of service. The Service of `spec.service` selects `"true"`.
pub const LABEL_SERVING: &str = "modelgate.dev/serving";
/// Name of the init container that fetches and verifies the model in every pod.
pub const FETCH_CONTAINER: &str = "modelgate-fetch";
/// Exit code of `modelgate fetch` when the model or its metadata failed verification
/// (as opposed to, say, a network error): the pod's gate names it a trust failure.
pub const FETCH_EXIT_UNTRUSTED: i32 = 3;
/// Largest pod template (`spec.template`, serialized as JSON) modelgate renders: ample
/// for a model server's pod (a Deployment's is a few KiB), small enough that a
/// namespace of releases cannot fill the operator's memory.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Set only inside the operator's cache, never written to the API server (a release's
/// other annotations are dropped before it is set): the revision hash of the release's
/// spec, taken before its pod template was dropped from the cache.
pub const CACHED_REVISION_HASH: &str = "modelgate.dev/cached-revision-hash";
/// Set only inside the operator's cache, like `CACHED_REVISION_HASH`: why the pod
/// policy refuses the dropped template, one reason per line (empty: it does not).
pub const CACHED_TEMPLATE_REFUSALS: &str = "modelgate.dev/cached-template-refusals";
/// ReplicaSet annotation: the fingerprint (`workload::template_sha256`) of its pod
/// template as the API server held it when modelgate made it. A template that no longer
/// matches was changed by someone else: modelgate puts it back (the spec's revision) or
/// says so (an earlier one).
pub const ANNOTATION_TEMPLATE_SHA256: &str = "modelgate.dev/template-sha256";
/// Pod annotation carrying the sha256 of the verified model a pod serves.
pub const ANNOTATION_MODEL_SHA256: &str = "modelgate.dev/model-sha256";
