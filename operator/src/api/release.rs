//! `ModelRelease`: one served model, like a Deployment whose image is a signed model.
//! Owned by the ML team; changing `spec.model.target` (or the template) starts a new
//! revision that is verified, rolled out in steps behind gates, or rolled back.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use std::time::Duration;

use super::common::{
    ConfigMapSource, DNS_LABEL, DURATION, DurationBounds, GoDuration, NO_CREDENTIALS, duration_between,
};

/// `strategy.steps[].pause.duration`: up to a week.
pub const PAUSE: DurationBounds = DurationBounds::new("0s", 1, 7 * 24 * 3600);
/// `gates.interval`: often enough to matter, rarely enough not to hammer the providers.
pub const GATE_INTERVAL: DurationBounds = DurationBounds::new("30s", 5, 3600);
/// `gates.progressDeadline`.
pub const PROGRESS_DEADLINE: DurationBounds = DurationBounds::new("10m", 10, 24 * 3600);
/// `gates.checks[].webhook.timeout`: a gate call never holds a worker longer.
pub const WEBHOOK_TIMEOUT: DurationBounds = DurationBounds::new("10s", 1, 30);
/// `rollback.postPromotionWindow`: off (0s) up to a week.
pub const POST_PROMOTION_WINDOW: DurationBounds = DurationBounds::new("10m", 0, 7 * 24 * 3600);

/// A model served by pods of `template`, released from a verified TUF target.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "modelgate.dev",
    version = "v1alpha1",
    kind = "ModelRelease",
    plural = "modelreleases",
    shortname = "mr",
    category = "modelgate",
    namespaced,
    status = "ModelReleaseStatus",
    validation = Rule::new("size(self.metadata.name) <= 52").message("metadata.name of a ModelRelease must be at most 52 characters, so that the names and labels of its revisions stay valid"),
    validation = Rule::new("!has(self.spec.service) || !self.metadata.name.contains('.')").message("a ModelRelease with spec.service needs a metadata.name without '.', because its Service is named like it and Service names are DNS labels; rename the release or remove spec.service"),
    printcolumn = r#"{"name":"Ready","type":"string","description":"Ready pods in service over spec.replicas","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","description":"Target served by the stable revision","jsonPath":".status.stable.target"}"#,
    printcolumn = r#"{"name":"Canary","type":"string","description":"Target being rolled out","jsonPath":".status.canary.target"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","description":"The canary's step in spec.strategy.steps (0 is the first)","jsonPath":".status.canary.step"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","description":"Percent of replicas serving the canary","jsonPath":".status.canary.weight"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","description":"Files in the stable revision's model","jsonPath":".status.stable.files","priority":1}"#,
    printcolumn = r#"{"name":"Size","type":"integer","description":"Bytes of the stable revision's model","jsonPath":".status.stable.length","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelReleaseSpec {
    /// The repository whose signers vouch for the model: a ModelRepository in this
    /// namespace, or a ClusterModelRepository whose policy allows this namespace. It
    /// cannot change: who vouches for a running model must not change under it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.repositoryRef cannot change: who vouches for a running model must not change under it; to release from another repository, create a new ModelRelease"))]
    pub repository_ref: RepositoryRef,

    /// Which signed model to serve, and where the serving containers find it.
    pub model: ModelSource,

    /// Number of pods serving the release once a revision is fully rolled out.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,

    /// Pod template of the model server (image, probes, resources), as in a Deployment.
    /// modelgate adds an init container that fetches and verifies the model and a
    /// read-only volume at `model.mountPath`; labels under `modelgate.dev/` are
    /// reserved. See `kubectl explain pod.spec` for the fields.
    #[x_kube(
        validation = Rule::new("!has(self.metadata) || !has(self.metadata.labels) || !self.metadata.labels.exists(k, k.startsWith('modelgate.dev/'))").message("template.metadata.labels must not use the reserved prefix modelgate.dev/; modelgate sets those labels itself"),
        validation = Rule::new("!has(self.metadata) || !has(self.metadata.annotations) || !self.metadata.annotations.exists(k, k.startsWith('modelgate.dev/'))").message("template.metadata.annotations must not use the reserved prefix modelgate.dev/; modelgate sets those annotations itself (the verified digest among them)"),
        validation = Rule::new("has(self.spec) && size(self.spec.containers) > 0").message("template.spec.containers must list the model server's container (at least one)"),
        validation = Rule::new("!has(self.spec) || self.spec.containers.all(c, self.spec.containers.exists_one(d, d.name == c.name))").message("template.spec.containers: each container needs a name of its own"),
        validation = Rule::new("!has(self.spec) || !has(self.spec.initContainers) || self.spec.initContainers.all(c, !self.spec.containers.exists(d, d.name == c.name) && self.spec.initContainers.exists_one(d, d.name == c.name))").message("template.spec.initContainers: each init container needs a name of its own, different from every container's"),
        validation = Rule::new("!has(self.spec) || ((!has(self.spec.volumes) || !self.spec.volumes.exists(v, v.name.startsWith('modelgate-'))) && self.spec.containers.all(c, !has(c.volumeMounts) || !c.volumeMounts.exists(m, m.name.startsWith('modelgate-'))) && (!has(self.spec.initContainers) || self.spec.initContainers.all(c, !has(c.volumeMounts) || !c.volumeMounts.exists(m, m.name.startsWith('modelgate-')))))").message("template: volume names starting with modelgate- are reserved; modelgate mounts the verified model itself, read-only, at model.mountPath")
    )]
    pub template: PodTemplateSpec,

    /// How a new revision is rolled out.
    #[serde(default)]
    pub strategy: Strategy,

    /// Health checks that decide whether the rollout goes on or rolls back.
    #[serde(default)]
    pub gates: Gates,

    /// A statistical judge: metrics of the canary compared with a baseline's at each
    /// gate interval, with baseline pods of the stable model started beside it if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<super::Analysis>,

    /// When and how modelgate returns to the previous revision by itself.
    #[serde(default)]
    pub rollback: RollbackPolicy,

    /// Hold the rollout at its current step (gates and automatic rollback keep running).
    /// Set back to false to resume: `kubectl patch mr NAME --type merge -p '{"spec":{"paused":false}}'`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// A Service named like the release that selects the pods of every revision, so
    /// requests spread by pod count (the replica ratio). Omit it to bring your own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
}

