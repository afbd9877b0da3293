//! The objects a release owns, built from its spec: one ReplicaSet per revision (the
//! pods that serve it, each fetching and verifying the model before the server starts)
//! and, when asked, the Service in front of all of them.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::apps::v1::{ReplicaSet, ReplicaSetSpec},
    api::core::v1::{
        Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, ImageVolumeSource, KeyToPath,
        PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Service, Volume, VolumeMount,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
    },
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::{
    api::{
        ANNOTATION_MODEL_SHA256, FETCH_CONTAINER, LABEL_HASH, LABEL_RELEASE, LABEL_REVISION, LABEL_ROLE, LABEL_SERVING,
        ModelRelease, Role,
    },
    plan::{
        Revision,
        pod_policy::{self, PodPolicy},
    },
    trust::{
        fetch::MODEL_DIR,
        state::{STATE_CHAIN_KEY, STATE_FLOORS_KEY, state_configmap},
    },
};

const MODEL_VOLUME: &str = "modelgate-model";
const IMAGE_VOLUME: &str = "modelgate-model-image";
const TRUST_VOLUME: &str = "modelgate-trust";
const PIN_VOLUME: &str = "modelgate-pin";
const PIN_DIR: &str = "/var/run/modelgate/pin";
const PIN_FILE: &str = "root.json";
const CA_VOLUME: &str = "modelgate-ca";
const FETCH_OUT: &str = "/var/run/modelgate/model";
const TRUST_DIR: &str = "/var/run/modelgate/trust";
const CA_DIR: &str = "/var/run/modelgate/ca";

/// Name of a revision's ReplicaSet.
pub fn name(release: &str, hash: &str) -> String {
    format!("{release}-{hash}")
}

/// Where a revision's pods find their repository's trust material (ConfigMaps in the
/// release's namespace) and what they hold it to.
#[derive(Clone, Debug)]
pub struct TrustFiles<'a> {
    pub repository: &'a crate::api::ModelRepositorySpec,
    /// ConfigMap and key of the pinned root.
    pub pin: (String, String),
    /// ConfigMap of the trust record (`chain.json`, `floors.json`).
    pub record: String,
    /// ConfigMap and key of the CA bundle.
    pub ca: Option<(String, String)>,
    /// The sha256 the pin must have, when its ConfigMap is a copy others can write.
    pub pin_sha256: Option<String>,
}

impl<'a> TrustFiles<'a> {
    /// A ModelRepository's own ConfigMaps, in its (and the release's) namespace.
    pub fn namespaced(name: &str, repository: &'a crate::api::ModelRepositorySpec) -> Self {
        let source = |s: &crate::api::ConfigMapSource| (s.config_map_ref.name.clone(), s.config_map_ref.key.clone());
        Self {
            repository,
            pin: source(&repository.trusted_root),
            record: state_configmap(name),
            ca: repository.ca_bundle.as_ref().map(source),
            pin_sha256: None,
        }
    }

    /// A ClusterModelRepository's copy in the release's namespace (`trust::state::Mirror`),
    /// held to the pin the operator verified.
    pub fn cluster(name: &str, repository: &'a crate::api::ModelRepositorySpec, pin_sha256: &str) -> Self {
        use crate::trust::state::{MIRROR_CA_KEY, MIRROR_PIN_KEY, mirror_configmap};
        let copy = mirror_configmap(name);
        Self {
            repository,
            pin: (copy.clone(), MIRROR_PIN_KEY.into()),
            record: copy.clone(),
            ca: repository.ca_bundle.as_ref().map(|_| (copy, MIRROR_CA_KEY.into())),
            pin_sha256: Some(pin_sha256.into()),
        }
    }
}

/// Why a revision cannot become a workload: the template modelgate would render from
/// is not a pod it may create (see `plan::pod_policy`).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Refused(pub Vec<String>);

