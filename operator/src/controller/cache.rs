//! What each watch cache keeps of an object: what the reconciles read, and nothing a
//! team could make large. Pure; applied to every object before it is stored.

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};

use crate::{
    api::{
        ANNOTATION_ABORT, ANNOTATION_DROP_WARM, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY,
        ANNOTATION_ROLLBACK, CACHED_REVISION_HASH, CACHED_TEMPLATE_REFUSALS, LABEL_SERVING, ModelRelease,
    },
    plan::pod_policy::PodPolicy,
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
/// a labelled ReplicaSet or pod must not cost the operator memory.
fn keep_own_labels(meta: &mut kube::api::ObjectMeta) {
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k.starts_with("modelgate.dev/"));
    }
}

/// Of a ReplicaSet only its labels (modelgate's), replica count, owners and its
/// template's serving label are read.
pub fn replica_set(rs: &mut ReplicaSet) {
    let serving = rs.spec.template.as_ref().and_then(|t| t.metadata.as_ref()?.labels.as_ref()?.get(LABEL_SERVING));
    rs.spec.template = serving.cloned().map(|v| k8s_openapi::api::core::v1::PodTemplateSpec {
        metadata: Some(kube::api::ObjectMeta {
            labels: Some([(LABEL_SERVING.to_string(), v)].into()),
            ..Default::default()
        }),
        spec: None,
    });
    rs.status = None;
    rs.metadata.annotations = None;
    keep_own_labels(&mut rs.metadata);
}

/// Of a pod only its labels (modelgate's), its controller's UID and what the health
/// gate reads of its status.
pub fn pod(pod: &mut Pod) {
    pod.spec = None;
    pod.status = pod.status.take().map(crate::gates::kubernetes::assessed);
    pod.metadata.annotations = None;
    keep_own_labels(&mut pod.metadata);
    // Only the controller reference: a pod counts for a revision only when one
    // of the release's own ReplicaSets controls it.
    if let Some(refs) = pod.metadata.owner_references.as_mut() {
        refs.retain(|o| o.controller == Some(true));
        for o in refs.iter_mut() {
            o.api_version = String::new();
            o.kind = String::new();
            o.name = String::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