/// The Service modelgate creates for a release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Port the Service listens on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Container port requests go to; the same as `port` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
}

fn default_replicas() -> i32 {
    1
}

/// The repository whose signers vouch for a release's model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryRef {
    /// `ModelRepository` (in the release's namespace; the default) or
    /// `ClusterModelRepository` (the security team's, for the whole cluster).
    #[serde(default)]
    pub kind: RepositoryKind,
    /// Name of the repository.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(DNS_LABEL).message("repositoryRef.name must be the name of a ModelRepository in this namespace or of a ClusterModelRepository: lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    pub name: String,
}

/// The kinds of repository a release can name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RepositoryKind {
    /// A repository in the release's namespace, for clusters where one team owns trust.
    #[default]
    ModelRepository,
    /// A cluster-wide repository the security team owns, with its policy.
    ClusterModelRepository,
}

impl RepositoryKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ModelRepository => "ModelRepository",
            Self::ClusterModelRepository => "ClusterModelRepository",
        }
    }
}

/// The model: which signed files make it (exactly one of `target`, `targets`, `prefix`,
/// `image`) and where they are mounted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.target), has(self.targets), has(self.prefix), has(self.image)].filter(x, x).size() == 1").message("model names the signed files in exactly one way: target (one file), targets (a list), prefix (every target under a directory) or image (an OCI image whose manifest is a target)"))]
pub struct ModelSource {
    /// TUF target path of a model that is one file, relative to the repository's
    /// targets, such as `fraud-detector/2.4.0/model.onnx`. Changing it starts a new
    /// revision.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(
        validation = Rule::new("!self.contains('://')").message("model.target is a path relative to the repository's targetsUrl, such as fraud-detector/2.4.0/model.onnx, not a URL"),
        validation = Rule::new("self.contains('://') || !self.startsWith('/')").message("model.target is a TUF target path relative to the repository, such as fraud-detector/2.4.0/model.onnx; remove the leading '/'"),
        validation = Rule::new("self.contains('://') || self.startsWith('/') || !self.split('/').exists(s, s == '..' || s == '.' || s == '')").message("model.target must not contain '..', '.' or empty path segments"),
        validation = Rule::new("!self.contains('\\\\')").message("model.target must use '/' as separator, not '\\\\'"),
        validation = Rule::new("!self.matches('[[:cntrl:]]')").message("model.target must not contain control characters")
    )]
    pub target: String,

    /// TUF target paths of a model made of several files (config, tokenizer, weight
    /// shards). Each file keeps the last segment of its path as its name, so the last
    /// segments must differ. The revision is the whole verified set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 256)))]
    #[x_kube(
        validation = Rule::new("self.all(t, !t.contains('://') && !t.startsWith('/') && !t.contains('\\\\') && !t.split('/').exists(s, s == '..' || s == '.' || s == ''))").message("model.targets: each entry is a TUF target path relative to the repository, such as fraud-detector/2.4.0/config.json: no URL, no leading '/', no '\\\\', no '..', '.' or empty segments"),
        validation = Rule::new("self.all(t, !t.matches('[[:cntrl:]]'))").message("model.targets must not contain control characters"),
        validation = Rule::new("self.all(t, self.exists_one(u, u.substring(u.lastIndexOf('/') + 1) == t.substring(t.lastIndexOf('/') + 1)))").message("model.targets: the files land in one directory by the last segment of their paths, so those must differ; use prefix to keep a directory tree")
    )]
    pub targets: Vec<String>,

    /// Every target under this directory of the repository (ending with `/`), such as
    /// `llama-3/8b/2026-11-01/`, delegated roles included; each file keeps its path
    /// below the prefix. At most 1024 files. Publish each version under a prefix of its
    /// own: a file added or removed under a prefix that serves changes the model, and
    /// modelgate treats the verified one as no longer trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(
        validation = Rule::new("self.endsWith('/') && !self.startsWith('/')").message("model.prefix is a directory of the repository's targets, such as llama-3/8b/2026-11-01/: it ends with '/' and does not start with one"),
        validation = Rule::new("!self.contains('://') && !self.contains('\\\\') && !self.substring(0, size(self) - 1).split('/').exists(s, s == '..' || s == '.' || s == '')").message("model.prefix must be a relative path without a URL scheme, '\\\\', '..', '.' or empty segments, such as llama-3/8b/2026-11-01/"),
        validation = Rule::new("!self.matches('[[:cntrl:]]')").message("model.prefix must not contain control characters")
    )]
    pub prefix: Option<String>,

    /// A model shipped as an OCI image (a modelcar: its layers hold the model files),
    /// pinned by a TUF target that is the image's manifest. The node pulls the image by
    /// that digest from the registry the target's signed metadata names, and mounts it
    /// read-only at `mountPath` (a Kubernetes image volume): pulled once per node, shared
    /// by every pod there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,

    /// Absolute directory where serving containers find the verified model (read-only).
    /// It appears complete or not at all: the files are verified before it does.
    #[serde(default = "default_mount_path")]
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(
        validation = Rule::new("self.startsWith('/') && self != '/'").message("model.mountPath must be an absolute directory other than '/', such as /models"),
        validation = Rule::new("!self.contains('//') && !self.split('/').exists(s, s == '..' || s == '.')").message("model.mountPath must be a plain absolute path without '//', '.' or '..' segments, such as /models"),
        validation = Rule::new("!['/proc', '/sys', '/dev', '/etc', '/var/run/secrets', '/run/secrets', '/var/run/modelgate'].exists(p, self == p || self == p + '/' || self.startsWith(p + '/'))").message("model.mountPath must not be or lie under /proc, /sys, /dev, /etc, the ServiceAccount token directory (/var/run/secrets) or /var/run/modelgate; use a directory of its own, such as /models")
    )]
    pub mount_path: String,
}