/// The ReplicaSet of the spec's revision, for server-side apply. The pod template is the
/// user's, plus: the `modelgate fetch` init container (first, so no user init container
/// runs before the model is verified) carrying the verified target, digest and length
/// and the floors it must not go below; the pinned root, the persisted root chain and the CA
/// bundle mounted read-only; the model volume mounted read-only into every serving
/// container at `model.mountPath`; labels and the digest. A template the policy refuses
/// is not rendered.
pub fn replica_set(
    release: &ModelRelease,
    trust: &TrustFiles<'_>,
    revision: &Revision,
    replicas: i32,
    fetch_image: &str,
    policy: &PodPolicy,
    floors: crate::trust::Floors,
) -> Result<Value, Refused> {
    let release_name = release.name_any();
    let namespace = release.namespace().unwrap_or_default();
    let refusals = pod_policy::check(&release.spec.template, &release.spec.model.mount_path, &namespace, policy);
    if !refusals.is_empty() {
        return Err(Refused(refusals));
    }
    let owner = release.controller_owner_ref(&()).ok_or_else(|| Refused(vec!["the release has no UID yet".into()]))?;
    let labels: BTreeMap<String, String> = [
        (LABEL_RELEASE, release_name.clone()),
        (LABEL_HASH, revision.hash.to_string()),
        (LABEL_REVISION, revision.number.to_string()),
        ("app.kubernetes.io/managed-by", "modelgate".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut template: PodTemplateSpec = release.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let pod_labels = meta.labels.get_or_insert_with(Default::default);
    pod_labels.extend(labels.clone());
    // In service from birth; warm pods are taken out by the controller (not part of
    // the selector, so that moving a pod in or out never orphans it). The spec's
    // revision is made as the canary; the controller moves the role at promotion.
    pod_labels.insert(LABEL_SERVING.into(), "true".into());
    pod_labels.insert(LABEL_ROLE.into(), Role::Canary.as_str().into());
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_MODEL_SHA256.into(), revision.sha256.into());

    let model = &revision.model;
    let (mounts, volumes) = trust_files(trust);
    let fetch = fetch_container(fetch_image, fetch_arguments(trust, revision, floors)?, mounts);
    // `check` refused a template without a spec.
    let spec = template.spec.get_or_insert_with(Default::default);
    spec.init_containers.get_or_insert_with(Vec::new).insert(0, fetch);
    let (model_mount, image_volume) = model_volume(&release.spec.model.mount_path, revision.image);
    for container in &mut spec.containers {
        container.volume_mounts.get_or_insert_with(Vec::new).push(model_mount.clone());
    }
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes.into_iter().chain(image_volume));

    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name(&release_name, revision.hash),
            "labels": labels,
            "annotations": {ANNOTATION_MODEL_SHA256: revision.sha256, "modelgate.dev/target": model.display()},
            "ownerReferences": [owner],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_RELEASE: release_name, LABEL_HASH: revision.hash}},
            "template": template,
        }
    }))
}

/// Where serving containers find the model: the verified directory the fetch filled
/// (only it: the download's staging lies beside it), or, for an image model, the image
/// the node pulled by the verified digest (the fetch checked that the repository signs
/// that manifest now; no model byte passes through it), with that image's volume.
fn model_volume(mount_path: &str, image: Option<&str>) -> (VolumeMount, Option<Volume>) {
    let mount = |name: &str, sub_path: Option<String>| VolumeMount {
        name: name.into(),
        mount_path: mount_path.into(),
        read_only: Some(true),
        sub_path,
        ..Default::default()
    };
    match image {
        None => (mount(MODEL_VOLUME, Some(MODEL_DIR.into())), None),
        Some(reference) => (
            mount(IMAGE_VOLUME, None),
            Some(Volume {
                name: IMAGE_VOLUME.into(),
                image: Some(ImageVolumeSource {
                    reference: Some(reference.into()),
                    // A digest never changes its bytes: a node that has it never pulls again.
                    pull_policy: Some("IfNotPresent".into()),
                }),
                ..Default::default()
            }),
        ),
    }
}

