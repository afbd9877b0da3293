//! The modelgate API, `modelgate.dev/v1alpha1`: what users write (spec) and what the
//! operator reports (status). The CRD YAML in `crds/` is generated from these types.

mod common;
mod crd;
mod release;
mod repository;

pub use common::{ConfigMapKeyRef, ConfigMapSource, condition, parse_duration, set_condition};
pub use crd::{crds, crds_yaml};
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
/// Pod annotation carrying the sha256 of the verified model a pod serves.
pub const ANNOTATION_MODEL_SHA256: &str = "modelgate.dev/model-sha256";