/// An OCI image model: the TUF target that is its manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    /// TUF target path of the image's manifest (its bytes exactly as the registry serves
    /// them, so its signed sha256 is the image digest), such as `llm/3.0.0/manifest.json`.
    /// Its signed custom metadata names the registry repository: `{"oci": {"repository":
    /// "registry.example.com/models/llm"}}`. Changing it starts a new revision.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(
        validation = Rule::new("!self.contains('://') && !self.startsWith('/') && !self.contains('\\\\') && !self.split('/').exists(s, s == '..' || s == '.' || s == '')").message("model.image.target is a TUF target path relative to the repository, such as llm/3.0.0/manifest.json: no URL, no leading '/', no '\\\\', no '..', '.' or empty segments"),
        validation = Rule::new("!self.matches('[[:cntrl:]]')").message("model.image.target must not contain control characters")
    )]
    pub target: String,
}

impl ModelSource {
    /// The files this spec selects.
    pub fn model(&self) -> super::ModelRef {
        super::ModelRef::of_spec(self)
    }
}

impl RevisionRef {
    /// The files this revision serves.
    pub fn model(&self) -> super::ModelRef {
        match &self.image {
            Some(_) => super::ModelRef::Image(self.target.clone()),
            None => super::ModelRef::of_status(&self.target, &self.targets),
        }
    }
}

