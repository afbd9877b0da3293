//! What each watch cache keeps of an object: what the reconciles read, and nothing a
//! team could make large. Pure; applied to every object before it is stored.

use std::borrow::Cow;

use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::ReplicaSet, core::v1::Pod},
};
use kube::{Resource, api::ObjectMeta};
use serde::Deserialize;

use crate::{
    api::{
        ANNOTATION_ABORT, ANNOTATION_DROP_WARM, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY,
        ANNOTATION_ROLLBACK, ANNOTATION_TEMPLATE_SHA256, CACHED_REVISION_HASH, CACHED_TEMPLATE_REFUSALS, LABEL_ROLE,
        LABEL_SERVING, ModelRelease,
    },
    plan::{PodHealth, pod_policy::PodPolicy},
};

/// A release as the cache keeps it: of its annotations only an SRE's commands, each at
/// most `MAX_COMMAND_BYTES` (kubectl's last-applied copy alone doubles an object; a
/// command is a short token, compared by its first bytes), and instead of its pod
/// template what the reconcile reads of it: the revision hash and the pod policy's
/// refusals (`CACHED_*`). A template is read from the API server when a revision's
/// workload is made. Its labels, finalizers and owners are not read (a team can fill
/// labels without a schema to stop it): they go. Whatever a team writes, a cached
/// release is small.
pub fn release(release: &mut ModelRelease, policy: &PodPolicy) {
    release.metadata.labels = None;
    release.metadata.finalizers = None;
    release.metadata.owner_references = None;
    let annotations = release.metadata.annotations.get_or_insert_with(Default::default);
    annotations.retain(|k, _| COMMANDS.contains(&k.as_str()));
    for value in annotations.values_mut() {
        crate::text::cut(value, MAX_COMMAND_BYTES);
    }
    let namespace = release.metadata.namespace.clone().unwrap_or_default();
    let hash = crate::plan::desired_hash(release);
    let refusals = crate::plan::template_refusals(release, &namespace, policy).join("\n");
    let annotations = release.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(CACHED_REVISION_HASH.into(), hash);
    annotations.insert(CACHED_TEMPLATE_REFUSALS.into(), refusals);
    release.spec.template = Default::default();
}

/// The annotations by which an SRE commands a release.
const COMMANDS: [&str; 6] = [
    ANNOTATION_PROMOTE,
    ANNOTATION_PROMOTE_FULL,
    ANNOTATION_ROLLBACK,
    ANNOTATION_RETRY,
    ANNOTATION_ABORT,
    ANNOTATION_DROP_WARM,
];

/// Longest command value kept (the plugin writes a timestamp or `<revision>@<token>`).
const MAX_COMMAND_BYTES: usize = 256;

/// Of an object's labels only modelgate's own are read: a tenant's thousands of labels on
/// a labelled ReplicaSet or pod must not cost the operator memory. Of its owners only the
/// controller (a pod or ReplicaSet counts only when one of the release's own objects
/// controls it). Name, namespace, UID and version stay; the rest goes.
fn kept_meta(meta: ObjectMeta) -> ObjectMeta {
    // Whole: the release's controller maps a ReplicaSet's events to its owner by them.
    let owner_references =
        meta.owner_references.map(|refs| refs.into_iter().filter(|o| o.controller == Some(true)).collect());
    let labels = meta.labels.map(|mut labels| {
        labels.retain(|k, _| k.starts_with("modelgate.dev/"));
        labels
    });
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels,
        owner_references,
        ..Default::default()
    }
}

/// A ReplicaSet as the cache keeps it, read straight from the watch (its template is
/// never held): what the reconcile reads, and the template's fingerprint now beside the
/// one modelgate recorded when it made it (`ANNOTATION_TEMPLATE_SHA256`).
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "ReplicaSet")]
pub struct CachedReplicaSet {
    pub metadata: ObjectMeta,
    pub replicas: Option<i32>,
    /// The template's `modelgate.dev/serving` label: whether a pod it makes is born in service.
    pub serving: Option<String>,
    /// The template's `modelgate.dev/role` label: what a pod it makes is born as.
    pub role: Option<String>,
    /// `workload::template_sha256` of the template as the API server holds it.
    pub template_sha256: Option<String>,
    /// What modelgate recorded of it (absent on a ReplicaSet it has not recorded yet).
    pub recorded_sha256: Option<String>,
}

