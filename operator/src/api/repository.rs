//! `ModelRepository`: one TUF repository and the pinned root that anchors trust in it.
//! Owned by the platform or security team; releases refer to it by name.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use std::time::Duration;

use super::common::{ConfigMapSource, DURATION, DurationBounds, GoDuration, NO_CREDENTIALS, duration_between};

/// `refreshInterval`.
pub const REFRESH_INTERVAL: DurationBounds = DurationBounds::new("5m", 10, 24 * 3600);

const HTTPS_URL: &str = "isURL(self) && url(self).getScheme() == 'https' && url(self).getHost() != ''";

/// A TUF repository that model releases are verified against. modelgate trusts nothing
/// in it beyond what the pinned root (and the roots it signs in turn) vouches for.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "modelgate.dev",
    version = "v1alpha1",
    kind = "ModelRepository",
    plural = "modelrepositories",
    shortname = "mrepo",
    category = "modelgate",
    namespaced,
    status = "ModelRepositoryStatus",
    validation = Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name of a ModelRepository must be a DNS label (lowercase letters, digits and '-', at most 63 characters, no '.'), because releases name it in spec.repositoryRef.name"),
    printcolumn = r#"{"name":"Trusted","type":"string","jsonPath":".status.conditions[?(@.type==\"Trusted\")].status"}"#,
    printcolumn = r#"{"name":"Root","type":"integer","description":"Version of the newest trusted root","jsonPath":".status.root.version"}"#,
    printcolumn = r#"{"name":"Timestamp-Expires","type":"string","description":"When the trusted timestamp metadata expires","jsonPath":".status.timestamp.expires"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelRepositorySpec {
    /// Base URL of the TUF metadata (`root.json`, `timestamp.json`, ...). Must be https://:
    /// plain HTTP is refused, there is no switch to allow it.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new(HTTPS_URL).message("metadataUrl must be an https:// URL with a host; modelgate never fetches TUF metadata over plain HTTP"),
        validation = Rule::new(NO_CREDENTIALS).message("metadataUrl must not carry credentials (user:password@): TUF metadata is public and signed")
    )]
    pub metadata_url: String,

    /// Base URL of the target files (the models). Must be https://.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new(HTTPS_URL).message("targetsUrl must be an https:// URL with a host; modelgate never fetches models over plain HTTP"),
        validation = Rule::new(NO_CREDENTIALS).message("targetsUrl must not carry credentials (user:password@); they would be copied into every model pod")
    )]
    pub targets_url: String,

    /// The pinned initial root metadata (`root.json`) that all trust starts from,
    /// usually version 1 distributed out of band by the repository owners, in a
    /// ConfigMap of the repository's namespace (of a ClusterModelRepository: of the
    /// operator's namespace). Later roots are fetched and verified from it, and recorded
    /// in ConfigMap `<name>-trust-state` (`cmrepo-<name>-trust-state` in the operator's
    /// namespace); every reader verifies that record from this pin again. Changing the
    /// pin re-anchors trust (an Event says so).
    pub trusted_root: ConfigMapSource,

    /// PEM bundle of the certificate authorities that sign the repository's HTTPS
    /// certificate, when it is not a public CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<ConfigMapSource>,

    /// How often the metadata is refreshed to notice revocations, new versions and
    /// expiry. A Go duration between 10s and 24h.
    #[serde(default = "default_refresh_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("refreshInterval must be a duration such as 30s, 5m or 1h"),
        validation = Rule::new(duration_between!("10s", "24h")).message("refreshInterval must be between 10s and 24h")
    )]
    pub refresh_interval: GoDuration,

    /// Who must have signed a model, beside TUF: an OpenSSF model-signing bundle
    /// (`model_signing sign key|certificate`) published as a TUF target beside the model
    /// (`<file>.sig`; `<prefix without '/'>.sig` for a prefix; `<first file>.sig` for a
    /// list), whose statement names exactly the model's files with the sha256s TUF signs,
    /// signed by a key or a certificate listed here. Absent: no signature is asked for.
    /// Its ConfigMaps are read where `trustedRoot`'s is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenancePolicy>,

    /// Where models shipped as OCI images (`model.image`) may be pulled from. The image's
    /// repository is named by its publisher in the manifest target's signed custom
    /// metadata; it must be one of `registries` or lie below one. Absent: image models
    /// from this repository are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImagePolicy>,
}

/// The registries image models may come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicy {
    /// Registry repositories or their parents, as `host[:port]/path` without a scheme,
    /// tag or digest: `registry.example.com/models` allows
    /// `registry.example.com/models/llm`, not `registry.example.com/other`.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = Rule::new("self.all(r, !r.contains('://') && !r.contains('@') && !r.endsWith('/') && !r.startsWith('/') && !r.matches('[[:space:][:cntrl:]]'))").message("images.registries: each entry is host[:port] or host[:port]/path, such as registry.example.com/models: no scheme, digest, whitespace, or leading or trailing '/'"))]
    pub registries: Vec<String>,
}

/// The signers a model's signature must come from (any one of them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.publicKeys) || (has(self.certificates) && size(self.certificates) > 0)").message("provenance needs publicKeys or certificates: a policy that accepts no signer would refuse every model"))]
pub struct ProvenancePolicy {
    /// PEM public keys (EC P-256, P-384 or P-521, one or more `PUBLIC KEY` blocks) whose
    /// `key`-method signatures are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_keys: Option<ConfigMapSource>,

    /// Certificate authorities, each with the identities it may vouch for, whose
    /// `certificate`-method signatures are accepted while the signing certificate is
    /// valid (checked at every refresh: an expired one is refused like a revocation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub certificates: Vec<CertificateSigners>,
}

/// Signing certificates a CA issues for named identities.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSigners {
    /// PEM bundle of the CA (root) certificates the signing certificate must chain to.
    pub ca_bundle: ConfigMapSource,
    /// Who may sign: a signing certificate is accepted when its subject's common name or
    /// one of its subject alternative names (email, URI, DNS) is one of these, exactly.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 256)))]
    pub identities: Vec<String>,
}

impl ModelRepositorySpec {
    /// How often the metadata is refreshed.
    pub fn refresh_interval(&self) -> Duration {
        REFRESH_INTERVAL.of(&self.refresh_interval)
    }
}

fn default_refresh_interval() -> GoDuration {
    REFRESH_INTERVAL.default_value()
}

/// Version of a trusted metadata role, and when it expires. These are anti-rollback
/// floors: metadata with a lower version is an attack and is refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleState {
    /// Highest version of this role that modelgate has trusted.
    pub version: i64,
    /// Expiry of that version; after it the metadata is stale (a freeze attack or an
    /// absent publisher) and is no longer trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
}

/// What modelgate currently trusts in the repository.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRepositoryStatus {
    /// The newest trusted root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RoleState>,
    /// The newest trusted timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<RoleState>,
    /// The newest trusted snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<RoleState>,
    /// The newest trusted top-level targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<RoleState>,
    /// When the metadata was last refreshed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,
    /// sha256 of the pinned root (`spec.trustedRoot`) the trust state was last verified
    /// from. Written only by modelgate: a pin that differs from it is a re-anchoring
    /// (`ReAnchored`); a trust record whose pin differs from it is tampering
    /// (`TrustStateTampered`), whoever edited the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_root_sha256: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Trusted`, `Expired`, `RollbackDetected`, `Unreachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