fn default_mount_path() -> String {
    "/models".into()
}

/// Rollout steps and how traffic follows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Steps run in order. `setWeight` moves that percent of replicas to the new
    /// revision; `pause` waits for a duration, or until someone promotes the release.
    /// Without steps a verified revision goes to 100% at once (gates still apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()").message("strategy.steps: setWeight values must not decrease from one step to the next; to go back, roll back"))]
    pub steps: Vec<Step>,

    /// How weight becomes traffic.
    #[serde(default)]
    pub traffic: Traffic,
}

/// One rollout step: exactly one of `setWeight` or `pause`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.setWeight) != has(self.pause)").message("each step sets exactly one of setWeight or pause"))]
pub struct Step {
    /// Percent (0-100) of replicas that serve the new revision from this step on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
    /// Wait before the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

/// A wait between steps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long to wait, as a Go duration (`30s`, `5m`, `1h`). Without it the rollout
    /// waits until someone promotes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("pause.duration must be a duration such as 30s, 5m or 1h; omit it to wait for promote"),
        validation = Rule::new(duration_between!("1s", "168h")).message("pause.duration must be between 1s and 168h (a week); omit it to wait for promote")
    )]
    pub duration: Option<GoDuration>,
}

/// How weight becomes traffic. Only the replica ratio exists today: a Service that
/// selects the release label spreads requests by pod count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Weight is the share of pods: the canary gets ceil(replicas x weight / 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_ratio: Option<ReplicaRatio>,
}

/// Replica-ratio traffic has no settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct ReplicaRatio {}

