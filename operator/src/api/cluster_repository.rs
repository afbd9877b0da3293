//! `ClusterModelRepository`: a TUF repository the security team registers for the whole
//! cluster, with the policy of who may release what from it. Cluster-scoped, as
//! cert-manager's ClusterIssuer is: tenants with `edit` in a namespace cannot write it,
//! and its pin and CA bundle are ConfigMaps in the operator's namespace, where they
//! cannot write either.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{ModelRepositorySpec, ModelRepositoryStatus, RevocationAction};

/// A TUF repository for the whole cluster. Its `trustedRoot` and `caBundle` name
/// ConfigMaps in the operator's namespace; its trust record lives there too. Releases
/// name it with `repositoryRef: {kind: ClusterModelRepository, name: ...}` and are
/// refused unless `policy.allow` lets their namespace release their model.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "modelgate.dev",
    version = "v1alpha1",
    kind = "ClusterModelRepository",
    plural = "clustermodelrepositories",
    shortname = "cmrepo",
    category = "modelgate",
    status = "ModelRepositoryStatus",
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name of a ClusterModelRepository must be a DNS label (lowercase letters, digits and '-', at most 63 characters, no '.'), because releases name it in spec.repositoryRef.name"),
    printcolumn = r#"{"name":"Trusted","type":"string","jsonPath":".status.conditions[?(@.type==\"Trusted\")].status"}"#,
    printcolumn = r#"{"name":"Root","type":"integer","description":"Version of the newest trusted root","jsonPath":".status.root.version"}"#,
    printcolumn = r#"{"name":"On-Revocation","type":"string","description":"What a revoked model does","jsonPath":".spec.policy.onRevocation"}"#,
    printcolumn = r#"{"name":"Timestamp-Expires","type":"string","description":"When the trusted timestamp metadata expires","jsonPath":".status.timestamp.expires"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterModelRepositorySpec {
    /// Where the repository is and what anchors trust in it, as for a ModelRepository;
    /// `trustedRoot` and `caBundle` name ConfigMaps in the operator's namespace.
    #[serde(flatten)]
    pub repository: ModelRepositorySpec,

    /// Who may release from this repository, and what a revocation does.
    pub policy: RepositoryPolicy,
}

/// The security team's rules for one cluster repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryPolicy {
    /// A release may use this repository only when one rule selects its namespace and
    /// allows every file of its model. No rule, no release.
    #[schemars(length(min = 1, max = 64))]
    pub allow: Vec<AllowRule>,

    /// What a release does when a model it serves is revoked or its metadata expires.
    /// `Rollback` (the default): back to the newest revision still trusted, or scaled to
    /// zero when none is (an outage is the price of a revocation). `Alert`: keep
    /// serving with `TrustDegraded=True`. A release can only make this stricter.
    #[serde(default)]
    pub on_revocation: RevocationAction,
}

/// Which namespaces may release which target paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.namespaces) || has(self.namespaceSelector)").message("each policy.allow rule needs namespaces (names) or a namespaceSelector (labels; {} selects every namespace)"))]
pub struct AllowRule {
    /// Namespaces, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("policy.allow[].namespaces must be namespace names (DNS labels)"))]
    pub namespaces: Vec<String>,

    /// Namespaces, by their labels (`{}` selects every namespace). Namespace labels are
    /// the cluster admin's: a tenant with `edit` cannot set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Target paths these namespaces may release, as patterns: `*` and `?` match within
    /// one path segment, `**` across segments (`fraud/**` is everything under `fraud/`,
    /// `**` is every path: say so explicitly). A `prefix` model needs a pattern that
    /// ends in `/**` (or is `**`) and covers the prefix. A rule selects the namespaces
    /// of `namespaces` and those of `namespaceSelector` alike.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 512)))]
    pub paths: Vec<String>,
}