impl From<ReplicaSet> for CachedReplicaSet {
    fn from(rs: ReplicaSet) -> Self {
        let mut meta = rs.metadata;
        let mut recorded_sha256 = meta.annotations.take().and_then(|mut a| a.remove(ANNOTATION_TEMPLATE_SHA256));
        if let Some(recorded) = recorded_sha256.as_mut() {
            crate::text::cut(recorded, 64);
        }
        let spec = rs.spec;
        let template = spec.template.as_ref();
        Self {
            metadata: kept_meta(meta),
            replicas: spec.replicas,
            serving: template.and_then(|t| t.metadata.as_ref()?.labels.as_ref()?.get(LABEL_SERVING).cloned()),
            role: template.and_then(|t| t.metadata.as_ref()?.labels.as_ref()?.get(LABEL_ROLE).cloned()),
            template_sha256: template.map(crate::workload::template_sha256),
            recorded_sha256,
        }
    }
}

/// A pod as the cache keeps it, read straight from the watch: modelgate's labels, its
/// controller's UID, and what the kubernetes gate makes of its status
/// (`gates::kubernetes::health_of`), not the status itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Pod")]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    pub health: PodHealth,
}

impl From<Pod> for CachedPod {
    fn from(pod: Pod) -> Self {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let health = crate::gates::kubernetes::health_of(&name, deleting, pod.status.as_ref());
        Self { metadata: kept_meta(pod.metadata), health }
    }
}