/// Health gates evaluated while a revision rolls out (and after, see
/// `rollback.postPromotionWindow`). Pod health is always checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// How often the checks run.
    #[serde(default = "default_gate_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("gates.interval must be a duration such as 30s or 1m"),
        validation = Rule::new(duration_between!("5s", "1h")).message("gates.interval must be between 5s and 1h, such as 30s")
    )]
    pub interval: GoDuration,
    /// Consecutive failures of one check that trigger a rollback.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: i32,
    /// Consecutive results without data (or without an answer) of one check that trigger
    /// a rollback: no data is never a pass.
    #[serde(default = "default_inconclusive_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub inconclusive_limit: i32,
    /// How long the canary pods of a step may go without progress before the rollout
    /// rolls back. Progress is a pod created, bound to a node, done with its init
    /// containers (the model fetched and verified) or Ready; the time counts from the
    /// last of those or the step's start. A first revision has nothing to roll back to:
    /// it is marked stalled (`Progressing=False`, reason `ProgressDeadlineExceeded`)
    /// and its pods are kept. Crash loops, OOM kills and failed verification roll back
    /// at once. Give it room for the model download of one pod.
    #[serde(default = "default_progress_deadline")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("gates.progressDeadline must be a duration such as 10m"),
        validation = Rule::new(duration_between!("10s", "24h")).message("gates.progressDeadline must be between 10s and 24h, such as 10m")
    )]
    pub progress_deadline: GoDuration,
    /// The checks. Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub checks: Vec<GateCheck>,
}

impl Gates {
    /// How often the checks run.
    pub fn interval(&self) -> Duration {
        GATE_INTERVAL.of(&self.interval)
    }

    /// How long a step's canary pods may take to become Ready.
    pub fn progress_deadline(&self) -> Duration {
        PROGRESS_DEADLINE.of(&self.progress_deadline)
    }
}

impl Pause {
    /// How long to wait, or `None` to wait for promote.
    pub fn duration(&self) -> Option<Duration> {
        self.duration.as_ref().map(|d| PAUSE.of(d))
    }
}

impl WebhookCheck {
    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        WEBHOOK_TIMEOUT.of(&self.timeout)
    }
}

impl RollbackPolicy {
    /// How long gates keep running after promotion; zero for none.
    pub fn post_promotion_window(&self) -> Duration {
        POST_PROMOTION_WINDOW.of(&self.post_promotion_window)
    }

    /// How long the previous revision stays warm after a promotion; zero for not at all.
    pub fn keep_warm_window(&self) -> Duration {
        match &self.keep_warm.window {
            Some(w) => POST_PROMOTION_WINDOW.of(w),
            None => self.post_promotion_window(),
        }
    }

    /// Warm pods for `replicas`: ceil(replicas x percent / 100), at least one, or none
    /// when the window or the percent is zero.
    pub fn warm_replicas(&self, replicas: i32) -> i32 {
        let percent = i64::from(self.keep_warm.percent.clamp(0, 100));
        if self.keep_warm_window().is_zero() || percent == 0 || replicas <= 0 {
            return 0;
        }
        let pods = (i64::from(replicas) * percent + 99) / 100;
        i32::try_from(pods.max(1)).unwrap_or(replicas)
    }
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            interval: default_gate_interval(),
            failure_limit: default_failure_limit(),
            inconclusive_limit: default_inconclusive_limit(),
            progress_deadline: default_progress_deadline(),
            checks: Vec::new(),
        }
    }
}

fn default_inconclusive_limit() -> i32 {
    5
}

fn default_progress_deadline() -> GoDuration {
    PROGRESS_DEADLINE.default_value()
}

fn default_gate_interval() -> GoDuration {
    GATE_INTERVAL.default_value()
}

fn default_failure_limit() -> i32 {
    2
}

/// One health check: exactly one provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.prometheus) != has(self.webhook)").message("each gate check sets exactly one of prometheus or webhook"))]
pub struct GateCheck {
    /// Name of the check, shown in status and events.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(DNS_LABEL).message("gate check name must be lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    pub name: String,
    /// A PromQL instant query whose value must stay within bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
    /// An HTTPS endpoint that judges the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookCheck>,
}