/// The arguments of the pod's `modelgate fetch`: the repository as the pod reaches it
/// (files mounted by `trust_files`), the floors, and the verified revision to match.
fn fetch_arguments(
    trust: &TrustFiles<'_>,
    revision: &Revision,
    floors: crate::trust::Floors,
) -> Result<Vec<String>, Refused> {
    let url = |u: &str| {
        reqwest::Url::parse(u).map_err(|e| Refused(vec![format!("the repository's URL {u:?} is not a URL: {e}")]))
    };
    let mut fetch = crate::fetch_command::Fetch {
        repository: crate::fetch_command::Repository {
            metadata_url: url(&trust.repository.metadata_url)?,
            targets_url: url(&trust.repository.targets_url)?,
            root: format!("{PIN_DIR}/{PIN_FILE}").into(),
            root_sha256: trust.pin_sha256.clone(),
            root_chain: Some(format!("{TRUST_DIR}/{STATE_CHAIN_KEY}").into()),
            ca_bundle: trust.ca.as_ref().map(|_| format!("{CA_DIR}/ca.crt").into()),
            metadata_dir: None,
            min_root_version: floors.root,
            min_timestamp_version: floors.timestamp,
            min_snapshot_version: floors.snapshot,
            min_targets_version: floors.targets,
            // Today's floors, whenever the pod starts (they only raise those above).
            floors: Some(format!("{TRUST_DIR}/{STATE_FLOORS_KEY}").into()),
            target: Vec::new(),
            prefix: None,
            // Only while the repository asks for signatures: one that stopped asking
            // may have withdrawn them.
            signed: revision.signed && trust.repository.provenance.is_some(),
            concurrency: None,
        },
        sha256: revision.sha256.into(),
        length: u64::try_from(revision.length).unwrap_or(0),
        files: usize::try_from(revision.files).unwrap_or(0),
        out: FETCH_OUT.into(),
    };
    fetch.repository.select(&revision.model);
    Ok(fetch.to_args())
}

/// The fetch container's mounts and the pod's volumes: the model's empty directory, the
/// pin, the trust record and the CA bundle. The pin is what the security team wrote;
/// the record is only a record, verified from the pin in the pod as in the operator
/// (optional: absent before the first refresh, and then the pod walks the roots from
/// the server).
fn trust_files(trust: &TrustFiles<'_>) -> (Vec<VolumeMount>, Vec<Volume>) {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let config_map = |name: &str, files: &[(&str, &str)], optional: bool| ConfigMapVolumeSource {
        name: name.into(),
        items: Some(
            files
                .iter()
                .map(|(key, path)| KeyToPath { key: (*key).into(), path: (*path).into(), ..Default::default() })
                .collect(),
        ),
        optional: optional.then_some(true),
        ..Default::default()
    };
    let volume = |name: &str, source: ConfigMapVolumeSource| Volume {
        name: name.into(),
        config_map: Some(source),
        ..Default::default()
    };
    let (pin_name, pin_key) = &trust.pin;
    let mut mounts = vec![
        mount(MODEL_VOLUME, FETCH_OUT, false),
        mount(PIN_VOLUME, PIN_DIR, true),
        mount(TRUST_VOLUME, TRUST_DIR, true),
    ];
    let mut volumes = vec![
        Volume { name: MODEL_VOLUME.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        volume(PIN_VOLUME, config_map(pin_name, &[(pin_key, PIN_FILE)], false)),
        volume(
            TRUST_VOLUME,
            config_map(
                &trust.record,
                &[(STATE_CHAIN_KEY, STATE_CHAIN_KEY), (STATE_FLOORS_KEY, STATE_FLOORS_KEY)],
                true,
            ),
        ),
    ];
    if let Some((name, key)) = &trust.ca {
        mounts.push(mount(CA_VOLUME, CA_DIR, true));
        volumes.push(volume(CA_VOLUME, config_map(name, &[(key, "ca.crt")], false)));
    }
    (mounts, volumes)
}

/// The `modelgate fetch` init container: least privilege, small, its refusal shown in
/// `kubectl describe pod`.
fn fetch_container(image: &str, args: Vec<String>, mounts: Vec<VolumeMount>) -> Container {
    let quantity = |q: &str| Quantity(q.into());
    Container {
        name: FETCH_CONTAINER.into(),
        image: Some(image.into()),
        args: Some(args),
        volume_mounts: Some(mounts),
        // The reason a fetch refused the model shows in `kubectl describe pod`.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: Some(ResourceRequirements {
            requests: Some([("cpu".into(), quantity("50m")), ("memory".into(), quantity("32Mi"))].into()),
            limits: Some([("memory".into(), quantity("128Mi"))].into()),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }),
        env: Some(vec![EnvVar { name: "TMPDIR".into(), value: Some(FETCH_OUT.into()), value_from: None }]),
        ..Default::default()
    }
}