/// The cached kinds are the API's kinds, at the API's paths: only what is kept differs.
macro_rules! cached_as {
    ($cached:ty, $kind:ty) => {
        impl Resource for $cached {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;
            fn kind(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
cached_as!(CachedReplicaSet, ReplicaSet);
cached_as!(CachedPod, Pod);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use kube::ResourceExt;
    use serde_json::json;

    fn heavy(args: usize) -> ModelRelease {
        let big: Vec<String> = (0..args).map(|i| format!("--flag-{i}={}", "x".repeat(1000))).collect();
        serde_json::from_value(json!({
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease",
            "metadata": {"name": "m", "namespace": "team",
              "labels": (0..1000).map(|i| (format!("team.example/l{i}"), json!("v".repeat(60)))).collect::<serde_json::Map<_, _>>(),
              "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(100_000),
                "modelgate.dev/promote": "2026-12-06T07:00:00Z",
                "modelgate.dev/retry": "é".repeat(1000),
                "modelgate.dev/filler": "x".repeat(100_000),
                "modelgate.dev/cached-revision-hash": "forged",
            }},
            "spec": {"repositoryRef": {"name": "r"}, "model": {"target": "m/1/model.onnx"},
                     "template": {"spec": {"containers": [{"name": "a", "image": "i", "args": big}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_cached_release_keeps_commands_and_what_is_read_of_its_template() {
        let policy = crate::plan::pod_policy::PodPolicy::default();
        for args in [1, 80] {
            let full = heavy(args);
            let mut cached = full.clone();
            release(&mut cached, &policy);
            let annotations = cached.metadata.annotations.clone().unwrap();
            let commands: Vec<&str> = annotations.keys().map(String::as_str).filter(|k| COMMANDS.contains(k)).collect();
            assert_eq!(commands, [ANNOTATION_PROMOTE, ANNOTATION_RETRY]);
            assert_eq!(annotations[ANNOTATION_PROMOTE], "2026-12-06T07:00:00Z");
            assert!(annotations[ANNOTATION_RETRY].len() <= MAX_COMMAND_BYTES);
            assert_eq!(cached.spec.template, Default::default(), "no template is kept");
            assert!(serde_json::to_vec(&cached).unwrap().len() < 2048);
            // The reconcile reads the same from either.
            assert_eq!(crate::plan::desired_hash(&cached), crate::plan::revision_hash(&full.spec));
            assert_eq!(
                crate::plan::template_refusals(&cached, "team", &policy),
                crate::plan::template_refusals(&full, "team", &policy)
            );
            // A note a team wrote on the release it applied is not read.
            assert_eq!(crate::plan::desired_hash(&full), crate::plan::revision_hash(&full.spec));
        }
        let refused = crate::plan::template_refusals(&heavy(80), "team", &policy);
        assert!(refused[0].starts_with("spec.template is 8") && refused[0].contains("at most 64 KiB"), "{refused:?}");
        assert!(crate::plan::template_refusals(&heavy(1), "team", &policy).is_empty());
    }

    fn meta(name: &str) -> serde_json::Value {
        json!({"name": name, "namespace": "team", "uid": "u-1", "resourceVersion": "7",
            "generateName": "m-", "creationTimestamp": "2026-12-06T09:00:00Z",
            "labels": (0..1000).map(|i| (format!("team.example/l{i}"), json!("v".repeat(60))))
                .chain([("modelgate.dev/release".to_string(), json!("m")), ("modelgate.dev/hash".to_string(), json!("0a1b2"))])
                .collect::<serde_json::Map<_, _>>(),
            "annotations": {"team.example/filler": "x".repeat(100_000), "modelgate.dev/template-sha256": "recorded"},
            "ownerReferences": [
                {"apiVersion": "modelgate.dev/v1alpha1", "kind": "ModelRelease", "name": "m", "uid": "r-1", "controller": true},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "o-1"}]})
    }

    #[test]
    fn a_cached_replica_set_keeps_what_is_read_and_the_template_fingerprint() {
        let template = json!({"metadata": {"labels": {"modelgate.dev/serving": "true"}},
            "spec": {"containers": [{"name": "server", "image": "i", "args": ["x".repeat(60_000)]}]}});
        let rs = |template: serde_json::Value| {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("m-0a1b2"),
                "spec": {"replicas": 3, "selector": {}, "template": template}, "status": {"replicas": 3}})
        };
        let cached: CachedReplicaSet = serde_json::from_value(rs(template.clone())).unwrap();
        assert_eq!((cached.replicas, cached.serving.as_deref()), (Some(3), Some("true")));
        assert_eq!(cached.recorded_sha256.as_deref(), Some("recorded"));
        let labels: Vec<&str> = cached.metadata.labels.as_ref().unwrap().keys().map(String::as_str).collect();
        assert_eq!(labels, ["modelgate.dev/hash", "modelgate.dev/release"], "only modelgate's labels");
        assert_eq!(cached.metadata.annotations, None);
        assert_eq!(cached.owner_references().len(), 1, "only the controller");
        assert_eq!(cached.owner_references()[0].kind, "ModelRelease", "whole: the controller maps events by it");
        assert!(format!("{cached:?}").len() < 1500, "{cached:?}");

        // Out of service or in, the same template; any other change, another one.
        let mut idle = template.clone();
        idle["metadata"]["labels"]["modelgate.dev/serving"] = json!("false");
        let idle: CachedReplicaSet = serde_json::from_value(rs(idle)).unwrap();
        assert_eq!(idle.serving.as_deref(), Some("false"));
        assert_eq!(idle.template_sha256, cached.template_sha256);
        let mut swapped = template.clone();
        swapped["spec"]["containers"][0]["image"] = json!("attacker/image");
        let swapped: CachedReplicaSet = serde_json::from_value(rs(swapped)).unwrap();
        assert_ne!(swapped.template_sha256, cached.template_sha256);
        let typed: PodTemplateSpec = serde_json::from_value(template).unwrap();
        assert_eq!(cached.template_sha256, Some(crate::workload::template_sha256(&typed)));
    }

    #[test]
    fn a_cached_pod_is_its_labels_its_controller_and_its_health() {
        let pod = json!({"metadata": meta("m-0a1b2-xyz"), "spec": {"containers": [{"name": "server", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "server", "image": "i", "imageID": "", "ready": true, "restartCount": 5,
                    "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "message": "x".repeat(4096)}}}]}});
        // As a list's items come (no kind) and as a watch's do.
        for pod in [
            pod.clone(),
            json!({"apiVersion": "v1", "kind": "Pod"})
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .chain(pod.as_object().unwrap().clone())
                .collect::<serde_json::Map<_, _>>()
                .into(),
        ] {
            let cached: CachedPod = serde_json::from_value(pod).unwrap();
            assert_eq!(cached.health.ready, 1);
            let Some(crate::plan::PodProblem::Hard { reason, message }) = &cached.health.problem else { panic!() };
            assert_eq!(reason, "CrashLoopBackOff");
            assert!(message.starts_with("pod m-0a1b2-xyz: container server is crash-looping"), "{message}");
            assert_eq!(cached.metadata.labels.as_ref().unwrap().len(), 2);
            assert!(format!("{cached:?}").len() < 1500, "{cached:?}");
        }
    }
}