/// A Prometheus instant query and its bounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max)").message("a prometheus check needs min, max or both"),
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("prometheus check: min must not be greater than max")
)]
pub struct PrometheusCheck {
    /// Base URL of the Prometheus HTTP API, such as https://prometheus.monitoring:9090
    /// (plain http:// only where the installation allows it).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''").message("prometheus.address must be an http:// or https:// URL with a host"),
        validation = Rule::new(NO_CREDENTIALS).message("prometheus.address must not carry credentials (user:password@); modelgate sends none"),
        validation = Rule::new("!self.contains('?') && !self.contains('#')").message("prometheus.address is Prometheus' base URL, such as https://prometheus.monitoring:9090 (a path prefix is fine): no '?' query or '#' fragment; modelgate adds /api/v1/query itself")
    )]
    pub address: String,
    /// PromQL returning one number. `{{canary}}` and `{{stable}}` are replaced by the
    /// revision numbers, `{{release}}` by the release name. A query that names
    /// `{{stable}}` is skipped (passes, saying so) for a release's first revision, which
    /// has nothing to compare with; pod health still decides.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.matches('[^ \\t\\r\\n]')").message("prometheus.query must be a PromQL expression, not blanks"))]
    pub query: String,
    /// The check fails when the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The check fails when the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A webhook that receives the rollout context as JSON and passes the canary with a 2xx.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCheck {
    /// https:// URL to POST to.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("isURL(self) && url(self).getScheme() == 'https' && url(self).getHost() != ''").message("webhook.url must be an https:// URL with a host"),
        validation = Rule::new(NO_CREDENTIALS).message("webhook.url must not carry credentials (user:password@); modelgate sends none")
    )]
    pub url: String,
    /// Request timeout; a timeout counts as a failure, never a pass.
    #[serde(default = "default_webhook_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("webhook.timeout must be a duration such as 10s"),
        validation = Rule::new(duration_between!("1s", "30s")).message("webhook.timeout must be between 1s and 30s, such as 10s")
    )]
    pub timeout: GoDuration,
    /// Further attempts after a timeout or a connection error (not after an answer).
    #[serde(default = "default_webhook_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
    /// PEM bundle of the certificate authorities that sign the webhook's certificate,
    /// when it is not a public CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<ConfigMapSource>,
}

fn default_webhook_retries() -> i32 {
    2
}

fn default_webhook_timeout() -> GoDuration {
    WEBHOOK_TIMEOUT.default_value()
}

/// Automatic rollback policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Roll back by itself when a gate fails `failureLimit` times or canary pods fail.
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// After reaching 100%, keep gating this long and roll back if it turns bad.
    /// `0s` turns the window off.
    #[serde(default = "default_post_promotion_window")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("postPromotionWindow must be a duration such as 10m, or 0s for none"),
        validation = Rule::new(duration_between!("0s", "168h")).message("postPromotionWindow must be at most 168h (a week), such as 10m, or 0s for none")
    )]
    pub post_promotion_window: GoDuration,
    /// What to do when the stable target is revoked or its metadata expires. The
    /// stricter of this and the repository's policy applies.
    #[serde(default)]
    pub on_revocation: RevocationAction,
    /// Pods of the previous revision kept running after a promotion, with their model
    /// loaded but out of the Service, so that a rollback in that time serves at once
    /// instead of waiting for a model to load. On by default while the post-promotion
    /// window is.
    #[serde(default)]
    pub keep_warm: KeepWarm,
}

/// How many pods of the previous revision stay warm after a promotion, and how long.
/// Warm pods carry the label `modelgate.dev/serving: "false"`, so a Service that selects
/// `modelgate.dev/serving: "true"` (the one `spec.service` makes does) never sends them
/// requests; bring-your-own Services must select that label too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeepWarm {
    /// How long after the promotion; the post-promotion window when omitted, `0s` for
    /// none. An SRE can drop warm pods early: `kubectl modelgate drop-warm NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(DURATION).message("keepWarm.window must be a duration such as 10m, or 0s for none"),
        validation = Rule::new(duration_between!("0s", "168h")).message("keepWarm.window must be at most 168h (a week), such as 10m, or 0s for none")
    )]
    pub window: Option<GoDuration>,
    /// Share of `replicas` kept warm, rounded up, at least one pod while the window is
    /// on; 0 keeps none.
    #[serde(default = "default_warm_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
}