/// The baseline ReplicaSet of workload key `key` (`plan::baseline_key`): the stable
/// revision's ReplicaSet `stable` copied (its pod template exactly as modelgate made it,
/// verified model and all), under its own name and revision-hash label so the two never
/// share pods, with the role `baseline`. `None` when `stable` lacks what modelgate gives
/// every ReplicaSet it makes.
pub fn baseline(stable: &ReplicaSet, key: &str, replicas: i32) -> Option<ReplicaSet> {
    let release = stable.metadata.labels.as_ref()?.get(LABEL_RELEASE)?.clone();
    let mut labels = stable.metadata.labels.clone()?;
    labels.retain(|k, _| {
        [LABEL_RELEASE, LABEL_HASH, LABEL_REVISION, "app.kubernetes.io/managed-by"].contains(&k.as_str())
    });
    labels.insert(LABEL_HASH.into(), key.into());
    let mut template = stable.spec.template.clone()?;
    let pod_labels = template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(Default::default);
    pod_labels.insert(LABEL_HASH.into(), key.into());
    pod_labels.insert(LABEL_SERVING.into(), "true".into());
    pod_labels.insert(LABEL_ROLE.into(), Role::Baseline.as_str().into());
    let annotations: BTreeMap<String, String> = stable
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| [ANNOTATION_MODEL_SHA256, "modelgate.dev/target"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let owners = stable.metadata.owner_references.clone()?.into_iter().filter(|o| o.controller == Some(true)).collect();
    let selector = [(LABEL_RELEASE.to_string(), release.clone()), (LABEL_HASH.to_string(), key.to_string())].into();
    Some(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name(&release, key)),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(owners),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
            template: Some(template),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The fingerprint of a pod template as the API server holds it (its defaults filled
/// in): the sha256 of its JSON, without the `modelgate.dev/serving` and
/// `modelgate.dev/role` labels, which modelgate moves as revisions go in and out of
/// service and from canary to stable. Equal templates, equal
/// fingerprints (maps are ordered, fields in a fixed order).
pub fn template_sha256(template: &PodTemplateSpec) -> String {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(LABEL_SERVING);
        labels.remove(LABEL_ROLE);
    }
    let json = serde_json::to_vec(&template).unwrap_or_default();
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json))
}

/// The Service that spreads requests over every revision's pods by count.
pub fn service(release: &ModelRelease) -> Option<Value> {
    let svc = release.spec.service.as_ref()?;
    let name = release.name_any();
    let owner = release.controller_owner_ref(&())?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "labels": {LABEL_RELEASE: name, "app.kubernetes.io/managed-by": "modelgate"},
            "ownerReferences": [owner],
        },
        "spec": {
            "selector": {LABEL_RELEASE: name, LABEL_SERVING: "true"},
            "ports": [{"name": "http", "port": svc.port, "targetPort": svc.target_port.unwrap_or(svc.port)}],
        }
    }))
}