impl Default for KeepWarm {
    fn default() -> Self {
        Self { window: None, percent: default_warm_percent() }
    }
}

fn default_warm_percent() -> i32 {
    25
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            automatic: true,
            post_promotion_window: default_post_promotion_window(),
            on_revocation: RevocationAction::default(),
            keep_warm: KeepWarm::default(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_post_promotion_window() -> GoDuration {
    POST_PROMOTION_WINDOW.default_value()
}

/// Reaction to a serving model that is no longer trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RevocationAction {
    /// Stop serving it: return to the newest revision that is still trusted, or scale
    /// it to zero when none is (the secure default).
    #[default]
    Rollback,
    /// Only raise `TrustDegraded` and an Event; keep serving. A ClusterModelRepository
    /// whose policy says `Rollback` overrides it.
    Alert,
}

/// Lifecycle of a release, as an SRE reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Phase {
    /// The new revision's target is being verified against the repository.
    #[default]
    Verifying,
    /// Steps are running.
    Progressing,
    /// Waiting at a pause step, or paused by someone.
    Paused,
    /// The newest revision serves 100%.
    Promoted,
    /// Returning to the stable revision.
    RollingBack,
    /// Returned to the stable revision; the failed revision is not retried.
    RolledBack,
    /// The revision failed verification or cannot be released; nothing was deployed.
    Rejected,
    /// The serving model is no longer trusted and no earlier revision is: scaled to
    /// zero until a trusted model is released (or trust in it returns).
    Revoked,
}

impl Phase {
    /// The word status uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Verifying => "Verifying",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoted => "Promoted",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Rejected => "Rejected",
            Phase::Revoked => "Revoked",
        }
    }
}

/// What identifies a revision and the model it verified: the same fields wherever a
/// revision appears in status (stable, canary, warm, history).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRef {
    /// Revision number, increasing with each new target or template.
    #[serde(rename = "revision")]
    pub number: i64,
    /// Identity of the revision: a hash of `model.target` and `template`; its workload
    /// is named `<release>-<hash>`.
    #[serde(default)]
    pub hash: String,
    /// TUF target path; for several files the prefix, or the first of the list and how
    /// many more there are.
    pub target: String,
    /// The TUF target paths, when the model is a list of files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Verified sha256 of the target, hex; for several files, of the manifest that
    /// lists each verified path, length and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Verified length in bytes (of all files together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<i64>,
    /// Number of verified files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// Who signed the model (OpenSSF model signing), when its repository asks for a
    /// signature: `key sha256:<key id>`, or a certificate's subject and issuer. Its pods
    /// check the signature's file list again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// For a model shipped as an OCI image: the reference its pods mount,
    /// `<registry>/<repository>@sha256:<digest>`, the digest being the signed `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A revision that serves (or served) the release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The revision: its number, identity and verified model.
    #[serde(flatten)]
    pub revision: RevisionRef,
    /// When it became the stable revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,
}

/// The revision being rolled out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The revision: its number, identity and verified model.
    #[serde(flatten)]
    pub revision: RevisionRef,
    /// Index of the current step in `spec.strategy.steps`.
    pub step: i32,
    /// Percent of replicas serving this revision.
    pub weight: i32,
    /// When the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current step started (pauses count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// How far the revision's pods have come. `progressDeadline` counts from the last
    /// time one of these numbers rose (or the step began), as a Deployment's
    /// `progressDeadlineSeconds` does: a busy control plane that creates pods slowly is
    /// progress, a pod stuck pulling its image is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodProgress>,
}

/// The pods of the revision being rolled out, stage by stage: the most that reached each
/// stage at once during this rollout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodProgress {
    /// Pods that exist (not being deleted).
    pub created: i32,
    /// Pods bound to a node.
    pub scheduled: i32,
    /// Pods whose init containers finished: the model is fetched and verified.
    pub initialized: i32,
    /// Pods Ready.
    pub ready: i32,
    /// When one of the numbers last rose, or the step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
}

/// Last result of one gate check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// The check's name.
    pub name: String,
    /// The last result.
    pub result: GateResult,
    /// For Prometheus, the verdict and its threshold (`above max 0.05`; the number itself
    /// only where the installation shows values: chart `gates.showValues`); otherwise a
    /// short reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: i32,
    /// Results without data in a row.
    #[serde(default)]
    pub consecutive_inconclusive: i32,
    /// When it ran last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
}

/// One finished (or abandoned) rollout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The revision: its number, identity and verified model.
    #[serde(flatten)]
    pub revision: RevisionRef,
    /// How the rollout ended.
    pub outcome: Outcome,
    /// Why, in a word or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// The result of one gate check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum GateResult {
    /// Within bounds, or a 2xx answer.
    Pass,
    /// Out of bounds, or a refusal.
    Fail,
    /// No data, or no answer: never a pass.
    #[default]
    Inconclusive,
}

impl GateResult {
    /// The word status uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            GateResult::Pass => "Pass",
            GateResult::Fail => "Fail",
            GateResult::Inconclusive => "Inconclusive",
        }
    }
}

impl std::fmt::Display for GateResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for GateResult {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How a rollout ended, as `status.history[].outcome` says it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Outcome {
    /// It reached 100% and became the stable revision.
    Promoted,
    /// It failed (or was aborted) and the release returned to the stable revision.
    #[default]
    RolledBack,
    /// Its model failed verification; nothing was deployed.
    Rejected,
    /// A new spec replaced it before it was promoted.
    Superseded,
}

impl Outcome {
    /// The word status and events use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "Promoted",
            Outcome::RolledBack => "RolledBack",
            Outcome::Rejected => "Rejected",
            Outcome::Superseded => "Superseded",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What the release is doing, written only by modelgate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelReleaseStatus {
    /// Where the release is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Human-readable reason for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The revision serving when no rollout runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<RevisionStatus>,
    /// The revision being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Last result of each gate check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateStatus>,
    /// The judge's last word on the canary (`spec.analysis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<super::AnalysisStatus>,
    /// The previous revision's pods kept warm (loaded, out of service) after a promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmStatus>,
    /// Past rollouts, newest last, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Ready pods of the revisions in service (stable and canary) over `spec.replicas`,
    /// as `kubectl get` shows a Deployment's: `4/4`. A surge may show `5/4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last command of each kind (annotations `modelgate.dev/promote`, `.../promote-full`,
    /// `.../retry`, `.../abort`, `.../rollback`, `.../drop-warm`) that modelgate carried out; a different
    /// annotation value is a new command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<CommandsSeen>,
    /// `Ready` (the spec's revision serves at full size, nothing in progress: for
    /// `kubectl wait --for=condition=Ready`), `Accepted`, `Verified`, `Progressing`,
    /// `Degraded`, `TrustDegraded`, `ServiceReady`, `ForeignWorkloads`, `WorkloadChanged`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Pods of an earlier revision kept warm for a fast rollback.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmStatus {
    /// Revision number.
    pub revision: i64,
    /// Identity of the revision.
    pub hash: String,
    /// Pods kept.
    pub replicas: i32,
    /// When they are scaled away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
}

/// Tokens of the commands already carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandsSeen {
    /// Value of `modelgate.dev/promote` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// Value of `modelgate.dev/retry` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Value of `modelgate.dev/abort` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// Value of `modelgate.dev/promote-full` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_full: Option<String>,
    /// Value of `modelgate.dev/rollback` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// Value of `modelgate.dev/drop-warm` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_warm: Option<String>,
}