/// Whether `have` (as watched) is the release's Service as `want` describes it: owned
/// by the release, with the same selector and ports.
pub fn service_matches(release: &ModelRelease, have: &Service, want: &Value) -> bool {
    let owned =
        have.owner_references().iter().any(|o| Some(&o.uid) == release.uid().as_ref() && o.controller == Some(true));
    let Some(spec) = &have.spec else { return false };
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => json!(n),
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => json!(s),
                None => json!(p.port),
            };
            json!({"name": p.name, "port": p.port, "targetPort": target})
        })
        .collect();
    let selector = serde_json::to_value(&spec.selector).unwrap_or_default();
    let wanted = |key: &str| want.get("spec").and_then(|s| s.get(key));
    owned && Some(&selector) == wanted("selector") && Some(&Value::Array(ports)) == wanted("ports")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        ConfigMapKeyRef, ConfigMapSource, ModelRef, ModelReleaseSpec, ModelRepositorySpec, ModelSource, RepositoryRef,
    };

    #[test]
    fn the_pod_fetches_the_verified_model_and_serves_it_read_only() {
        let template = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "fraud"}},
            "spec": {"containers": [{"name": "server", "image": "srv:1"}, {"name": "sidecar", "image": "s:1"}]}
        }))
        .unwrap();
        let mut release = ModelRelease::new(
            "fraud",
            ModelReleaseSpec {
                analysis: None,
                repository_ref: RepositoryRef { kind: Default::default(), name: "ml".into() },
                model: ModelSource {
                    target: "fraud/2.0/model.onnx".into(),
                    mount_path: "/models".into(),
                    ..Default::default()
                },
                replicas: 4,
                template,
                strategy: Default::default(),
                gates: Default::default(),
                rollback: Default::default(),
                paused: false,
                service: None,
            },
        );
        release.metadata.uid = Some("u1".into());
        release.metadata.namespace = Some("ns".into());
        let cm = |name: &str, key: &str| ConfigMapSource {
            config_map_ref: ConfigMapKeyRef { name: name.into(), key: key.into() },
        };
        let mut repo = crate::api::ModelRepository::new(
            "ml",
            ModelRepositorySpec {
                metadata_url: "https://tuf/metadata/".into(),
                targets_url: "https://tuf/targets/".into(),
                trusted_root: cm("root", "root.json"),
                ca_bundle: Some(cm("corp-ca", "bundle.pem")),
                refresh_interval: "5m".into(),
                provenance: Some(crate::api::ProvenancePolicy {
                    public_keys: Some(cm("signers", "keys.pem")),
                    certificates: Vec::new(),
                }),
                images: None,
            },
        );
        repo.status = Some(crate::api::ModelRepositoryStatus {
            timestamp: Some(crate::api::RoleState { version: 7, expires: None }),
            ..Default::default()
        });
        let rev = Revision {
            number: 3,
            hash: "abcdef0123",
            model: release.spec.model.model(),
            sha256: "00ff",
            length: 42,
            files: 1,
            signed: true,
            image: None,
        };
        let floors = crate::plan::repository::floors(repo.status.as_ref());
        let rs = replica_set(
            &release,
            &TrustFiles::namespaced("ml", &repo.spec),
            &rev,
            2,
            "modelgate/modelgate:0.1.0",
            &PodPolicy::default(),
            floors,
        )
        .unwrap();
        // A cluster repository's pods read the copy in their namespace, held to the pin.
        let pin = "ab".repeat(32);
        let cluster = TrustFiles::cluster("shared", &repo.spec, &pin);
        let copy = replica_set(&release, &cluster, &rev, 2, "modelgate/modelgate:0.1.0", &PodPolicy::default(), floors)
            .unwrap();
        let fetch = &copy["spec"]["template"]["spec"]["initContainers"][0];
        let args: Vec<&str> = fetch["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
        assert!(args.windows(2).any(|w| w == ["--root-sha256", pin.as_str()]), "{args:?}");
        let volumes = copy["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        for v in volumes.iter().filter(|v| v["configMap"].is_object()) {
            assert_eq!(v["configMap"]["name"], "modelgate-cluster-shared", "{v}");
        }

        assert_eq!(rs["metadata"]["name"], "fraud-abcdef0123");
        assert_eq!(rs["spec"]["replicas"], 2);
        assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "ModelRelease");
        let pod = &rs["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["app"], "fraud");
        assert_eq!(pod["metadata"]["labels"][LABEL_REVISION], "3");
        assert_eq!(pod["metadata"]["annotations"][ANNOTATION_MODEL_SHA256], "00ff");
        let fetch = &pod["spec"]["initContainers"][0];
        assert_eq!(fetch["name"], FETCH_CONTAINER);
        let args: Vec<&str> = fetch["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
        assert_eq!(after("--sha256"), "00ff");
        assert_eq!(after("--length"), "42");
        assert_eq!(after("--target"), "fraud/2.0/model.onnx");
        assert_eq!(after("--min-timestamp-version"), "7");
        assert_eq!(after("--out"), "/var/run/modelgate/model");
        assert_eq!(after("--files"), "1");
        assert!(args.contains(&"--signed"), "a signed revision's pods check its signature: {args:?}");
        // A repository that no longer asks for signatures may have withdrawn them.
        let mut unsigned = repo.spec.clone();
        unsigned.provenance = None;
        let rs = replica_set(
            &release,
            &TrustFiles::namespaced("ml", &unsigned),
            &rev,
            2,
            "modelgate/modelgate:0.1.0",
            &PodPolicy::default(),
            floors,
        )
        .unwrap();
        let unsigned_args = rs["spec"]["template"]["spec"]["initContainers"][0]["args"].to_string();
        assert!(!unsigned_args.contains("--signed"), "{unsigned_args}");
        assert_eq!(after("--ca-bundle"), "/var/run/modelgate/ca/ca.crt");
        assert!(!args.contains(&"--min-root-version"), "floors at 0 are not passed");
        for c in pod["spec"]["containers"].as_array().unwrap() {
            let m = c["volumeMounts"].as_array().unwrap().last().unwrap();
            assert_eq!((m["mountPath"].as_str(), m["readOnly"].as_bool()), (Some("/models"), Some(true)));
            assert_eq!(m["subPath"], "model", "servers see the verified directory, not the staging beside it");
        }
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(|v| v["configMap"]["name"] == "ml-trust-state"));
        assert!(volumes.iter().any(|v| v["configMap"]["name"] == "root"), "the pin is mounted, not only the record");
        assert_eq!(after("--root"), "/var/run/modelgate/pin/root.json");
        assert!(volumes.iter().any(|v| v["configMap"]["items"][0]["key"] == "bundle.pem"));

        // An image model: the node mounts the image by the verified digest; the pod's
        // fetch checks that the repository signs that manifest now.
        let reference = format!("127.0.0.1:5443/models/llm@sha256:{}", "0f".repeat(32));
        let image = Revision {
            model: ModelRef::Image("llm/3/manifest.json".into()),
            image: Some(&reference),
            signed: false,
            ..rev.clone()
        };
        let rs = replica_set(
            &release,
            &TrustFiles::namespaced("ml", &repo.spec),
            &image,
            2,
            "modelgate/modelgate:0.1.0",
            &PodPolicy::default(),
            floors,
        )
        .unwrap();
        let pod = &rs["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_array().unwrap();
        let image_volume = volumes.iter().find(|v| v["image"].is_object()).unwrap();
        assert_eq!(image_volume["image"]["reference"], reference.as_str());
        assert_eq!(image_volume["image"]["pullPolicy"], "IfNotPresent");
        for c in pod["containers"].as_array().unwrap() {
            let m = c["volumeMounts"].as_array().unwrap().last().unwrap();
            assert_eq!(m["name"], image_volume["name"], "servers see the image, not the fetch's directory");
            assert_eq!((m["mountPath"].as_str(), m["readOnly"].as_bool()), (Some("/models"), Some(true)));
        }
        let args = pod["initContainers"][0]["args"].to_string();
        assert!(
            args.contains("\"--target\",\"llm/3/manifest.json\"") && args.contains("\"--sha256\",\"00ff\""),
            "{args}"
        );
    }

    #[test]
    fn a_service_in_place_is_recognised_and_any_difference_is_not() {
        let mut release = ModelRelease::new(
            "fraud",
            serde_json::from_value(json!({
                "repositoryRef": {"name": "r"}, "model": {"target": "m"}, "service": {"port": 80, "targetPort": 8080},
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
            }))
            .unwrap(),
        );
        release.metadata.uid = Some("u1".into());
        let want = service(&release).unwrap();
        let have: Service = serde_json::from_value(want.clone()).unwrap();
        assert!(service_matches(&release, &have, &want));
        let mut other_port = have.clone();
        other_port.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
        assert!(!service_matches(&release, &other_port, &want), "a changed port is applied again");
        let mut not_ours = have.clone();
        not_ours.metadata.owner_references = None;
        assert!(!service_matches(&release, &not_ours, &want), "a Service of someone else's is checked, not trusted");
    }
}
